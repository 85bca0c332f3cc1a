//! The forwarding path of the media core: one publisher's RTP (SRTP-decrypted, rewritten and
//! re-encrypted per subscriber) to N subscribers, N = 1, 4, 16; and a simulcast publisher (three
//! layers in, each subscriber forwarded one: the layer choice, keyframe gating and VP8
//! picture-id rewrite on the path). Reports forwarded packets per second on one core. Run:
//! `cargo bench --bench forwarding`.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sfu_suite::netsim::{World, server_addr};
use str0m::Input;
use str0m::media::MediaKind;

/// Publisher packets per measured iteration (one second of audio at 20 ms).
const PER_ITER: u64 = 50;

/// A connected call: publisher 0 (simulcast video if `simulcast`) and `n` subscribers,
/// everyone quiet.
fn world(n: usize, kind: MediaKind, simulcast: bool) -> World {
    let mut w = World::new();
    if simulcast {
        w.join_simulcast("publisher", &[kind]);
    } else {
        w.join("publisher", &[kind]);
    }
    for i in 0..n {
        w.join(&format!("sub{i}"), &[MediaKind::Audio]);
    }
    w.run(Duration::from_secs(3));
    for c in w.clients.iter_mut() {
        c.sending = false;
    }
    w.run(Duration::from_millis(500));
    w
}

fn bench(c: &mut Criterion) {
    for (kind, name, simulcast) in [
        (MediaKind::Audio, "audio", false),
        (MediaKind::Video, "video", false),
        (MediaKind::Video, "simulcast", true),
    ] {
        // Packets the publisher sends per frame (one per layer).
        let layers = if simulcast { 3 } else { 1 };
        let mut g = c.benchmark_group(format!("forward_{name}"));
        g.measurement_time(Duration::from_secs(5));
        g.sample_size(20);
        for n in [1usize, 4, 16] {
            let mut w = world(n, kind, simulcast);
            let before = w.server.counters().rtp_out_packets;
            let k = if kind == MediaKind::Audio { 0 } else { 1 };
            let sent_before = w.clients[0].sent[k];
            g.throughput(Throughput::Elements(PER_ITER * n as u64));
            g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // Untimed: the publisher encrypts PER_ITER packets, 20 ms apart.
                        let publisher = w.clients[0].addr;
                        let mut datagrams = Vec::new();
                        for _ in 0..PER_ITER {
                            // Keepalives and RTCP flow so every Peer stays connected.
                            w.run(Duration::from_millis(20));
                            let now = w.now;
                            w.clients[0].sending = true;
                            w.send_media(kind);
                            w.clients[0].sending = false;
                            w.clients[0].rtc.handle_input(Input::Timeout(now)).unwrap();
                            w.drain_client(0);
                            let mut rest = Vec::new();
                            for Reverse(p) in w.net.drain() {
                                // Only media: STUN and RTCP take the normal path and get answers.
                                let rtp = p.data.len() > 1
                                    && p.data[0] >> 6 == 2
                                    && !(200..=207).contains(&p.data[1]);
                                if rtp && p.from == publisher && p.to == server_addr() {
                                    datagrams.push((now, p.from, p.data));
                                } else {
                                    rest.push(Reverse(p));
                                }
                            }
                            w.net.extend(rest);
                        }
                        // Timed: the server routes, decrypts, rewrites, encrypts and sends n
                        // copies, as its worker does. Replayed on a clock that only moves
                        // forward, as str0m's must.
                        let mut at = w.now;
                        let t = Instant::now();
                        // One frame (a packet per layer) every 20 ms, so the Peers' own
                        // timers cost the same per frame with and without simulcast.
                        let step = Duration::from_millis(20) / layers as u32;
                        for (_, from, data) in &datagrams {
                            at += step;
                            w.serve_datagram(at, *from, data);
                        }
                        total += t.elapsed();
                        w.now = at;
                    }
                    total
                });
            });
            let after = w.server.counters().rtp_out_packets;
            let forwarded = after[0] + after[1] - before[0] - before[1];
            // Every measured packet must really have been forwarded to every subscriber.
            let fed = (w.clients[0].sent[k] - sent_before) / layers;
            assert!(
                forwarded as f64 >= 0.99 * (fed * n as u64) as f64,
                "forwarded {forwarded} of {fed} x {n}: the benchmark measured dropped packets"
            );
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
