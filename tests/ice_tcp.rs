//! ICE-TCP against the real `sfu`: `loadtest --transport tcp` (20 callers with no UDP
//! candidate at all) connects, hears everyone and is counted as TCP; hostile TCP clients
//! (not ICE, oversized frames) are closed and counted, and silent connections holding every
//! slot of both workers cannot lock a call out. Chromium over ICE-TCP is in tests/browser_network.rs.

mod common;

use std::time::Duration;

use common::{Server, loadtest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_over_ice_tcp_connects_everyone_and_verifies() {
    let s = Server::start(&["--quality-interval", "2s"]).await;
    assert_eq!(
        s.ice_tcp_addrs().len(),
        2,
        "one ICE-TCP listener per worker"
    );
    let run = loadtest(
        &s,
        "tcp",
        &[
            "--transport",
            "tcp",
            "--calls",
            "10",
            "--media",
            "video",
            "--duration",
            "8s",
            "--ramp",
            "20",
        ],
    );
    // While it runs, the server counts its Peers as TCP (never UDP: the callers offer no
    // UDP candidate).
    let watch = async {
        let mut peak = 0.0f64;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            peak = peak.max(s.metric("sfu_peers_by_transport{transport=\"tcp\"}").await);
            assert_eq!(
                s.metric("sfu_peers_by_transport{transport=\"udp\"}").await,
                0.0
            );
            if peak >= 20.0 {
                break;
            }
        }
        peak
    };
    let ((code, r), peak) = tokio::join!(run, watch);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["passed"], true);
    assert_eq!(r["callers"], 20);
    assert_eq!(r["calls"]["connected"], 10);
    assert_eq!(r["verification_failures"], serde_json::json!([]), "{r:#}");
    assert!(
        r["loss"].as_f64().unwrap() < 0.01,
        "loopback loss {}",
        r["loss"]
    );
    assert!(r["packets_received"].as_u64().unwrap() > 20 * 300);
    assert!(r["mos_up"]["p50"].as_f64().unwrap() > 4.2, "{r:#}");
    assert_eq!(peak, 20.0, "every connected Peer is counted as TCP");
    // Every connection closed cleanly once its caller left, and the gauge is back to 0.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.metric("sfu_ice_tcp_connections").await, 0.0);
    let text = s.metrics_text().await;
    let closed: f64 = ["eof", "error"]
        .iter()
        .map(|r| {
            common::sample_value(
                &text,
                &format!("sfu_ice_tcp_closed_total{{reason=\"{r}\"}}"),
            )
        })
        .sum();
    assert!(closed >= 20.0, "{closed} closed by their clients");
    assert_eq!(
        s.metric("sfu_peers_by_transport{transport=\"tcp\"}").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tcp_clients_are_closed_and_cannot_lock_a_call_out() {
    let s = Server::start(&[]).await;
    let tcp = s.ice_tcp_addrs();
    let mut b = [0; 16];
    // Not ICE: an RTP-looking first frame.
    let mut c = TcpStream::connect(tcp[0]).await.unwrap();
    c.write_all(&[0, 4, 0x80, 0, 0, 1]).await.unwrap();
    assert_eq!(c.read(&mut b).await.unwrap_or(0), 0, "closed");
    // A length over the frame limit.
    let mut c = TcpStream::connect(tcp[0]).await.unwrap();
    c.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();
    assert_eq!(c.read(&mut b).await.unwrap_or(0), 0, "closed");
    // 100,000 junk bytes in one go.
    let mut c = TcpStream::connect(tcp[1]).await.unwrap();
    let _ = c.write_all(&vec![0x5a; 100_000]).await;
    assert_eq!(c.read(&mut b).await.unwrap_or(0), 0, "closed");
    assert!(
        s.metric("sfu_ice_tcp_closed_total{reason=\"not_ice\"}")
            .await
            >= 1.0
    );
    assert!(
        s.metric("sfu_ice_tcp_closed_total{reason=\"oversized\"}")
            .await
            >= 2.0
    );
    // Both workers filled past their cap by connections that say nothing and stay open.
    let mut held = Vec::new();
    for addr in &tcp {
        for _ in 0..1_040 {
            if let Ok(c) = TcpStream::connect(addr).await {
                held.push(c);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let open = s.metric("sfu_ice_tcp_connections").await;
    assert!(open <= 2.0 * 1024.0, "capped per worker: {open} open");
    let evicted = s
        .metric("sfu_ice_tcp_closed_total{reason=\"evicted\"}")
        .await;
    assert!(
        evicted >= 2.0 * 16.0,
        "the oldest silent ones made room: {evicted}"
    );
    // A real ICE-TCP call now: its connections take the silent ones' slots.
    let (code, r) = loadtest(
        &s,
        "beside",
        &["--transport", "tcp", "--calls", "2", "--duration", "6s"],
    )
    .await;
    drop(held);
    assert_eq!(code, 0, "the flood did not lock the call out: {r:#}");
    assert_eq!(r["verification_failures"], serde_json::json!([]), "{r:#}");
    assert!(r["loss"].as_f64().unwrap() < 0.01, "loss {}", r["loss"]);
    assert!(
        s.metric("sfu_ice_tcp_closed_total{reason=\"evicted\"}")
            .await
            >= evicted + 4.0
    );
    assert_eq!(s.metric("sfu_healthy").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_hands_out_turn_credentials_for_the_user() {
    let s = Server::start(&[
        "--turn-url",
        "turn:turn.example.com:3478?transport=udp",
        "--turn-url",
        "turns:turn.example.com:5349?transport=tcp",
        "--turn-secret",
        "coturn-shared-secret",
        "--turn-ttl",
        "1h",
    ])
    .await;
    let mut c = s.client().await;
    let r = c
        .request("login", serde_json::json!({"token": s.token("alice")}))
        .await
        .unwrap();
    let servers = r["ice_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{r}");
    assert_eq!(servers[0]["urls"].as_array().unwrap().len(), 2);
    let username = servers[0]["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "alice");
    let expiry: u64 = expiry.parse().unwrap();
    let now = sfu::auth::unix_now();
    assert!(
        (now + 3590..=now + 3610).contains(&expiry),
        "valid 1 h: {expiry} at {now}"
    );
    let (_, credential) = sfu::turn::credentials("coturn-shared-secret", "alice", expiry);
    assert_eq!(servers[0]["credential"], credential.as_str());
}
