//! The command line (DESIGN.md "CLI contract"): `sfu serve` and `sfu token`. Every `serve`
//! flag is also an `SFU_*` environment variable and a key of the optional TOML file given by
//! `--config`; the command line and environment win over the file, the file over defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::auth::DEV_SECRET;
use crate::logging::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "sfu",
    version,
    about = "WebRTC SFU for 1v1 and group calls, with call-quality analytics",
    long_about = "WebRTC SFU for 1v1 and group calls, with call-quality analytics.\n\n\
        Quick start: `sfu serve --dev`, then mint tokens with `sfu token alice --dev` and \
        connect WebSocket clients to ws://127.0.0.1:7600/ws."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Print a login token (JWT, HS256) for a user.
    Token(TokenArgs),
}

/// A duration written like `30s`, `1m30s`, `500ms`, `1h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|e| format!("{e} (write durations like 30s, 1m, 500ms)"))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `sfu serve` flags. All optional here so the config file can fill the gaps; defaults are
/// applied by [`ServeArgs::resolve`].
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeArgs {
    /// TOML file with any of these settings (keys as the long flags, e.g. `invite-timeout = "20s"`).
    #[arg(long, env = "SFU_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Development mode: loopback only, JWT secret "devsecret", no other flag needed.
    #[arg(long, env = "SFU_DEV")]
    #[serde(default)]
    pub dev: bool,

    /// HTTP listener: WebSocket at /ws, /healthz. Port 0 picks a free port. [default: 127.0.0.1:7600]
    #[arg(long, env = "SFU_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,

    /// Prometheus listener, serving /metrics. [default: 127.0.0.1:9600]
    #[arg(long, env = "SFU_METRICS", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Serve the admin API (/api/calls) on this listener only, not on --http (keep it off the
    /// internet). [default: on --http]
    #[arg(long, env = "SFU_ADMIN", value_name = "ADDR")]
    pub admin: Option<SocketAddr>,

    /// IP advertised to clients in the host ICE candidate: this machine's address as clients
    /// reach it (the public IP behind 1:1 NAT). Loopback binds loopback; any other binds all
    /// interfaces. [default: 127.0.0.1]
    #[arg(long, env = "SFU_MEDIA_IP", value_name = "IP")]
    pub media_ip: Option<std::net::IpAddr>,

    /// First media UDP port; worker i uses PORT+i. 0 picks free ports. [default: 7601]
    #[arg(long, env = "SFU_UDP_PORT", value_name = "PORT")]
    pub udp_port: Option<u16>,

    /// ICE-TCP (RFC 6544): each worker also listens for TCP and offers a passive `tcp` host
    /// candidate, below UDP, for clients whose networks block UDP. [default: true]
    #[arg(long, env = "SFU_ICE_TCP", value_name = "BOOL")]
    pub ice_tcp: Option<bool>,

    /// First ICE-TCP port; worker i uses PORT+i. 0 picks free ports. [default: --udp-port]
    #[arg(long, env = "SFU_TCP_PORT", value_name = "PORT")]
    pub tcp_port: Option<u16>,

    /// A TURN server `login` hands clients, with short-lived credentials (coturn's REST API
    /// scheme: `use-auth-secret`); repeatable, e.g. `turn:turn.example.com:3478?transport=udp`,
    /// `turns:turn.example.com:5349?transport=tcp`. Needs --turn-secret.
    #[arg(
        long = "turn-url",
        env = "SFU_TURN_URLS",
        value_name = "URL",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub turn_url: Vec<String>,

    /// The TURN server's `static-auth-secret`. Prefer the env var.
    #[arg(
        long,
        env = "SFU_TURN_SECRET",
        value_name = "S",
        hide_env_values = true
    )]
    pub turn_secret: Option<String>,

    /// How long TURN credentials from `login` stay valid (coturn refuses an allocation, or its
    /// refresh, once they expire: keep it above your longest call). [default: 24h]
    #[arg(long, env = "SFU_TURN_TTL", value_name = "DURATION")]
    pub turn_ttl: Option<Dur>,

    /// Join a cluster whose shared state is in this Redis (`redis://HOST:PORT/`): users on any
    /// node can call users on any other. Without it the node stands alone.
    #[arg(long, env = "SFU_REDIS", value_name = "URL", hide_env_values = true)]
    pub redis: Option<String>,

    /// This node's name in the cluster (letters, digits, `.`, `_`, `-`; unique per node).
    /// [default: the host name]
    #[arg(long, env = "SFU_NODE_ID", value_name = "NAME")]
    pub node_id: Option<String>,

    /// In a cluster, once this node hosts this many calls, new calls go to the least-loaded
    /// node instead (if one hosts fewer). [default: none: a call is hosted by its caller's node]
    #[arg(long, env = "SFU_SPILL_ABOVE", value_name = "CALLS")]
    pub spill_above: Option<u64>,

    /// Media worker threads, each with its own UDP port; a call lives on one. [default: number of cores]
    #[arg(long, env = "SFU_WORKERS", value_name = "N")]
    pub workers: Option<usize>,

    /// How often each member's call quality (MOS) is reported, per direction. [default: 5s]
    #[arg(long, env = "SFU_QUALITY_INTERVAL", value_name = "DURATION")]
    pub quality_interval: Option<Dur>,

    /// How often speaking volumes are reported while anyone is audible. [default: 300ms]
    #[arg(long, env = "SFU_VOLUME_INTERVAL", value_name = "DURATION")]
    pub volume_interval: Option<Dur>,

    /// Media timers (RTCP, stats, retransmission timeouts) are served on a grid of this step,
    /// so a worker wakes once per step for all its Peers instead of once per deadline; 0 serves
    /// each at its instant. At most 50ms. [default: 10ms]
    #[arg(long, env = "SFU_MEDIA_TICK", value_name = "DURATION")]
    pub media_tick: Option<Dur>,

    /// Downlink estimation: each video subscriber's downlink is estimated (GCC on its
    /// transport-wide feedback, sending paced) and the simulcast layers it gets fit it; a video
    /// that does not fit is paused for it (`stream_paused`). Off, layers follow `subscribe`
    /// only. Experimental: under CPU load the estimates run low (docs/architecture.md).
    /// [default: false]
    #[arg(long, env = "SFU_BWE", value_name = "BOOL")]
    pub bwe: Option<bool>,

    /// Once a worker has read datagrams, it lets the next ones gather this long and takes
    /// them in one batch: under load one wake-up serves many packets, at the price of at most
    /// this much added delay; an idle worker still wakes at the first datagram. 0 reads on
    /// every wake-up. At most 10ms. [default: 1ms]
    #[arg(long, env = "SFU_MEDIA_BATCH_WINDOW", value_name = "DURATION")]
    pub media_batch_window: Option<Dur>,

    /// Append each finished call's record as a JSON line to this file.
    #[arg(long, env = "SFU_CDR_FILE", value_name = "PATH")]
    pub cdr_file: Option<PathBuf>,

    /// Finished call records kept in memory for GET /api/calls. [default: 1000]
    #[arg(long, env = "SFU_CALL_RECORDS", value_name = "N")]
    pub call_records: Option<usize>,

    /// File of `kid secret` lines: tokens whose header names a `kid` are verified with its
    /// secret (one per app; rotate by editing the file and sending SIGHUP).
    #[arg(long, env = "SFU_KEYS_FILE", value_name = "PATH")]
    pub keys_file: Option<PathBuf>,

    /// HS256 secret that login tokens are signed with (at least 16 bytes). Prefer the env var.
    #[arg(long, env = "SFU_JWT_SECRET", value_name = "S", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// How long an invite rings before `no_response`. [default: 30s]
    #[arg(long, env = "SFU_INVITE_TIMEOUT", value_name = "DURATION")]
    pub invite_timeout: Option<Dur>,

    /// How long a user whose socket dropped stays in their calls. [default: 10s]
    #[arg(long, env = "SFU_RECONNECT_GRACE", value_name = "DURATION")]
    pub reconnect_grace: Option<Dur>,

    /// URL POSTed a JSON invite (call_id, from, to, media, client_state) for offline callees.
    #[arg(long, env = "SFU_PUSH_WEBHOOK", value_name = "URL")]
    pub push_webhook: Option<String>,

    /// Largest WebSocket message accepted, in bytes; larger ones close the socket (1009). [default: 65536]
    #[arg(long, env = "SFU_MAX_FRAME_BYTES", value_name = "BYTES")]
    pub max_frame_bytes: Option<usize>,

    /// Requests per second per socket (bursts of twice that); more get 4029. [default: 20]
    #[arg(long, env = "SFU_MAX_REQUESTS_PER_SEC", value_name = "N")]
    pub max_requests_per_sec: Option<u32>,

    /// Most members (joined or invited) in one call. [default: 16]
    #[arg(long, env = "SFU_MAX_CALL_MEMBERS", value_name = "N")]
    pub max_call_members: Option<usize>,

    /// Most live calls one user may be in at once. [default: 1]
    #[arg(long, env = "SFU_MAX_CALLS_PER_USER", value_name = "N")]
    pub max_calls_per_user: Option<usize>,

    /// Users one caller may invite per minute (`call` and `invite`); more get 4029. [default: 30]
    #[arg(long, env = "SFU_MAX_INVITES_PER_MINUTE", value_name = "N")]
    pub max_invites_per_minute: Option<u32>,

    /// Push webhooks per offline callee per minute; later invites ring without one. [default: 6]
    #[arg(long, env = "SFU_MAX_PUSHES_PER_MINUTE", value_name = "N")]
    pub max_pushes_per_minute: Option<u32>,

    /// An HTTP connection must send a complete request head within this long (slowloris, idle
    /// keep-alive), or it is closed. [default: 10s]
    #[arg(long, env = "SFU_HTTP_HEADER_TIMEOUT", value_name = "DURATION")]
    pub http_header_timeout: Option<Dur>,

    /// A socket must log in within this long, whatever else it sends, or it is closed (1008). [default: 10s]
    #[arg(long, env = "SFU_LOGIN_TIMEOUT", value_name = "DURATION")]
    pub login_timeout: Option<Dur>,

    /// Open WebSockets from one IP address; more are refused (429). [default: 500]
    #[arg(long, env = "SFU_MAX_SOCKETS_PER_IP", value_name = "N")]
    pub max_sockets_per_ip: Option<usize>,

    /// Open WebSockets in all; more are refused (503). [default: 20000]
    #[arg(long, env = "SFU_MAX_SOCKETS", value_name = "N")]
    pub max_sockets: Option<usize>,

    /// Published tracks per kind (audio, video) per member forwarded to the others. [default: 3]
    #[arg(long, env = "SFU_MAX_TRACKS_PER_KIND", value_name = "N")]
    pub max_tracks_per_kind: Option<usize>,

    /// m-lines in a member's offer; a larger offer is refused (-32602). [default: 16]
    #[arg(long, env = "SFU_MAX_OFFER_MLINES", value_name = "N")]
    pub max_offer_mlines: Option<usize>,

    /// Source addresses remembered per member's media session; a new one replaces one silent
    /// for 2 s, else it is refused. [default: 8]
    #[arg(long, env = "SFU_MAX_PEER_ADDRESSES", value_name = "N")]
    pub max_peer_addresses: Option<usize>,

    /// Trickled `candidate`s taken per member's media session; more are ignored. [default: 32]
    #[arg(long, env = "SFU_MAX_PEER_CANDIDATES", value_name = "N")]
    pub max_peer_candidates: Option<usize>,

    /// Datagrams per second taken from one member's media session; more are dropped. [default: 2000]
    #[arg(long, env = "SFU_MAX_PEER_PACKET_RATE", value_name = "N")]
    pub max_peer_packet_rate: Option<u32>,

    /// Seconds of Opus decoded per second for a publisher without the audio-level extension
    /// (its volume); past it the last level stands. [default: 1.2]
    #[arg(long, env = "SFU_OPUS_DECODE_BUDGET", value_name = "SECONDS")]
    pub opus_decode_budget: Option<f64>,

    /// A socket silent this long (no frame, no pong) is closed and treated as a disconnect. [default: 30s]
    #[arg(long, env = "SFU_WS_IDLE_TIMEOUT", value_name = "DURATION")]
    pub ws_idle_timeout: Option<Dur>,

    /// Test hook (with --dev only): the call-model driver stops after this long, to exercise
    /// supervision (/healthz 503, sessions closed with 1011, non-zero exit).
    #[arg(long, hide = true, value_name = "DURATION")]
    #[serde(skip)]
    pub fail_driver_after: Option<Dur>,

    /// Test hook (with --dev only): media worker 0 panics after this long (outside any call's
    /// media session), to exercise supervision of the workers.
    #[arg(long, hide = true, value_name = "DURATION")]
    #[serde(skip)]
    pub fail_worker_after: Option<Dur>,

    /// Test hook (with --dev only): the media session of this user panics inside str0m right
    /// after each of their offers, to show that only that session fails.
    #[arg(long, hide = true, value_name = "USER")]
    #[serde(skip)]
    pub panic_media_of: Option<String>,

    /// Log format. [default: human]
    #[arg(long, env = "SFU_LOG_FORMAT", value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log filter (tracing EnvFilter syntax); RUST_LOG wins. str0m's crates (str0m, is,
    /// str0m_proto, dimpl) log per packet: they are held at `error` unless named here.
    /// [default: info]
    #[arg(long, env = "SFU_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
}

/// A complete, checked server configuration.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub dev: bool,
    pub http: SocketAddr,
    pub metrics: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub media_ip: std::net::IpAddr,
    pub udp_port: u16,
    /// First ICE-TCP port, or `None` with ICE-TCP off.
    pub tcp_port: Option<u16>,
    pub turn: Option<crate::turn::TurnConfig>,
    /// `--redis` and `--node-id`: this node's cluster, if any.
    pub redis: Option<String>,
    pub node_id: String,
    /// `--spill-above`: calls hosted from which new calls are placed elsewhere.
    pub spill_above: Option<u64>,
    pub workers: usize,
    pub quality_interval: Duration,
    pub volume_interval: Duration,
    pub media_tick: Duration,
    /// `--bwe`: subscribers' downlinks estimated and simulcast layers fitted to them.
    pub bwe: bool,
    pub media_batch_window: Duration,
    pub cdr_file: Option<PathBuf>,
    pub call_records: usize,
    /// Verifies tokens without a `kid`; `None` with a keys file only.
    pub jwt_secret: Option<String>,
    pub keys_file: Option<PathBuf>,
    pub keys: crate::auth::KeySet,
    pub invite_timeout: Duration,
    pub reconnect_grace: Duration,
    pub push_webhook: Option<String>,
    pub max_frame_bytes: usize,
    pub max_requests_per_sec: u32,
    pub max_call_members: usize,
    pub max_calls_per_user: usize,
    pub ws_idle_timeout: Duration,
    pub max_invites_per_minute: u32,
    pub max_pushes_per_minute: u32,
    pub login_timeout: Duration,
    pub http_header_timeout: Duration,
    pub max_sockets_per_ip: usize,
    pub max_sockets: usize,
    pub media_limits: crate::media::MediaLimits,
    pub fail_driver_after: Option<Duration>,
    pub fail_worker_after: Option<Duration>,
    pub panic_media_of: Option<String>,
    pub log_format: LogFormat,
    pub log_level: String,
}

/// How long a busy media worker lets datagrams gather before it reads them (`--media-batch-window`).
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(1);

const MIN_SECRET_BYTES: usize = 16;

impl ServeConfig {
    /// Where media sockets bind: the media IP itself when it is loopback (dev, tests), all
    /// interfaces otherwise (behind 1:1 NAT the advertised IP is not on any interface).
    pub fn media_bind_ip(&self) -> std::net::IpAddr {
        if self.media_ip.is_loopback() {
            self.media_ip
        } else if self.media_ip.is_ipv4() {
            std::net::IpAddr::from([0, 0, 0, 0])
        } else {
            std::net::IpAddr::from([0u16; 8])
        }
    }
}

impl ServeArgs {
    /// Applies defaults and checks every setting.
    pub fn resolve(self) -> anyhow::Result<ServeConfig> {
        let media_limits = self.media_limits()?;
        let http = self.http.unwrap_or(([127, 0, 0, 1], 7600).into());
        let metrics = self.metrics.unwrap_or(([127, 0, 0, 1], 9600).into());
        let keys = match &self.keys_file {
            Some(path) => read_keys(path)?,
            None => crate::auth::KeySet::new(),
        };
        let jwt_secret = match (self.jwt_secret, self.dev, self.keys_file.is_some()) {
            (Some(s), _, _) => Some(s),
            (None, true, _) => Some(DEV_SECRET.to_string()),
            (None, false, true) => None,
            (None, false, false) => bail!(
                "no JWT secret: set SFU_JWT_SECRET (or --jwt-secret) or --keys-file, or run \
                 `sfu serve --dev` to try it locally"
            ),
        };
        if let Some(secret) = &jwt_secret {
            if !self.dev && secret.len() < MIN_SECRET_BYTES {
                bail!("the JWT secret must be at least {MIN_SECRET_BYTES} bytes");
            }
            if !self.dev && secret == DEV_SECRET {
                bail!("the dev secret is only allowed with --dev");
            }
        }
        let media_ip = self
            .media_ip
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        if media_ip.is_unspecified() || media_ip.is_multicast() {
            bail!("--media-ip must be an address clients can reach, not {media_ip}");
        }
        let workers = self
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if !(1..=256).contains(&workers) {
            bail!("--workers must be between 1 and 256");
        }
        let udp_port = self.udp_port.unwrap_or(7601);
        if udp_port != 0 && usize::from(udp_port) + workers > 65536 {
            bail!("--udp-port {udp_port} leaves no room for {workers} workers");
        }
        let tcp_port = match self.ice_tcp.unwrap_or(true) {
            true => Some(self.tcp_port.unwrap_or(udp_port)),
            false => None,
        };
        if let Some(p) = tcp_port.filter(|&p| p != 0)
            && usize::from(p) + workers > 65536
        {
            bail!("--tcp-port {p} leaves no room for {workers} workers");
        }
        let turn = crate::turn::TurnConfig::new(
            self.turn_url.clone(),
            self.turn_secret.clone(),
            self.turn_ttl.map(|d| d.0),
        )?;
        if let Some(url) = &self.redis
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            bail!("--redis must be a redis:// or rediss:// URL");
        }
        let node_id = match self.node_id.clone() {
            Some(id) => id,
            None => std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "sfu".into()),
        };
        if node_id.is_empty()
            || node_id.len() > 64
            || !node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            bail!("--node-id must be 1 to 64 letters, digits, '.', '_' or '-'");
        }
        if self.spill_above.is_some() && self.redis.is_none() {
            bail!("--spill-above places calls on other cluster nodes: it needs --redis");
        }
        if self.dev && !media_ip.is_loopback() {
            bail!("--dev binds loopback only (--media-ip {media_ip} is not)");
        }
        if self.dev {
            for (name, addr) in [("--http", http), ("--metrics", metrics)] {
                if !addr.ip().is_loopback() {
                    bail!(
                        "--dev binds loopback only ({name} {addr} is not): the dev secret is \
                         public, so anyone who can reach the server could log in"
                    );
                }
            }
        }
        let invite_timeout = self.invite_timeout.map_or(Duration::from_secs(30), |d| d.0);
        if invite_timeout.is_zero() || invite_timeout > Duration::from_secs(600) {
            bail!("--invite-timeout must be between 1ms and 10m");
        }
        let reconnect_grace = self
            .reconnect_grace
            .map_or(Duration::from_secs(10), |d| d.0);
        if reconnect_grace > Duration::from_secs(600) {
            bail!("--reconnect-grace must be at most 10m");
        }
        let ws_idle_timeout = self
            .ws_idle_timeout
            .map_or(Duration::from_secs(30), |d| d.0);
        if ws_idle_timeout < Duration::from_millis(100)
            || ws_idle_timeout > Duration::from_secs(3600)
        {
            bail!("--ws-idle-timeout must be between 100ms and 1h");
        }
        if let Some(url) = &self.push_webhook {
            let parsed = reqwest::Url::parse(url)
                .with_context(|| format!("--push-webhook {url:?} is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("--push-webhook must be an http or https URL");
            }
        }
        let quality_interval = self
            .quality_interval
            .map_or(Duration::from_secs(5), |d| d.0);
        if !(Duration::from_millis(500)..=Duration::from_secs(60)).contains(&quality_interval) {
            bail!("--quality-interval must be between 500ms and 60s");
        }
        let volume_interval = self
            .volume_interval
            .map_or(Duration::from_millis(300), |d| d.0);
        if !(Duration::from_millis(50)..=Duration::from_secs(10)).contains(&volume_interval) {
            bail!("--volume-interval must be between 50ms and 10s");
        }
        let media_tick = self.media_tick.map_or(crate::media::DEFAULT_TICK, |d| d.0);
        if media_tick > Duration::from_millis(50) {
            bail!("--media-tick must be at most 50ms");
        }
        let media_batch_window = self
            .media_batch_window
            .map_or(DEFAULT_BATCH_WINDOW, |d| d.0);
        if media_batch_window > Duration::from_millis(10) {
            bail!("--media-batch-window must be at most 10ms");
        }
        let call_records = self.call_records.unwrap_or(1000);
        if !(1..=1_000_000).contains(&call_records) {
            bail!("--call-records must be between 1 and 1000000");
        }
        let max_frame_bytes = self.max_frame_bytes.unwrap_or(64 * 1024);
        if !(1024..=16 * 1024 * 1024).contains(&max_frame_bytes) {
            bail!("--max-frame-bytes must be between 1024 and 16777216");
        }
        let max_requests_per_sec = self.max_requests_per_sec.unwrap_or(20);
        if max_requests_per_sec == 0 {
            bail!("--max-requests-per-sec must be at least 1");
        }
        let max_call_members = self.max_call_members.unwrap_or(16);
        if !(2..=1000).contains(&max_call_members) {
            bail!("--max-call-members must be between 2 and 1000");
        }
        let max_calls_per_user = self.max_calls_per_user.unwrap_or(1);
        if !(1..=100).contains(&max_calls_per_user) {
            bail!("--max-calls-per-user must be between 1 and 100");
        }
        if (self.fail_driver_after.is_some()
            || self.fail_worker_after.is_some()
            || self.panic_media_of.is_some())
            && !self.dev
        {
            bail!(
                "--fail-driver-after, --fail-worker-after and --panic-media-of are test hooks: only with --dev"
            );
        }
        let login_timeout = self.login_timeout.map_or(Duration::from_secs(10), |d| d.0);
        if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&login_timeout) {
            bail!("--login-timeout must be between 100ms and 10m");
        }
        let max_sockets = self.max_sockets.unwrap_or(20_000);
        let max_sockets_per_ip = self.max_sockets_per_ip.unwrap_or(500);
        if max_sockets == 0 || max_sockets_per_ip == 0 {
            bail!("--max-sockets and --max-sockets-per-ip must be at least 1");
        }
        let max_invites_per_minute = self.max_invites_per_minute.unwrap_or(30);
        let max_pushes_per_minute = self.max_pushes_per_minute.unwrap_or(6);
        if max_invites_per_minute == 0 {
            bail!("--max-invites-per-minute must be at least 1");
        }
        let http_header_timeout = self
            .http_header_timeout
            .map_or(Duration::from_secs(10), |d| d.0);
        if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&http_header_timeout) {
            bail!("--http-header-timeout must be between 100ms and 5m");
        }
        Ok(ServeConfig {
            keys_file: self.keys_file,
            keys,
            admin: self.admin,
            http_header_timeout,
            max_invites_per_minute,
            max_pushes_per_minute,
            login_timeout,
            max_sockets,
            max_sockets_per_ip,
            media_limits,
            fail_driver_after: self.fail_driver_after.map(|d| d.0),
            fail_worker_after: self.fail_worker_after.map(|d| d.0),
            panic_media_of: self.panic_media_of.clone(),
            dev: self.dev,
            http,
            metrics,
            media_ip,
            udp_port,
            tcp_port,
            turn,
            redis: self.redis.clone(),
            node_id,
            spill_above: self.spill_above,
            workers,
            quality_interval,
            volume_interval,
            media_tick,
            bwe: self.bwe.unwrap_or(false),
            media_batch_window,
            cdr_file: self.cdr_file,
            call_records,
            jwt_secret,
            invite_timeout,
            reconnect_grace,
            push_webhook: self.push_webhook,
            max_frame_bytes,
            max_requests_per_sec,
            max_call_members,
            max_calls_per_user,
            ws_idle_timeout,
            log_format: self.log_format.unwrap_or_default(),
            log_level: self.log_level.unwrap_or_else(|| "info".into()),
        })
    }
}

/// Reads and parses a keys file (at start, and on SIGHUP).
pub fn read_keys(path: &std::path::Path) -> anyhow::Result<crate::auth::KeySet> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --keys-file {}", path.display()))?;
    crate::auth::parse_keys(&text)
        .map_err(|e| anyhow::anyhow!("--keys-file {}: {e}", path.display()))
}

mod file;
mod media_limits;
mod token;
pub use token::TokenArgs;
#[cfg(test)]
mod tests;
