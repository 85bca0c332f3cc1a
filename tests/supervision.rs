//! Supervision with the real binary: when the call-model driver stops or a media worker dies
//! (the `--fail-driver-after` and `--fail-worker-after` test hooks), sessions are closed with
//! 1011, `/healthz` answers 503 with the reason, `/metrics` shows it, new sockets are refused,
//! and the process exits non-zero.

mod common;

use common::{Closed, Server};
use serde_json::Value;

/// What every component failure must look like: the session closed with 1011, `/healthz` 503
/// naming `reason`, `sfu_healthy` 0, the component's failure counted, new sockets refused, and
/// a non-zero exit.
async fn fails_visibly(s: &mut Server, component: &str, reason: &str) {
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
    assert_eq!(body["status"], "failing");
    assert!(body["reason"].as_str().unwrap().contains(reason), "{body}");
    assert_eq!(s.metric("sfu_healthy").await, 0.0);
    let failures = format!("sfu_component_failures_total{{component=\"{component}\"}}");
    assert_eq!(s.metric(&failures).await, 1.0);
    // New sockets are refused while it winds down.
    let ws = tokio_tungstenite::connect_async(s.ws_url()).await;
    assert!(ws.is_err(), "a failing server takes no new session");
    let code = s.exit_code().await;
    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}");
    let log = s.log.lock().unwrap().join("\n");
    assert!(log.contains("component failed"), "the failure is logged");
}

#[tokio::test]
async fn a_stopped_driver_fails_the_server_visibly_and_it_exits_non_zero() {
    let mut s = Server::start(&["--fail-driver-after", "2s"]).await;
    fails_visibly(&mut s, "driver", "driver").await;
}

#[tokio::test]
async fn a_dead_media_worker_fails_the_server_visibly_and_it_exits_non_zero() {
    let mut s = Server::start(&["--fail-worker-after", "2s"]).await;
    fails_visibly(&mut s, "worker", "media worker 0 panicked").await;
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
