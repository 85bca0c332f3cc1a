//! Allocations on the forwarding path, counted by a global allocator over 200 publisher
//! packets forwarded to 4 subscribers (route, SRTP decrypt, rewrite, SRTP encrypt, the
//! Transmit events drained), after as many to warm up. Each allocation is attributed by its
//! backtrace to the innermost crate that asked for it: ours must make none per packet;
//! str0m's are reported (docs/perf.md) and capped so they cannot grow unnoticed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::cmp::Reverse;
use std::sync::Mutex;
use std::time::Duration;

use sfu_suite::netsim::{World, server_addr};
use str0m::Input;
use str0m::media::MediaKind;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}
/// (ours, str0m's, the first of ours seen).
static SEEN: Mutex<(u64, u64, Option<String>)> = Mutex::new((0, 0, None));

/// Whose allocation this is: the innermost frame of our crate or of str0m's.
fn attribute() {
    let bt = std::backtrace::Backtrace::force_capture().to_string();
    let owner = bt.lines().find_map(|l| {
        let l = l.trim();
        if l.contains(": sfu::") {
            Some((true, l.to_string()))
        } else if l.contains(": str0m") || l.contains(": is::") || l.contains(": dimpl::") {
            Some((false, l.to_string()))
        } else {
            None
        }
    });
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match owner {
        Some((true, frame)) => {
            seen.0 += 1;
            seen.2.get_or_insert(frame);
        }
        _ => seen.1 += 1,
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) && !INSIDE.with(Cell::get) {
            INSIDE.with(|c| c.set(true));
            attribute();
            INSIDE.with(|c| c.set(false));
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const PACKETS: usize = 200;
const SUBSCRIBERS: usize = 4;

/// The publisher's next `n` RTP datagrams to the server, 20 ms apart (everything else on the
/// network is delivered as usual).
fn publisher_datagrams(w: &mut World, n: usize) -> Vec<(std::time::Instant, Vec<u8>)> {
    let publisher = w.clients[0].addr;
    let mut out = Vec::new();
    for _ in 0..n {
        w.run(Duration::from_millis(20));
        let now = w.now;
        w.clients[0].sending = true;
        w.send_media(MediaKind::Audio);
        w.clients[0].sending = false;
        w.clients[0].rtc.handle_input(Input::Timeout(now)).unwrap();
        w.drain_client(0);
        let mut rest = Vec::new();
        for Reverse(p) in w.net.drain() {
            let rtp = p.data.len() > 1 && p.data[0] >> 6 == 2 && !(200..=207).contains(&p.data[1]);
            if rtp && p.from == publisher && p.to == server_addr() {
                out.push((now, p.data));
            } else {
                rest.push(Reverse(p));
            }
        }
        w.net.extend(rest);
    }
    out
}

#[test]
fn forwarding_allocates_nothing_of_ours_per_packet() {
    // Reports (volume, quality) allocate per report, not per packet: out of this window.
    let hour = Duration::from_secs(3600);
    let mut w = World::with_config(sfu::media::MediaConfig {
        volume_interval: hour,
        quality_interval: hour,
        ..sfu::media::MediaConfig::new(server_addr())
    });
    w.join("publisher", &[MediaKind::Audio]);
    for i in 0..SUBSCRIBERS {
        w.join(&format!("sub{i}"), &[MediaKind::Audio]);
    }
    w.run(Duration::from_secs(3));
    for c in w.clients.iter_mut() {
        c.sending = false;
    }
    w.run(Duration::from_millis(500));
    let publisher = w.clients[0].addr;
    let warm = publisher_datagrams(&mut w, PACKETS);
    let measured = publisher_datagrams(&mut w, PACKETS);
    // Replayed after the capture, on a clock that only moves forward (as str0m's must).
    let mut at = w.now;
    for (_, data) in &warm {
        at += Duration::from_millis(20);
        w.serve_datagram(at, publisher, data);
    }
    let before = w.server.counters().rtp_out_packets[0];
    COUNTING.with(|c| c.set(true));
    let mut sent = 0;
    for (_, data) in &measured {
        at += Duration::from_millis(20);
        sent += w.serve_datagram(at, publisher, data);
    }
    COUNTING.with(|c| c.set(false));
    let forwarded = w.server.counters().rtp_out_packets[0] - before;
    assert_eq!(forwarded as usize, SUBSCRIBERS * PACKETS);
    assert!(sent >= SUBSCRIBERS * PACKETS, "{sent} datagrams out");
    let (ours, theirs, first) = SEEN.lock().unwrap().clone();
    eprintln!(
        "{PACKETS} packets in, {forwarded} out: {ours} allocations of ours, {theirs} of str0m's"
    );
    assert_eq!(
        ours, 0,
        "our code allocated on the forwarding path, first at {first:?}"
    );
    // str0m: per received packet its decrypted payload and header extensions; per sent copy
    // its encrypted datagram (`DatagramSend` owns a Vec); and periodic RTCP.
    assert!(
        theirs <= (2 * PACKETS + 3 * SUBSCRIBERS * PACKETS / 2) as u64,
        "str0m allocated {theirs} times for {PACKETS} packets in, {forwarded} out"
    );
}
