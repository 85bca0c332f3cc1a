//! The Relay: one cluster node's sans-IO bridge between its call model and the other nodes.
//! A user belongs to the node of their socket (their edge); a call to the node whose model
//! holds it (its host, named by the call id's prefix, the host's instance id). The edge hands a
//! request on a call it does not host to that host; the host serves it on a relay connection
//! (a `ConnId` of its model standing for the user's socket at the edge) and sends what its
//! model says on that connection back to the edge. Nothing here touches Redis or a socket:
//! envelopes, look-ups and presence go out as [`RelayOut`]s, their answers come back as inputs.
//! A new call is hosted by its caller's node unless [`Placement`] sends it to a less loaded
//! one (`--spill-above`): then the caller's `call` is relayed there like any other request.
//!
//! Invariants: a relay connection maps to exactly one (edge, socket) and back, and goes when
//! that socket is gone (detached, replaced, or its node lost); an edge knows,
//! per local socket, the calls hosted elsewhere that its user is in (from what the hosts sent),
//! so a host's death ends them for that user with `error`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use serde_json::{Value, json};

use super::{CallModel, ConnId, Output};
use crate::protocol::{Method, Outbound, RequestId};

mod envelope;
mod faults;
mod placement;

pub use envelope::{Envelope, NodeOut, RelayOut};
pub use placement::Placement;

/// Relay connections are numbered from here, far above any socket's number.
pub const RELAY_CONN_BASE: u64 = 1 << 48;
/// The id of requests an edge relays on its own account (their responses are not for a socket).
const QUIET: &str = "relay-quiet";

/// A request held until the users it names are located.
struct Held {
    conn: ConnId,
    id: RequestId,
    method: Method,
    params: Value,
}

pub struct Relay {
    /// Off on a single node: every call is ours and the Relay passes inputs straight through.
    cluster: bool,
    me: String,
    model: CallModel,
    next_relay: u64,
    /// (edge, socket) -> relay connection here, and back.
    relays: HashMap<(String, u64), ConnId>,
    back: HashMap<ConnId, (String, u64)>,
    /// Local sockets and their users.
    users: HashMap<ConnId, String>,
    /// Local sockets -> calls hosted elsewhere their user is in.
    remote_calls: HashMap<ConnId, HashSet<String>>,
    held: HashMap<u64, Held>,
    placement: Placement,
    /// Logins whose presence is not published yet, with what their sockets were sent: a
    /// login is answered once other nodes can find the user (so a call placed the next
    /// moment rings them).
    publishing: HashMap<ConnId, Vec<Output>>,
    next_token: u64,
    out: VecDeque<NodeOut>,
}

/// The host of a call: its id's prefix (`{instance}-c{n}`).
pub fn host_of(call_id: &str) -> Option<&str> {
    call_id.rsplit_once("-c").map(|(h, _)| h)
}

impl Relay {
    /// A single node's: every input goes straight to `model`.
    pub fn single(model: CallModel) -> Self {
        let mut r = Self::new("", model);
        r.cluster = false;
        r
    }

    /// The Relay of cluster node `me` (its model's instance id) around `model`.
    pub fn new(me: &str, model: CallModel) -> Self {
        Self {
            cluster: true,
            me: me.to_string(),
            model,
            next_relay: 0,
            relays: HashMap::new(),
            back: HashMap::new(),
            users: HashMap::new(),
            remote_calls: HashMap::new(),
            held: HashMap::new(),
            placement: Placement::default(),
            publishing: HashMap::new(),
            next_token: 0,
            out: VecDeque::new(),
        }
    }

    /// New calls go to the least-loaded node once this one hosts `threshold` calls.
    pub fn with_placement(mut self, threshold: Option<u64>) -> Self {
        self.placement = Placement::new(threshold);
        self
    }

    /// The other live nodes and the calls each hosts (from the registry, every heartbeat).
    pub fn node_loads(&mut self, nodes: impl IntoIterator<Item = (String, u64)>) {
        let me = self.me.clone();
        self.placement
            .loads(nodes.into_iter().filter(|(n, _)| *n != me));
    }

    /// Relay connections open here (users of other nodes served by this one).
    pub fn relay_connections(&self) -> usize {
        self.relays.len()
    }

    pub fn model(&self) -> &CallModel {
        &self.model
    }

    pub fn model_mut(&mut self) -> &mut CallModel {
        &mut self.model
    }

    pub fn poll_output(&mut self) -> Option<NodeOut> {
        self.pump();
        self.out.pop_front()
    }

    /// A verified login on local socket `conn`.
    pub fn login(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: RequestId,
        user: &str,
        ice: Vec<Value>,
    ) {
        let before = self.model.user_of(conn);
        self.model.login_with(now, conn, id, user.to_string(), ice);
        if !self.cluster || before.is_some() || self.model.user_of(conn).as_deref() != Some(user) {
            return;
        }
        self.publishing.insert(conn, Vec::new());
        self.users.insert(conn, user.to_string());
        self.out.push_back(NodeOut::Relay(RelayOut::Arrived {
            user: user.to_string(),
            conn,
        }));
    }

    /// The shell's answer to [`RelayOut::Arrived`]: the nodes that served `user` before (their
    /// previous edge, the host of their call or invite). Each attaches them here.
    pub fn attach_elsewhere(&mut self, conn: ConnId, user: &str, nodes: &[String]) {
        self.pump();
        if let Some(held) = self.publishing.remove(&conn) {
            self.out.extend(held.into_iter().map(NodeOut::Model));
        }
        let mut seen = HashSet::new();
        for node in nodes {
            if *node == self.me || !seen.insert(node.clone()) {
                continue;
            }
            self.send(
                node,
                Envelope::Attach {
                    edge: self.me.clone(),
                    conn: conn.0,
                    user: user.to_string(),
                },
            );
        }
    }

    /// A request from local socket `conn` (not `login`).
    pub fn request(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: RequestId,
        method: Method,
        params: Value,
    ) {
        if !self.cluster {
            return self.model.request(now, conn, id, method, params);
        }
        let host = params["call_id"]
            .as_str()
            .and_then(host_of)
            .map(str::to_string);
        match host {
            Some(host) if host != self.me => {
                if !self.users.contains_key(&conn) {
                    // Not logged in: the model says so.
                    return self.model.request(now, conn, id, method, params);
                }
                if let Some(call) = params["call_id"].as_str() {
                    self.remote_calls
                        .entry(conn)
                        .or_default()
                        .insert(call.to_string());
                }
                self.forward(&host, conn, id, method, params);
            }
            _ => {
                if method == Method::Logout {
                    self.leave_remote(conn, Some(Method::Logout));
                }
                if method == Method::Call
                    && let Some(node) = self.place(conn)
                {
                    return self.forward(&node, conn, id, method, params);
                }
                if matches!(method, Method::Call | Method::Invite) {
                    return self.hold(conn, id, method, params);
                }
                self.model.request(now, conn, id, method, params);
                if method == Method::Logout
                    && let Some(user) = self.users.get(&conn).cloned()
                {
                    self.out
                        .push_back(NodeOut::Relay(RelayOut::Departed { user, conn }));
                }
            }
        }
    }

    /// Local socket `conn` closed.
    pub fn disconnect(&mut self, now: Instant, conn: ConnId) {
        if !self.cluster {
            return self.model.disconnect(now, conn);
        }
        self.leave_remote(conn, None);
        self.model.disconnect(now, conn);
        if let Some(user) = self.users.remove(&conn) {
            self.out
                .push_back(NodeOut::Relay(RelayOut::Departed { user, conn }));
        }
        self.remote_calls.remove(&conn);
        self.publishing.remove(&conn);
    }

    /// The shell's answer to [`RelayOut::Locate`]: each user's (node, socket), if online.
    pub fn located(&mut self, now: Instant, token: u64, found: &[(String, Option<(String, u64)>)]) {
        let Some(h) = self.held.remove(&token) else {
            return;
        };
        for (user, at) in found {
            if let Some((node, conn)) = at
                && *node != self.me
            {
                let relay = self.relay_conn(node, *conn);
                self.model.attach(now, relay, user);
            }
        }
        self.model.request(now, h.conn, h.id, h.method, h.params);
    }

    /// An envelope from another node's inbox.
    pub fn envelope(&mut self, now: Instant, env: Envelope) {
        match env {
            Envelope::Request {
                edge,
                conn,
                user,
                id,
                method,
                params,
            } => {
                let relay = self.relay_conn(&edge, conn);
                if self.model.user_of(relay).as_deref() != Some(user.as_str()) {
                    self.model.attach(now, relay, &user);
                }
                if let Ok(m) = method.parse::<Method>() {
                    if matches!(m, Method::Call | Method::Invite) {
                        // Callees and invitees are found wherever they are, as for a local
                        // caller (a call placed here, an invite from a remote member).
                        return self.hold(relay, id, m, params);
                    }
                    self.model.request(now, relay, id, m, params);
                } else {
                    // A newer edge's method: say so, as to any client.
                    let frame = json!({"jsonrpc": "2.0", "id": id, "error":
                        {"code": -32601, "message": format!("unknown method {method}")}})
                    .to_string();
                    self.send(&edge, Envelope::Deliver { conn, frame });
                }
            }
            Envelope::Deliver { conn, frame } => {
                let conn = ConnId(conn);
                self.track(conn, &frame);
                self.out
                    .push_back(NodeOut::Relay(RelayOut::Deliver { conn, frame }));
            }
            Envelope::Close { conn, code, .. } => {
                self.out.push_back(NodeOut::Relay(RelayOut::Close {
                    conn: ConnId(conn),
                    code,
                }));
            }
            Envelope::Attach { edge, conn, user } => {
                let relay = self.relay_conn(&edge, conn);
                self.model.attach(now, relay, &user);
                // A local socket of that user here is replaced: the model closed it.
            }
            Envelope::Detach { edge, conn } => {
                // That socket is gone for good: a reconnect comes on a new one (`Attach`).
                if let Some(relay) = self.relays.remove(&(edge, conn)) {
                    self.back.remove(&relay);
                    self.model.disconnect(now, relay);
                }
            }
        }
    }

    // ---- internals ----

    /// Where a new call of local socket `conn` goes, if not here: never for a user already in
    /// a call (this node's model applies its rules to them).
    fn place(&mut self, conn: ConnId) -> Option<String> {
        let user = self.users.get(&conn)?;
        if self.model.in_call(user) || self.remote_calls.get(&conn).is_some_and(|c| !c.is_empty()) {
            return None;
        }
        self.placement.choose(self.model.calls_active() as u64)
    }

    /// Hands a request of local socket `conn` to `node` (the host of its call, or the node a
    /// new call is placed on).
    fn forward(&mut self, node: &str, conn: ConnId, id: RequestId, method: Method, params: Value) {
        let user = self.users.get(&conn).cloned().unwrap_or_default();
        self.send(
            node,
            Envelope::Request {
                edge: self.me.clone(),
                conn: conn.0,
                user,
                id,
                method: <&str>::from(method).to_string(),
                params,
            },
        );
    }

    fn hold(&mut self, conn: ConnId, id: RequestId, method: Method, params: Value) {
        self.next_token += 1;
        let token = self.next_token;
        let users = params["to"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        self.held.insert(
            token,
            Held {
                conn,
                id,
                method,
                params,
            },
        );
        self.out
            .push_back(NodeOut::Relay(RelayOut::Locate { token, users }));
    }

    /// The relay connection here for socket `conn` at `edge`.
    fn relay_conn(&mut self, edge: &str, conn: u64) -> ConnId {
        if let Some(c) = self.relays.get(&(edge.to_string(), conn)) {
            return *c;
        }
        self.next_relay += 1;
        let c = ConnId(RELAY_CONN_BASE + self.next_relay);
        self.relays.insert((edge.to_string(), conn), c);
        self.back.insert(c, (edge.to_string(), conn));
        c
    }

    fn send(&mut self, node: &str, envelope: Envelope) {
        self.out.push_back(NodeOut::Relay(RelayOut::Send {
            node: node.to_string(),
            envelope,
        }));
    }

    /// Moves the model's outputs out, turning those for relay connections into envelopes.
    fn pump(&mut self) {
        while let Some(o) = self.model.poll_output() {
            let relay = match &o {
                Output::Send { conn, .. } | Output::Close { conn, .. } => {
                    self.back.get(conn).cloned()
                }
                _ => None,
            };
            let Some((edge, edge_conn)) = relay else {
                let held = match &o {
                    Output::Send { conn, .. } | Output::Close { conn, .. } => {
                        self.publishing.get_mut(conn)
                    }
                    _ => None,
                };
                match held {
                    Some(h) => h.push(o),
                    None => self.out.push_back(NodeOut::Model(o)),
                }
                continue;
            };
            let env = match o {
                Output::Send {
                    msg: Outbound::Response { ref id, .. },
                    ..
                } if *id == json!(QUIET) => continue,
                Output::Send { msg, .. } => Envelope::Deliver {
                    conn: edge_conn,
                    frame: msg.to_frame(),
                },
                Output::Close { conn, code, reason } => {
                    // The model is done with this connection (replaced): so is the Relay.
                    self.back.remove(&conn);
                    self.relays.remove(&(edge.clone(), edge_conn));
                    Envelope::Close {
                        conn: edge_conn,
                        code,
                        reason: reason.to_string(),
                    }
                }
                _ => continue,
            };
            self.send(&edge, env);
        }
    }
}
