//! Inviting one user: busy here, claimed in the cluster (`claims.rs`), then ringing at once or
//! waiting for their login (with a push webhook).

use std::time::Instant;

use super::{CallModel, Output, PushNotice};
use crate::protocol::Notification;
use crate::signaling::call::{Member, MemberState};
use crate::signaling::timers::Timer;

impl CallModel {
    /// Invites one user, or reports them busy to the joined members.
    pub(super) fn add_invitee(
        &mut self,
        now: Instant,
        call_id: &str,
        inviter: &str,
        user: &str,
        to: &[String],
    ) {
        if !self.calls.contains_key(call_id) {
            return;
        }
        if self.is_busy(user) {
            return self.report_busy(call_id, user);
        }
        if self.cfg.claims {
            // Busy elsewhere in the cluster? The claim's answer decides (`claimed`).
            if let Some(call) = self.calls.get_mut(call_id) {
                call.claiming
                    .push((user.to_string(), inviter.to_string(), to.to_vec()));
            }
            self.out.push_back(Output::Claim {
                call_id: call_id.to_string(),
                user: user.to_string(),
            });
            return;
        }
        self.admit_invitee(now, call_id, inviter, user, to);
    }

    /// Makes `user` a pending member of `call_id`: `invited` now, or a push and the invite
    /// waiting for their login.
    pub(super) fn admit_invitee(
        &mut self,
        now: Instant,
        call_id: &str,
        inviter: &str,
        user: &str,
        to: &[String],
    ) {
        let online = self.users.get(user).is_some_and(|u| u.conn.is_some());
        let deadline = now + self.cfg.invite_timeout;
        let member = Member {
            user: user.to_string(),
            state: if online {
                MemberState::Ringing
            } else {
                MemberState::Invited
            },
            inviter: inviter.to_string(),
            invite_to: to.to_vec(),
            invited_at: now,
            deadline,
            audio_muted: false,
            video_muted: false,
            held: false,
        };
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let n = Self::invited(call, &member);
        let push = PushNotice {
            call_id: call_id.to_string(),
            from: inviter.to_string(),
            to: user.to_string(),
            media: call.media,
            client_state: call.client_state.clone(),
        };
        call.members.push(member);
        self.users
            .entry(user.to_string())
            .or_default()
            .calls
            .push(call_id.to_string());
        self.timers.schedule(
            deadline,
            Timer::Invite {
                call: call_id.to_string(),
                user: user.to_string(),
            },
        );
        if online {
            self.notify(user, n);
        } else {
            if self.push_budget.take(user, 1, now) {
                self.out.push_back(Output::Push(push));
            } else {
                // The invite still rings on their next login; only the webhook is spared.
                self.pushes_limited += 1;
            }
        }
    }

    /// Tells `call_id`'s members that `user` is busy (in a call here, or elsewhere in the cluster).
    pub(super) fn report_busy(&mut self, call_id: &str, user: &str) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let audience = Self::audience(call, "");
        self.tell(
            &audience,
            Notification::Busy {
                call_id: call_id.to_string(),
                user: user.to_string(),
            },
        );
    }
}
