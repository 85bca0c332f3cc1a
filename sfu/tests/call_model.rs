//! Deterministic tests of the sans-IO call model: every rule of PROTOCOL.md "Call rules",
//! "Precise rules" and "Reconnect", with a virtual clock and timeouts at their exact boundaries.
//! Frames are checked as they would go on the wire (serialized, then parsed back).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sfu::media::simulcast::VideoChoice;
use sfu::media::{Command as MediaCommand, MediaEvent, MemberMedia};
use sfu::protocol::{EndReason, Method, Outbound};
use sfu::signaling::{CallEvent, CallModel, ConnId, ModelConfig, Output, PushNotice};

const INVITE: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(10);
const MS: Duration = Duration::from_millis(1);

struct H {
    model: CallModel,
    now: Instant,
    next_conn: u64,
    next_id: u64,
    conn_of: HashMap<String, ConnId>,
    inbox: HashMap<ConnId, Vec<(String, Value)>>,
    responses: HashMap<(ConnId, u64), Value>,
    closed: HashMap<ConnId, u16>,
    pushes: Vec<PushNotice>,
    events: Vec<CallEvent>,
    media: Vec<MediaCommand>,
}

impl H {
    fn new() -> Self {
        Self::with(ModelConfig {
            invite_timeout: INVITE,
            reconnect_grace: GRACE,
            instance: "t".into(),
            ..ModelConfig::default()
        })
    }

    fn with(cfg: ModelConfig) -> Self {
        Self {
            model: CallModel::new(cfg),
            now: Instant::now(),
            next_conn: 0,
            next_id: 0,
            conn_of: HashMap::new(),
            inbox: HashMap::new(),
            responses: HashMap::new(),
            closed: HashMap::new(),
            pushes: Vec::new(),
            events: Vec::new(),
            media: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(out) = self.model.poll_output() {
            match out {
                Output::Send { conn, msg } => {
                    let frame: Value = serde_json::from_str(&msg.to_frame()).unwrap();
                    assert_eq!(frame["jsonrpc"], "2.0");
                    match msg {
                        Outbound::Response { id, .. } => {
                            self.responses.insert((conn, id.as_u64().unwrap()), frame);
                        }
                        Outbound::Notify(_) => {
                            assert!(frame.get("id").is_none());
                            self.inbox.entry(conn).or_default().push((
                                frame["method"].as_str().unwrap().to_string(),
                                frame["params"].clone(),
                            ));
                        }
                    }
                }
                Output::Close { conn, code, .. } => {
                    self.closed.insert(conn, code);
                }
                Output::Push(p) => self.pushes.push(p),
                Output::Event(e) => self.events.push(e),
                Output::Media(m) => self.media.push(m),
                other @ (Output::Claim { .. } | Output::Release { .. }) => {
                    panic!("claims are off on one node: {other:?}")
                }
            }
        }
    }

    fn new_conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    /// Opens a socket for `user` and logs in; returns the socket.
    fn login(&mut self, user: &str) -> ConnId {
        let conn = self.new_conn();
        self.login_on(conn, user).unwrap();
        conn
    }

    fn login_on(&mut self, conn: ConnId, user: &str) -> Result<Value, i64> {
        self.next_id += 1;
        let id = self.next_id;
        self.model
            .login(self.now, conn, json!(id), user.to_string());
        self.conn_of.insert(user.to_string(), conn);
        self.response(conn, id)
    }

    fn response(&mut self, conn: ConnId, id: u64) -> Result<Value, i64> {
        self.drain();
        let frame = self
            .responses
            .remove(&(conn, id))
            .expect("every request gets exactly one response");
        assert_eq!(frame["id"], json!(id));
        match frame.get("error") {
            Some(e) => Err(e["code"].as_i64().unwrap()),
            None => Ok(frame["result"].clone()),
        }
    }

    fn req_on(&mut self, conn: ConnId, method: Method, params: Value) -> Result<Value, i64> {
        self.next_id += 1;
        let id = self.next_id;
        self.model
            .request(self.now, conn, json!(id), method, params);
        self.response(conn, id)
    }

    fn req(&mut self, user: &str, method: Method, params: Value) -> Result<Value, i64> {
        let conn = self.conn_of[user];
        self.req_on(conn, method, params)
    }

    fn call(&mut self, from: &str, to: &[&str], extra: Value) -> String {
        let mut params = json!({"to": to, "media": "audio"});
        if let (Value::Object(p), Value::Object(e)) = (&mut params, extra) {
            p.extend(e);
        }
        let r = self.req(from, Method::Call, params).expect("call placed");
        r["call_id"].as_str().unwrap().to_string()
    }

    fn ok(&mut self, user: &str, method: Method, call_id: &str) {
        self.req(user, method, json!({ "call_id": call_id }))
            .unwrap_or_else(|e| panic!("{user} {method:?}: error {e}"));
    }

    fn err(&mut self, user: &str, method: Method, params: Value) -> i64 {
        self.req(user, method, params)
            .expect_err("expected an error response")
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.model.handle_timeout(self.now);
        self.drain();
    }

    fn disconnect(&mut self, user: &str) {
        let conn = self.conn_of[user];
        self.model.disconnect(self.now, conn);
        self.drain();
    }

    /// Notifications `user`'s current socket received since the last look.
    fn take(&mut self, user: &str) -> Vec<(String, Value)> {
        let conn = self.conn_of[user];
        self.take_conn(conn)
    }

    fn take_conn(&mut self, conn: ConnId) -> Vec<(String, Value)> {
        self.drain();
        self.inbox.remove(&conn).unwrap_or_default()
    }

    /// Asserts exactly these notifications arrived, in order.
    fn expect(&mut self, user: &str, want: &[(&str, Value)]) {
        let got = self.take(user);
        let want: Vec<(String, Value)> = want
            .iter()
            .map(|(m, p)| (m.to_string(), p.clone()))
            .collect();
        assert_eq!(got, want, "notifications of {user}");
    }

    fn quiet(&mut self, users: &[&str]) {
        for u in users {
            self.expect(u, &[]);
        }
    }

    fn ended(&self) -> Vec<EndReason> {
        self.events
            .iter()
            .filter_map(|e| match e {
                CallEvent::Ended { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }
}

fn c(call_id: &str) -> Value {
    json!({ "call_id": call_id })
}

fn cu(call_id: &str, user: &str) -> Value {
    json!({ "call_id": call_id, "user": user })
}

fn invited(call_id: &str, from: &str, to: &[&str], group: bool) -> Value {
    json!({"call_id": call_id, "from": from, "to": to, "media": "audio", "group": group,
           "client_state": null, "headers": {}})
}

// ---- login ----

#[test]
fn login_result_and_order_of_checks() {
    let mut h = H::new();
    let conn = h.new_conn();
    // Anything before login is 4001, even with bad params.
    assert_eq!(h.req_on(conn, Method::Ping, json!({})), Err(4001));
    assert_eq!(h.req_on(conn, Method::Call, json!([1, 2])), Err(4001));
    let r = h.login_on(conn, "alice").unwrap();
    assert_eq!(r["user"], "alice");
    assert!(r["session_id"].as_str().unwrap().starts_with("t-"));
    assert_eq!(r["ice_servers"], json!([]));
    assert_eq!(h.req_on(conn, Method::Ping, Value::Null), Ok(json!({})));
    assert_eq!(h.login_on(conn, "alice"), Err(4009));
    // Params are checked before call membership and state.
    assert_eq!(h.err("alice", Method::Accept, json!({})), -32602);
    assert_eq!(
        h.err("alice", Method::Accept, json!({"call_id": 5})),
        -32602
    );
    assert_eq!(h.err("alice", Method::Accept, c("nope")), 4004);
    assert_eq!(h.err("alice", Method::Offer, json!({})), -32602);
    assert_eq!(
        h.err("alice", Method::Answer, json!({"call_id": "x"})),
        -32602
    );
    assert_eq!(
        h.err(
            "alice",
            Method::Offer,
            json!({"call_id": "x", "sdp": "v=0"})
        ),
        4004
    );
    assert_eq!(
        h.err("alice", Method::Candidate, json!({"call_id": "x"})),
        -32602
    );
}

// ---- 1v1 ----

#[test]
fn one_to_one_answered_then_hung_up() {
    let mut h = H::new();
    h.login("alice");
    h.login("bob");
    let id = h.call(
        "alice",
        &["bob"],
        json!({"client_state": "abc", "headers": {"X-Trace": "1"}}),
    );
    h.expect(
        "bob",
        &[(
            "invited",
            json!({"call_id": id, "from": "alice", "to": ["bob"], "media": "audio",
                   "group": false, "client_state": "abc", "headers": {"X-Trace": "1"}}),
        )],
    );
    h.quiet(&["alice"]);
    h.advance(Duration::from_secs(2));
    h.ok("bob", Method::Accept, &id);
    h.expect(
        "alice",
        &[("accepted", cu(&id, "bob")), ("user_enter", cu(&id, "bob"))],
    );
    h.expect("bob", &[("user_enter", cu(&id, "alice"))]);
    assert_eq!(h.err("bob", Method::Accept, c(&id)), 4009);
    assert_eq!(h.err("bob", Method::Reject, c(&id)), 4009);
    h.ok("alice", Method::Hangup, &id);
    h.expect(
        "bob",
        &[
            (
                "user_leave",
                json!({"call_id": id, "user": "alice", "reason": "hangup"}),
            ),
            ("call_end", json!({"call_id": id, "reason": "hangup"})),
        ],
    );
    h.quiet(&["alice"]);
    assert_eq!(h.err("bob", Method::Hangup, c(&id)), 4004);
    assert_eq!(h.model.calls_active(), 0);
    assert!(h.events.contains(&CallEvent::Answered {
        call_id: id.clone(),
        user: "bob".into(),
        setup: Duration::from_secs(2)
    }));
    assert!(h.events.contains(&CallEvent::Started {
        call_id: id.clone(),
        group: false,
        media: sfu::protocol::Media::Audio,
        members: vec!["alice".into(), "bob".into()],
    }));
    assert_eq!(h.ended(), [EndReason::Hangup]);
}

#[test]
fn callee_hangup_ends_for_both() {
    let mut h = H::new();
    h.login("alice");
    h.login("bob");
    let id = h.call("alice", &["bob"], json!({}));
    h.ok("bob", Method::Accept, &id);
    h.take("alice");
    h.take("bob");
    h.ok("bob", Method::Hangup, &id);
    h.expect(
        "alice",
        &[
            (
                "user_leave",
                json!({"call_id": id, "user": "bob", "reason": "hangup"}),
            ),
            ("call_end", json!({"call_id": id, "reason": "hangup"})),
        ],
    );
    h.quiet(&["bob"]);
}

#[test]
fn reject_ends_a_one_to_one_call() {
    let mut h = H::new();
    h.login("alice");
    h.login("bob");
    let id = h.call("alice", &["bob"], json!({}));
    h.take("bob");
    h.ok("bob", Method::Reject, &id);
    h.expect(
        "alice",
        &[
            ("rejected", cu(&id, "bob")),
            ("call_end", json!({"call_id": id, "reason": "rejected"})),
        ],
    );
    h.quiet(&["bob"]);
    assert_eq!(h.ended(), [EndReason::Rejected]);
    // Both are free again.
    let id2 = h.call("bob", &["alice"], json!({}));
    assert_ne!(id, id2);
}

#[test]
fn invite_times_out_exactly_at_the_deadline() {
    let mut h = H::new();
    h.login("alice");
    h.login("bob");
    let id = h.call("alice", &["bob"], json!({}));
    h.take("bob");
    h.advance(INVITE - MS);
    h.quiet(&["alice", "bob"]);
    h.advance(MS);
    h.expect(
        "alice",
        &[
            ("no_response", cu(&id, "bob")),
            ("call_end", json!({"call_id": id, "reason": "no_response"})),
        ],
    );
    h.expect("bob", &[("invite_timeout", c(&id))]);
    assert_eq!(h.err("bob", Method::Accept, c(&id)), 4004);
    assert_eq!(h.ended(), [EndReason::NoResponse]);
}

#[test]
fn accept_just_before_the_deadline_wins() {
    let mut h = H::new();
    h.login("alice");
    h.login("bob");
    let id = h.call("alice", &["bob"], json!({}));
    h.now += INVITE - MS;
    h.ok("bob", Method::Accept, &id);
    h.advance(Duration::from_secs(60));
    h.take("alice");
    h.take("bob");
    assert_eq!(h.model.calls_active(), 1);
    assert!(h.ended().is_empty());
}

#[test]
fn accept_at_the_deadline_is_too_late() {
    let mut h = H::new();
    h.login("alice");
    h.login("bob");
    let id = h.call("alice", &["bob"], json!({}));
    h.now += INVITE;
    assert_eq!(h.err("bob", Method::Accept, c(&id)), 4004);
}

#[test]
fn busy_callee_ends_a_one_to_one_call() {
    let mut h = H::new();
    for u in ["alice", "bob", "carol", "dave"] {
        h.login(u);
    }
    // bob is ringing (not yet answered): already busy.
    let first = h.call("carol", &["bob"], json!({}));
    h.take("bob");
    let id = h.call("alice", &["bob"], json!({}));
    h.expect(
        "alice",
        &[
            ("busy", cu(&id, "bob")),
            ("call_end", json!({"call_id": id, "reason": "busy"})),
        ],
    );
    h.quiet(&["bob"]);
    // The caller of a live call is busy too.
    let id = h.call("dave", &["carol"], json!({}));
    h.expect(
        "dave",
        &[
            ("busy", cu(&id, "carol")),
            ("call_end", json!({"call_id": id, "reason": "busy"})),
        ],
    );
    assert_eq!(h.model.calls_active(), 1);
    h.ok("bob", Method::Accept, &first);
}

#[test]
fn caller_hangup_before_answer_cancels() {
    let mut h = H::new();
    h.login("alice");
    h.login("bob");
    let id = h.call("alice", &["bob"], json!({}));
    h.take("bob");
    h.ok("alice", Method::Hangup, &id);
    h.expect("bob", &[("cancelled", c(&id))]);
    h.quiet(&["alice"]);
    assert_eq!(h.ended(), [EndReason::Cancelled]);
    h.advance(INVITE * 2);
    h.quiet(&["alice", "bob"]);
}

#[test]
fn membership_errors() {
    let mut h = H::new();
    for u in ["alice", "bob", "mallory"] {
        h.login(u);
    }
    let id = h.call("alice", &["bob"], json!({}));
    for m in [
        Method::Accept,
        Method::Reject,
        Method::Hangup,
        Method::Invite,
        Method::Mute,
        Method::Hold,
        Method::Dtmf,
        Method::Message,
    ] {
        let params = json!({"call_id": id, "to": ["x"], "audio": true, "held": true,
                            "digits": "1", "text": "hi"});
        assert_eq!(h.err("mallory", m, params), 4003, "{m:?}");
    }
    // A ringing callee cannot act as a joined member.
    assert_eq!(
        h.err("bob", Method::Mute, json!({"call_id": id, "audio": true})),
        4009
    );
    assert_eq!(
        h.err("bob", Method::Hold, json!({"call_id": id, "held": true})),
        4009
    );
    assert_eq!(
        h.err("bob", Method::Dtmf, json!({"call_id": id, "digits": "1"})),
        4009
    );
    // The caller is joined, not ringing.
    assert_eq!(h.err("alice", Method::Accept, c(&id)), 4009);
    assert_eq!(h.err("alice", Method::Reject, c(&id)), 4009);
    h.take("bob");
    h.quiet(&["alice", "mallory"]);
}

#[test]
fn call_params_are_validated() {
    let mut h = H::new();
    h.login("alice");
    for p in [
        json!({"to": [], "media": "audio"}),
        json!({"to": ["alice"], "media": "audio"}),
        json!({"to": ["bob"], "media": "fax"}),
        json!({"to": ["bob"]}),
        json!({"to": "bob", "media": "audio"}),
        json!({"to": ["b b"], "media": "audio"}),
        json!({"to": ["bob", "carol"], "media": "audio", "group": false}),
        json!({"to": ["bob"], "media": "audio", "headers": {"Trace": "1"}}),
        json!({"to": ["bob"], "media": "audio", "client_state": "x".repeat(4097)}),
    ] {
        assert_eq!(h.err("alice", Method::Call, p.clone()), -32602, "{p}");
    }
    assert_eq!(h.model.calls_active(), 0);
}

// ---- group ----

#[test]
fn group_members_answer_on_their_own() {
    let mut h = H::new();
    for u in ["alice", "bob", "carol", "dave"] {
        h.login(u);
    }
    let id = h.call("alice", &["bob", "carol", "dave", "bob"], json!({}));
    let inv = invited(&id, "alice", &["bob", "carol", "dave"], true);
    for u in ["bob", "carol", "dave"] {
        h.expect(u, &[("invited", inv.clone())]);
    }
    h.ok("bob", Method::Accept, &id);
    h.expect(
        "alice",
        &[("accepted", cu(&id, "bob")), ("user_enter", cu(&id, "bob"))],
    );
    h.expect("bob", &[("user_enter", cu(&id, "alice"))]);
    h.quiet(&["carol", "dave"]);
    h.ok("carol", Method::Reject, &id);
    for u in ["alice", "bob"] {
        h.expect(u, &[("rejected", cu(&id, "carol"))]);
    }
    h.quiet(&["carol", "dave"]);
    h.advance(INVITE);
    for u in ["alice", "bob"] {
        h.expect(u, &[("no_response", cu(&id, "dave"))]);
    }
    h.expect("dave", &[("invite_timeout", c(&id))]);
    assert_eq!(h.model.calls_active(), 1, "two joined: the call goes on");
    h.ok("bob", Method::Hangup, &id);
    h.expect(
        "alice",
        &[
            (
                "user_leave",
                json!({"call_id": id, "user": "bob", "reason": "hangup"}),
            ),
            ("call_end", json!({"call_id": id, "reason": "hangup"})),
        ],
    );
    assert_eq!(h.model.calls_active(), 0);
}

#[test]
fn group_goes_on_while_an_invite_is_pending() {
    let mut h = H::new();
    for u in ["alice", "bob", "carol"] {
        h.login(u);
    }
    let id = h.call("alice", &["bob", "carol"], json!({}));
    h.ok("bob", Method::Accept, &id);
    h.ok("bob", Method::Hangup, &id);
    h.take("bob");
    h.expect(
        "alice",
        &[
            ("accepted", cu(&id, "bob")),
            ("user_enter", cu(&id, "bob")),
            (
                "user_leave",
                json!({"call_id": id, "user": "bob", "reason": "hangup"}),
            ),
        ],
    );
    assert_eq!(h.model.calls_active(), 1);
    h.take("carol");
    h.ok("carol", Method::Accept, &id);
    h.expect(
        "alice",
        &[
            ("accepted", cu(&id, "carol")),
            ("user_enter", cu(&id, "carol")),
        ],
    );
    h.expect("carol", &[("user_enter", cu(&id, "alice"))]);
}

#[test]
fn group_where_nobody_answers_ends_with_the_last_outcome() {
    let mut h = H::new();
    for u in ["alice", "bob", "carol"] {
        h.login(u);
    }
    let id = h.call("alice", &["bob", "carol"], json!({}));
    h.ok("bob", Method::Reject, &id);
    h.expect("alice", &[("rejected", cu(&id, "bob"))]);
    h.advance(INVITE);
    h.expect(
        "alice",
        &[
            ("no_response", cu(&id, "carol")),
            ("call_end", json!({"call_id": id, "reason": "no_response"})),
        ],
    );
}

#[test]
fn group_caller_hangup_before_answer_cancels_everyone() {
    let mut h = H::new();
    for u in ["alice", "bob", "carol"] {
        h.login(u);
    }
    let id = h.call("alice", &["bob", "carol"], json!({}));
    h.take("bob");
    h.take("carol");
    h.ok("alice", Method::Hangup, &id);
    h.expect("bob", &[("cancelled", c(&id))]);
    h.expect("carol", &[("cancelled", c(&id))]);
    h.quiet(&["alice"]);
}

#[test]
fn group_caller_hangup_after_answer_is_a_plain_leave() {
    let mut h = H::new();
    for u in ["alice", "bob", "carol"] {
        h.login(u);
    }
    let id = h.call("alice", &["bob", "carol"], json!({}));
    h.ok("bob", Method::Accept, &id);
    h.ok("carol", Method::Accept, &id);
    for u in ["alice", "bob", "carol"] {
        h.take(u);
    }
    h.ok("alice", Method::Hangup, &id);
    let leave = json!({"call_id": id, "user": "alice", "reason": "hangup"});
    h.expect("bob", &[("user_leave", leave.clone())]);
    h.expect("carol", &[("user_leave", leave)]);
    assert_eq!(h.model.calls_active(), 1);
    // The caller left: they are no member any more.
    assert_eq!(h.err("alice", Method::Hangup, c(&id)), 4003);
}

#[test]
fn group_with_nobody_joined_cancels_pending_invites() {
    let mut h = H::new();
    for u in ["alice", "bob", "carol"] {
        h.login(u);
    }
    let id = h.call("alice", &["bob", "carol"], json!({}));
    h.ok("bob", Method::Accept, &id);
    h.ok("alice", Method::Hangup, &id);
    assert_eq!(h.model.calls_active(), 1, "bob joined and carol pending");
    h.take("carol");
    h.ok("bob", Method::Hangup, &id);
    h.expect("carol", &[("cancelled", c(&id))]);
    assert_eq!(h.model.calls_active(), 0);
}

#[test]
fn a_one_callee_group_call_is_still_a_group() {
    let mut h = H::new();
    for u in ["alice", "bob", "carol"] {
        h.login(u);
    }
    let id = h.call("alice", &["bob"], json!({"group": true}));
    h.expect("bob", &[("invited", invited(&id, "alice", &["bob"], true))]);
    h.ok("bob", Method::Accept, &id);
    h.req(
        "bob",
        Method::Invite,
        json!({"call_id": id, "to": ["carol"]}),
    )
    .unwrap();
    h.expect(
        "carol",
        &[("invited", invited(&id, "bob", &["carol"], true))],
    );
}

#[test]
fn invite_into_a_running_group_call() {
    let mut h = H::new();
    for u in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        h.login(u);
    }
    let id = h.call(
        "alice",
        &["bob", "carol"],
        json!({"media": "video", "client_state": "s", "headers": {"x-a": "b"}}),
    );
    h.ok("bob", Method::Accept, &id);
    for u in ["alice", "bob", "carol"] {
        h.take(u);
    }
    // A ringing member may not invite; a joined one may.
    assert_eq!(
        h.err(
            "carol",
            Method::Invite,
            json!({"call_id": id, "to": ["dave"]})
        ),
        4009
    );
    assert_eq!(
        h.err("bob", Method::Invite, json!({"call_id": id, "to": []})),
        -32602
    );
    // erin is busy in another call.
    h.call("frank", &["erin"], json!({}));
    h.take("erin");
    h.req(
        "bob",
        Method::Invite,
        json!({"call_id": id, "to": ["dave", "erin", "carol"]}),
    )
    .unwrap();
    h.expect(
        "dave",
        &[(
            "invited",
            json!({"call_id": id, "from": "bob", "to": ["dave", "erin"], "media": "video",
                   "group": true, "client_state": "s", "headers": {"x-a": "b"}}),
        )],
    );
    for u in ["alice", "bob"] {
        h.expect(u, &[("busy", cu(&id, "erin"))]);
    }
    h.quiet(&["carol", "erin"]);
    h.ok("dave", Method::Accept, &id);
    for u in ["alice", "bob"] {
        h.expect(
            u,
            &[
                ("accepted", cu(&id, "dave")),
                ("user_enter", cu(&id, "dave")),
            ],
        );
    }
    h.expect(
        "dave",
        &[
            ("user_enter", cu(&id, "alice")),
            ("user_enter", cu(&id, "bob")),
        ],
    );
}

#[test]
fn invite_on_a_one_to_one_call_is_refused() {
    let mut h = H::new();
    for u in ["alice", "bob", "carol"] {
        h.login(u);
    }
    let id = h.call("alice", &["bob"], json!({}));
    h.ok("bob", Method::Accept, &id);
    assert_eq!(
        h.err(
            "alice",
            Method::Invite,
            json!({"call_id": id, "to": ["carol"]})
        ),
        4009
    );
    h.quiet(&["carol"]);
}

// ---- offline callees (push flow) ----

#[test]
fn offline_callee_is_pushed_and_invited_on_login() {
    let mut h = H::new();
    h.login("alice");
    let id = h.call(
        "alice",
        &["bob"],
        json!({"media": "video", "client_state": "cs"}),
    );
    assert_eq!(
        h.pushes,
        [PushNotice {
            call_id: id.clone(),
            from: "alice".into(),
            to: "bob".into(),
            media: sfu::protocol::Media::Video,
            client_state: Some("cs".into()),
        }]
    );
    h.advance(INVITE - MS);
    h.login("bob");
    h.expect(
        "bob",
        &[(
            "invited",
            json!({"call_id": id, "from": "alice", "to": ["bob"], "media": "video",
                   "group": false, "client_state": "cs", "headers": {}}),
        )],
    );
    h.ok("bob", Method::Accept, &id);
    h.expect(
        "alice",
        &[("accepted", cu(&id, "bob")), ("user_enter", cu(&id, "bob"))],
    );
}

#[test]
fn offline_callee_who_logs_in_too_late_gets_nothing() {
    let mut h = H::new();
    h.login("alice");
    let id = h.call("alice", &["bob"], json!({}));
    h.advance(INVITE);
    h.expect(
        "alice",
        &[
            ("no_response", cu(&id, "bob")),
            ("call_end", json!({"call_id": id, "reason": "no_response"})),
        ],
    );
    h.login("bob");
    h.quiet(&["bob"]);
    assert_eq!(h.model.users_known(), 2);
}

#[test]
fn an_offline_invitee_is_busy_for_others() {
    let mut h = H::new();
    h.login("alice");
    h.login("carol");
    h.call("alice", &["bob"], json!({}));
    let id = h.call("carol", &["bob"], json!({}));
    h.expect(
        "carol",
        &[
            ("busy", cu(&id, "bob")),
            ("call_end", json!({"call_id": id, "reason": "busy"})),
        ],
    );
    assert_eq!(h.pushes.len(), 1, "no push for a busy callee");
}

// ---- reconnect ----

#[test]
fn reconnect_within_grace_keeps_the_call() {
    let mut h = H::new();
    h.login("alice");
    h.login("bob");
    let id = h.call("alice", &["bob"], json!({}));
    h.ok("bob", Method::Accept, &id);
    h.take("alice");
    h.take("bob");
    h.disconnect("bob");
    h.advance(GRACE - MS);
    h.quiet(&["alice"]);
    h.login("bob");
    h.expect("bob", &[("user_enter", cu(&id, "alice"))]);
    h.advance(GRACE * 3);
    h.quiet(&["alice", "bob"]);
    assert_eq!(h.model.calls_active(), 1);
    // Messages flow to the new socket.
    h.req(
        "alice",
        Method::Message,
        json!({"call_id": id, "text": "back?"}),
    )
    .unwrap();
    h.expect(
        "bob",
        &[(
            "message",
            json!({"call_id": id, "user": "alice", "text": "back?"}),
        )],
    );
}

#[test]
fn grace_expiry_leaves_exactly_at_the_deadline() {
    let mut h = H::new();
    h.login("alice");
    h.login("bob");
    let id = h.call("alice", &["bob"], json!({}));
    h.ok("bob", Method::Accept, &id);
    h.take("alice");
    h.disconnect("bob");
    h.advance(GRACE - MS);
    h.quiet(&["alice"]);
    h.advance(MS);
    h.expect(
        "alice",
        &[
            (
                "user_leave",
                json!({"call_id": id, "user": "bob", "reason": "disconnected"}),
            ),
            ("call_end", json!({"call_id": id, "reason": "disconnected"})),
        ],
    );
    assert_eq!(h.ended(), [EndReason::Disconnected]);
    assert_eq!(h.model.users_known(), 1, "bob is forgotten");
}

#[test]
fn group_member_disconnect_leaves_the_others_talking() {
    let mut h = H::new();
    for u in ["alice", "bob", "carol"] {
        h.login(u);
    }
    let id = h.call("alice", &["bob", "carol"], json!({}));
    h.ok("bob", Method::Accept, &id);
    h.ok("carol", Method::Accept, &id);
    for u in ["alice", "bob", "carol"] {
        h.take(u);
    }
    h.disconnect("carol");
    h.advance(GRACE);
    let leave = json!({"call_id": id, "user": "carol", "reason": "disconnected"});
    h.expect("alice", &[("user_leave", leave.clone())]);
    h.expect("bob", &[("user_leave", leave)]);
    assert_eq!(h.model.calls_active(), 1);
}

#[test]
fn ringing_callee_reconnecting_is_invited_again() {
    let mut h = H::new();
    h.login("alice");
    h.login("bob");
    let id = h.call("alice", &["bob"], json!({}));
    let inv = invited(&id, "alice", &["bob"], false);
    h.expect("bob", &[("invited", inv.clone())]);
    h.disconnect("bob");
    // The grace period does not end a ringing invite: it may still be answered.
    h.advance(GRACE + MS);
    h.quiet(&["alice"]);
    h.login("bob");
    h.expect("bob", &[("invited", inv)]);
    h.ok("bob", Method::Accept, &id);
}

#[test]
fn caller_reconnecting_while_ringing_gets_nothing_new() {
    let mut h = H::new();
    h.login("alice");
    h.login("bob");
    let id = h.call("alice", &["bob"], json!({}));
    h.take("bob");
    h.disconnect("alice");
    h.advance(GRACE - MS);
    h.login("alice");
    h.quiet(&["alice", "bob"]);
    h.ok("bob", Method::Accept, &id);
    h.expect(
        "alice",
        &[("accepted", cu(&id, "bob")), ("user_enter", cu(&id, "bob"))],
    );
}

#[test]
fn caller_lost_while_ringing_cancels_after_grace() {
    let mut h = H::new();
    h.login("alice");
    h.login("bob");
    let id = h.call("alice", &["bob"], json!({}));
    h.take("bob");
    h.disconnect("alice");
    h.advance(GRACE);
    h.expect("bob", &[("cancelled", c(&id))]);
    assert_eq!(h.ended(), [EndReason::Disconnected]);
}

#[test]
fn second_login_replaces_the_session() {
    let mut h = H::new();
    h.login("alice");
    let old = h.login("bob");
    let id = h.call("alice", &["bob"], json!({}));
    h.ok("bob", Method::Accept, &id);
    h.take("alice");
    h.take_conn(old);
    let new = h.login("bob");
    assert_eq!(
        h.take_conn(old),
        [("session_replaced".to_string(), json!({}))]
    );
    assert_eq!(h.closed.get(&old), Some(&4000));
    h.expect("bob", &[("user_enter", cu(&id, "alice"))]);
    // The old socket closing later changes nothing.
    h.model.disconnect(h.now, old);
    h.advance(GRACE * 2);
    h.quiet(&["alice", "bob"]);
    assert_eq!(h.model.calls_active(), 1);
    assert_ne!(old, new);
    // The old socket is no longer logged in.
    assert_eq!(h.req_on(old, Method::Ping, json!({})), Err(4001));
}

// ---- logout ----

#[test]
fn logout_hangs_up_and_allows_a_new_login() {
    let mut h = H::new();
    h.login("alice");
    let conn = h.login("bob");
    let id = h.call("alice", &["bob"], json!({}));
    h.ok("bob", Method::Accept, &id);
    h.take("alice");
    h.take("bob");
    h.req("bob", Method::Logout, json!({})).unwrap();
    h.expect(
        "alice",
        &[
            (
                "user_leave",
                json!({"call_id": id, "user": "bob", "reason": "logout"}),
            ),
            ("call_end", json!({"call_id": id, "reason": "hangup"})),
        ],
    );
    assert_eq!(h.req_on(conn, Method::Ping, json!({})), Err(4001));
    h.login_on(conn, "bob").unwrap();
    h.quiet(&["bob"]);
}

#[test]
fn logout_while_ringing_rejects() {
    let mut h = H::new();
    h.login("alice");
    h.login("bob");
    let id = h.call("alice", &["bob"], json!({}));
    h.take("bob");
    h.req("bob", Method::Logout, json!({})).unwrap();
    h.expect(
        "alice",
        &[
            ("rejected", cu(&id, "bob")),
            ("call_end", json!({"call_id": id, "reason": "rejected"})),
        ],
    );
}

// ---- in-call requests ----

#[test]
fn mute_is_announced_to_the_others_only() {
    let mut h = H::new();
    for u in ["alice", "bob", "carol"] {
        h.login(u);
    }
    let id = h.call("alice", &["bob", "carol"], json!({"media": "video"}));
    h.ok("bob", Method::Accept, &id);
    h.ok("carol", Method::Accept, &id);
    for u in ["alice", "bob", "carol"] {
        h.take(u);
    }
    // Both fields are optional: with neither, nothing changes and nobody is told.
    h.media.clear();
    assert_eq!(h.req("bob", Method::Mute, c(&id)), Ok(json!({})));
    assert!(h.media.is_empty());
    h.quiet(&["alice", "bob", "carol"]);
    h.req("bob", Method::Mute, json!({"call_id": id, "audio": true}))
        .unwrap();
    let off = json!({"call_id": id, "user": "bob", "available": false});
    h.expect("alice", &[("audio_available", off.clone())]);
    h.expect("carol", &[("audio_available", off.clone())]);
    h.quiet(&["bob"]);
    // Muting again is no change: nothing new.
    h.req(
        "bob",
        Method::Mute,
        json!({"call_id": id, "audio": true, "video": true}),
    )
    .unwrap();
    h.expect("alice", &[("video_available", off.clone())]);
    // Unmuting is announced by the media path when media flows again, not here.
    h.req("bob", Method::Mute, json!({"call_id": id, "audio": false}))
        .unwrap();
    h.quiet(&["alice", "bob"]);
    h.take("carol");
    h.req("bob", Method::Mute, json!({"call_id": id, "audio": true}))
        .unwrap();
    h.expect("alice", &[("audio_available", off)]);
}

#[test]
fn video_mute_on_an_audio_call_is_not_announced() {
    let mut h = H::new();
    h.login("alice");
    h.login("bob");
    let id = h.call("alice", &["bob"], json!({}));
    h.ok("bob", Method::Accept, &id);
    h.take("alice");
    h.req("bob", Method::Mute, json!({"call_id": id, "video": true}))
        .unwrap();
    h.quiet(&["alice"]);
}

#[test]
fn hold_dtmf_and_messages() {
    let mut h = H::new();
    h.login("alice");
    h.login("bob");
    let id = h.call("alice", &["bob"], json!({}));
    h.ok("bob", Method::Accept, &id);
    h.take("alice");
    h.take("bob");
    h.req("bob", Method::Hold, json!({"call_id": id, "held": true}))
        .unwrap();
    h.quiet(&["alice", "bob"]);
    assert_eq!(
        h.err("bob", Method::Hold, json!({"call_id": id, "held": "yes"})),
        -32602
    );
    h.req(
        "alice",
        Method::Dtmf,
        json!({"call_id": id, "digits": "12#*AD"}),
    )
    .unwrap();
    h.expect(
        "bob",
        &[(
            "dtmf",
            json!({"call_id": id, "user": "alice", "digits": "12#*AD"}),
        )],
    );
    h.quiet(&["alice"]);
    for bad in ["", "E", "1 2", &"1".repeat(33)] {
        assert_eq!(
            h.err("alice", Method::Dtmf, json!({"call_id": id, "digits": bad})),
            -32602
        );
    }
    h.req(
        "bob",
        Method::Message,
        json!({"call_id": id, "text": "héllo"}),
    )
    .unwrap();
    h.expect(
        "alice",
        &[(
            "message",
            json!({"call_id": id, "user": "bob", "text": "héllo"}),
        )],
    );
    assert_eq!(
        h.err(
            "bob",
            Method::Message,
            json!({"call_id": id, "text": "x".repeat(4097)})
        ),
        -32602
    );
    h.quiet(&["alice", "bob"]);
}

// ---- limits ----

#[test]
fn calls_per_user_and_members_per_call() {
    let mut h = H::with(ModelConfig {
        max_call_members: 3,
        max_calls_per_user: 1,
        ..ModelConfig::default()
    });
    for u in ["alice", "bob", "carol", "dave", "erin"] {
        h.login(u);
    }
    assert_eq!(
        h.err(
            "alice",
            Method::Call,
            json!({"to": ["bob", "carol", "dave"], "media": "audio"})
        ),
        -32602
    );
    let id = h.call("alice", &["bob", "carol"], json!({}));
    assert_eq!(
        h.err(
            "alice",
            Method::Call,
            json!({"to": ["erin"], "media": "audio"})
        ),
        4009
    );
    h.ok("bob", Method::Accept, &id);
    assert_eq!(
        h.err(
            "bob",
            Method::Invite,
            json!({"call_id": id, "to": ["dave"]})
        ),
        4009
    );
    h.quiet(&["dave", "erin"]);
}

#[test]
fn everything_is_freed_after_calls_end() {
    let mut h = H::new();
    for u in ["alice", "bob", "carol", "dave"] {
        h.login(u);
    }
    for round in 0..50 {
        let id = h.call("alice", &["bob", "carol", "dave"], json!({}));
        h.ok("bob", Method::Accept, &id);
        if round % 2 == 0 {
            h.ok("carol", Method::Reject, &id);
        }
        h.disconnect("dave");
        h.advance(INVITE);
        h.login("dave");
        h.ok("alice", Method::Hangup, &id);
        if h.model.calls_active() == 1 {
            h.ok("bob", Method::Hangup, &id);
        }
        for u in ["alice", "bob", "carol", "dave"] {
            h.take(u);
        }
    }
    assert_eq!(h.model.calls_active(), 0);
    assert_eq!(h.model.users_known(), 4);
    let started = h
        .events
        .iter()
        .filter(|e| matches!(e, CallEvent::Started { .. }))
        .count();
    assert_eq!(started, 50);
    assert_eq!(h.ended().len(), 50);
}

#[test]
fn requests_on_unknown_sockets_are_refused() {
    let mut h = H::new();
    h.model
        .request(h.now, ConnId(999), json!(1), Method::Hangup, json!({}));
    h.drain();
    let r = &h.responses[&(ConnId(999), 1)];
    assert_eq!(r["error"]["code"], 4001);
    h.model.disconnect(h.now, ConnId(999));
    assert!(h.model.poll_output().is_none());
}

// ---- media commands ----

#[test]
fn an_offer_the_worker_cannot_take_is_answered_with_an_internal_error() {
    // The driver's path when the Worker's command queue is full (or the Worker gone).
    let mut h = H::new();
    for u in ["alice", "bob"] {
        h.login(u);
    }
    let id = h.call("alice", &["bob"], json!({}));
    h.ok("bob", Method::Accept, &id);
    h.media.clear();
    let bob = h.conn_of["bob"];
    h.model.request(
        h.now,
        bob,
        json!(5),
        Method::Offer,
        json!({"call_id": id, "sdp": "v=0 offer"}),
    );
    h.drain();
    let [cmd] = &h.media[..] else {
        panic!("one offer command: {:?}", h.media);
    };
    let cmd = cmd.clone();
    h.model.media_undelivered(&cmd);
    assert_eq!(h.response(bob, 5), Err(5000));
    // Once only: a late reply for that ticket is ignored.
    h.model.media_undelivered(&cmd);
    h.drain();
    assert!(h.responses.is_empty());
    // A command without a request behind it (a mute) answers nobody.
    h.model.media_undelivered(&MediaCommand::Leave {
        call_id: id.clone(),
        user: "bob".into(),
    });
    h.drain();
    assert!(h.responses.is_empty());
}

#[test]
fn media_requests_go_to_the_worker_and_back() {
    let mut h = H::new();
    for u in ["alice", "bob", "carol"] {
        h.login(u);
    }
    let id = h.call("alice", &["bob", "carol"], json!({}));
    // A ringing member may not offer yet.
    assert_eq!(
        h.err("bob", Method::Offer, json!({"call_id": id, "sdp": "v=0"})),
        4009
    );
    h.ok("bob", Method::Accept, &id);
    h.media.clear();
    let bob = h.conn_of["bob"];
    h.model.request(
        h.now,
        bob,
        json!(77),
        Method::Offer,
        json!({"call_id": id, "sdp": "v=0 offer"}),
    );
    h.drain();
    assert!(
        !h.responses.contains_key(&(bob, 77)),
        "answered by the worker, later"
    );
    let [
        MediaCommand::Offer {
            call_id,
            user,
            sdp,
            video: false,
            state,
            ticket,
        },
    ] = &h.media[..]
    else {
        panic!("one offer command: {:?}", h.media);
    };
    assert_eq!(
        (call_id, user.as_str(), sdp.as_str()),
        (&id, "bob", "v=0 offer")
    );
    assert_eq!(*state, MemberMedia::default());
    let ticket = *ticket;
    // An unknown ticket is ignored; the right one answers the request.
    h.model.media_event(MediaEvent::Reply {
        ticket: ticket + 100,
        result: Ok(Some("v=0 wrong".into())),
    });
    h.model.media_event(MediaEvent::Reply {
        ticket,
        result: Ok(Some("v=0 answer".into())),
    });
    h.drain();
    assert_eq!(h.response(bob, 77), Ok(json!({"sdp": "v=0 answer"})));
    // Server offers reach joined members only.
    h.take("bob");
    h.take("carol");
    for (user, sdp) in [("bob", "v=0 renegotiate"), ("carol", "v=0 ringing")] {
        h.model.media_event(MediaEvent::Offer {
            call_id: id.clone(),
            user: user.into(),
            sdp: sdp.into(),
        });
    }
    h.drain();
    h.expect(
        "bob",
        &[("offer", json!({"call_id": id, "sdp": "v=0 renegotiate"}))],
    );
    h.quiet(&["carol"]);
    // A failed Peer is told to its member, who is still in the call.
    h.model.media_event(MediaEvent::Failed {
        call_id: id.clone(),
        user: "bob".into(),
        failure: sfu::media::Failure::Dtls,
    });
    h.drain();
    h.expect(
        "bob",
        &[("media_failed", json!({"call_id": id, "reason": "dtls"}))],
    );
    // A session full of stopped m-lines: its joined member is asked for a new offer.
    for user in ["bob", "carol"] {
        h.model.media_event(MediaEvent::Reoffer {
            call_id: id.clone(),
            user: user.into(),
        });
    }
    h.drain();
    h.expect(
        "bob",
        &[("reoffer", json!({"call_id": id, "reason": "compact"}))],
    );
    h.quiet(&["carol"]);
    // Candidates pass on; hold and mute carry the member's whole state.
    h.media.clear();
    h.req(
        "bob",
        Method::Candidate,
        json!({"call_id": id, "candidate": "candidate:1 1 udp 1 10.0.0.1 5 typ host"}),
    )
    .unwrap();
    h.req("bob", Method::Hold, json!({"call_id": id, "held": true}))
        .unwrap();
    h.req("bob", Method::Mute, json!({"call_id": id, "video": true}))
        .unwrap();
    assert_eq!(h.media.len(), 3);
    assert!(matches!(&h.media[0], MediaCommand::Candidate { .. }));
    let held = MemberMedia {
        held: true,
        ..MemberMedia::default()
    };
    let held_muted = MemberMedia {
        video_muted: true,
        ..held
    };
    assert!(matches!(&h.media[1], MediaCommand::SetState { state, .. } if *state == held));
    assert!(matches!(&h.media[2], MediaCommand::SetState { state, .. } if *state == held_muted));
    // A re-offer (as after a reconnect) carries that state.
    h.media.clear();
    h.model.request(
        h.now,
        bob,
        json!(78),
        Method::Offer,
        json!({"call_id": id, "sdp": "v=0 again"}),
    );
    h.drain();
    assert!(
        matches!(&h.media[..], [MediaCommand::Offer { state, .. }] if *state == held_muted),
        "{:?}",
        h.media
    );
    // Leaving closes the member's Peer; the end of the call closes the rest.
    h.media.clear();
    h.ok("bob", Method::Hangup, &id);
    assert_eq!(
        h.media,
        [MediaCommand::Leave {
            call_id: id.clone(),
            user: "bob".into()
        }]
    );
    h.media.clear();
    h.ok("alice", Method::Hangup, &id);
    assert_eq!(
        h.media,
        [
            MediaCommand::Leave {
                call_id: id.clone(),
                user: "alice".into()
            },
            MediaCommand::EndCall {
                call_id: id.clone()
            },
        ]
    );
}

// ---- invite and push budgets ----

#[test]
fn a_caller_may_invite_so_many_users_per_minute() {
    let mut h = H::with(ModelConfig {
        max_invites_per_minute: 4,
        ..ModelConfig::default()
    });
    h.login("alice");
    // Call/hangup loops at ringing users: 4 invites, then 4029.
    for _ in 0..4 {
        let id = h.call("alice", &["bob"], json!({}));
        h.ok("alice", Method::Hangup, &id);
    }
    assert_eq!(
        h.err(
            "alice",
            Method::Call,
            json!({"to": ["bob"], "media": "audio"})
        ),
        4029
    );
    // A group call counts each invitee; `invite` draws on the same budget.
    h.advance(Duration::from_secs(30)); // refilled by 2
    let id = h.call("alice", &["bob", "carol"], json!({"group": true}));
    assert_eq!(
        h.err(
            "alice",
            Method::Invite,
            json!({"call_id": id, "to": ["dave"]})
        ),
        4029
    );
    h.advance(Duration::from_secs(15)); // one more
    h.req(
        "alice",
        Method::Invite,
        json!({"call_id": id, "to": ["dave"]}),
    )
    .unwrap();
}

#[test]
fn an_offline_callee_gets_so_many_pushes_per_minute() {
    let mut h = H::with(ModelConfig {
        max_pushes_per_minute: 2,
        ..ModelConfig::default()
    });
    h.login("alice");
    for _ in 0..5 {
        let id = h.call("alice", &["bob"], json!({}));
        h.ok("alice", Method::Hangup, &id);
    }
    assert_eq!(h.pushes.len(), 2, "bob's phone is not spammed");
    assert_eq!(h.model.pushes_limited(), 3);
    h.advance(Duration::from_secs(30));
    h.call("alice", &["bob"], json!({}));
    assert_eq!(h.pushes.len(), 3, "the budget refills over the minute");
}

#[test]
fn subscribe_is_checked_and_handed_to_the_media_core() {
    let mut h = H::new();
    for u in ["alice", "bob", "carol", "dave"] {
        h.login(u);
    }
    let id = h.call("alice", &["bob", "carol"], json!({"media": "video"}));
    h.ok("bob", Method::Accept, &id);
    h.media.clear();
    let sub = |user: &str, video: &str| json!({"call_id": id, "user": user, "video": video});
    h.req("bob", Method::Subscribe, sub("alice", "low"))
        .unwrap();
    assert!(
        matches!(&h.media[..], [MediaCommand::Subscribe { user, publisher, video, .. }]
            if user == "bob" && publisher == "alice" && *video == VideoChoice::Low),
        "{:?}",
        h.media
    );
    h.req("bob", Method::Subscribe, sub("carol", "off"))
        .unwrap();
    assert_eq!(
        h.err("bob", Method::Subscribe, sub("bob", "low")),
        -32602,
        "self"
    );
    assert_eq!(
        h.err("bob", Method::Subscribe, sub("dave", "low")),
        -32602,
        "not in the call"
    );
    assert_eq!(
        h.err("bob", Method::Subscribe, sub("alice", "medium")),
        -32602
    );
    assert_eq!(
        h.err("carol", Method::Subscribe, sub("alice", "low")),
        4009,
        "still ringing"
    );
    assert_eq!(h.err("dave", Method::Subscribe, sub("alice", "low")), 4003);
    assert_eq!(
        h.media.len(),
        2,
        "only the valid requests reach the media core"
    );
}
