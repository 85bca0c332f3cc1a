//! Deterministic tests of the media core: str0m client Peers and one `MediaCore` over an
//! in-memory network with a virtual clock and injected loss and delay. No sockets, no sleeps.
//!
//! Every test payload starts with the sender's index and the media kind, so each receiver can
//! count exactly what it got from whom.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sfu::media::{MediaConfig, MediaCore, MediaOutput};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

const CALL: &str = "call-1";
const AUDIO_EVERY: Duration = Duration::from_millis(20);
const VIDEO_EVERY: Duration = Duration::from_millis(33);

fn server_addr() -> SocketAddr {
    "10.0.0.1:5000".parse().unwrap()
}

/// A tiny deterministic PRNG (xorshift) for loss.
struct Rng(u64);
impl Rng {
    fn chance(&mut self, p: f64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

struct Client {
    name: String,
    index: u8,
    addr: SocketAddr,
    rtc: Rtc,
    send: Vec<(Mid, MediaKind)>,
    seq: HashMap<Mid, u64>,
    /// (sender index, kind) -> packets received
    got: BTreeMap<(u8, u8), u64>,
    /// packets sent per kind
    sent: [u64; 2],
    keyframe_requests: u64,
    recv_mids: Vec<Mid>,
    sending: bool,
}

impl Client {
    fn new(index: u8, name: &str, now: Instant) -> Self {
        let addr: SocketAddr = format!("10.0.1.{}:6000", index + 1).parse().unwrap();
        let mut rtc = RtcConfig::new()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(now);
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
        }
    }

    fn from(&self, sender: u8, kind: MediaKind) -> u64 {
        let k = if kind == MediaKind::Audio { 0 } else { 1 };
        self.got.get(&(sender, k)).copied().unwrap_or(0)
    }
}

struct Packet {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
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

struct World {
    now: Instant,
    server: MediaCore,
    clients: Vec<Client>,
    net: BinaryHeap<Reverse<Packet>>,
    net_seq: u64,
    delay: Duration,
    /// Loss probability per (from, to) link.
    loss: HashMap<(SocketAddr, SocketAddr), f64>,
    rng: Rng,
    next_audio: Instant,
    next_video: Instant,
}

impl World {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            now,
            server: MediaCore::new(MediaConfig {
                advertised: server_addr(),
            }),
            clients: Vec::new(),
            net: BinaryHeap::new(),
            net_seq: 0,
            delay: Duration::from_millis(10),
            loss: HashMap::new(),
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            next_audio: now,
            next_video: now,
        }
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        let p = self.loss.get(&(from, to)).copied().unwrap_or(0.0);
        if p > 0.0 && self.rng.chance(p) {
            return;
        }
        self.net_seq += 1;
        self.net.push(Reverse(Packet {
            at: self.now + self.delay,
            seq: self.net_seq,
            from,
            to,
            data,
        }));
    }

    /// A member joins: their client offers its send tracks; the server answers.
    fn join(&mut self, name: &str, media: &[MediaKind]) -> usize {
        let index = self.clients.len() as u8;
        let mut c = Client::new(index, name, self.now);
        let mut api = c.rtc.sdp_api();
        let mut mids = Vec::new();
        for &k in media {
            mids.push((api.add_media(k, Direction::SendOnly, None, None, None), k));
        }
        let (offer, pending) = api.apply().expect("an offer");
        let answer = self
            .server
            .offer(self.now, CALL, name, &offer.to_sdp_string())
            .expect("server answers");
        c.rtc
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .expect("client accepts the answer");
        c.send = mids;
        self.clients.push(c);
        let i = self.clients.len() - 1;
        self.drain_client(i);
        self.drain_server();
        i
    }

    fn leave(&mut self, i: usize) {
        let name = self.clients[i].name.clone();
        self.server.remove_member(CALL, &name);
        self.clients[i].sending = false;
        self.drain_server();
    }

    fn drain_client(&mut self, i: usize) {
        loop {
            let out = self.clients[i].rtc.poll_output().expect("client poll");
            match out {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    let from = self.clients[i].addr;
                    self.send(from, t.destination, t.contents.to_vec());
                }
                Output::Event(e) => {
                    let c = &mut self.clients[i];
                    match e {
                        Event::RtpPacket(p) => {
                            let sender = p.payload[0];
                            let kind = p.payload[1];
                            *c.got.entry((sender, kind)).or_default() += 1;
                        }
                        Event::KeyframeRequest(_) => c.keyframe_requests += 1,
                        Event::MediaAdded(m) if m.direction.is_receiving() => {
                            c.recv_mids.push(m.mid)
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn drain_server(&mut self) {
        while let Some(o) = self.server.poll_output() {
            match o {
                MediaOutput::Transmit {
                    destination,
                    contents,
                } => self.send(server_addr(), destination, contents.to_vec()),
                MediaOutput::Offer { user, sdp, .. } => {
                    let i = self
                        .clients
                        .iter()
                        .position(|c| c.name == user)
                        .expect("offer for a known client");
                    let answer = self.clients[i]
                        .rtc
                        .sdp_api()
                        .accept_offer(SdpOffer::from_sdp_string(&sdp).unwrap())
                        .expect("client accepts our offer");
                    self.drain_client(i);
                    self.server
                        .answer(self.now, CALL, &user, &answer.to_sdp_string())
                        .expect("server takes the answer");
                }
            }
        }
    }

    fn send_media(&mut self, kind: MediaKind) {
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
            for &(mid, k) in &c.send.clone() {
                if k != kind {
                    continue;
                }
                let seq = c.seq.entry(mid).or_insert(0);
                *seq += 1;
                let n = *seq;
                let k_byte = if kind == MediaKind::Audio { 0 } else { 1 };
                let mut payload = vec![c.index, k_byte];
                payload.extend_from_slice(&n.to_be_bytes());
                payload.resize(if kind == MediaKind::Audio { 80 } else { 900 }, 0);
                let ext = ExtensionValues {
                    audio_level: Some(-30),
                    voice_activity: Some(true),
                    ..Default::default()
                };
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
            self.drain_client(i);
        }
    }

    /// Runs the world for `d` of virtual time.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let mut next = end.min(self.next_audio).min(self.next_video);
            if let Some(Reverse(p)) = self.net.peek() {
                next = next.min(p.at);
            }
            if let Some(t) = self.server.poll_timeout() {
                next = next.min(t);
            }
            next = next.max(self.now);
            if next > end {
                break;
            }
            self.now = next;
            while self.net.peek().is_some_and(|Reverse(p)| p.at <= self.now) {
                let Reverse(p) = self.net.pop().unwrap();
                if p.to == server_addr() {
                    self.server.handle_datagram(self.now, p.from, &p.data);
                    self.drain_server();
                } else if let Some(i) = self.clients.iter().position(|c| c.addr == p.to) {
                    let input = Input::Receive(
                        self.now,
                        Receive {
                            proto: Protocol::Udp,
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
            self.server.handle_timeout(self.now);
            self.drain_server();
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
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            sent: self.clients.iter().map(|c| c.sent).collect(),
            got: self.clients.iter().map(|c| c.got.clone()).collect(),
        }
    }

    fn resume(&mut self) {
        for c in &mut self.clients {
            c.sending = true;
        }
    }

    /// Stops every sender and lets in-flight packets land.
    fn quiesce(&mut self) {
        for c in &mut self.clients {
            c.sending = false;
        }
        self.run(Duration::from_millis(500));
    }
}

struct Snapshot {
    sent: Vec<[u64; 2]>,
    got: Vec<BTreeMap<(u8, u8), u64>>,
}

impl Snapshot {
    fn sent(&self, i: usize, kind: MediaKind) -> u64 {
        self.sent[i][if kind == MediaKind::Audio { 0 } else { 1 }]
    }
    fn got(&self, receiver: usize, sender: usize, kind: MediaKind) -> u64 {
        let k = if kind == MediaKind::Audio { 0 } else { 1 };
        self.got[receiver]
            .get(&(sender as u8, k))
            .copied()
            .unwrap_or(0)
    }
}

/// Runs a call of `n` members publishing `media`; returns (before, after) snapshots around a
/// measured window of `secs` seconds that starts once everyone receives everyone.
fn measured_call(
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

fn assert_exact_mesh(before: &Snapshot, after: &Snapshot, n: usize, media: &[MediaKind]) {
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

#[test]
fn one_to_one_audio() {
    let mut w = World::new();
    let media = [MediaKind::Audio];
    let (b, a) = measured_call(&mut w, &["alice", "bob"], &media, 5);
    assert_exact_mesh(&b, &a, 2, &media);
    assert!(a.sent(0, MediaKind::Audio) - b.sent(0, MediaKind::Audio) >= 245);
    let c = w.server.counters();
    assert_eq!(c.rtp_out_packets[1], 0, "no video in an audio call");
    assert!(c.rtp_in_packets[0] > 0 && c.rtp_out_packets[0] > 0);
}

#[test]
fn one_to_one_video() {
    let mut w = World::new();
    let media = [MediaKind::Audio, MediaKind::Video];
    let (b, a) = measured_call(&mut w, &["alice", "bob"], &media, 5);
    assert_exact_mesh(&b, &a, 2, &media);
    // Opening a video track for a subscriber asks its publisher for a keyframe.
    assert!(w.clients[0].keyframe_requests >= 1);
    assert!(w.clients[1].keyframe_requests >= 1);
}

#[test]
fn group_of_four_with_video() {
    let mut w = World::new();
    let media = [MediaKind::Audio, MediaKind::Video];
    let names = ["alice", "bob", "carol", "dave"];
    let (b, a) = measured_call(&mut w, &names, &media, 5);
    assert_exact_mesh(&b, &a, 4, &media);
    assert_eq!(w.server.peers(), 4);
    // Each member receives 3 × (audio + video) tracks.
    for c in &w.clients {
        assert_eq!(c.recv_mids.len(), 6, "{} tracks", c.name);
    }
}

#[test]
fn downlink_loss_is_repaired_for_video_and_felt_in_audio() {
    let mut w = World::new();
    let media = [MediaKind::Audio, MediaKind::Video];
    // 5 % loss on the server -> bob link only.
    let bob_addr: SocketAddr = "10.0.1.2:6000".parse().unwrap();
    w.loss.insert((server_addr(), bob_addr), 0.05);
    let (b, a) = measured_call(&mut w, &["alice", "bob"], &media, 8);
    let sent_a = a.sent(0, MediaKind::Audio) - b.sent(0, MediaKind::Audio);
    let got_a = a.got(1, 0, MediaKind::Audio) - b.got(1, 0, MediaKind::Audio);
    let lost = 1.0 - got_a as f64 / sent_a as f64;
    assert!((0.02..0.09).contains(&lost), "audio loss {lost}");
    // Video: NACK + RTX from the server's cache repairs what was lost.
    let sent_v = a.sent(0, MediaKind::Video) - b.sent(0, MediaKind::Video);
    let got_v = a.got(1, 0, MediaKind::Video) - b.got(1, 0, MediaKind::Video);
    assert!(
        got_v as f64 >= sent_v as f64 * 0.99,
        "video {got_v}/{sent_v}"
    );
    assert!(
        w.server.counters().nacks_in > 0,
        "bob's NACKs reached the server"
    );
    // Nothing lost the other way.
    assert_eq!(
        a.got(0, 1, MediaKind::Audio) - b.got(0, 1, MediaKind::Audio),
        a.sent(1, MediaKind::Audio) - b.sent(1, MediaKind::Audio)
    );
}

#[test]
fn keyframe_requests_reach_the_publisher_throttled() {
    let mut w = World::new();
    let media = [MediaKind::Audio, MediaKind::Video];
    let names = ["alice", "bob", "carol"];
    measured_call(&mut w, &names, &media, 1);
    let before = w.clients[0].keyframe_requests;
    // bob and carol both ask for alice's video at the same moment: merged into one.
    for i in [1, 2] {
        let mids = w.clients[i].recv_mids.clone();
        for mid in mids {
            if let Some(rx) = w.clients[i].rtc.direct_api().stream_rx_by_mid(mid, None) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
            }
        }
        w.drain_client(i);
    }
    w.run(Duration::from_millis(200));
    let relayed = w.clients[0].keyframe_requests - before;
    assert_eq!(relayed, 1, "two requests within the throttle become one");
    w.run(Duration::from_secs(1));
    let mids = w.clients[1].recv_mids.clone();
    for mid in mids {
        if let Some(rx) = w.clients[1].rtc.direct_api().stream_rx_by_mid(mid, None) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
        }
    }
    w.drain_client(1);
    w.run(Duration::from_millis(200));
    assert_eq!(w.clients[0].keyframe_requests - before, 2);
}

#[test]
fn members_leave_and_join_mid_call() {
    let mut w = World::new();
    let media = [MediaKind::Audio, MediaKind::Video];
    measured_call(&mut w, &["alice", "bob", "carol"], &media, 1);
    // carol leaves: alice and bob keep hearing each other, and nothing more of carol.
    w.leave(2);
    w.run(Duration::from_millis(300));
    let before = w.snapshot();
    w.run(Duration::from_secs(2));
    let after = w.snapshot();
    assert_eq!(
        after.got(0, 2, MediaKind::Audio),
        before.got(0, 2, MediaKind::Audio)
    );
    assert!(after.got(0, 1, MediaKind::Audio) - before.got(0, 1, MediaKind::Audio) >= 95);
    assert!(after.got(1, 0, MediaKind::Video) - before.got(1, 0, MediaKind::Video) >= 55);
    assert_eq!(w.server.peers(), 2);
    // dave joins: everyone hears dave and dave hears everyone.
    let d = w.join("dave", &media);
    w.run(Duration::from_secs(2));
    for r in [0, 1] {
        assert!(w.clients[r].from(d as u8, MediaKind::Audio) > 50);
        assert!(w.clients[r].from(d as u8, MediaKind::Video) > 25);
        assert!(w.clients[d].from(r as u8, MediaKind::Audio) > 50);
    }
    assert_eq!(
        w.clients[d].from(2, MediaKind::Audio),
        0,
        "dave never hears carol"
    );
    w.server.end_call(CALL);
    assert_eq!(w.server.peers(), 0);
    assert_eq!(w.server.calls(), 0);
}

#[test]
fn hold_and_mute_stop_the_right_streams() {
    let mut w = World::new();
    let media = [MediaKind::Audio, MediaKind::Video];
    measured_call(&mut w, &["alice", "bob", "carol"], &media, 1);
    w.run(Duration::from_millis(200));
    // bob mutes audio; carol is on hold.
    w.server.set_mute(CALL, "bob", Some(true), None);
    w.server.set_hold(CALL, "carol", true);
    w.run(Duration::from_millis(100));
    let before = w.snapshot();
    w.run(Duration::from_secs(2));
    let after = w.snapshot();
    let delta = |r, s, k| after.got(r, s, k) - before.got(r, s, k);
    assert_eq!(delta(0, 1, MediaKind::Audio), 0, "bob's audio is muted");
    assert!(
        delta(0, 1, MediaKind::Video) >= 55,
        "bob's video still flows"
    );
    assert_eq!(
        delta(0, 2, MediaKind::Audio),
        0,
        "nothing from carol on hold"
    );
    assert_eq!(delta(0, 2, MediaKind::Video), 0);
    assert_eq!(delta(2, 0, MediaKind::Audio), 0, "nothing to carol on hold");
    assert_eq!(delta(2, 1, MediaKind::Video), 0);
    assert!(
        delta(1, 0, MediaKind::Audio) >= 95,
        "alice and bob unaffected"
    );
    // Resume.
    w.server.set_mute(CALL, "bob", Some(false), None);
    w.server.set_hold(CALL, "carol", false);
    let before = w.snapshot();
    w.run(Duration::from_secs(1));
    let after = w.snapshot();
    assert!(after.got(0, 1, MediaKind::Audio) - before.got(0, 1, MediaKind::Audio) >= 45);
    assert!(after.got(2, 0, MediaKind::Audio) - before.got(2, 0, MediaKind::Audio) >= 45);
}

#[test]
fn garbage_datagrams_and_bad_sdp_are_rejected() {
    let mut w = World::new();
    w.join("alice", &[MediaKind::Audio]);
    let stranger: SocketAddr = "10.9.9.9:1".parse().unwrap();
    for data in [
        &b""[..],
        b"\x00\x01garbage",
        &[0x80; 1500],
        &[0x16, 0xfe, 0xfd, 0, 0],
    ] {
        w.server.handle_datagram(w.now, stranger, data);
    }
    assert!(w.server.counters().datagrams_unrouted >= 4);
    assert!(w.server.offer(w.now, CALL, "bob", "not sdp").is_err());
    assert!(
        w.server
            .offer(w.now, CALL, "bob", &"v=0\r\n".repeat(20000))
            .is_err()
    );
    assert!(w.server.answer(w.now, CALL, "alice", "v=0\r\n").is_err());
    assert!(w.server.answer(w.now, CALL, "nobody", "v=0\r\n").is_err());
    w.run(Duration::from_secs(1));
    assert_eq!(w.server.peers(), 1);
}
