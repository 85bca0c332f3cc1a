//! The Pair: the call model and the media core driven together on the in-memory network, as
//! the server's driver and workers do, with no sockets and a virtual clock. Clients log in,
//! call, accept, offer and answer through JSON-RPC requests; the model's media commands go to
//! the core and the core's events come back to the model, which words them as notifications.

use std::collections::HashMap;

use serde_json::{Value, json};
use sfu::media::{Command, MediaEvent};
use sfu::protocol::{Method, Outbound};
use sfu::signaling::{CallModel, ConnId, ModelConfig, Output};
use str0m::media::MediaKind;

use crate::netsim::{Client, World};

/// The signaling side of a Pair.
pub struct Signaling {
    pub model: CallModel,
    conn_of: HashMap<String, ConnId>,
    next_id: u64,
    /// Responses by (conn, request id).
    pub responses: HashMap<(ConnId, u64), Result<Value, i64>>,
    /// Notifications each user received: (method, params).
    pub inbox: HashMap<String, Vec<(String, Value)>>,
    /// Media commands the model issued, in order (for assertions).
    pub commands: Vec<Command>,
}

/// Hands a core event to the model (the driver's job).
pub fn to_model(w: &mut World, ev: MediaEvent) {
    if let Some(s) = w.model.as_mut() {
        s.model.media_event(ev);
    }
}

/// Carries out the model's outputs; returns whether there were any.
pub fn settle(w: &mut World) -> bool {
    let mut any = false;
    loop {
        let Some(out) = w.model.as_mut().and_then(|s| s.model.poll_output()) else {
            return any;
        };
        any = true;
        match out {
            Output::Send { conn, msg } => {
                let Some(user) = w.model.as_ref().and_then(|s| {
                    s.conn_of
                        .iter()
                        .find(|(_, c)| **c == conn)
                        .map(|(u, _)| u.clone())
                }) else {
                    continue;
                };
                let frame: Value = serde_json::from_str(&msg.to_frame()).unwrap();
                match msg {
                    Outbound::Response { id, result, .. } => {
                        let id = id.as_u64().unwrap();
                        if let Ok(v) = &result
                            && let Some(sdp) = v.get("sdp").and_then(Value::as_str)
                        {
                            w.answered(id, Some(sdp.to_string()));
                        }
                        let r = result.map_err(|e| i64::from(e.code));
                        if let Some(s) = w.model.as_mut() {
                            s.responses.insert((conn, id), r);
                        }
                    }
                    Outbound::Notify(_) => {
                        let method = frame["method"].as_str().unwrap().to_string();
                        let params = frame["params"].clone();
                        if method == "offer" {
                            let i = w.index_of(&user);
                            let answer = w.client_answers(i, params["sdp"].as_str().unwrap());
                            let call_id = params["call_id"].clone();
                            w.send_request(
                                i,
                                Method::Answer,
                                json!({"call_id": call_id, "sdp": answer}),
                            );
                        }
                        if let Some(s) = w.model.as_mut() {
                            s.inbox.entry(user).or_default().push((method, params));
                        }
                    }
                }
            }
            Output::Media(cmd) => {
                if let Some(s) = w.model.as_mut() {
                    s.commands.push(cmd.clone());
                }
                w.server.handle_command(w.now, cmd);
            }
            Output::Close { .. }
            | Output::Push(_)
            | Output::Event(_)
            | Output::Claim { .. }
            | Output::Release { .. } => {}
        }
    }
}

impl World {
    /// A world whose media core is driven by a call model.
    pub fn with_model() -> Self {
        let mut w = World::new();
        w.model = Some(Signaling {
            model: CallModel::new(ModelConfig {
                instance: "t".into(),
                ..ModelConfig::default()
            }),
            conn_of: HashMap::new(),
            next_id: 0,
            responses: HashMap::new(),
            inbox: HashMap::new(),
            commands: Vec::new(),
        });
        w
    }

    fn signaling(&mut self) -> &mut Signaling {
        self.model.as_mut().expect("a Pair world")
    }

    pub fn index_of(&self, user: &str) -> usize {
        self.clients
            .iter()
            .position(|c| c.name == user)
            .expect("a known client")
    }

    /// A client logs in (on a new socket, as after a reconnect); returns its index.
    pub fn login(&mut self, name: &str) -> usize {
        let i = match self.clients.iter().position(|c| c.name == name) {
            Some(i) => i,
            None => {
                let index = self.clients.len() as u8;
                self.clients.push(Client::new(index, name, self.now));
                self.clients.len() - 1
            }
        };
        let s = self.signaling();
        s.next_id += 1;
        let conn = ConnId(s.next_id);
        s.conn_of.insert(name.to_string(), conn);
        let (now, id) = (self.now, json!(self.signaling().next_id));
        self.signaling()
            .model
            .login(now, conn, id, name.to_string());
        self.drain_server();
        i
    }

    /// A request from client `i`; returns its response once the model (and, for SDP, the
    /// core) answered it.
    pub fn request(&mut self, i: usize, method: Method, params: Value) -> Result<Value, i64> {
        let id = self.send_request(i, method, params);
        let name = self.clients[i].name.clone();
        let conn = self.signaling().conn_of[&name];
        self.signaling()
            .responses
            .remove(&(conn, id))
            .expect("a response")
    }

    pub fn send_request(&mut self, i: usize, method: Method, params: Value) -> u64 {
        let name = self.clients[i].name.clone();
        let now = self.now;
        let s = self.signaling();
        s.next_id += 1;
        let id = s.next_id;
        let conn = s.conn_of[&name];
        s.model.request(now, conn, json!(id), method, params);
        self.drain_server();
        id
    }

    /// Client `i` offers to publish `media` in `call_id` through the model.
    pub fn offer_via_model(
        &mut self,
        i: usize,
        call_id: &str,
        media: &[MediaKind],
    ) -> Result<Value, i64> {
        let (offer, pending) = self.client_offers(i, media);
        // The request id is the ticket the client's answer is matched with.
        let next = self.signaling().next_id + 1;
        self.clients[i].pending = Some((next, pending));
        self.request(i, Method::Offer, json!({"call_id": call_id, "sdp": offer}))
    }

    /// Notifications `user` received with this method.
    pub fn inbox(&self, user: &str, method: &str) -> Vec<Value> {
        self.model
            .as_ref()
            .and_then(|s| s.inbox.get(user))
            .map(|v| {
                v.iter()
                    .filter(|(m, _)| m == method)
                    .map(|(_, p)| p.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}
