//! What the call model asks of the media core: one [`Command`] enum, carried to the Worker
//! hosting the call. Mute and hold travel as the member's whole [`MemberMedia`] state, never as
//! deltas, so every Peer the core creates starts from the call model's truth.

/// Which request a reply answers; opaque to the media core, chosen by the call model.
pub type Ticket = u64;

/// Mute and hold of one member, as the call model (their one owner) says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberMedia {
    pub audio_muted: bool,
    pub video_muted: bool,
    pub held: bool,
}

impl MemberMedia {
    #[inline]
    pub fn muted(&self, kind: str0m::media::MediaKind) -> bool {
        match kind {
            str0m::media::MediaKind::Audio => self.audio_muted,
            str0m::media::MediaKind::Video => self.video_muted,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// A member's SDP offer: a new Peer for them (replacing any earlier one, as after a
    /// reconnect). Answered by [`crate::media::MediaEvent::Reply`] with the answer SDP.
    Offer {
        call_id: String,
        user: String,
        sdp: String,
        /// Whether the call carries video (audio calls forward audio only).
        video: bool,
        state: MemberMedia,
        ticket: Ticket,
    },
    /// A member's answer to our offer; replied to with no SDP.
    Answer {
        call_id: String,
        user: String,
        sdp: String,
        ticket: Ticket,
    },
    /// A trickled remote candidate.
    Candidate {
        call_id: String,
        user: String,
        candidate: String,
    },
    /// The member's mute/hold state changed.
    SetState {
        call_id: String,
        user: String,
        state: MemberMedia,
    },
    /// Which of `publisher`'s video the member wants (TRTC startRemoteView's big or small
    /// stream, or stopRemoteView); kept for the call, across the member's reconnects.
    Subscribe {
        call_id: String,
        user: String,
        publisher: String,
        video: crate::media::simulcast::VideoChoice,
    },
    /// The member left: close their Peer.
    Leave { call_id: String, user: String },
    /// The call ended: close all its Peers.
    EndCall { call_id: String },
}

impl Command {
    pub fn call_id(&self) -> &str {
        match self {
            Command::Offer { call_id, .. }
            | Command::Answer { call_id, .. }
            | Command::Candidate { call_id, .. }
            | Command::SetState { call_id, .. }
            | Command::Subscribe { call_id, .. }
            | Command::Leave { call_id, .. }
            | Command::EndCall { call_id } => call_id,
        }
    }

    /// The ticket of a command that expects a reply.
    pub fn ticket(&self) -> Option<Ticket> {
        match self {
            Command::Offer { ticket, .. } | Command::Answer { ticket, .. } => Some(*ticket),
            _ => None,
        }
    }
}
