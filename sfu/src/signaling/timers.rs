//! Deadlines of the call model: a min-heap with lazy cancellation. A fired entry is checked
//! against the current state by the model, so cancelling is free and rescheduling just pushes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a deadline is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// An invite to `user` in `call` goes unanswered.
    Invite { call: String, user: String },
    /// The reconnect grace period of a disconnected `user` ends.
    Grace { user: String },
}

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    pub fn schedule(&mut self, at: Instant, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    /// The earliest deadline (possibly of a stale entry: waking early is harmless).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Pops one timer due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        if self.next()? <= now {
            self.heap.pop().map(|Reverse(e)| e)
        } else {
            None
        }
    }
}
