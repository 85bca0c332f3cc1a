//! Shared harness of the end-to-end tests: starts the real `sfu` binary on ephemeral ports and
//! drives it with real WebSocket clients (tokio-tungstenite).

#![allow(dead_code)]

pub mod media;
pub mod redis;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sfu::auth::{Auth, DEV_SECRET, unix_now};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// Path of the `sfu` binary of this workspace, (re)built once per test process so a test run
/// never exercises a stale server.
pub fn sfu_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("sfu", false)).clone()
}

/// Path of the `loadtest` binary, built like [`sfu_bin`].
pub fn loadtest_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("loadtest", false)).clone()
}

/// Release builds of `sfu` and `loadtest`, for the few tests whose subject is timing a debug
/// build distorts (a congestion controller reads a starved CPU's delay as a full link).
pub fn release_bins() -> (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| (workspace_bin("sfu", true), workspace_bin("loadtest", true)))
        .clone()
}

fn workspace_bin(name: &str, release: bool) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let debug = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    let mut args = vec!["build", "--quiet", "-p", name, "--bin", name];
    let dir = if release {
        args.push("--release");
        debug.parent().expect("target dir").join("release")
    } else {
        debug
    };
    let status = std::process::Command::new(env!("CARGO"))
        .args(&args)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p {name} failed");
    dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// A running `sfu serve --dev` with ephemeral ports.
pub struct Server {
    child: Child,
    pub http: SocketAddr,
    pub metrics: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub async fn start(extra: &[&str]) -> Server {
        Self::start_mode(true, extra).await
    }

    /// A dev-mode server from the release build ([`release_bins`]).
    pub async fn start_release(extra: &[&str]) -> Server {
        Self::start_bin(release_bins().0, true, extra).await
    }

    /// A production-mode server (secret `a-production-secret-0123`).
    pub async fn start_prod(extra: &[&str]) -> Server {
        Self::start_mode(false, extra).await
    }

    async fn start_mode(dev: bool, extra: &[&str]) -> Server {
        Self::start_bin(sfu_bin(), dev, extra).await
    }

    async fn start_bin(bin: PathBuf, dev: bool, extra: &[&str]) -> Server {
        let mode: &[&str] = if dev {
            &["--dev"]
        } else {
            &["--jwt-secret", "a-production-secret-0123"]
        };
        let mut child = Command::new(bin)
            .arg("serve")
            .args(mode)
            .args([
                "--http",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--udp-port",
                "0",
                "--workers",
                "2",
            ])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sfu");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (http, metrics) = timeout(WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().unwrap().push(line.clone());
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["message"] == "sfu listening" {
                    let http = v["http"].as_str().unwrap().parse().unwrap();
                    let metrics = v["metrics"].as_str().unwrap().parse().unwrap();
                    return (http, metrics);
                }
            }
            panic!("sfu exited before listening: {:?}", log.lock().unwrap());
        })
        .await
        .expect("sfu did not start in time");
        // Keep draining stderr so the server never blocks on a full pipe.
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Server {
            child,
            http,
            metrics,
            log,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http)
    }

    /// The ICE-TCP address of each media worker, from the server's start-up log line.
    pub fn ice_tcp_addrs(&self) -> Vec<SocketAddr> {
        self.listening("ice_tcp")
    }

    /// The UDP address of each media worker.
    pub fn media_addrs(&self) -> Vec<SocketAddr> {
        self.listening("media")
    }

    fn listening(&self, field: &str) -> Vec<SocketAddr> {
        let log = self.log.lock().unwrap();
        let line = log
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == "sfu listening")
            .expect("start-up line");
        line[field]
            .as_str()
            .unwrap_or_default()
            .split(',')
            .filter(|a| !a.is_empty())
            .map(|a| a.parse().unwrap())
            .collect()
    }

    pub fn token(&self, user: &str) -> String {
        Auth::new(DEV_SECRET.as_bytes())
            .mint(user, None, false, Duration::from_secs(3600), unix_now())
            .unwrap()
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    /// A connected, logged-in client.
    pub async fn login(&self, user: &str) -> Client {
        let mut c = self.client().await;
        let r = c
            .request("login", json!({ "token": self.token(user) }))
            .await
            .unwrap_or_else(|e| panic!("login {user}: {e}"));
        assert_eq!(r["user"], user);
        c.user = user.to_string();
        c
    }

    pub async fn metrics_text(&self) -> String {
        let get = async {
            reqwest::get(format!("http://{}/metrics", self.metrics))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        };
        timeout(WAIT, get)
            .await
            .unwrap_or_else(|_| panic!("GET /metrics of {} unanswered", self.metrics))
    }

    /// The value of one sample of `/metrics`, e.g. `sfu_calls_active` or
    /// `sfu_calls_ended_total{answered="true",reason="hangup"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        sample_value(&self.metrics_text().await, sample)
    }

    /// Waits until `sample` reaches `want`.
    pub async fn wait_metric(&self, sample: &str, want: f64) {
        let mut last = f64::NAN;
        for _ in 0..200 {
            last = self.metric(sample).await;
            if last == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{sample} is {last}, expected {want}");
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub async fn terminate(&mut self) -> bool {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let status = timeout(WAIT, self.child.wait())
            .await
            .expect("exit in time")
            .expect("wait");
        status.success()
    }

    /// Sends a signal (e.g. "HUP") to the server process.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .expect("run kill");
        assert!(sent.success());
    }

    /// Waits until the server logged a line containing `text`.
    pub async fn wait_log(&self, text: &str) {
        timeout(WAIT, async {
            loop {
                if self.log.lock().unwrap().iter().any(|l| l.contains(text)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no log line with {text:?}"));
    }

    /// Waits for the process to exit by itself; returns its exit code.
    pub async fn exit_code(&mut self) -> Option<i32> {
        let status = timeout(WAIT, self.child.wait())
            .await
            .expect("exit in time")
            .expect("wait");
        status.code()
    }

    /// True while the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

pub fn sample_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A signaling client speaking PROTOCOL.md.
pub struct Client {
    ws: Ws,
    next_id: u64,
    queue: VecDeque<Value>,
    /// The user this client logged in as (empty before login).
    pub user: String,
}

/// How a socket ended, as the client saw it.
#[derive(Debug, PartialEq)]
pub enum Closed {
    Code(u16),
    NoFrame,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("connect");
        Client {
            ws,
            next_id: 0,
            queue: VecDeque::new(),
            user: String::new(),
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_raw(&mut self, msg: Message) -> bool {
        self.ws.send(msg).await.is_ok()
    }

    /// Next frame parsed as JSON (pings are answered by the library and skipped).
    async fn next_json(&mut self) -> Value {
        loop {
            let msg = timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("socket open")
                .expect("frame ok");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).expect("server sends JSON"),
                Message::Close(f) => panic!("socket closed: {f:?}"),
                _ => continue,
            }
        }
    }

    /// Sends a request and returns its `result`, or its `error` object as `Err`.
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_text(&frame.to_string()).await;
        self.response(json!(id)).await
    }

    /// Waits for the response with this id, queueing notifications that come first.
    pub async fn response(&mut self, id: Value) -> Result<Value, Value> {
        loop {
            let v = self.next_json().await;
            if v.get("method").is_some() && v.get("id").is_none() {
                self.queue.push_back(v);
                continue;
            }
            assert_eq!(v["jsonrpc"], "2.0");
            // The response to an earlier request sent without waiting (`send_request`) is
            // queued for whoever reads the notifications.
            if let (Some(got), Some(want)) = (v["id"].as_u64(), id.as_u64())
                && got < want
            {
                self.queue.push_back(v);
                continue;
            }
            assert_eq!(v["id"], id, "response to another request: {v}");
            return match v.get("error") {
                Some(e) => Err(e.clone()),
                None => Ok(v["result"].clone()),
            };
        }
    }

    /// The next response, whatever its id (for frames whose id the server cannot read).
    pub async fn next_response(&mut self) -> Value {
        loop {
            let v = self.next_json().await;
            if v.get("method").is_some() && v.get("id").is_none() {
                self.queue.push_back(v);
                continue;
            }
            return v;
        }
    }

    /// Sends a request without waiting for its response; returns its id.
    pub async fn send_request(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_text(&frame.to_string()).await;
        id
    }

    /// A notification queued while waiting for a response, if any.
    #[allow(dead_code)]
    pub fn queued(&mut self) -> Option<Value> {
        self.queue.pop_front()
    }

    /// The next frame (queued notifications first); `None` once the socket is closed.
    pub async fn recv(&mut self) -> Option<Value> {
        if let Some(v) = self.queue.pop_front() {
            return Some(v);
        }
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(t)) => return serde_json::from_str(&t).ok(),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Sends a request that must fail; returns the error code.
    pub async fn error_code(&mut self, method: &str, params: Value) -> i64 {
        let e = self
            .request(method, params)
            .await
            .expect_err("expected an error");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        e["code"].as_i64().unwrap()
    }

    /// The next notification, which must be `method`; returns its params.
    pub async fn expect(&mut self, method: &str) -> Value {
        let v = match self.queue.pop_front() {
            Some(v) => v,
            None => self.next_json().await,
        };
        assert_eq!(v["method"], method, "unexpected notification {v}");
        assert!(v.get("id").is_none());
        v["params"].clone()
    }

    /// The next notification other than the periodic `volume` and `quality` reports, which
    /// must be `method`; returns its params.
    pub async fn expect_past_reports(&mut self, method: &str) -> Value {
        loop {
            let v = match self.queue.pop_front() {
                Some(v) => v,
                None => self.next_json().await,
            };
            if v["method"] == "volume" || v["method"] == "quality" {
                continue;
            }
            assert_eq!(v["method"], method, "unexpected notification {v}");
            return v["params"].clone();
        }
    }

    /// Asserts no notification arrives for `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        assert!(self.queue.is_empty(), "queued: {:?}", self.queue);
        let r = timeout(d, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => return t.to_string(),
                    Some(Ok(Message::Close(f))) => return format!("close {f:?}"),
                    Some(Ok(_)) => continue,
                    other => return format!("{other:?}"),
                }
            }
        })
        .await;
        if let Ok(frame) = r {
            panic!("expected silence, got {frame}");
        }
    }

    /// Reads until the socket closes; returns the close code. Text frames on the way are
    /// returned too.
    pub async fn closed(&mut self) -> (Closed, Vec<Value>) {
        let mut frames = Vec::new();
        loop {
            match timeout(WAIT, self.ws.next()).await.expect("close in time") {
                Some(Ok(Message::Close(Some(f)))) => {
                    return (Closed::Code(u16::from(f.code)), frames);
                }
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                    return (Closed::NoFrame, frames);
                }
                Some(Ok(Message::Text(t))) => frames.push(serde_json::from_str(&t).unwrap()),
                Some(Ok(_)) => continue,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Drops the TCP connection without a close handshake.
    pub fn drop_hard(self) {
        drop(self);
    }
}

/// Places a call from `caller` to `callee` and answers it; returns the call id. Consumes the
/// notifications of that flow on both sides.
pub async fn connected_call(caller: &mut Client, callee: &mut Client, media: &str) -> String {
    let r = caller
        .request("call", json!({"to": [callee.user], "media": media}))
        .await
        .unwrap();
    let id = r["call_id"].as_str().unwrap().to_string();
    let inv = callee.expect("invited").await;
    assert_eq!(inv["call_id"], id);
    callee
        .request("accept", json!({ "call_id": id }))
        .await
        .unwrap();
    assert_eq!(caller.expect("accepted").await["user"], callee.user);
    assert_eq!(caller.expect("user_enter").await["user"], callee.user);
    assert_eq!(callee.expect("user_enter").await["user"], caller.user);
    id
}

/// Runs loadtest against `s`; returns its exit code and JSON report.
pub async fn loadtest(s: &Server, name: &str, args: &[&str]) -> (i32, Value) {
    loadtest_with(loadtest_bin(), s, name, args).await
}

/// [`loadtest`] from the release build ([`release_bins`]).
pub async fn loadtest_release(s: &Server, name: &str, args: &[&str]) -> (i32, Value) {
    loadtest_with(release_bins().1, s, name, args).await
}

async fn loadtest_with(bin: PathBuf, s: &Server, name: &str, args: &[&str]) -> (i32, Value) {
    let report: PathBuf =
        std::env::temp_dir().join(format!("loadtest-{}-{name}.json", std::process::id()));
    let _ = std::fs::remove_file(&report);
    let out = tokio::process::Command::new(bin)
        .arg("--url")
        .arg(s.ws_url())
        .arg("--report")
        .arg(&report)
        .args(["--quiet", "--prefix", name])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("run loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no report ({e}); stdout:\n{stdout}\nstderr:\n{stderr}"));
    let _ = std::fs::remove_file(&report);
    eprintln!("{name}:\n{stdout}");
    assert!(stdout.contains("result:"), "summary printed");
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&text).unwrap(),
    )
}

/// A short-lived admin token for the dev server's admin API.
pub fn admin_token() -> String {
    Auth::new(DEV_SECRET.as_bytes())
        .mint("ops", None, true, Duration::from_secs(60), unix_now())
        .unwrap()
}

/// `GET /api/calls/live` on `s` (admin token), polled until `done` holds for its `calls`
/// (the directory is a snapshot taken every 2 s); returns them.
pub async fn live_calls_until(s: &Server, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut last = Vec::new();
    for _ in 0..75 {
        let v = admin_json(s, "/api/calls/live").await;
        last = v["calls"].as_array().cloned().unwrap_or_default();
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("live calls never as expected: {last:?}");
}

/// `GET path` on `s`'s main listener with an admin token; the JSON it answers.
pub async fn admin_json(s: &Server, path: &str) -> Value {
    let get = async {
        reqwest::Client::new()
            .get(format!("http://{}{path}", s.http))
            .bearer_auth(admin_token())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    timeout(WAIT, get)
        .await
        .unwrap_or_else(|_| panic!("GET {path} of {} unanswered", s.http))
}

/// `user`'s state in a live-call entry.
pub fn member_state(call: &Value, user: &str) -> Option<String> {
    call["members"]
        .as_array()?
        .iter()
        .find(|m| m["user"] == user)
        .and_then(|m| m["state"].as_str().map(String::from))
}
