//! Prometheus metrics of one server instance, on their own registry (so several servers can
//! live in one process, as in tests). Every family is listed in `docs/metrics.md`; labels never
//! carry user or call ids.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::protocol::{Method, codes};

pub struct Metrics {
    pub registry: Registry,
    /// Names of the `sfu_*` families registered, for docs checks.
    pub families: Vec<&'static str>,
    pub sessions_active: IntGauge,
    pub calls_active: IntGauge,
    pub calls_started: IntCounterVec,
    pub calls_ended: IntCounterVec,
    pub call_setup_seconds: Histogram,
    pub call_duration_seconds: Histogram,
    pub requests: IntCounterVec,
    pub errors: IntCounterVec,
    pub sessions_closed: IntCounterVec,
    pub push_webhooks: IntCounterVec,
    pub peers_active: IntGauge,
    pub peers_connected: IntCounter,
    pub peers_by_transport: IntGaugeVec,
    pub ice_tcp_connections: IntGauge,
    pub ice_tcp_closed: IntCounterVec,
    pub cluster_nodes: IntGauge,
    pub cluster_envelopes: IntCounterVec,
    pub cluster_relay_seconds: Histogram,
    pub cluster_redis_errors: IntCounter,
    pub peer_failures: IntCounterVec,
    pub ice_disconnects: IntCounter,
    pub rtp_packets: IntCounterVec,
    pub rtp_bytes: IntCounterVec,
    pub keyframe_requests: IntCounterVec,
    pub layer_switches: IntCounter,
    pub streams_paused: IntGauge,
    pub subscriber_bandwidth: Histogram,
    pub nacks_received: IntCounter,
    pub datagrams_dropped: IntCounterVec,
    pub limits_hit: IntCounterVec,
    pub queue_dropped: IntCounterVec,
    pub healthy: IntGauge,
    pub sockets_refused: IntCounterVec,
    pub component_failures: IntCounterVec,
    pub forwarding_latency_seconds: Histogram,
    pub quality_mos: HistogramVec,
    pub quality_samples: IntCounterVec,
    pub quality_rtt_seconds: HistogramVec,
    pub quality_jitter_seconds: HistogramVec,
    pub quality_loss_ratio: HistogramVec,
    pub volume_events: IntCounter,
    pub availability_events: IntCounterVec,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Only fails on malformed names/labels, which are constants here: a bug, not input.
    r.unwrap_or_else(|e| panic!("metric definition is invalid: {e}"))
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let families = std::cell::RefCell::new(Vec::new());
        let gauge = |name: &'static str, help: &str| {
            families.borrow_mut().push(name);
            let g = must(IntGauge::new(name, help));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let counter = |name: &'static str, help: &str, labels: &[&str]| {
            families.borrow_mut().push(name);
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let histogram_vec = |name: &'static str, help: &str, buckets: Vec<f64>| {
            families.borrow_mut().push(name);
            let h = must(HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets),
                &["direction"],
            ));
            must(registry.register(Box::new(h.clone())));
            h
        };
        let plain_counter = |name: &'static str, help: &str| {
            families.borrow_mut().push(name);
            let c = must(IntCounter::new(name, help));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let histogram = |name: &'static str, help: &str, buckets: Vec<f64>| {
            families.borrow_mut().push(name);
            let h = must(Histogram::with_opts(
                HistogramOpts::new(name, help).buckets(buckets),
            ));
            must(registry.register(Box::new(h.clone())));
            h
        };
        let m = Self {
            sessions_active: gauge("sfu_sessions_active", "Open signaling WebSocket sessions."),
            calls_active: gauge("sfu_calls_active", "Calls ringing or in progress."),
            calls_started: counter(
                "sfu_calls_started_total",
                "Calls placed, by type (1v1|group) and media (audio|video).",
                &["type", "media"],
            ),
            calls_ended: counter(
                "sfu_calls_ended_total",
                "Calls ended, by reason (the call_end reason) and whether anyone answered.",
                &["reason", "answered"],
            ),
            call_setup_seconds: histogram(
                "sfu_call_setup_seconds",
                "Time from invite to accept, per callee who accepted.",
                vec![0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0],
            ),
            call_duration_seconds: histogram(
                "sfu_call_duration_seconds",
                "Duration of ended calls, from call to call_end.",
                vec![
                    5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
                ],
            ),
            requests: counter(
                "sfu_signaling_requests_total",
                "Signaling requests answered, by method (unknown methods count as \"unknown\").",
                &["method"],
            ),
            errors: counter(
                "sfu_signaling_errors_total",
                "Signaling error responses, by method and JSON-RPC error code.",
                &["method", "code"],
            ),
            sessions_closed: counter(
                "sfu_sessions_closed_total",
                "Signaling sessions closed, by cause.",
                &["cause"],
            ),
            push_webhooks: counter(
                "sfu_push_webhooks_total",
                "Push webhook POSTs for offline callees, by result (ok|error|dropped).",
                &["result"],
            ),
            peers_active: gauge(
                "sfu_peers_active",
                "Media Peers (one per joined member with an offer) on all workers.",
            ),
            peers_connected: plain_counter(
                "sfu_peers_connected_total",
                "Peers whose ICE and DTLS completed.",
            ),
            peers_by_transport: {
                let name = "sfu_peers_by_transport";
                families.borrow_mut().push(name);
                let g = must(IntGaugeVec::new(
                    Opts::new(
                        name,
                        "Connected Peers by how their media travels (udp; tcp: ICE-TCP; relay: through the member's TURN server, seen from their relay candidate).",
                    ),
                    &["transport"],
                ));
                must(registry.register(Box::new(g.clone())));
                g
            },
            ice_tcp_connections: gauge(
                "sfu_ice_tcp_connections",
                "Open ICE-TCP connections on all workers.",
            ),
            ice_tcp_closed: counter(
                "sfu_ice_tcp_closed_total",
                "ICE-TCP connections closed, by reason (eof; error; idle: nothing for 30 s; not_ice: the first frame is not a STUN binding request; oversized: a frame over 2048 bytes; stalled: a write blocked 10 s; full: refused, the worker has 1024 open that all spoke; evicted: closed for a new one, having sent nothing yet; shutdown).",
                &["reason"],
            ),
            cluster_nodes: gauge(
                "sfu_cluster_nodes",
                "Live nodes in the cluster's registry as this node last saw it (0 without --redis).",
            ),
            cluster_envelopes: counter(
                "sfu_cluster_envelopes_total",
                "Messages between cluster nodes through Redis, by direction (sent; received; invalid: unreadable, dropped).",
                &["direction"],
            ),
            cluster_relay_seconds: histogram(
                "sfu_cluster_relay_seconds",
                "Time to put one message in another node's inbox (the relay's added latency per hop, less the receiver's read).",
                vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
                ],
            ),
            cluster_redis_errors: plain_counter(
                "sfu_cluster_redis_errors_total",
                "Redis operations that failed (Redis unreachable or too slow); the node goes on with what it hosts.",
            ),
            peer_failures: counter(
                "sfu_peer_failures_total",
                "Peers that failed and were dropped, by stage (ice: ICE not connected within 30 s; dtls: ICE up but DTLS not within 30 s; rtc: str0m error or panic).",
                &["stage"],
            ),
            ice_disconnects: plain_counter(
                "sfu_ice_disconnects_total",
                "ICE connections of Peers reported lost (str0m's Disconnected; they may come back).",
            ),
            rtp_packets: counter(
                "sfu_rtp_packets_total",
                "RTP packets received from publishers (in) and forwarded to subscribers (out), by kind.",
                &["direction", "kind"],
            ),
            rtp_bytes: counter(
                "sfu_rtp_bytes_total",
                "RTP payload bytes in and out, by kind.",
                &["direction", "kind"],
            ),
            keyframe_requests: counter(
                "sfu_keyframe_requests_total",
                "Keyframe requests (PLI/FIR) received from subscribers and sent to publishers after merging.",
                &["direction"],
            ),
            layer_switches: plain_counter(
                "sfu_simulcast_layer_switches_total",
                "Simulcast layer switches made for subscribers (each at a keyframe of the new layer): a subscriber's choice, or what its downlink carries, changed.",
            ),
            streams_paused: gauge(
                "sfu_simulcast_streams_paused",
                "Simulcast videos paused for a subscriber now because its downlink does not carry even their lowest layer (each subscriber is told with stream_paused).",
            ),
            subscriber_bandwidth: histogram(
                "sfu_subscriber_bandwidth_bits",
                "Estimated downlink of each video subscriber (bit/s of RTP payload, str0m's GCC on its transport-wide feedback), sampled once a second per subscriber.",
                vec![
                    100e3, 200e3, 300e3, 500e3, 750e3, 1e6, 1.5e6, 2e6, 3e6, 5e6, 10e6, 20e6,
                ],
            ),
            nacks_received: plain_counter(
                "sfu_nacks_received_total",
                "NACKs received from subscribers (answered with RTX from the send cache).",
            ),
            datagrams_dropped: counter(
                "sfu_datagrams_dropped_total",
                "Datagrams (UDP, and ICE-TCP frames) dropped, by reason (unrouted: no Peer claims them; over_rate: over a Peer's packet-rate ceiling; oversized: longer than 2048 bytes; send_failed: refused by the kernel; send_queue_full: the socket stayed full too long; tcp_send_queue_full: an ICE-TCP connection's client reads too slowly; tcp_receive_queue_full: the worker is behind on ICE-TCP input; tcp_closed: sent to an ICE-TCP connection already gone).",
                &["reason"],
            ),
            limits_hit: counter(
                "sfu_media_limits_hit_total",
                "Per-member media caps that refused something, by limit (tracks: a published track over --max-tracks-per-kind; candidates: over --max-peer-candidates; addresses: a new source address refused, --max-peer-addresses active ones fill the list; opus_decode: an Opus packet not decoded, over --opus-decode-budget; simulcast_layers: a packet of a fourth simulcast layer, not forwarded).",
                &["limit"],
            ),
            queue_dropped: counter(
                "sfu_queue_dropped_total",
                "Items a full internal queue refused, by queue (worker_commands: driver to a media worker; media_events: workers to the driver; cdr: records to the CDR file).",
                &["queue"],
            ),
            sockets_refused: counter(
                "sfu_sockets_refused_total",
                "WebSocket upgrades refused, by reason (per_ip: --max-sockets-per-ip; total: --max-sockets; failing: the server is failing).",
                &["reason"],
            ),
            healthy: gauge(
                "sfu_healthy",
                "1 while every component runs; 0 once the call-model driver or a media worker stopped unasked (the process is exiting).",
            ),
            component_failures: counter(
                "sfu_component_failures_total",
                "Components that stopped unasked, by component (driver: the call-model task; worker: a media worker thread).",
                &["component"],
            ),
            forwarding_latency_seconds: histogram(
                "sfu_forwarding_latency_seconds",
                "Time from receiving an RTP datagram to having sent its forwarded copies.",
                vec![
                    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5,
                    0.005, 0.01, 0.025, 0.05,
                ],
            ),
            quality_mos: histogram_vec(
                "sfu_quality_mos",
                "MOS samples (E-model, per member and window) by direction (up: member to server, down: server to member).",
                vec![
                    1.0, 1.5, 2.0, 2.5, 3.0, 3.1, 3.5, 3.7, 4.0, 4.1, 4.2, 4.3, 4.4, 4.5,
                ],
            ),
            quality_samples: counter(
                "sfu_quality_samples_total",
                "Quality samples by direction and level (excellent|good|fair|poor|bad).",
                &["direction", "level"],
            ),
            quality_rtt_seconds: histogram_vec(
                "sfu_quality_rtt_seconds",
                "Round-trip time of quality samples, by direction.",
                vec![0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0],
            ),
            quality_jitter_seconds: histogram_vec(
                "sfu_quality_jitter_seconds",
                "Interarrival jitter of quality samples, by direction.",
                vec![0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2],
            ),
            quality_loss_ratio: histogram_vec(
                "sfu_quality_loss_ratio",
                "Packet loss of quality samples (per window), by direction.",
                vec![0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0],
            ),
            volume_events: plain_counter(
                "sfu_volume_events_total",
                "volume notifications emitted (one per call per interval while anyone is audible).",
            ),
            availability_events: counter(
                "sfu_availability_events_total",
                "audio_available / video_available changes detected from media, by kind and value.",
                &["kind", "available"],
            ),
            families: Vec::new(),
            registry,
        };
        let mut m = m;
        m.families = families.into_inner();
        m.preinit();
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            must(m.registry.register(Box::new(pc)));
        }
        m
    }

    /// Creates every series with a bounded label set at zero, so they are exported (and
    /// `rate()` works) before the first event.
    fn preinit(&self) {
        use strum::IntoEnumIterator;
        for kind in ["1v1", "group"] {
            for media in ["audio", "video"] {
                self.calls_started.with_label_values(&[kind, media]);
            }
        }
        for reason in crate::protocol::EndReason::iter() {
            for answered in ["true", "false"] {
                self.calls_ended
                    .with_label_values(&[reason.into(), answered]);
            }
        }
        for method in Method::iter() {
            self.requests.with_label_values(&[method.as_str()]);
        }
        for cause in [
            "client",
            "idle",
            "login_timeout",
            "abuse",
            "too_large",
            "bad_utf8",
            "replaced",
            "slow",
            "shutdown",
            "error",
        ] {
            self.sessions_closed.with_label_values(&[cause]);
        }
        for result in ["ok", "error", "dropped", "limited"] {
            self.push_webhooks.with_label_values(&[result]);
        }
        for stage in ["ice", "dtls", "rtc"] {
            self.peer_failures.with_label_values(&[stage]);
        }
        for direction in ["in", "out"] {
            for kind in ["audio", "video"] {
                self.rtp_packets.with_label_values(&[direction, kind]);
                self.rtp_bytes.with_label_values(&[direction, kind]);
            }
        }
        for direction in ["received", "sent"] {
            self.keyframe_requests.with_label_values(&[direction]);
        }
        for reason in [
            "unrouted",
            "over_rate",
            "oversized",
            "send_failed",
            "send_queue_full",
            "tcp_send_queue_full",
            "tcp_receive_queue_full",
            "tcp_closed",
        ] {
            self.datagrams_dropped.with_label_values(&[reason]);
        }
        for d in ["sent", "received", "invalid"] {
            self.cluster_envelopes.with_label_values(&[d]);
        }
        for t in crate::media::Transport::ALL {
            self.peers_by_transport.with_label_values(&[t.as_str()]);
        }
        for reason in crate::server::ICE_TCP_CLOSE_REASONS {
            self.ice_tcp_closed.with_label_values(&[reason]);
        }
        for reason in ["per_ip", "total", "failing"] {
            self.sockets_refused.with_label_values(&[reason]);
        }
        for component in ["driver", "worker"] {
            self.component_failures.with_label_values(&[component]);
        }
        for queue in ["worker_commands", "media_events", "cdr"] {
            self.queue_dropped.with_label_values(&[queue]);
        }
        for limit in [
            "tracks",
            "candidates",
            "addresses",
            "opus_decode",
            "simulcast_layers",
        ] {
            self.limits_hit.with_label_values(&[limit]);
        }
        for direction in ["up", "down"] {
            self.quality_mos.with_label_values(&[direction]);
            self.quality_rtt_seconds.with_label_values(&[direction]);
            self.quality_jitter_seconds.with_label_values(&[direction]);
            self.quality_loss_ratio.with_label_values(&[direction]);
            for level in analytics::Level::ALL {
                self.quality_samples
                    .with_label_values(&[direction, level.as_str()]);
            }
        }
        for kind in ["audio", "video"] {
            for available in ["true", "false"] {
                self.availability_events
                    .with_label_values(&[kind, available]);
            }
        }
    }

    /// Counts one response to a request.
    pub fn response(&self, method: Option<Method>, error: Option<i32>) {
        let label = method.map_or("unknown", Method::as_str);
        self.requests.with_label_values(&[label]).inc();
        if let Some(code) = error {
            let code = if codes::ALL.contains(&code) {
                code
            } else {
                codes::INTERNAL
            };
            self.errors
                .with_label_values(&[label, &code.to_string()])
                .inc();
        }
    }

    /// The text exposition of every family.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "could not encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
