//! Media Workers: one OS thread each, owning one UDP socket and the [`MediaCore`] of the calls
//! placed on it. The thread moves datagrams (in batches: `recvmmsg`/`sendmmsg`), ICE-TCP
//! frames (from and to the connection tasks of [`super::ice_tcp`]), commands and time in and
//! out of the core, and flushes its counters to Prometheus once a second (never per packet).
//!
//! Invariant: after every wake-up the send queue has been offered to the socket; what the
//! socket could not take yet waits, in order, for it to become writable.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use prometheus::local::LocalHistogram;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Input;
use super::ice_tcp::TcpInput;
use crate::media::{Command, MediaConfig, MediaCore, MediaCounters, MediaEvent};
use crate::metrics::Metrics;
use crate::udp::{RecvBatch, SendQueue};
use str0m::net::Protocol;

/// `recvmmsg` calls per wake-up before looking at commands and timers again.
const RECV_CALLS: usize = 8;
/// Datagrams waiting for a full socket buffer to drain; more are dropped (counted).
const SEND_QUEUE: usize = 8192;
/// Receive and send buffer asked for each media socket: about 150 ms at 25,000 audio
/// datagrams/s, for a worker descheduled under load.
const SOCKET_BUFFER: usize = 4 << 20;
/// Commands taken per batch window while busy (the rest wait for the next window).
const COMMANDS_PER_POLL: usize = 256;
/// ICE-TCP inputs taken per batch window while busy.
const TCP_INPUTS_PER_POLL: usize = 1024;
/// How often counters go to Prometheus.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How the rest of the server reaches one Worker.
#[derive(Clone)]
pub(crate) struct WorkerHandle {
    pub tx: mpsc::Sender<Command>,
    pub advertised: SocketAddr,
    /// The passive ICE-TCP candidate, with ICE-TCP on.
    pub advertised_tcp: Option<SocketAddr>,
}

/// Where a Worker listens for ICE-TCP.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TcpBind {
    Off,
    /// This address exactly.
    At(SocketAddr),
    /// The UDP socket's port if free, else any (with `--udp-port 0`).
    SameAsUdp(std::net::IpAddr),
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
    /// `--media-batch-window`.
    pub batch_window: Duration,
}

/// A started Worker: its handle, its thread and its ICE-TCP accept task.
pub(crate) type Spawned = (
    WorkerHandle,
    std::thread::JoinHandle<()>,
    Option<tokio::task::JoinHandle<()>>,
);

/// Binds the sockets of Worker `index` and starts its thread.
pub(crate) fn spawn(
    index: usize,
    bind: SocketAddr,
    tcp_bind: TcpBind,
    media_ip: std::net::IpAddr,
    media: MediaConfig,
    links: Links,
) -> anyhow::Result<Spawned> {
    let Links {
        to_driver,
        metrics,
        shutdown,
        health,
        panic_media_of,
        fail_after,
        batch_window,
    } = links;
    let socket = StdUdpSocket::bind(bind)
        .map_err(|e| anyhow::anyhow!("cannot bind media UDP socket {bind}: {e}"))?;
    socket.set_nonblocking(true)?;
    let granted = crate::udp::set_buffers(socket.as_raw_fd(), SOCKET_BUFFER)?;
    if granted < SOCKET_BUFFER {
        tracing::warn!(
            worker = index,
            granted,
            wanted = SOCKET_BUFFER,
            "media socket buffers capped by net.core.rmem_max/wmem_max: bursts may be dropped"
        );
    }
    let port = socket.local_addr()?.port();
    let advertised = SocketAddr::new(media_ip, port);
    let listener = match tcp_bind {
        TcpBind::Off => None,
        TcpBind::At(a) => Some(
            StdTcpListener::bind(a)
                .map_err(|e| anyhow::anyhow!("cannot bind ICE-TCP listener {a}: {e}"))?,
        ),
        TcpBind::SameAsUdp(ip) => Some(
            StdTcpListener::bind((ip, port))
                .or_else(|_| StdTcpListener::bind((ip, 0)))
                .map_err(|e| anyhow::anyhow!("cannot bind ICE-TCP listener on {ip}: {e}"))?,
        ),
    };
    let advertised_tcp = match &listener {
        Some(l) => Some(SocketAddr::new(media_ip, l.local_addr()?.port())),
        None => None,
    };
    let (tcp_task, tcp_rx) = match listener {
        Some(l) => {
            let (inbox, tcp_rx) = mpsc::channel(super::ice_tcp::INBOX);
            let task = super::ice_tcp::spawn(l, inbox, metrics.clone(), shutdown.clone())?;
            (Some(task), Some(tcp_rx))
        }
        None => (None, None),
    };
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
                        advertised_tcp,
                        ..media
                    });
                    Worker {
                        core,
                        socket,
                        rx: RecvBatch::new(),
                        tx: SendQueue::new(SEND_QUEUE),
                        window: batch_window,
                        to_driver,
                        metrics,
                        flushed: MediaCounters::default(),
                        flushed_io: [0; 3],
                        peers_reported: 0,
                        latency: None,
                        read_at: None,
                        forwarded: 0,
                        panic_media_of,
                        tcp: HashMap::new(),
                        tcp_dropped: [0; 2],
                        flushed_tcp: [0; 2],
                        transport_reported: [0; 3],
                        paused_reported: 0,
                        estimates: Vec::new(),
                    }
                    .run(
                        rx,
                        tcp_rx,
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
    match advertised_tcp {
        Some(tcp) => {
            tracing::info!(worker = index, media = %advertised, ice_tcp = %tcp, "media worker listening")
        }
        None => tracing::info!(worker = index, media = %advertised, "media worker listening"),
    }
    let handle = WorkerHandle {
        tx,
        advertised,
        advertised_tcp,
    };
    Ok((handle, thread, tcp_task))
}

struct Worker {
    core: MediaCore,
    socket: UdpSocket,
    rx: RecvBatch,
    tx: SendQueue,
    window: Duration,
    to_driver: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
    /// Counters as last flushed, for deltas.
    flushed: MediaCounters,
    /// The I/O counters (truncated, send failed, send queue full) as last flushed.
    flushed_io: [u64; 3],
    peers_reported: i64,
    latency: Option<LocalHistogram>,
    /// When the batch being handled was read, and how many of its datagrams were forwarded.
    read_at: Option<std::time::Instant>,
    forwarded: u64,
    panic_media_of: Option<String>,
    /// Open ICE-TCP connections, by the client's address: where their datagrams go.
    tcp: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    /// Datagrams for ICE-TCP connections dropped (queue full, connection gone), and as flushed.
    tcp_dropped: [u64; 2],
    flushed_tcp: [u64; 2],
    /// Connected Peers by transport as last added to the shared gauge.
    transport_reported: [i64; 3],
    /// Videos paused for lack of downlink as last added to the shared gauge, and the
    /// subscribers' estimates (reused).
    paused_reported: i64,
    estimates: Vec<u64>,
}

impl Worker {
    /// Two modes. Idle: the reactor wakes the thread for whatever comes first (a datagram, a
    /// command, a deadline). Busy (datagrams were read): the thread sleeps out the batch
    /// window and polls everything itself, without the reactor, whose epoll would otherwise
    /// wake it for every datagram that arrives (as edge-triggered epoll does) and undo the
    /// batching. It falls back to idle as soon as a window brings nothing.
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut tcp_rx: Option<mpsc::Receiver<TcpInput>>,
        mut shutdown: watch::Receiver<bool>,
        fail_at: Option<std::time::Instant>,
    ) {
        self.latency = Some(self.metrics.forwarding_latency_seconds.local());
        let mut next_flush = std::time::Instant::now() + FLUSH_EVERY;
        let mut driver_gone = false;
        let mut linger: Option<std::time::Instant> = None;
        'run: loop {
            while let Some(at) = linger {
                std::thread::sleep(at.saturating_duration_since(std::time::Instant::now()));
                linger = self.receive();
                if let Some(tcp_rx) = &mut tcp_rx {
                    let mut took = 0;
                    while took < TCP_INPUTS_PER_POLL {
                        let Ok(input) = tcp_rx.try_recv() else { break };
                        self.tcp_input(input);
                        took += 1;
                    }
                    if took > 0 && linger.is_none() && !self.window.is_zero() {
                        linger = Some(std::time::Instant::now() + self.window);
                    }
                }
                for _ in 0..COMMANDS_PER_POLL {
                    match rx.try_recv() {
                        Ok(cmd) => self.command(cmd),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            driver_gone = true;
                            break;
                        }
                    }
                }
                let now = std::time::Instant::now();
                if self.core.poll_timeout().is_some_and(|t| t <= now) {
                    self.core.handle_timeout(now);
                    self.transmit();
                }
                if next_flush <= now {
                    next_flush = now + FLUSH_EVERY;
                    self.flush();
                }
                self.send();
                if *shutdown.borrow() {
                    break 'run;
                }
                if fail_at.is_some_and(|t| t <= now) {
                    panic!("test hook --fail-worker-after");
                }
            }
            let wake = self.core.poll_timeout();
            tokio::select! {
                r = self.socket.readable() => {
                    if r.is_ok() {
                        linger = self.receive();
                    }
                }
                _ = self.socket.writable(), if !self.tx.is_empty() => {}
                Some(input) = tcp_recv(&mut tcp_rx) => {
                    self.tcp_input(input);
                    // Let more frames gather, as a UDP datagram does.
                    if !self.window.is_zero() {
                        linger = Some(std::time::Instant::now() + self.window);
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
                _ = sleep_until(Some(next_flush)) => {
                    next_flush = std::time::Instant::now() + FLUSH_EVERY;
                    self.flush();
                }
                _ = super::stopped(&mut shutdown) => break,
                // Test hook (--dev only): die as a worker hit by a bug outside the core would.
                _ = sleep_until(fail_at) => panic!("test hook --fail-worker-after"),
            }
            self.send();
        }
        self.flush();
        self.metrics.peers_active.sub(self.peers_reported);
        self.metrics.streams_paused.sub(self.paused_reported);
        for t in crate::media::Transport::ALL {
            self.metrics
                .peers_by_transport
                .with_label_values(&[t.as_str()])
                .sub(self.transport_reported[t as usize]);
        }
    }

    /// Reads and handles what the socket holds (up to [`RECV_CALLS`] batches); returns when
    /// to read next without waiting for readiness: at the end of the batch window if
    /// anything came, at once if more is queued, else `None`.
    fn receive(&mut self) -> Option<std::time::Instant> {
        let read_at = std::time::Instant::now();
        let mut taken = 0;
        for _ in 0..RECV_CALLS {
            let (fd, batch) = (self.socket.as_raw_fd(), &mut self.rx);
            match self
                .socket
                .try_io(Interest::READABLE, || batch.recv(fd).map(|_| ()))
            {
                Ok(()) => {}
                Err(_) => {
                    return (taken > 0 && !self.window.is_zero()).then(|| read_at + self.window);
                }
            }
            taken += self.rx.taken();
            self.read_at.get_or_insert(read_at);
            for (source, data) in self.rx.iter() {
                let out = |c: &MediaCounters| c.rtp_out_packets[0] + c.rtp_out_packets[1];
                let before = out(self.core.counters());
                self.core.handle_datagram(read_at, source, data);
                if out(self.core.counters()) != before {
                    self.forwarded += 1;
                }
            }
            self.transmit();
        }
        Some(read_at)
    }

    /// Offers the send queue to the socket, and records how long the batch's forwarded
    /// datagrams took from read to sent.
    fn send(&mut self) {
        if !self.tx.is_empty() {
            let (fd, queue) = (self.socket.as_raw_fd(), &mut self.tx);
            // WouldBlock leaves the rest queued, in order, for the writable arm.
            let _ = self.socket.try_io(Interest::WRITABLE, || {
                queue.flush(|b| crate::udp::send_batch(fd, b))
            });
        }
        if let (Some(read_at), Some(h)) = (self.read_at.take(), &self.latency) {
            let took = read_at.elapsed().as_secs_f64();
            for _ in 0..self.forwarded {
                h.observe(took);
            }
        }
        self.forwarded = 0;
    }

    /// Moves what the core produced: datagrams to the send queue, everything else to the
    /// driver, in the order the core produced it (a reply before our offer to that member).
    fn transmit(&mut self) {
        while let Some(event) = self.core.poll_event() {
            match event {
                MediaEvent::Transmit {
                    proto: Protocol::Tcp,
                    destination,
                    contents,
                } => match self.tcp.get(&destination) {
                    // Never wait for a client's TCP window: drop and let NACK and congestion
                    // control deal with it, as with a lossy UDP path.
                    Some(conn) => {
                        if conn.try_send(contents.into()).is_err() {
                            self.tcp_dropped[0] += 1;
                        }
                    }
                    None => self.tcp_dropped[1] += 1,
                },
                MediaEvent::Transmit {
                    destination,
                    contents,
                    ..
                } => self.tx.push(destination, contents.into()),
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

    /// A connection opened or closed, or a frame of one.
    fn tcp_input(&mut self, input: TcpInput) {
        match input {
            TcpInput::Open { peer, tx } => {
                self.tcp.insert(peer, tx);
            }
            TcpInput::Closed { peer } => {
                self.tcp.remove(&peer);
            }
            TcpInput::Frame { peer, data } => {
                let now = std::time::Instant::now();
                self.read_at.get_or_insert(now);
                let out = |c: &MediaCounters| c.rtp_out_packets[0] + c.rtp_out_packets[1];
                let before = out(self.core.counters());
                self.core.handle_input(now, Protocol::Tcp, peer, &data);
                if out(self.core.counters()) != before {
                    self.forwarded += 1;
                }
                self.transmit();
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
        m.layer_switches.inc_by(c.layer_switches - f.layer_switches);
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
            ("simulcast_layers", c.layers_refused, f.layers_refused),
        ] {
            m.limits_hit.with_label_values(&[limit]).inc_by(now - then);
        }
        let io = [self.rx.truncated, self.tx.failed, self.tx.overflowed];
        for (reason, (now, then)) in ["oversized", "send_failed", "send_queue_full"]
            .iter()
            .zip(io.iter().zip(self.flushed_io))
        {
            m.datagrams_dropped
                .with_label_values(&[reason])
                .inc_by(now - then);
        }
        self.flushed_io = io;
        for (reason, (now, then)) in ["tcp_send_queue_full", "tcp_closed"]
            .iter()
            .zip(self.tcp_dropped.iter().zip(self.flushed_tcp))
        {
            m.datagrams_dropped
                .with_label_values(&[reason])
                .inc_by(now - then);
        }
        self.flushed_tcp = self.tcp_dropped;
        let by = self.core.peers_by_transport();
        for (t, n) in crate::media::Transport::ALL.iter().zip(by) {
            let delta = n as i64 - self.transport_reported[*t as usize];
            m.peers_by_transport
                .with_label_values(&[t.as_str()])
                .add(delta);
            self.transport_reported[*t as usize] = n as i64;
        }
        let paused = self.core.downlinks(&mut self.estimates) as i64;
        m.streams_paused.add(paused - self.paused_reported);
        self.paused_reported = paused;
        for &bps in &self.estimates {
            m.subscriber_bandwidth.observe(bps as f64);
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

async fn tcp_recv(rx: &mut Option<mpsc::Receiver<TcpInput>>) -> Option<TcpInput> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
