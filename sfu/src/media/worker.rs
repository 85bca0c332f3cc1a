//! The MediaCore: the sans-IO half of one Worker. It owns the Peers of the calls placed on
//! the Worker, their Rooms and the Router, and forwards packets between them. Commands,
//! datagrams and "it is now T" go in; [`MediaEvent`]s and "wake me at T" come out. No socket,
//! thread or clock in here.
//!
//! Invariants:
//! - nothing here imports the wire protocol: events are plain data, the driver words them;
//! - mute and hold come from the call model with every command that creates a Peer, so a Peer
//!   never starts unmuted when its member is muted;
//! - a Peer that fails is reported ([`MediaEvent::Failed`]) and removed; the Worker goes on.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::Candidate;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket};

use analytics::volume::energy;

use super::command::{Command, MemberMedia, Ticket};
use super::event::{Failure, MediaError, MediaEvent};
use super::peer::{Forward, Peer, PeerEvent, PeerId, Sink};
use super::room::Room;
use super::router::Router;
use super::subscription::{SubId, Subscription};
use super::track::{Arrival, Track};

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
    /// Peers failed, by stage, and ICE connections lost.
    pub ice_failures: u64,
    pub dtls_failures: u64,
    pub rtc_failures: u64,
    pub ice_disconnects: u64,
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

struct Slot {
    generation: u32,
    peer: Option<Peer>,
}

pub struct MediaCore {
    cfg: MediaConfig,
    slots: Vec<Slot>,
    free: Vec<u32>,
    router: Router,
    rooms: HashMap<String, Room>,
    timers: BinaryHeap<Reverse<(Instant, PeerId)>>,
    out: VecDeque<MediaEvent>,
    /// What drained Peers reported, acted on by [`MediaCore::pump`].
    events: VecDeque<(PeerId, PeerEvent)>,
    counters: MediaCounters,
    /// Reused for the subscribers of one packet, to avoid an allocation per packet.
    scratch: Vec<(PeerId, SubId)>,
    next_volume: Option<Instant>,
    next_quality: Option<Instant>,
}

impl MediaCore {
    pub fn new(cfg: MediaConfig) -> Self {
        Self {
            cfg,
            slots: Vec::new(),
            free: Vec::new(),
            router: Router::default(),
            rooms: HashMap::new(),
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            counters: MediaCounters::default(),
            scratch: Vec::new(),
            next_volume: None,
            next_quality: None,
        }
    }

    pub fn poll_event(&mut self) -> Option<MediaEvent> {
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
        self.slots.iter().filter(|s| s.peer.is_some()).count()
    }

    /// Calls with at least one Peer on this worker.
    pub fn calls(&self) -> usize {
        self.rooms.len()
    }

    // ---- inputs ----

    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Offer {
                call_id,
                user,
                sdp,
                video,
                state,
                ticket,
            } => self.offer(now, &call_id, &user, &sdp, video, state, ticket),
            Command::Answer {
                call_id,
                user,
                sdp,
                ticket,
            } => self.answer(now, &call_id, &user, &sdp, ticket),
            Command::Candidate {
                call_id,
                user,
                candidate,
            } => self.candidate(now, &call_id, &user, &candidate),
            Command::SetState {
                call_id,
                user,
                state,
            } => {
                if let Some(p) = self.member_mut(&call_id, &user) {
                    set_state(p, state);
                }
            }
            Command::Leave { call_id, user } => {
                if let Some(id) = self.member(&call_id, &user) {
                    self.remove_peer(now, id, None);
                }
            }
            Command::EndCall { call_id } => {
                let ids: Vec<PeerId> = self
                    .rooms
                    .get(&call_id)
                    .map(|r| r.peers().collect())
                    .unwrap_or_default();
                for id in ids {
                    self.remove_peer(now, id, None);
                }
                self.rooms.remove(&call_id);
            }
        }
        self.pump(now);
    }

    /// One UDP datagram from `source`.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        let Some(id) = self.router.route(source, contents) else {
            self.counters.datagrams_unrouted += 1;
            return;
        };
        let Ok(contents) = DatagramRecv::try_from(contents) else {
            self.counters.datagrams_unrouted += 1;
            return;
        };
        let receive = Receive {
            proto: Protocol::Udp,
            source,
            destination: self.cfg.advertised,
            contents,
        };
        let Some(peer) = slot_peer(&mut self.slots, id) else {
            return;
        };
        let is_new_addr = !peer.addrs.contains(&source);
        if is_new_addr {
            let probe = str0m::Input::Receive(now, receive);
            if !peer.accepts(&probe) {
                self.counters.datagrams_unrouted += 1;
                return;
            }
            let str0m::Input::Receive(_, r) = probe else {
                return;
            };
            peer.addrs.push(source);
            self.router.learn(source, id);
            return self.receive(now, id, r);
        }
        self.receive(now, id, receive);
    }

    fn receive(&mut self, now: Instant, id: PeerId, r: Receive) {
        let Some(peer) = slot_peer(&mut self.slots, id) else {
            return;
        };
        let mut sink = Sink {
            out: &mut self.out,
            events: &mut self.events,
        };
        let result = peer.receive(now, r, &mut sink);
        self.schedule(id);
        if let Err(f) = result {
            self.remove_peer(now, id, Some(f));
        }
        self.pump(now);
    }

    /// Drives every Peer whose deadline is due, and the volume and quality reports.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(peer) = slot_peer(&mut self.slots, id) else {
                continue;
            };
            if peer.wake != Some(at) {
                continue; // superseded
            }
            peer.wake = None;
            if !peer.connected && now.saturating_duration_since(peer.created) >= CONNECT_TIMEOUT {
                let stage = if peer.ice_connected {
                    Failure::Dtls
                } else {
                    Failure::Ice
                };
                self.remove_peer(now, id, Some(stage));
                continue;
            }
            let mut sink = Sink {
                out: &mut self.out,
                events: &mut self.events,
            };
            let result = peer.tick(now, &mut sink);
            self.schedule(id);
            if let Err(f) = result {
                self.remove_peer(now, id, Some(f));
            }
            self.pump(now);
        }
        if self.next_volume.is_some_and(|t| t <= now) {
            self.volume_tick(now);
        }
        if self.next_quality.is_some_and(|t| t <= now) {
            self.quality_tick();
        }
        if self.rooms.is_empty() {
            self.next_volume = None;
            self.next_quality = None;
        } else {
            let next = |t: Option<Instant>, every: Duration| {
                let mut t = t.unwrap_or(now + every);
                while t <= now {
                    t += every;
                }
                Some(t)
            };
            self.next_volume = next(self.next_volume, self.cfg.volume_interval);
            self.next_quality = next(self.next_quality, self.cfg.quality_interval);
        }
    }

    // ---- commands ----

    #[allow(clippy::too_many_arguments)]
    fn offer(
        &mut self,
        now: Instant,
        call_id: &str,
        user: &str,
        sdp: &str,
        video: bool,
        state: MemberMedia,
        ticket: Ticket,
    ) {
        let offer = if sdp.len() > MAX_SDP_BYTES {
            Err(MediaError::BadSdp("larger than 64 KiB".into()))
        } else {
            SdpOffer::from_sdp_string(sdp).map_err(|e| MediaError::BadSdp(e.to_string()))
        };
        let offer = match offer {
            Ok(o) => o,
            Err(e) => return self.reply(ticket, Err(e)),
        };
        let id = self.next_id();
        let mut sink = Sink {
            out: &mut self.out,
            events: &mut self.events,
        };
        let advertised = self.cfg.advertised;
        let accepted = Peer::accept(
            id, now, advertised, call_id, user, offer, video, state, &mut sink,
        );
        let (peer, answer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                self.events.retain(|(p, _)| *p != id);
                return self.reply(ticket, Err(e));
            }
        };
        // A new offer replaces the member's Peer (a reconnect, or an ICE restart).
        if let Some(old) = self.member(call_id, user) {
            self.remove_peer(now, old, None);
        }
        self.router.add_peer(&peer.ufrag, id);
        self.insert(id, peer);
        self.schedule(id);
        let room = self.rooms.entry(call_id.to_string()).or_default();
        room.join(user, id);
        // Subscribe the newcomer to what the others already publish.
        let others: Vec<PeerId> = room.peers().filter(|p| *p != id).collect();
        for other in others {
            let tracks: Vec<(Mid, MediaKind, String)> = match self.peer(other) {
                Some(o) => o
                    .tracks
                    .iter()
                    .map(|t| (t.mid, t.kind, o.user.clone()))
                    .collect(),
                None => continue,
            };
            for (mid, kind, publisher) in tracks {
                self.subscribe(id, other, &publisher, mid, kind);
            }
        }
        self.next_volume
            .get_or_insert(now + self.cfg.volume_interval);
        self.next_quality
            .get_or_insert(now + self.cfg.quality_interval);
        // Learn its tracks (MediaAdded) and tell the others, then answer, then our offer.
        self.pump(now);
        self.reply(ticket, Ok(Some(answer)));
        if let Some(p) = slot_peer(&mut self.slots, id) {
            p.replied = true;
        }
        self.negotiate(now, id);
    }

    fn answer(&mut self, now: Instant, call_id: &str, user: &str, sdp: &str, ticket: Ticket) {
        let Some(id) = self.member(call_id, user) else {
            return self.reply(ticket, Err(MediaError::NoPeer));
        };
        let answer = if sdp.len() > MAX_SDP_BYTES {
            Err(MediaError::BadSdp("larger than 64 KiB".into()))
        } else {
            SdpAnswer::from_sdp_string(sdp).map_err(|e| MediaError::BadSdp(e.to_string()))
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => return self.reply(ticket, Err(e)),
        };
        let Some(peer) = slot_peer(&mut self.slots, id) else {
            return self.reply(ticket, Err(MediaError::NoPeer));
        };
        let mut sink = Sink {
            out: &mut self.out,
            events: &mut self.events,
        };
        let result = peer.accept_answer(now, answer, &mut sink);
        self.schedule(id);
        match result {
            Err(f) => {
                self.remove_peer(now, id, Some(f));
                self.reply(
                    ticket,
                    Err(MediaError::BadSdp("answer could not be handled".into())),
                );
            }
            Ok(Err(e)) => self.reply(ticket, Err(e)),
            Ok(Ok(opened)) => {
                self.reply(ticket, Ok(None));
                // A new subscriber needs a keyframe to start decoding.
                for (source, mid) in opened {
                    self.request_keyframe(now, source, mid, KeyframeRequestKind::Pli);
                }
            }
        }
        self.pump(now);
        self.negotiate(now, id);
    }

    fn candidate(&mut self, now: Instant, call_id: &str, user: &str, candidate: &str) {
        let Some(id) = self.member(call_id, user) else {
            return;
        };
        let text = candidate.strip_prefix("candidate:").unwrap_or(candidate);
        let Ok(c) = Candidate::from_sdp_string(&format!("candidate:{text}")) else {
            return;
        };
        let Some(peer) = slot_peer(&mut self.slots, id) else {
            return;
        };
        let mut sink = Sink {
            out: &mut self.out,
            events: &mut self.events,
        };
        let result = peer.add_candidate(now, c, &mut sink);
        self.schedule(id);
        if let Err(f) = result {
            self.remove_peer(now, id, Some(f));
        }
    }

    // ---- what Peers reported ----

    /// Acts on everything drained Peers reported, including what acting on it reports.
    fn pump(&mut self, now: Instant) {
        while let Some((id, event)) = self.events.pop_front() {
            self.on_peer_event(now, id, event);
        }
    }

    fn on_peer_event(&mut self, now: Instant, id: PeerId, event: PeerEvent) {
        let Some(peer) = slot_peer(&mut self.slots, id) else {
            return;
        };
        match event {
            PeerEvent::IceConnected => peer.ice_connected = true,
            PeerEvent::Connected => {
                peer.connected = true;
                self.counters.peers_connected += 1;
            }
            PeerEvent::IceDisconnected => self.counters.ice_disconnects += 1,
            PeerEvent::MediaAdded(mid, kind) => {
                if (kind == MediaKind::Audio || peer.video)
                    && !peer.tracks.iter().any(|t| t.mid == mid)
                {
                    let muted = peer.state.muted(kind) || peer.state.held;
                    peer.tracks.push(Track::new(mid, kind, muted));
                    self.publish(now, id, mid, kind);
                }
            }
            PeerEvent::Rtp(mid, pkt) => self.on_rtp(now, id, mid, &pkt),
            PeerEvent::KeyframeRequest(mid, kind) => {
                self.counters.keyframe_requests_in += 1;
                if let Some(s) = peer.subs.by_open_mid(mid) {
                    let (source, source_mid) = (s.source, s.source_mid);
                    self.request_keyframe(now, source, source_mid, kind);
                }
            }
            PeerEvent::Egress(s) => {
                let audio = peer
                    .subs
                    .by_open_mid(s.mid)
                    .is_some_and(|t| t.kind == MediaKind::Audio);
                self.counters.nacks_in += peer.quality.on_egress(&s, audio);
            }
            PeerEvent::Ingress(s) => peer.quality.on_ingress(&s),
        }
    }

    /// Member `id` published track `mid`: every other member of the call subscribes.
    fn publish(&mut self, now: Instant, id: PeerId, mid: Mid, kind: MediaKind) {
        let Some(peer) = self.peer(id) else {
            return;
        };
        let publisher = peer.user.clone();
        let others: Vec<PeerId> = match self.rooms.get(&peer.call_id) {
            Some(r) => r.peers().filter(|p| *p != id).collect(),
            None => return,
        };
        for other in others {
            self.subscribe(other, id, &publisher, mid, kind);
            self.negotiate(now, other);
        }
    }

    /// `subscriber` receives `publisher`'s track `mid` (from our next offer on).
    fn subscribe(
        &mut self,
        subscriber: PeerId,
        publisher: PeerId,
        user: &str,
        mid: Mid,
        kind: MediaKind,
    ) {
        let Some(s) = slot_peer(&mut self.slots, subscriber) else {
            return;
        };
        if s.subs.find(publisher, mid).is_some() {
            return;
        }
        let sub = s.subs.insert(Subscription::new(publisher, user, mid, kind));
        if let Some(room) = self.rooms.get_mut(&s.call_id) {
            room.subscribe(publisher, mid, subscriber, sub);
        }
    }

    /// One packet of `from`'s track `mid`: booked, then forwarded to every subscription of it
    /// (or withheld, leaving no gap, while its publisher is muted or held).
    fn on_rtp(&mut self, now: Instant, from: PeerId, mid: Mid, pkt: &RtpPacket) {
        let Some(publisher) = slot_peer(&mut self.slots, from) else {
            return;
        };
        let pt_in = *pkt.header.payload_type;
        let Some(track) = publisher.tracks.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        let kind = track.kind;
        let k = kind_index(kind);
        self.counters.rtp_in_packets[k] += 1;
        self.counters.rtp_in_bytes[k] += pkt.payload.len() as u64;
        let received = track.on_packet(Arrival::of(pkt), now);
        let withheld = publisher.state.held || publisher.state.muted(kind);
        if kind == MediaKind::Audio
            && !withheld
            && let Some(level) = track.audio_level(pkt)
        {
            let secs = received.duration.as_secs_f64();
            publisher.volume.0 += energy(level) * secs;
            publisher.volume.1 += secs;
        }
        let epoch = track.epoch;
        if let Some(available) = received.available {
            self.out.push_back(MediaEvent::Available {
                call_id: publisher.call_id.clone(),
                user: publisher.user.clone(),
                kind,
                available,
            });
        }
        let params = publisher.params_of(pt_in);
        let Some(room) = self.rooms.get(&publisher.call_id) else {
            return;
        };
        let mut subs = std::mem::take(&mut self.scratch);
        subs.clear();
        subs.extend_from_slice(room.subscribers(from, mid));
        let ext = ExtensionValues {
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            video_orientation: pkt.header.ext_vals.video_orientation,
            ..Default::default()
        };
        for &(sub_peer, sub) in &subs {
            let Some(peer) = slot_peer(&mut self.slots, sub_peer) else {
                continue;
            };
            let Some(params) = params.filter(|_| !withheld) else {
                if let Some(s) = peer.subs.get_mut(sub) {
                    s.withhold(*pkt.seq_no, epoch);
                }
                continue;
            };
            let f = Forward {
                pkt,
                params,
                epoch,
                ext: &ext,
            };
            let mut sink = Sink {
                out: &mut self.out,
                events: &mut self.events,
            };
            match peer.forward(now, sub, &f, &mut sink) {
                Ok(true) => {
                    self.counters.rtp_out_packets[k] += 1;
                    self.counters.rtp_out_bytes[k] += pkt.payload.len() as u64;
                }
                Ok(false) => {}
                Err(f) => {
                    self.schedule(sub_peer);
                    self.remove_peer(now, sub_peer, Some(f));
                    continue;
                }
            }
            self.schedule(sub_peer);
        }
        self.scratch = subs;
        if received.new_source && kind == MediaKind::Video {
            // The subscribers' decoders need a keyframe of the new source.
            self.request_keyframe(now, from, mid, KeyframeRequestKind::Pli);
        }
    }

    fn request_keyframe(
        &mut self,
        now: Instant,
        source: PeerId,
        mid: Mid,
        kind: KeyframeRequestKind,
    ) {
        let Some(p) = slot_peer(&mut self.slots, source) else {
            return;
        };
        let Some(t) = p.tracks.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        if t.kind != MediaKind::Video || !t.keyframe.allow(now) {
            return;
        }
        let ssrc = t.ssrc();
        let mut sink = Sink {
            out: &mut self.out,
            events: &mut self.events,
        };
        match p.request_keyframe(now, mid, ssrc, kind, &mut sink) {
            Ok(sent) => self.counters.keyframe_requests_out += u64::from(sent),
            Err(f) => self.remove_peer(now, source, Some(f)),
        }
        self.schedule(source);
    }

    /// Sends our offer for whatever this Peer's subscriptions need, if it may.
    fn negotiate(&mut self, now: Instant, id: PeerId) {
        let Some(peer) = slot_peer(&mut self.slots, id) else {
            return;
        };
        let mut sink = Sink {
            out: &mut self.out,
            events: &mut self.events,
        };
        let result = peer.negotiate(now, &mut sink);
        match result {
            Ok(Some(sdp)) => self.out.push_back(MediaEvent::Offer {
                call_id: peer.call_id.clone(),
                user: peer.user.clone(),
                sdp,
            }),
            Ok(None) => {}
            Err(f) => self.remove_peer(now, id, Some(f)),
        }
        self.schedule(id);
    }
}

/// Applies the call model's mute/hold state to a Peer's tracks' availability.
fn set_state(p: &mut Peer, state: MemberMedia) {
    p.state = state;
    for t in &mut p.tracks {
        t.availability.set_muted(state.muted(t.kind) || state.held);
    }
}

fn slot_peer(slots: &mut [Slot], id: PeerId) -> Option<&mut Peer> {
    let slot = slots.get_mut(id.index())?;
    if slot.generation != id.generation() {
        return None;
    }
    slot.peer.as_mut()
}

mod lifecycle;
mod reports;
