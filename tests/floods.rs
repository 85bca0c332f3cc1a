//! Floods against the real `sfu` binary: anonymous datagrams at the media ports must not fill
//! the logs or stall signaling.

mod common;

use std::time::Duration;

use common::Server;
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// The media worker addresses the server logged.
fn media_ports(s: &Server) -> Vec<std::net::SocketAddr> {
    s.log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "media worker listening")
        .filter_map(|v| v["media"].as_str()?.parse().ok())
        .collect()
}

/// A STUN binding request that parses (USERNAME, PRIORITY, MESSAGE-INTEGRITY) and carries a
/// MAPPED-ADDRESS, an attribute str0m's parser warns about before any integrity check.
fn crafted_stun(i: u32) -> Vec<u8> {
    let user = format!("u{i:07}:x");
    let mut attr = vec![0x00, 0x06];
    attr.extend_from_slice(&(user.len() as u16).to_be_bytes());
    attr.extend_from_slice(user.as_bytes());
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    attr.extend_from_slice(&[0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x13, 0x88, 127, 0, 0, 1]);
    attr.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0, 0, 0, 1]);
    attr.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
    attr.extend_from_slice(&[0xab; 20]);
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    m.extend_from_slice(&0x2112_a442u32.to_be_bytes());
    m.extend_from_slice(&i.to_be_bytes());
    m.extend_from_slice(&[7; 8]);
    m.extend_from_slice(&attr);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_100_000_crafted_stun_datagrams_adds_few_log_lines() {
    let s = Server::start(&[]).await;
    let ports = media_ports(&s);
    assert_eq!(ports.len(), 2, "two workers");
    let mut bystander = s.login("bystander").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines_before = s.log.lock().unwrap().len();

    let flood = tokio::spawn(async move {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for i in 0..100_000u32 {
            let to = ports[i as usize % ports.len()];
            let _ = socket.send_to(&crafted_stun(i), to).await;
            if i % 500 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    // Signaling stays responsive throughout.
    let mut worst = Duration::ZERO;
    while !flood.is_finished() {
        let t = Instant::now();
        assert_eq!(
            bystander.request("ping", json!({})).await.unwrap(),
            json!({})
        );
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    flood.await.unwrap();
    assert!(worst < Duration::from_secs(1), "a ping took {worst:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let added: Vec<String> = s.log.lock().unwrap()[lines_before..].to_vec();
    assert!(
        added.len() < 100,
        "{} log lines for the flood, e.g. {:?}",
        added.len(),
        added.first()
    );
    let unrouted = s
        .metric("sfu_datagrams_dropped_total{reason=\"unrouted\"}")
        .await;
    assert!(
        unrouted > 10_000.0,
        "the flood reached the workers: {unrouted}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_sockets_that_never_log_in_are_closed_at_the_deadline() {
    let s = Server::start(&["--login-timeout", "5s", "--max-sockets-per-ip", "10000"]).await;
    let mut bystander = s.login("bystander").await;
    let url = s.ws_url();
    let mut sockets = Vec::new();
    for batch in 0..25 {
        let conns = (0..200).map(|_| tokio_tungstenite::connect_async(url.clone()));
        for r in futures_util::future::join_all(conns).await {
            let (ws, _) = r.unwrap_or_else(|e| panic!("batch {batch}: {e}"));
            sockets.push(ws);
        }
    }
    // (The first ones may already have met their deadline while the rest connected.)
    assert!(s.metric("sfu_sessions_active").await > 500.0);
    // The bystander is served all along.
    let t = Instant::now();
    assert_eq!(
        bystander.request("ping", json!({})).await.unwrap(),
        json!({})
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    // Every silent socket is closed at its login deadline, with 1008.
    let closes = sockets.into_iter().map(|mut ws| async move {
        use futures_util::StreamExt;
        loop {
            match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f)))) => {
                    return f.map(|f| u16::from(f.code));
                }
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    });
    let codes = futures_util::future::join_all(closes).await;
    assert!(codes.iter().all(|c| *c == Some(1008)), "{:?}", &codes[..5]);
    s.wait_metric("sfu_sessions_active", 1.0).await;
    assert_eq!(
        s.metric("sfu_sessions_closed_total{cause=\"login_timeout\"}")
            .await,
        5000.0
    );
    assert_eq!(
        bystander.request("ping", json!({})).await.unwrap(),
        json!({})
    );
}

#[tokio::test]
async fn sockets_per_address_are_capped() {
    let s = Server::start(&["--max-sockets-per-ip", "3"]).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(s.client().await);
    }
    let refused = tokio_tungstenite::connect_async(s.ws_url()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        s.metric("sfu_sockets_refused_total{reason=\"per_ip\"}")
            .await,
        1.0
    );
    // A place given back is taken again.
    open.pop().unwrap().close().await;
    s.wait_metric("sfu_sessions_active", 2.0).await;
    let mut again = s.client().await;
    let login = json!({"token": s.token("carol")});
    assert_eq!(
        again.request("login", login).await.unwrap()["user"],
        "carol"
    );
}

#[tokio::test]
async fn slowloris_connections_are_closed_at_the_header_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start(&["--http-header-timeout", "1s"]).await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut c = tokio::net::TcpStream::connect(s.http).await.unwrap();
        // A request head that never ends.
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(c);
    }
    // Others are served meanwhile.
    let ok = reqwest::get(format!("http://{}/healthz", s.http))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let mut bystander = s.login("bystander").await;
    // Every slow connection is closed by the server soon after the deadline.
    let t = Instant::now();
    for c in &mut slow {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("closed within 5 s")
            .unwrap_or(0);
        // hyper may answer 408 before closing; either way the connection ends.
        if n > 0 {
            let rest = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
                .await
                .expect("closed after the answer")
                .unwrap_or(0);
            assert_eq!(rest, 0);
        }
    }
    assert!(t.elapsed() < Duration::from_secs(5));
    // A logged-in WebSocket is not an HTTP request in progress: it stays.
    assert_eq!(
        bystander.request("ping", json!({})).await.unwrap(),
        json!({})
    );
}
