//! The demo page in real Chromium on the networks that stop plain WebRTC: with every UDP
//! datagram to the server's media ports dropped (nftables, as a firewall would) it connects
//! over ICE-TCP; with "relay only" it connects through a real coturn (Debian's `turnserver`,
//! started here on its own ports) with the short-lived credentials `login` hands out. Both
//! send and receive audio and video, and the server counts the Peers by that transport.
//! Needs root for nftables (CI and dev machines run the suite as root); setup.sh installs
//! nftables and coturn.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::Server;

/// Drops UDP to the given ports for as long as it lives.
struct UdpDropped {
    table: String,
}

impl UdpDropped {
    fn new(ports: &[u16]) -> Self {
        let table = format!("sfu_test_{}_{}", std::process::id(), ports[0]);
        let list = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let rules = format!(
            "table inet {table} {{\n chain out {{\n  type filter hook output priority 0;\n  udp dport {{ {list} }} drop\n }}\n}}\n"
        );
        let out = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(rules.as_bytes())?;
                c.wait_with_output()
            })
            .expect("nft is not installed: run ./scripts/setup.sh (Debian package nftables)");
        assert!(
            out.status.success(),
            "nft refused the rules (root is needed)"
        );
        Self { table }
    }
}

impl Drop for UdpDropped {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

/// Runs the demo script in `mode` while sampling `gauge`; returns its stdout and the peak.
async fn demo(s: &Server, mode: &str, gauge: &str) -> (String, f64) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run ./scripts/setup.sh"
    );
    let run = tokio::process::Command::new("node")
        .arg(browser_dir.join("demo.mjs"))
        .arg(format!("http://{}", s.http))
        .arg(root.join("target/browser-artifacts"))
        .arg(mode)
        .current_dir(&browser_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let watch = async {
        let mut peak = 0.0f64;
        for _ in 0..400 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            peak = peak.max(s.metric(gauge).await);
            if peak >= 2.0 {
                break;
            }
        }
        peak
    };
    let (out, peak) = tokio::join!(run, watch);
    let out = out.expect("node is not installed: run ./scripts/setup.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "browser checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all browser checks passed"));
    (stdout, peak)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_connects_over_ice_tcp_when_udp_is_dropped() {
    let s = Server::start(&[]).await;
    let ports: Vec<u16> = s.media_addrs().iter().map(|a| a.port()).collect();
    assert_eq!(ports.len(), 2);
    let _firewall = UdpDropped::new(&ports);
    let (stdout, peak) = demo(&s, "tcp", "sfu_peers_by_transport{transport=\"tcp\"}").await;
    assert!(stdout.contains("media path is ICE-TCP"), "{stdout}");
    assert_eq!(peak, 2.0, "both Peers counted as TCP");
    assert_eq!(
        s.metric("sfu_peers_connected_total").await,
        2.0,
        "no UDP session ever connected"
    );
}

/// A free port on loopback for both UDP and TCP (the OS picks; coturn binds both).
fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_relay_only_connects_through_coturn() {
    let dir = std::env::temp_dir().join(format!("coturn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    // Relay ports: a window of the dynamic range away from the kernel's ephemeral picks.
    let base = 61_000 + (std::process::id() % 40) as u16 * 100;
    let secret = "coturn-test-secret-0123";
    let mut turn = tokio::process::Command::new("turnserver")
        .args([
            "-n",
            "--log-file",
            "stdout",
            "--simple-log",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
        ])
        .args(["--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1"])
        .args(["--listening-port", &port.to_string()])
        .args([
            "--min-port",
            &base.to_string(),
            "--max-port",
            &(base + 99).to_string(),
        ])
        .args([
            "--use-auth-secret",
            "--static-auth-secret",
            secret,
            "--realm",
            "sfu.test",
        ])
        // The sfu is on loopback here; a real deployment keeps loopback peers denied.
        .arg("--allow-loopback-peers")
        .arg("--pidfile")
        .arg(dir.join("turnserver.pid"))
        .arg("--db")
        .arg(dir.join("turndb"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("turnserver is not installed: run ./scripts/setup.sh (Debian package coturn)");
    let up = async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), up)
        .await
        .expect("coturn did not start");
    let url = format!("turn:127.0.0.1:{port}?transport=udp");
    let s = Server::start(&["--turn-url", &url, "--turn-secret", secret]).await;
    let (stdout, peak) = demo(&s, "relay", "sfu_peers_by_transport{transport=\"relay\"}").await;
    assert!(stdout.contains("media path is a TURN relay"), "{stdout}");
    assert_eq!(peak, 2.0, "both Peers counted as relayed");
    let _ = turn.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}
