//! What the media core tells the shell and the call model: one [`MediaEvent`] enum. Plain data
//! with no wire format: the driver turns these into protocol notifications.

use std::net::SocketAddr;

use str0m::media::MediaKind;
use str0m::net::DatagramSend;

use super::command::Ticket;

/// Which way a quality sample measures: member to server, or server to member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leg {
    Up,
    Down,
}

/// One E-model sample of a member's leg over a quality window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QualityReport {
    pub mos: f64,
    pub level: analytics::Level,
    pub rtt_ms: f64,
    pub jitter_ms: f64,
    pub loss: f64,
}

/// The stage at which a Peer failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// ICE did not connect within the connect timeout.
    Ice,
    /// ICE connected but DTLS/SRTP did not complete in time.
    Dtls,
    /// str0m reported an error or panicked on this Peer.
    Rtc,
}

impl Failure {
    /// The `stage` label and the `reason` of `media_failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Ice => "ice",
            Failure::Dtls => "dtls",
            Failure::Rtc => "rtc",
        }
    }
}

/// Why a media request failed; maps to a JSON-RPC error in the shell.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    #[error("invalid SDP: {0}")]
    BadSdp(String),
    #[error("no offer of ours is waiting for an answer")]
    NoPendingOffer,
    #[error("no media session for this member: send an offer first")]
    NoPeer,
}

#[derive(Debug)]
pub enum MediaEvent {
    /// Send `contents` to `destination` from the worker's socket (`Udp`) or over the ICE-TCP
    /// connection from that address (`Tcp`).
    Transmit {
        proto: str0m::net::Protocol,
        destination: SocketAddr,
        contents: DatagramSend,
    },
    /// The reply to an `Offer` (with the answer SDP) or an `Answer` command (without).
    /// Invariant: a member's reply to their offer comes before any offer of ours to them.
    Reply {
        ticket: Ticket,
        result: Result<Option<String>, MediaError>,
    },
    /// Our own offer for `user` (renegotiation: tracks added or removed).
    Offer {
        call_id: String,
        user: String,
        sdp: String,
    },
    /// Speaking volumes of a call's audible members (0..100), and of all together.
    Volume {
        call_id: String,
        volumes: Vec<(String, u8)>,
        total: u8,
    },
    /// A quality sample of `user`'s leg.
    Quality {
        call_id: String,
        user: String,
        leg: Leg,
        report: QualityReport,
    },
    /// `user`'s audio or video became available or unavailable (for the others).
    Available {
        call_id: String,
        user: String,
        kind: MediaKind,
        available: bool,
    },
    /// `user`'s Peer failed and is gone; they may offer again.
    Failed {
        call_id: String,
        user: String,
        failure: Failure,
    },
    /// `user`'s session holds [`super::worker::COMPACT_AFTER`] stopped m-lines (str0m never
    /// recycles them in our offers): a new offer from the member starts a session with only
    /// the tracks alive now. Sent once per Peer; forwarding goes on meanwhile.
    Reoffer { call_id: String, user: String },
    /// `user`'s downlink cannot carry even the lowest layer of `publisher`'s video: it is
    /// paused for them (`paused: false` when it comes back).
    VideoPaused {
        call_id: String,
        user: String,
        publisher: String,
        paused: bool,
    },
}
