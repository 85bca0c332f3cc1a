//! Network impairment on a caller's outgoing packets, to emulate mobile networks: loss with
//! bursts (Gilbert-Elliott), fixed delay and random jitter.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Impairment {
    /// Long-run share of packets lost, 0..1.
    pub loss: f64,
    /// Mean length of a loss burst in packets (1 = independent losses).
    pub burst: f64,
    pub delay: Duration,
    /// Extra delay drawn uniformly from 0..=jitter per packet.
    pub jitter: Duration,
}

impl Impairment {
    pub fn is_none(&self) -> bool {
        self.loss <= 0.0 && self.delay.is_zero() && self.jitter.is_zero()
    }
}

/// A held datagram: (when to send, order, destination, bytes).
type Held = Reverse<(Instant, u64, SocketAddr, Vec<u8>)>;

/// Decides the fate of each outgoing datagram and holds the delayed ones.
pub struct Impairer {
    cfg: Impairment,
    bad: bool,
    rng: u64,
    seq: u64,
    queue: BinaryHeap<Held>,
    pub dropped: u64,
}

impl Impairer {
    pub fn new(cfg: Impairment, seed: u64) -> Self {
        Self {
            cfg,
            bad: false,
            rng: seed | 1,
            seq: 0,
            queue: BinaryHeap::new(),
            dropped: 0,
        }
    }

    fn uniform(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether the next packet is lost (Gilbert-Elliott with the configured mean burst).
    fn lose(&mut self) -> bool {
        let p = self.cfg.loss.clamp(0.0, 0.99);
        if p <= 0.0 {
            return false;
        }
        let burst = self.cfg.burst.max(1.0);
        let to_good = 1.0 / burst;
        let to_bad = p * to_good / (1.0 - p);
        let u = self.uniform();
        self.bad = if self.bad { u >= to_good } else { u < to_bad };
        self.bad
    }

    /// Takes one datagram to send at `now`: `Some` to send at once, `None` if it was lost or
    /// queued for later ([`Impairer::due`]).
    pub fn push(&mut self, now: Instant, to: SocketAddr, data: Vec<u8>) -> Option<Vec<u8>> {
        if self.lose() {
            self.dropped += 1;
            return None;
        }
        let jitter = self.cfg.jitter.as_secs_f64() * self.uniform();
        let wait = self.cfg.delay + Duration::from_secs_f64(jitter);
        if wait.is_zero() {
            return Some(data);
        }
        self.seq += 1;
        self.queue.push(Reverse((now + wait, self.seq, to, data)));
        None
    }

    /// The next queued datagram due at `now`.
    pub fn due(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        let Reverse((at, _, _, _)) = self.queue.peek()?;
        if *at > now {
            return None;
        }
        self.queue.pop().map(|Reverse((_, _, to, d))| (to, d))
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _, _, _))| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cfg: Impairment, n: usize) -> (f64, f64) {
        let mut imp = Impairer::new(cfg, 42);
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let now = Instant::now();
        let (mut lost, mut runs, mut in_run) = (0usize, 0usize, false);
        for _ in 0..n {
            let before = imp.dropped;
            let _ = imp.push(now, to, vec![0]);
            let l = imp.dropped > before;
            if l {
                lost += 1;
                if !in_run {
                    runs += 1;
                }
            }
            in_run = l;
        }
        (lost as f64 / n as f64, lost as f64 / runs.max(1) as f64)
    }

    #[test]
    fn loss_rate_and_burst_length() {
        let (rate, burst) = run(
            Impairment {
                loss: 0.05,
                burst: 1.0,
                ..Default::default()
            },
            200_000,
        );
        assert!((rate - 0.05).abs() < 0.005, "{rate}");
        assert!(burst < 1.2, "{burst}");
        let (rate, burst) = run(
            Impairment {
                loss: 0.05,
                burst: 4.0,
                ..Default::default()
            },
            200_000,
        );
        assert!((rate - 0.05).abs() < 0.01, "{rate}");
        assert!((3.5..4.5).contains(&burst), "{burst}");
        let (rate, _) = run(Impairment::default(), 1000);
        assert_eq!(rate, 0.0);
    }

    #[test]
    fn delay_and_jitter_hold_packets() {
        let cfg = Impairment {
            delay: Duration::from_millis(50),
            jitter: Duration::from_millis(20),
            ..Default::default()
        };
        let mut imp = Impairer::new(cfg, 7);
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let t0 = Instant::now();
        assert!(imp.push(t0, to, vec![1]).is_none());
        assert!(imp.due(t0 + Duration::from_millis(49)).is_none());
        assert!(imp.due(t0 + Duration::from_millis(71)).is_some());
    }
}

/// An emulated downlink bottleneck: a queue drained at `kbps` (datagrams wait their turn, so
/// delay grows as it fills, which a sender's congestion control reads), dropping what would
/// wait over [`Downlink::MAX_QUEUE`] (a saturated access link's drop-tail queue).
pub struct Downlink {
    bytes_per_s: f64,
    /// When the link is free again.
    busy_until: Option<Instant>,
    queue: std::collections::VecDeque<(Instant, SocketAddr, Vec<u8>)>,
    pub dropped: u64,
}

impl Downlink {
    pub const MAX_QUEUE: Duration = Duration::from_millis(300);
    /// Datagrams held at most (a bound on memory whatever comes in).
    const MAX_HELD: usize = 4096;

    pub fn new(kbps: u32) -> Self {
        Self {
            bytes_per_s: f64::from(kbps.max(1)) * 1000.0 / 8.0,
            busy_until: None,
            queue: std::collections::VecDeque::new(),
            dropped: 0,
        }
    }

    /// A datagram from `source` arriving at `now`: queued (`true`) or dropped.
    pub fn push(&mut self, now: Instant, source: SocketAddr, data: &[u8]) -> bool {
        // UDP and IP headers count on the wire.
        let wire = (data.len() + 28) as f64;
        let start = self.busy_until.map_or(now, |b| b.max(now));
        if start - now > Self::MAX_QUEUE || self.queue.len() >= Self::MAX_HELD {
            self.dropped += 1;
            return false;
        }
        let done = start + Duration::from_secs_f64(wire / self.bytes_per_s);
        self.busy_until = Some(done);
        self.queue.push_back((done, source, data.to_vec()));
        true
    }

    /// The next datagram through the link by `now`, with when it came out.
    pub fn due(&mut self, now: Instant) -> Option<(Instant, SocketAddr, Vec<u8>)> {
        if self.queue.front().is_some_and(|(at, ..)| *at <= now) {
            return self.queue.pop_front();
        }
        None
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|(at, ..)| *at)
    }
}

#[cfg(test)]
mod downlink_tests {
    use super::*;

    #[test]
    fn a_capped_downlink_delays_then_drops_what_exceeds_its_rate() {
        let t = Instant::now();
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut d = Downlink::new(300);
        // 972-byte datagrams (1,000 on the wire) every 10 ms (800 kbit/s) for 10 s.
        let mut passed = 0;
        for i in 0..1000u64 {
            let now = t + Duration::from_millis(i * 10);
            d.push(now, from, &[0; 972]);
            while d.due(now).is_some() {
                passed += 1;
            }
        }
        let kbps = f64::from(passed) * 8.0 / 10.0;
        assert!((280.0..=310.0).contains(&kbps), "{kbps} kbit/s");
        assert!(d.dropped > 600);
        assert!(d.next_due().is_some(), "a queue is left");
        // The first datagram waits only its own serialization (1,000 bytes at 300 kbit/s).
        let mut e = Downlink::new(300);
        e.push(t, from, &[0; 972]);
        assert_eq!(
            e.next_due(),
            Some(t + Duration::from_secs_f64(1000.0 / 37_500.0))
        );
    }
}
