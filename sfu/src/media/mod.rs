//! Media: the sans-IO forwarding core of a Worker, one noun per file.
//!
//! | file | noun |
//! | --- | --- |
//! | [`worker`] | `MediaCore`: the Peers, Rooms and Router of one Worker; inputs and events |
//! | [`command`] / [`event`] | what goes in (one `Command` enum) and what comes out (`MediaEvent`) |
//! | [`router`] | datagram → Peer |
//! | [`peer`] | one member's str0m `Rtc`; every mutation followed by a drain |
//! | [`room`] | a call's members and its publisher → subscriptions index |
//! | [`track`] | a published stream: counters, jitter, availability, level |
//! | [`subscription`] | one forwarded copy: negotiation state, PT map, munger |
//! | [`seq`] | the sequence/timestamp munger |
//! | [`simulcast`] | a track's simulcast layers, and the layer one subscription is forwarded |
//! | [`vp8`] | VP8 picture-id continuity across layer switches |
//! | [`keyframe`] | merged keyframe requests per publisher track |
//! | [`quality`] | E-model samples of a member's up and down legs |
//! | [`level`] | the audio level of publishers without the audio-level extension |
//!
//! The worker threads that own sockets live in `server::worker`; nothing here imports the wire
//! protocol.

pub mod command;
pub mod downlink;
pub mod event;
pub mod keyframe;
pub mod level;
pub mod peer;
pub mod quality;
pub mod room;
pub mod router;
pub mod seq;
pub mod simulcast;
pub mod subscription;
pub mod tick;
pub mod track;
pub mod vp8;
pub mod worker;

pub use command::{Command, MemberMedia, Ticket};
pub use event::{Failure, Leg, MediaError, MediaEvent, QualityReport};
pub use peer::Transport;
pub use worker::{DEFAULT_TICK, MediaConfig, MediaCore, MediaCounters, MediaLimits};
