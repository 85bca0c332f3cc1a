//! The cluster's shared state, in Redis, behind [`Store`] (the shell's cluster tasks,
//! `server/cluster.rs`, are its only users). What lives there, each entry owned by one node
//! and dead with it:
//!
//! - the node registry: `sfu:node:{id}` (a hash: signaling and media addresses, load),
//!   expiring [`NODE_TTL`] after the node's last heartbeat, and the set `sfu:nodes`; and
//!   `sfu:epoch`, whose absence tells that Redis lost everything (nodes then re-register and
//!   nobody is declared dead for one [`NODE_TTL`]);
//! - presence: `sfu:user:{user}` = `node|session`, valid while that node is alive;
//! - busy claims: `sfu:busy:{user}` = `call|host`, taken for every member of a call at once by a
//!   Lua script (all or none: two nodes racing for the same callee cannot both win), and free
//!   again when released or when the host node is dead;
//! - the live-call directory: `sfu:calls:{node}`, a hash of each node's calls (host, media,
//!   members and their states), written by [`CallDirectoryWriter`];
//! - per-node inboxes for cross-node messages: a Redis Stream `sfu:inbox:{node}` each,
//!   capped at [`INBOX_MAX`] entries. Streams rather than pub/sub: a reader that lost its
//!   connection for a moment resumes after the last entry it saw instead of losing what was
//!   published meanwhile, and the cap bounds what a dead reader leaves behind.
//!
//! Invariant: every operation of [`Store`] has a 3-s deadline; Redis being away costs an
//! error, never a hang, and the connection comes back by itself.

use std::time::Duration;

mod directory;
mod store;

pub use directory::CallDirectoryWriter;
pub use store::{Claim, Inbox, NodeInfo, Presence, Store, StoreError};

/// A node missing heartbeats this long is dead (with [`HEARTBEAT`], others know within 8 s).
pub const NODE_TTL: Duration = Duration::from_secs(6);
/// How often a node refreshes its entry and looks at the others.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// Entries kept in a node's inbox.
pub const INBOX_MAX: usize = 10_000;
