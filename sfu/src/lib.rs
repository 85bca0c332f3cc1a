//! `sfu`: a WebRTC SFU with the call model of TRTCCalling and the Telnyx SDK.
//!
//! The sans-IO core ([`signaling`]) holds the call rules; the shell ([`server`]) moves
//! WebSocket frames, timers and webhooks in and out of it. See `docs/architecture.md`.

pub mod auth;
pub mod cluster;
pub mod config;
pub mod directory;
pub mod ice_tcp;
pub mod limits;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod protocol;
pub mod records;
pub mod server;
pub mod signaling;
pub mod turn;
pub mod udp;
