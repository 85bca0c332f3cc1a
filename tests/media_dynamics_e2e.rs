//! End-to-end call dynamics over real UDP on loopback: the real `sfu` binary and str0m clients
//! that signal through the protocol. A member who mutes before their first offer is never
//! heard until they unmute; a hold of 100,000 packets resumes at once with no gap in the
//! subscriber's sequence numbers (the old rebasing jumped by the hold, and past 2^15 the
//! subscriber's SRTP never decrypted again).
//!
//! The clients are `common::media`'s.

mod common;

use std::time::Duration;

use common::media::{Seen, Step, Until, listener, talk, two};
use common::{Server, connected_call};
use serde_json::json;
use str0m::RtcConfig;
use str0m::media::{Direction, MediaKind};

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
