//! A subscriber's downlink as the layer allocator sees it: str0m's bandwidth estimate toward
//! the member (GCC on its transport-wide feedback), read for two decisions.
//!
//! GCC answers every overuse by setting its estimate to 0.85 of the rate just acknowledged,
//! so a link running full dips under what it carries many times a minute; and a probe can
//! lift it for a moment above what the link sustains. Allocating on each raw estimate would
//! pause a video on every dip and climb to a layer on every spike, each switch costing a
//! keyframe. So the allocator *keeps* what it forwards on the highest estimate of the last
//! [`HOLD`], and *climbs* on the lowest of the last [`HOLD`]: a dip must last to take a layer
//! away, a rise must last to add one. GCC keeps the link itself safe meanwhile (str0m paces
//! at its estimate).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use sfu::media::downlink::Downlink;
//! let t = Instant::now();
//! let mut d = Downlink::default();
//! d.on_estimate(500_000, t);
//! d.on_estimate(420_000, t + Duration::from_millis(200)); // an overuse dip
//! let now = t + Duration::from_millis(300);
//! assert_eq!(d.keep(now), Some(500_000));
//! assert_eq!(d.climb(now), Some(420_000));
//! // A second on, the dip is what the link carries.
//! let later = t + Duration::from_millis(1_300);
//! assert_eq!(d.keep(later), Some(420_000));
//! ```

use std::time::{Duration, Instant};

/// How long a dip must last to take a layer away, and a rise to add one.
pub const HOLD: Duration = Duration::from_secs(1);
/// An estimate unchanged this long is stuck (str0m stopped probing after losses).
pub const STUCK_AFTER: Duration = Duration::from_secs(8);
/// Estimates kept (more within [`HOLD`] are merged into the newest).
const SAMPLES: usize = 16;

#[derive(Clone, Debug, Default)]
pub struct Downlink {
    /// (since when, lowest, highest estimate in bit/s), oldest first; at most [`SAMPLES`].
    samples: Vec<(Instant, u64, u64)>,
    latest: Option<u64>,
    /// Since when the latest estimate has been the same.
    since: Option<Instant>,
}

impl Downlink {
    /// A new estimate (bit/s) at `now`.
    pub fn on_estimate(&mut self, bps: u64, now: Instant) {
        // Older than HOLD, only the newest such sample still matters (it held until the
        // next one).
        while self.samples.len() >= 2 && now.saturating_duration_since(self.samples[1].0) >= HOLD {
            self.samples.remove(0);
        }
        if self.latest != Some(bps) {
            self.since = Some(now);
        }
        self.latest = Some(bps);
        let full = self.samples.len() == SAMPLES;
        if let Some(last) = self.samples.last_mut().filter(|_| full) {
            // A burst of estimates: the newest sample spans them (memory stays bounded).
            last.1 = last.1.min(bps);
            last.2 = last.2.max(bps);
            return;
        }
        self.samples.push((now, bps, bps));
    }

    /// The latest estimate.
    pub fn latest(&self) -> Option<u64> {
        self.latest
    }

    /// The latest estimate, if it has not changed for [`STUCK_AFTER`].
    pub fn stuck(&self, now: Instant) -> Option<u64> {
        self.latest.filter(|_| {
            self.since
                .is_some_and(|t| now.saturating_duration_since(t) >= STUCK_AFTER)
        })
    }

    /// The estimates in force during the last [`HOLD`]: every sample newer than that, and the
    /// one that was current at its start.
    fn recent(&self, now: Instant) -> &[(Instant, u64, u64)] {
        let from = self
            .samples
            .iter()
            .rposition(|(at, ..)| now.saturating_duration_since(*at) >= HOLD)
            .unwrap_or(0);
        &self.samples[from..]
    }

    /// What the allocator may keep forwarding: the highest estimate of the last [`HOLD`].
    pub fn keep(&self, now: Instant) -> Option<u64> {
        self.recent(now).iter().map(|s| s.2).max()
    }

    /// What the allocator may climb on: the lowest estimate of the last [`HOLD`].
    pub fn climb(&self, now: Instant) -> Option<u64> {
        self.recent(now).iter().map(|s| s.1).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t: Instant, n: u64) -> Instant {
        t + Duration::from_millis(n)
    }

    #[test]
    fn nothing_before_the_first_estimate() {
        let d = Downlink::default();
        let t = Instant::now();
        assert_eq!((d.keep(t), d.climb(t), d.latest()), (None, None, None));
    }

    #[test]
    fn a_dip_shorter_than_the_hold_keeps_a_rise_shorter_than_it_does_not_climb() {
        let t = Instant::now();
        let mut d = Downlink::default();
        d.on_estimate(300_000, t);
        d.on_estimate(200_000, ms(t, 500));
        assert_eq!(d.keep(ms(t, 900)), Some(300_000));
        assert_eq!(
            d.keep(ms(t, 1_500)),
            Some(200_000),
            "a dip that lasts is taken"
        );
        d.on_estimate(600_000, ms(t, 1_600));
        assert_eq!(d.climb(ms(t, 2_000)), Some(200_000));
        assert_eq!(
            d.climb(ms(t, 2_600)),
            Some(600_000),
            "a rise that lasts is climbed"
        );
        assert_eq!(d.latest(), Some(600_000));
    }

    #[test]
    fn an_estimate_unchanged_for_long_is_stuck() {
        let t = Instant::now();
        let mut d = Downlink::default();
        d.on_estimate(100_000, t);
        d.on_estimate(100_000, t + Duration::from_secs(5));
        assert_eq!(d.stuck(t + Duration::from_secs(7)), None);
        assert_eq!(d.stuck(t + STUCK_AFTER), Some(100_000));
        d.on_estimate(120_000, t + Duration::from_secs(9));
        assert_eq!(d.stuck(t + Duration::from_secs(16)), None);
    }

    #[test]
    fn a_lone_old_estimate_still_holds() {
        let t = Instant::now();
        let mut d = Downlink::default();
        d.on_estimate(400_000, t);
        let hours = t + Duration::from_secs(3 * 3600);
        assert_eq!(
            (d.keep(hours), d.climb(hours)),
            (Some(400_000), Some(400_000))
        );
    }

    #[test]
    fn a_flood_of_estimates_stays_bounded_and_keeps_the_peak() {
        let t = Instant::now();
        let mut d = Downlink::default();
        for i in 0..100_000u64 {
            d.on_estimate(
                if i == 50_000 { 900_000 } else { 300_000 },
                t + Duration::from_micros(i),
            );
        }
        assert!(d.samples.len() <= SAMPLES);
        let now = t + Duration::from_millis(200);
        assert_eq!(d.keep(now), Some(900_000));
        assert_eq!(d.climb(now), Some(300_000));
    }
}
