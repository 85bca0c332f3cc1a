//! A Peer: one member's str0m `Rtc` (RTP mode, ICE-lite) with what the server knows of it:
//! the member's mute/hold state, the Tracks they publish and the Subscriptions they receive.
//!
//! Invariant: every mutation of the `Rtc` is followed by draining `poll_output` until it
//! returns `Timeout` (str0m's single-mutation rule). The `Rtc` is private to this module and
//! every method that touches it ends in [`Peer::drain`]; every str0m call is behind
//! `catch_unwind`, so a str0m panic fails this Peer, never the Worker.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::PayloadParams;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Ssrc, Vp8Descriptor};
use str0m::stats::{MediaEgressStats, MediaIngressStats};
use str0m::{Candidate, Input, Rtc};

use super::command::MemberMedia;
use super::downlink::Downlink;
use super::event::{Failure, MediaError, MediaEvent};
use super::quality::LinkQuality;
use super::router::Source;
use super::subscription::{SubId, SubState, Subscriptions};
use super::track::Track;
use crate::limits::TokenBucket;

/// Relay candidates remembered per Peer (the rest do not change how it is counted).
const MAX_RELAYS: usize = 8;

/// Index of a Peer in its worker, with a generation so stale timers and routes are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId {
    index: u32,
    generation: u32,
}

impl PeerId {
    pub fn new(index: u32, generation: u32) -> Self {
        Self { index, generation }
    }
    pub fn index(self) -> usize {
        self.index as usize
    }
    pub fn generation(self) -> u32 {
        self.generation
    }
}

/// What a Peer's str0m reported while draining, for the core to act on.
// Kept inline: boxing the packet would cost an allocation per forwarded packet.
#[allow(clippy::large_enum_variant)]
pub enum PeerEvent {
    IceConnected,
    /// ICE and DTLS are up: media can flow.
    Connected,
    IceDisconnected,
    /// The member's offer published a track.
    MediaAdded(Mid, MediaKind),
    /// A packet of the member's track `mid`, of simulcast layer `rid` if it has layers.
    Rtp(Mid, Option<Rid>, RtpPacket),
    /// The member asks for a keyframe on our `mid`.
    KeyframeRequest(Mid, KeyframeRequestKind),
    /// The estimated bandwidth toward the member changed (bit/s).
    Estimate(u64),
    Egress(MediaEgressStats),
    Ingress(MediaIngressStats),
    /// Queued by the core behind a `Connected` and the `MediaAdded`s that follow it in the
    /// same drain: the Peer's tracks are all known.
    Settled,
}

/// Where a drain puts what it finds: datagrams straight to the core's output, events for the
/// core to act on. Both queues are reused, so draining allocates nothing per packet.
pub struct Sink<'a> {
    pub out: &'a mut VecDeque<MediaEvent>,
    pub events: &'a mut VecDeque<(PeerId, PeerEvent)>,
}

/// A publisher packet on its way to subscribers.
pub struct Forward<'a> {
    pub pkt: &'a RtpPacket,
    pub params: PayloadParams,
    pub epoch: u32,
    pub ext: &'a ExtensionValues,
    /// Of a simulcast layer (chosen by the core), its VP8 payload descriptor, parsed once for
    /// every copy: its picture ids are rewritten per subscriber.
    pub vp8: Option<Vp8Descriptor>,
}

pub struct Peer {
    id: PeerId,
    rtc: Rtc,
    pub call_id: String,
    pub user: String,
    pub created: Instant,
    pub ice_connected: bool,
    pub connected: bool,
    pub ufrag: String,
    /// Whether this call carries video; in audio calls offered video is not published.
    pub video: bool,
    pub state: MemberMedia,
    /// Sources str0m accepted, with when each last sent us something.
    pub addrs: Vec<(Source, Instant)>,
    /// The member's relay candidates (TURN) they told us of, to tell a relayed path.
    pub relays: Vec<SocketAddr>,
    pub tracks: Vec<Track>,
    pub subs: Subscriptions,
    pending: Option<SdpPendingOffer>,
    /// Our offers wait until the reply to the member's own offer is out.
    pub replied: bool,
    /// When str0m asked to be woken, and whether that changed since the core last scheduled it.
    pub wake: Option<Instant>,
    pub wake_changed: bool,
    /// str0m asked for a timeout at once (`wake` is the instant it asked): packets written to
    /// it wait for one to be stamped and sent (str0m 0.25's `Reason::SendStream`). Served
    /// off the tick grid.
    pub urgent: bool,
    /// str0m paces this Peer's sending (its downlink is estimated): its deadlines are served
    /// at their instant, not on the tick grid (a pacer released in 10 ms bursts sends in
    /// bursts, and GCC's probes then measure the grid, not the link).
    pub paced: bool,
    /// Test hook: the next str0m mutation of this Peer panics (see `MediaCore::inject_panic`).
    pub inject_panic: bool,
    /// Datagrams per second this Peer may send us (`MediaLimits::packet_rate`).
    pub rate: TokenBucket,
    /// Trickled remote candidates taken so far.
    pub candidates: usize,
    /// m-lines of ours stopped in this session (they stay, at port 0), and whether a new
    /// offer was asked for because of them.
    stopped_mlines: u32,
    reoffer_asked: bool,
    pub quality: LinkQuality,
    /// Σ energy·seconds and seconds of audio in the current volume interval.
    pub volume: (f64, f64),
    /// The bandwidth estimates toward this member, the desired bitrate last told to the
    /// estimator, and when it last probed for more and how long it waits to probe again.
    pub downlink: Downlink,
    pub desired: u64,
    pub probed_at: Option<Instant>,
    pub probe_wait: Duration,
}

/// The bandwidth estimate a video call's Peer starts from, kbit/s (libwebrtc's default start).
pub const BWE_START_KBPS: u64 = 300;
/// The rate an estimated Peer is said to want until its subscriptions say (a group video
/// call's worth): what its first probes may reach.
pub const BWE_DESIRED_KBPS: u64 = 2_500;

/// How a connected Peer's media travels: what `sfu_peers_connected{transport}` counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    /// ICE-TCP to the worker's passive candidate.
    Tcp,
    /// Through the member's TURN server (a relay candidate of theirs sends to us).
    Relay,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Relay];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Relay => "relay",
        }
    }
}

/// Runs one str0m call, turning a panic into a Peer failure. Every str0m call in the media
/// core goes through here (parsers included), so a str0m bug costs one Peer, never a Worker.
#[inline(always)]
pub(crate) fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, Failure> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| Failure::Rtc)
}

impl Peer {
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// The transport of the source this Peer sent from last (its selected path, as ICE
    /// connects on the pair it checks last).
    pub fn current_transport(&self) -> Transport {
        match self.addrs.iter().max_by_key(|(_, seen)| *seen) {
            Some(((Protocol::Tcp, _), _)) => Transport::Tcp,
            Some(((_, a), _)) if self.relays.contains(a) => Transport::Relay,
            _ => Transport::Udp,
        }
    }

    /// Whether str0m takes a datagram from a source not yet known for this Peer.
    pub fn accepts(&self, input: &Input) -> bool {
        guarded(|| self.rtc.accepts(input)).unwrap_or(false)
    }

    /// One received datagram. `Ok(false)` when str0m refused it (not fatal).
    pub fn receive(&mut self, now: Instant, r: Receive, sink: &mut Sink) -> Result<bool, Failure> {
        let ok = self.mutate(now, sink, |rtc| rtc.handle_input(Input::Receive(now, r)))?;
        if let Err(e) = &ok {
            tracing::debug!(error = %e, "peer rejected a datagram");
        }
        Ok(ok.is_ok())
    }

    /// Time passed; str0m's errors here are fatal.
    pub fn tick(&mut self, now: Instant, sink: &mut Sink) -> Result<(), Failure> {
        self.mutate(now, sink, |rtc| rtc.handle_input(Input::Timeout(now)))?
            .map_err(|_| Failure::Rtc)
    }

    pub fn add_candidate(
        &mut self,
        now: Instant,
        c: Candidate,
        sink: &mut Sink,
    ) -> Result<(), Failure> {
        if c.kind() == str0m::CandidateKind::Relayed && self.relays.len() < MAX_RELAYS {
            self.relays.push(c.addr());
        }
        self.mutate(now, sink, |rtc| rtc.add_remote_candidate(c))
    }

    /// Asks the member for a keyframe on their track `mid`, addressed to the source it sends
    /// now (`ssrc`: after a source change the m-line may still hold the old one).
    pub fn request_keyframe(
        &mut self,
        now: Instant,
        mid: Mid,
        ssrc: Option<Ssrc>,
        kind: KeyframeRequestKind,
        sink: &mut Sink,
    ) -> Result<bool, Failure> {
        self.mutate(now, sink, |rtc| {
            let mut api = rtc.direct_api();
            let by_ssrc = ssrc.is_some_and(|s| match api.stream_rx(&s) {
                Some(rx) => {
                    rx.request_keyframe(kind);
                    true
                }
                None => false,
            });
            by_ssrc
                || api
                    .stream_rx_by_mid(mid, None)
                    .map(|rx| rx.request_keyframe(kind))
                    .is_some()
        })
    }

    /// Tells the bandwidth estimator the bitrate this member's subscriptions would take: its
    /// probes are capped by it, and a rise above its estimate starts one.
    pub fn set_desired(
        &mut self,
        now: Instant,
        desired: u64,
        sink: &mut Sink,
    ) -> Result<(), Failure> {
        self.desired = desired;
        self.mutate(now, sink, |rtc| {
            rtc.bwe().set_bitrate(Bitrate::ZERO, Bitrate::bps(desired));
        })
    }

    /// Restarts the bandwidth estimator from `bps`: it forgets what held it (losses long
    /// past) and probes at 3 and 6 times that.
    pub fn restart_estimate(
        &mut self,
        now: Instant,
        bps: u64,
        sink: &mut Sink,
    ) -> Result<(), Failure> {
        self.mutate(now, sink, |rtc| rtc.bwe().reset(Bitrate::bps(bps)))
    }

    /// The codec of the member's payload type `pt`.
    #[inline]
    pub fn params_of(&self, pt: u8) -> Option<PayloadParams> {
        self.rtc.codec_config().find(|p| *p.pt() == pt).copied()
    }

    /// Writes a publisher's packet on subscription `sub`, or withholds it (this member on hold,
    /// not connected yet, or the m-line not negotiated). `Ok(true)` when written.
    #[inline]
    pub fn forward(
        &mut self,
        now: Instant,
        sub: SubId,
        f: &Forward,
        sink: &mut Sink,
    ) -> Result<bool, Failure> {
        let seq_in = *f.pkt.seq_no;
        let Some(s) = self.subs.get_mut(sub) else {
            return Ok(false);
        };
        let mid = match s.open_mid() {
            Some(mid) if self.connected && !self.state.held => mid,
            _ => {
                s.withhold(seq_in, f.epoch);
                return Ok(false);
            }
        };
        let rtc = &self.rtc;
        let pt_in = *f.pkt.header.payload_type;
        let Some(pt) = s.payload_type(pt_in, || {
            rtc.codec_config().match_params(f.params).map(|p| *p.pt())
        }) else {
            s.withhold(seq_in, f.epoch);
            return Ok(false);
        };
        let Some((seq, ts)) = s.rewrite(seq_in, f.pkt.header.timestamp, f.epoch, f.pkt.timestamp)
        else {
            return Ok(false);
        };
        let video = s.kind == MediaKind::Video;
        let vp8 = f.vp8.and_then(|d| s.vp8.munge(&d, &f.pkt.payload));
        let pkt = f.pkt;
        // Built inside the guarded call: moving a finished RtpWrite (320 bytes) through the
        // closures costs more than the write's own bookkeeping.
        let written = guarded(|| match self.rtc.direct_api().stream_tx_by_mid(mid, None) {
            Some(tx) => {
                let w = RtpWrite::new(
                    pt.into(),
                    seq.into(),
                    ts,
                    pkt.timestamp,
                    pkt.payload.clone(),
                )
                .marker(pkt.header.marker)
                .ext_vals(f.ext.clone())
                .nackable(video);
                tx.write_rtp(match vp8 {
                    Some(patch) => w.vp8_patch(patch),
                    None => w,
                });
                true
            }
            None => false,
        });
        self.drain(now, sink)?;
        written
    }

    /// Sends our offer for whatever the subscriptions need, unless one is pending or the
    /// member's own offer is not answered yet. Returns the offer's SDP.
    pub fn negotiate(&mut self, now: Instant, sink: &mut Sink) -> Result<Option<String>, Failure> {
        let wanted = self
            .subs
            .iter()
            .any(|(_, s)| matches!(s.state, SubState::ToOpen | SubState::ToStop(_)));
        if !self.replied || self.pending.is_some() || !wanted {
            return Ok(None);
        }
        let subs = &mut self.subs;
        let applied = guarded(|| {
            let mut api = self.rtc.sdp_api();
            for (_, s) in subs.iter_mut() {
                match s.state {
                    SubState::ToOpen => {
                        let track = format!("{}-{}", s.source_user, kind_name(s.kind));
                        let stream = Some(s.source_user.clone());
                        let mid =
                            api.add_media(s.kind, Direction::SendOnly, stream, Some(track), None);
                        s.state = SubState::Negotiating(mid);
                    }
                    SubState::ToStop(mid) => {
                        api.stop_media(mid);
                        s.state = SubState::NegotiatingStop(mid);
                    }
                    _ => {}
                }
            }
            api.apply()
        });
        self.drain(now, sink)?;
        match applied? {
            Some((offer, pending)) => {
                self.pending = Some(pending);
                Ok(Some(offer.to_sdp_string()))
            }
            None => {
                // Nothing changed on the wire (e.g. stopping an m-line never negotiated).
                self.settle(true);
                Ok(None)
            }
        }
    }

    /// The member's answer to our pending offer. On success, returns the video tracks newly
    /// opened (each needs a keyframe from its publisher).
    pub fn accept_answer(
        &mut self,
        now: Instant,
        answer: SdpAnswer,
        sink: &mut Sink,
    ) -> Result<Result<Vec<(PeerId, Mid)>, MediaError>, Failure> {
        let Some(pending) = self.pending.take() else {
            return Ok(Err(MediaError::NoPendingOffer));
        };
        match self.mutate(now, sink, |rtc| {
            rtc.sdp_api().accept_answer(pending, answer)
        })? {
            Ok(()) => {
                let stopped = self
                    .subs
                    .iter()
                    .filter(|(_, s)| matches!(s.state, SubState::NegotiatingStop(_)))
                    .count();
                self.stopped_mlines += stopped as u32;
                let opened = self
                    .subs
                    .iter()
                    .filter(|(_, s)| matches!(s.state, SubState::Negotiating(_)))
                    .filter(|(_, s)| s.kind == MediaKind::Video)
                    .map(|(_, s)| (s.source, s.source_mid))
                    .collect();
                self.settle(true);
                Ok(Ok(opened))
            }
            Err(e) => {
                // Our offer is void: what it carried goes into the next one.
                self.settle(false);
                Ok(Err(MediaError::BadSdp(e.to_string())))
            }
        }
    }

    /// Ends our negotiation round: applied (opened and stopped for real) or void (back to
    /// wanted).
    fn settle(&mut self, applied: bool) {
        let mut gone = Vec::new();
        for (id, s) in self.subs.iter_mut() {
            s.state = match (s.state, applied) {
                (SubState::Negotiating(m), true) => SubState::Open(m),
                (SubState::NegotiatingStop(_), true) => {
                    gone.push(id);
                    continue;
                }
                (SubState::Negotiating(_), false) => SubState::ToOpen,
                (SubState::NegotiatingStop(m), false) => SubState::ToStop(m),
                (other, _) => other,
            };
        }
        for id in gone {
            self.subs.remove(id);
        }
    }

    /// Whether to ask the member for a new offer because its session holds `limit` stopped
    /// m-lines: true once per Peer.
    pub fn wants_fresh_session(&mut self, limit: u32) -> bool {
        if self.stopped_mlines < limit || self.reoffer_asked {
            return false;
        }
        self.reoffer_asked = true;
        true
    }

    /// Closes the connection (no output: the Peer is being dropped).
    pub fn close(&mut self) {
        let _ = guarded(|| self.rtc.disconnect());
    }

    /// One mutation, then the drain the invariant requires.
    fn mutate<R>(
        &mut self,
        now: Instant,
        sink: &mut Sink,
        f: impl FnOnce(&mut Rtc) -> R,
    ) -> Result<R, Failure> {
        let fault = std::mem::take(&mut self.inject_panic);
        let r = guarded(|| {
            if fault {
                panic!("injected fault (test hook)"); // ok: test hook, caught below
            }
            f(&mut self.rtc)
        });
        self.drain(now, sink)?;
        r
    }
}

pub fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

mod accept;
mod drain;

#[cfg(test)]
mod tests;
