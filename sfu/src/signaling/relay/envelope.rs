//! What cluster nodes say to each other (envelopes, as JSON in Redis inboxes) and what a
//! node's Relay asks of its shell.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::signaling::{ConnId, Output};

/// A message from one node to another (a JSON entry of the receiver's inbox).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Envelope {
    /// A request of `user` (socket `conn` at `edge`) on a call the receiver hosts.
    Request {
        edge: String,
        conn: u64,
        user: String,
        id: Value,
        method: String,
        params: Value,
    },
    /// A frame for socket `conn` at the receiver.
    Deliver { conn: u64, frame: String },
    /// Close socket `conn` at the receiver.
    Close {
        conn: u64,
        code: u16,
        reason: String,
    },
    /// `user` is now at socket `conn` of `edge`: serve them there (takeover and replay).
    Attach {
        edge: String,
        conn: u64,
        user: String,
    },
    /// The socket `conn` at `edge` is gone (its user may come back within the grace period).
    Detach { edge: String, conn: u64 },
}

/// What the Relay asks of the shell, besides its model's outputs.
#[derive(Clone, Debug, PartialEq)]
pub enum RelayOut {
    /// Put `envelope` in `node`'s inbox.
    Send { node: String, envelope: Envelope },
    /// A frame for a local socket, written by a host.
    Deliver { conn: ConnId, frame: String },
    /// Close a local socket (`code` 4000: its session was replaced elsewhere).
    Close { conn: ConnId, code: u16 },
    /// Where are these users? Answer with [`Relay::located`].
    Locate { token: u64, users: Vec<String> },
    /// `user` logged in here on `conn`: publish it, then answer with [`Relay::attach_elsewhere`]
    /// naming their previous node and the host of their call or invite.
    Arrived { user: String, conn: ConnId },
    /// `user` left `conn` here (logout, or their socket closed).
    Departed { user: String, conn: ConnId },
}

/// An output of a cluster node: its model's, or the Relay's.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeOut {
    Model(Output),
    Relay(RelayOut),
}
