//! The call model: a sans-IO state machine of Sessions, Calls and Members implementing
//! PROTOCOL.md's call rules and reconnect. Inputs are requests, logins, disconnects and "it is
//! now T"; outputs are frames for sessions, socket closes, push webhooks and call events, plus
//! the next time it wants to be woken. No sockets, tasks or clocks in here.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::call::{Call, Member, MemberState};
use super::params::{self, CallIdParams, CallParams, DtmfParams, HoldParams, InviteParams};
use super::params::{CandidateParams, MessageParams, MuteParams, SdpParams};
use super::timers::{Timer, Timers};
use crate::media::Audience;
use crate::protocol::params as parse_params;
use crate::protocol::{
    EndReason, LeaveReason, Media, Method, Notification, Outbound, RequestId, RpcError,
};

/// One WebSocket connection, numbered by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Tunables of the call rules.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub invite_timeout: Duration,
    pub reconnect_grace: Duration,
    pub max_call_members: usize,
    pub max_calls_per_user: usize,
    /// Prefix of session and call ids, unique per server instance.
    pub instance: String,
    /// Sent in the `login` result.
    pub ice_servers: Vec<Value>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            invite_timeout: Duration::from_secs(30),
            reconnect_grace: Duration::from_secs(10),
            max_call_members: 16,
            max_calls_per_user: 1,
            instance: "sfu".into(),
            ice_servers: Vec::new(),
        }
    }
}

/// What the push webhook receives for a callee who is offline when invited.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PushNotice {
    pub call_id: String,
    pub from: String,
    pub to: String,
    pub media: Media,
    pub client_state: Option<String>,
}

/// Facts about calls for metrics, the call directory and (later) call records.
#[derive(Clone, Debug, PartialEq)]
pub enum CallEvent {
    Started {
        call_id: String,
        group: bool,
        media: Media,
        /// The caller and the callees invited by `call`.
        members: Vec<String>,
    },
    /// `user` accepted, `setup` after their invite.
    Answered {
        call_id: String,
        user: String,
        setup: Duration,
    },
    Ended {
        call_id: String,
        reason: EndReason,
        answered: bool,
        duration: Duration,
    },
}

/// What the media Worker hosting a call must do. Offer and answer carry the request to
/// answer: the Worker's reply comes back through [`CallModel::media_reply`].
#[derive(Clone, Debug, PartialEq)]
pub enum MediaCommand {
    Offer {
        call_id: String,
        user: String,
        sdp: String,
        /// Whether the call carries video (audio calls forward audio only).
        video: bool,
        conn: ConnId,
        id: RequestId,
    },
    Answer {
        call_id: String,
        user: String,
        sdp: String,
        conn: ConnId,
        id: RequestId,
    },
    Candidate {
        call_id: String,
        user: String,
        candidate: String,
    },
    Hold {
        call_id: String,
        user: String,
        held: bool,
    },
    Mute {
        call_id: String,
        user: String,
        audio: Option<bool>,
        video: Option<bool>,
    },
    /// The member left: close their Peer.
    Leave { call_id: String, user: String },
    /// The call ended: close all its Peers.
    EndCall { call_id: String },
}

impl MediaCommand {
    pub fn call_id(&self) -> &str {
        match self {
            MediaCommand::Offer { call_id, .. }
            | MediaCommand::Answer { call_id, .. }
            | MediaCommand::Candidate { call_id, .. }
            | MediaCommand::Hold { call_id, .. }
            | MediaCommand::Mute { call_id, .. }
            | MediaCommand::Leave { call_id, .. }
            | MediaCommand::EndCall { call_id } => call_id,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Send {
        conn: ConnId,
        msg: Outbound,
    },
    /// Close the socket with this WebSocket close code.
    Close {
        conn: ConnId,
        code: u16,
        reason: &'static str,
    },
    Push(PushNotice),
    Event(CallEvent),
    Media(MediaCommand),
}

/// A logged-in user: their session (if connected) and the live calls they are in.
#[derive(Debug, Default)]
struct User {
    conn: Option<ConnId>,
    /// Set while disconnected with calls: when the grace period ends.
    grace: Option<Instant>,
    calls: Vec<String>,
}

/// How a joined member leaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Leave {
    Hangup,
    Logout,
    Disconnected,
}

impl Leave {
    fn reason(self) -> LeaveReason {
        match self {
            Leave::Hangup => LeaveReason::Hangup,
            Leave::Logout => LeaveReason::Logout,
            Leave::Disconnected => LeaveReason::Disconnected,
        }
    }
    fn end_reason(self) -> EndReason {
        match self {
            Leave::Hangup | Leave::Logout => EndReason::Hangup,
            Leave::Disconnected => EndReason::Disconnected,
        }
    }
}

pub struct CallModel {
    cfg: ModelConfig,
    conns: HashMap<ConnId, Option<String>>,
    users: HashMap<String, User>,
    calls: HashMap<String, Call>,
    timers: Timers,
    next_call: u64,
    out: VecDeque<Output>,
}

impl CallModel {
    pub fn new(cfg: ModelConfig) -> Self {
        Self {
            cfg,
            conns: HashMap::new(),
            users: HashMap::new(),
            calls: HashMap::new(),
            timers: Timers::default(),
            next_call: 0,
            out: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Next output to carry out, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When to call [`CallModel::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub fn calls_active(&self) -> usize {
        self.calls.len()
    }

    /// Users known to the model: connected, or offline with a live call.
    pub fn users_known(&self) -> usize {
        self.users.len()
    }

    /// Fires every deadline at or before `now`: invite timeouts, then grace expiries, in
    /// deadline order. An input at the exact deadline comes after the timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, timer)) = self.timers.pop_due(now) {
            match timer {
                Timer::Invite { call, user } => self.invite_expired(at, &call, &user),
                Timer::Grace { user } => self.grace_expired(at, &user),
            }
        }
    }

    /// A `login` whose token the shell has verified.
    pub fn login(&mut self, now: Instant, conn: ConnId, id: RequestId, user: String) {
        self.handle_timeout(now);
        let mark = self.out.len();
        let result = self.do_login(conn, &user);
        self.respond_at(mark, conn, id, Method::Login, result);
    }

    /// Any request but `login` (which the shell verifies and hands to [`CallModel::login`]).
    pub fn request(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: RequestId,
        method: Method,
        params: Value,
    ) {
        self.handle_timeout(now);
        let mark = self.out.len();
        let result = match method {
            Method::Offer | Method::Answer => match self.sdp_request(conn, &id, method, params) {
                Ok(()) => return, // the Worker answers through `media_reply`
                Err(e) => Err(e),
            },
            _ => self.dispatch(now, conn, method, params),
        };
        self.respond_at(mark, conn, id, method, result);
    }

    /// The Worker's reply to an `offer` or `answer` request.
    pub fn media_reply(
        &mut self,
        conn: ConnId,
        id: RequestId,
        method: Method,
        result: Result<Value, RpcError>,
    ) {
        self.respond_at(self.out.len(), conn, id, method, result);
    }

    /// A Worker's volume, quality or availability report, for the call's joined members.
    pub fn media_notify(&mut self, call_id: &str, audience: &Audience, n: Notification) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let except = match audience {
            Audience::All => "",
            Audience::Others(user) => user.as_str(),
        };
        let to = Self::audience(call, except);
        self.tell(&to, n);
    }

    /// A server-initiated offer from the Worker, for `user` if they are still joined.
    pub fn media_offer(&mut self, call_id: &str, user: &str, sdp: String) {
        let joined = self
            .calls
            .get(call_id)
            .and_then(|c| c.member(user))
            .is_some_and(Member::joined);
        if joined {
            self.notify(
                user,
                Notification::Offer {
                    call_id: call_id.to_string(),
                    sdp,
                },
            );
        }
    }

    /// The socket `conn` is gone (closed, dropped or silent too long).
    pub fn disconnect(&mut self, now: Instant, conn: ConnId) {
        self.handle_timeout(now);
        let Some(Some(user)) = self.conns.remove(&conn) else {
            return;
        };
        let Some(u) = self.users.get_mut(&user) else {
            return;
        };
        if u.conn != Some(conn) {
            return; // replaced by a newer session already
        }
        u.conn = None;
        if u.calls.is_empty() {
            self.users.remove(&user);
            return;
        }
        let at = now + self.cfg.reconnect_grace;
        u.grace = Some(at);
        self.timers.schedule(at, Timer::Grace { user });
        self.handle_timeout(now);
    }

    // ---- plumbing ----

    /// Puts the response before the notifications its request caused, so a client always
    /// learns a call id before anything about that call.
    fn respond_at(
        &mut self,
        mark: usize,
        conn: ConnId,
        id: RequestId,
        method: Method,
        result: Result<Value, RpcError>,
    ) {
        let msg = Outbound::Response {
            id,
            method: Some(method),
            result,
        };
        self.out.insert(mark, Output::Send { conn, msg });
    }

    fn notify(&mut self, user: &str, n: Notification) {
        if let Some(conn) = self.users.get(user).and_then(|u| u.conn) {
            self.out.push_back(Output::Send {
                conn,
                msg: Outbound::Notify(n),
            });
        }
    }

    fn notify_all<'a>(&mut self, users: impl IntoIterator<Item = &'a str>, n: Notification) {
        let conns: Vec<ConnId> = users
            .into_iter()
            .filter_map(|u| self.users.get(u).and_then(|u| u.conn))
            .collect();
        for conn in conns {
            self.out.push_back(Output::Send {
                conn,
                msg: Outbound::Notify(n.clone()),
            });
        }
    }

    /// Joined members of `call` other than `except`, as owned ids.
    fn audience(call: &Call, except: &str) -> Vec<String> {
        call.others_joined(except).map(str::to_string).collect()
    }

    fn tell(&mut self, users: &[String], n: Notification) {
        self.notify_all(users.iter().map(String::as_str), n);
    }

    fn is_busy(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| !u.calls.is_empty())
    }

    fn invited(call: &Call, m: &Member) -> Notification {
        Notification::Invited {
            call_id: call.id.clone(),
            from: m.inviter.clone(),
            to: m.invite_to.clone(),
            media: call.media,
            group: call.group,
            client_state: call.client_state.clone(),
            headers: call.headers.clone(),
        }
    }

    // ---- requests ----

    fn dispatch(
        &mut self,
        now: Instant,
        conn: ConnId,
        method: Method,
        params: Value,
    ) -> Result<Value, RpcError> {
        let Some(Some(me)) = self.conns.get(&conn).cloned() else {
            return Err(RpcError::unauthorized("not logged in: send login first"));
        };
        match method {
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
                let p: MuteParams = parse_params(params)?;
                if p.audio.is_none() && p.video.is_none() {
                    return Err(RpcError::invalid_params("give audio and/or video"));
                }
                self.mute(&me, &p)
            }
            Method::Hold => {
                let p: HoldParams = parse_params(params)?;
                self.joined_member_mut(&me, &p.call_id)?.held = p.held;
                self.out.push_back(Output::Media(MediaCommand::Hold {
                    call_id: p.call_id,
                    user: me,
                    held: p.held,
                }));
                Ok(json!({}))
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
                params::check_candidate(&p.candidate)?;
                self.joined_member_mut(&me, &p.call_id)?;
                self.out.push_back(Output::Media(MediaCommand::Candidate {
                    call_id: p.call_id,
                    user: me,
                    candidate: p.candidate,
                }));
                Ok(json!({}))
            }
            Method::Offer | Method::Answer => Err(RpcError::new(
                crate::protocol::codes::INTERNAL,
                "internal error: SDP request routed wrongly",
            )),
        }
    }

    /// `offer` / `answer`: checked here, carried out by the Worker hosting the call.
    fn sdp_request(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        method: Method,
        params: Value,
    ) -> Result<(), RpcError> {
        let Some(Some(me)) = self.conns.get(&conn).cloned() else {
            return Err(RpcError::unauthorized("not logged in: send login first"));
        };
        let p: SdpParams = parse_params(params)?;
        params::check_sdp(&p.sdp)?;
        self.joined_member_mut(&me, &p.call_id)?;
        let video = self
            .calls
            .get(&p.call_id)
            .is_some_and(|c| c.media == Media::Video);
        let (call_id, user, sdp, id) = (p.call_id, me, p.sdp, id.clone());
        let cmd = if method == Method::Offer {
            MediaCommand::Offer {
                call_id,
                user,
                sdp,
                video,
                conn,
                id,
            }
        } else {
            MediaCommand::Answer {
                call_id,
                user,
                sdp,
                conn,
                id,
            }
        };
        self.out.push_back(Output::Media(cmd));
        Ok(())
    }

    /// The caller's membership of `call_id`: 4004 when there is no such call, 4003 when they
    /// are not (or no longer) in it.
    fn member(&self, me: &str, call_id: &str) -> Result<&Member, RpcError> {
        params::check_call_id(call_id)?;
        let call = self.calls.get(call_id).ok_or_else(RpcError::no_such_call)?;
        call.member(me).ok_or_else(RpcError::forbidden)
    }

    fn joined_member_mut(&mut self, me: &str, call_id: &str) -> Result<&mut Member, RpcError> {
        if !self.member(me, call_id)?.joined() {
            return Err(RpcError::wrong_state("you have not joined this call"));
        }
        self.calls
            .get_mut(call_id)
            .and_then(|c| c.member_mut(me))
            .ok_or_else(RpcError::no_such_call)
    }

    fn do_login(&mut self, conn: ConnId, user: &str) -> Result<Value, RpcError> {
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
            "ice_servers": self.cfg.ice_servers,
        }))
    }

    /// What a user who (re)appears must learn about their live calls.
    fn replay(&mut self, user: &str) {
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

    fn logout(&mut self, now: Instant, conn: ConnId, me: &str) {
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

    fn place_call(
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
            },
        );
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

    /// Invites one user, or reports them busy to the joined members.
    fn add_invitee(
        &mut self,
        now: Instant,
        call_id: &str,
        inviter: &str,
        user: &str,
        to: &[String],
    ) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        if self.is_busy(user) {
            let audience = Self::audience(call, "");
            self.tell(
                &audience,
                Notification::Busy {
                    call_id: call_id.to_string(),
                    user: user.to_string(),
                },
            );
            return;
        }
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
            self.out.push_back(Output::Push(push));
        }
    }

    fn invite(
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
        let to: Vec<String> = to
            .into_iter()
            .filter(|u| call.member(u).is_none())
            .collect();
        if call.members.len() + to.len() > self.cfg.max_call_members {
            return Err(RpcError::wrong_state(format!(
                "the call would exceed {} members",
                self.cfg.max_call_members
            )));
        }
        for user in &to {
            self.add_invitee(now, call_id, me, user, &to);
        }
        Ok(json!({}))
    }

    fn accept(&mut self, now: Instant, me: &str, call_id: &str) -> Result<Value, RpcError> {
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
    fn reject(&mut self, now: Instant, call_id: &str, me: &str) {
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
    fn hang_up(&mut self, now: Instant, call_id: &str, me: &str, how: Leave) {
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

    fn mute(&mut self, me: &str, p: &MuteParams) -> Result<Value, RpcError> {
        let m = self.joined_member_mut(me, &p.call_id)?;
        let audio_off = p.audio == Some(true) && !m.audio_muted;
        let video_off = p.video == Some(true) && !m.video_muted;
        if let Some(a) = p.audio {
            m.audio_muted = a;
        }
        if let Some(v) = p.video {
            m.video_muted = v;
        }
        self.out.push_back(Output::Media(MediaCommand::Mute {
            call_id: p.call_id.clone(),
            user: me.to_string(),
            audio: p.audio,
            video: p.video,
        }));
        let call = self
            .calls
            .get(&p.call_id)
            .ok_or_else(RpcError::no_such_call)?;
        let video_call = call.media == Media::Video;
        let audience = Self::audience(call, me);
        if audio_off {
            self.tell(
                &audience,
                Notification::AudioAvailable {
                    call_id: p.call_id.clone(),
                    user: me.to_string(),
                    available: false,
                },
            );
        }
        if video_off && video_call {
            self.tell(
                &audience,
                Notification::VideoAvailable {
                    call_id: p.call_id.clone(),
                    user: me.to_string(),
                    available: false,
                },
            );
        }
        Ok(json!({}))
    }

    /// Relays a member's `dtmf` or `message` to the other joined members.
    fn relay(
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

    // ---- timers ----

    fn invite_expired(&mut self, now: Instant, call_id: &str, user: &str) {
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

    fn grace_expired(&mut self, now: Instant, user: &str) {
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
    fn drop_member(&mut self, call_id: &str, user: &str) {
        if let Some(call) = self.calls.get_mut(call_id)
            && call.remove(user).is_some_and(|m| m.joined())
        {
            self.out.push_back(Output::Media(MediaCommand::Leave {
                call_id: call_id.to_string(),
                user: user.to_string(),
            }));
        }
        if let Some(u) = self.users.get_mut(user) {
            u.calls.retain(|c| c != call_id);
        }
    }

    fn end_if_done(&mut self, now: Instant, call_id: &str, reason: EndReason) {
        if self.calls.get(call_id).is_some_and(Call::should_end) {
            self.end_call(now, call_id, reason);
        }
    }

    /// Ends a call: `call_end` to the joined members still in it, `cancelled` to pending
    /// invitees.
    fn end_call(&mut self, now: Instant, call_id: &str, reason: EndReason) {
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
        }
        self.out.push_back(Output::Media(MediaCommand::EndCall {
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
    fn forget_if_idle(&mut self, user: &str) {
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
