//! End-to-end media over real UDP on loopback: the real `sfu` binary, str0m clients that
//! negotiate through the signaling protocol (one client offer, then server offers), send
//! audio and video for 5 s and count what they receive from whom.
//!
//! Every payload carries its sender's index, the kind and a sequence number, so a receiver
//! can prove it got a gap-free run of each peer's stream up to the last packet sent, and
//! nothing of its own or of anyone outside the call.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, Server};
use serde_json::json;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, Input, Output, RtcConfig};
use tokio::net::UdpSocket;
use tokio::time::Instant;

const SEND_FOR: Duration = Duration::from_secs(5);

/// What one receiver saw of one (sender, kind) stream.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    count: u64,
    first: u64,
    last: u64,
}

#[derive(Debug, Default)]
struct Report {
    /// Last sequence number sent per kind (0 audio, 1 video).
    sent: [u64; 2],
    got: BTreeMap<(u8, u8), Seen>,
    keyframe_requests: u64,
    /// Every notification received during the media session (besides `offer`).
    notices: Vec<serde_json::Value>,
}

/// One caller's media session: offers, answers server offers, sends for `SEND_FOR`, then
/// listens a little longer. Returns what it sent and received.
async fn media_session(
    mut ws: Client,
    call_id: String,
    index: u8,
    kinds: Vec<MediaKind>,
) -> (Report, Client) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local: SocketAddr = socket.local_addr().unwrap();
    let start = std::time::Instant::now();
    let mut rtc = RtcConfig::new()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .set_rtcp_report_interval_audio(Duration::from_secs(1))
        .build(start);
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut api = rtc.sdp_api();
    let mids: Vec<_> = kinds
        .iter()
        .map(|&k| (api.add_media(k, Direction::SendOnly, None, None, None), k))
        .collect();
    let (offer, pending) = api.apply().unwrap();
    let answer = ws
        .request(
            "offer",
            json!({"call_id": call_id, "sdp": offer.to_sdp_string()}),
        )
        .await
        .expect("server answers our offer");
    rtc.sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(answer["sdp"].as_str().unwrap()).unwrap(),
        )
        .unwrap();

    let mut report = Report::default();
    let mut seq = [0u64; 2];
    let t0 = Instant::now();
    let stop_sending = t0 + Duration::from_secs(3) + SEND_FOR;
    let end = stop_sending + Duration::from_millis(1500);
    let mut next_audio = t0;
    let mut next_video = t0;
    let mut buf = vec![0u8; 2048];
    loop {
        // Drain the Peer.
        let timeout = loop {
            match rtc.poll_output().unwrap() {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(Event::RtpPacket(p)) => {
                    let sender = p.payload[0];
                    let kind = p.payload[1];
                    let n = u64::from_be_bytes(p.payload[2..10].try_into().unwrap());
                    let s = report.got.entry((sender, kind)).or_default();
                    if s.count == 0 {
                        s.first = n;
                    }
                    s.count += 1;
                    s.last = s.last.max(n);
                }
                Output::Event(Event::KeyframeRequest(_)) => report.keyframe_requests += 1,
                Output::Event(_) => {}
            }
        };
        let now = Instant::now();
        if now >= end {
            break;
        }
        let sending = now < stop_sending && rtc.is_connected();
        let mut wake = Instant::from_std(timeout).min(end);
        if sending {
            wake = wake.min(next_audio).min(next_video);
        }
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, source)) = r {
                    let input = Input::Receive(std::time::Instant::now(), Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: local,
                        contents: buf[..n].try_into().unwrap(),
                    });
                    rtc.handle_input(input).unwrap();
                }
            }
            frame = ws.recv() => {
                let Some(frame) = frame else { break };
                if frame["method"] == "offer" {
                    let sdp = frame["params"]["sdp"].as_str().unwrap();
                    let answer = rtc
                        .sdp_api()
                        .accept_offer(SdpOffer::from_sdp_string(sdp).unwrap())
                        .unwrap();
                    ws.send_request(
                        "answer",
                        json!({"call_id": call_id, "sdp": answer.to_sdp_string()}),
                    )
                    .await;
                } else if let Some(e) = frame.get("error") {
                    panic!("request failed: {e}");
                } else if frame.get("method").is_some() {
                    report.notices.push(frame);
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        rtc.handle_input(Input::Timeout(now.into_std())).unwrap();
        if sending {
            for (k, kind) in [(0usize, MediaKind::Audio), (1, MediaKind::Video)] {
                let next = if k == 0 {
                    &mut next_audio
                } else {
                    &mut next_video
                };
                if now < *next {
                    continue;
                }
                *next += if k == 0 {
                    Duration::from_millis(20)
                } else {
                    Duration::from_millis(33)
                };
                let Some(&(mid, _)) = mids.iter().find(|(_, m)| *m == kind) else {
                    continue;
                };
                let codec = if k == 0 { Codec::Opus } else { Codec::Vp8 };
                let pt = rtc
                    .codec_config()
                    .find(|p| p.spec().codec == codec)
                    .unwrap()
                    .pt();
                seq[k] += 1;
                let mut payload = vec![index, k as u8];
                payload.extend_from_slice(&seq[k].to_be_bytes());
                payload.resize(if k == 0 { 60 } else { 1000 }, 0);
                let ts = (seq[k] * if k == 0 { 960 } else { 3000 }) as u32;
                let ext = ExtensionValues {
                    audio_level: Some(-25),
                    voice_activity: Some(true),
                    ..Default::default()
                };
                if let Some(tx) = rtc.direct_api().stream_tx_by_mid(mid, None) {
                    tx.write_rtp(
                        RtpWrite::new(pt, seq[k].into(), ts, now.into_std(), payload)
                            .marker(true)
                            .ext_vals(ext)
                            .nackable(k == 1),
                    );
                    report.sent[k] = seq[k];
                }
            }
        }
    }
    (report, ws)
}

/// Logs everyone in, places a call from the first to the others, lets them accept.
async fn call_everyone(s: &Server, names: &[&str], media: &str) -> (Vec<Client>, String) {
    let mut clients = Vec::new();
    for n in names {
        clients.push(s.login(n).await);
    }
    let to: Vec<&str> = names[1..].to_vec();
    let r = clients[0]
        .request("call", json!({"to": to, "media": media}))
        .await
        .unwrap();
    let call_id = r["call_id"].as_str().unwrap().to_string();
    for c in clients.iter_mut().skip(1) {
        assert_eq!(c.expect("invited").await["call_id"], call_id);
        c.request("accept", json!({"call_id": call_id}))
            .await
            .unwrap();
    }
    (clients, call_id)
}

async fn run_call(
    names: &[&str],
    video: bool,
    extra: &[&str],
) -> (Server, Vec<Report>, Vec<Client>, String) {
    let s = Server::start(extra).await;
    let media = if video { "video" } else { "audio" };
    let (clients, call_id) = call_everyone(&s, names, media).await;
    let kinds = if video {
        vec![MediaKind::Audio, MediaKind::Video]
    } else {
        vec![MediaKind::Audio]
    };
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(media_session(
            c,
            call_id.clone(),
            i as u8,
            kinds.clone(),
        )));
    }
    let mut reports = Vec::new();
    let mut clients = Vec::new();
    for t in tasks {
        let (r, c) = t.await.expect("media session");
        reports.push(r);
        clients.push(c);
    }
    (s, reports, clients, call_id)
}

fn check_mesh(reports: &[Report], kinds: &[u8]) {
    for (r, rep) in reports.iter().enumerate() {
        let senders: Vec<u8> = rep.got.keys().map(|(s, _)| *s).collect();
        assert!(
            !senders.contains(&(r as u8)),
            "member {r} received its own media"
        );
        for (s, sender) in reports.iter().enumerate() {
            if s == r {
                continue;
            }
            for &k in kinds {
                let seen = rep
                    .got
                    .get(&(s as u8, k))
                    .copied()
                    .unwrap_or_else(|| panic!("{r} got nothing of kind {k} from {s}"));
                let sent = sender.sent[k as usize];
                eprintln!(
                    "{s} -> {r} kind {k}: sent {sent}, received {} (seq {}..={})",
                    seen.count, seen.first, seen.last
                );
                assert_eq!(
                    seen.last, sent,
                    "{r} got {s}'s stream up to its last packet"
                );
                assert_eq!(
                    seen.count,
                    seen.last - seen.first + 1,
                    "{r} got a gap-free run of {s}'s kind {k}"
                );
                assert!(
                    seen.count as f64 >= sent as f64 * 0.8,
                    "{r} got {} of {sent} from {s}",
                    seen.count
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_one_audio_and_video_over_udp() {
    let cdr = std::env::temp_dir().join(format!("sfu-cdr-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&cdr);
    let cdr_arg = cdr.to_string_lossy().to_string();
    let (s, reports, mut clients, call_id) = run_call(
        &["alice", "bob"],
        true,
        &["--quality-interval", "2s", "--cdr-file", &cdr_arg],
    )
    .await;
    check_mesh(&reports, &[0, 1]);
    assert!(
        reports[0].keyframe_requests >= 1,
        "a keyframe was asked of alice"
    );
    let m = s.metrics_text().await;
    for sample in [
        "sfu_rtp_packets_total{direction=\"in\",kind=\"audio\"}",
        "sfu_rtp_packets_total{direction=\"out\",kind=\"video\"}",
        "sfu_peers_connected_total",
        "sfu_forwarding_latency_seconds_count",
        "sfu_keyframe_requests_total{direction=\"sent\"}",
    ] {
        assert!(common::sample_value(&m, sample) > 0.0, "{sample} in {m}");
    }
    check_analytics(&reports, &["alice", "bob"]);
    let m = s.metrics_text().await;
    assert!(common::sample_value(&m, "sfu_quality_mos_count{direction=\"up\"}") >= 4.0);
    assert!(common::sample_value(&m, "sfu_quality_mos_count{direction=\"down\"}") >= 2.0);
    assert!(common::sample_value(&m, "sfu_volume_events_total") > 10.0);
    s.wait_metric("sfu_peers_active", 2.0).await;
    // Hanging up closes both Peers and frees their state.
    clients[0]
        .request("hangup", json!({ "call_id": call_id }))
        .await
        .unwrap();
    assert_eq!(clients[1].expect("user_leave").await["user"], "alice");
    s.wait_metric("sfu_peers_active", 0.0).await;
    s.wait_metric("sfu_calls_active", 0.0).await;
    check_record(&s, &call_id, &cdr).await;
    let _ = std::fs::remove_file(&cdr);
}

/// Every member heard about the other's quality, volume and availability.
fn check_analytics(reports: &[Report], names: &[&str]) {
    for (r, rep) in reports.iter().enumerate() {
        let by = |m: &'static str| rep.notices.iter().filter(move |n| n["method"] == m);
        for (s, other) in names.iter().enumerate() {
            for dir in ["up", "down"] {
                let q: Vec<_> = by("quality")
                    .filter(|n| n["params"]["user"] == *other && n["params"]["direction"] == dir)
                    .collect();
                assert!(
                    !q.is_empty(),
                    "{} got no {dir} quality of {other}",
                    names[r]
                );
                let mos = q.last().unwrap()["params"]["mos"].as_f64().unwrap();
                assert!(mos > 4.0, "loopback MOS {mos}");
                assert_eq!(q[0]["params"]["quality"], "excellent");
            }
            if s == r {
                continue;
            }
            // Level 25 on every packet: volume round(100·35/60) = 58.
            let v: Vec<u64> = by("volume")
                .filter_map(|n| {
                    n["params"]["volumes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|v| v["user"] == *other)
                        .map(|v| v["volume"].as_u64().unwrap())
                })
                .collect();
            assert!(v.len() > 10, "{} got volumes of {other}: {v:?}", names[r]);
            // The first and last intervals are partial (talk starts and stops inside them).
            let steady = &v[1..v.len() - 1];
            assert!(steady.iter().all(|x| (55..=61).contains(x)), "{v:?}");
            for kind in ["audio_available", "video_available"] {
                assert!(
                    by(kind)
                        .any(|n| n["params"]["user"] == *other && n["params"]["available"] == true),
                    "{} never saw {other}'s {kind}",
                    names[r]
                );
            }
            assert!(
                !by("audio_available").any(|n| n["params"]["user"] == names[r]),
                "told about itself"
            );
        }
    }
}

/// The finished call's record is served to admins only, and appended to the CDR file.
async fn check_record(s: &Server, call_id: &str, cdr: &std::path::Path) {
    let url = format!("http://{}/api/calls/{call_id}", s.http);
    let http = reqwest::Client::new();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let user = s.token("alice");
    let r = http.get(&url).bearer_auth(&user).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let admin = sfu::auth::Auth::new(sfu::auth::DEV_SECRET.as_bytes())
        .mint(
            "ops",
            None,
            true,
            Duration::from_secs(60),
            sfu::auth::unix_now(),
        )
        .unwrap();
    let r = http.get(&url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let rec: serde_json::Value = r.json().await.unwrap();
    assert_eq!(rec["call_id"], call_id);
    assert_eq!(rec["outcome"], "hangup");
    assert_eq!(rec["type"], "1v1");
    assert_eq!(rec["answered"], true);
    let members = rec["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    for m in members {
        let up = &m["up"];
        assert!(up["samples"].as_u64().unwrap() >= 2, "{rec}");
        assert!(up["mos_min"].as_f64().unwrap() > 4.0);
        assert!(up["mos_p5"].as_f64().unwrap() <= up["mos_avg"].as_f64().unwrap());
    }
    let r = common::admin_json(s, "/api/calls?limit=5").await;
    assert_eq!(r["calls"][0]["call_id"], call_id);
    let bad = format!("http://{}/api/calls?limit=0", s.http);
    assert_eq!(
        http.get(&bad)
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let missing = format!("http://{}/api/calls/nope", s.http);
    assert_eq!(
        http.get(&missing)
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // The CDR line lands shortly after the call ends.
    let mut line = String::new();
    for _ in 0..100 {
        line = std::fs::read_to_string(cdr).unwrap_or_default();
        if line.contains(call_id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(first["call_id"], call_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_of_four_audio_and_video_over_udp() {
    let names = ["alice", "bob", "carol", "dave"];
    let (s, reports, mut clients, call_id) = run_call(&names, true, &[]).await;
    check_mesh(&reports, &[0, 1]);
    s.wait_metric("sfu_peers_active", 4.0).await;
    // Members leave one by one: the last one left alone gets call_end.
    for c in clients.iter_mut().take(3) {
        c.request("hangup", json!({ "call_id": call_id }))
            .await
            .unwrap();
    }
    loop {
        let n = clients[3].recv().await.expect("notification");
        if n["method"] == "call_end" {
            break;
        }
    }
    s.wait_metric("sfu_peers_active", 0.0).await;
    s.wait_metric("sfu_calls_active", 0.0).await;
}
