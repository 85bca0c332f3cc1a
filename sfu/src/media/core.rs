//! The media core of one Worker: the str0m Peers of the calls it hosts, in RTP mode, and the
//! forwarding between them. Sans-IO: datagrams, commands and "it is now T" go in; datagrams to
//! send, server-initiated offers and replies come out. No socket, thread or clock in here.
//!
//! Every joined member's published tracks are forwarded to every other joined member of the
//! same call as packets (never re-encoded): SSRC and PT are the subscriber Peer's own,
//! sequence numbers are rebased per subscriber stream, timestamps and the audio level are kept,
//! video is nackable, keyframe requests are relayed to the publisher (merged per source).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::PayloadParams;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{DatagramRecv, DatagramSend, Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use analytics::mos::{Conditions, sample};
use analytics::volume::energy;
use analytics::{Availability, AvailabilityConfig, Jitter, VolumeAggregator, WindowLoss};

use super::forward::SeqRebase;
use super::level::{DECODE_AFTER, OpusLevel};
use crate::protocol::{Notification, QualityDirection, UserVolume};

/// Index of a Peer in its worker, with a generation so stale timers and routes are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId {
    index: u32,
    generation: u32,
}

/// Keyframe requests relayed to one publisher track at most this often.
pub const KEYFRAME_THROTTLE: Duration = Duration::from_millis(500);
/// A Peer that has not connected (ICE + DTLS) this long after its offer is given up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest SDP we look at.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// The host candidate advertised to clients (`--media-ip` and the worker's port). Every
    /// datagram is taken as received on this address (str0m drops STUN to unknown addresses).
    pub advertised: SocketAddr,
    /// How often `quality` is reported per member and direction.
    pub quality_interval: Duration,
    /// How often `volume` is reported per call (and availability checked).
    pub volume_interval: Duration,
}

impl MediaConfig {
    pub fn new(advertised: SocketAddr) -> Self {
        Self {
            advertised,
            quality_interval: Duration::from_secs(5),
            volume_interval: Duration::from_millis(300),
        }
    }
}

/// Who in a call a notification is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Every joined member.
    All,
    /// Every joined member but this one.
    Others(String),
}

/// Why a media request failed; maps to a JSON-RPC error in the shell.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    #[error("invalid SDP: {0}")]
    BadSdp(String),
    #[error("no offer of ours is waiting for an answer")]
    NoPendingOffer,
    #[error("no media session for this member: send an offer first")]
    NoPeer,
}

/// What the core asks the shell to do.
#[derive(Debug)]
pub enum MediaOutput {
    /// Send `contents` to `destination` from the worker's socket.
    Transmit {
        destination: SocketAddr,
        contents: DatagramSend,
    },
    /// Send this server-initiated offer to `user` in `call_id` (an `offer` notification).
    Offer {
        call_id: String,
        user: String,
        sdp: String,
    },
    /// Tell members of `call_id` (volume, quality, availability).
    Notify {
        call_id: String,
        audience: Audience,
        notification: Notification,
    },
}

/// Counters the shell exports; plain integers, flushed to Prometheus off the hot path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaCounters {
    pub rtp_in_packets: [u64; 2],
    pub rtp_in_bytes: [u64; 2],
    pub rtp_out_packets: [u64; 2],
    pub rtp_out_bytes: [u64; 2],
    /// Keyframe requests received from subscribers / sent to publishers.
    pub keyframe_requests_in: u64,
    pub keyframe_requests_out: u64,
    /// NACKs received from subscribers (from egress stats).
    pub nacks_in: u64,
    pub ice_failures: u64,
    pub dtls_failures: u64,
    pub datagrams_unrouted: u64,
    pub peers_connected: u64,
}

/// Index into the per-kind counter arrays.
pub fn kind_index(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

/// A track a member publishes (their `sendonly` m-line, our `recvonly`).
struct TrackIn {
    mid: Mid,
    kind: MediaKind,
    last_keyframe_request: Option<Instant>,
    /// Extended sequence numbers seen: first and highest, and packets received.
    first_seq: Option<u64>,
    highest_seq: u64,
    received: u64,
    jitter: Jitter,
    loss: WindowLoss,
    availability: Availability,
    last_ts: Option<u32>,
    /// Consecutive audio packets without the audio-level extension, and the Opus decoder
    /// that measures the level once there were enough of them.
    no_level_ext: u32,
    meter: Option<OpusLevel>,
}

impl TrackIn {
    fn new(mid: Mid, kind: MediaKind) -> Self {
        let (clock, cfg) = match kind {
            MediaKind::Audio => (48_000, AvailabilityConfig::AUDIO),
            MediaKind::Video => (90_000, AvailabilityConfig::VIDEO),
        };
        let mut availability = Availability::new(cfg);
        availability.set_published(true);
        Self {
            mid,
            kind,
            last_keyframe_request: None,
            first_seq: None,
            highest_seq: 0,
            received: 0,
            jitter: Jitter::new(clock),
            loss: WindowLoss::default(),
            availability,
            last_ts: None,
            no_level_ext: 0,
            meter: None,
        }
    }

    /// The packet's level (−dBov): from the RFC 6464 extension, or by decoding the Opus of a
    /// publisher that does not send it.
    fn audio_level(&mut self, pkt: &RtpPacket) -> Option<u8> {
        if let Some(l) = pkt.header.ext_vals.audio_level {
            self.no_level_ext = 0;
            self.meter = None;
            return Some(l.unsigned_abs().min(127));
        }
        self.no_level_ext = self.no_level_ext.saturating_add(1);
        if self.no_level_ext >= DECODE_AFTER && self.meter.is_none() {
            self.meter = OpusLevel::new();
        }
        self.meter.as_mut()?.level(&pkt.payload)
    }

    /// Books one new packet: loss counters, jitter, availability. Returns an availability
    /// change, and the audio duration the packet covers.
    fn on_packet(&mut self, pkt: &RtpPacket, now: Instant) -> (Option<bool>, Duration) {
        let seq = *pkt.seq_no;
        let first = *self.first_seq.get_or_insert(seq);
        self.received += 1;
        if seq >= self.highest_seq || seq == first {
            self.highest_seq = seq.max(self.highest_seq);
            self.jitter.on_packet(pkt.timestamp, pkt.header.timestamp);
        }
        let duration = match self.last_ts.replace(pkt.header.timestamp) {
            Some(prev) if self.kind == MediaKind::Audio => {
                let step = pkt.header.timestamp.wrapping_sub(prev);
                Duration::from_micros((u64::from(step) * 1000 / 48).min(120_000))
            }
            _ => Duration::from_millis(20),
        };
        (self.availability.on_packet(now), duration)
    }

    /// (expected, lost) since the first packet.
    fn counters(&self) -> Option<(u64, i64)> {
        let first = self.first_seq?;
        let expected = self.highest_seq - first + 1;
        Some((expected, expected as i64 - self.received as i64))
    }
}

impl DownStats {
    /// One RTCP RR's view of an audio stream we send: cumulative highest sequence number and
    /// packets lost, and interarrival jitter (48 kHz units).
    fn on_report(&mut self, mid: Mid, max_seq: u64, lost: u64, jitter: u32) {
        let (m0, l0) = *self.per_mid.entry(mid).or_insert((max_seq, lost));
        self.expected_total += max_seq.saturating_sub(m0);
        self.lost_total += lost as i64 - l0 as i64;
        self.per_mid.insert(mid, (max_seq.max(m0), lost));
        self.jitter_ms = Some(f64::from(jitter) / 48.0);
    }
}

/// What a member's receivers tell us about the server-to-member direction (RTCP RR), summed
/// over the audio streams they receive.
#[derive(Default)]
struct DownStats {
    per_mid: HashMap<Mid, (u64, u64)>,
    expected_total: u64,
    lost_total: i64,
    jitter_ms: Option<f64>,
    loss: WindowLoss,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutState {
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    ToStop(Mid),
    NegotiatingStop(Mid),
}

/// Another member's track as this Peer receives it.
struct TrackOut {
    source: PeerId,
    /// The publishing member: our offer names it as the m-line's stream id (msid), so clients
    /// know whose track it is.
    source_user: String,
    source_mid: Mid,
    kind: MediaKind,
    state: OutState,
    seq: SeqRebase,
    /// Last (publisher PT, our PT) mapping, to skip the codec lookup per packet.
    pt_cache: Option<(u8, u8)>,
}

struct Peer {
    call_id: String,
    user: String,
    rtc: Rtc,
    created: Instant,
    connected: bool,
    ufrag: String,
    /// Whether this call carries video; in audio calls offered video is not published.
    video: bool,
    addrs: Vec<SocketAddr>,
    tracks_in: Vec<TrackIn>,
    tracks_out: Vec<TrackOut>,
    pending: Option<SdpPendingOffer>,
    held: bool,
    audio_muted: bool,
    video_muted: bool,
    /// When we last asked str0m to be woken.
    wake: Option<Instant>,
    /// Cumulative NACKs per egress mid, for deltas.
    nacks_seen: HashMap<Mid, u64>,
    /// Round-trip time: from the member's RTCP RR (LSR/DLSR) on what we send them, else from
    /// XR DLRR on what they send us.
    rtt: Option<Duration>,
    rtt_from_rr: bool,
    down: DownStats,
    /// Opus in-band FEC negotiated (changes the E-model's Bpl).
    fec: bool,
    /// Σ energy·seconds and seconds of audio in the current volume interval.
    volume: (f64, f64),
}

struct Slot {
    generation: u32,
    peer: Option<Peer>,
}

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn availability_notice(call_id: &str, user: &str, kind: MediaKind, available: bool) -> MediaOutput {
    let (call_id, user) = (call_id.to_string(), user.to_string());
    let notification = match kind {
        MediaKind::Audio => Notification::AudioAvailable {
            call_id: call_id.clone(),
            user: user.clone(),
            available,
        },
        MediaKind::Video => Notification::VideoAvailable {
            call_id: call_id.clone(),
            user: user.clone(),
            available,
        },
    };
    MediaOutput::Notify {
        call_id,
        audience: Audience::Others(user),
        notification,
    }
}

fn slot_peer(slots: &mut [Slot], id: PeerId) -> Option<&mut Peer> {
    let slot = slots.get_mut(id.index as usize)?;
    if slot.generation != id.generation {
        return None;
    }
    slot.peer.as_mut()
}

/// The forwarding work found while draining one Peer, done after its borrow ends.
// Kept inline: boxing the packet would cost an allocation per forwarded packet.
#[allow(clippy::large_enum_variant)]
enum Work {
    Forward(PeerId, Mid, MediaKind, RtpPacket),
    Keyframe(PeerId, Mid, KeyframeRequestKind),
}

pub struct MediaCore {
    cfg: MediaConfig,
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_member: HashMap<(String, String), PeerId>,
    by_call: HashMap<String, Vec<PeerId>>,
    by_addr: HashMap<SocketAddr, PeerId>,
    by_ufrag: HashMap<String, PeerId>,
    timers: BinaryHeap<Reverse<(Instant, PeerId)>>,
    out: VecDeque<MediaOutput>,
    work: VecDeque<Work>,
    counters: MediaCounters,
    /// Reused for the subscribers of one packet, to avoid an allocation per packet.
    scratch: Vec<PeerId>,
    /// Calls whose last volume report had someone audible.
    audible: HashMap<String, bool>,
    next_volume: Option<Instant>,
    next_quality: Option<Instant>,
}

impl MediaCore {
    pub fn new(cfg: MediaConfig) -> Self {
        Self {
            cfg,
            slots: Vec::new(),
            free: Vec::new(),
            by_member: HashMap::new(),
            by_call: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
            work: VecDeque::new(),
            counters: MediaCounters::default(),
            scratch: Vec::new(),
            audible: HashMap::new(),
            next_volume: None,
            next_quality: None,
        }
    }

    pub fn poll_output(&mut self) -> Option<MediaOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let peers = self.timers.peek().map(|Reverse((t, _))| *t);
        [peers, self.next_volume, self.next_quality]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn counters(&self) -> &MediaCounters {
        &self.counters
    }

    /// Peers alive on this worker.
    pub fn peers(&self) -> usize {
        self.by_member.len()
    }

    /// Calls with at least one Peer on this worker.
    pub fn calls(&self) -> usize {
        self.by_call.len()
    }

    fn peer(&self, id: PeerId) -> Option<&Peer> {
        let slot = self.slots.get(id.index as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.peer.as_ref())
            .flatten()
    }

    fn peer_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        slot_peer(&mut self.slots, id)
    }

    // ---- commands ----

    /// A member's `offer`: a new Peer for them (replacing any earlier one, as after a
    /// reconnect), answered at once; the other members' tracks follow in our own offer.
    /// `video` is false for audio calls: video the client offers is then not forwarded.
    pub fn offer(
        &mut self,
        now: Instant,
        call_id: &str,
        user: &str,
        sdp: &str,
        video: bool,
    ) -> Result<String, MediaError> {
        if sdp.len() > MAX_SDP_BYTES {
            return Err(MediaError::BadSdp("larger than 64 KiB".into()));
        }
        let offer =
            SdpOffer::from_sdp_string(sdp).map_err(|e| MediaError::BadSdp(e.to_string()))?;
        let mut rtc = RtcConfig::new()
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .build(now);
        let candidate = Candidate::host(self.cfg.advertised, "udp")
            .map_err(|e| MediaError::BadSdp(format!("media address: {e}")))?;
        rtc.add_local_candidate(candidate);
        let answer: Result<Result<SdpAnswer, _>, _> =
            catch_unwind(AssertUnwindSafe(|| rtc.sdp_api().accept_offer(offer)));
        let answer = match answer {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return Err(MediaError::BadSdp(e.to_string())),
            Err(_) => return Err(MediaError::BadSdp("offer could not be handled".into())),
        };
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;

        self.remove_member(call_id, user);
        let id = self.alloc(Peer {
            call_id: call_id.to_string(),
            user: user.to_string(),
            rtc,
            created: now,
            connected: false,
            ufrag: ufrag.clone(),
            video,
            addrs: Vec::new(),
            tracks_in: Vec::new(),
            tracks_out: Vec::new(),
            pending: None,
            held: false,
            audio_muted: false,
            video_muted: false,
            wake: None,
            nacks_seen: HashMap::new(),
            rtt: None,
            rtt_from_rr: false,
            down: DownStats::default(),
            fec: sdp.contains("useinbandfec=1"),
            volume: (0.0, 0.0),
        });
        self.by_ufrag.insert(ufrag, id);
        self.by_member
            .insert((call_id.to_string(), user.to_string()), id);
        // Subscribe the newcomer to what the others already publish.
        let others: Vec<PeerId> = self.by_call.get(call_id).cloned().unwrap_or_default();
        let mut subs = Vec::new();
        for &other in &others {
            if let Some(o) = self.peer(other) {
                for t in &o.tracks_in {
                    subs.push(TrackOut {
                        source: other,
                        source_user: o.user.clone(),
                        source_mid: t.mid,
                        kind: t.kind,
                        state: OutState::ToOpen,
                        seq: SeqRebase::default(),
                        pt_cache: None,
                    });
                }
            }
        }
        if let Some(p) = self.peer_mut(id) {
            p.tracks_out = subs;
        }
        self.by_call
            .entry(call_id.to_string())
            .or_default()
            .push(id);
        self.next_volume
            .get_or_insert(now + self.cfg.volume_interval);
        self.next_quality
            .get_or_insert(now + self.cfg.quality_interval);
        // Learn its tracks (MediaAdded) and tell the others.
        self.drain(now, id);
        self.run_work(now);
        self.negotiate(id);
        Ok(answer.to_sdp_string())
    }

    /// A member's `answer` to our offer.
    pub fn answer(
        &mut self,
        now: Instant,
        call_id: &str,
        user: &str,
        sdp: &str,
    ) -> Result<(), MediaError> {
        let id = *self
            .by_member
            .get(&(call_id.to_string(), user.to_string()))
            .ok_or(MediaError::NoPeer)?;
        if sdp.len() > MAX_SDP_BYTES {
            return Err(MediaError::BadSdp("larger than 64 KiB".into()));
        }
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| MediaError::BadSdp(e.to_string()))?;
        let peer = self.peer_mut(id).ok_or(MediaError::NoPeer)?;
        let pending = peer.pending.take().ok_or(MediaError::NoPendingOffer)?;
        let applied = catch_unwind(AssertUnwindSafe(|| {
            peer.rtc.sdp_api().accept_answer(pending, answer)
        }));
        match applied {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // Our offer is void: renegotiate what it carried.
                for t in &mut peer.tracks_out {
                    t.state = match t.state {
                        OutState::Negotiating(_) => OutState::ToOpen,
                        OutState::NegotiatingStop(m) => OutState::ToStop(m),
                        s => s,
                    };
                }
                self.negotiate(id);
                return Err(MediaError::BadSdp(e.to_string()));
            }
            Err(_) => {
                self.remove_peer(id);
                return Err(MediaError::BadSdp("answer could not be handled".into()));
            }
        }
        let mut opened = Vec::new();
        peer.tracks_out.retain_mut(|t| match t.state {
            OutState::Negotiating(mid) => {
                t.state = OutState::Open(mid);
                if t.kind == MediaKind::Video {
                    opened.push((t.source, t.source_mid));
                }
                true
            }
            OutState::NegotiatingStop(_) => false,
            _ => true,
        });
        // A new subscriber needs a keyframe to start decoding.
        for (source, mid) in opened {
            self.work
                .push_back(Work::Keyframe(source, mid, KeyframeRequestKind::Pli));
        }
        self.drain(now, id);
        self.run_work(now);
        self.negotiate(id);
        Ok(())
    }

    /// A trickled remote candidate (`candidate` request).
    pub fn candidate(&mut self, now: Instant, call_id: &str, user: &str, candidate: &str) {
        let Some(&id) = self.by_member.get(&(call_id.to_string(), user.to_string())) else {
            return;
        };
        let text = candidate.strip_prefix("candidate:").unwrap_or(candidate);
        let Ok(c) = Candidate::from_sdp_string(&format!("candidate:{text}")) else {
            return;
        };
        if let Some(p) = self.peer_mut(id) {
            p.rtc.add_remote_candidate(c);
        }
        self.drain(now, id);
    }

    pub fn set_hold(&mut self, call_id: &str, user: &str, held: bool) {
        if let Some(p) = self.member_mut(call_id, user) {
            p.held = held;
        }
    }

    pub fn set_mute(
        &mut self,
        call_id: &str,
        user: &str,
        audio: Option<bool>,
        video: Option<bool>,
    ) {
        if let Some(p) = self.member_mut(call_id, user) {
            if let Some(a) = audio {
                p.audio_muted = a;
            }
            if let Some(v) = video {
                p.video_muted = v;
            }
            // Signaling told the others at once; availability returns when media flows again.
            for t in &mut p.tracks_in {
                let muted = match t.kind {
                    MediaKind::Audio => p.audio_muted,
                    MediaKind::Video => p.video_muted,
                };
                t.availability.set_muted(muted);
            }
        }
    }

    fn member_mut(&mut self, call_id: &str, user: &str) -> Option<&mut Peer> {
        let id = *self
            .by_member
            .get(&(call_id.to_string(), user.to_string()))?;
        self.peer_mut(id)
    }

    /// A member left the call: their Peer is closed and their tracks are removed from the
    /// others by our offers.
    pub fn remove_member(&mut self, call_id: &str, user: &str) {
        if let Some(id) = self
            .by_member
            .get(&(call_id.to_string(), user.to_string()))
            .copied()
        {
            self.remove_peer(id);
        }
    }

    /// The call ended: every Peer of it is closed and forgotten.
    pub fn end_call(&mut self, call_id: &str) {
        let ids = self.by_call.get(call_id).cloned().unwrap_or_default();
        for id in ids {
            self.remove_peer(id);
        }
        self.by_call.remove(call_id);
    }

    // ---- network and time ----

    /// One UDP datagram from `source`.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        let Some(id) = self.route(source, contents) else {
            self.counters.datagrams_unrouted += 1;
            return;
        };
        let Ok(contents) = DatagramRecv::try_from(contents) else {
            self.counters.datagrams_unrouted += 1;
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.cfg.advertised,
                contents,
            },
        );
        let Some(peer) = self.peer_mut(id) else {
            return;
        };
        let is_new_addr = !peer.addrs.contains(&source);
        if is_new_addr && !peer.rtc.accepts(&input) {
            self.counters.datagrams_unrouted += 1;
            return;
        }
        let ok = catch_unwind(AssertUnwindSafe(|| peer.rtc.handle_input(input)));
        if is_new_addr {
            peer.addrs.push(source);
            self.by_addr.insert(source, id);
        }
        match ok {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "peer rejected a datagram");
            }
            Err(_) => {
                self.counters.dtls_failures += 1;
                self.remove_peer(id);
                return;
            }
        }
        self.drain(now, id);
        self.run_work(now);
    }

    /// Which Peer a datagram is for: by source address once known, by the STUN username
    /// (our ICE ufrag) before. Never a scan of all Peers.
    fn route(&self, source: SocketAddr, contents: &[u8]) -> Option<PeerId> {
        if let Some(&id) = self.by_addr.get(&source) {
            return Some(id);
        }
        let stun = str0m::ice::StunMessage::parse(contents).ok()?;
        let (ours, _theirs) = stun.split_username()?;
        self.by_ufrag.get(ours).copied()
    }

    /// Drives every Peer whose deadline is due, and the volume and quality reports.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.drive_peers(now);
        if self.next_volume.is_some_and(|t| t <= now) {
            self.volume_tick(now);
        }
        if self.next_quality.is_some_and(|t| t <= now) {
            self.quality_tick();
        }
        if self.by_member.is_empty() {
            self.next_volume = None;
            self.next_quality = None;
        } else {
            let (v, q) = (self.cfg.volume_interval, self.cfg.quality_interval);
            let next = |t: Option<Instant>, every: Duration| {
                let mut t = t.unwrap_or(now + every);
                while t <= now {
                    t += every;
                }
                Some(t)
            };
            self.next_volume = next(self.next_volume, v);
            self.next_quality = next(self.next_quality, q);
        }
    }

    fn drive_peers(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(peer) = self.peer_mut(id) else {
                continue;
            };
            if peer.wake != Some(at) {
                continue; // superseded
            }
            peer.wake = None;
            if !peer.connected && now.saturating_duration_since(peer.created) >= CONNECT_TIMEOUT {
                self.counters.ice_failures += 1;
                self.remove_peer(id);
                continue;
            }
            let ok = catch_unwind(AssertUnwindSafe(|| {
                peer.rtc.handle_input(Input::Timeout(now))
            }));
            if !matches!(ok, Ok(Ok(()))) {
                self.counters.dtls_failures += 1;
                self.remove_peer(id);
                continue;
            }
            self.drain(now, id);
            self.run_work(now);
        }
    }

    /// Every volume interval: each call's volumes (to every joined member while anyone is
    /// audible, and once more when all fall silent), and availability stalls.
    fn volume_tick(&mut self, now: Instant) {
        let calls: Vec<(String, Vec<PeerId>)> = self
            .by_call
            .iter()
            .map(|(c, p)| (c.clone(), p.clone()))
            .collect();
        for (call_id, peers) in calls {
            let mut agg = VolumeAggregator::new(self.cfg.volume_interval);
            for id in peers {
                let Some(p) = slot_peer(&mut self.slots, id) else {
                    continue;
                };
                let (e, d) = std::mem::take(&mut p.volume);
                if d > 0.0 {
                    agg.add_energy(&p.user, e, Duration::from_secs_f64(d));
                }
                for t in &mut p.tracks_in {
                    if let Some(available) = t.availability.poll(now) {
                        self.out
                            .push_back(availability_notice(&call_id, &p.user, t.kind, available));
                    }
                }
            }
            let report = agg.finish();
            let audible = !report.volumes.is_empty();
            let was = self
                .audible
                .insert(call_id.clone(), audible)
                .unwrap_or(false);
            if audible || was {
                let volumes = report
                    .volumes
                    .into_iter()
                    .map(|(user, volume)| UserVolume { user, volume })
                    .collect();
                self.out.push_back(MediaOutput::Notify {
                    call_id: call_id.clone(),
                    audience: Audience::All,
                    notification: Notification::Volume {
                        call_id,
                        volumes,
                        total: report.total,
                    },
                });
            }
        }
    }

    /// Every quality window: per member, the E-model MOS of what they send (`up`, measured on
    /// the packets we receive) and of what we send them (`down`, from their RTCP RR), to every
    /// joined member. A window without packets or without an RTT gives no sample.
    fn quality_tick(&mut self) {
        for slot in &mut self.slots {
            let Some(p) = slot.peer.as_mut() else {
                continue;
            };
            let mut samples = Vec::new();
            if let Some(t) = p.tracks_in.iter_mut().find(|t| t.kind == MediaKind::Audio)
                && let Some((expected, lost)) = t.counters()
                && let Some(loss) = t.loss.next(expected, lost)
            {
                samples.push((QualityDirection::Up, loss, t.jitter.ms()));
            }
            if let Some(loss) = p.down.loss.next(p.down.expected_total, p.down.lost_total)
                && let Some(j) = p.down.jitter_ms
            {
                samples.push((QualityDirection::Down, loss, j));
            }
            let Some(rtt_ms) = p.rtt.map(|r| r.as_secs_f64() * 1000.0) else {
                continue;
            };
            for (direction, loss, jitter_ms) in samples {
                let c = Conditions {
                    rtt_ms,
                    jitter_ms,
                    loss,
                };
                let Some(s) = sample(c, p.fec) else {
                    continue;
                };
                self.out.push_back(MediaOutput::Notify {
                    call_id: p.call_id.clone(),
                    audience: Audience::All,
                    notification: Notification::Quality {
                        call_id: p.call_id.clone(),
                        user: p.user.clone(),
                        direction,
                        mos: round2(s.mos),
                        quality: s.level,
                        rtt_ms: round2(rtt_ms),
                        jitter_ms: round2(jitter_ms),
                        loss: (loss * 10_000.0).round() / 10_000.0,
                    },
                });
            }
        }
    }

    // ---- internals ----

    fn alloc(&mut self, peer: Peer) -> PeerId {
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.peer = Some(peer);
            PeerId {
                index,
                generation: slot.generation,
            }
        } else {
            self.slots.push(Slot {
                generation: 0,
                peer: Some(peer),
            });
            PeerId {
                index: (self.slots.len() - 1) as u32,
                generation: 0,
            }
        }
    }

    fn remove_peer(&mut self, id: PeerId) {
        let Some(slot) = self.slots.get_mut(id.index as usize) else {
            return;
        };
        if slot.generation != id.generation {
            return;
        }
        let Some(mut peer) = slot.peer.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        peer.rtc.disconnect();
        for a in &peer.addrs {
            if self.by_addr.get(a) == Some(&id) {
                self.by_addr.remove(a);
            }
        }
        self.by_ufrag.remove(&peer.ufrag);
        let key = (peer.call_id.clone(), peer.user.clone());
        if self.by_member.get(&key) == Some(&id) {
            self.by_member.remove(&key);
        }
        let others = match self.by_call.get_mut(&peer.call_id) {
            Some(list) => {
                list.retain(|p| *p != id);
                let others = list.clone();
                if list.is_empty() {
                    self.by_call.remove(&peer.call_id);
                    self.audible.remove(&peer.call_id);
                }
                others
            }
            None => Vec::new(),
        };
        // Stop forwarding its tracks to the others.
        for other in others {
            let Some(o) = self.peer_mut(other) else {
                continue;
            };
            o.tracks_out.retain_mut(|t| {
                if t.source != id {
                    return true;
                }
                match t.state {
                    OutState::ToOpen => false,
                    OutState::Open(m) | OutState::Negotiating(m) => {
                        t.state = OutState::ToStop(m);
                        true
                    }
                    _ => true,
                }
            });
            self.negotiate(other);
        }
    }

    /// Sends our offer for whatever this Peer's subscriptions need, unless one is pending.
    fn negotiate(&mut self, id: PeerId) {
        let Some(peer) = slot_peer(&mut self.slots, id) else {
            return;
        };
        if peer.pending.is_some()
            || !peer
                .tracks_out
                .iter()
                .any(|t| matches!(t.state, OutState::ToOpen | OutState::ToStop(_)))
        {
            return;
        }
        let mut api = peer.rtc.sdp_api();
        for t in &mut peer.tracks_out {
            match t.state {
                OutState::ToOpen => {
                    let track = format!("{}-{}", t.source_user, kind_name(t.kind));
                    let stream = Some(t.source_user.clone());
                    let mid = api.add_media(t.kind, Direction::SendOnly, stream, Some(track), None);
                    t.state = OutState::Negotiating(mid);
                }
                OutState::ToStop(mid) => {
                    api.stop_media(mid);
                    t.state = OutState::NegotiatingStop(mid);
                }
                _ => {}
            }
        }
        if let Some((offer, pending)) = api.apply() {
            peer.pending = Some(pending);
            self.out.push_back(MediaOutput::Offer {
                call_id: peer.call_id.clone(),
                user: peer.user.clone(),
                sdp: offer.to_sdp_string(),
            });
        } else {
            // Nothing changed on the wire (e.g. stopping an m-line never negotiated).
            peer.tracks_out.retain_mut(|t| match t.state {
                OutState::Negotiating(m) => {
                    t.state = OutState::Open(m);
                    true
                }
                OutState::NegotiatingStop(_) => false,
                _ => true,
            });
        }
    }

    /// Polls one Peer until it has nothing more to say; queues forwarding work.
    fn drain(&mut self, now: Instant, id: PeerId) {
        let mut added: Vec<(Mid, MediaKind)> = Vec::new();
        let mut failed = false;
        {
            let Some(slot) = self.slots.get_mut(id.index as usize) else {
                return;
            };
            let Some(peer) = slot.peer.as_mut() else {
                return;
            };
            loop {
                let polled = catch_unwind(AssertUnwindSafe(|| peer.rtc.poll_output()));
                let out = match polled {
                    Ok(Ok(o)) => o,
                    _ => {
                        failed = true;
                        break;
                    }
                };
                match out {
                    Output::Timeout(t) => {
                        let t = t.max(now);
                        if peer.wake != Some(t) {
                            peer.wake = Some(t);
                            self.timers.push(Reverse((t, id)));
                        }
                        break;
                    }
                    Output::Transmit(t) => {
                        self.out.push_back(MediaOutput::Transmit {
                            destination: t.destination,
                            contents: t.contents,
                        });
                    }
                    Output::Event(e) => match e {
                        Event::Connected => {
                            peer.connected = true;
                            self.counters.peers_connected += 1;
                        }
                        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                            self.counters.ice_failures += 1;
                        }
                        Event::MediaAdded(m)
                            if m.direction.is_receiving()
                                && (peer.video || m.kind == MediaKind::Audio) =>
                        {
                            added.push((m.mid, m.kind));
                        }
                        Event::RtpPacket(pkt) => {
                            let mid = peer
                                .rtc
                                .direct_api()
                                .stream_rx(&pkt.header.ssrc)
                                .map(|s| s.mid());
                            let track =
                                mid.and_then(|m| peer.tracks_in.iter_mut().find(|t| t.mid == m));
                            if let Some(t) = track {
                                let k = kind_index(t.kind);
                                self.counters.rtp_in_packets[k] += 1;
                                self.counters.rtp_in_bytes[k] += pkt.payload.len() as u64;
                                let (change, duration) = t.on_packet(&pkt, now);
                                let (mid, kind) = (t.mid, t.kind);
                                if let Some(available) = change {
                                    self.out.push_back(availability_notice(
                                        &peer.call_id,
                                        &peer.user,
                                        kind,
                                        available,
                                    ));
                                }
                                let speaking =
                                    kind == MediaKind::Audio && !peer.audio_muted && !peer.held;
                                if speaking && let Some(level) = t.audio_level(&pkt) {
                                    peer.volume.0 += energy(level) * duration.as_secs_f64();
                                    peer.volume.1 += duration.as_secs_f64();
                                }
                                self.work.push_back(Work::Forward(id, mid, kind, pkt));
                            }
                        }
                        Event::KeyframeRequest(req) => {
                            self.counters.keyframe_requests_in += 1;
                            if let Some(t) = peer
                                .tracks_out
                                .iter()
                                .find(|t| t.state == OutState::Open(req.mid))
                            {
                                self.work.push_back(Work::Keyframe(
                                    t.source,
                                    t.source_mid,
                                    req.kind,
                                ));
                            }
                        }
                        Event::MediaEgressStats(s) => {
                            let seen = peer.nacks_seen.entry(s.mid).or_insert(0);
                            self.counters.nacks_in += s.nacks.saturating_sub(*seen);
                            *seen = s.nacks.max(*seen);
                            if let Some(rtt) = s.rtt {
                                peer.rtt = Some(rtt);
                                peer.rtt_from_rr = true;
                            }
                            let audio = peer.tracks_out.iter().any(|t| {
                                t.state == OutState::Open(s.mid) && t.kind == MediaKind::Audio
                            });
                            if let (true, Some(r)) = (audio, s.remote) {
                                peer.down.on_report(
                                    s.mid,
                                    *r.maximum_sequence_number,
                                    r.packets_lost,
                                    r.jitter,
                                );
                            }
                        }
                        Event::MediaIngressStats(s) => {
                            if !peer.rtt_from_rr
                                && let Some(rtt) = s.rtt
                            {
                                peer.rtt = Some(rtt);
                            }
                        }
                        _ => {}
                    },
                }
            }
        }
        if failed {
            self.counters.dtls_failures += 1;
            self.remove_peer(id);
            return;
        }
        if !added.is_empty() {
            self.add_tracks_in(id, &added);
        }
    }

    /// A member published tracks: every other member of the call subscribes.
    fn add_tracks_in(&mut self, id: PeerId, added: &[(Mid, MediaKind)]) {
        let Some(peer) = self.peer_mut(id) else {
            return;
        };
        for &(mid, kind) in added {
            if !peer.tracks_in.iter().any(|t| t.mid == mid) {
                peer.tracks_in.push(TrackIn::new(mid, kind));
            }
        }
        let call_id = peer.call_id.clone();
        let publisher = peer.user.clone();
        let others: Vec<PeerId> = self
            .by_call
            .get(&call_id)
            .map(|l| l.iter().copied().filter(|p| *p != id).collect())
            .unwrap_or_default();
        for other in others {
            let Some(o) = self.peer_mut(other) else {
                continue;
            };
            for &(mid, kind) in added {
                if !o
                    .tracks_out
                    .iter()
                    .any(|t| t.source == id && t.source_mid == mid)
                {
                    o.tracks_out.push(TrackOut {
                        source: id,
                        source_user: publisher.clone(),
                        source_mid: mid,
                        kind,
                        state: OutState::ToOpen,
                        seq: SeqRebase::default(),
                        pt_cache: None,
                    });
                }
            }
            self.negotiate(other);
        }
    }

    fn run_work(&mut self, now: Instant) {
        while let Some(w) = self.work.pop_front() {
            match w {
                Work::Forward(from, mid, kind, pkt) => self.forward(now, from, mid, kind, &pkt),
                Work::Keyframe(source, mid, kind) => self.request_keyframe(now, source, mid, kind),
            }
        }
    }

    fn request_keyframe(
        &mut self,
        now: Instant,
        source: PeerId,
        mid: Mid,
        kind: KeyframeRequestKind,
    ) {
        let Some(p) = self.peer_mut(source) else {
            return;
        };
        let Some(t) = p.tracks_in.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        if t.kind != MediaKind::Video
            || t.last_keyframe_request
                .is_some_and(|l| now.saturating_duration_since(l) < KEYFRAME_THROTTLE)
        {
            return;
        }
        t.last_keyframe_request = Some(now);
        if let Some(rx) = p.rtc.direct_api().stream_rx_by_mid(mid, None) {
            rx.request_keyframe(kind);
            self.counters.keyframe_requests_out += 1;
        }
        self.drain(now, source);
    }

    /// Forwards one publisher packet to every subscriber of its track.
    fn forward(
        &mut self,
        now: Instant,
        from: PeerId,
        mid_in: Mid,
        kind: MediaKind,
        pkt: &RtpPacket,
    ) {
        let Some(publisher) = slot_peer(&mut self.slots, from) else {
            return;
        };
        if publisher.held {
            return;
        }
        let muted = match kind {
            MediaKind::Audio => publisher.audio_muted,
            MediaKind::Video => publisher.video_muted,
        };
        if muted {
            return;
        }
        let pt_in = *pkt.header.payload_type;
        let Some(params): Option<PayloadParams> = publisher
            .rtc
            .codec_config()
            .find(|p| *p.pt() == pt_in)
            .copied()
        else {
            return;
        };
        let subs = &mut self.scratch;
        subs.clear();
        if let Some(list) = self.by_call.get(&publisher.call_id) {
            subs.extend(list.iter().copied().filter(|p| *p != from));
        }
        let subs = std::mem::take(subs);
        let ext = ExtensionValues {
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            video_orientation: pkt.header.ext_vals.video_orientation,
            ..Default::default()
        };
        let k = kind_index(kind);
        for &sub in &subs {
            let Some(peer) = self.peer_mut(sub) else {
                continue;
            };
            if peer.held || !peer.connected {
                continue;
            }
            let Some(t) = peer
                .tracks_out
                .iter_mut()
                .find(|t| t.source == from && t.source_mid == mid_in)
            else {
                continue;
            };
            let OutState::Open(mid_out) = t.state else {
                continue;
            };
            let pt_out = match t.pt_cache {
                Some((i, o)) if i == pt_in => o,
                _ => {
                    let Some(p) = peer.rtc.codec_config().match_params(params) else {
                        continue;
                    };
                    let o = *p.pt();
                    t.pt_cache = Some((pt_in, o));
                    o
                }
            };
            let Some(seq) = t.seq.map(*pkt.seq_no) else {
                continue;
            };
            let mut api = peer.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(mid_out, None) else {
                continue;
            };
            tx.write_rtp(
                RtpWrite::new(
                    pt_out.into(),
                    seq.into(),
                    pkt.header.timestamp,
                    pkt.timestamp,
                    pkt.payload.clone(),
                )
                .marker(pkt.header.marker)
                .ext_vals(ext.clone())
                .nackable(kind == MediaKind::Video),
            );
            self.counters.rtp_out_packets[k] += 1;
            self.counters.rtp_out_bytes[k] += pkt.payload.len() as u64;
            self.drain(now, sub);
        }
        self.scratch = subs;
    }
}
