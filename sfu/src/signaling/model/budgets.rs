//! Per-user budgets of the call rules (invites a caller sends, pushes a callee gets).

use std::collections::HashMap;
use std::time::Instant;

use crate::limits::TokenBucket;

/// Per-user budgets refilled per minute (invites a caller sends, pushes a callee gets), so
/// call/hangup loops cannot ring people or fire webhooks without end.
pub(crate) struct Budgets {
    per_minute: u32,
    users: HashMap<String, TokenBucket>,
}

/// Above this many tracked users, those whose budget refilled completely are forgotten.
const PRUNE_AT: usize = 10_000;

impl Budgets {
    pub fn per_minute(per_minute: u32) -> Self {
        Self {
            per_minute,
            users: HashMap::new(),
        }
    }

    /// Takes `n` from `user`'s budget; false (and nothing taken) if it has fewer left.
    pub fn take(&mut self, user: &str, n: usize, now: Instant) -> bool {
        if self.users.len() >= PRUNE_AT {
            self.users.retain(|_, b| !b.full(now));
        }
        let per_minute = f64::from(self.per_minute);
        self.users
            .entry(user.to_string())
            .or_insert_with(|| TokenBucket::new(per_minute / 60.0, per_minute, now))
            .take_n(now, n as f64)
    }
}
