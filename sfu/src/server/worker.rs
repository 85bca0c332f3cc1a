//! Media Workers: one OS thread each, owning one UDP socket and the [`MediaCore`] of the calls
//! placed on it. The thread moves datagrams, commands and time in and out of the core, and
//! flushes its counters to Prometheus once a second (never per packet).

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::Duration;

use prometheus::local::LocalHistogram;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, interval};

use super::Input;
use crate::media::{Command, MediaConfig, MediaCore, MediaCounters, MediaEvent};
use crate::metrics::Metrics;

/// Datagrams read per wake-up before looking at commands and timers again.
const RECV_BATCH: usize = 64;

/// How the rest of the server reaches one Worker.
#[derive(Clone)]
pub(crate) struct WorkerHandle {
    pub tx: mpsc::Sender<Command>,
    pub advertised: SocketAddr,
}

/// What a Worker thread is connected to.
pub(crate) struct Links {
    pub to_driver: mpsc::Sender<Input>,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Receiver<bool>,
    pub health: Arc<super::health::Health>,
    /// Test hook (`--panic-media-of`, dev only).
    pub panic_media_of: Option<String>,
    /// Test hook (`--fail-worker-after`, dev only): the thread panics after this long.
    pub fail_after: Option<Duration>,
}

/// Binds the socket of Worker `index` and starts its thread.
pub(crate) fn spawn(
    index: usize,
    bind: SocketAddr,
    media_ip: std::net::IpAddr,
    media: MediaConfig,
    links: Links,
) -> anyhow::Result<(WorkerHandle, std::thread::JoinHandle<()>)> {
    let Links {
        to_driver,
        metrics,
        shutdown,
        health,
        panic_media_of,
        fail_after,
    } = links;
    let socket = StdUdpSocket::bind(bind)
        .map_err(|e| anyhow::anyhow!("cannot bind media UDP socket {bind}: {e}"))?;
    socket.set_nonblocking(true)?;
    let port = socket.local_addr()?.port();
    let advertised = SocketAddr::new(media_ip, port);
    let (tx, rx) = mpsc::channel(super::WORKER_COMMAND_QUEUE);
    let thread = std::thread::Builder::new()
        .name(format!("sfu-worker-{index}"))
        .spawn(move || {
            let run = std::panic::AssertUnwindSafe(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("runtime failed to start: {e}"))?;
                rt.block_on(async move {
                    let socket =
                        UdpSocket::from_std(socket).map_err(|e| format!("socket failed: {e}"))?;
                    let core = MediaCore::new(MediaConfig {
                        advertised,
                        ..media
                    });
                    Worker {
                        core,
                        socket,
                        to_driver,
                        metrics,
                        flushed: MediaCounters::default(),
                        peers_reported: 0,
                        latency: None,
                        panic_media_of,
                    }
                    .run(
                        rx,
                        shutdown,
                        fail_after.map(|d| std::time::Instant::now() + d),
                    )
                    .await;
                    Ok::<(), String>(())
                })
            });
            // Whatever ends this thread outside a shutdown fails the server (supervision).
            let reason = match std::panic::catch_unwind(run) {
                Ok(Ok(())) => format!("media worker {index} stopped"),
                Ok(Err(e)) => format!("media worker {index}: {e}"),
                Err(_) => format!("media worker {index} panicked"),
            };
            health.failed("worker", reason);
        })?;
    tracing::info!(worker = index, media = %advertised, "media worker listening");
    Ok((WorkerHandle { tx, advertised }, thread))
}

struct Worker {
    core: MediaCore,
    socket: UdpSocket,
    to_driver: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
    /// Counters as last flushed, for deltas.
    flushed: MediaCounters,
    peers_reported: i64,
    latency: Option<LocalHistogram>,
    panic_media_of: Option<String>,
}

impl Worker {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
        fail_at: Option<std::time::Instant>,
    ) {
        self.latency = Some(self.metrics.forwarding_latency_seconds.local());
        let mut buf = vec![0u8; 2048];
        let mut flush = interval(Duration::from_secs(1));
        flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut driver_gone = false;
        loop {
            let wake = self.core.poll_timeout();
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, source)) = r {
                        self.datagram(source, &buf[..n]);
                    }
                    for _ in 1..RECV_BATCH {
                        match self.socket.try_recv_from(&mut buf) {
                            Ok((n, source)) => self.datagram(source, &buf[..n]),
                            Err(_) => break,
                        }
                    }
                }
                // Without the driver no command comes; the driver's supervisor fails the
                // server, and this worker waits for the shutdown that follows.
                cmd = rx.recv(), if !driver_gone => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => driver_gone = true,
                },
                _ = sleep_until(wake) => {
                    self.core.handle_timeout(Instant::now().into_std());
                    self.transmit();
                }
                _ = flush.tick() => self.flush(),
                _ = super::stopped(&mut shutdown) => break,
                // Test hook (--dev only): die as a worker hit by a bug outside the core would.
                _ = sleep_until(fail_at) => panic!("test hook --fail-worker-after"),
            }
        }
        self.flush();
        self.metrics.peers_active.sub(self.peers_reported);
    }

    fn datagram(&mut self, source: SocketAddr, data: &[u8]) {
        let received = std::time::Instant::now();
        let before = self.core.counters().rtp_out_packets;
        self.core.handle_datagram(received, source, data);
        let forwarded = self.core.counters().rtp_out_packets != before;
        self.transmit();
        if forwarded && let Some(h) = &self.latency {
            h.observe(received.elapsed().as_secs_f64());
        }
    }

    /// Sends what the core produced; never waits on the socket. Everything else goes to the
    /// driver, in the order the core produced it (a reply before our offer to that member).
    fn transmit(&mut self) {
        while let Some(event) = self.core.poll_event() {
            match event {
                MediaEvent::Transmit {
                    destination,
                    contents,
                } => {
                    if self.socket.try_send_to(&contents, destination).is_err() {
                        self.metrics
                            .datagrams_dropped
                            .with_label_values(&["send_failed"])
                            .inc();
                    }
                }
                other => {
                    // Never wait on the driver: a full queue means it is stuck (supervision
                    // deals with that); what does not fit is counted.
                    if let Err(mpsc::error::TrySendError::Full(_)) =
                        self.to_driver.try_send(Input::Media(other))
                    {
                        self.metrics
                            .queue_dropped
                            .with_label_values(&["media_events"])
                            .inc();
                    }
                }
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        let hook = match (&cmd, &self.panic_media_of) {
            (Command::Offer { call_id, user, .. }, Some(u)) if u == user => Some(call_id.clone()),
            _ => None,
        };
        self.core.handle_command(std::time::Instant::now(), cmd);
        if let (Some(call_id), Some(user)) = (hook, &self.panic_media_of) {
            self.core.inject_panic(&call_id, user);
        }
        self.transmit();
    }

    /// Adds what happened since the last flush to the shared Prometheus families.
    fn flush(&mut self) {
        let m = &self.metrics;
        let c = self.core.counters().clone();
        let f = &self.flushed;
        for (k, kind) in ["audio", "video"].iter().enumerate() {
            m.rtp_packets
                .with_label_values(&["in", kind])
                .inc_by(c.rtp_in_packets[k] - f.rtp_in_packets[k]);
            m.rtp_packets
                .with_label_values(&["out", kind])
                .inc_by(c.rtp_out_packets[k] - f.rtp_out_packets[k]);
            m.rtp_bytes
                .with_label_values(&["in", kind])
                .inc_by(c.rtp_in_bytes[k] - f.rtp_in_bytes[k]);
            m.rtp_bytes
                .with_label_values(&["out", kind])
                .inc_by(c.rtp_out_bytes[k] - f.rtp_out_bytes[k]);
        }
        m.keyframe_requests
            .with_label_values(&["received"])
            .inc_by(c.keyframe_requests_in - f.keyframe_requests_in);
        m.keyframe_requests
            .with_label_values(&["sent"])
            .inc_by(c.keyframe_requests_out - f.keyframe_requests_out);
        m.nacks_received.inc_by(c.nacks_in - f.nacks_in);
        m.peer_failures
            .with_label_values(&["ice"])
            .inc_by(c.ice_failures - f.ice_failures);
        m.peer_failures
            .with_label_values(&["dtls"])
            .inc_by(c.dtls_failures - f.dtls_failures);
        m.peer_failures
            .with_label_values(&["rtc"])
            .inc_by(c.rtc_failures - f.rtc_failures);
        m.ice_disconnects
            .inc_by(c.ice_disconnects - f.ice_disconnects);
        m.peers_connected
            .inc_by(c.peers_connected - f.peers_connected);
        m.datagrams_dropped
            .with_label_values(&["unrouted"])
            .inc_by(c.datagrams_unrouted - f.datagrams_unrouted);
        m.datagrams_dropped
            .with_label_values(&["over_rate"])
            .inc_by(c.datagrams_over_rate - f.datagrams_over_rate);
        for (limit, now, then) in [
            ("tracks", c.tracks_refused, f.tracks_refused),
            ("candidates", c.candidates_refused, f.candidates_refused),
            ("addresses", c.addresses_refused, f.addresses_refused),
            ("opus_decode", c.decodes_skipped, f.decodes_skipped),
        ] {
            m.limits_hit.with_label_values(&[limit]).inc_by(now - then);
        }
        let peers = self.core.peers() as i64;
        m.peers_active.add(peers - self.peers_reported);
        self.peers_reported = peers;
        if let Some(h) = &self.latency {
            h.flush();
        }
        self.flushed = c;
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
