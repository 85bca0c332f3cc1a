//! Bad input against the real server: each kind gets the protocol's answer, nothing panics or
//! stalls, and a well-behaved client on the same server keeps its call and its pings.

mod common;

use common::{Closed, Server, connected_call};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// A healthy 1v1 call that must survive whatever the other sockets do.
struct Bystanders {
    alice: common::Client,
    bob: common::Client,
    call_id: String,
}

impl Bystanders {
    async fn new(s: &Server) -> Self {
        let mut alice = s.login("alice").await;
        let mut bob = s.login("bob").await;
        let call_id = connected_call(&mut alice, &mut bob, "audio").await;
        Self {
            alice,
            bob,
            call_id,
        }
    }

    /// Their pings answer and their messages still flow.
    async fn still_fine(&mut self) {
        assert_eq!(
            self.alice.request("ping", json!({})).await.unwrap(),
            json!({})
        );
        self.alice
            .request(
                "message",
                json!({"call_id": self.call_id, "text": "still here"}),
            )
            .await
            .unwrap();
        assert_eq!(self.bob.expect("message").await["text"], "still here");
        assert_eq!(
            self.bob.request("ping", json!({})).await.unwrap(),
            json!({})
        );
    }
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let mut s = Server::start(&[]).await;
    let mut ok = Bystanders::new(&s).await;
    let mut c = s.client().await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    assert!(c.send_raw(Message::Frame(frame)).await);
    assert_eq!(c.closed().await.0, Closed::Code(1007));
    ok.still_fine().await;
    assert!(s.alive());
}

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let mut s = Server::start(&[]).await;
    let mut ok = Bystanders::new(&s).await;
    let mut c = s.login("mallory").await;
    // Exactly at the limit is fine (and just a parse error).
    let at_limit = "x".repeat(64 * 1024);
    c.send_text(&at_limit).await;
    assert_eq!(c.response(Value::Null).await.unwrap_err()["code"], -32700);
    let big = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"message\",\"params\":{{\"text\":\"{}\"}}}}",
        "x".repeat(64 * 1024)
    );
    c.send_raw(Message::text(big)).await;
    assert_eq!(c.closed().await.0, Closed::Code(1009));
    ok.still_fine().await;
    assert!(s.alive());
    s.wait_metric("sfu_sessions_closed_total{cause=\"too_large\"}", 1.0)
        .await;
}

#[tokio::test]
async fn binary_frames_and_wrong_types_get_errors_and_the_socket_stays_open() {
    let s = Server::start(&[]).await;
    let mut c = s.login("mallory").await;
    assert!(c.send_raw(Message::binary(vec![1u8, 2, 3])).await);
    assert_eq!(c.response(Value::Null).await.unwrap_err()["code"], -32600);
    for (method, params) in [
        ("call", json!({"to": "bob", "media": "audio"})),
        ("call", json!({"to": [1], "media": "audio"})),
        ("call", json!({"to": ["bob"], "media": 1})),
        ("call", json!([1, 2])),
        ("call", json!("str")),
        ("accept", json!({"call_id": ["x"]})),
        ("accept", json!({"call_id": ""})),
        ("accept", json!({"call_id": "x".repeat(1000)})),
        ("mute", json!({"call_id": "x", "audio": "yes"})),
        ("hold", json!({"call_id": "x"})),
        ("dtmf", json!({"call_id": "x", "digits": 5})),
        ("message", json!({"call_id": "x", "text": null})),
        ("invite", json!({"call_id": "x", "to": [null]})),
        ("login", json!({"token": 1})),
    ] {
        let code = c.error_code(method, params.clone()).await;
        assert_eq!(code, -32602, "{method} {params}");
    }
    // Logging in again: a bad token is 4001, a good one is the wrong state.
    assert_eq!(c.error_code("login", json!({"token": "x"})).await, 4001);
    let token = s.token("mallory");
    assert_eq!(c.error_code("login", json!({ "token": token })).await, 4009);
    for text in [
        "null",
        "\"str\"",
        "{\"id\":1,\"method\":null}",
        "{\"id\":1.5e400,\"method\":\"ping\"}",
        "{\"id\":1,\"method\":\"ping\",\"jsonrpc\":2}",
        &"[".repeat(10_000),
    ] {
        c.send_text(text).await;
        let e = c.next_response().await["error"].clone();
        assert!(
            [-32700, -32600].contains(&e["code"].as_i64().unwrap()),
            "{text:.40}: {e}"
        );
    }
    assert_eq!(c.request("ping", json!({})).await.unwrap(), json!({}));
}

#[tokio::test]
async fn a_flood_of_garbage_closes_that_socket_only() {
    let mut s = Server::start(&[]).await;
    let mut ok = Bystanders::new(&s).await;
    let mut flood = s.client().await;
    let mut sent = 0;
    for i in 0..5000 {
        let garbage = if i % 2 == 0 { "}{" } else { "[1,2,3]" };
        if !flood.send_raw(Message::text(garbage)).await {
            break;
        }
        sent += 1;
    }
    let (closed, _) = flood.closed().await;
    assert_eq!(closed, Closed::Code(1008), "after {sent} frames");
    ok.still_fine().await;
    // Meanwhile others can still log in and call.
    let mut carol = s.login("carol").await;
    let mut dave = s.login("dave").await;
    connected_call(&mut carol, &mut dave, "video").await;
    assert!(s.alive());
}

#[tokio::test]
async fn abrupt_disconnects_and_half_open_handshakes_do_not_hurt() {
    let mut s = Server::start(&[]).await;
    let mut ok = Bystanders::new(&s).await;
    // Raw TCP garbage on the HTTP port, and an upgrade that never completes.
    for payload in [
        &b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"[..],
        b"\x16\x03\x01\x00\x00garbage\r\n\r\n",
        b"POST /ws HTTP/1.1\r\nContent-Length: 99999999\r\n\r\nabc",
    ] {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(s.http).await.unwrap();
        let _ = tcp.write_all(payload).await;
        drop(tcp);
    }
    for _ in 0..20 {
        let c = s.login("zed").await;
        c.drop_hard();
    }
    ok.still_fine().await;
    assert!(s.alive());
    s.wait_metric("sfu_sessions_active", 2.0).await;
}

#[tokio::test]
async fn a_silent_client_is_dropped_and_treated_as_disconnected() {
    let s = Server::start(&["--ws-idle-timeout", "600ms", "--reconnect-grace", "200ms"]).await;
    let mut alice = s.login("alice").await;
    let mut bob = s.login("bob").await;
    let id = connected_call(&mut alice, &mut bob, "audio").await;
    // bob stops reading: his library never answers the server's pings.
    let hold = bob;
    let left = alice.expect("user_leave").await;
    assert_eq!(
        left,
        json!({"call_id": id, "user": "bob", "reason": "disconnected"})
    );
    drop(hold);
    s.wait_metric("sfu_sessions_closed_total{cause=\"idle\"}", 1.0)
        .await;
}

#[tokio::test]
async fn a_flood_of_notifications_is_limited_too() {
    let mut s = Server::start(&["--max-requests-per-sec", "10"]).await;
    let mut ok = Bystanders::new(&s).await;
    let mut c = s.login("mallory").await;
    // Within the rate, notifications are silently ignored.
    c.send_text("{\"jsonrpc\":\"2.0\",\"method\":\"hangup\",\"params\":{}}")
        .await;
    assert_eq!(c.request("ping", json!({})).await.unwrap(), json!({}));
    for _ in 0..2000 {
        if !c
            .send_raw(Message::text("{\"jsonrpc\":\"2.0\",\"method\":\"ping\"}"))
            .await
        {
            break;
        }
    }
    assert_eq!(c.closed().await.0, Closed::Code(1008));
    ok.still_fine().await;
    assert!(s.alive());
}

/// An offer of `n` audio m-lines from a str0m client.
fn offer_with_mlines(n: usize) -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::RtcConfig::new().build(std::time::Instant::now());
    let mut api = rtc.sdp_api();
    for _ in 0..n {
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    }
    api.apply().unwrap().0.to_sdp_string()
}

#[tokio::test]
async fn offers_with_hundreds_of_m_lines_are_refused_and_others_go_on() {
    let s = Server::start(&[]).await;
    let mut alice = s.login("alice").await;
    let mut bob = s.login("bob").await;
    let id = connected_call(&mut alice, &mut bob, "audio").await;
    let mut mallory = s.login("mallory").await;
    let mut eve = s.login("eve").await;
    let evil = connected_call(&mut mallory, &mut eve, "audio").await;
    // 40 m-lines: refused with a reason.
    let e = mallory
        .request(
            "offer",
            json!({"call_id": evil, "sdp": offer_with_mlines(40)}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], -32602);
    assert!(e["message"].as_str().unwrap().contains("40 m-lines"), "{e}");
    // 300 m-lines do not even fit a frame: mallory's socket is closed, nobody else's.
    let big = json!({"jsonrpc": "2.0", "id": 9, "method": "offer",
                     "params": {"call_id": evil, "sdp": offer_with_mlines(300)}});
    mallory.send_raw(Message::text(big.to_string())).await;
    assert_eq!(mallory.closed().await.0, Closed::Code(1009));
    // The bystanders' call is untouched and can still negotiate media.
    assert_eq!(alice.request("ping", json!({})).await.unwrap(), json!({}));
    let answer = bob
        .request("offer", json!({"call_id": id, "sdp": offer_with_mlines(1)}))
        .await
        .unwrap();
    assert!(answer["sdp"].as_str().unwrap().starts_with("v=0"));
}
