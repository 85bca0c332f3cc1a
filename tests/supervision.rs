//! Supervision with the real binary: when the call-model driver stops (the `--fail-driver-after`
//! test hook), sessions are closed with 1011, `/healthz` answers 503 with the reason,
//! `/metrics` shows it, new sockets are refused, and the process exits non-zero.

mod common;

use common::{Closed, Server};
use serde_json::Value;

#[tokio::test]
async fn a_stopped_driver_fails_the_server_visibly_and_it_exits_non_zero() {
    let mut s = Server::start(&["--fail-driver-after", "2s"]).await;
    let health = format!("http://{}/healthz", s.http);
    let ok = reqwest::get(&health).await.unwrap();
    assert_eq!(ok.status(), 200);
    let mut c = s.login("alice").await;
    let (closed, _) = c.closed().await;
    assert_eq!(
        closed,
        Closed::Code(1011),
        "sessions are told the server failed"
    );
    let r = reqwest::get(&health).await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "failing");
    assert!(
        body["reason"].as_str().unwrap().contains("driver"),
        "{body}"
    );
    assert_eq!(s.metric("sfu_healthy").await, 0.0);
    assert_eq!(
        s.metric("sfu_component_failures_total{component=\"driver\"}")
            .await,
        1.0
    );
    // New sockets are refused while it winds down.
    let ws = tokio_tungstenite::connect_async(s.ws_url()).await;
    assert!(ws.is_err(), "a failing server takes no new session");
    let code = s.exit_code().await;
    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}");
    let log = s.log.lock().unwrap().join("\n");
    assert!(log.contains("component failed"), "the failure is logged");
}

#[tokio::test]
async fn the_test_hook_is_refused_outside_dev_mode() {
    let out = std::process::Command::new(common::sfu_bin())
        .args([
            "serve",
            "--jwt-secret",
            "a-production-secret-0123",
            "--fail-driver-after",
            "1s",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only with --dev"));
}

#[tokio::test]
async fn a_dead_media_worker_fails_the_server_visibly_and_it_exits_non_zero() {
    let mut s = Server::start(&["--fail-worker-after", "2s"]).await;
    let health = format!("http://{}/healthz", s.http);
    assert_eq!(reqwest::get(&health).await.unwrap().status(), 200);
    let mut c = s.login("alice").await;
    let (closed, _) = c.closed().await;
    assert_eq!(
        closed,
        Closed::Code(1011),
        "sessions are told the server failed"
    );
    let r = reqwest::get(&health).await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("media worker 0 panicked"),
        "{body}"
    );
    assert_eq!(s.metric("sfu_healthy").await, 0.0);
    assert_eq!(
        s.metric("sfu_component_failures_total{component=\"worker\"}")
            .await,
        1.0
    );
    let code = s.exit_code().await;
    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}");
}
