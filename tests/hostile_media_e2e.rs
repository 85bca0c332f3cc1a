//! Hostile members against the real `sfu` over UDP on loopback, each beside members who must
//! not notice: 200 re-offers by one member (the others' server offers stay small and their
//! answers are accepted, their audio flows on), and valid STUN from 1,000 spoofed sources with
//! a member's own ICE credentials (the source-address list stays capped, so at most 7 spoofed
//! sources ever get an answer). The deterministic versions are in `tests/media_limits.rs`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::media::{Media, Seen, Step, Until, talk, two};
use common::{Client, Server, connected_call};
use serde_json::{Value, json};
use str0m::ice::{StunMessage, TransId};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;

/// Pings every 200 ms until told to stop; returns the slowest answer.
async fn pinger(mut c: Client, mut stop: watch::Receiver<bool>) -> Duration {
    let mut worst = Duration::ZERO;
    while !*stop.borrow() {
        let t = Instant::now();
        assert_eq!(c.request("ping", json!({})).await.unwrap(), json!({}));
        worst = worst.max(t.elapsed());
        let _ = tokio::time::timeout(Duration::from_millis(200), stop.changed()).await;
    }
    worst
}

/// A member who offers and talks until `stop`, plus `linger`; returns what it saw.
async fn member(
    ws: Client,
    call_id: String,
    index: u8,
    stop: watch::Receiver<bool>,
    linger: Duration,
) -> Seen {
    let media = Media::new(ws, &call_id, index).await;
    let steps = vec![
        Step::Offer,
        Step::Send {
            per_tick: 1,
            until: Until::Peer(linger),
        },
    ];
    let (done, _) = watch::channel(false);
    media.run(steps, done, stop).await
}

/// alice calls bob and mallory into one group audio call; all three accept.
async fn group_of_three(s: &Server) -> (Client, Client, Client, String) {
    let mut a = s.login("alice").await;
    let mut b = s.login("bob").await;
    let mut m = s.login("mallory").await;
    let r = a
        .request(
            "call",
            json!({"to": ["bob", "mallory"], "media": "audio", "group": true}),
        )
        .await
        .unwrap();
    let id = r["call_id"].as_str().unwrap().to_string();
    for c in [&mut b, &mut m] {
        c.expect("invited").await;
        c.request("accept", json!({ "call_id": id })).await.unwrap();
    }
    (a, b, m, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_re_offers_never_grow_the_others_offers() {
    // As fast as a client may go: the per-socket request rate is not what is tested here.
    let s = Server::start(&["--max-requests-per-sec", "1000"]).await;
    let (a, b, m, call_id) = group_of_three(&s).await;
    let (stop_tx, stop) = watch::channel(false);
    let ping = tokio::spawn(pinger(s.login("carol").await, stop.clone()));
    let linger = Duration::from_secs(1);
    let alice = tokio::spawn(member(a, call_id.clone(), 0, stop.clone(), linger));
    let bob = tokio::spawn(member(b, call_id.clone(), 1, stop.clone(), linger));
    let mut mallory = Media::new(m, &call_id, 2).await;
    let (_never, mut idle) = watch::channel(false);
    for i in 0..200 {
        if i > 0 {
            mallory.renew().await;
        }
        mallory.offer().await;
        // Each new session connects (ICE, DTLS) and talks a little before the next re-offer.
        let packets = if i == 199 { 100 } else { 3 };
        mallory.send(1, Until::Packets(packets), &mut idle).await;
    }
    // Keep mallory's client running a moment so its pacer sends its last packets.
    mallory
        .send(0, Until::For(Duration::from_millis(300)), &mut idle)
        .await;
    stop_tx.send(true).unwrap();
    let (alice, bob) = (alice.await.unwrap(), bob.await.unwrap());
    let worst_ping = ping.await.unwrap();

    for (name, seen) in [("alice", &alice), ("bob", &bob)] {
        let largest = seen.offer_sizes.iter().max().copied().unwrap_or(0);
        assert!(
            largest < 16 * 1024,
            "{name}'s server offers stay < 16 KiB: {:?}",
            seen.offer_sizes
        );
        // Every re-offer continued on the m-line they had: no renegotiation per re-offer.
        assert!(
            seen.offer_sizes.len() <= 4,
            "{name} got {} server offers",
            seen.offer_sizes.len()
        );
        // Mallory's last session is heard to its last packet.
        assert_eq!(
            seen.latest[2], mallory.n,
            "{name} hears mallory's last session"
        );
        assert!(seen.from[2] > 100, "{name}: {:?}", seen.from);
    }
    // The victims hear each other throughout.
    assert!(
        alice.from[1] > 100 && bob.from[0] > 100,
        "{:?} {:?}",
        alice.from,
        bob.from
    );
    assert!(
        worst_ping < Duration::from_secs(1),
        "a bystander's ping took {worst_ping:?}"
    );
    assert_eq!(s.metric("sfu_peers_active").await, 3.0);
}

/// The server's ICE ufrag and password, and its candidate's address, from an SDP answer.
fn server_ice(answer: &str) -> (String, String, SocketAddr) {
    let find = |key: &str| {
        answer
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .trim()
            .to_string()
    };
    let cand = find("a=candidate:");
    let f: Vec<&str> = cand.split_whitespace().collect();
    let addr = format!("{}:{}", f[4], f[5]).parse().unwrap();
    (find("a=ice-ufrag:"), find("a=ice-pwd:"), addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_stun_from_1000_spoofed_sources_is_answered_7_times_at_most() {
    let s = Server::start(&[]).await;
    let mut m = s.login("mallory").await;
    let mut e = s.login("eve").await;
    let call_id = connected_call(&mut m, &mut e, "audio").await;
    let mut mallory = Media::new(m, &call_id, 0).await;
    let (_never, mut idle) = watch::channel(false);
    mallory.offer().await;
    mallory.send(1, Until::Packets(3), &mut idle).await;
    let (ufrag, pwd, server) = server_ice(&mallory.seen.answer);
    let username = format!(
        "{ufrag}:{}",
        mallory.rtc.direct_api().local_ice_credentials().ufrag
    );
    let hmac = str0m::crypto::from_feature_flags().sha1_hmac_provider;

    // A bystander call talks through the flood.
    let bystanders = two(
        &s,
        vec![Step::Offer, talk(Duration::from_secs(4))],
        vec![Step::Offer, talk(Duration::from_secs(4))],
    );
    let flood = async {
        let mut spoofed = Vec::with_capacity(1000);
        for i in 0..1000u32 {
            let ip = format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250);
            let msg = StunMessage::binding_request(&username, TransId::new(), true, 7, 1, false);
            let mut buf = [0u8; 512];
            let n = msg
                .to_bytes(Some(pwd.as_bytes()), &mut buf, |k, p| hmac.sha1_hmac(k, p))
                .unwrap();
            let sock = UdpSocket::bind((ip.as_str(), 0)).await.unwrap();
            spoofed.push((sock, buf[..n].to_vec()));
        }
        // All within well under the 2 s after which a silent source may be replaced.
        for (i, (sock, stun)) in spoofed.iter().enumerate() {
            sock.send_to(stun, server).await.unwrap();
            if i % 50 == 49 {
                // Paced so the kernel's socket buffer drops none of them.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut buf = [0u8; 2048];
        spoofed
            .iter()
            .filter(|(s, _)| s.try_recv_from(&mut buf).is_ok())
            .count()
    };
    let ((a, b), answered) = tokio::join!(bystanders, flood);
    assert!(answered <= 7, "{answered} spoofed sources got an answer");
    assert!(
        a.got.len() > 150 && b.got.len() > 150,
        "{} {}",
        a.got.len(),
        b.got.len()
    );
    assert_eq!(a.gaps + b.gaps, 0);
    // The refusals are counted (flushed to /metrics once a second).
    let refused = "sfu_media_limits_hit_total{limit=\"addresses\"}";
    let mut n = 0.0;
    for _ in 0..40 {
        n = s.metric(refused).await;
        if n >= 993.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(n >= 993.0, "{refused} {n}");
}

/// One 120 ms Opus frame of a loud tone: the costliest thing to decode per packet.
fn opus_120ms() -> Vec<u8> {
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let pcm: Vec<i16> = (0..5760)
        .map(|i| ((i as f32 * 0.07).sin() * 12_000.0) as i16)
        .collect();
    enc.encode_vec(&pcm, 4000).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_without_audio_level_at_2000_packets_per_second_stays_in_its_budget() {
    let s = Server::start(&[]).await;
    let mut mallory = s.login("mallory").await;
    let mut eve = s.login("eve").await;
    let evil = connected_call(&mut mallory, &mut eve, "audio").await;
    // Calls go to the least loaded of the 2 workers: with one more call in between, the
    // bystanders' call shares mallory's worker.
    let (mut carol, mut dave) = (s.login("carol").await, s.login("dave").await);
    connected_call(&mut carol, &mut dave, "audio").await;
    let mut mallory = Media::new(mallory, &evil, 7).await;
    mallory.opus = Some(opus_120ms());
    let (_never, mut idle) = watch::channel(false);
    mallory.offer().await;
    let bystanders = two(
        &s,
        vec![Step::Offer, talk(Duration::from_secs(4))],
        vec![Step::Offer, talk(Duration::from_secs(4))],
    );
    // 40 packets of 120 ms every 20 ms: 2,000 packets and 240 s of audio per second.
    let flood = mallory.send(40, Until::For(Duration::from_secs(5)), &mut idle);
    let ((a, b), ()) = tokio::join!(bystanders, flood);
    assert!(mallory.n > 5_000, "mallory sent {}", mallory.n);
    assert!(
        a.got.len() > 150 && b.got.len() > 150,
        "{} {}",
        a.got.len(),
        b.got.len()
    );
    assert_eq!(a.gaps + b.gaps, 0, "the neighbours lost nothing");
    // At most 1.2 s of audio decoded per second (10 of these frames a second, after a first
    // burst of 10; about 65 in all): every other packet of mallory's that reached the server
    // skipped decoding. (Charged by the RTP timestamp step, which mallory sets to 20 ms, the
    // server decoded 367.)
    // What the bystanders got from each other was all of theirs (no gap), so the rest of the
    // audio that came in is mallory's.
    let skipped = "sfu_media_limits_hit_total{limit=\"opus_decode\"}";
    let audio_in = "sfu_rtp_packets_total{direction=\"in\",kind=\"audio\"}";
    let bystanders = (a.got.len() + b.got.len()) as f64;
    let mut decoded = f64::MAX;
    for _ in 0..40 {
        let from_mallory = s.metric(audio_in).await - bystanders;
        decoded = from_mallory - s.metric(skipped).await;
        if from_mallory > 5_000.0 && decoded <= 100.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        decoded <= 100.0,
        "{decoded} of mallory's {} packets decoded",
        mallory.n
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_session_filled_with_stopped_m_lines_is_asked_to_reoffer() {
    let s = Server::start(&["--max-requests-per-sec", "1000"]).await;
    // host (signaling only) calls alice and bob into a group call, then invites 18 guests who
    // each connect, talk briefly and hang up: 18 m-lines stopped in alice's session.
    let mut host = s.login("host").await;
    let mut a = s.login("alice").await;
    let mut b = s.login("bob").await;
    let r = host
        .request(
            "call",
            json!({"to": ["alice", "bob"], "media": "audio", "group": true}),
        )
        .await
        .unwrap();
    let call_id = r["call_id"].as_str().unwrap().to_string();
    for c in [&mut a, &mut b] {
        c.expect("invited").await;
        c.request("accept", json!({ "call_id": call_id }))
            .await
            .unwrap();
    }
    let (stop_tx, stop) = watch::channel(false);
    let linger = Duration::from_millis(500);
    let alice = tokio::spawn(member(a, call_id.clone(), 0, stop.clone(), linger));
    let bob = tokio::spawn(member(b, call_id.clone(), 1, stop.clone(), linger));
    let (_never, mut idle) = watch::channel(false);
    for g in 0..18u8 {
        let name = format!("guest{g}");
        let mut ws = s.login(&name).await;
        host.request("invite", json!({"call_id": call_id, "to": [name]}))
            .await
            .unwrap();
        ws.expect("invited").await;
        ws.request("accept", json!({ "call_id": call_id }))
            .await
            .unwrap();
        let mut guest = Media::new(ws, &call_id, 2).await;
        guest.offer().await;
        guest.send(1, Until::Packets(10), &mut idle).await;
        guest
            .ws
            .request("hangup", json!({ "call_id": call_id }))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_tx.send(true).unwrap();
    let (alice, bob) = (alice.await.unwrap(), bob.await.unwrap());
    for (name, seen) in [("alice", &alice), ("bob", &bob)] {
        let asks: Vec<&Value> = seen
            .notices
            .iter()
            .filter(|n| n["method"] == "reoffer")
            .collect();
        assert_eq!(asks.len(), 1, "{name}: {asks:?}");
        assert_eq!(
            asks[0]["params"],
            json!({"call_id": call_id, "reason": "compact"})
        );
        assert!(seen.from[2] > 0, "{name} heard the guests");
    }
}
