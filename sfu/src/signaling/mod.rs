//! Signaling: the sans-IO call model (Sessions, Calls, Members) and its request params.

pub mod call;
pub mod model;
pub mod params;
pub mod relay;
pub mod timers;

pub use call::MemberState;
pub use model::{CallEvent, CallModel, ConnId, ModelConfig, Output, PushNotice};
