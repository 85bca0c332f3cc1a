//! Keyframe requests toward one publisher track, merged (mediasoup's KeyframeRequestManager):
//! any number of subscribers asking within [`KEYFRAME_THROTTLE`] cost the publisher one request.

use std::time::{Duration, Instant};

/// Keyframe requests relayed to one publisher track at most this often.
pub const KEYFRAME_THROTTLE: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, Default)]
pub struct KeyframeThrottle {
    last: Option<Instant>,
}

impl KeyframeThrottle {
    /// Whether a request at `now` goes to the publisher (and is booked if so).
    pub fn allow(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|l| now.saturating_duration_since(l) < KEYFRAME_THROTTLE)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_within_the_window_merge() {
        let mut k = KeyframeThrottle::default();
        let t = Instant::now();
        assert!(k.allow(t));
        assert!(!k.allow(t));
        assert!(!k.allow(t + KEYFRAME_THROTTLE - Duration::from_millis(1)));
        assert!(k.allow(t + KEYFRAME_THROTTLE));
        assert!(!k.allow(t + KEYFRAME_THROTTLE + Duration::from_millis(1)));
    }
}
