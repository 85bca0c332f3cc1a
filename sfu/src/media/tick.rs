//! The worker's tick: Peers' timer deadlines are served on a grid instead of one wake-up each,
//! so a worker with many Peers wakes at most once per tick for timers.
//!
//! Why a short tick is safe: what str0m does on timers in our configuration runs on intervals
//! far longer than a tick (RTCP reports and stats every second, ICE consent every few seconds,
//! DTLS retransmissions from one second), NACKs tolerate a few milliseconds more, and
//! everything a datagram triggers (STUN answers, DTLS, forwarding, RTX) happens on that
//! datagram, not on a timer. Two exceptions: str0m 0.25 sends a written RTP packet only once a
//! timeout has stamped it (`Reason::SendStream`, asked for as "already happened"), and a Peer
//! whose downlink is estimated is paced (str0m releases its packets on timers, and GCC's
//! probes measure their spacing). Both are served off the grid, at their instant (`MediaCore`'s
//! urgent list, and paced Peers' entries in its timer heap), so forwarding never waits for a
//! tick and pacing keeps its rhythm.

use std::time::{Duration, Instant};

/// The first grid instant at or after `at`, on a grid of `tick` anchored at `epoch`. A
/// deadline is never served early and never skipped: at most one tick late.
pub fn round_up(at: Instant, epoch: Instant, tick: Duration) -> Instant {
    if tick.is_zero() || at <= epoch {
        return at;
    }
    let tick_ns = tick.as_nanos();
    let since = (at - epoch).as_nanos();
    let ticks = since.div_ceil(tick_ns);
    let offset = ticks.saturating_mul(tick_ns);
    epoch + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(10);

    #[test]
    fn a_deadline_between_ticks_is_served_at_the_next_tick() {
        let e = Instant::now();
        let at = e + Duration::from_micros(12_345);
        assert_eq!(round_up(at, e, TICK), e + Duration::from_millis(20));
    }

    #[test]
    fn a_deadline_on_a_tick_is_not_delayed() {
        let e = Instant::now();
        assert_eq!(round_up(e + TICK * 7, e, TICK), e + TICK * 7);
        assert_eq!(round_up(e, e, TICK), e);
    }

    #[test]
    fn never_early_never_more_than_a_tick_late() {
        let e = Instant::now();
        for us in (0..100_000u64).step_by(997) {
            let at = e + Duration::from_micros(us);
            let served = round_up(at, e, TICK);
            assert!(
                served >= at && served - at < TICK,
                "{us} µs -> {:?}",
                served - e
            );
        }
        // Hours in, the grid holds.
        let at = e + Duration::from_secs(4 * 3600) + Duration::from_nanos(1);
        assert_eq!(
            round_up(at, e, TICK),
            e + Duration::from_secs(4 * 3600) + TICK
        );
    }

    #[test]
    fn without_a_tick_or_before_the_epoch_deadlines_stand() {
        let e = Instant::now() + Duration::from_secs(1);
        let at = e + Duration::from_micros(3);
        assert_eq!(round_up(at, e, Duration::ZERO), at);
        let before = e - Duration::from_millis(3);
        assert_eq!(round_up(before, e, TICK), before);
    }
}
