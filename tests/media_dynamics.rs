//! Deterministic tests of the media core across real call dynamics: mute or hold before the
//! first offer and across reconnects, very long holds, publisher SSRC changes, sequence wrap,
//! upstream loss, and MOS after an unmute. Each asserts what a str0m subscriber decodes (and
//! the sequence numbers the server wrote for it), on the virtual clock of `netsim`.

use std::time::{Duration, Instant};

use sfu::media::{Leg, MediaConfig, MediaEvent, MediaLimits, MemberMedia};
use sfu_suite::netsim::{World, server_addr};
use str0m::media::MediaKind;

const AUDIO: [MediaKind; 1] = [MediaKind::Audio];
const AV: [MediaKind; 2] = [MediaKind::Audio, MediaKind::Video];

fn muted() -> MemberMedia {
    MemberMedia {
        audio_muted: true,
        ..MemberMedia::default()
    }
}

/// `user`'s availability reports for `kind` after `since`.
fn availability(w: &World, since: Instant, user: &str, kind: MediaKind) -> Vec<bool> {
    w.notices
        .iter()
        .filter(|(t, _)| *t >= since)
        .filter_map(|(_, e)| match e {
            MediaEvent::Available {
                user: u,
                kind: k,
                available,
                ..
            } if u == user && *k == kind => Some(*available),
            _ => None,
        })
        .collect()
}

/// Sequence numbers the server skipped on `receiver`'s stream of `sender`'s `kind`.
fn gaps(w: &World, receiver: usize, sender: u8, kind: MediaKind) -> u64 {
    let k = if kind == MediaKind::Audio { 0 } else { 1 };
    w.clients[receiver]
        .gaps
        .get(&(sender, k))
        .copied()
        .unwrap_or(0)
}

#[test]
fn muted_before_the_first_offer_is_never_heard_until_unmute() {
    let mut w = World::new();
    let t0 = w.now;
    w.join_with("alice", &AUDIO, false, muted());
    w.join_call("bob", &AUDIO, false);
    w.run(Duration::from_secs(4));
    assert!(w.clients[0].sent[0] > 150, "alice's client sends all along");
    assert_eq!(
        w.clients[1].from(0, MediaKind::Audio),
        0,
        "bob hears nothing of alice"
    );
    assert!(
        w.clients[0].from(1, MediaKind::Audio) > 150,
        "alice hears bob"
    );
    assert!(
        !availability(&w, t0, "alice", MediaKind::Audio).contains(&true),
        "a muted member's audio is never announced"
    );
    let t1 = w.now;
    w.mute(0, Some(false), None);
    w.run(Duration::from_secs(2));
    assert!(w.clients[1].from(0, MediaKind::Audio) > 90);
    assert_eq!(gaps(&w, 1, 0, MediaKind::Audio), 0);
    assert_eq!(availability(&w, t1, "alice", MediaKind::Audio), [true]);
}

#[test]
fn mute_survives_a_reconnect_and_its_re_offer() {
    let mut w = World::new();
    w.join_call("alice", &AUDIO, false);
    w.join_call("bob", &AUDIO, false);
    w.run(Duration::from_secs(2));
    w.mute(0, Some(true), None);
    w.run(Duration::from_millis(200));
    let heard = w.clients[1].from(0, MediaKind::Audio);
    let since = w.now;
    // alice's network drops; her app reconnects with a fresh peer connection.
    w.reconnect(0, &AUDIO, false);
    w.run(Duration::from_secs(4));
    assert!(w.clients[0].rtc.is_connected());
    assert!(
        w.clients[0].from(1, MediaKind::Audio) > 0,
        "alice hears bob again"
    );
    assert_eq!(w.clients[1].from(0, MediaKind::Audio), heard, "still muted");
    assert!(!availability(&w, since, "alice", MediaKind::Audio).contains(&true));
    w.mute(0, Some(false), None);
    w.run(Duration::from_secs(1));
    assert!(w.clients[1].from(0, MediaKind::Audio) > heard + 40);
}

#[test]
fn hold_survives_a_reconnect_and_its_re_offer() {
    let mut w = World::new();
    w.join("alice", &AV);
    w.join("bob", &AV);
    w.run(Duration::from_secs(2));
    w.hold(0, true);
    w.run(Duration::from_millis(200));
    let snap = w.snapshot();
    let since = w.now;
    w.reconnect(0, &AV, true);
    w.run(Duration::from_secs(4));
    assert!(w.clients[0].rtc.is_connected());
    let after = w.snapshot();
    for k in AV {
        assert_eq!(
            after.got(1, 0, k),
            snap.got(1, 0, k),
            "nothing from alice on hold"
        );
        assert_eq!(
            after.got(0, 1, k),
            snap.got(0, 1, k),
            "nothing to alice on hold"
        );
        assert!(!availability(&w, since, "alice", k).contains(&true));
    }
    w.hold(0, false);
    w.run(Duration::from_secs(2));
    let resumed = w.snapshot();
    assert!(resumed.got(1, 0, MediaKind::Audio) > after.got(1, 0, MediaKind::Audio) + 40);
    assert!(resumed.got(0, 1, MediaKind::Video) > after.got(0, 1, MediaKind::Video) + 20);
}

/// A server that takes the 2,500 packets/s these tests send to compress time.
fn fast_world() -> World {
    World::with_config(MediaConfig {
        limits: MediaLimits {
            packet_rate: 10_000,
            ..MediaLimits::default()
        },
        ..MediaConfig::new(server_addr())
    })
}

#[test]
fn a_hold_of_100_000_packets_resumes_at_once_without_a_gap() {
    let mut w = fast_world();
    w.join_call("alice", &AUDIO, false);
    w.join_call("bob", &AUDIO, false);
    w.run(Duration::from_secs(2));
    let before = w.clients[1].from(0, MediaKind::Audio);
    assert!(before > 50);
    // 50 packets per 20 ms tick: 100,000 packets in 40 s of virtual time.
    w.clients[0].burst = 50;
    w.hold(0, true);
    let sent = w.clients[0].sent[0];
    w.run(Duration::from_secs(40));
    assert!(w.clients[0].sent[0] - sent >= 100_000);
    let held = w.clients[1].from(0, MediaKind::Audio);
    assert!(
        held - before < 60,
        "only in-flight packets arrived during the hold"
    );
    w.clients[0].burst = 1;
    w.hold(0, false);
    w.run(Duration::from_millis(200));
    assert!(
        w.clients[1].from(0, MediaKind::Audio) >= held + 5,
        "bob decrypts again at once"
    );
    w.run(Duration::from_secs(2));
    assert!(w.clients[1].from(0, MediaKind::Audio) >= held + 100);
    assert_eq!(gaps(&w, 1, 0, MediaKind::Audio), 0);
    assert_eq!(
        w.clients[1].max_jump, 1,
        "no jump in bob's sequence numbers"
    );
}

#[test]
fn a_subscriber_held_past_the_16_bit_range_decrypts_again() {
    let mut w = fast_world();
    w.join_call("alice", &AUDIO, false);
    w.join_call("bob", &AUDIO, false);
    w.run(Duration::from_secs(2));
    w.clients[0].burst = 50;
    w.hold(1, true); // bob on hold: nothing is sent to him
    w.run(Duration::from_secs(16)); // 40,000 of alice's packets withheld
    let held = w.clients[1].from(0, MediaKind::Audio);
    w.clients[0].burst = 1;
    w.hold(1, false);
    w.run(Duration::from_secs(1));
    assert!(w.clients[1].from(0, MediaKind::Audio) >= held + 40);
    assert_eq!(gaps(&w, 1, 0, MediaKind::Audio), 0);
    assert_eq!(w.clients[1].max_jump, 1);
}

#[test]
fn a_publisher_ssrc_change_continues_the_subscriber_stream() {
    let mut w = World::new();
    w.join("alice", &AV);
    w.join("bob", &AV);
    w.run(Duration::from_secs(3));
    let (audio, video) = (
        w.clients[1].from(0, MediaKind::Audio),
        w.clients[1].from(0, MediaKind::Video),
    );
    let kf_out = w.server.counters().keyframe_requests_out;
    // alice's app restarts its tracks: new SSRCs, new sequence spaces.
    let sends = w.clients[0].send.clone();
    for (mid, _) in sends {
        let ssrc = w.clients[0].rtc.direct_api().new_ssrc();
        let rtx = w.clients[0].rtc.direct_api().new_ssrc();
        assert!(
            w.clients[0]
                .rtc
                .direct_api()
                .reset_stream_tx(mid, None, ssrc, Some(rtx))
                .is_some()
        );
        w.clients[0].seq.insert(mid, 30_000);
    }
    w.drain_client(0);
    w.run(Duration::from_secs(2));
    assert!(w.clients[1].from(0, MediaKind::Audio) > audio + 90);
    assert!(w.clients[1].from(0, MediaKind::Video) > video + 50);
    assert_eq!(gaps(&w, 1, 0, MediaKind::Audio), 0);
    assert_eq!(gaps(&w, 1, 0, MediaKind::Video), 0);
    assert_eq!(w.clients[1].max_jump, 1);
    // The server asks the new source for a keyframe. (The client's str0m cannot take it:
    // `reset_stream_tx` keeps its send stream under the old SSRC, so a PLI for the new one is
    // dropped there; browsers announce the new SSRC and are not affected.)
    assert_eq!(
        w.server.counters().keyframe_requests_out,
        kf_out + 1,
        "the new video source is asked for a keyframe"
    );
}

#[test]
fn the_publisher_sequence_wrap_is_seamless() {
    let mut w = World::new();
    w.join("alice", &AV);
    w.join("bob", &AV);
    let mids = w.clients[0].send.clone();
    for (mid, _) in mids {
        w.clients[0].seq.insert(mid, 65_400);
    }
    w.run(Duration::from_secs(8)); // audio crosses 65535 after ~3 s, video after ~4.5 s
    for (mid, _) in &w.clients[0].send {
        assert!(w.clients[0].seq[mid] > 65_536);
    }
    assert!(w.clients[1].from(0, MediaKind::Audio) > 350);
    assert!(w.clients[1].from(0, MediaKind::Video) > 200);
    assert_eq!(gaps(&w, 1, 0, MediaKind::Audio), 0);
    assert_eq!(gaps(&w, 1, 0, MediaKind::Video), 0);
}

/// bob's `down` quality reports after `since`: (loss, mos).
fn downs(w: &World, since: Instant, user: &str) -> Vec<(f64, f64)> {
    w.notices
        .iter()
        .filter(|(t, _)| *t >= since)
        .filter_map(|(_, e)| match e {
            MediaEvent::Quality {
                user: u,
                leg: Leg::Down,
                report,
                ..
            } if u == user => Some((report.loss, report.mos)),
            _ => None,
        })
        .collect()
}

#[test]
fn real_upstream_loss_still_shows_downstream() {
    let mut w = World::new();
    w.join_call("alice", &AUDIO, false);
    w.join_call("bob", &AUDIO, false);
    w.run(Duration::from_secs(6));
    let alice = w.clients[0].addr;
    w.media_loss
        .insert((alice, server_addr()), (0.05, Vec::new()));
    w.run(Duration::from_secs(6));
    let since = w.now;
    let gaps_before = gaps(&w, 1, 0, MediaKind::Audio);
    let got_before = w.clients[1].from(0, MediaKind::Audio);
    w.run(Duration::from_secs(30));
    let d = downs(&w, since, "bob");
    assert!(d.len() >= 5, "{d:?}");
    let mean = d.iter().map(|(l, _)| l).sum::<f64>() / d.len() as f64;
    assert!(
        (0.035..0.065).contains(&mean),
        "bob's down loss {mean}: {d:?}"
    );
    let missing = gaps(&w, 1, 0, MediaKind::Audio) - gaps_before;
    let got = w.clients[1].from(0, MediaKind::Audio) - got_before;
    let seen = missing as f64 / (missing + got) as f64;
    assert!((0.035..0.065).contains(&seen), "gaps at bob {seen}");
}

#[test]
fn down_mos_after_an_unmute_equals_the_mos_before_the_mute() {
    let mut w = World::new();
    w.join_call("alice", &AUDIO, false);
    w.join_call("bob", &AUDIO, false);
    w.run(Duration::from_secs(8));
    let since = w.now;
    w.run(Duration::from_secs(15));
    let before = downs(&w, since, "bob");
    w.mute(0, Some(true), None);
    w.run(Duration::from_secs(20));
    w.mute(0, Some(false), None);
    let since = w.now;
    w.run(Duration::from_secs(20));
    let after = downs(&w, since, "bob");
    assert!(
        before.len() >= 2 && after.len() >= 3,
        "{before:?} {after:?}"
    );
    let mos = before[before.len() - 1].1;
    for (loss, m) in after {
        assert_eq!(loss, 0.0, "the withheld packets are not loss");
        assert!((m - mos).abs() <= 0.01, "{m} vs {mos}");
    }
}

#[test]
fn a_str0m_panic_drops_one_peer_only_and_its_member_recovers() {
    let mut w = World::new();
    for name in ["alice", "bob", "carol"] {
        w.join_call(name, &AUDIO, false);
    }
    w.run(Duration::from_secs(2));
    let since = w.now;
    assert!(w.server.inject_panic(sfu_suite::netsim::CALL, "bob"));
    w.run(Duration::from_millis(500));
    let failed: Vec<_> = w
        .notices
        .iter()
        .filter(|(t, _)| *t >= since)
        .filter_map(|(_, e)| match e {
            MediaEvent::Failed { user, failure, .. } => Some((user.clone(), *failure)),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [("bob".to_string(), sfu::media::Failure::Rtc)]);
    assert_eq!(w.server.peers(), 2);
    assert_eq!(w.server.counters().rtc_failures, 1);
    // alice and carol go on hearing each other.
    let (ac, ca) = (
        w.clients[0].from(2, MediaKind::Audio),
        w.clients[2].from(0, MediaKind::Audio),
    );
    w.run(Duration::from_secs(1));
    assert!(w.clients[0].from(2, MediaKind::Audio) >= ac + 45);
    assert!(w.clients[2].from(0, MediaKind::Audio) >= ca + 45);
    // bob offers again and is back.
    let ab = w.clients[0].from(1, MediaKind::Audio);
    w.reconnect(1, &AUDIO, false);
    w.run(Duration::from_secs(3));
    assert_eq!(w.server.peers(), 3);
    assert!(w.clients[0].from(1, MediaKind::Audio) > ab + 50);
    assert!(w.clients[1].from(2, MediaKind::Audio) > 50);
}

#[test]
fn two_hundred_re_offers_never_grow_the_others_sdp() {
    let mut w = World::new();
    w.join("alice", &AV);
    w.join("bob", &AV);
    w.join("carol", &AV);
    w.run(Duration::from_secs(2));
    let mids = (w.clients[0].recv_mids.len(), w.clients[1].recv_mids.len());
    assert_eq!(mids, (4, 4));
    // carol's app reconnects 200 times (each a fresh peer connection and offer).
    for _ in 0..200 {
        w.reconnect(2, &AV, true);
        w.run(Duration::from_millis(300));
    }
    w.run(Duration::from_secs(1));
    // alice and bob kept their m-lines for carol: no server offer, no new m-line.
    assert_eq!(
        (w.clients[0].recv_mids.len(), w.clients[1].recv_mids.len()),
        mids
    );
    assert!(w.clients[2].rtc.is_connected());
    let (a, v) = (
        w.clients[1].from(2, MediaKind::Audio),
        w.clients[1].from(2, MediaKind::Video),
    );
    w.run(Duration::from_secs(1));
    assert!(
        w.clients[1].from(2, MediaKind::Audio) >= a + 45,
        "bob hears carol"
    );
    assert!(
        w.clients[1].from(2, MediaKind::Video) >= v + 25,
        "bob sees carol"
    );
    assert!(
        w.clients[2].from(0, MediaKind::Audio) > 0,
        "carol hears alice"
    );
    assert_eq!(
        gaps(&w, 1, 2, MediaKind::Audio),
        0,
        "carol's stream continues at bob"
    );
    assert_eq!(w.server.counters().rtc_failures, 0);
}
