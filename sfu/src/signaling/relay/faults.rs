//! When the cluster fails a node: Redis away (a held request or a relayed one is answered 5000,
//! everything is published again once Redis is back) or a node lost (its users here are
//! disconnected; local users in calls it hosted hear `call_end` with `error`). An edge keeps, per
//! local socket, the calls hosted elsewhere its user is in, to know which calls a lost host ends.

use std::collections::HashSet;
use std::time::Instant;

use serde_json::{Value, json};

use super::{Envelope, NodeOut, QUIET, Relay, RelayOut, host_of};
use crate::protocol::{Method, RequestId};
use crate::signaling::ConnId;

impl Relay {
    /// Users could not be located (the cluster store is unreachable): the held request fails.
    pub fn locate_failed(&mut self, token: u64) {
        if let Some(h) = self.held.remove(&token) {
            self.fail(
                h.conn,
                h.id,
                "the cluster directory is unreachable: try again",
            );
        }
    }

    /// An envelope could not be sent (the cluster store is unreachable). A request of a local
    /// socket is answered 5000; anything else is dropped (the receiver's liveness decides).
    pub fn send_failed(&mut self, env: &Envelope) {
        if let Envelope::Request { edge, conn, id, .. } = env
            && *edge == self.me
            && *id != json!(QUIET)
        {
            self.fail(
                ConnId(*conn),
                id.clone(),
                "the call's node cannot be reached: try again",
            );
        }
    }

    /// The cluster store came back (perhaps empty, after a restart): publish again where every
    /// local user is, and claim again every member of the calls hosted here.
    pub fn resync(&mut self) {
        if !self.cluster {
            return;
        }
        for (conn, user) in &self.users {
            self.out.push_back(NodeOut::Relay(RelayOut::Arrived {
                user: user.clone(),
                conn: *conn,
            }));
        }
        self.model.reclaim_all();
    }

    fn fail(&mut self, conn: ConnId, id: RequestId, why: &str) {
        let frame = json!({"jsonrpc": "2.0", "id": id, "error":
            {"code": crate::protocol::codes::INTERNAL, "message": why}})
        .to_string();
        match self.back.get(&conn).cloned() {
            // A relayed request: its answer goes back to the user's edge.
            Some((edge, conn)) => self.send(&edge, Envelope::Deliver { conn, frame }),
            None => self
                .out
                .push_back(NodeOut::Relay(RelayOut::Deliver { conn, frame })),
        }
    }

    /// Node `node` is dead: users served here for it are disconnected (their grace starts),
    /// and local users in calls it hosted are told those calls ended in `error`.
    pub fn node_dead(&mut self, now: Instant, node: &str) {
        self.placement.forget(node);
        let gone: Vec<((String, u64), ConnId)> = self
            .relays
            .iter()
            .filter(|((edge, _), _)| edge == node)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (key, relay) in gone {
            self.model.disconnect(now, relay);
            self.relays.remove(&key);
            self.back.remove(&relay);
        }
        for (conn, calls) in self.remote_calls.iter_mut() {
            let ended: Vec<String> = calls
                .iter()
                .filter(|c| host_of(c) == Some(node))
                .cloned()
                .collect();
            for call_id in ended {
                calls.remove(&call_id);
                let frame = json!({"jsonrpc": "2.0", "method": "call_end",
                    "params": {"call_id": call_id, "reason": "error"}})
                .to_string();
                self.out
                    .push_back(NodeOut::Relay(RelayOut::Deliver { conn: *conn, frame }));
            }
        }
    }

    /// Tells the hosts of `conn`'s remote calls that it is gone (`None`) or logged out.
    pub(super) fn leave_remote(&mut self, conn: ConnId, logout: Option<Method>) {
        let Some(calls) = self.remote_calls.get(&conn) else {
            return;
        };
        let user = self.users.get(&conn).cloned().unwrap_or_default();
        let hosts: HashSet<String> = calls
            .iter()
            .filter_map(|c| host_of(c).map(str::to_string))
            .collect();
        for host in hosts {
            let env = match logout {
                Some(m) => Envelope::Request {
                    edge: self.me.clone(),
                    conn: conn.0,
                    user: user.clone(),
                    id: json!(QUIET),
                    method: <&str>::from(m).to_string(),
                    params: json!({}),
                },
                None => Envelope::Detach {
                    edge: self.me.clone(),
                    conn: conn.0,
                },
            };
            self.send(&host, env);
        }
        if logout.is_some() {
            self.remote_calls.remove(&conn);
        }
    }

    /// Keeps an edge's list of its users' remote calls up to date from what hosts send.
    pub(super) fn track(&mut self, conn: ConnId, frame: &str) {
        let Ok(v) = serde_json::from_str::<Value>(frame) else {
            return;
        };
        // A call placed on another node: its id comes in the response to `call`.
        if let Some(call) = v["result"]["call_id"].as_str() {
            self.remote_calls
                .entry(conn)
                .or_default()
                .insert(call.to_string());
            return;
        }
        let Some(call) = v["params"]["call_id"].as_str() else {
            return;
        };
        match v["method"].as_str() {
            Some("call_end" | "cancelled") => {
                if let Some(c) = self.remote_calls.get_mut(&conn) {
                    c.remove(call);
                }
            }
            Some(_) => {
                self.remote_calls
                    .entry(conn)
                    .or_default()
                    .insert(call.to_string());
            }
            None => {}
        }
    }
}
