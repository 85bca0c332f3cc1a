//! Deterministic tests of the call model as a cluster member (`ModelConfig::claims`): three
//! models (three nodes) share one in-memory claim table, as they share Redis, and the claims
//! they ask for are answered late and in a shuffled order, as a busy Redis and a network would.
//! Users are reached on every node through a connection of their own (what a relay connection
//! to their edge node will be).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sfu::protocol::{Method, Outbound};
use sfu::signaling::{CallModel, ConnId, ModelConfig, Output};

struct Node {
    model: CallModel,
    inbox: HashMap<ConnId, Vec<(String, Value)>>,
    responses: HashMap<(ConnId, u64), Value>,
}

struct Cluster {
    nodes: Vec<Node>,
    now: Instant,
    /// user -> the call holding them (the Redis busy keys).
    table: HashMap<String, String>,
    /// Claims asked for and not answered yet: (node, call, user).
    pending: Vec<(usize, String, String)>,
    next_id: u64,
    /// (node, user) -> their connection on that node.
    conns: HashMap<(usize, String), ConnId>,
    rng: u64,
}

impl Cluster {
    fn new(n: usize) -> Self {
        let nodes = (0..n)
            .map(|i| Node {
                model: CallModel::new(ModelConfig {
                    instance: format!("n{i}"),
                    claims: true,
                    invite_timeout: Duration::from_secs(30),
                    max_invites_per_minute: 1000,
                    ..ModelConfig::default()
                }),
                inbox: HashMap::new(),
                responses: HashMap::new(),
            })
            .collect();
        Self {
            nodes,
            now: Instant::now(),
            table: HashMap::new(),
            pending: Vec::new(),
            next_id: 0,
            conns: HashMap::new(),
            rng: 0x2545_f491_4f6c_dd1d,
        }
    }

    fn drain(&mut self, n: usize) {
        while let Some(out) = self.nodes[n].model.poll_output() {
            match out {
                Output::Send { conn, msg } => {
                    let frame: Value = serde_json::from_str(&msg.to_frame()).unwrap();
                    match msg {
                        Outbound::Response { id, .. } => {
                            self.nodes[n]
                                .responses
                                .insert((conn, id.as_u64().unwrap()), frame);
                        }
                        Outbound::Notify(_) => {
                            self.nodes[n].inbox.entry(conn).or_default().push((
                                frame["method"].as_str().unwrap().to_string(),
                                frame["params"].clone(),
                            ));
                        }
                    }
                }
                Output::Claim { call_id, user } => self.pending.push((n, call_id, user)),
                Output::Release { call_id, user } if self.table.get(&user) == Some(&call_id) => {
                    self.table.remove(&user);
                }
                _ => {}
            }
        }
    }

    /// `user` logs in on node `n` (for a user of another node: their relay connection).
    fn login(&mut self, n: usize, user: &str) -> ConnId {
        let conn = ConnId(1 + self.conns.len() as u64);
        self.next_id += 1;
        self.nodes[n]
            .model
            .login(self.now, conn, json!(self.next_id), user.to_string());
        self.drain(n);
        self.conns.insert((n, user.to_string()), conn);
        conn
    }

    fn request(&mut self, n: usize, user: &str, method: Method, params: Value) -> Value {
        let conn = self.conns[&(n, user.to_string())];
        self.next_id += 1;
        let id = self.next_id;
        self.nodes[n]
            .model
            .request(self.now, conn, json!(id), method, params);
        self.drain(n);
        self.nodes[n]
            .responses
            .remove(&(conn, id))
            .expect("a response")
    }

    /// Answers every pending claim (and those they lead to), in a shuffled order, first come
    /// first served per user, as the claim script does.
    fn answer_claims(&mut self) {
        while !self.pending.is_empty() {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let i = (self.rng % self.pending.len() as u64) as usize;
            let (n, call, user) = self.pending.swap_remove(i);
            let granted = self.table.get(&user).is_none_or(|c| *c == call);
            if granted {
                self.table.insert(user.clone(), call.clone());
            }
            self.now += Duration::from_millis(3);
            self.nodes[n].model.claimed(self.now, &call, &user, granted);
            self.drain(n);
        }
    }

    fn got(&self, n: usize, user: &str, method: &str) -> Vec<Value> {
        let conn = self.conns[&(n, user.to_string())];
        self.nodes[n]
            .inbox
            .get(&conn)
            .map(|v| {
                v.iter()
                    .filter(|(m, _)| m == method)
                    .map(|(_, p)| p.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[test]
fn fifty_callers_on_three_nodes_race_for_one_callee_and_exactly_one_rings() {
    let mut c = Cluster::new(3);
    for n in 0..3 {
        c.login(n, "bob");
    }
    let mut calls = Vec::new();
    for i in 0..50 {
        let n = i % 3;
        let caller = format!("caller{i}");
        c.login(n, &caller);
        let r = c.request(
            n,
            &caller,
            Method::Call,
            json!({"to": ["bob"], "media": "audio"}),
        );
        calls.push((
            n,
            caller,
            r["result"]["call_id"].as_str().unwrap().to_string(),
        ));
    }
    // Nobody rings before the cluster answers.
    assert!((0..3).all(|n| c.got(n, "bob", "invited").is_empty()));
    c.answer_claims();
    let invited: Vec<Value> = (0..3).flat_map(|n| c.got(n, "bob", "invited")).collect();
    assert_eq!(invited.len(), 1, "exactly one call rings bob: {invited:?}");
    let winner = invited[0]["call_id"].as_str().unwrap().to_string();
    assert_eq!(c.table.get("bob"), Some(&winner));
    let mut busy = 0;
    for (n, caller, call) in &calls {
        if *call == winner {
            assert!(c.got(*n, caller, "busy").is_empty());
            continue;
        }
        let b = c.got(*n, caller, "busy");
        assert_eq!(b.len(), 1, "{caller} told bob is busy");
        assert_eq!(b[0]["user"], "bob");
        let end = c.got(*n, caller, "call_end");
        assert_eq!(end.len(), 1);
        assert_eq!(end[0]["reason"], "busy");
        busy += 1;
    }
    assert_eq!(busy, 49);
    // The 49 ended calls released their callers; only the live call holds anyone.
    let mut held: Vec<_> = c.table.values().cloned().collect();
    held.dedup();
    assert!(held.iter().all(|h| *h == winner), "{:?}", c.table);
    assert_eq!(c.table.len(), 2, "bob and the winning caller");
    // The winning call ends: everyone is free, and bob can be called again.
    let (n, caller, _) = calls
        .iter()
        .find(|(_, _, id)| *id == winner)
        .unwrap()
        .clone();
    c.request(n, &caller, Method::Hangup, json!({"call_id": winner}));
    assert!(c.table.is_empty(), "{:?}", c.table);
    c.login(1, "dave");
    c.request(
        1,
        "dave",
        Method::Call,
        json!({"to": ["bob"], "media": "audio"}),
    );
    c.answer_claims();
    assert_eq!(c.got(1, "bob", "invited").len(), 1 + usize::from(n == 1));
}

#[test]
fn a_claim_answered_after_its_call_ended_is_released_and_never_rings() {
    let mut c = Cluster::new(2);
    c.login(0, "alice");
    c.login(0, "bob");
    let r = c.request(
        0,
        "alice",
        Method::Call,
        json!({"to": ["bob"], "media": "audio"}),
    );
    let call = r["result"]["call_id"].as_str().unwrap().to_string();
    // Alice gives up before the cluster answers.
    c.request(0, "alice", Method::Hangup, json!({"call_id": call}));
    c.answer_claims();
    assert!(c.got(0, "bob", "invited").is_empty());
    assert!(c.table.is_empty(), "late grants released: {:?}", c.table);
}

#[test]
fn a_group_call_rings_the_free_and_reports_the_busy_elsewhere() {
    let mut c = Cluster::new(2);
    c.login(0, "alice");
    c.login(0, "bob");
    c.login(0, "carol");
    // Carol is in a call on node 1.
    c.table.insert("carol".into(), "n1-c7".into());
    let r = c.request(
        0,
        "alice",
        Method::Call,
        json!({"to": ["bob", "carol"], "media": "video", "group": true}),
    );
    let call = r["result"]["call_id"].as_str().unwrap().to_string();
    c.answer_claims();
    assert_eq!(c.got(0, "bob", "invited").len(), 1);
    assert!(c.got(0, "carol", "invited").is_empty());
    let busy = c.got(0, "alice", "busy");
    assert_eq!(busy.len(), 1);
    assert_eq!(busy[0]["user"], "carol");
    assert!(
        c.got(0, "alice", "call_end").is_empty(),
        "the call goes on for bob"
    );
    c.request(0, "bob", Method::Accept, json!({"call_id": call}));
    assert_eq!(c.got(0, "alice", "user_enter").len(), 1);
    assert_eq!(c.table.get("bob"), Some(&call));
    assert_eq!(
        c.table.get("carol").map(String::as_str),
        Some("n1-c7"),
        "untouched"
    );
    // Inviting carol again while her other call lasts: refused again, nothing changes.
    c.request(
        0,
        "alice",
        Method::Invite,
        json!({"call_id": call, "to": ["carol"]}),
    );
    c.answer_claims();
    assert_eq!(c.got(0, "alice", "busy").len(), 2);
    // Bob leaves: his claim goes; the call ends (one member left) and frees alice.
    c.request(0, "bob", Method::Hangup, json!({"call_id": call}));
    assert!(!c.table.contains_key("bob") && !c.table.contains_key("alice"));
}
