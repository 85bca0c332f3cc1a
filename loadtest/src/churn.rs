//! The churn a caller plays out during its media: periodic toggles (mute, hold) and events
//! (reconnect, re-offer), each off when its period is zero.

use std::time::Duration;

/// How long a mute or hold toggle lasts.
pub const TOGGLE_FOR: Duration = Duration::from_secs(2);

/// A periodic toggle (mute, hold): on for [`TOGGLE_FOR`] every `every`, never when zero.
pub struct Toggle {
    every: Duration,
    pub next: Option<tokio::time::Instant>,
    pub on: bool,
}

impl Toggle {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            next: (!every.is_zero()).then(|| tokio::time::Instant::now() + every),
            on: false,
        }
    }

    /// The new state when it is time to flip.
    pub fn flip(&mut self, now: tokio::time::Instant) -> Option<bool> {
        if self.next.is_none_or(|t| now < t) {
            return None;
        }
        self.on = !self.on;
        self.next = Some(now + if self.on { TOGGLE_FOR } else { self.every });
        Some(self.on)
    }
}

/// A periodic event (reconnect, re-offer) every `every`, never when zero.
pub struct Every {
    every: Duration,
    pub next: Option<tokio::time::Instant>,
}

impl Every {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            next: (!every.is_zero()).then(|| tokio::time::Instant::now() + every),
        }
    }

    /// Whether it is due now; if so, the next one is scheduled.
    pub fn due(&mut self, now: tokio::time::Instant) -> bool {
        if self.next.is_none_or(|t| now < t) {
            return false;
        }
        self.next = Some(now + self.every);
        true
    }
}
