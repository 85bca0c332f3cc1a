//! Whether a member's track is available (DESIGN.md): published, not muted, and a packet
//! arrived within the timeout (2 s audio: DTX gaps are ~400 ms; 3 s video). Changes only, with
//! hysteresis: a stall is declared after the full timeout, and a track becomes available again
//! only after packets have flowed without a stall for `resume`.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvailabilityConfig {
    pub timeout: Duration,
    pub resume: Duration,
}

impl AvailabilityConfig {
    pub const AUDIO: Self = Self {
        timeout: Duration::from_secs(2),
        resume: Duration::from_millis(200),
    };
    pub const VIDEO: Self = Self {
        timeout: Duration::from_secs(3),
        resume: Duration::from_millis(200),
    };
}

/// The availability state of one track.
#[derive(Clone, Debug)]
pub struct Availability {
    cfg: AvailabilityConfig,
    published: bool,
    muted: bool,
    /// Start and last packet of the current run of packets (gaps shorter than the timeout).
    run: Option<(Instant, Instant)>,
    /// What the others were last told.
    reported: bool,
}

impl Availability {
    pub fn new(cfg: AvailabilityConfig) -> Self {
        Self {
            cfg,
            published: false,
            muted: false,
            run: None,
            reported: false,
        }
    }

    pub fn is_available(&self) -> bool {
        self.reported
    }

    /// The track is published (or unpublished: then it is unavailable at once).
    pub fn set_published(&mut self, published: bool) -> Option<bool> {
        self.published = published;
        if !published {
            self.run = None;
        }
        self.settle(None)
    }

    /// Muting is announced by signaling at once, so going unavailable here is silent; after
    /// unmuting, availability returns when packets flow again.
    pub fn set_muted(&mut self, muted: bool) {
        if muted != self.muted {
            // Media must flow again after the change to count.
            self.run = None;
        }
        self.muted = muted;
        if muted {
            self.reported = false;
        }
    }

    /// A packet of the track arrived at `now`; returns a change to report.
    pub fn on_packet(&mut self, now: Instant) -> Option<bool> {
        self.run = match self.run {
            Some((start, last)) if now.saturating_duration_since(last) < self.cfg.timeout => {
                Some((start, now))
            }
            _ => Some((now, now)),
        };
        self.settle(Some(now))
    }

    /// Time passes; returns a change to report.
    pub fn poll(&mut self, now: Instant) -> Option<bool> {
        self.settle(Some(now))
    }

    fn settle(&mut self, now: Option<Instant>) -> Option<bool> {
        let flowing = match (self.run, now) {
            (Some((start, last)), Some(now)) => {
                now.saturating_duration_since(last) < self.cfg.timeout
                    && last.saturating_duration_since(start) >= self.cfg.resume
            }
            (Some(_), None) => self.reported,
            _ => false,
        };
        let stalled = match (self.run, now) {
            (Some((_, last)), Some(now)) => now.saturating_duration_since(last) >= self.cfg.timeout,
            (None, _) => true,
            _ => false,
        };
        let should = self.published && !self.muted;
        if self.reported && (!should || stalled) {
            self.reported = false;
            return Some(false);
        }
        if !self.reported && should && flowing {
            self.reported = true;
            return Some(true);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn flowing(a: &mut Availability, t0: Instant, from_ms: u64, to_ms: u64) -> Vec<(u64, bool)> {
        let mut changes = Vec::new();
        let mut t = from_ms;
        while t <= to_ms {
            if let Some(c) = a.on_packet(t0 + MS * t as u32) {
                changes.push((t, c));
            }
            t += 20;
        }
        changes
    }

    #[test]
    fn becomes_available_after_the_resume_window() {
        let t0 = Instant::now();
        let mut a = Availability::new(AvailabilityConfig::AUDIO);
        assert_eq!(a.set_published(true), None);
        assert_eq!(flowing(&mut a, t0, 0, 1000), [(200, true)]);
    }

    #[test]
    fn stall_at_exactly_the_timeout() {
        let t0 = Instant::now();
        let mut a = Availability::new(AvailabilityConfig::AUDIO);
        a.set_published(true);
        flowing(&mut a, t0, 0, 1000);
        assert_eq!(a.poll(t0 + MS * 2999), None);
        assert_eq!(a.poll(t0 + MS * 3000), Some(false));
        assert_eq!(a.poll(t0 + MS * 4000), None, "changes only");
        // Resume: a new run must last the resume window again.
        assert_eq!(a.on_packet(t0 + MS * 5000), None);
        assert_eq!(a.on_packet(t0 + MS * 5199), None);
        assert_eq!(a.on_packet(t0 + MS * 5200), Some(true));
    }

    #[test]
    fn dtx_gaps_do_not_flap() {
        let t0 = Instant::now();
        let mut a = Availability::new(AvailabilityConfig::AUDIO);
        a.set_published(true);
        flowing(&mut a, t0, 0, 400);
        // Silence with DTX: one packet per 400 ms for a minute.
        for i in 1..150u32 {
            let t = t0 + MS * (400 + 400 * i);
            assert_eq!(a.on_packet(t), None);
            assert_eq!(a.poll(t + MS * 399), None);
        }
        assert!(a.is_available());
    }

    #[test]
    fn video_timeout_is_longer() {
        let t0 = Instant::now();
        let mut a = Availability::new(AvailabilityConfig::VIDEO);
        a.set_published(true);
        flowing(&mut a, t0, 0, 1000);
        assert_eq!(a.poll(t0 + MS * 3999), None);
        assert_eq!(a.poll(t0 + MS * 4000), Some(false));
    }

    #[test]
    fn mute_is_silent_and_unmute_waits_for_media() {
        let t0 = Instant::now();
        let mut a = Availability::new(AvailabilityConfig::AUDIO);
        a.set_published(true);
        flowing(&mut a, t0, 0, 1000);
        a.set_muted(true);
        assert!(!a.is_available());
        // Muted packets (if any) change nothing.
        assert_eq!(flowing(&mut a, t0, 1020, 2000), []);
        a.set_muted(false);
        assert_eq!(a.poll(t0 + MS * 2010), None);
        assert_eq!(flowing(&mut a, t0, 3000, 3400), [(3200, true)]);
    }

    #[test]
    fn unpublishing_is_reported() {
        let t0 = Instant::now();
        let mut a = Availability::new(AvailabilityConfig::AUDIO);
        a.set_published(true);
        flowing(&mut a, t0, 0, 1000);
        assert_eq!(a.set_published(false), Some(false));
        assert_eq!(flowing(&mut a, t0, 1020, 2000), []);
    }
}
