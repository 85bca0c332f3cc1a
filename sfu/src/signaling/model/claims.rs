//! The call model as a cluster member (`ModelConfig::claims`): whether a user is busy is the
//! cluster's answer, not this model's alone. A callee becomes a member only once their claim
//! for the call is granted; a refused claim is the same `busy` a local one is; members who
//! leave, and calls that end, free their claims.
//!
//! Invariant: every granted claim is released exactly once: when its member leaves, when its
//! call ends, or, for a claim answered after its call ended, at once.

use std::time::Instant;

use super::{CallModel, Output};
use crate::protocol::EndReason;

impl CallModel {
    /// The cluster's answer to [`Output::Claim`] for `user` in `call_id`.
    pub fn claimed(&mut self, now: Instant, call_id: &str, user: &str, granted: bool) {
        self.handle_timeout(now);
        let Some(call) = self.calls.get_mut(call_id) else {
            // The call ended meanwhile: nobody will release a claim that went through.
            if granted {
                self.release(call_id, user);
            }
            return;
        };
        if call.caller == user && call.member(user).is_some_and(|m| m.joined()) {
            // The caller's own claim: refused means they are in a call on another node.
            if !granted {
                self.end_call(now, call_id, EndReason::Busy);
            }
            return;
        }
        let Some(i) = call.claiming.iter().position(|(u, _, _)| u == user) else {
            if granted && call.member(user).is_none() {
                self.release(call_id, user);
            }
            return;
        };
        let (_, inviter, to) = call.claiming.remove(i);
        if granted {
            self.admit_invitee(now, call_id, &inviter, user, &to);
        } else {
            self.report_busy(call_id, user);
            self.end_if_done(now, call_id, EndReason::Busy);
        }
    }

    /// `user` left `call_id` (or it ended): their claim goes, in a cluster.
    pub(super) fn release(&mut self, call_id: &str, user: &str) {
        if self.cfg.claims {
            self.out.push_back(Output::Release {
                call_id: call_id.to_string(),
                user: user.to_string(),
            });
        }
    }
}

impl CallModel {
    /// Claims every member of every call again (the cluster store lost its state).
    pub fn reclaim_all(&mut self) {
        if !self.cfg.claims {
            return;
        }
        let mut claims = Vec::new();
        for call in self.calls.values() {
            for m in &call.members {
                claims.push((call.id.clone(), m.user.clone()));
            }
        }
        for (call_id, user) in claims {
            self.out.push_back(Output::Claim { call_id, user });
        }
    }

    /// `user` is reached on `conn` from now on, as after a login but with no response: how a
    /// cluster node serves a user whose socket is on another node (a relay connection). The
    /// model's takeover and replay apply: a previous connection gets `session_replaced` and is
    /// closed, the new one learns the user's calls.
    pub fn attach(&mut self, now: Instant, conn: super::ConnId, user: &str) {
        self.handle_timeout(now);
        let _ = self.do_login(conn, user, Vec::new());
    }
}
