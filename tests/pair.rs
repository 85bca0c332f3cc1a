//! The call model and the media core driven together (a Pair, as in quinn-proto's tests), on
//! the in-memory network with a virtual clock: login, call, accept, offer → answer, our offer →
//! the client's answer, mute, reconnect with a re-offer, leave. What each client decodes and
//! which notifications it gets are asserted; nothing sleeps.

use std::time::Duration;

use serde_json::json;
use sfu::media::Command;
use sfu::protocol::Method;
use sfu_suite::netsim::{Client, World};
use str0m::media::MediaKind;

const AUDIO: [MediaKind; 1] = [MediaKind::Audio];

#[test]
fn a_call_through_the_model_and_the_core() {
    let mut w = World::with_model();
    let alice = w.login("alice");
    let bob = w.login("bob");
    let call = w
        .request(
            alice,
            Method::Call,
            json!({"to": ["bob"], "media": "audio"}),
        )
        .unwrap();
    let call_id = call["call_id"].as_str().unwrap().to_string();
    w.request(bob, Method::Accept, json!({"call_id": call_id}))
        .unwrap();

    // Offer → answer for each; bob's offer makes the core offer alice his track and vice
    // versa; the clients answer those through `answer` requests.
    let a = w.offer_via_model(alice, &call_id, &AUDIO).unwrap();
    assert!(a["sdp"].as_str().unwrap().starts_with("v=0"));
    w.offer_via_model(bob, &call_id, &AUDIO).unwrap();
    w.run(Duration::from_secs(3));
    assert_eq!(
        w.inbox("alice", "offer").len(),
        1,
        "alice is offered bob's track"
    );
    assert_eq!(w.inbox("bob", "offer").len(), 1);
    assert!(w.clients[alice].from(bob as u8, MediaKind::Audio) > 100);
    assert!(w.clients[bob].from(alice as u8, MediaKind::Audio) > 100);
    let available = w.inbox("bob", "audio_available");
    assert_eq!(
        available,
        [json!({"call_id": call_id, "user": "alice", "available": true})]
    );

    // alice mutes: bob is told at once and hears nothing more.
    w.request(
        alice,
        Method::Mute,
        json!({"call_id": call_id, "audio": true}),
    )
    .unwrap();
    assert_eq!(w.inbox("bob", "audio_available").len(), 2);
    w.run(Duration::from_millis(200));
    let heard = w.clients[bob].from(alice as u8, MediaKind::Audio);

    // alice's connection drops; she logs in again on a new socket and re-offers from a fresh
    // peer connection. The model carries her mute into the new Peer.
    let old = &w.clients[alice];
    let mut fresh = Client::new(old.index, "alice", w.now);
    fresh.got = old.got.clone();
    w.clients[alice] = fresh;
    w.login("alice");
    w.offer_via_model(alice, &call_id, &AUDIO).unwrap();
    w.run(Duration::from_secs(4));
    assert!(w.clients[alice].rtc.is_connected());
    assert_eq!(
        w.clients[bob].from(alice as u8, MediaKind::Audio),
        heard,
        "still muted after the reconnect"
    );
    assert_eq!(
        w.inbox("bob", "audio_available").len(),
        2,
        "no `available: true` while muted"
    );
    assert_eq!(
        w.inbox("bob", "offer").len(),
        1,
        "bob keeps his m-line for alice: her new track needs no renegotiation"
    );

    w.request(
        alice,
        Method::Mute,
        json!({"call_id": call_id, "audio": false}),
    )
    .unwrap();
    w.run(Duration::from_secs(2));
    assert!(w.clients[bob].from(alice as u8, MediaKind::Audio) > heard + 50);

    // bob leaves: the 1v1 call ends and every Peer is gone.
    w.request(bob, Method::Hangup, json!({"call_id": call_id}))
        .unwrap();
    let commands = &w.model.as_ref().unwrap().commands;
    let last = &commands[commands.len() - 2..];
    assert!(
        matches!(last, [Command::Leave { user, .. }, Command::EndCall { .. }] if user == "bob"),
        "{last:?}"
    );
    assert_eq!(w.server.peers(), 0);
    assert_eq!(w.server.calls(), 0);
    assert_eq!(w.inbox("alice", "call_end").len(), 1);
}
