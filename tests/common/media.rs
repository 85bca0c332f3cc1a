//! Media clients for end-to-end tests over real UDP on loopback: a str0m client that signals
//! through the protocol and runs a list of [`Step`]s. Every audio payload carries its sender's
//! index and number `n`, so a receiver knows exactly which of the sender's packets it got; it
//! also books the sequence numbers the server wrote for it, and every server offer it answered.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Client, Server, connected_call};

/// What a client does, in order.
pub enum Step {
    /// A request, answered before the next step (e.g. `mute` before the first offer).
    Request(&'static str, Value),
    /// Offers our audio track and applies the answer.
    Offer,
    /// Sends `per_tick` audio packets every 20 ms for `Duration`, or until `total` packets.
    Send { per_tick: u32, until: Until },
    /// Tells the other client we are done.
    Done,
}

pub enum Until {
    For(Duration),
    Packets(u64),
    /// Until the other client says it is done, plus this.
    Peer(Duration),
}

#[derive(Default, Debug)]
pub struct Seen {
    /// The other member's payload numbers received.
    pub got: Vec<u64>,
    /// Sequence numbers the server skipped on our stream, and the largest jump.
    pub gaps: u64,
    pub max_jump: u64,
    pub last_seq: Option<u64>,
    pub notices: Vec<Value>,
    /// (step index, our last payload number sent when the step started).
    pub marks: Vec<(usize, u64)>,
    /// Packets received per sender index, and the highest payload number heard from each.
    pub from: [u64; 8],
    pub latest: [u64; 8],
    /// Size of every server offer answered, in bytes.
    pub offer_sizes: Vec<usize>,
    /// The server's answer to our last offer.
    pub answer: String,
}

pub struct Media {
    pub ws: Client,
    pub call_id: String,
    pub index: u8,
    pub rtc: Rtc,
    pub socket: UdpSocket,
    pub local: SocketAddr,
    pub mid: Option<Mid>,
    pub n: u64,
    pub seen: Seen,
    /// Sent instead of numbered payloads, without the audio-level extension, when set.
    pub opus: Option<Vec<u8>>,
}

impl Media {
    pub async fn new(ws: Client, call_id: &str, index: u8) -> Media {
        let (rtc, socket, local) = Self::session().await;
        Media {
            ws,
            call_id: call_id.to_string(),
            index,
            rtc,
            socket,
            local,
            mid: None,
            n: 0,
            seen: Seen::default(),
            opus: None,
        }
    }

    /// A fresh str0m client on a new UDP socket.
    async fn session() -> (Rtc, UdpSocket, SocketAddr) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = RtcConfig::new()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .set_rtcp_report_interval_audio(Duration::from_secs(1))
            .build(std::time::Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        (rtc, socket, local)
    }

    /// Replaces the media session by a new one (as after a network change); the next
    /// [`Media::offer`] re-offers it.
    pub async fn renew(&mut self) {
        (self.rtc, self.socket, self.local) = Self::session().await;
        self.mid = None;
    }

    pub async fn offer(&mut self) {
        let mut api = self.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        self.drain().await;
        let answer = self
            .ws
            .request(
                "offer",
                json!({"call_id": self.call_id, "sdp": offer.to_sdp_string()}),
            )
            .await
            .expect("server answers our offer");
        self.rtc
            .sdp_api()
            .accept_answer(
                pending,
                SdpAnswer::from_sdp_string(answer["sdp"].as_str().unwrap()).unwrap(),
            )
            .unwrap();
        self.drain().await;
        self.mid = Some(mid);
        self.seen.answer = answer["sdp"].as_str().unwrap().to_string();
        // Notifications that came while waiting for the answer; a server offer among them was
        // for the session this offer replaced (docs/protocol.md), so it is dropped.
        while let Some(v) = self.ws.queued() {
            if v["method"] != "offer" {
                self.frame(v).await;
            }
        }
    }

    /// Polls str0m to its next deadline (after every mutation).
    pub async fn drain(&mut self) -> std::time::Instant {
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(t) => return t,
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(Event::RtpPacket(p)) => {
                    let s = &mut self.seen;
                    let sender = usize::from(p.payload[0] % 8);
                    let number = u64::from_be_bytes(p.payload[2..10].try_into().unwrap());
                    s.from[sender] += 1;
                    s.latest[sender] = s.latest[sender].max(number);
                    if p.payload[0] != self.index {
                        s.got
                            .push(u64::from_be_bytes(p.payload[2..10].try_into().unwrap()));
                    }
                    let seq = *p.seq_no;
                    if let Some(last) = s.last_seq
                        && seq > last
                    {
                        s.gaps += seq - last - 1;
                        s.max_jump = s.max_jump.max(seq - last);
                    }
                    s.last_seq = Some(s.last_seq.map_or(seq, |l| l.max(seq)));
                }
                Output::Event(_) => {}
            }
        }
    }

    pub async fn frame(&mut self, frame: Value) {
        if frame["method"] == "offer" {
            let sdp = frame["params"]["sdp"].as_str().unwrap();
            self.seen.offer_sizes.push(sdp.len());
            let answer = self
                .rtc
                .sdp_api()
                .accept_offer(SdpOffer::from_sdp_string(sdp).unwrap())
                .unwrap();
            self.drain().await;
            self.ws
                .send_request(
                    "answer",
                    json!({"call_id": self.call_id, "sdp": answer.to_sdp_string()}),
                )
                .await;
        } else if let Some(e) = frame.get("error") {
            panic!("request failed: {e}");
        } else if frame.get("method").is_some() {
            self.seen.notices.push(frame);
        }
    }

    pub async fn send(
        &mut self,
        per_tick: u32,
        until: Until,
        peer_done: &mut watch::Receiver<bool>,
    ) {
        let start = Instant::now();
        let sent0 = self.n;
        let mut next_tick = start;
        let mut done_at: Option<Instant> = None;
        let mut buf = vec![0u8; 2048];
        loop {
            let timeout = self.drain().await;
            let now = Instant::now();
            let finished = match until {
                Until::For(d) => now >= start + d,
                Until::Packets(p) => self.n - sent0 >= p,
                Until::Peer(extra) => {
                    if done_at.is_none() && *peer_done.borrow() {
                        done_at = Some(now);
                    }
                    done_at.is_some_and(|t| now >= t + extra)
                }
            };
            if finished {
                return;
            }
            let wake = Instant::from_std(timeout)
                .min(next_tick)
                .min(now + Duration::from_millis(50));
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    if let Ok((len, source)) = r {
                        let input = Input::Receive(std::time::Instant::now(), Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: self.local,
                            contents: buf[..len].try_into().unwrap(),
                        });
                        self.rtc.handle_input(input).unwrap();
                        self.drain().await;
                    }
                }
                frame = self.ws.recv() => {
                    if let Some(f) = frame {
                        self.frame(f).await;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            self.rtc
                .handle_input(Input::Timeout(now.into_std()))
                .unwrap();
            self.drain().await;
            if now < next_tick || per_tick == 0 || !self.rtc.is_connected() {
                continue;
            }
            next_tick += Duration::from_millis(20);
            let Some(mid) = self.mid else { continue };
            let pt = self
                .rtc
                .codec_config()
                .find(|p| p.spec().codec == Codec::Opus)
                .unwrap()
                .pt();
            for _ in 0..per_tick {
                self.n += 1;
                let (payload, ext) = match &self.opus {
                    // Real Opus and no audio level: the server decodes to learn the volume.
                    Some(frame) => (frame.clone(), ExtensionValues::default()),
                    None => {
                        let mut payload = vec![self.index, 0];
                        payload.extend_from_slice(&self.n.to_be_bytes());
                        payload.resize(40, 0);
                        let ext = ExtensionValues {
                            audio_level: Some(-30),
                            voice_activity: Some(true),
                            ..Default::default()
                        };
                        (payload, ext)
                    }
                };
                if let Some(tx) = self.rtc.direct_api().stream_tx_by_mid(mid, None) {
                    tx.write_rtp(
                        RtpWrite::new(
                            pt,
                            self.n.into(),
                            (self.n * 960) as u32,
                            now.into_std(),
                            payload,
                        )
                        .ext_vals(ext),
                    );
                }
                self.drain().await;
            }
        }
    }

    pub async fn run(
        self,
        steps: Vec<Step>,
        done: watch::Sender<bool>,
        peer_done: watch::Receiver<bool>,
    ) -> Seen {
        self.run_keeping_socket(steps, done, peer_done).await.0
    }

    /// [`Media::run`], handing back the signaling socket for what follows.
    pub async fn run_keeping_socket(
        mut self,
        steps: Vec<Step>,
        done: watch::Sender<bool>,
        mut peer_done: watch::Receiver<bool>,
    ) -> (Seen, Client) {
        for (i, step) in steps.into_iter().enumerate() {
            self.seen.marks.push((i, self.n));
            match step {
                Step::Request(method, mut params) => {
                    params["call_id"] = json!(self.call_id);
                    self.ws.request(method, params).await.unwrap();
                    while let Some(v) = self.ws.queued() {
                        self.frame(v).await;
                    }
                }
                Step::Offer => self.offer().await,
                Step::Send { per_tick, until } => self.send(per_tick, until, &mut peer_done).await,
                Step::Done => {
                    let _ = done.send(true);
                }
            }
        }
        self.seen.marks.push((usize::MAX, self.n));
        (self.seen, self.ws)
    }
}

/// One packet per 20 ms for `d`.
pub fn talk(d: Duration) -> Step {
    Step::Send {
        per_tick: 1,
        until: Until::For(d),
    }
}

/// Offer, then talk until the other side is done (plus half a second).
pub fn listener() -> Vec<Step> {
    vec![
        Step::Offer,
        Step::Send {
            per_tick: 1,
            until: Until::Peer(Duration::from_millis(500)),
        },
    ]
}

/// alice and bob in a 1v1 audio call, each running their steps at once.
pub async fn two(s: &Server, alice: Vec<Step>, bob: Vec<Step>) -> (Seen, Seen) {
    let mut a = s.login("alice").await;
    let mut b = s.login("bob").await;
    let call_id = connected_call(&mut a, &mut b, "audio").await;
    let (a_done, a_rx) = watch::channel(false);
    let (b_done, b_rx) = watch::channel(false);
    let a = Media::new(a, &call_id, 0).await;
    let b = Media::new(b, &call_id, 1).await;
    let ta = tokio::spawn(a.run(alice, a_done, b_rx));
    let tb = tokio::spawn(b.run(bob, b_done, a_rx));
    (ta.await.unwrap(), tb.await.unwrap())
}
