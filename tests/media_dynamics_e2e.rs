//! End-to-end call dynamics over real UDP on loopback: the real `sfu` binary and str0m clients
//! that signal through the protocol. A member who mutes before their first offer is never
//! heard until they unmute; a hold of 100,000 packets resumes at once with no gap in the
//! subscriber's sequence numbers (the old rebasing jumped by the hold, and past 2^15 the
//! subscriber's SRTP never decrypted again).
//!
//! Every audio payload carries its sender's index and sequence number `n`, so a receiver knows
//! exactly which of the sender's packets it got; it also books the sequence numbers the server
//! wrote for it.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, Server, connected_call};
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

/// What a client does, in order.
enum Step {
    /// A request, answered before the next step (e.g. `mute` before the first offer).
    Request(&'static str, Value),
    /// Offers our audio track and applies the answer.
    Offer,
    /// Sends `per_tick` audio packets every 20 ms for `Duration`, or until `total` packets.
    Send { per_tick: u32, until: Until },
    /// Tells the other client we are done.
    Done,
}

enum Until {
    For(Duration),
    Packets(u64),
    /// Until the other client says it is done, plus this.
    Peer(Duration),
}

#[derive(Default, Debug)]
struct Seen {
    /// The other member's payload numbers received.
    got: Vec<u64>,
    /// Sequence numbers the server skipped on our stream, and the largest jump.
    gaps: u64,
    max_jump: u64,
    last_seq: Option<u64>,
    notices: Vec<Value>,
    /// (step index, our last payload number sent when the step started).
    marks: Vec<(usize, u64)>,
}

struct Media {
    ws: Client,
    call_id: String,
    index: u8,
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mid: Option<Mid>,
    n: u64,
    seen: Seen,
}

impl Media {
    async fn new(ws: Client, call_id: &str, index: u8) -> Media {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = RtcConfig::new()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .set_rtcp_report_interval_audio(Duration::from_secs(1))
            .build(std::time::Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
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
        }
    }

    async fn offer(&mut self) {
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
        // Notifications queued while waiting for the answer (e.g. the server's offer).
        while let Some(v) = self.ws.queued() {
            self.frame(v).await;
        }
    }

    /// Polls str0m to its next deadline (after every mutation).
    async fn drain(&mut self) -> std::time::Instant {
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(t) => return t,
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(Event::RtpPacket(p)) => {
                    let s = &mut self.seen;
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

    async fn frame(&mut self, frame: Value) {
        if frame["method"] == "offer" {
            let sdp = frame["params"]["sdp"].as_str().unwrap();
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

    async fn send(&mut self, per_tick: u32, until: Until, peer_done: &mut watch::Receiver<bool>) {
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
                let mut payload = vec![self.index, 0];
                payload.extend_from_slice(&self.n.to_be_bytes());
                payload.resize(40, 0);
                let ext = ExtensionValues {
                    audio_level: Some(-30),
                    voice_activity: Some(true),
                    ..Default::default()
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

    async fn run(
        mut self,
        steps: Vec<Step>,
        done: watch::Sender<bool>,
        mut peer_done: watch::Receiver<bool>,
    ) -> Seen {
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
        self.seen
    }
}

/// One packet per 20 ms for `d`.
fn talk(d: Duration) -> Step {
    Step::Send {
        per_tick: 1,
        until: Until::For(d),
    }
}

/// Offer, then talk until the other side is done (plus half a second).
fn listener() -> Vec<Step> {
    vec![
        Step::Offer,
        Step::Send {
            per_tick: 1,
            until: Until::Peer(Duration::from_millis(500)),
        },
    ]
}

/// alice and bob in a 1v1 audio call, each running their steps at once.
async fn two(s: &Server, alice: Vec<Step>, bob: Vec<Step>) -> (Seen, Seen) {
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

fn audio_available(seen: &Seen, user: &str) -> Vec<bool> {
    seen.notices
        .iter()
        .filter(|n| n["method"] == "audio_available" && n["params"]["user"] == user)
        .map(|n| n["params"]["available"].as_bool().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muted_before_the_first_offer_over_udp() {
    let s = Server::start(&[]).await;
    let alice = vec![
        Step::Request("mute", json!({"audio": true})),
        Step::Offer,
        talk(Duration::from_secs(3)),
        Step::Request("mute", json!({"audio": false})),
        talk(Duration::from_secs(2)),
        Step::Done,
    ];
    let bob = listener();
    let (a, b) = two(&s, alice, bob).await;
    let muted_until = a.marks[3].1; // last packet sent before the unmute request
    assert!(muted_until > 100, "alice sent while muted: {muted_until}");
    // The packets in flight when the unmute lands (100 ms) may pass; none before them.
    let heard_muted: Vec<u64> = b
        .got
        .iter()
        .copied()
        .filter(|&n| n + 5 <= muted_until)
        .collect();
    assert!(
        heard_muted.is_empty(),
        "bob heard alice while she was muted: {:?}",
        &heard_muted[..heard_muted.len().min(5)]
    );
    assert!(
        b.got.len() > 60,
        "bob hears alice after unmute: {}",
        b.got.len()
    );
    assert_eq!(
        audio_available(&b, "alice"),
        [false, true],
        "`false` for the mute, `true` only after the unmute"
    );
    assert_eq!(b.gaps, 0);
    assert!(a.got.len() > 150, "alice hears bob throughout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_of_100_000_packets_over_udp() {
    // 10,000 packets/s to compress the hold into 10 s: above the default per-member ceiling.
    let s = Server::start(&["--max-peer-packet-rate", "20000"]).await;
    let alice = vec![
        Step::Offer,
        talk(Duration::from_secs(2)),
        Step::Request("hold", json!({"held": true})),
        // 100,000 packets at 200 per 20 ms tick.
        Step::Send {
            per_tick: 200,
            until: Until::Packets(100_000),
        },
        Step::Request("hold", json!({"held": false})),
        talk(Duration::from_secs(2)),
        Step::Done,
    ];
    let bob = listener();
    let (a, b) = two(&s, alice, bob).await;
    let (held_from, held_until) = (a.marks[2].1, a.marks[4].1);
    assert!(held_until - held_from >= 100_000);
    // The packets in flight (two ticks) when the hold and the resume land may pass; none
    // from the rest of it.
    let during: Vec<u64> = b
        .got
        .iter()
        .copied()
        .filter(|&n| n > held_from + 400 && n + 400 <= held_until)
        .collect();
    assert!(
        during.is_empty(),
        "forwarded during the hold: {:?}",
        &during[..during.len().min(5)]
    );
    let after = b.got.iter().filter(|&&n| n > held_until).count();
    assert!(
        after > 60,
        "bob decrypts alice again after the hold: {after}"
    );
    assert_eq!(b.gaps, 0, "no gap in bob's sequence numbers");
    assert_eq!(b.max_jump, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_str0m_panic_fails_one_media_session_only() {
    // mallory's media session panics inside str0m after each of her offers (test hook).
    let s = Server::start(&["--panic-media-of", "mallory"]).await;
    let mut mallory = s.login("mallory").await;
    let mut eve = s.login("eve").await;
    let evil = connected_call(&mut mallory, &mut eve, "audio").await;
    // Calls go to the least loaded of the 2 workers: with one more call in between, the
    // bystanders' call shares mallory's worker.
    let (mut carol, mut dave) = (s.login("carol").await, s.login("dave").await);
    connected_call(&mut carol, &mut dave, "audio").await;
    let call = || vec![Step::Offer, talk(Duration::from_secs(3))];
    let bystanders = two(&s, call(), call());
    let hostile = async {
        let sdp = {
            let mut rtc = RtcConfig::new().build(std::time::Instant::now());
            let mut api = rtc.sdp_api();
            api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
            api.apply().unwrap().0.to_sdp_string()
        };
        mallory
            .request("offer", json!({"call_id": evil, "sdp": sdp}))
            .await
            .expect("answered before the fault");
        let failed = mallory.expect("media_failed").await;
        assert_eq!(failed, json!({"call_id": evil, "reason": "rtc"}));
    };
    let ((a, b), ()) = tokio::join!(bystanders, hostile);
    assert!(
        a.got.len() > 100 && b.got.len() > 100,
        "{} {}",
        a.got.len(),
        b.got.len()
    );
    assert_eq!(a.gaps + b.gaps, 0);
    let health = reqwest::get(format!("http://{}/healthz", s.http))
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the worker lives on");
    assert_eq!(
        s.metric("sfu_peer_failures_total{stage=\"rtc\"}").await,
        1.0
    );
    assert_eq!(mallory.request("ping", json!({})).await.unwrap(), json!({}));
}
