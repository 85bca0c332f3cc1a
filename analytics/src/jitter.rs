//! RFC 3550 interarrival jitter, from arrival times and RTP timestamps.

use std::time::Instant;

/// Running jitter estimate of one stream.
#[derive(Clone, Debug)]
pub struct Jitter {
    clock_rate: f64,
    last: Option<(Instant, u32)>,
    /// In RTP timestamp units.
    j: f64,
}

impl Jitter {
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: f64::from(clock_rate.max(1)),
            last: None,
            j: 0.0,
        }
    }

    /// One packet (new and in order) arrived at `arrival` with RTP timestamp `ts`.
    pub fn on_packet(&mut self, arrival: Instant, ts: u32) {
        if let Some((a0, t0)) = self.last {
            let transit = arrival.saturating_duration_since(a0).as_secs_f64() * self.clock_rate;
            // Wrapping difference of 32-bit timestamps, as a signed step.
            let step = f64::from(ts.wrapping_sub(t0) as i32);
            let d = (transit - step).abs();
            self.j += (d - self.j) / 16.0;
        }
        self.last = Some((arrival, ts));
    }

    /// The estimate in milliseconds.
    pub fn ms(&self) -> f64 {
        self.j / self.clock_rate * 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn steady_stream_has_no_jitter() {
        let t0 = Instant::now();
        let mut j = Jitter::new(48_000);
        for i in 0..200u32 {
            j.on_packet(t0 + Duration::from_millis(20 * u64::from(i)), i * 960);
        }
        assert!(j.ms() < 0.001);
    }

    #[test]
    fn alternating_delay_converges_to_the_swing() {
        let t0 = Instant::now();
        let mut j = Jitter::new(48_000);
        for i in 0..2000u32 {
            let extra = if i % 2 == 0 { 0 } else { 10 };
            j.on_packet(
                t0 + Duration::from_millis(20 * u64::from(i) + extra),
                (i * 960).wrapping_add(u32::MAX - 5000),
            );
        }
        assert!((j.ms() - 10.0).abs() < 0.5, "{}", j.ms());
    }
}
