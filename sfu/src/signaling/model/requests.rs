//! Requests other than `login`, `offer` and `answer`: parsed, checked against the caller's
//! membership, and handed to the call rules.

use std::time::Instant;

use serde_json::{Value, json};

use super::{CallModel, ConnId, Leave};
use crate::protocol::RequestId;

/// How a request is answered: now, or later by the media Worker (`offer`, `answer`).
pub(super) enum Reply {
    Now(Value),
    Later,
}
use crate::protocol::params as parse_params;
use crate::protocol::{Method, Notification, RpcError};
use crate::signaling::call::Member;
use crate::signaling::params::{
    self, CallIdParams, CallParams, DtmfParams, HoldParams, InviteParams,
};
use crate::signaling::params::{CandidateParams, MessageParams, MuteParams, SubscribeParams};

impl CallModel {
    pub(super) fn dispatch(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: &RequestId,
        method: Method,
        params: Value,
    ) -> Result<Reply, RpcError> {
        let Some(Some(me)) = self.conns.get(&conn).cloned() else {
            return Err(RpcError::unauthorized("not logged in: send login first"));
        };
        let now_reply = match method {
            Method::Login => Err(RpcError::wrong_state(
                "already logged in on this socket: logout first",
            )),
            Method::Ping => Ok(json!({})),
            Method::Logout => {
                self.logout(now, conn, &me);
                Ok(json!({}))
            }
            Method::Call => {
                let p: CallParams = parse_params(params)?;
                let p = p.validate(&me, self.cfg.max_call_members)?;
                self.place_call(now, &me, p)
            }
            Method::Invite => {
                let p: InviteParams = parse_params(params)?;
                params::check_call_id(&p.call_id)?;
                let to = params::callees(p.to, &me)?;
                self.invite(now, &me, &p.call_id, to)
            }
            Method::Accept => {
                let p: CallIdParams = parse_params(params)?;
                self.accept(now, &me, &p.call_id)
            }
            Method::Reject => {
                let p: CallIdParams = parse_params(params)?;
                let m = self.member(&me, &p.call_id)?;
                if !m.pending() {
                    return Err(RpcError::wrong_state(
                        "you are in this call: use hangup to leave it",
                    ));
                }
                self.reject(now, &p.call_id, &me);
                Ok(json!({}))
            }
            Method::Hangup => {
                let p: CallIdParams = parse_params(params)?;
                self.member(&me, &p.call_id)?;
                self.hang_up(now, &p.call_id, &me, Leave::Hangup);
                Ok(json!({}))
            }
            Method::Mute => {
                // Both fields are optional: with neither, nothing changes.
                let p: MuteParams = parse_params(params)?;
                self.mute(&me, &p)
            }
            Method::Hold => {
                let p: HoldParams = parse_params(params)?;
                self.hold(&me, p)
            }
            Method::Subscribe => {
                let p: SubscribeParams = parse_params(params)?;
                self.subscribe(&me, &p)
            }
            Method::Dtmf => {
                let p: DtmfParams = parse_params(params)?;
                params::check_digits(&p.digits)?;
                self.relay(&me, &p.call_id, |call_id, user| Notification::Dtmf {
                    call_id,
                    user,
                    digits: p.digits.clone(),
                })
            }
            Method::Message => {
                let p: MessageParams = parse_params(params)?;
                params::check_text(&p.text)?;
                self.relay(&me, &p.call_id, |call_id, user| Notification::Message {
                    call_id,
                    user,
                    text: p.text.clone(),
                })
            }
            Method::Candidate => {
                let p: CandidateParams = parse_params(params)?;
                self.candidate(&me, p)
            }
            Method::Offer | Method::Answer => {
                // Carried out by the Worker hosting the call, which answers later.
                return self
                    .sdp_request(conn, id, method, params)
                    .map(|()| Reply::Later);
            }
        };
        now_reply.map(Reply::Now)
    }

    /// `offer` / `answer`: checked here, carried out by the Worker hosting the call.
    /// The caller's membership of `call_id`: 4004 when there is no such call, 4003 when they
    /// are not (or no longer) in it.
    pub(super) fn member(&self, me: &str, call_id: &str) -> Result<&Member, RpcError> {
        params::check_call_id(call_id)?;
        let call = self.calls.get(call_id).ok_or_else(RpcError::no_such_call)?;
        call.member(me).ok_or_else(RpcError::forbidden)
    }

    pub(super) fn joined_member_mut(
        &mut self,
        me: &str,
        call_id: &str,
    ) -> Result<&mut Member, RpcError> {
        if !self.member(me, call_id)?.joined() {
            return Err(RpcError::wrong_state("you have not joined this call"));
        }
        self.calls
            .get_mut(call_id)
            .and_then(|c| c.member_mut(me))
            .ok_or_else(RpcError::no_such_call)
    }

    /// Relays a member's `dtmf` or `message` to the other joined members.
    pub(super) fn relay(
        &mut self,
        me: &str,
        call_id: &str,
        make: impl Fn(String, String) -> Notification,
    ) -> Result<Value, RpcError> {
        self.joined_member_mut(me, call_id)?;
        let call = self.calls.get(call_id).ok_or_else(RpcError::no_such_call)?;
        let audience = Self::audience(call, me);
        self.tell(&audience, make(call_id.to_string(), me.to_string()));
        Ok(json!({}))
    }
}
