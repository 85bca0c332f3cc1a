//! The call rules of PROTOCOL.md: login and replay, placing and inviting, accept, reject,
//! hang-up, invite timeouts, reconnect grace, and the end of a call.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{Value, json};

use super::{CallEvent, CallModel, ConnId, Leave, Output};
use crate::media::Command;
use crate::protocol::{EndReason, Notification, Outbound, RpcError};
use crate::signaling::call::{Call, Member, MemberState};
use crate::signaling::params;

impl CallModel {
    pub(super) fn do_login(
        &mut self,
        conn: ConnId,
        user: &str,
        ice_servers: Vec<Value>,
    ) -> Result<Value, RpcError> {
        if let Some(Some(_)) = self.conns.get(&conn) {
            return Err(RpcError::wrong_state(
                "already logged in on this socket: logout first",
            ));
        }
        let u = self.users.entry(user.to_string()).or_default();
        let old = u.conn.replace(conn);
        u.grace = None;
        if let Some(old) = old.filter(|&c| c != conn) {
            self.conns.insert(old, None);
            self.out.push_back(Output::Send {
                conn: old,
                msg: Outbound::Notify(Notification::SessionReplaced {}),
            });
            self.out.push_back(Output::Close {
                conn: old,
                code: 4000,
                reason: "session replaced",
            });
        }
        self.conns.insert(conn, Some(user.to_string()));
        self.replay(user);
        Ok(json!({
            "user": user,
            "session_id": format!("{}-s{}", self.cfg.instance, conn.0),
            "ice_servers": ice_servers,
        }))
    }

    /// What a user who (re)appears must learn about their live calls.
    pub(super) fn replay(&mut self, user: &str) {
        let call_ids = self
            .users
            .get(user)
            .map(|u| u.calls.clone())
            .unwrap_or_default();
        for call_id in call_ids {
            let Some(call) = self.calls.get_mut(&call_id) else {
                continue;
            };
            let Some(m) = call.member_mut(user) else {
                continue;
            };
            match m.state {
                MemberState::Invited | MemberState::Ringing => {
                    m.state = MemberState::Ringing;
                    let m = m.clone();
                    let n = Self::invited(call, &m);
                    self.notify(user, n);
                }
                MemberState::Joined => {
                    let others = Self::audience(call, user);
                    for other in others {
                        self.notify(
                            user,
                            Notification::UserEnter {
                                call_id: call_id.clone(),
                                user: other,
                            },
                        );
                    }
                }
            }
        }
    }

    pub(super) fn logout(&mut self, now: Instant, conn: ConnId, me: &str) {
        let calls = self
            .users
            .get(me)
            .map(|u| u.calls.clone())
            .unwrap_or_default();
        for call_id in calls {
            self.hang_up(now, &call_id, me, Leave::Logout);
        }
        self.conns.insert(conn, None);
        self.users.remove(me);
    }

    /// Whether `me` may invite `n` more users now (`4029` when their per-minute budget is spent).
    fn invite_allowance(&mut self, me: &str, n: usize, now: Instant) -> Result<(), RpcError> {
        if n == 0 || self.invite_budget.take(me, n, now) {
            return Ok(());
        }
        Err(RpcError::new(
            crate::protocol::codes::RATE_LIMITED,
            format!(
                "too many invites: at most {} users per minute",
                self.cfg.max_invites_per_minute
            ),
        ))
    }

    pub(super) fn place_call(
        &mut self,
        now: Instant,
        me: &str,
        p: params::NewCall,
    ) -> Result<Value, RpcError> {
        let live = self.users.get(me).map_or(0, |u| u.calls.len());
        if live >= self.cfg.max_calls_per_user {
            return Err(RpcError::wrong_state(format!(
                "you are already in {live} call(s); the limit is {}",
                self.cfg.max_calls_per_user
            )));
        }
        self.invite_allowance(me, p.to.len(), now)?;
        self.next_call += 1;
        let call_id = format!("{}-c{}", self.cfg.instance, self.next_call);
        let caller = Member {
            user: me.to_string(),
            state: MemberState::Joined,
            inviter: me.to_string(),
            invite_to: Vec::new(),
            invited_at: now,
            deadline: now,
            audio_muted: false,
            video_muted: false,
            held: false,
        };
        self.calls.insert(
            call_id.clone(),
            Call {
                id: call_id.clone(),
                group: p.group,
                media: p.media,
                caller: me.to_string(),
                client_state: p.client_state,
                headers: p.headers,
                created: now,
                answered: false,
                members: vec![caller],
                claiming: Vec::new(),
            },
        );
        if self.cfg.claims {
            self.out.push_back(Output::Claim {
                call_id: call_id.clone(),
                user: me.to_string(),
            });
        }
        if let Some(u) = self.users.get_mut(me) {
            u.calls.push(call_id.clone());
        }
        let mut members = vec![me.to_string()];
        members.extend(p.to.iter().cloned());
        self.out.push_back(Output::Event(CallEvent::Started {
            call_id: call_id.clone(),
            group: p.group,
            media: p.media,
            members,
        }));
        for callee in &p.to {
            self.add_invitee(now, &call_id, me, callee, &p.to);
        }
        self.end_if_done(now, &call_id, EndReason::Busy);
        Ok(json!({ "call_id": call_id }))
    }

    pub(super) fn invite(
        &mut self,
        now: Instant,
        me: &str,
        call_id: &str,
        to: Vec<String>,
    ) -> Result<Value, RpcError> {
        if !self.member(me, call_id)?.joined() {
            return Err(RpcError::wrong_state("you have not joined this call"));
        }
        let call = self.calls.get(call_id).ok_or_else(RpcError::no_such_call)?;
        if !call.group {
            return Err(RpcError::wrong_state(
                "invite works on group calls only; this is a 1v1 call",
            ));
        }
        let to: Vec<String> = to.into_iter().filter(|u| !call.involves(u)).collect();
        if call.members.len() + call.claiming.len() + to.len() > self.cfg.max_call_members {
            return Err(RpcError::wrong_state(format!(
                "the call would exceed {} members",
                self.cfg.max_call_members
            )));
        }
        self.invite_allowance(me, to.len(), now)?;
        for user in &to {
            self.add_invitee(now, call_id, me, user, &to);
        }
        Ok(json!({}))
    }

    pub(super) fn accept(
        &mut self,
        now: Instant,
        me: &str,
        call_id: &str,
    ) -> Result<Value, RpcError> {
        if !self.member(me, call_id)?.pending() {
            return Err(RpcError::wrong_state("you have already answered this call"));
        }
        let call = self
            .calls
            .get_mut(call_id)
            .ok_or_else(RpcError::no_such_call)?;
        let m = call.member_mut(me).ok_or_else(RpcError::forbidden)?;
        m.state = MemberState::Joined;
        let setup = now.saturating_duration_since(m.invited_at);
        call.answered = true;
        let others = Self::audience(call, me);
        self.out.push_back(Output::Event(CallEvent::Answered {
            call_id: call_id.to_string(),
            user: me.to_string(),
            setup,
        }));
        let (cid, user) = (call_id.to_string(), me.to_string());
        self.tell(
            &others,
            Notification::Accepted {
                call_id: cid.clone(),
                user: user.clone(),
            },
        );
        self.tell(
            &others,
            Notification::UserEnter {
                call_id: cid.clone(),
                user,
            },
        );
        for other in others {
            self.notify(
                me,
                Notification::UserEnter {
                    call_id: cid.clone(),
                    user: other,
                },
            );
        }
        Ok(json!({}))
    }

    /// A pending invitee says no (`reject`, or `hangup`/`logout` while ringing).
    pub(super) fn reject(&mut self, now: Instant, call_id: &str, me: &str) {
        self.drop_member(call_id, me);
        if let Some(call) = self.calls.get(call_id) {
            let audience = Self::audience(call, me);
            self.tell(
                &audience,
                Notification::Rejected {
                    call_id: call_id.to_string(),
                    user: me.to_string(),
                },
            );
        }
        self.end_if_done(now, call_id, EndReason::Rejected);
    }

    /// `me` leaves `call_id` however they are in it.
    pub(super) fn hang_up(&mut self, now: Instant, call_id: &str, me: &str, how: Leave) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let Some(m) = call.member(me) else {
            return;
        };
        if m.pending() {
            self.reject(now, call_id, me);
        } else if !call.answered && call.caller == me {
            let reason = match how {
                Leave::Disconnected => EndReason::Disconnected,
                _ => EndReason::Cancelled,
            };
            self.drop_member(call_id, me);
            self.end_call(now, call_id, reason);
        } else {
            self.drop_member(call_id, me);
            if let Some(call) = self.calls.get(call_id) {
                let audience = Self::audience(call, me);
                self.tell(
                    &audience,
                    Notification::UserLeave {
                        call_id: call_id.to_string(),
                        user: me.to_string(),
                        reason: how.reason(),
                    },
                );
            }
            self.end_if_done(now, call_id, how.end_reason());
        }
    }

    // ---- timers ----

    pub(super) fn invite_expired(&mut self, now: Instant, call_id: &str, user: &str) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        match call.member(user) {
            Some(m) if m.pending() && m.deadline <= now => {}
            _ => return, // answered, gone, or re-invited with a later deadline
        }
        self.drop_member(call_id, user);
        self.notify(
            user,
            Notification::InviteTimeout {
                call_id: call_id.to_string(),
            },
        );
        if let Some(call) = self.calls.get(call_id) {
            let audience = Self::audience(call, user);
            self.tell(
                &audience,
                Notification::NoResponse {
                    call_id: call_id.to_string(),
                    user: user.to_string(),
                },
            );
        }
        self.end_if_done(now, call_id, EndReason::NoResponse);
        self.forget_if_idle(user);
    }

    pub(super) fn grace_expired(&mut self, now: Instant, user: &str) {
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        if u.conn.is_some() || u.grace.is_none_or(|g| g > now) {
            return;
        }
        u.grace = None;
        let calls = u.calls.clone();
        for call_id in calls {
            let joined = self
                .calls
                .get(&call_id)
                .and_then(|c| c.member(user))
                .is_some_and(Member::joined);
            // A ringing invite stays pending: they may still log in before it times out.
            if joined {
                self.hang_up(now, &call_id, user, Leave::Disconnected);
            }
        }
        self.forget_if_idle(user);
    }

    // ---- bookkeeping ----

    /// Removes `user` from `call_id` and the call from their list.
    pub(super) fn drop_member(&mut self, call_id: &str, user: &str) {
        let removed = self.calls.get_mut(call_id).and_then(|c| c.remove(user));
        if removed.as_ref().is_some_and(|m| m.joined()) {
            self.out.push_back(Output::Media(Command::Leave {
                call_id: call_id.to_string(),
                user: user.to_string(),
            }));
        }
        if removed.is_some() {
            self.release(call_id, user);
        }
        if let Some(u) = self.users.get_mut(user) {
            u.calls.retain(|c| c != call_id);
        }
    }

    pub(super) fn end_if_done(&mut self, now: Instant, call_id: &str, reason: EndReason) {
        if self.calls.get(call_id).is_some_and(Call::should_end) {
            self.end_call(now, call_id, reason);
        }
    }

    /// Ends a call: `call_end` to the joined members still in it, `cancelled` to pending
    /// invitees.
    pub(super) fn end_call(&mut self, now: Instant, call_id: &str, reason: EndReason) {
        let Some(call) = self.calls.remove(call_id) else {
            return;
        };
        for m in &call.members {
            let n = if m.joined() {
                Notification::CallEnd {
                    call_id: call_id.to_string(),
                    reason,
                }
            } else {
                Notification::Cancelled {
                    call_id: call_id.to_string(),
                }
            };
            self.notify(&m.user, n);
        }
        for m in &call.members {
            if let Some(u) = self.users.get_mut(&m.user) {
                u.calls.retain(|c| c != call_id);
            }
            self.forget_if_idle(&m.user);
            self.release(call_id, &m.user);
        }
        // Claims still in flight are released when they are answered (`claimed`).
        self.out.push_back(Output::Media(Command::EndCall {
            call_id: call_id.to_string(),
        }));
        self.out.push_back(Output::Event(CallEvent::Ended {
            call_id: call_id.to_string(),
            reason,
            answered: call.answered,
            duration: now.saturating_duration_since(call.created),
        }));
    }

    /// Drops a user who is neither connected nor in any call.
    pub(super) fn forget_if_idle(&mut self, user: &str) {
        if self
            .users
            .get(user)
            .is_some_and(|u| u.conn.is_none() && u.calls.is_empty())
        {
            self.users.remove(user);
        }
    }

    #[doc(hidden)]
    /// For tests: the member states of a call, by user.
    pub fn debug_members(&self, call_id: &str) -> Option<BTreeMap<String, MemberState>> {
        self.calls.get(call_id).map(|c| {
            c.members
                .iter()
                .map(|m| (m.user.clone(), m.state))
                .collect()
        })
    }
}
