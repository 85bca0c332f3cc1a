//! Server memory per member, against the real binary: a logged-in WebSocket must cost a few
//! KiB, not the 128 KiB read buffer the WebSocket library allocates by default (which was a
//! third of an audio member's memory, `docs/perf.md`).

mod common;

use common::Server;

const SOCKETS: usize = 400;

#[tokio::test]
async fn a_logged_in_socket_costs_far_less_than_a_default_read_buffer() {
    let s = Server::start(&["--max-sockets-per-ip", "1000"]).await;
    // Warm the runtime and allocator before the baseline.
    let mut warm = Vec::new();
    for i in 0..20 {
        warm.push(s.login(&format!("warm{i}")).await);
    }
    let before = s.metric("process_resident_memory_bytes").await;
    let mut clients = Vec::new();
    for i in 0..SOCKETS {
        clients.push(s.login(&format!("m{i}")).await);
    }
    let after = s.metric("process_resident_memory_bytes").await;
    let per_socket = (after - before) / SOCKETS as f64 / 1024.0;
    eprintln!("{SOCKETS} logged-in sockets: {per_socket:.1} KiB each");
    assert_eq!(s.metric("sfu_sessions_active").await as usize, SOCKETS + 20);
    assert!(
        per_socket < 48.0,
        "{per_socket:.1} KiB of server memory per logged-in socket"
    );
}
