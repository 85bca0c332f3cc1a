//! End-to-end signaling tests: the real `sfu` binary on ephemeral ports, real WebSocket
//! clients, every request, notification and error code of PROTOCOL.md.

mod common;

use std::time::Duration;

use common::{Server, connected_call};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SHORT: Duration = Duration::from_millis(300);

#[tokio::test]
async fn healthz_and_metrics_listen() {
    let s = Server::start(&[]).await;
    let r = reqwest::get(format!("http://{}/healthz", s.http))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");
    let text = s.metrics_text().await;
    assert!(text.contains("sfu_sessions_active 0"), "{text}");
    assert!(text.contains("process_resident_memory_bytes"));
    // /metrics is not on the public listener, and /ws needs an upgrade.
    let r = reqwest::get(format!("http://{}/metrics", s.http))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = reqwest::get(format!("http://{}/ws", s.http)).await.unwrap();
    assert!(r.status().is_client_error());
}

#[tokio::test]
async fn one_to_one_call_with_every_in_call_request() {
    let s = Server::start(&[]).await;
    let mut alice = s.login("alice").await;
    let mut bob = s.login("bob").await;
    s.wait_metric("sfu_sessions_active", 2.0).await;

    assert_eq!(alice.request("ping", json!({})).await.unwrap(), json!({}));
    let r = alice
        .request(
            "call",
            json!({"to": ["bob"], "media": "video", "client_state": "opaque",
                   "headers": {"X-Account": "42"}}),
        )
        .await
        .unwrap();
    let id = r["call_id"].as_str().unwrap().to_string();
    let inv = bob.expect("invited").await;
    assert_eq!(
        inv,
        json!({"call_id": id, "from": "alice", "to": ["bob"], "media": "video", "group": false,
               "client_state": "opaque", "headers": {"X-Account": "42"}})
    );
    s.wait_metric("sfu_calls_active", 1.0).await;
    bob.request("accept", json!({"call_id": id})).await.unwrap();
    assert_eq!(
        alice.expect("accepted").await,
        json!({"call_id": id, "user": "bob"})
    );
    assert_eq!(
        alice.expect("user_enter").await,
        json!({"call_id": id, "user": "bob"})
    );
    assert_eq!(
        bob.expect("user_enter").await,
        json!({"call_id": id, "user": "alice"})
    );

    // mute: the others learn at once; the muting member is not told.
    bob.request("mute", json!({"call_id": id, "audio": true, "video": true}))
        .await
        .unwrap();
    assert_eq!(
        alice.expect("audio_available").await,
        json!({"call_id": id, "user": "bob", "available": false})
    );
    assert_eq!(
        alice.expect("video_available").await,
        json!({"call_id": id, "user": "bob", "available": false})
    );
    // hold is not announced.
    bob.request("hold", json!({"call_id": id, "held": true}))
        .await
        .unwrap();
    alice
        .request("dtmf", json!({"call_id": id, "digits": "123#"}))
        .await
        .unwrap();
    assert_eq!(
        bob.expect("dtmf").await,
        json!({"call_id": id, "user": "alice", "digits": "123#"})
    );
    bob.request("message", json!({"call_id": id, "text": "hi there"}))
        .await
        .unwrap();
    assert_eq!(
        alice.expect("message").await,
        json!({"call_id": id, "user": "bob", "text": "hi there"})
    );
    bob.expect_silence(SHORT).await;

    alice
        .request("hangup", json!({"call_id": id}))
        .await
        .unwrap();
    assert_eq!(
        bob.expect("user_leave").await,
        json!({"call_id": id, "user": "alice", "reason": "hangup"})
    );
    assert_eq!(
        bob.expect("call_end").await,
        json!({"call_id": id, "reason": "hangup"})
    );
    alice.expect_silence(SHORT).await;

    s.wait_metric("sfu_calls_active", 0.0).await;
    let m = s.metrics_text().await;
    assert_eq!(
        common::sample_value(&m, "sfu_calls_started_total{media=\"video\",type=\"1v1\"}"),
        1.0
    );
    assert_eq!(
        common::sample_value(
            &m,
            "sfu_calls_ended_total{answered=\"true\",reason=\"hangup\"}"
        ),
        1.0
    );
    assert_eq!(
        common::sample_value(&m, "sfu_call_setup_seconds_count"),
        1.0
    );
    assert_eq!(
        common::sample_value(&m, "sfu_signaling_requests_total{method=\"login\"}"),
        2.0
    );
    assert_eq!(
        common::sample_value(&m, "sfu_signaling_requests_total{method=\"dtmf\"}"),
        1.0
    );
}

#[tokio::test]
async fn reject_busy_and_cancel() {
    let s = Server::start(&[]).await;
    let mut alice = s.login("alice").await;
    let mut bob = s.login("bob").await;
    let mut carol = s.login("carol").await;

    // reject
    let id = alice
        .request("call", json!({"to": ["bob"], "media": "audio"}))
        .await
        .unwrap()["call_id"]
        .clone();
    bob.expect("invited").await;
    bob.request("reject", json!({"call_id": id})).await.unwrap();
    assert_eq!(
        alice.expect("rejected").await,
        json!({"call_id": id, "user": "bob"})
    );
    assert_eq!(
        alice.expect("call_end").await,
        json!({"call_id": id, "reason": "rejected"})
    );

    // busy: bob is ringing for carol, so alice's call ends at once.
    let first = carol
        .request("call", json!({"to": ["bob"], "media": "audio"}))
        .await
        .unwrap()["call_id"]
        .clone();
    bob.expect("invited").await;
    let id = alice
        .request("call", json!({"to": ["bob"], "media": "audio"}))
        .await
        .unwrap()["call_id"]
        .clone();
    assert_eq!(
        alice.expect("busy").await,
        json!({"call_id": id, "user": "bob"})
    );
    assert_eq!(
        alice.expect("call_end").await,
        json!({"call_id": id, "reason": "busy"})
    );
    bob.expect_silence(SHORT).await;

    // cancel: carol hangs up before bob answers.
    carol
        .request("hangup", json!({"call_id": first}))
        .await
        .unwrap();
    assert_eq!(bob.expect("cancelled").await, json!({"call_id": first}));
    carol.expect_silence(SHORT).await;
    s.wait_metric(
        "sfu_calls_ended_total{answered=\"false\",reason=\"cancelled\"}",
        1.0,
    )
    .await;
    s.wait_metric("sfu_calls_active", 0.0).await;
}

#[tokio::test]
async fn invite_timeout_tells_both_sides() {
    let s = Server::start(&["--invite-timeout", "700ms"]).await;
    let mut alice = s.login("alice").await;
    let mut bob = s.login("bob").await;
    let id = alice
        .request("call", json!({"to": ["bob"], "media": "audio"}))
        .await
        .unwrap()["call_id"]
        .clone();
    bob.expect("invited").await;
    assert_eq!(
        alice.expect("no_response").await,
        json!({"call_id": id, "user": "bob"})
    );
    assert_eq!(
        alice.expect("call_end").await,
        json!({"call_id": id, "reason": "no_response"})
    );
    assert_eq!(bob.expect("invite_timeout").await, json!({"call_id": id}));
    assert_eq!(bob.error_code("accept", json!({"call_id": id})).await, 4004);
}

#[tokio::test]
async fn group_call_with_invite() {
    let s = Server::start(&[]).await;
    let mut alice = s.login("alice").await;
    let mut bob = s.login("bob").await;
    let mut carol = s.login("carol").await;
    let mut dave = s.login("dave").await;

    let id = alice
        .request("call", json!({"to": ["bob", "carol"], "media": "audio"}))
        .await
        .unwrap()["call_id"]
        .clone();
    for c in [&mut bob, &mut carol] {
        let inv = c.expect("invited").await;
        assert_eq!(inv["group"], true);
        assert_eq!(inv["to"], json!(["bob", "carol"]));
    }
    bob.request("accept", json!({"call_id": id})).await.unwrap();
    alice.expect("accepted").await;
    alice.expect("user_enter").await;
    bob.expect("user_enter").await;

    // Any joined member may invite; 1v1-only and member rules are checked.
    bob.request("invite", json!({"call_id": id, "to": ["dave"]}))
        .await
        .unwrap();
    let inv = dave.expect("invited").await;
    assert_eq!(
        inv,
        json!({"call_id": id, "from": "bob", "to": ["dave"], "media": "audio", "group": true,
               "client_state": null, "headers": {}})
    );
    dave.request("accept", json!({"call_id": id}))
        .await
        .unwrap();
    for c in [&mut alice, &mut bob] {
        assert_eq!(c.expect("accepted").await["user"], "dave");
        assert_eq!(c.expect("user_enter").await["user"], "dave");
    }
    assert_eq!(dave.expect("user_enter").await["user"], "alice");
    assert_eq!(dave.expect("user_enter").await["user"], "bob");

    carol
        .request("reject", json!({"call_id": id}))
        .await
        .unwrap();
    for c in [&mut alice, &mut bob, &mut dave] {
        assert_eq!(
            c.expect("rejected").await,
            json!({"call_id": id, "user": "carol"})
        );
    }
    // The caller's hangup after an answer is a plain leave.
    alice
        .request("hangup", json!({"call_id": id}))
        .await
        .unwrap();
    for c in [&mut bob, &mut dave] {
        assert_eq!(
            c.expect("user_leave").await,
            json!({"call_id": id, "user": "alice", "reason": "hangup"})
        );
    }
    dave.request("hangup", json!({"call_id": id}))
        .await
        .unwrap();
    bob.expect("user_leave").await;
    assert_eq!(
        bob.expect("call_end").await,
        json!({"call_id": id, "reason": "hangup"})
    );
    s.wait_metric(
        "sfu_calls_started_total{media=\"audio\",type=\"group\"}",
        1.0,
    )
    .await;
    s.wait_metric("sfu_calls_active", 0.0).await;
}

#[tokio::test]
async fn offline_callee_gets_a_push_and_the_invite_on_login() {
    let (hook_url, mut pushes) = webhook_receiver().await;
    let s = Server::start(&["--push-webhook", &hook_url]).await;
    let mut alice = s.login("alice").await;
    let id = alice
        .request(
            "call",
            json!({"to": ["bob"], "media": "audio", "client_state": "wake"}),
        )
        .await
        .unwrap()["call_id"]
        .clone();
    let body = tokio::time::timeout(common::WAIT, pushes.recv())
        .await
        .expect("push in time")
        .unwrap();
    assert_eq!(
        body,
        json!({"call_id": id, "from": "alice", "to": "bob", "media": "audio",
               "client_state": "wake"})
    );
    let mut bob = s.login("bob").await;
    assert_eq!(bob.expect("invited").await["call_id"], id);
    bob.request("accept", json!({"call_id": id})).await.unwrap();
    assert_eq!(alice.expect("accepted").await["user"], "bob");
    s.wait_metric("sfu_push_webhooks_total{result=\"ok\"}", 1.0)
        .await;
}

#[tokio::test]
async fn reconnect_within_grace_and_after_it() {
    let s = Server::start(&["--reconnect-grace", "1s"]).await;
    let mut alice = s.login("alice").await;
    let mut bob = s.login("bob").await;
    let id = connected_call(&mut alice, &mut bob, "audio").await;

    // Dropped and back within the grace period: fresh user_enter, nothing for alice.
    bob.drop_hard();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut bob = s.login("bob").await;
    assert_eq!(
        bob.expect("user_enter").await,
        json!({"call_id": id, "user": "alice"})
    );
    alice.expect_silence(Duration::from_millis(1500)).await;

    // Dropped for longer than the grace period: alice sees bob leave and the call end.
    bob.close().await;
    assert_eq!(
        alice.expect("user_leave").await,
        json!({"call_id": id, "user": "bob", "reason": "disconnected"})
    );
    assert_eq!(
        alice.expect("call_end").await,
        json!({"call_id": id, "reason": "disconnected"})
    );
}

#[tokio::test]
async fn second_login_replaces_the_first_session() {
    let s = Server::start(&[]).await;
    let mut alice = s.login("alice").await;
    let mut old = s.login("bob").await;
    let id = connected_call(&mut alice, &mut old, "audio").await;
    let mut new = s.login("bob").await;
    let (closed, frames) = old.closed().await;
    assert_eq!(closed, common::Closed::Code(4000));
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["method"], "session_replaced");
    assert_eq!(
        new.expect("user_enter").await,
        json!({"call_id": id, "user": "alice"})
    );
    alice.expect_silence(SHORT).await;
    new.request("message", json!({"call_id": id, "text": "same call"}))
        .await
        .unwrap();
    assert_eq!(alice.expect("message").await["text"], "same call");
}

#[tokio::test]
async fn logout_hangs_up_and_the_socket_can_log_in_again() {
    let s = Server::start(&[]).await;
    let mut alice = s.login("alice").await;
    let mut bob = s.login("bob").await;
    let id = connected_call(&mut alice, &mut bob, "audio").await;
    bob.request("logout", json!({})).await.unwrap();
    assert_eq!(
        alice.expect("user_leave").await,
        json!({"call_id": id, "user": "bob", "reason": "logout"})
    );
    assert_eq!(
        alice.expect("call_end").await,
        json!({"call_id": id, "reason": "hangup"})
    );
    assert_eq!(bob.error_code("ping", json!({})).await, 4001);
    let r = bob
        .request("login", json!({"token": s.token("bob")}))
        .await
        .unwrap();
    assert_eq!(r["user"], "bob");
    assert!(r["session_id"].as_str().is_some_and(|s| !s.is_empty()));
}

#[tokio::test]
async fn every_error_code() {
    let s = Server::start(&["--max-calls-per-user", "1"]).await;
    let mut c = s.client().await;
    // -32700, -32600, -32601 come before the login check.
    c.send_text("{not json").await;
    let e = c.response(Value::Null).await.unwrap_err();
    assert_eq!(e["code"], -32700);
    c.send_text("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]")
        .await;
    assert_eq!(c.response(Value::Null).await.unwrap_err()["code"], -32600);
    c.send_text("{\"jsonrpc\":\"2.0\",\"id\":true,\"method\":\"ping\"}")
        .await;
    assert_eq!(c.response(Value::Null).await.unwrap_err()["code"], -32600);
    // JSON-RPC 2.0 requires "jsonrpc": missing is an invalid request, answered with its id.
    c.send_text("{\"id\":7,\"method\":\"ping\"}").await;
    assert_eq!(c.response(json!(7)).await.unwrap_err()["code"], -32600);
    assert_eq!(c.error_code("fly", json!({})).await, -32601);
    // 4001 before -32602.
    assert_eq!(c.error_code("ping", json!({})).await, 4001);
    assert_eq!(c.error_code("call", json!({"to": 3})).await, 4001);
    assert_eq!(c.error_code("login", json!({})).await, -32602);
    // Notifications (no id) are not answered.
    c.send_text("{\"jsonrpc\":\"2.0\",\"method\":\"ping\"}")
        .await;
    c.send_text("{\"jsonrpc\":\"2.0\",\"method\":\"fly\"}")
        .await;
    let login = json!({"token": s.token("alice")});
    assert_eq!(c.request("login", login).await.unwrap()["user"], "alice");
    // String ids are echoed.
    c.send_text("{\"jsonrpc\":\"2.0\",\"id\":\"abc\",\"method\":\"ping\"}")
        .await;
    assert_eq!(c.response(json!("abc")).await.unwrap(), json!({}));

    let mut bob = s.login("bob").await;
    assert_eq!(c.error_code("call", json!({"to": []})).await, -32602);
    assert_eq!(
        c.error_code("call", json!({"to": ["alice"], "media": "audio"}))
            .await,
        -32602
    );
    assert_eq!(
        c.error_code("accept", json!({"call_id": "nope"})).await,
        4004
    );
    let id = bob
        .request("call", json!({"to": ["carol"], "media": "audio"}))
        .await
        .unwrap()["call_id"]
        .clone();
    assert_eq!(c.error_code("hangup", json!({"call_id": id})).await, 4003);
    assert_eq!(bob.error_code("accept", json!({"call_id": id})).await, 4009);
    assert_eq!(
        bob.error_code("call", json!({"to": ["dave"], "media": "audio"}))
            .await,
        4009
    );
    // Media requests: params first, then the worker's verdict on the SDP.
    let sdp = |sdp: &str| json!({"call_id": id, "sdp": sdp});
    assert_eq!(bob.error_code("offer", sdp("")).await, -32602);
    assert_eq!(bob.error_code("offer", sdp("not an sdp")).await, -32602);
    assert_eq!(bob.error_code("answer", sdp("v=0")).await, 4009);
    assert_eq!(c.error_code("offer", sdp("v=0")).await, 4003);
    let cand = json!({"call_id": id, "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"});
    assert_eq!(bob.request("candidate", cand).await.unwrap(), json!({}));
    let m = s.metrics_text().await;
    assert_eq!(
        common::sample_value(
            &m,
            "sfu_signaling_errors_total{code=\"4003\",method=\"hangup\"}"
        ),
        1.0
    );
    assert_eq!(
        common::sample_value(
            &m,
            "sfu_signaling_errors_total{code=\"-32601\",method=\"unknown\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let s = Server::start(&[]).await;
    let mut c = s.client().await;
    let now = sfu::auth::unix_now();
    let dev = sfu::auth::Auth::new(sfu::auth::DEV_SECRET.as_bytes());
    let expired = dev
        .mint("alice", None, false, Duration::from_secs(10), now - 100)
        .unwrap();
    let forged = sfu::auth::Auth::new(b"someone-elses-secret")
        .mint("alice", None, false, Duration::from_secs(60), now)
        .unwrap();
    let mut tampered = s.token("alice");
    tampered.insert(tampered.len() - 3, 'x');
    for token in [
        json!(expired),
        json!(forged),
        json!(tampered),
        json!("garbage"),
        json!(""),
        json!("a".repeat(9000)),
    ] {
        let e = c
            .request("login", json!({ "token": token }))
            .await
            .unwrap_err();
        assert_eq!(e["code"], 4001, "{token}");
        assert!(
            !e["message"].as_str().unwrap().contains("eyJ"),
            "no token echoed"
        );
    }
    assert_eq!(c.error_code("login", json!({"token": 5})).await, -32602);
    assert_eq!(c.error_code("ping", json!({})).await, 4001);
    // No token reaches the logs.
    let log = s.log.lock().unwrap().join("\n");
    assert!(!log.contains("eyJ"), "a token was logged");
}

#[tokio::test]
async fn rate_limit_answers_4029_then_closes_a_flood() {
    let s = Server::start(&["--max-requests-per-sec", "5"]).await;
    let mut c = s.login("alice").await;
    let mut codes = Vec::new();
    for _ in 0..20 {
        codes.push(
            c.request("ping", json!({}))
                .await
                .err()
                .map_or(0, |e| e["code"].as_i64().unwrap()),
        );
    }
    assert!(codes.contains(&4029), "{codes:?}");
    assert_eq!(codes[0], 0);
    // Keep flooding: past the flood budget (1000 over the rate) the socket is closed with 1008.
    for _ in 0..1500 {
        let ping = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}";
        if !c.send_raw(Message::text(ping)).await {
            break;
        }
    }
    let (closed, _) = c.closed().await;
    assert_eq!(closed, common::Closed::Code(1008));
    s.wait_metric("sfu_sessions_closed_total{cause=\"abuse\"}", 1.0)
        .await;
}

#[tokio::test]
async fn a_burst_of_300_requests_gets_300_answers() {
    let s = Server::start(&[]).await;
    let mut c = s.login("alice").await;
    let ping = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}";
    for _ in 0..300 {
        assert!(c.send_raw(Message::text(ping)).await);
    }
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..300 {
        let r = c.response(json!(1)).await;
        match r {
            Ok(v) => {
                assert_eq!(v, json!({}));
                ok += 1;
            }
            Err(e) => {
                assert_eq!(e["code"], 4029, "{e}");
                limited += 1;
            }
        }
    }
    // Default rate 20/s in bursts of 40 (login took one; the bucket refills while we send).
    assert_eq!(ok + limited, 300);
    assert!(
        (39..=50).contains(&ok),
        "{ok} answered, {limited} rate limited"
    );
    // Still open: the burst was answered, not punished.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(c.request("ping", json!({})).await.unwrap(), json!({}));
}

/// A local HTTP endpoint standing in for the app's push service: yields each JSON body POSTed.
async fn webhook_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    use axum::routing::post;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/push",
        post(move |axum::Json(body): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/push"), rx)
}

#[tokio::test]
async fn sigterm_closes_sessions_and_exits_cleanly() {
    let mut s = Server::start(&[]).await;
    let mut alice = s.login("alice").await;
    let mut bob = s.login("bob").await;
    connected_call(&mut alice, &mut bob, "audio").await;
    let mut idle = s.client().await;
    assert!(s.terminate().await, "exit status");
    for c in [&mut alice, &mut bob, &mut idle] {
        assert_eq!(c.closed().await.0, common::Closed::Code(1001));
    }
}

#[tokio::test]
async fn demo_page_and_dev_tokens() {
    let s = Server::start(&[]).await;
    let page = reqwest::get(format!("http://{}/", s.http)).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("sfu demo"));
    let js = reqwest::get(format!("http://{}/app.js", s.http))
        .await
        .unwrap();
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let r: Value = reqwest::get(format!("http://{}/dev/token?user=dora", s.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut c = s.client().await;
    let login = c
        .request("login", json!({"token": r["token"]}))
        .await
        .unwrap();
    assert_eq!(login["user"], "dora");
    let bad = reqwest::get(format!("http://{}/dev/token?user=no%20way", s.http))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Outside --dev there is no token endpoint.
    let prod = Server::start_prod(&[]).await;
    let r = reqwest::get(format!("http://{}/dev/token?user=dora", prod.http))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let page = reqwest::get(format!("http://{}/", prod.http))
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the demo page is served in every mode");
}

#[tokio::test]
async fn dev_mode_refuses_sockets_from_foreign_web_pages() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = Server::start(&[]).await;
    let with_origin = |origin: &str| {
        let mut req = s.ws_url().into_client_request().unwrap();
        req.headers_mut().insert("Origin", origin.parse().unwrap());
        req
    };
    match tokio_tungstenite::connect_async(with_origin("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    let page = format!("http://{}", s.http);
    assert!(
        tokio_tungstenite::connect_async(with_origin(&page))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn the_admin_api_can_have_a_listener_of_its_own() {
    let s = Server::start(&["--admin", "127.0.0.1:0"]).await;
    let admin: std::net::SocketAddr = s
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "sfu listening")
        .and_then(|v| v["admin"].as_str()?.parse().ok())
        .expect("the admin address is logged");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = sfu::auth::Auth::new(b"devsecret")
        .mint("ops", None, true, std::time::Duration::from_secs(60), now)
        .unwrap();
    let http = reqwest::Client::new();
    let get = |addr: std::net::SocketAddr| {
        http.get(format!("http://{addr}/api/calls"))
            .header("Authorization", format!("bearer {token}"))
            .send()
    };
    assert_eq!(
        get(s.http).await.unwrap().status(),
        404,
        "not on the public listener"
    );
    let r = get(admin).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["calls"].is_array());
}

#[tokio::test]
async fn the_admin_api_lists_live_calls_with_their_members_states() {
    let s = Server::start(&[]).await;
    let mut alice = s.login("alice").await;
    let mut bob = s.login("bob").await;
    let r = alice
        .request("call", json!({"to": ["bob", "zed"], "media": "video"}))
        .await
        .unwrap();
    let id = r["call_id"].as_str().unwrap().to_string();
    bob.expect("invited").await;
    let calls = common::live_calls_until(&s, |c| c.len() == 1).await;
    let c = &calls[0];
    assert_eq!(
        (&c["call_id"], &c["media"], &c["group"]),
        (&json!(id), &json!("video"), &json!(true))
    );
    assert_eq!(common::member_state(c, "alice").as_deref(), Some("joined"));
    assert_eq!(common::member_state(c, "bob").as_deref(), Some("ringing"));
    assert_eq!(
        common::member_state(c, "zed").as_deref(),
        Some("invited"),
        "offline"
    );
    bob.request("accept", json!({"call_id": id})).await.unwrap();
    common::live_calls_until(&s, |c| {
        c.len() == 1 && common::member_state(&c[0], "bob").as_deref() == Some("joined")
    })
    .await;
    alice
        .request("hangup", json!({"call_id": id}))
        .await
        .unwrap();
    bob.request("hangup", json!({"call_id": id})).await.unwrap();
    common::live_calls_until(&s, <[Value]>::is_empty).await;
}
