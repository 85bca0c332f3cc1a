//! The bodies of the fuzz targets (`sfu/fuzz`, run by `scripts/fuzz.sh` under cargo-fuzz), also
//! run on a fixed corpus by `tests/fuzz_smoke.rs` so the suite keeps them compiling and sound.
//! Each takes arbitrary bytes and must never panic; state persists across inputs, as a
//! long-running server's does.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;
use sfu::media::{Command, MemberMedia};
use sfu::protocol::{Incoming, parse_frame};
use sfu::signaling::{CallModel, ConnId, ModelConfig};
use str0m::media::MediaKind;

use crate::netsim::{CALL, World};

/// A client frame: parsed, then (if a request) handed to a call model where the sender is
/// logged in and a second user is online.
pub fn frame(data: &[u8]) {
    static MODEL: Mutex<Option<(CallModel, std::time::Instant)>> = Mutex::new(None);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut guard = MODEL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (model, now) = guard.get_or_insert_with(|| {
        let now = std::time::Instant::now();
        let mut m = CallModel::new(ModelConfig::default());
        m.login(now, ConnId(1), json!(1), "fuzzer".into());
        m.login(now, ConnId(2), json!(1), "bob".into());
        (m, now)
    });
    *now += Duration::from_millis(10);
    if let Incoming::Request { id, method, params } = parse_frame(text) {
        model.request(*now, ConnId(1), id, method, params);
    }
    while model.poll_output().is_some() {}
}

/// An SDP as a member's offer, then as their answer, to a media core with a call in progress.
pub fn sdp(data: &[u8]) {
    static CORE: Mutex<Option<World>> = Mutex::new(None);
    let text = String::from_utf8_lossy(data).into_owned();
    let mut guard = CORE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let w = guard.get_or_insert_with(|| {
        let mut w = World::new();
        w.join_call("alice", &[MediaKind::Audio], false);
        w
    });
    w.next_ticket += 1;
    let ticket = w.next_ticket;
    w.server.handle_command(
        w.now,
        Command::Offer {
            call_id: CALL.into(),
            user: "mallory".into(),
            sdp: text.clone(),
            video: true,
            state: MemberMedia::default(),
            ticket,
        },
    );
    w.server.handle_command(
        w.now,
        Command::Answer {
            call_id: CALL.into(),
            user: "mallory".into(),
            sdp: text,
            ticket: ticket + 1,
        },
    );
    w.server.handle_command(
        w.now,
        Command::Leave {
            call_id: CALL.into(),
            user: "mallory".into(),
        },
    );
    while w.server.poll_event().is_some() {}
}

/// A datagram from a connected member's address (ICE, DTLS and SRTP up), and one from a
/// stranger: STUN, DTLS, RTP and RTCP paths after the handshake.
pub fn datagram(data: &[u8]) {
    static CALL_UP: Mutex<Option<World>> = Mutex::new(None);
    let mut guard = CALL_UP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let w = guard.get_or_insert_with(|| {
        let mut w = World::new();
        w.join_call("alice", &[MediaKind::Audio], false);
        w.join_call("bob", &[MediaKind::Audio], false);
        w.run(Duration::from_secs(2));
        assert!(w.clients.iter().all(|c| c.rtc.is_connected()));
        w
    });
    let alice = w.clients[0].addr;
    w.now += Duration::from_micros(100);
    w.server.handle_datagram(w.now, alice, data);
    w.server
        .handle_datagram(w.now, "10.9.9.9:9".parse().unwrap_or(alice), data);
    w.server.handle_timeout(w.now);
    while w.server.poll_event().is_some() {}
}
