//! The call model: a sans-IO state machine of Sessions, Calls and Members implementing
//! PROTOCOL.md's call rules and reconnect. Inputs are requests, logins, disconnects and "it is
//! now T"; outputs are frames for sessions, socket closes, push webhooks and call events, plus
//! the next time it wants to be woken. No sockets, tasks or clocks in here.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::call::{Call, Member};
use super::timers::{Timer, Timers};
use crate::media::{Command, Ticket};
use crate::protocol::{
    EndReason, LeaveReason, Media, Method, Notification, Outbound, RequestId, RpcError,
};

mod budgets;
mod claims;
mod invites;
mod media;
mod requests;
mod rules;

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
    /// Users a caller may invite per minute (`call` and `invite` together).
    pub max_invites_per_minute: u32,
    /// Push webhooks per offline callee per minute; more invites ring without a push.
    pub max_pushes_per_minute: u32,
    /// In a cluster, whether a user is busy is known to the cluster, not to this model alone:
    /// every member of a call is claimed for it ([`Output::Claim`], answered by
    /// [`CallModel::claimed`]), a callee is invited only once their claim is granted, and a
    /// member who leaves is released ([`Output::Release`]).
    pub claims: bool,
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
            max_invites_per_minute: 30,
            max_pushes_per_minute: 6,
            claims: false,
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
    Media(Command),
    /// Make `user` busy with `call_id` across the cluster, unless a live call elsewhere holds
    /// them; answer with [`CallModel::claimed`]. Only with [`ModelConfig::claims`].
    Claim {
        call_id: String,
        user: String,
    },
    /// `user` is no longer in `call_id`: free their claim (if it is still this call's).
    Release {
        call_id: String,
        user: String,
    },
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
    pub(super) fn reason(self) -> LeaveReason {
        match self {
            Leave::Hangup => LeaveReason::Hangup,
            Leave::Logout => LeaveReason::Logout,
            Leave::Disconnected => LeaveReason::Disconnected,
        }
    }
    pub(super) fn end_reason(self) -> EndReason {
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
    /// `offer`/`answer` requests the Worker has not answered yet, by ticket.
    tickets: HashMap<Ticket, (ConnId, RequestId, Method)>,
    next_ticket: Ticket,
    /// Invites each caller may still send, and pushes each callee may still get.
    invite_budget: budgets::Budgets,
    push_budget: budgets::Budgets,
    pushes_limited: u64,
}

impl CallModel {
    pub fn new(cfg: ModelConfig) -> Self {
        let invite_budget = budgets::Budgets::per_minute(cfg.max_invites_per_minute);
        let push_budget = budgets::Budgets::per_minute(cfg.max_pushes_per_minute);
        Self {
            cfg,
            conns: HashMap::new(),
            users: HashMap::new(),
            calls: HashMap::new(),
            timers: Timers::default(),
            next_call: 0,
            out: VecDeque::new(),
            tickets: HashMap::new(),
            next_ticket: 0,
            invite_budget,
            push_budget,
            pushes_limited: 0,
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

    /// Push webhooks not sent so far because their callee's budget was spent.
    pub fn pushes_limited(&self) -> u64 {
        self.pushes_limited
    }

    pub fn calls_active(&self) -> usize {
        self.calls.len()
    }

    /// Every call held here, with its members' states, for the live-call directory: `host` is
    /// this node's name in it, `unix_ms` the wall clock at `now`.
    pub fn live_calls(
        &self,
        host: &str,
        now: Instant,
        unix_ms: u64,
    ) -> Vec<crate::directory::LiveCall> {
        use crate::directory::{LiveCall, LiveMember};
        self.calls
            .values()
            .map(|c| LiveCall {
                call_id: c.id.clone(),
                host: host.to_string(),
                group: c.group,
                media: c.media,
                started_at: unix_ms
                    .saturating_sub(now.saturating_duration_since(c.created).as_millis() as u64),
                members: c
                    .members
                    .iter()
                    .map(|m| LiveMember {
                        user: m.user.clone(),
                        state: match m.state {
                            super::call::MemberState::Invited => "invited",
                            super::call::MemberState::Ringing => "ringing",
                            super::call::MemberState::Joined => "joined",
                        }
                        .to_string(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Whether `user` is a member of a call this model holds (ringing or joined).
    pub fn in_call(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| !u.calls.is_empty())
    }

    /// The user logged in on `conn`, if any.
    pub fn user_of(&self, conn: ConnId) -> Option<String> {
        self.conns.get(&conn).cloned().flatten()
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

    /// A `login` whose token the shell has verified; its result carries the configured
    /// `ice_servers`.
    pub fn login(&mut self, now: Instant, conn: ConnId, id: RequestId, user: String) {
        let ice_servers = self.cfg.ice_servers.clone();
        self.login_with(now, conn, id, user, ice_servers);
    }

    /// A verified `login` whose result carries `ice_servers` (TURN credentials minted for
    /// this user by the shell).
    pub fn login_with(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: RequestId,
        user: String,
        ice_servers: Vec<Value>,
    ) {
        self.handle_timeout(now);
        let mark = self.out.len();
        let result = self.do_login(conn, &user, ice_servers);
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
        let result = match self.dispatch(now, conn, &id, method, params) {
            Ok(requests::Reply::Later) => return, // the Worker answers through `media_event`
            Ok(requests::Reply::Now(v)) => Ok(v),
            Err(e) => Err(e),
        };
        self.respond_at(mark, conn, id, method, result);
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
    pub(super) fn respond_at(
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

    pub(super) fn notify(&mut self, user: &str, n: Notification) {
        if let Some(conn) = self.users.get(user).and_then(|u| u.conn) {
            self.out.push_back(Output::Send {
                conn,
                msg: Outbound::Notify(n),
            });
        }
    }

    pub(super) fn notify_all<'a>(
        &mut self,
        users: impl IntoIterator<Item = &'a str>,
        n: Notification,
    ) {
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
    pub(super) fn audience(call: &Call, except: &str) -> Vec<String> {
        call.others_joined(except).map(str::to_string).collect()
    }

    pub(super) fn tell(&mut self, users: &[String], n: Notification) {
        self.notify_all(users.iter().map(String::as_str), n);
    }

    pub(super) fn is_busy(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| !u.calls.is_empty())
    }

    pub(super) fn invited(call: &Call, m: &Member) -> Notification {
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
}
