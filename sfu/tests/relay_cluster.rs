//! Deterministic tests of calls across cluster nodes: three Relays (each around its own call
//! model) exchange envelopes through in-memory inboxes, with one in-memory store for presence
//! and busy claims, as they would through Redis; time is virtual. Every envelope goes through
//! its JSON form, as on the wire. The PROTOCOL.md rules hold with caller and callee on
//! different nodes: invite, accept, relayed requests, busy, takeover, an offline callee who logs
//! in elsewhere, reconnect to another node, a host or an edge node lost.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sfu::protocol::{Method, Outbound};
use sfu::signaling::relay::{Envelope, NodeOut, Relay, RelayOut, host_of};
use sfu::signaling::{CallModel, ConnId, ModelConfig, Output};

const GRACE: Duration = Duration::from_secs(10);

struct Net {
    nodes: Vec<Relay>,
    alive: Vec<bool>,
    now: Instant,
    /// user -> (node, socket)
    presence: HashMap<String, (usize, u64)>,
    /// user -> call holding them
    busy: HashMap<String, String>,
    claims: VecDeque<(usize, String, String)>,
    inboxes: Vec<VecDeque<String>>,
    /// (node, socket) -> frames received
    frames: HashMap<(usize, u64), Vec<Value>>,
    closed: HashMap<(usize, u64), u16>,
    next_conn: u64,
    next_id: u64,
}

fn node_name(n: usize) -> String {
    format!("n{n}")
}

impl Net {
    fn new(n: usize) -> Self {
        Self::spilling(n, None)
    }

    /// `n` nodes placing new calls elsewhere from `spill_above` calls hosted.
    fn spilling(n: usize, spill_above: Option<u64>) -> Self {
        let nodes = (0..n)
            .map(|i| {
                Relay::new(
                    &node_name(i),
                    CallModel::new(ModelConfig {
                        instance: node_name(i),
                        claims: true,
                        reconnect_grace: GRACE,
                        ..ModelConfig::default()
                    }),
                )
                .with_placement(spill_above)
            })
            .collect();
        Self {
            nodes,
            alive: vec![true; n],
            now: Instant::now(),
            presence: HashMap::new(),
            busy: HashMap::new(),
            claims: VecDeque::new(),
            inboxes: vec![VecDeque::new(); n],
            frames: HashMap::new(),
            closed: HashMap::new(),
            next_conn: 0,
            next_id: 100,
        }
    }

    /// Runs until nothing moves: outputs carried out, claims answered, inboxes delivered.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for n in 0..self.nodes.len() {
                while self.alive[n] {
                    let Some(o) = self.nodes[n].poll_output() else {
                        break;
                    };
                    moved = true;
                    self.carry_out(n, o);
                }
            }
            while let Some((n, call, user)) = self.claims.pop_front() {
                moved = true;
                let held_by_live = self.busy.get(&user).is_some_and(|c| {
                    *c != call
                        && host_of(c)
                            .and_then(|h| h[1..].parse::<usize>().ok())
                            .is_some_and(|h| self.alive[h])
                });
                if !held_by_live {
                    self.busy.insert(user.clone(), call.clone());
                }
                if self.alive[n] {
                    self.nodes[n]
                        .model_mut()
                        .claimed(self.now, &call, &user, !held_by_live);
                }
            }
            for n in 0..self.nodes.len() {
                while let Some(text) = self.inboxes[n].pop_front() {
                    moved = true;
                    if self.alive[n] {
                        let env: Envelope = serde_json::from_str(&text).unwrap();
                        self.nodes[n].envelope(self.now, env);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn carry_out(&mut self, n: usize, o: NodeOut) {
        match o {
            NodeOut::Model(Output::Send { conn, msg }) => {
                let frame: Value = serde_json::from_str(&msg.to_frame()).unwrap();
                assert!(!matches!(msg, Outbound::Response { .. }) || frame.get("id").is_some());
                self.frames.entry((n, conn.0)).or_default().push(frame);
            }
            NodeOut::Model(Output::Close { conn, code, .. }) => {
                self.closed.insert((n, conn.0), code);
            }
            NodeOut::Model(Output::Claim { call_id, user }) => {
                self.claims.push_back((n, call_id, user))
            }
            NodeOut::Model(Output::Release { call_id, user }) => {
                if self.busy.get(&user) == Some(&call_id) {
                    self.busy.remove(&user);
                }
            }
            NodeOut::Model(_) => {}
            NodeOut::Relay(RelayOut::Send { node, envelope }) => {
                let to: usize = node[1..].parse().unwrap();
                self.inboxes[to].push_back(serde_json::to_string(&envelope).unwrap());
            }
            NodeOut::Relay(RelayOut::Deliver { conn, frame }) => {
                if !self.closed.contains_key(&(n, conn.0)) {
                    let v: Value = serde_json::from_str(&frame).unwrap();
                    self.frames.entry((n, conn.0)).or_default().push(v);
                }
            }
            NodeOut::Relay(RelayOut::Close { conn, code, .. }) => {
                self.closed.entry((n, conn.0)).or_insert(code);
            }
            NodeOut::Relay(RelayOut::Locate { token, users }) => {
                let found: Vec<(String, Option<(String, u64)>)> = users
                    .into_iter()
                    .map(|u| {
                        let at = self
                            .presence
                            .get(&u)
                            .filter(|(node, _)| self.alive[*node])
                            .map(|(node, c)| (node_name(*node), *c));
                        (u, at)
                    })
                    .collect();
                self.nodes[n].located(self.now, token, &found);
            }
            NodeOut::Relay(RelayOut::Arrived { user, conn }) => {
                let before = self.presence.insert(user.clone(), (n, conn.0));
                let mut nodes: Vec<String> =
                    before.map(|(b, _)| node_name(b)).into_iter().collect();
                if let Some(h) = self.busy.get(&user).and_then(|c| host_of(c)) {
                    nodes.push(h.to_string());
                }
                self.nodes[n].attach_elsewhere(conn, &user, &nodes);
            }
            NodeOut::Relay(RelayOut::Departed { user, conn }) => {
                if self.presence.get(&user) == Some(&(n, conn.0)) {
                    self.presence.remove(&user);
                }
            }
        }
    }

    fn login(&mut self, n: usize, user: &str) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.next_id += 1;
        self.nodes[n].login(self.now, conn, json!(self.next_id), user, Vec::new());
        self.settle();
        let r = self.take_response(n, conn, self.next_id);
        assert_eq!(r["result"]["user"], user, "{r}");
        conn
    }

    fn req(&mut self, n: usize, conn: ConnId, method: Method, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.nodes[n].request(self.now, conn, json!(id), method, params);
        self.settle();
        self.take_response(n, conn, id)
    }

    fn take_response(&mut self, n: usize, conn: ConnId, id: u64) -> Value {
        let frames = self.frames.entry((n, conn.0)).or_default();
        let i = frames
            .iter()
            .position(|f| f["id"] == json!(id))
            .unwrap_or_else(|| panic!("no response {id} on n{n}/{}: {frames:?}", conn.0));
        frames.remove(i)
    }

    fn got(&self, n: usize, conn: ConnId, method: &str) -> Vec<Value> {
        self.frames
            .get(&(n, conn.0))
            .map(|f| {
                f.iter()
                    .filter(|f| f["method"] == method)
                    .map(|f| f["params"].clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn disconnect(&mut self, n: usize, conn: ConnId) {
        self.nodes[n].disconnect(self.now, conn);
        self.settle();
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        for n in 0..self.nodes.len() {
            if self.alive[n] {
                self.nodes[n].model_mut().handle_timeout(self.now);
            }
        }
        self.settle();
    }

    /// A heartbeat: every node learns the calls each live node hosts.
    fn heartbeat(&mut self) {
        let loads: Vec<(String, u64)> = (0..self.nodes.len())
            .filter(|n| self.alive[*n])
            .map(|n| (node_name(n), self.nodes[n].model().calls_active() as u64))
            .collect();
        for n in 0..self.nodes.len() {
            self.nodes[n].node_loads(loads.clone());
        }
    }

    /// Node `dead` stops; the others learn it (its registry entry expired).
    fn kill(&mut self, dead: usize) {
        self.alive[dead] = false;
        for n in 0..self.nodes.len() {
            if self.alive[n] {
                self.nodes[n].node_dead(self.now, &node_name(dead));
            }
        }
        self.settle();
    }
}

/// alice on n0 calls bob on n1; bob accepts. Returns (net, alice, bob, call id).
fn cross_node_call() -> (Net, ConnId, ConnId, String) {
    let mut net = Net::new(3);
    let alice = net.login(0, "alice");
    let bob = net.login(1, "bob");
    let r = net.req(
        0,
        alice,
        Method::Call,
        json!({"to": ["bob"], "media": "audio"}),
    );
    let call = r["result"]["call_id"].as_str().unwrap().to_string();
    assert!(
        call.starts_with("n0-"),
        "hosted by the caller's node: {call}"
    );
    let invited = net.got(1, bob, "invited");
    assert_eq!(invited.len(), 1, "bob rings on his own node");
    assert_eq!(invited[0]["from"], "alice");
    let r = net.req(1, bob, Method::Accept, json!({"call_id": call}));
    assert_eq!(r["result"], json!({}), "{r}");
    (net, alice, bob, call)
}

#[test]
fn a_call_across_nodes_rings_connects_relays_and_ends() {
    let (mut net, alice, bob, call) = cross_node_call();
    assert_eq!(net.got(0, alice, "accepted")[0]["user"], "bob");
    assert_eq!(net.got(0, alice, "user_enter")[0]["user"], "bob");
    assert_eq!(net.got(1, bob, "user_enter")[0]["user"], "alice");
    // Requests on the call from bob's node reach the host, and back.
    let r = net.req(
        1,
        bob,
        Method::Message,
        json!({"call_id": call, "text": "hi"}),
    );
    assert_eq!(r["result"], json!({}));
    assert_eq!(net.got(0, alice, "message")[0]["text"], "hi");
    net.req(
        0,
        alice,
        Method::Dtmf,
        json!({"call_id": call, "digits": "12#"}),
    );
    assert_eq!(net.got(1, bob, "dtmf")[0]["digits"], "12#");
    // A bad request on a remote call is answered by the host, with its error.
    let r = net.req(1, bob, Method::Accept, json!({"call_id": call}));
    assert!(r.get("error").is_some(), "{r}");
    let r = net.req(1, bob, Method::Hangup, json!({"call_id": call}));
    assert_eq!(r["result"], json!({}));
    assert_eq!(net.got(0, alice, "user_leave")[0]["user"], "bob");
    assert_eq!(net.got(0, alice, "call_end")[0]["reason"], "hangup");
    assert!(net.busy.is_empty(), "claims released: {:?}", net.busy);
}

#[test]
fn busy_cancel_and_reject_across_nodes() {
    let (mut net, _alice, _bob, _call) = cross_node_call();
    // carol on n2 calls bob, who is in alice's call on n0.
    let carol = net.login(2, "carol");
    net.req(
        2,
        carol,
        Method::Call,
        json!({"to": ["bob"], "media": "audio"}),
    );
    assert_eq!(net.got(2, carol, "busy")[0]["user"], "bob");
    assert_eq!(net.got(2, carol, "call_end")[0]["reason"], "busy");
    // carol calls dave on n1, then cancels: dave is told.
    let dave = net.login(1, "dave");
    let r = net.req(
        2,
        carol,
        Method::Call,
        json!({"to": ["dave"], "media": "video"}),
    );
    let c2 = r["result"]["call_id"].as_str().unwrap().to_string();
    assert_eq!(net.got(1, dave, "invited").len(), 1);
    net.req(2, carol, Method::Hangup, json!({"call_id": c2}));
    assert_eq!(net.got(1, dave, "cancelled")[0]["call_id"], c2.as_str());
    // Again, and dave rejects from his node.
    let r = net.req(
        2,
        carol,
        Method::Call,
        json!({"to": ["dave"], "media": "video"}),
    );
    let c3 = r["result"]["call_id"].as_str().unwrap().to_string();
    let r = net.req(1, dave, Method::Reject, json!({"call_id": c3}));
    assert_eq!(r["result"], json!({}));
    assert_eq!(net.got(2, carol, "rejected")[0]["user"], "dave");
    assert!(!net.busy.contains_key("dave") && !net.busy.contains_key("carol"));
}

#[test]
fn a_login_on_another_node_takes_over_and_the_call_goes_on() {
    let (mut net, alice, bob, call) = cross_node_call();
    let bob2 = net.login(2, "bob");
    assert_eq!(net.got(1, bob, "session_replaced").len(), 1);
    assert_eq!(net.closed.get(&(1, bob.0)), Some(&4000));
    assert_eq!(
        net.got(2, bob2, "user_enter")[0]["user"],
        "alice",
        "replayed"
    );
    assert!(
        net.got(0, alice, "user_leave").is_empty(),
        "alice never saw bob leave"
    );
    net.req(
        2,
        bob2,
        Method::Message,
        json!({"call_id": call, "text": "moved"}),
    );
    assert_eq!(net.got(0, alice, "message")[0]["text"], "moved");
    assert_eq!(
        net.nodes[0].relay_connections(),
        1,
        "the replaced relay connection went"
    );
    net.req(
        0,
        alice,
        Method::Message,
        json!({"call_id": call, "text": "ok"}),
    );
    assert_eq!(net.got(2, bob2, "message")[0]["text"], "ok");
}

#[test]
fn an_offline_callee_who_logs_in_on_another_node_rings_there() {
    let mut net = Net::new(3);
    let alice = net.login(0, "alice");
    let r = net.req(
        0,
        alice,
        Method::Call,
        json!({"to": ["erin"], "media": "audio"}),
    );
    let call = r["result"]["call_id"].as_str().unwrap().to_string();
    let erin = net.login(2, "erin");
    let inv = net.got(2, erin, "invited");
    assert_eq!(inv.len(), 1, "the waiting invite reaches her node");
    assert_eq!(inv[0]["call_id"], call.as_str());
    net.req(2, erin, Method::Accept, json!({"call_id": call}));
    assert_eq!(net.got(0, alice, "accepted")[0]["user"], "erin");
}

#[test]
fn a_reconnect_to_another_node_within_the_grace_keeps_the_call() {
    let (mut net, alice, bob, call) = cross_node_call();
    net.disconnect(1, bob);
    net.advance(GRACE / 2);
    let bob2 = net.login(2, "bob");
    assert_eq!(net.got(2, bob2, "user_enter")[0]["user"], "alice");
    net.advance(GRACE * 2);
    assert!(
        net.got(0, alice, "user_leave").is_empty(),
        "grace ended by the reconnect"
    );
    assert_eq!(
        net.nodes[0].relay_connections(),
        1,
        "the host serves bob on his new socket only: the old one's relay connection went"
    );
    net.req(
        2,
        bob2,
        Method::Message,
        json!({"call_id": call, "text": "back"}),
    );
    assert_eq!(net.got(0, alice, "message")[0]["text"], "back");
}

#[test]
fn a_lost_host_ends_its_calls_with_error_and_the_user_can_call_again() {
    let (mut net, _alice, bob, call) = cross_node_call();
    net.kill(0);
    let end = net.got(1, bob, "call_end");
    assert_eq!(end.len(), 1);
    assert_eq!(end[0]["call_id"], call.as_str());
    assert_eq!(end[0]["reason"], "error");
    // bob's session is fine: he calls carol on n2 at once (the dead host's claim is void).
    let carol = net.login(2, "carol");
    let r = net.req(
        1,
        bob,
        Method::Call,
        json!({"to": ["carol"], "media": "audio"}),
    );
    assert!(r["result"]["call_id"].is_string(), "{r}");
    assert_eq!(net.got(2, carol, "invited").len(), 1);
}

#[test]
fn a_lost_edge_is_a_disconnect_then_a_leave_after_the_grace() {
    let (mut net, alice, _bob, _call) = cross_node_call();
    net.kill(1);
    assert!(
        net.got(0, alice, "user_leave").is_empty(),
        "not before the grace ends"
    );
    net.advance(GRACE + Duration::from_millis(1));
    let leave = net.got(0, alice, "user_leave");
    assert_eq!(leave.len(), 1);
    assert_eq!(leave[0]["user"], "bob");
    assert_eq!(leave[0]["reason"], "disconnected");
    assert_eq!(net.got(0, alice, "call_end")[0]["reason"], "disconnected");
}

#[test]
fn a_node_at_its_threshold_places_new_calls_on_the_least_loaded_node() {
    let mut net = Net::spilling(3, Some(1));
    let alice = net.login(0, "alice");
    net.login(1, "bob");
    let carol = net.login(0, "carol");
    let dave = net.login(2, "dave");
    let erin = net.login(1, "erin");
    net.heartbeat();
    // n0 hosts nothing yet: alice's call stays on her node.
    let r = net.req(
        0,
        alice,
        Method::Call,
        json!({"to": ["bob"], "media": "audio"}),
    );
    assert!(r["result"]["call_id"].as_str().unwrap().starts_with("n0-"));
    // n1 gets a call of its own: erin calls dave.
    let r = net.req(
        1,
        erin,
        Method::Call,
        json!({"to": ["dave"], "media": "audio"}),
    );
    assert!(r["result"]["call_id"].as_str().unwrap().starts_with("n1-"));
    net.heartbeat();
    // n0 is at its threshold: carol's call goes to n2, which hosts none; the rules hold there.
    let r = net.req(
        0,
        carol,
        Method::Call,
        json!({"to": ["dave"], "media": "audio"}),
    );
    let call = r["result"]["call_id"].as_str().unwrap().to_string();
    assert!(call.starts_with("n2-"), "least loaded: {call}");
    assert_eq!(net.got(2, dave, "busy").len(), 0);
    assert_eq!(
        net.got(0, carol, "busy")[0]["user"],
        "dave",
        "busy with erin's call"
    );
    assert_eq!(net.got(0, carol, "call_end")[0]["reason"], "busy");
    // Until the next heartbeat, n0 counts that call on n2 (as loaded as n0 now): this one
    // stays here; after it, n2 hosts none again.
    let r = net.req(
        0,
        carol,
        Method::Call,
        json!({"to": ["frank"], "media": "audio"}),
    );
    let c = r["result"]["call_id"].as_str().unwrap().to_string();
    assert!(c.starts_with("n0-"), "{c}");
    net.req(0, carol, Method::Hangup, json!({"call_id": c}));
    net.heartbeat();
    let r = net.req(
        0,
        carol,
        Method::Call,
        json!({"to": ["frank"], "media": "audio"}),
    );
    let call = r["result"]["call_id"].as_str().unwrap().to_string();
    assert!(call.starts_with("n2-"), "{call}");
    let frank = net.login(0, "frank");
    assert_eq!(net.got(0, frank, "invited")[0]["call_id"], call.as_str());
    net.req(0, frank, Method::Accept, json!({"call_id": call}));
    assert_eq!(net.got(0, carol, "accepted")[0]["user"], "frank");
    let r = net.req(
        0,
        frank,
        Method::Message,
        json!({"call_id": call, "text": "via n2"}),
    );
    assert_eq!(r["result"], json!({}));
    assert_eq!(net.got(0, carol, "message")[0]["text"], "via n2");
    // A caller already in a call stays with this node's rules (not placed elsewhere).
    let r = net.req(
        0,
        alice,
        Method::Call,
        json!({"to": ["erin"], "media": "audio"}),
    );
    if let Some(id) = r["result"]["call_id"].as_str() {
        assert!(id.starts_with("n0-"), "{id}");
    }
    // The host n2 lost: carol's edge knew the call from its response, and ends it.
    net.kill(2);
    let end = net.got(0, carol, "call_end");
    assert_eq!(end.last().unwrap()["call_id"], call.as_str());
    assert_eq!(end.last().unwrap()["reason"], "error");
    // And no call is placed on a lost node.
    let r = net.req(
        0,
        carol,
        Method::Call,
        json!({"to": ["erin"], "media": "audio"}),
    );
    assert!(
        !r["result"]["call_id"].as_str().unwrap().starts_with("n2-"),
        "{r}"
    );
}

#[test]
fn a_remote_members_invite_finds_invitees_on_any_node() {
    let mut net = Net::new(3);
    let alice = net.login(0, "alice");
    let bob = net.login(1, "bob");
    let erin = net.login(2, "erin");
    let r = net.req(
        0,
        alice,
        Method::Call,
        json!({"to": ["bob"], "media": "audio", "group": true}),
    );
    let call = r["result"]["call_id"].as_str().unwrap().to_string();
    net.req(1, bob, Method::Accept, json!({"call_id": call}));
    let r = net.req(
        1,
        bob,
        Method::Invite,
        json!({"call_id": call, "to": ["erin"]}),
    );
    assert_eq!(r["result"], json!({}), "{r}");
    let inv = net.got(2, erin, "invited");
    assert_eq!(inv.len(), 1, "erin rings on her node, not as offline");
    assert_eq!(inv[0]["from"], "bob");
}

#[test]
fn a_login_is_answered_only_once_the_user_can_be_found() {
    let mut r = Relay::new(
        "n0",
        CallModel::new(ModelConfig {
            instance: "n0".into(),
            claims: true,
            ..ModelConfig::default()
        }),
    );
    r.login(Instant::now(), ConnId(1), json!(1), "bob", Vec::new());
    let mut outs = Vec::new();
    while let Some(o) = r.poll_output() {
        outs.push(o);
    }
    assert_eq!(
        outs,
        vec![NodeOut::Relay(RelayOut::Arrived {
            user: "bob".into(),
            conn: ConnId(1)
        })],
        "nothing for the socket before presence is published"
    );
    r.attach_elsewhere(ConnId(1), "bob", &[]);
    let o = r.poll_output().expect("the response now");
    assert!(
        matches!(
            o,
            NodeOut::Model(Output::Send {
                conn: ConnId(1),
                ..
            })
        ),
        "{o:?}"
    );
}

#[test]
fn a_single_node_relay_passes_everything_straight_to_its_model() {
    let mut r = Relay::single(CallModel::new(ModelConfig {
        instance: "3fa2c1d0".into(),
        ..ModelConfig::default()
    }));
    let now = Instant::now();
    r.login(now, ConnId(1), json!(1), "alice", Vec::new());
    r.login(now, ConnId(2), json!(1), "bob", Vec::new());
    r.request(
        now,
        ConnId(1),
        json!(2),
        Method::Call,
        json!({"to": ["bob"], "media": "audio"}),
    );
    let mut outs = Vec::new();
    while let Some(o) = r.poll_output() {
        outs.push(o);
    }
    assert!(
        outs.iter().all(|o| matches!(o, NodeOut::Model(_))),
        "{outs:?}"
    );
    let invited = outs.iter().any(|o| {
        matches!(o, NodeOut::Model(Output::Send { conn: ConnId(2), msg })
            if msg.to_frame().contains("\"invited\""))
    });
    assert!(invited, "bob rings at once: {outs:?}");
}

#[test]
fn subscribe_is_relayed_to_the_calls_host() {
    let (mut net, _alice, bob, call) = cross_node_call();
    let r = net.req(
        1,
        bob,
        Method::Subscribe,
        json!({"call_id": call, "user": "alice", "video": "low"}),
    );
    assert_eq!(r["result"], json!({}), "{r}");
    let r = net.req(
        1,
        bob,
        Method::Subscribe,
        json!({"call_id": call, "user": "zed", "video": "low"}),
    );
    assert_eq!(
        r["error"]["code"], -32602,
        "the host checks membership: {r}"
    );
}
