//! Speaking volume per interval (DESIGN.md): RFC 6464 levels (L = −dBov, 0..127) averaged as
//! energy 10^(−L/10) weighted by duration, an interval with no packets being silence;
//! `volume = clamp(round(100·(60 − L_avg)/60), 0, 100)`; `total` the same over the members'
//! energy sum.

use std::time::Duration;

/// Energy of one RFC 6464 level (a table lookup: this runs for every audio packet).
pub fn energy(level: u8) -> f64 {
    static TABLE: std::sync::OnceLock<[f64; 128]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| std::array::from_fn(|l| 10f64.powf(-(l as f64) / 10.0)));
    table[usize::from(level.min(127))]
}

/// Volume 0..100 of an average energy.
pub fn volume_of_energy(e: f64) -> u8 {
    if e.is_nan() || e <= 0.0 {
        return 0;
    }
    let level = -10.0 * e.log10();
    (100.0 * (60.0 - level) / 60.0).round().clamp(0.0, 100.0) as u8
}

/// One interval's result: members with volume > 0, and the total.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeReport<K> {
    pub volumes: Vec<(K, u8)>,
    pub total: u8,
}

/// Accumulates packets of one interval for a set of members keyed by `K`.
#[derive(Clone, Debug)]
pub struct VolumeAggregator<K> {
    interval: Duration,
    /// (member, Σ energy·duration in s, Σ duration in s)
    acc: Vec<(K, f64, f64)>,
}

impl<K: PartialEq + Clone> VolumeAggregator<K> {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            acc: Vec::new(),
        }
    }

    /// A packet of `member` with `level` covering `duration` of audio (20 ms for a 20 ms frame).
    pub fn add(&mut self, member: &K, level: u8, duration: Duration) {
        let d = duration.as_secs_f64();
        let e = energy(level) * d;
        match self.acc.iter_mut().find(|(k, _, _)| k == member) {
            Some(entry) => {
                entry.1 += e;
                entry.2 += d;
            }
            None => self.acc.push((member.clone(), e, d)),
        }
    }

    /// Energy already accumulated elsewhere: `energy_seconds` = Σ energy·duration over
    /// `duration` of packets.
    pub fn add_energy(&mut self, member: &K, energy_seconds: f64, duration: Duration) {
        let d = duration.as_secs_f64();
        match self.acc.iter_mut().find(|(k, _, _)| k == member) {
            Some(entry) => {
                entry.1 += energy_seconds;
                entry.2 += d;
            }
            None => self.acc.push((member.clone(), energy_seconds, d)),
        }
    }

    /// Closes the interval: each member's average energy over the interval (time without
    /// packets is silence), and the total. Starts the next interval empty.
    pub fn finish(&mut self) -> VolumeReport<K> {
        let span = self.interval.as_secs_f64();
        let mut total_energy = 0.0;
        let mut volumes = Vec::new();
        for (k, e, d) in self.acc.drain(..) {
            let avg = e / span.max(d);
            total_energy += avg;
            let v = volume_of_energy(avg);
            if v > 0 {
                volumes.push((k, v));
            }
        }
        VolumeReport {
            volumes,
            total: volume_of_energy(total_energy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS20: Duration = Duration::from_millis(20);

    fn interval_of(level: u8, packets: usize) -> VolumeReport<&'static str> {
        let mut a = VolumeAggregator::new(Duration::from_millis(300));
        for _ in 0..packets {
            a.add(&"a", level, MS20);
        }
        a.finish()
    }

    #[test]
    fn known_levels() {
        assert_eq!(interval_of(0, 15).volumes, [("a", 100)]);
        assert_eq!(interval_of(30, 15).volumes, [("a", 50)]);
        assert_eq!(interval_of(22, 15).volumes, [("a", 63)]);
        assert_eq!(interval_of(60, 15).volumes, []);
        assert_eq!(interval_of(127, 15).volumes, []);
        assert_eq!(interval_of(30, 15).total, 50);
    }

    #[test]
    fn silence_and_partial_intervals() {
        assert_eq!(interval_of(30, 0).volumes, []);
        assert_eq!(interval_of(30, 0).total, 0);
        // Half the interval at -30 dBov: energy halves, 3 dB quieter.
        let half = interval_of(30, 7).volumes[0].1;
        assert!((44..=46).contains(&half), "{half}");
    }

    #[test]
    fn averaging_is_in_energy_not_db() {
        let mut a = VolumeAggregator::new(Duration::from_millis(300));
        for i in 0..15 {
            a.add(&"a", if i % 2 == 0 { 10 } else { 90 }, MS20);
        }
        // The loud half dominates: about -13 dBov, far above the dB mean of -50.
        let v = a.finish().volumes[0].1;
        assert!((77..=79).contains(&v), "{v}");
    }

    #[test]
    fn total_sums_energy_of_members() {
        let mut a = VolumeAggregator::new(Duration::from_millis(300));
        for _ in 0..15 {
            a.add(&"a", 30, MS20);
            a.add(&"b", 30, MS20);
            a.add(&"c", 127, MS20);
        }
        let r = a.finish();
        assert_eq!(r.volumes, [("a", 50), ("b", 50)]);
        // Two equal speakers: +3 dB.
        assert_eq!(r.total, 55);
        assert_eq!(a.finish().volumes, [], "the next interval starts empty");
    }
}
