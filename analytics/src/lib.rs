//! Call-quality math and state, pure: no I/O, no async, no clock of its own (time is always an
//! argument). Implements DESIGN.md "Call-quality model":
//!
//! - [`mos`]: the E-model: one-way delay, impairments, R, MOS and quality levels;
//! - [`loss`]: per-window loss from cumulative counters;
//! - [`jitter`]: RFC 3550 interarrival jitter;
//! - [`volume`]: speaking volume 0..100 per interval from RFC 6464 audio levels;
//! - [`availability`]: whether a published track is available, with hysteresis.

pub mod availability;
pub mod jitter;
pub mod loss;
pub mod mos;
pub mod volume;

pub use availability::{Availability, AvailabilityConfig};
pub use jitter::Jitter;
pub use loss::WindowLoss;
pub use mos::{Conditions, Level, Sample};
pub use volume::{VolumeAggregator, VolumeReport};
