//! Deterministic tests of the media core: str0m client Peers and one `MediaCore` over the
//! in-memory network of `sfu_suite::netsim`, with a virtual clock and injected loss. No
//! sockets, no sleeps.

use std::net::SocketAddr;
use std::time::Duration;

use sfu::media::{Command, MediaConfig, MediaEvent, MemberMedia};
use sfu_suite::netsim::{CALL, World, assert_exact_mesh, measured_call, server_addr};
use str0m::media::{KeyframeRequestKind, MediaKind};

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
    w.end_call();
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
    w.mute(1, Some(true), None);
    w.hold(2, true);
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
    w.mute(1, Some(false), None);
    w.hold(2, false);
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
    let bad = |w: &mut World, cmd: fn(u64) -> Command| {
        w.next_ticket += 1;
        let t = w.next_ticket;
        w.command(cmd(t));
        assert!(
            matches!(w.replies.get(&t), Some(Err(_))),
            "{:?}",
            w.replies.get(&t)
        );
    };
    bad(&mut w, |ticket| Command::Offer {
        call_id: CALL.into(),
        user: "bob".into(),
        sdp: "not sdp".into(),
        video: true,
        state: MemberMedia::default(),
        ticket,
    });
    bad(&mut w, |ticket| Command::Offer {
        call_id: CALL.into(),
        user: "bob".into(),
        sdp: "v=0\r\n".repeat(20000),
        video: true,
        state: MemberMedia::default(),
        ticket,
    });
    bad(&mut w, |ticket| Command::Answer {
        call_id: CALL.into(),
        user: "alice".into(),
        sdp: "v=0\r\n".into(),
        ticket,
    });
    bad(&mut w, |ticket| Command::Answer {
        call_id: CALL.into(),
        user: "nobody".into(),
        sdp: "v=0\r\n".into(),
        ticket,
    });
    w.run(Duration::from_secs(1));
    assert_eq!(w.server.peers(), 1);
}

#[test]
fn a_long_call_stays_connected() {
    let mut w = World::new();
    let media = [MediaKind::Audio];
    w.join("alice", &media);
    w.join("bob", &media);
    w.run(Duration::from_secs(90));
    let before = w.snapshot();
    w.run(Duration::from_secs(2));
    let after = w.snapshot();
    assert!(w.clients.iter().all(|c| c.rtc.is_connected()));
    assert!(after.got(1, 0, MediaKind::Audio) - before.got(1, 0, MediaKind::Audio) >= 95);
    assert!(after.got(0, 1, MediaKind::Audio) - before.got(0, 1, MediaKind::Audio) >= 95);
    assert_eq!(w.server.counters().ice_failures, 0);
}

#[test]
fn an_audio_call_forwards_no_video_even_if_offered() {
    let mut w = World::new();
    let media = [MediaKind::Audio, MediaKind::Video];
    w.join_call("alice", &media, false);
    w.join_call("bob", &media, false);
    w.run(Duration::from_secs(3));
    for (r, s) in [(0, 1), (1, 0)] {
        assert!(w.clients[r].from(s, MediaKind::Audio) > 100);
        assert_eq!(w.clients[r].from(s, MediaKind::Video), 0);
        assert_eq!(
            w.clients[r].recv_mids.len(),
            1,
            "only an audio subscription"
        );
    }
    assert_eq!(w.server.counters().rtp_out_packets[1], 0);
}

/// The tick is for timers only: a forwarded packet leaves at the instant its datagram came in,
/// though str0m holds a written packet until a timeout stamps it (0.25's `SendStream`). With
/// 3 ms links each way and no jitter, every packet's transit is exactly 6 ms, whatever the
/// tick; served on the 10-ms grid it was up to 16 ms. Unpaced (no downlink estimation): a
/// paced Peer's video waits its turn in str0m's pacer by design, and its timers are served
/// at their instant anyway.
#[test]
fn forwarding_never_waits_for_the_tick() {
    for tick in [
        Duration::ZERO,
        Duration::from_millis(10),
        Duration::from_millis(50),
    ] {
        let mut w = World::with_config(MediaConfig {
            tick,
            bwe: false,
            ..MediaConfig::new(server_addr())
        });
        w.delay = Duration::from_millis(3);
        let media = [MediaKind::Audio, MediaKind::Video];
        for name in ["alice", "bob", "carol"] {
            w.join(name, &media);
        }
        w.run(Duration::from_secs(3));
        w.quiesce();
        for c in &mut w.clients {
            c.max_transit = Duration::ZERO;
        }
        let before = w.snapshot();
        w.resume();
        w.run(Duration::from_secs(5));
        w.quiesce();
        assert_exact_mesh(&before, &w.snapshot(), 3, &media);
        for c in &w.clients {
            assert_eq!(
                c.max_transit,
                Duration::from_millis(6),
                "{} with a {tick:?} tick",
                c.name
            );
        }
    }
}

#[test]
fn timer_deadlines_ride_the_tick_and_none_is_missed() {
    // Unpaced Peers: a paced one's deadlines are served at their instant (see `tick`).
    let run = |tick: Duration| {
        let mut w = World::with_config(MediaConfig {
            tick,
            bwe: false,
            ..MediaConfig::new(server_addr())
        });
        let media = [MediaKind::Audio, MediaKind::Video];
        let (b, a) = measured_call(&mut w, &["alice", "bob", "carol", "dave"], &media, 10);
        assert_exact_mesh(&b, &a, 4, &media);
        let reports = w
            .notices
            .iter()
            .filter(|(_, e)| matches!(e, MediaEvent::Quality { .. }))
            .count();
        (w.server_wakes, reports)
    };
    let (exact_wakes, exact_reports) = run(Duration::ZERO);
    let (tick_wakes, tick_reports) = run(Duration::from_millis(10));
    assert!(
        tick_wakes * 2 < exact_wakes,
        "{exact_wakes} -> {tick_wakes}"
    );
    assert_eq!(
        tick_reports, exact_reports,
        "every periodic report still comes"
    );
}

/// ICE-TCP in the core: a member whose only candidate is TCP (a firewall drops their UDP)
/// reaches the worker's passive TCP candidate, on the same address number as the UDP one
/// (sources are told apart by transport), and hears and is heard by a UDP member with no gap,
/// for a long call on the virtual clock.
#[test]
fn a_member_over_ice_tcp_hears_and_is_heard_beside_a_udp_member() {
    let mut w = World::with_config(MediaConfig {
        advertised_tcp: Some(server_addr()),
        ..MediaConfig::new(server_addr())
    });
    let media = [MediaKind::Audio, MediaKind::Video];
    w.join("alice", &media);
    let bob = w.join_tcp("bob", &media);
    let answer = w.clients[bob].answer_sdp.clone().unwrap();
    assert!(answer.contains("tcptype passive"), "{answer}");
    w.run(Duration::from_secs(3));
    assert_eq!(
        w.server.peers_by_transport(),
        [1, 1, 0],
        "alice UDP, bob TCP"
    );
    let before = w.snapshot();
    w.run(Duration::from_secs(120));
    let after = w.snapshot();
    for (r, s) in [(0, 1), (1, 0)] {
        for k in media {
            let sent = after.sent(s, k) - before.sent(s, k);
            let got = after.got(r, s, k) - before.got(r, s, k);
            assert!(sent > 1000, "{k:?} sent {sent}");
            assert!(got + 10 >= sent, "{r} got {got} of {s}'s {sent} {k:?}");
        }
    }
    assert_eq!(
        w.clients[bob].gaps.values().sum::<u64>(),
        0,
        "no gap over TCP"
    );
    assert_eq!(w.server.counters().datagrams_unrouted, 0);
}
