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

use str0m::media::{MediaKind, Mid, Rid};
use str0m::net::{DatagramRecv, Protocol, Receive};

use super::command::{Command, MemberMedia};
use super::event::{Failure, MediaEvent};
use super::peer::{Peer, PeerEvent, PeerId, Sink};
use super::room::{Fan, Room};
use super::router::Router;
use super::subscription::SubId;

/// A Peer that has not connected (ICE + DTLS) this long after its offer is given up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A Peer's source address silent this long may make room for a new one.
pub const ADDRESS_IDLE: Duration = Duration::from_secs(2);
/// Stopped m-lines in a member's session after which we ask for a new offer
/// ([`MediaEvent::Reoffer`]), so their SDP size follows the tracks alive now, not the call's
/// history (each stopped m-line keeps about 300 bytes of SDP; 64 KiB holds about 200).
pub const COMPACT_AFTER: u32 = 16;
/// The default [`MediaConfig::tick`].
pub const DEFAULT_TICK: Duration = Duration::from_millis(10);
/// Largest SDP we look at.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// What one member's Peer may grow to; beyond these, the excess is dropped and counted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MediaLimits {
    /// Published tracks per kind (audio, video) forwarded to the others.
    pub tracks_per_kind: usize,
    /// m-lines in a member's offer; a larger offer is refused.
    pub offer_mlines: usize,
    /// Source addresses remembered per Peer; a new one beyond this replaces one silent for
    /// [`ADDRESS_IDLE`], or is refused.
    pub addresses: usize,
    /// Trickled remote candidates per Peer.
    pub candidates: usize,
    /// Datagrams per second from one Peer (bursts of one second's worth).
    pub packet_rate: u32,
    /// Seconds of Opus decoded per second for a publisher without the audio-level extension.
    pub decode_budget: f64,
}

impl Default for MediaLimits {
    fn default() -> Self {
        Self {
            tracks_per_kind: 3,
            offer_mlines: 16,
            addresses: 8,
            candidates: 32,
            packet_rate: 2000,
            decode_budget: 1.2,
        }
    }
}

#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// The host candidate advertised to clients (`--media-ip` and the worker's port). Every
    /// datagram is taken as received on this address (str0m drops STUN to unknown addresses).
    pub advertised: SocketAddr,
    /// The passive ICE-TCP candidate (RFC 6544), when the worker listens for TCP; frames of
    /// its connections are taken as received on it.
    pub advertised_tcp: Option<SocketAddr>,
    /// How often `quality` is reported per member and direction.
    pub quality_interval: Duration,
    /// How often `volume` is reported per call (and availability checked).
    pub volume_interval: Duration,
    pub limits: MediaLimits,
    /// Timer deadlines are served on a grid of this step (zero: each at its instant); see
    /// [`super::tick`] for why the default is safe.
    pub tick: Duration,
    /// Estimate each video-call subscriber's downlink (str0m's GCC, paced sending) and fit its
    /// simulcast layers to it (`--bwe`; off by default). Off, layers follow `subscribe` only.
    pub bwe: bool,
}

impl MediaConfig {
    pub fn new(advertised: SocketAddr) -> Self {
        Self {
            advertised,
            advertised_tcp: None,
            quality_interval: Duration::from_secs(5),
            volume_interval: Duration::from_millis(300),
            limits: MediaLimits::default(),
            tick: DEFAULT_TICK,
            bwe: false,
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
    /// Datagrams over a Peer's packet-rate ceiling, dropped before decryption.
    pub datagrams_over_rate: u64,
    /// What a cap refused: tracks over the per-kind cap, candidates over the cap, source
    /// addresses refused (the list is full of active ones), Opus packets not decoded (budget spent).
    pub tracks_refused: u64,
    pub candidates_refused: u64,
    pub addresses_refused: u64,
    pub decodes_skipped: u64,
    pub peers_connected: u64,
    /// Simulcast: packets of a layer beyond the three forwarded, and layer switches made.
    pub layers_refused: u64,
    pub layer_switches: u64,
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
    /// Peers' wake-ups: (when it is served, the Peer, the instant str0m asked for). Served on
    /// the tick grid, or at the instant itself for a paced Peer.
    timers: BinaryHeap<Reverse<(Instant, PeerId, Instant)>>,
    /// Peers whose str0m asked for a timeout at once, with the instant it asked (served off
    /// the grid: a forwarded packet waits in str0m until then), the earliest such instant,
    /// and a spare list so serving them allocates nothing.
    urgent: Vec<(Instant, PeerId)>,
    urgent_at: Option<Instant>,
    urgent_spare: Vec<(Instant, PeerId)>,
    out: VecDeque<MediaEvent>,
    /// What drained Peers reported, acted on by [`MediaCore::pump`].
    events: VecDeque<(PeerId, PeerEvent)>,
    counters: MediaCounters,
    /// Reused for the subscribers of one packet, to avoid an allocation per packet.
    scratch: Vec<Fan>,
    /// Fan-out entries whose simulcast layers changed while forwarding a packet (reused).
    fanout_changed: Vec<(PeerId, SubId, [Option<Rid>; 2])>,
    /// Simulcast layers whose keyframe a re-targeted subscription waits for (reused).
    keyframes_wanted: Vec<(PeerId, Mid, Rid)>,
    next_volume: Option<Instant>,
    next_quality: Option<Instant>,
    /// Estimated subscribers, while [`MediaCore::reallocate`] visits them (reused).
    reallocating: Vec<PeerId>,
    /// Anchor of the tick grid: the first command's instant.
    epoch: Option<Instant>,
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
            urgent: Vec::new(),
            urgent_at: None,
            urgent_spare: Vec::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            counters: MediaCounters::default(),
            scratch: Vec::new(),
            keyframes_wanted: Vec::new(),
            fanout_changed: Vec::new(),
            next_volume: None,
            next_quality: None,
            reallocating: Vec::new(),
            epoch: None,
        }
    }

    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.out.pop_front()
    }

    /// When to call [`MediaCore::handle_timeout`] next: at once for a Peer holding written
    /// packets, otherwise the earliest deadline rounded up to the tick grid.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let peers = self.timers.peek().map(|Reverse((due, ..))| *due);
        let reports = [self.next_volume, self.next_quality]
            .into_iter()
            .flatten()
            .min()
            .map(|at| super::tick::round_up(at, self.epoch.unwrap_or(at), self.cfg.tick));
        [self.urgent_at, peers, reports].into_iter().flatten().min()
    }

    pub fn counters(&self) -> &MediaCounters {
        &self.counters
    }

    /// Peers alive on this worker.
    pub fn peers(&self) -> usize {
        self.slots.iter().filter(|s| s.peer.is_some()).count()
    }

    /// Connected Peers by how their media travels, in [`super::Transport::ALL`]'s order. O(Peers):
    /// for the once-a-second flush, not the packet path.
    pub fn peers_by_transport(&self) -> [usize; 3] {
        let mut n = [0; 3];
        for p in self.slots.iter().filter_map(|s| s.peer.as_ref()) {
            if p.connected {
                n[p.current_transport() as usize] += 1;
            }
        }
        n
    }

    /// Test hook: the next str0m mutation of `user`'s Peer in `call_id` panics, as a str0m bug
    /// would. Returns whether there is such a Peer.
    #[doc(hidden)]
    pub fn inject_panic(&mut self, call_id: &str, user: &str) -> bool {
        self.member_mut(call_id, user)
            .map(|p| p.inject_panic = true)
            .is_some()
    }

    /// Calls with at least one Peer on this worker.
    pub fn calls(&self) -> usize {
        self.rooms.len()
    }

    // ---- inputs ----

    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        self.epoch.get_or_insert(now);
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
            Command::Subscribe {
                call_id,
                user,
                publisher,
                video,
            } => self.set_video_choice(now, &call_id, &user, &publisher, video),
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
    #[inline]
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        self.handle_input(now, Protocol::Udp, source, contents);
    }

    /// One datagram from `source` over `proto`: UDP, or a frame of an ICE-TCP connection
    /// (RFC 4571), the connection named by the client's address.
    pub fn handle_input(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        contents: &[u8],
    ) {
        let destination = match proto {
            Protocol::Tcp => match self.cfg.advertised_tcp {
                Some(a) => a,
                None => {
                    self.counters.datagrams_unrouted += 1;
                    return;
                }
            },
            _ => self.cfg.advertised,
        };
        let key = (proto, source);
        let Some(id) = self.router.route(key, contents) else {
            self.counters.datagrams_unrouted += 1;
            return;
        };
        let Ok(Ok(contents)) = super::peer::guarded(|| DatagramRecv::try_from(contents)) else {
            self.counters.datagrams_unrouted += 1;
            return;
        };
        let receive = Receive {
            proto,
            source,
            destination,
            contents,
        };
        let Some(peer) = slot_peer(&mut self.slots, id) else {
            return;
        };
        if !peer.rate.take(now) {
            self.counters.datagrams_over_rate += 1;
            return;
        }
        let known = match peer.addrs.iter_mut().find(|(a, _)| *a == key) {
            Some(entry) => {
                entry.1 = now;
                true
            }
            None => false,
        };
        if !known {
            let probe = str0m::Input::Receive(now, receive);
            if !peer.accepts(&probe) {
                self.counters.datagrams_unrouted += 1;
                return;
            }
            let str0m::Input::Receive(_, r) = probe else {
                return;
            };
            // A member knows its ICE password, so it could register any number of (spoofed)
            // sources: the list is capped. An address silent for ADDRESS_IDLE makes room
            // (roaming works); one the member is using is never pushed out.
            if peer.addrs.len() >= self.cfg.limits.addresses.max(1) {
                let (i, idle) = peer
                    .addrs
                    .iter()
                    .enumerate()
                    .map(|(i, (_, seen))| (i, now.saturating_duration_since(*seen)))
                    .max_by_key(|(_, idle)| *idle)
                    .unwrap_or((0, Duration::ZERO));
                if idle < ADDRESS_IDLE {
                    self.counters.addresses_refused += 1;
                    return;
                }
                let (old, _) = peer.addrs.remove(i);
                self.router.forget(old, id);
            }
            peer.addrs.push((key, now));
            self.router.learn(key, id);
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
        if self.urgent_at.is_some_and(|t| t <= now) {
            let mut due = std::mem::take(&mut self.urgent_spare);
            std::mem::swap(&mut due, &mut self.urgent);
            self.urgent_at = None;
            for &(at, id) in &due {
                self.serve(now, at, id);
            }
            due.clear();
            self.urgent_spare = due;
        }
        while let Some(Reverse((due, id, at))) = self.timers.peek().copied() {
            if due > now {
                break;
            }
            self.timers.pop();
            self.serve(now, at, id);
        }
        if self.next_volume.is_some_and(|t| t <= now) {
            self.volume_tick(now);
            self.reallocate(now);
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
}

impl MediaCore {
    /// Peer `id`'s timeout, asked for at `at` (skipped if a later ask superseded it).
    fn serve(&mut self, now: Instant, at: Instant, id: PeerId) {
        let Some(peer) = slot_peer(&mut self.slots, id) else {
            return;
        };
        if peer.wake != Some(at) {
            return; // superseded
        }
        peer.wake = None;
        peer.urgent = false;
        if !peer.connected && now.saturating_duration_since(peer.created) >= CONNECT_TIMEOUT {
            let stage = if peer.ice_connected {
                Failure::Dtls
            } else {
                Failure::Ice
            };
            self.remove_peer(now, id, Some(stage));
            return;
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
}

/// Applies the call model's mute/hold state to a Peer's tracks' availability.
fn set_state(p: &mut Peer, state: MemberMedia) {
    p.state = state;
    for t in &mut p.tracks {
        t.availability.set_muted(state.muted(t.kind) || state.held);
    }
}

#[inline]
fn slot_peer(slots: &mut [Slot], id: PeerId) -> Option<&mut Peer> {
    let slot = slots.get_mut(id.index())?;
    if slot.generation != id.generation() {
        return None;
    }
    slot.peer.as_mut()
}

mod commands;
mod forwarding;
mod layers;
mod lifecycle;
mod reports;
