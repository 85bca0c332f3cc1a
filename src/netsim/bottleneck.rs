//! A capped link for the in-memory world: a drop-tail queue drained at a fixed rate, so delay
//! grows as it fills (what a bandwidth estimator expects of a real bottleneck) and what does
//! not fit is lost.

use std::time::{Duration, Instant};

/// A link of `bps` with a drop-tail queue of at most `max_queue` of waiting.
pub struct Bottleneck {
    pub bps: u64,
    pub max_queue: Duration,
    /// When the link is free again.
    busy_until: Option<Instant>,
    pub dropped: u64,
}

impl Bottleneck {
    pub fn new(kbps: u64) -> Self {
        Self {
            bps: kbps * 1000,
            max_queue: Duration::from_millis(300),
            busy_until: None,
            dropped: 0,
        }
    }

    /// How long a datagram of `len` bytes sent at `now` waits (its queueing and its own
    /// serialization), or `None` when the queue is full.
    pub(super) fn enqueue(&mut self, now: Instant, len: usize) -> Option<Duration> {
        // IP and UDP headers count on the wire.
        let bits = (len as u64 + 28) * 8;
        let start = self.busy_until.map_or(now, |b| b.max(now));
        if start - now > self.max_queue {
            self.dropped += 1;
            return None;
        }
        let done = start + Duration::from_nanos(bits * 1_000_000_000 / self.bps.max(1));
        self.busy_until = Some(done);
        Some(done - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bottleneck_delays_then_drops_what_exceeds_its_rate() {
        let t = Instant::now();
        let mut b = Bottleneck::new(300);
        // 1,000-byte datagrams every 10 ms: about 820 kbit/s into a 300 kbit/s link.
        let mut waits = Vec::new();
        for i in 0..200u64 {
            waits.push(b.enqueue(t + Duration::from_millis(10 * i), 1000));
        }
        assert_eq!(
            waits[0],
            Some(Duration::from_nanos(1028 * 8 * 1_000_000_000 / 300_000))
        );
        let longest = waits.iter().flatten().max().unwrap();
        assert!(
            *longest <= b.max_queue + Duration::from_millis(30),
            "{longest:?}"
        );
        assert!(b.dropped > 100, "{} dropped", b.dropped);
    }
}
