//! Deterministic tests of the per-member media caps (`MediaLimits`): a hostile member's offer,
//! tracks, candidates, spoofed sources, packet rate and Opus decoding are bounded, and the
//! others' call goes on.

use std::net::SocketAddr;
use std::time::Duration;

use sfu::media::worker::COMPACT_AFTER;
use sfu::media::{Command, MediaConfig, MediaEvent, MediaLimits, MemberMedia};
use sfu_suite::netsim::{CALL, Client, World, server_addr};
use str0m::ice::{StunMessage, TransId};
use str0m::media::{Direction, MediaKind};

const AUDIO: [MediaKind; 1] = [MediaKind::Audio];

/// alice and bob talking; returns how much each has heard of the other so far.
fn bystanders(w: &mut World) -> (u64, u64) {
    w.join_call("alice", &AUDIO, false);
    w.join_call("bob", &AUDIO, false);
    w.run(Duration::from_secs(2));
    heard(w)
}

fn heard(w: &World) -> (u64, u64) {
    (
        w.clients[0].from(1, MediaKind::Audio),
        w.clients[1].from(0, MediaKind::Audio),
    )
}

fn still_talking(w: &mut World, before: (u64, u64)) {
    w.run(Duration::from_secs(1));
    let after = heard(w);
    assert!(
        after.0 >= before.0 + 45 && after.1 >= before.1 + 45,
        "{before:?} -> {after:?}"
    );
}

/// mallory's offer of `n` audio m-lines; returns the server's reply.
fn offer_mlines(w: &mut World, n: usize) -> Result<Option<String>, sfu::media::MediaError> {
    let mut c = Client::new(2, "mallory", w.now);
    let mut api = c.rtc.sdp_api();
    for _ in 0..n {
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    }
    let (offer, _) = api.apply().unwrap();
    w.next_ticket += 1;
    let ticket = w.next_ticket;
    w.command(Command::Offer {
        call_id: CALL.into(),
        user: "mallory".into(),
        sdp: offer.to_sdp_string(),
        video: false,
        state: MemberMedia::default(),
        ticket,
    });
    w.replies.remove(&ticket).expect("a reply")
}

#[test]
fn offers_with_too_many_m_lines_are_refused() {
    let mut w = World::new();
    let before = bystanders(&mut w);
    let r = offer_mlines(&mut w, 300);
    assert!(
        matches!(&r, Err(e) if e.to_string().contains("64 KiB")),
        "{r:?}"
    );
    let r = offer_mlines(&mut w, 40);
    assert!(
        matches!(&r, Err(e) if e.to_string().contains("40 m-lines")),
        "{r:?}"
    );
    w.join_call("mallory", &[MediaKind::Audio; 16], false); // at the cap: answered
    w.run(Duration::from_secs(1));
    assert_eq!(w.server.peers(), 3);
    still_talking(&mut w, before);
}

#[test]
fn tracks_over_the_per_kind_cap_are_not_forwarded() {
    let mut w = World::new();
    let before = bystanders(&mut w);
    w.join_call("mallory", &[MediaKind::Audio; 5], false);
    w.run(Duration::from_secs(2));
    assert_eq!(w.server.counters().tracks_refused, 2);
    for i in [0, 1] {
        let from_mallory = w.clients[i].recv_mids.len() - 1;
        assert_eq!(
            from_mallory, 3,
            "{} gets 3 of mallory's 5 tracks",
            w.clients[i].name
        );
    }
    still_talking(&mut w, before);
}

#[test]
fn trickled_candidates_are_capped() {
    let mut w = World::new();
    let before = bystanders(&mut w);
    for i in 0..100 {
        w.command(Command::Candidate {
            call_id: CALL.into(),
            user: "alice".into(),
            candidate: format!(
                "candidate:{i} 1 udp 2130706431 10.1.{}.{} 4000 typ host",
                i / 250,
                i % 250
            ),
        });
    }
    assert_eq!(w.server.counters().candidates_refused, 100 - 32);
    still_talking(&mut w, before);
}

/// `a=ice-ufrag` / `a=ice-pwd` of an SDP.
fn ice_creds(sdp: &str) -> (String, String) {
    let find = |key: &str| {
        sdp.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .trim()
            .to_string()
    };
    (find("a=ice-ufrag:"), find("a=ice-pwd:"))
}

#[test]
fn valid_stun_from_1000_spoofed_sources_keeps_the_address_list_capped() {
    let mut w = World::new();
    let before = bystanders(&mut w);
    // alice's own credentials, as a member who wants to register sources would use them.
    let (server_ufrag, server_pwd) = ice_creds(w.clients[0].answer_sdp.as_ref().unwrap());
    let client_ufrag = w.clients[0].rtc.direct_api().local_ice_credentials().ufrag;
    let username = format!("{server_ufrag}:{client_ufrag}");
    let hmac = str0m::crypto::from_feature_flags().sha1_hmac_provider;
    for i in 0..1000u32 {
        let msg = StunMessage::binding_request(&username, TransId::new(), true, 7, 1, false);
        let mut buf = [0u8; 512];
        let n = msg
            .to_bytes(Some(server_pwd.as_bytes()), &mut buf, |k, p| {
                hmac.sha1_hmac(k, p)
            })
            .unwrap();
        let source: SocketAddr = format!("10.7.{}.{}:{}", i / 200, i % 200, 1000 + i)
            .parse()
            .unwrap();
        w.server.handle_datagram(w.now, source, &buf[..n]);
        w.drain_server();
    }
    let c = w.server.counters();
    // alice's real address and 7 spoofed ones fit; the rest are refused while those are fresh.
    assert!(c.addresses_refused >= 1000 - 7, "{c:?}");
    still_talking(&mut w, before);
}

#[test]
fn a_packet_flood_from_one_member_is_cut_at_its_ceiling() {
    let mut w = World::with_config(MediaConfig {
        limits: MediaLimits {
            packet_rate: 400,
            ..MediaLimits::default()
        },
        ..MediaConfig::new(server_addr())
    });
    let before = bystanders(&mut w);
    w.join_call("mallory", &AUDIO, false);
    w.run(Duration::from_secs(1));
    w.clients[2].burst = 40; // 2,000 packets per second
    w.run(Duration::from_secs(2));
    let dropped = w.server.counters().datagrams_over_rate;
    assert!(dropped > 2_000, "{dropped}");
    // What got through is about the ceiling: 400/s.
    let from_mallory = w.clients[0].from(2, MediaKind::Audio);
    assert!(from_mallory < 50 + 3 * 400, "{from_mallory}");
    still_talking(&mut w, before);
}

#[test]
fn opus_decoding_stays_within_its_budget() {
    let mut w = World::new();
    let before = bystanders(&mut w);
    let m = w.join_call("mallory", &AUDIO, false);
    w.clients[m].opus =
        Some(opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap());
    w.run(Duration::from_secs(2));
    assert_eq!(
        w.server.counters().decodes_skipped,
        0,
        "a normal stream fits the budget"
    );
    // 20 packets of 20 ms per 20 ms: 20 s of audio per second, the budget is 1.2 s.
    w.clients[m].burst = 20;
    w.run(Duration::from_secs(2));
    let skipped = w.server.counters().decodes_skipped;
    assert!(skipped > 1_500, "{skipped}");
    still_talking(&mut w, before);
}

#[test]
fn genuine_churn_never_grows_a_members_session_without_bound() {
    // Guests join and leave 100 times beside alice and bob. Each departure stops an m-line in
    // their sessions (str0m never recycles one in our offers); at COMPACT_AFTER stopped ones
    // the server asks them for a new offer, which starts a session with the live tracks only.
    let mut w = World::new();
    w.join_call("alice", &AUDIO, false);
    w.join_call("bob", &AUDIO, false);
    w.run(Duration::from_secs(2));
    let mut asked = Vec::new();
    let mut most = 0;
    for round in 0..100 {
        let g = w.join_call(&format!("guest{round}"), &AUDIO, false);
        w.run(Duration::from_millis(500));
        w.leave(g);
        w.run(Duration::from_millis(300));
        most = most.max(w.clients[0].offer_mlines);
        let users: Vec<String> = w
            .notices
            .drain(..)
            .filter_map(|(_, e)| match e {
                MediaEvent::Reoffer { user, .. } => Some(user),
                _ => None,
            })
            .collect();
        for user in users {
            // What a client does when asked (docs/protocol.md, `reoffer`).
            let i = w.clients.iter().position(|c| c.name == user).unwrap();
            w.reconnect(i, &AUDIO, false);
            w.run(Duration::from_millis(500));
            asked.push(user);
        }
    }
    let of = |u: &str| asked.iter().filter(|a| *a == u).count();
    assert!(of("alice") >= 5 && of("bob") >= 5, "{asked:?}");
    assert!(
        asked.iter().all(|a| a == "alice" || a == "bob"),
        "{asked:?}"
    );
    // Own send m-line + bob's track + the guest of the moment + the stopped ones before the ask.
    let bound = 3 + COMPACT_AFTER as usize + 1;
    assert!(most <= bound, "alice's session grew to {most} m-lines");
    // Still talking to each other after all that.
    let before = w.snapshot();
    w.run(Duration::from_secs(1));
    let after = w.snapshot();
    for (a, b) in [(0, 1), (1, 0)] {
        let heard = after.got(a, b, MediaKind::Audio) - before.got(a, b, MediaKind::Audio);
        assert!(heard > 40, "{a} heard {heard} of {b}'s packets");
    }
}
