//! Media: the sans-IO forwarding core of a Worker ([`core`]) and its RTP rewriting
//! ([`forward`]). The worker threads that own sockets live in `server::worker`.

pub mod core;
pub mod forward;
pub mod level;

pub use self::core::{Audience, MediaConfig, MediaCore, MediaCounters, MediaError, MediaOutput};
