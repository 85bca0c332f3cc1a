//! An in-memory network for the media core: str0m client Peers and one `MediaCore` with a
//! virtual clock, injected loss and delay, and counting of what each client receives from
//! whom. Used by the deterministic media tests and the forwarding benchmark.
//!
//! Every test payload starts with the sender's index and the media kind (0 audio, 1 video),
//! then its sequence number, so receivers count exactly what they got from whom. Receivers
//! also book gaps in the sequence numbers the server wrote for them.
//!
//! With [`World::with_model`] the media core is driven by a real [`CallModel`] (a Pair, as in
//! quinn-proto's tests): clients log in, call, offer and answer through JSON-RPC requests, and
//! the model's media commands and the core's events flow between the two as in the server.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sfu::media::{Command, MediaConfig, MediaCore, MediaError, MediaEvent, MemberMedia};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

pub const CALL: &str = "call-1";
pub const AUDIO_EVERY: Duration = Duration::from_millis(20);
pub const VIDEO_EVERY: Duration = Duration::from_millis(33);

pub fn server_addr() -> SocketAddr {
    "10.0.0.1:5000".parse().unwrap()
}

mod bottleneck;
pub mod simulcast;

pub use bottleneck::Bottleneck;

/// A tiny deterministic PRNG (xorshift) for loss.
pub struct Rng(pub u64);
impl Rng {
    pub fn chance(&mut self, p: f64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

pub struct Client {
    pub name: String,
    pub index: u8,
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pub send: Vec<(Mid, MediaKind)>,
    pub seq: HashMap<Mid, u64>,
    /// (sender index, kind) -> packets received
    pub got: BTreeMap<(u8, u8), u64>,
    /// packets sent per kind
    pub sent: [u64; 2],
    pub keyframe_requests: u64,
    pub recv_mids: Vec<Mid>,
    pub sending: bool,
    /// RFC 6464 level (−dBov) written on every audio packet.
    pub level: u8,
    /// When set, audio is real Opus of a tone at `level` and carries no audio-level extension.
    pub opus: Option<opus::Encoder>,
    /// Our offer waiting for the server's answer, and the ticket (or request id) it went with.
    pub pending: Option<(u64, SdpPendingOffer)>,
    /// The mute/hold state the call model would hold for this member.
    pub state: MemberMedia,
    /// (sender, kind) -> highest sequence number received (as the server wrote it)
    pub last_seq: BTreeMap<(u8, u8), u64>,
    /// (sender, kind) -> sequence numbers skipped (gaps), and the largest single jump
    pub gaps: BTreeMap<(u8, u8), u64>,
    pub max_jump: u64,
    /// Packets sent per track per send tick (to compress long runs of virtual time).
    pub burst: u32,
    /// The server's last answer to this client's offer.
    pub answer_sdp: Option<String>,
    /// m-lines in the server's last offer to this client (its whole session).
    pub offer_mlines: usize,
    /// The longest time a received (non-Opus) packet took from its sender's write to here.
    pub max_transit: Duration,
    /// Set for a client that publishes its video as simulcast layers.
    pub simulcast: Option<[simulcast::SendLayer; 3]>,
    /// Simulcast video received, per sender.
    pub sim_seen: simulcast::Received,
}

impl Client {
    pub fn new(index: u8, name: &str, now: Instant) -> Self {
        let addr: SocketAddr = format!("10.0.1.{}:6000", index + 1).parse().unwrap();
        let mut rtc = client_rtc(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Self {
            name: name.to_string(),
            index,
            addr,
            rtc,
            send: Vec::new(),
            seq: HashMap::new(),
            got: BTreeMap::new(),
            sent: [0; 2],
            keyframe_requests: 0,
            recv_mids: Vec::new(),
            sending: true,
            level: 30,
            opus: None,
            pending: None,
            state: MemberMedia::default(),
            last_seq: BTreeMap::new(),
            gaps: BTreeMap::new(),
            max_jump: 0,
            burst: 1,
            answer_sdp: None,
            offer_mlines: 0,
            max_transit: Duration::ZERO,
            simulcast: None,
            sim_seen: simulcast::Received::new(),
        }
    }

    pub fn from(&self, sender: u8, kind: MediaKind) -> u64 {
        let k = if kind == MediaKind::Audio { 0 } else { 1 };
        self.got.get(&(sender, k)).copied().unwrap_or(0)
    }
}

fn client_rtc(now: Instant) -> Rtc {
    RtcConfig::new()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .set_rtcp_report_interval_audio(Duration::from_secs(1))
        .build(now)
}

/// Marks a synthetic payload that carries its send instant (bytes 10..18).
const TRANSIT_MARK: u8 = 0xA5;

pub struct Packet {
    pub at: Instant,
    pub seq: u64,
    /// UDP, or a frame of an ICE-TCP connection (reliable and in order: never lost or
    /// jittered here).
    pub proto: Protocol,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

impl PartialEq for Packet {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Packet {}
impl PartialOrd for Packet {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Packet {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

pub struct World {
    pub now: Instant,
    pub server: MediaCore,
    pub clients: Vec<Client>,
    pub net: BinaryHeap<Reverse<Packet>>,
    pub net_seq: u64,
    pub delay: Duration,
    /// Loss probability per (from, to) link.
    pub loss: HashMap<(SocketAddr, SocketAddr), f64>,
    /// Stratified media loss per link: (fraction, current block of drop decisions).
    pub media_loss: HashMap<(SocketAddr, SocketAddr), (f64, Vec<bool>)>,
    /// Uniform extra delay 0..=J per link.
    pub jitter: HashMap<(SocketAddr, SocketAddr), Duration>,
    /// Capped downlinks: a client's address → its bottleneck (a queue drained at its rate).
    pub downlink: HashMap<SocketAddr, Bottleneck>,
    pub media_dropped: u64,
    /// What the server reported (volume, quality, availability, failures), and when.
    pub notices: Vec<(Instant, MediaEvent)>,
    /// Replies to offers and answers, by ticket.
    pub replies: HashMap<u64, Result<Option<String>, MediaError>>,
    pub next_ticket: u64,
    /// The call model driving the core, when the world is a Pair.
    pub model: Option<crate::pair::Signaling>,
    pub rng: Rng,
    pub next_audio: Instant,
    pub next_video: Instant,
    /// The world's first instant (packets carry their send time from it).
    pub start: Instant,
    /// Times the loop woke for the server's timer alone (no packet or media due then).
    pub server_wakes: u64,
}

impl World {
    pub fn new() -> Self {
        Self::with_config(MediaConfig::new(server_addr()))
    }

    /// A world whose server has this media config (its address is always [`server_addr`]).
    pub fn with_config(cfg: MediaConfig) -> Self {
        let now = Instant::now();
        Self {
            now,
            server: MediaCore::new(MediaConfig {
                advertised: server_addr(),
                ..cfg
            }),
            clients: Vec::new(),
            net: BinaryHeap::new(),
            net_seq: 0,
            delay: Duration::from_millis(10),
            loss: HashMap::new(),
            media_loss: HashMap::new(),
            jitter: HashMap::new(),
            downlink: HashMap::new(),
            media_dropped: 0,
            notices: Vec::new(),
            replies: HashMap::new(),
            next_ticket: 0,
            model: None,
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            next_audio: now,
            next_video: now,
            start: now,
            server_wakes: 0,
        }
    }

    pub fn send(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        self.send_on(Protocol::Udp, from, to, data);
    }

    /// Sends over `proto`: TCP frames take the base delay only.
    pub fn send_on(&mut self, proto: Protocol, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        if proto == Protocol::Tcp {
            self.net_seq += 1;
            self.net.push(Reverse(Packet {
                at: self.now + self.delay,
                seq: self.net_seq,
                proto,
                from,
                to,
                data,
            }));
            return;
        }
        let p = self.loss.get(&(from, to)).copied().unwrap_or(0.0);
        if p > 0.0 && self.rng.chance(p) {
            return;
        }
        // Stratified loss on media packets only: exactly round(100·p) of every 100, at random
        // places, so a window's loss is what was injected (ICE and RTCP are never lost).
        let rtp = data.len() > 1 && data[0] >> 6 == 2 && !(200..=207).contains(&data[1]);
        if rtp && let Some(pattern) = self.media_loss.get_mut(&(from, to)) {
            if pattern.1.is_empty() {
                let dropped = (pattern.0 * 100.0).round() as usize;
                let mut block: Vec<bool> = (0..100).map(|i| i < dropped).collect();
                for i in (1..block.len()).rev() {
                    self.rng.chance(0.5);
                    let j = (self.rng.0 % (i as u64 + 1)) as usize;
                    block.swap(i, j);
                }
                pattern.1 = block;
            }
            if pattern.1.pop() == Some(true) {
                self.media_dropped += 1;
                return;
            }
        }
        // A capped downlink: the packet waits its turn in the bottleneck's queue (delay grows
        // as it fills, as the estimator expects of a real link), or is dropped when full.
        let mut queued = Duration::ZERO;
        if let Some(b) = self.downlink.get_mut(&to) {
            match b.enqueue(self.now, data.len()) {
                Some(wait) => queued = wait,
                None => return,
            }
        }
        let extra = match self.jitter.get(&(from, to)) {
            Some(j) if !j.is_zero() => {
                self.rng.chance(0.5);
                Duration::from_micros(self.rng.0 % (j.as_micros() as u64 + 1))
            }
            _ => Duration::ZERO,
        };
        self.net_seq += 1;
        self.net.push(Reverse(Packet {
            at: self.now + self.delay + extra + queued,
            seq: self.net_seq,
            proto: Protocol::Udp,
            from,
            to,
            data,
        }));
    }

    /// A member joins: their client offers its send tracks; the server answers.
    pub fn join(&mut self, name: &str, media: &[MediaKind]) -> usize {
        self.join_call(name, media, true)
    }

    /// Like [`World::join`], in an audio-only call when `video_call` is false.
    pub fn join_call(&mut self, name: &str, media: &[MediaKind], video_call: bool) -> usize {
        self.join_with(name, media, video_call, MemberMedia::default())
    }

    /// Joins with the given mute/hold state already set (as the call model would carry it).
    pub fn join_with(
        &mut self,
        name: &str,
        media: &[MediaKind],
        video_call: bool,
        state: MemberMedia,
    ) -> usize {
        let index = self.clients.len() as u8;
        let mut c = Client::new(index, name, self.now);
        c.state = state;
        self.clients.push(c);
        let i = self.clients.len() - 1;
        self.offer(i, media, video_call);
        i
    }

    /// Joins publishing its video as three simulcast layers (see [`simulcast`]).
    pub fn join_simulcast(&mut self, name: &str, media: &[MediaKind]) -> usize {
        let index = self.clients.len() as u8;
        let mut c = Client::new(index, name, self.now);
        let mut layers = [simulcast::SendLayer::default(); 3];
        for (i, l) in layers.iter_mut().enumerate() {
            // Far apart, so a stream forwarded without rewriting would show it.
            l.picture_id = 10_000 * i as u16;
            l.key_due = true;
        }
        c.simulcast = Some(layers);
        self.clients.push(c);
        let i = self.clients.len() - 1;
        self.offer(i, media, true);
        i
    }

    /// Joins over ICE-TCP: the client's only candidate is an active TCP one, so its media
    /// reaches the server's passive TCP candidate (the world needs `advertised_tcp`).
    pub fn join_tcp(&mut self, name: &str, media: &[MediaKind]) -> usize {
        let index = self.clients.len() as u8;
        let mut c = Client::new(index, name, self.now);
        c.rtc = client_rtc(self.now);
        c.rtc.add_local_candidate(
            Candidate::builder()
                .tcp()
                .host(c.addr)
                .tcptype(str0m::net::TcpType::Active)
                .build()
                .unwrap(),
        );
        self.clients.push(c);
        let i = self.clients.len() - 1;
        self.offer(i, media, true);
        i
    }

    /// Client `i` (re)connects: a fresh str0m Peer on the same address offers `media`, as a
    /// client does after a reconnect. What it received so far is kept.
    pub fn reconnect(&mut self, i: usize, media: &[MediaKind], video_call: bool) {
        let old = &self.clients[i];
        let mut c = Client::new(old.index, &old.name.clone(), self.now);
        c.state = old.state;
        c.got = old.got.clone();
        c.sent = old.sent;
        c.level = old.level;
        c.burst = old.burst;
        self.clients[i] = c;
        self.offer(i, media, video_call);
    }

    /// Client `i` offers to send `media` (its send tracks are those); returns the offer.
    pub fn client_offers(&mut self, i: usize, media: &[MediaKind]) -> (String, SdpPendingOffer) {
        let c = &mut self.clients[i];
        let mut api = c.rtc.sdp_api();
        let mut mids = Vec::new();
        for &k in media {
            let layers = (k == MediaKind::Video && c.simulcast.is_some()).then(simulcast::layers);
            mids.push((api.add_media(k, Direction::SendOnly, None, None, layers), k));
        }
        let (offer, pending) = api.apply().expect("an offer");
        c.send = mids;
        self.drain_client(i);
        (offer.to_sdp_string(), pending)
    }

    fn offer(&mut self, i: usize, media: &[MediaKind], video_call: bool) {
        let (offer, pending) = self.client_offers(i, media);
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        self.clients[i].pending = Some((ticket, pending));
        let (name, state) = (self.clients[i].name.clone(), self.clients[i].state);
        self.command(Command::Offer {
            call_id: CALL.into(),
            user: name,
            sdp: offer,
            video: video_call,
            state,
            ticket,
        });
        assert!(
            matches!(self.replies.get(&ticket), Some(Ok(Some(_)))),
            "server answers: {:?}",
            self.replies.get(&ticket)
        );
    }

    /// Hands a command to the server and carries out what follows.
    pub fn command(&mut self, cmd: Command) {
        self.server.handle_command(self.now, cmd);
        self.drain_server();
    }

    /// Sets member `i`'s mute state (`None` keeps it), as the call model would.
    pub fn mute(&mut self, i: usize, audio: Option<bool>, video: Option<bool>) {
        let c = &mut self.clients[i];
        if let Some(a) = audio {
            c.state.audio_muted = a;
        }
        if let Some(v) = video {
            c.state.video_muted = v;
        }
        self.set_state(i);
    }

    pub fn hold(&mut self, i: usize, held: bool) {
        self.clients[i].state.held = held;
        self.set_state(i);
    }

    fn set_state(&mut self, i: usize) {
        let (user, state) = (self.clients[i].name.clone(), self.clients[i].state);
        self.command(Command::SetState {
            call_id: CALL.into(),
            user,
            state,
        });
    }

    pub fn leave(&mut self, i: usize) {
        let user = self.clients[i].name.clone();
        self.clients[i].sending = false;
        self.command(Command::Leave {
            call_id: CALL.into(),
            user,
        });
    }

    pub fn end_call(&mut self) {
        self.command(Command::EndCall {
            call_id: CALL.into(),
        });
    }

    pub fn drain_client(&mut self, i: usize) {
        loop {
            let out = self.clients[i].rtc.poll_output().expect("client poll");
            match out {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    let from = self.clients[i].addr;
                    self.send_on(t.proto, from, t.destination, t.contents.to_vec());
                }
                Output::Event(e) => {
                    let c = &mut self.clients[i];
                    match e {
                        Event::RtpPacket(p) => {
                            let (mut sender, mut kind) = (p.payload[0], p.payload[1]);
                            if let Some((s, layer, key, pid)) = simulcast::parse(&p.payload) {
                                (sender, kind) = (s, 1);
                                let now = self.now;
                                c.sim_seen
                                    .entry(s)
                                    .or_default()
                                    .on_packet(layer, key, pid, now);
                            }
                            if matches!(p.payload.len(), 80 | 900) && p.payload[18] == TRANSIT_MARK
                            {
                                let mut ns = [0u8; 8];
                                ns.copy_from_slice(&p.payload[10..18]);
                                let sent =
                                    self.start + Duration::from_nanos(u64::from_be_bytes(ns));
                                c.max_transit = c.max_transit.max(self.now - sent);
                            }
                            *c.got.entry((sender, kind)).or_default() += 1;
                            let seq = *p.seq_no;
                            let last = c.last_seq.entry((sender, kind)).or_insert(seq - 1);
                            if seq > *last {
                                let jump = seq - *last;
                                c.max_jump = c.max_jump.max(jump);
                                *c.gaps.entry((sender, kind)).or_default() += jump - 1;
                                *last = seq;
                            }
                        }
                        Event::KeyframeRequest(r) => {
                            c.keyframe_requests += 1;
                            if let (Some(layers), Some(i)) =
                                (c.simulcast.as_mut(), r.rid.and_then(simulcast::layer_index))
                            {
                                layers[i].key_due = true;
                            }
                        }
                        Event::MediaAdded(m) if m.direction.is_receiving() => {
                            c.recv_mids.push(m.mid)
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Carries out what the server produced: datagrams onto the network, replies to the
    /// clients' offers, our offers answered by the clients; reports are kept in `notices`.
    pub fn drain_server(&mut self) {
        loop {
            let Some(ev) = self.server.poll_event() else {
                if self.model.is_some() && crate::pair::settle(self) {
                    continue;
                }
                return;
            };
            match ev {
                MediaEvent::Transmit {
                    proto,
                    destination,
                    contents,
                } => self.send_on(proto, server_addr(), destination, contents.to_vec()),
                ev if self.model.is_some() => crate::pair::to_model(self, ev),
                MediaEvent::Reply { ticket, result } => {
                    self.answered(ticket, result.as_ref().ok().cloned().flatten());
                    self.replies.insert(ticket, result);
                }
                MediaEvent::Offer { user, sdp, .. } => {
                    let i = self
                        .clients
                        .iter()
                        .position(|c| c.name == user)
                        .expect("offer for a known client");
                    self.clients[i].offer_mlines = sdp.matches("\nm=").count();
                    let answer = self.client_answers(i, &sdp);
                    self.next_ticket += 1;
                    let ticket = self.next_ticket;
                    self.server.handle_command(
                        self.now,
                        Command::Answer {
                            call_id: CALL.into(),
                            user,
                            sdp: answer,
                            ticket,
                        },
                    );
                }
                other => self.notices.push((self.now, other)),
            }
        }
    }

    /// The server's answer `sdp` to the client offer sent with `ticket`.
    pub fn answered(&mut self, ticket: u64, sdp: Option<String>) {
        let Some(i) = self
            .clients
            .iter()
            .position(|c| c.pending.as_ref().is_some_and(|(t, _)| *t == ticket))
        else {
            return;
        };
        let Some((_, pending)) = self.clients[i].pending.take() else {
            return;
        };
        if let Some(sdp) = sdp {
            self.clients[i].answer_sdp = Some(sdp.clone());
            self.clients[i]
                .rtc
                .sdp_api()
                .accept_answer(pending, SdpAnswer::from_sdp_string(&sdp).unwrap())
                .expect("client accepts the answer");
            self.drain_client(i);
        }
    }

    /// Client `i` accepts our offer; returns its answer.
    pub fn client_answers(&mut self, i: usize, sdp: &str) -> String {
        assert!(
            self.clients[i].pending.is_none(),
            "{}: the server offered before answering the client's offer",
            self.clients[i].name
        );
        let answer = self.clients[i]
            .rtc
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(sdp).unwrap())
            .expect("client accepts our offer");
        self.drain_client(i);
        answer.to_sdp_string()
    }

    pub fn send_media(&mut self, kind: MediaKind) {
        let sent_ns = (self.now - self.start).as_nanos() as u64;
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if !c.sending || !c.rtc.is_connected() {
                continue;
            }
            let codec = if kind == MediaKind::Audio {
                Codec::Opus
            } else {
                Codec::Vp8
            };
            let Some(pt) = c
                .rtc
                .codec_config()
                .find(|p| p.spec().codec == codec)
                .map(|p| p.pt())
            else {
                continue;
            };
            let burst = c.burst as usize;
            let tracks: Vec<(Mid, MediaKind)> = c
                .send
                .iter()
                .flat_map(|&t| std::iter::repeat_n(t, burst))
                .collect();
            for (mid, k) in tracks {
                if k != kind {
                    continue;
                }
                if kind == MediaKind::Video && c.simulcast.is_some() {
                    simulcast::frame(c, mid, pt, self.now);
                    continue;
                }
                let seq = c.seq.entry(mid).or_insert(0);
                *seq += 1;
                let n = *seq;
                let k_byte = if kind == MediaKind::Audio { 0 } else { 1 };
                let mut payload = vec![c.index, k_byte];
                payload.extend_from_slice(&n.to_be_bytes());
                payload.extend_from_slice(&sent_ns.to_be_bytes());
                payload.push(TRANSIT_MARK);
                payload.resize(if kind == MediaKind::Audio { 80 } else { 900 }, 0);
                let mut ext = ExtensionValues {
                    audio_level: Some(-(c.level.min(127) as i8)),
                    voice_activity: Some(true),
                    ..Default::default()
                };
                if kind == MediaKind::Audio
                    && let Some(enc) = c.opus.as_mut()
                {
                    // Real Opus of a 440 Hz tone at the client's level, and no extension.
                    let amplitude = 10f64.powf(-(f64::from(c.level) - 3.0) / 20.0);
                    let pcm: Vec<i16> = (0..960u64)
                        .map(|i| {
                            let t = (n * 960 + i) as f64 / 48_000.0;
                            let s = (2.0 * std::f64::consts::PI * 440.0 * t).sin();
                            (amplitude * 32767.0 * s) as i16
                        })
                        .collect();
                    let mut out = [0u8; 1500];
                    if let Ok(len) = enc.encode(&pcm, &mut out) {
                        payload = out[..len].to_vec();
                    }
                    ext.audio_level = None;
                    ext.voice_activity = None;
                }
                let ts = if kind == MediaKind::Audio {
                    (n * 960) as u32
                } else {
                    (n * 3000) as u32
                };
                let now = self.now;
                if let Some(tx) = c.rtc.direct_api().stream_tx_by_mid(mid, None) {
                    tx.write_rtp(
                        RtpWrite::new(pt, n.into(), ts, now, payload)
                            .marker(true)
                            .ext_vals(ext)
                            .nackable(kind == MediaKind::Video),
                    );
                    c.sent[k_byte as usize] += 1;
                }
            }
            // str0m sends a written packet on its next timeout (0.25: `SendStream`).
            let now = self.now;
            let _ = self.clients[i].rtc.handle_input(Input::Timeout(now));
            self.drain_client(i);
        }
    }

    /// Hands the server one datagram at `at` as its worker does: then the timeout the core
    /// asks for at once (str0m stamps, encrypts and sends written packets there), then its
    /// output drained and dropped. Returns how many datagrams it sent.
    pub fn serve_datagram(&mut self, at: Instant, from: SocketAddr, data: &[u8]) -> usize {
        self.server.handle_datagram(at, from, data);
        if self.server.poll_timeout().is_some_and(|t| t <= at) {
            self.server.handle_timeout(at);
        }
        let mut sent = 0;
        while let Some(e) = self.server.poll_event() {
            sent += usize::from(matches!(e, MediaEvent::Transmit { .. }));
        }
        sent
    }

    /// Runs the world for `d` of virtual time.
    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let mut next = end.min(self.next_audio).min(self.next_video);
            if let Some(Reverse(p)) = self.net.peek() {
                next = next.min(p.at);
            }
            let mut timer_only = false;
            if let Some(t) = self.server.poll_timeout()
                && t < next
            {
                next = t;
                timer_only = true;
            }
            next = next.max(self.now);
            if next > end {
                break;
            }
            self.server_wakes += u64::from(timer_only);
            self.now = next;
            while self.net.peek().is_some_and(|Reverse(p)| p.at <= self.now) {
                let Reverse(p) = self.net.pop().unwrap();
                if p.to == server_addr() {
                    self.server.handle_input(self.now, p.proto, p.from, &p.data);
                    self.drain_server();
                } else if let Some(i) = self.clients.iter().position(|c| c.addr == p.to) {
                    let input = Input::Receive(
                        self.now,
                        Receive {
                            proto: p.proto,
                            source: p.from,
                            destination: p.to,
                            contents: p.data.as_slice().try_into().unwrap(),
                        },
                    );
                    if self.clients[i].rtc.accepts(&input) {
                        self.clients[i].rtc.handle_input(input).unwrap();
                        self.drain_client(i);
                    }
                }
            }
            // As a real shell: the core's timeout only when it asked for one.
            if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
                self.server.handle_timeout(self.now);
                self.drain_server();
            }
            for i in 0..self.clients.len() {
                self.clients[i]
                    .rtc
                    .handle_input(Input::Timeout(self.now))
                    .unwrap();
                self.drain_client(i);
            }
            if self.now >= self.next_audio {
                self.send_media(MediaKind::Audio);
                self.next_audio += AUDIO_EVERY;
            }
            if self.now >= self.next_video {
                self.send_media(MediaKind::Video);
                self.next_video += VIDEO_EVERY;
            }
            if self.now >= end {
                break;
            }
        }
    }

    /// Counters at this moment: sent per client, got per (receiver, sender, kind).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            sent: self.clients.iter().map(|c| c.sent).collect(),
            got: self.clients.iter().map(|c| c.got.clone()).collect(),
        }
    }

    pub fn resume(&mut self) {
        for c in &mut self.clients {
            c.sending = true;
        }
    }

    /// Stops every sender and lets in-flight packets land.
    pub fn quiesce(&mut self) {
        for c in &mut self.clients {
            c.sending = false;
        }
        self.run(Duration::from_millis(500));
    }
}

pub struct Snapshot {
    pub sent: Vec<[u64; 2]>,
    pub got: Vec<BTreeMap<(u8, u8), u64>>,
}

impl Snapshot {
    pub fn sent(&self, i: usize, kind: MediaKind) -> u64 {
        self.sent[i][if kind == MediaKind::Audio { 0 } else { 1 }]
    }
    pub fn got(&self, receiver: usize, sender: usize, kind: MediaKind) -> u64 {
        let k = if kind == MediaKind::Audio { 0 } else { 1 };
        self.got[receiver]
            .get(&(sender as u8, k))
            .copied()
            .unwrap_or(0)
    }
}

/// Runs a call of `n` members publishing `media`; returns (before, after) snapshots around a
/// measured window of `secs` seconds that starts once everyone receives everyone.
pub fn measured_call(
    w: &mut World,
    names: &[&str],
    media: &[MediaKind],
    secs: u64,
) -> (Snapshot, Snapshot) {
    for n in names {
        w.join(n, media);
    }
    w.run(Duration::from_secs(3));
    for r in 0..names.len() {
        for s in 0..names.len() {
            if r == s {
                continue;
            }
            for &k in media {
                assert!(
                    w.clients[r].from(s as u8, k) > 0,
                    "{} hears nothing of {}'s {k:?} after warm-up",
                    names[r],
                    names[s]
                );
            }
        }
    }
    // Nothing in flight at either edge of the window.
    w.quiesce();
    let before = w.snapshot();
    w.resume();
    w.run(Duration::from_secs(secs));
    w.quiesce();
    let after = w.snapshot();
    w.resume();
    (before, after)
}

pub fn assert_exact_mesh(before: &Snapshot, after: &Snapshot, n: usize, media: &[MediaKind]) {
    for r in 0..n {
        assert_eq!(
            after.got[r]
                .keys()
                .filter(|(s, _)| *s as usize == r)
                .count(),
            0,
            "member {r} received its own media"
        );
        for s in 0..n {
            if r == s {
                continue;
            }
            for &k in media {
                let sent = after.sent(s, k) - before.sent(s, k);
                let got = after.got(r, s, k) - before.got(r, s, k);
                assert!(sent > 0);
                assert_eq!(got, sent, "{k:?} from {s} to {r}");
            }
        }
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}
