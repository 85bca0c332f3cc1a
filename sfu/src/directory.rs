//! The session registry and the call directory: shared maps (dashmap) the shell reads from any
//! task. The directory sits behind a trait so it can move to a shared store (DESIGN.md "Where a
//! user outgrows one machine").

use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use crate::protocol::{Media, Outbound};
use crate::signaling::ConnId;

/// What the call model sends to a session's socket task.
#[derive(Debug)]
pub enum ToSocket {
    Frame(Outbound),
    /// A frame already written, by the node hosting the call (a cluster relay).
    Text(String),
    Close {
        code: u16,
        reason: &'static str,
    },
}

/// How to reach one connected session.
#[derive(Clone)]
pub struct SessionHandle {
    pub tx: mpsc::Sender<ToSocket>,
    /// Woken when the session cannot keep up and must be closed.
    pub kill: Arc<Notify>,
}

/// Connected sessions by connection.
pub type Sessions = DashMap<ConnId, SessionHandle>;

/// A live call as the rest of the server sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct CallEntry {
    pub group: bool,
    pub media: Media,
    /// Index of the media Worker hosting the call.
    pub worker: usize,
    pub started: Instant,
}

/// A live call as `GET /api/calls/live` lists it: where it is hosted and each member's state.
/// In a cluster every node publishes its calls to Redis (`sfu:calls:{node}`) every heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveCall {
    pub call_id: String,
    /// The hosting node's instance id (empty on a standalone node).
    pub host: String,
    pub group: bool,
    pub media: Media,
    /// Unix time in ms.
    pub started_at: u64,
    pub members: Vec<LiveMember>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveMember {
    pub user: String,
    /// `invited` (offline, waiting to log in), `ringing` or `joined`.
    pub state: String,
}

/// Where calls live. One node today; a shared store later.
pub trait CallDirectory: Send + Sync {
    fn insert(&self, call_id: &str, entry: CallEntry);
    fn remove(&self, call_id: &str) -> Option<CallEntry>;
    fn get(&self, call_id: &str) -> Option<CallEntry>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The in-process directory.
#[derive(Default)]
pub struct LocalDirectory {
    calls: DashMap<String, CallEntry>,
}

impl CallDirectory for LocalDirectory {
    fn insert(&self, call_id: &str, entry: CallEntry) {
        self.calls.insert(call_id.to_string(), entry);
    }
    fn remove(&self, call_id: &str) -> Option<CallEntry> {
        self.calls.remove(call_id).map(|(_, e)| e)
    }
    fn get(&self, call_id: &str) -> Option<CallEntry> {
        self.calls.get(call_id).map(|e| e.clone())
    }
    fn len(&self) -> usize {
        self.calls.len()
    }
}
