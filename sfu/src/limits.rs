//! Per-socket limits, pure and clock-free: a token bucket for requests per second, a flood
//! budget that closes a socket that keeps far over that rate (every request over the rate is
//! still answered `4029` until then, so a burst of a few hundred gets all its answers), and an
//! error budget that closes a socket that keeps sending garbage.

use std::time::Instant;

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.take_n(now, 1.0)
    }

    /// Whether the bucket would be full at `now` (nothing taken recently).
    pub fn full(&self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + dt * self.rate >= self.burst
    }

    /// Takes `n` tokens if there are that many.
    pub fn take_n(&mut self, now: Instant, n: f64) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// The limits of one socket: requests per second, and how much abuse (unparseable frames,
/// rate-limited requests) it may send before it is closed.
#[derive(Clone, Debug)]
pub struct SocketLimits {
    requests: TokenBucket,
    flood: TokenBucket,
    abuse: TokenBucket,
}

/// What to do with one incoming frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Answer with 4029.
    RateLimited,
    /// Close the socket (1008, policy violation).
    Close,
}

impl SocketLimits {
    /// `rate` requests per second with bursts of twice that; the abuse budget allows
    /// `ABUSE_BURST` bad frames, refilling at `ABUSE_RATE` a second.
    pub fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            requests: TokenBucket::new(rate, 2.0 * rate, now),
            flood: TokenBucket::new(rate, FLOOD_BURST, now),
            abuse: TokenBucket::new(ABUSE_RATE, ABUSE_BURST, now),
        }
    }

    /// Accounts one request frame.
    pub fn request(&mut self, now: Instant) -> Verdict {
        if self.requests.take(now) {
            Verdict::Allow
        } else if self.flood.take(now) {
            Verdict::RateLimited
        } else {
            Verdict::Close
        }
    }

    pub fn offence(&mut self, now: Instant) -> Verdict {
        if self.abuse.take(now) {
            Verdict::RateLimited
        } else {
            Verdict::Close
        }
    }
}

/// Requests over the rate answered `4029` in a burst before a socket is closed; the budget
/// refills at the request rate.
pub const FLOOD_BURST: f64 = 1000.0;
/// Bad frames tolerated in a burst, and per second after it.
pub const ABUSE_BURST: f64 = 50.0;
pub const ABUSE_RATE: f64 = 5.0;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 20.0, t0);
        assert!((0..20).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        assert!(!b.take(t0 + Duration::from_millis(99)));
        assert!(b.take(t0 + Duration::from_millis(200)));
        // Never above the burst, however long idle.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| b.take(later)).count(), 20);
    }

    #[test]
    fn flood_is_rate_limited_then_closed() {
        let t0 = Instant::now();
        let mut l = SocketLimits::new(10, t0);
        let verdicts: Vec<Verdict> = (0..1100).map(|_| l.request(t0)).collect();
        assert!(verdicts[..20].iter().all(|v| *v == Verdict::Allow));
        assert!(
            verdicts[20..1020]
                .iter()
                .all(|v| *v == Verdict::RateLimited)
        );
        assert_eq!(verdicts[1020], Verdict::Close);
    }

    #[test]
    fn a_burst_of_300_requests_is_answered_not_closed() {
        let t0 = Instant::now();
        let mut l = SocketLimits::new(20, t0);
        let verdicts: Vec<Verdict> = (0..300).map(|_| l.request(t0)).collect();
        assert_eq!(
            verdicts.iter().filter(|v| **v == Verdict::Allow).count(),
            40
        );
        assert!(!verdicts.contains(&Verdict::Close));
        // Bad frames have their own, smaller budget.
        let bad: Vec<Verdict> = (0..51).map(|_| l.offence(t0)).collect();
        assert_eq!(bad[49], Verdict::RateLimited);
        assert_eq!(bad[50], Verdict::Close);
    }

    #[test]
    fn occasional_garbage_is_tolerated() {
        let t0 = Instant::now();
        let mut l = SocketLimits::new(10, t0);
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(250 * i);
            assert_eq!(l.offence(now), Verdict::RateLimited);
            assert_eq!(l.request(now), Verdict::Allow);
        }
    }
}
