//! The I/O shell: binds the HTTP and metrics listeners, runs the call-model driver task, one
//! task per WebSocket session and the push-webhook sender. It only moves frames, time and
//! events in and out of the sans-IO [`crate::signaling::CallModel`].

mod admission;
mod cluster;
mod driver;
mod health;
mod http;
mod ice_tcp;
mod push;
mod session;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::auth::Auth;
use crate::config::ServeConfig;
use crate::directory::{CallDirectory, LocalDirectory, Sessions};
use crate::metrics::Metrics;
use crate::records::CallRecorder;
use crate::signaling::{ConnId, ModelConfig};

pub(crate) use driver::Input;
pub(crate) use ice_tcp::CLOSE_REASONS as ICE_TCP_CLOSE_REASONS;

/// What every task of one server shares.
pub(crate) struct Shared {
    pub cfg: ServeConfig,
    pub auth: Auth,
    pub metrics: Arc<Metrics>,
    pub sessions: Sessions,
    pub directory: Arc<dyn CallDirectory>,
    pub driver: mpsc::Sender<Input>,
    pub shutdown: watch::Receiver<bool>,
    pub health: Arc<health::Health>,
    pub admission: Arc<admission::Admission>,
    /// Finished call records (admin API) and the CDR file writer, if any.
    pub records: std::sync::Mutex<CallRecorder>,
    pub cdr: Option<std::sync::mpsc::SyncSender<String>>,
    /// The cluster store (`--redis`), for `GET /api/nodes` and `GET /api/calls/live`.
    pub cluster: Option<crate::cluster::Store>,
    /// This node's live calls as of the driver's last snapshot (every 2 s).
    pub live_calls: std::sync::Mutex<Arc<Vec<crate::directory::LiveCall>>>,
    next_conn: AtomicU64,
}

impl Shared {
    /// The call records; a poisoned lock (a panic elsewhere) still yields the data.
    pub fn records(&self) -> std::sync::MutexGuard<'_, CallRecorder> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn next_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// A started server. Dropping it does not stop it; call [`RunningServer::shutdown`].
pub struct RunningServer {
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    /// The UDP address each media Worker advertises.
    pub media_addrs: Vec<SocketAddr>,
    /// The ICE-TCP address each media Worker advertises (empty with ICE-TCP off).
    pub media_tcp_addrs: Vec<SocketAddr>,
    health: Arc<health::Health>,
    tasks: Vec<JoinHandle<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    /// Asks every task to stop: sessions are closed with 1001 (going away).
    pub fn shutdown(&self) {
        self.health.shutdown();
    }

    /// Resolves with the reason once a component (the call-model driver, a media worker) has
    /// stopped unasked: sessions are closed with 1011 and `/healthz` answers 503 for
    /// [`health::FAILURE_LINGER`]; then shut down and exit non-zero.
    pub async fn failed(&self) -> String {
        let reason = self.health.wait_failed().await;
        tokio::time::sleep(health::FAILURE_LINGER).await;
        reason
    }

    /// Waits until every task has stopped.
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        for t in self.threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Resolves once shutdown is signalled (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Queue of requests waiting for the call model; sessions wait (backpressure) when it is full.
const DRIVER_QUEUE: usize = 8192;
/// Media events (replies, offers, reports) from all workers to the driver, and commands from
/// the driver to one worker: far above what a live worker leaves queued; what a stuck one
/// would grow is dropped and counted (`sfu_queue_dropped_total`).
pub(crate) const MEDIA_EVENT_QUEUE: usize = 65_536;
pub(crate) const WORKER_COMMAND_QUEUE: usize = 65_536;
/// Finished call records waiting for the CDR file.
const CDR_QUEUE: usize = 4096;

/// Binds the listeners and starts every task.
pub async fn start(cfg: ServeConfig) -> anyhow::Result<RunningServer> {
    let http = TcpListener::bind(cfg.http)
        .await
        .with_context(|| format!("cannot listen on --http {}", cfg.http))?;
    let metrics_listener = TcpListener::bind(cfg.metrics)
        .await
        .with_context(|| format!("cannot listen on --metrics {}", cfg.metrics))?;
    let admin_listener = match cfg.admin {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --admin {addr}"))?,
        ),
        None => None,
    };
    let http_addr = http.local_addr()?;
    let metrics_addr = metrics_listener.local_addr()?;
    let admin_addr = match &admin_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };

    let metrics = Arc::new(Metrics::new());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let health = Arc::new(health::Health::new(shutdown_tx, metrics.clone()));
    let (driver_tx, driver_rx) = mpsc::channel(DRIVER_QUEUE);
    let (media_tx, media_rx) = mpsc::channel(MEDIA_EVENT_QUEUE);
    let mut workers = Vec::new();
    let mut threads = Vec::new();
    let mut tcp_tasks = Vec::new();
    for index in 0..cfg.workers {
        let port = if cfg.udp_port == 0 {
            0
        } else {
            cfg.udp_port + index as u16
        };
        let bind = SocketAddr::new(cfg.media_bind_ip(), port);
        let tcp_bind = match cfg.tcp_port {
            None => worker::TcpBind::Off,
            Some(0) => worker::TcpBind::SameAsUdp(cfg.media_bind_ip()),
            Some(p) => worker::TcpBind::At(SocketAddr::new(cfg.media_bind_ip(), p + index as u16)),
        };
        let (handle, thread, tcp_task) = worker::spawn(
            index,
            bind,
            tcp_bind,
            cfg.media_ip,
            crate::media::MediaConfig {
                quality_interval: cfg.quality_interval,
                volume_interval: cfg.volume_interval,
                tick: cfg.media_tick,
                bwe: cfg.bwe,
                limits: cfg.media_limits,
                ..crate::media::MediaConfig::new(bind)
            },
            worker::Links {
                to_driver: media_tx.clone(),
                metrics: metrics.clone(),
                shutdown: shutdown_rx.clone(),
                health: health.clone(),
                panic_media_of: cfg.panic_media_of.clone(),
                fail_after: cfg.fail_worker_after.filter(|_| index == 0),
                batch_window: cfg.media_batch_window,
            },
        )?;
        workers.push(handle);
        threads.push(thread);
        tcp_tasks.extend(tcp_task);
    }
    drop(media_tx);
    let media_addrs: Vec<SocketAddr> = workers.iter().map(|w| w.advertised).collect();
    let media_tcp_addrs: Vec<SocketAddr> =
        workers.iter().filter_map(|w| w.advertised_tcp).collect();
    let push = push::spawn(cfg.push_webhook.clone(), metrics.clone())?;

    // In a cluster, call ids name their host: the node's id and this run of it.
    let instance = match &cfg.redis {
        Some(_) => format!("{}.{}", cfg.node_id, instance_id()),
        None => instance_id(),
    };
    let store = match &cfg.redis {
        Some(url) => Some(
            crate::cluster::Store::connect(url, crate::cluster::NODE_TTL)
                .await
                .map_err(|e| anyhow::anyhow!("--redis: cannot reach the cluster store: {e}"))?,
        ),
        None => None,
    };
    let model_cfg = ModelConfig {
        invite_timeout: cfg.invite_timeout,
        reconnect_grace: cfg.reconnect_grace,
        max_call_members: cfg.max_call_members,
        max_calls_per_user: cfg.max_calls_per_user,
        instance: instance.clone(),
        ice_servers: Vec::new(),
        max_invites_per_minute: cfg.max_invites_per_minute,
        max_pushes_per_minute: cfg.max_pushes_per_minute,
        claims: store.is_some(),
    };
    let cfg_records = cfg.call_records;
    let cdr = match &cfg.cdr_file {
        Some(path) => Some(cdr_writer(path)?),
        None => None,
    };
    let admission = Arc::new(admission::Admission::new(
        cfg.max_sockets_per_ip,
        cfg.max_sockets,
    ));
    let shared = Arc::new(Shared {
        auth: Auth::with_keys(
            cfg.jwt_secret.as_deref().map(str::as_bytes),
            cfg.keys.clone(),
        ),
        cfg,
        metrics: metrics.clone(),
        sessions: Sessions::default(),
        directory: Arc::new(LocalDirectory::default()),
        driver: driver_tx,
        shutdown: shutdown_rx.clone(),
        health: health.clone(),
        admission,
        records: std::sync::Mutex::new(CallRecorder::new(cfg_records)),
        cdr,
        cluster: store.clone(),
        live_calls: std::sync::Mutex::default(),
        next_conn: AtomicU64::new(0),
    });
    let (cluster_link, cluster_tasks) = match store {
        Some(store) => {
            let media: Vec<String> = media_addrs.iter().map(ToString::to_string).collect();
            let node = crate::cluster::NodeInfo {
                id: instance.clone(),
                http: http_addr.to_string(),
                media: media.join(","),
                load: 0,
            };
            let (tx, tasks) = cluster::start(
                store,
                node,
                metrics.clone(),
                shared.driver.clone(),
                shutdown_rx.clone(),
            )
            .await?;
            (
                Some(driver::ClusterLink {
                    me: instance.clone(),
                    tx,
                    spill_above: shared.cfg.spill_above,
                }),
                tasks,
            )
        }
        None => (None, Vec::new()),
    };

    let driver = driver::run(
        model_cfg,
        driver_rx,
        media_rx,
        shared.clone(),
        push,
        workers,
        cluster_link,
    );
    let supervised = health.clone();
    let mut tasks = vec![
        tokio::spawn(async move {
            use futures_util::FutureExt;
            let reason = match std::panic::AssertUnwindSafe(driver).catch_unwind().await {
                Ok(()) => "the call-model driver stopped".to_string(),
                Err(_) => "the call-model driver panicked".to_string(),
            };
            supervised.failed("driver", reason);
        }),
        tokio::spawn(http::serve_app(
            http,
            http::app(shared.clone()),
            shutdown_rx.clone(),
            shared.cfg.http_header_timeout,
        )),
        tokio::spawn(http::serve_app(
            metrics_listener,
            http::metrics_app(metrics.clone()),
            shutdown_rx.clone(),
            shared.cfg.http_header_timeout,
        )),
    ];
    tasks.extend(tcp_tasks);
    tasks.extend(cluster_tasks);
    #[cfg(unix)]
    if let Some(path) = shared.cfg.keys_file.clone() {
        tasks.push(tokio::spawn(reload_keys_on_sighup(path, shared.clone())));
    }
    if let Some(listener) = admin_listener {
        tasks.push(tokio::spawn(http::serve_app(
            listener,
            http::admin_app(shared.clone()),
            shutdown_rx,
            shared.cfg.http_header_timeout,
        )));
    }
    let shared_cluster = shared.cluster.is_some();
    drop(shared);
    let media: Vec<String> = media_addrs.iter().map(ToString::to_string).collect();
    let ice_tcp: Vec<String> = media_tcp_addrs.iter().map(ToString::to_string).collect();
    let admin = admin_addr.map_or_else(|| "on http".to_string(), |a| a.to_string());
    tracing::info!(
        http = %http_addr,
        metrics = %metrics_addr,
        admin = %admin,
        media = %media.join(","),
        ice_tcp = %ice_tcp.join(","),
        node = %instance,
        cluster = shared_cluster,
        "sfu listening"
    );
    Ok(RunningServer {
        http_addr,
        metrics_addr,
        metrics,
        media_addrs,
        media_tcp_addrs,
        threads,
        health,
        tasks,
    })
}

/// Appends call records as JSON lines from a thread of its own (file I/O never blocks the
/// driver). The file is opened now so a bad path fails at start.
fn cdr_writer(path: &std::path::Path) -> anyhow::Result<std::sync::mpsc::SyncSender<String>> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open --cdr-file {}", path.display()))?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<String>(CDR_QUEUE);
    std::thread::Builder::new()
        .name("sfu-cdr".into())
        .spawn(move || {
            for line in rx {
                if let Err(e) = writeln!(file, "{line}").and_then(|()| file.flush()) {
                    tracing::error!(error = %e, "cannot append to the CDR file");
                }
            }
        })?;
    Ok(tx)
}

/// Re-reads the keys file on every SIGHUP; a file that does not parse leaves the keys as they
/// were (and says why).
#[cfg(unix)]
async fn reload_keys_on_sighup(path: std::path::PathBuf, shared: Arc<Shared>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot listen for SIGHUP: the keys file will not be reloaded");
        return;
    };
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            got = hup.recv() => if got.is_none() { return },
            _ = stopped(&mut shutdown) => return,
        }
        match crate::config::read_keys(&path) {
            Ok(keys) => {
                let n = keys.len();
                shared.auth.set_keys(keys);
                tracing::info!(keys = n, "keys file reloaded");
            }
            Err(e) => tracing::error!(error = %e, "keys file not reloaded; the old keys stay"),
        }
    }
}

/// A short random prefix that makes session and call ids unique across restarts.
fn instance_id() -> String {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        let t = crate::auth::unix_now();
        b = (t as u32).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}
