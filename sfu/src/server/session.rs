//! One task per signaling WebSocket: reads frames, enforces the per-socket limits, answers what
//! needs no call state (parse errors, rate limits, token checks) and hands the rest to the
//! call-model driver; writes what the driver sends back; pings and drops silent clients.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::{SplitSink, SplitStream, StreamExt};
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, MissedTickBehavior, interval, timeout};

use super::{Input, Shared};
use crate::auth::unix_now;
use crate::directory::{SessionHandle, ToSocket};
use crate::limits::{SocketLimits, Verdict};
use crate::protocol::{Incoming, Method, Outbound, RequestId, RpcError, codes, parse_frame};
use crate::signaling::ConnId;
use crate::signaling::params::LoginParams;

/// Frames queued for one socket before it counts as too slow and is closed.
const OUTBOUND_QUEUE: usize = 1024;
/// A write that takes longer than this means the client stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closed socket is drained for the client's close frame.
const LINGER: Duration = Duration::from_secs(2);

type Sink = SplitSink<WebSocket, Message>;

/// Why a session ended, as the `cause` label of `sfu_sessions_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    Client,
    Idle,
    LoginTimeout,
    Abuse,
    TooLarge,
    BadUtf8,
    Replaced,
    Slow,
    Shutdown,
    Error,
}

impl Cause {
    fn label(self) -> &'static str {
        match self {
            Cause::Client => "client",
            Cause::Idle => "idle",
            Cause::LoginTimeout => "login_timeout",
            Cause::Abuse => "abuse",
            Cause::TooLarge => "too_large",
            Cause::BadUtf8 => "bad_utf8",
            Cause::Replaced => "replaced",
            Cause::Slow => "slow",
            Cause::Shutdown => "shutdown",
            Cause::Error => "error",
        }
    }
}

pub(crate) async fn run(socket: WebSocket, shared: Arc<Shared>) {
    let conn = shared.next_conn();
    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
    let kill = Arc::new(Notify::new());
    shared.sessions.insert(
        conn,
        SessionHandle {
            tx,
            kill: kill.clone(),
        },
    );
    shared.metrics.sessions_active.inc();
    tracing::debug!(conn = conn.0, "session opened");

    let (cause, mut stream) = serve(socket, conn, &shared, rx, &kill).await;

    shared.sessions.remove(&conn);
    shared.metrics.sessions_active.dec();
    shared
        .metrics
        .sessions_closed
        .with_label_values(&[cause.label()])
        .inc();
    tracing::debug!(conn = conn.0, cause = cause.label(), "session closed");
    let _ = shared.driver.send(Input::Disconnect { conn }).await;
    if cause != Cause::Client {
        linger(&mut stream).await;
    }
}

async fn serve(
    socket: WebSocket,
    conn: ConnId,
    shared: &Shared,
    mut rx: mpsc::Receiver<ToSocket>,
    kill: &Notify,
) -> (Cause, SplitStream<WebSocket>) {
    let (mut sink, mut stream) = socket.split();
    let idle = shared.cfg.ws_idle_timeout;
    let mut ping = interval(idle / 3);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping.tick().await;
    let mut last_heard = Instant::now();
    let mut limits = SocketLimits::new(shared.cfg.max_requests_per_sec, Instant::now().into_std());
    let mut shutdown = shared.shutdown.clone();
    // Until a valid token is presented, nothing a socket sends keeps it open.
    let login_deadline = Instant::now() + shared.cfg.login_timeout;
    let mut authed = false;

    let cause = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(login_deadline), if !authed => {
                close(&mut sink, 1008, "no login in time").await;
                break Cause::LoginTimeout;
            }
            frame = stream.next() => {
                last_heard = Instant::now();
                let text = match frame {
                    None => break Cause::Client,
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => {
                        let err = RpcError::invalid_request("binary frames are not supported; send JSON text");
                        if let Some(cause) = offence(&mut sink, &mut limits, shared, serde_json::Value::Null, err).await {
                            break cause;
                        }
                        continue;
                    }
                    Some(Ok(Message::Close(_))) => break Cause::Client,
                    Some(Ok(_)) => continue, // ping (answered by the library) or pong
                    Some(Err(e)) => break read_error(&mut sink, e).await,
                };
                if let Some(cause) = on_text(&mut sink, conn, shared, &mut limits, &text, &mut authed).await {
                    break cause;
                }
            }
            out = rx.recv() => match out {
                Some(ToSocket::Frame(msg)) => {
                    if !write(&mut sink, shared, &msg).await {
                        break Cause::Slow;
                    }
                }
                Some(ToSocket::Text(text)) => {
                    let msg = Message::Text(Utf8Bytes::from(text));
                    if !matches!(timeout(WRITE_TIMEOUT, sink.send(msg)).await, Ok(Ok(()))) {
                        break Cause::Slow;
                    }
                }
                Some(ToSocket::Close { code, reason }) => {
                    close(&mut sink, code, reason).await;
                    break if code == 4000 { Cause::Replaced } else { Cause::Error };
                }
                None => break Cause::Error,
            },
            _ = kill.notified() => {
                close(&mut sink, 1008, "too slow: the client is not reading its frames").await;
                break Cause::Slow;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() >= idle {
                    close(&mut sink, 1001, "idle: no frame or pong received").await;
                    break Cause::Idle;
                }
                if timeout(WRITE_TIMEOUT, sink.send(Message::Ping(Default::default()))).await.map_or(true, |r| r.is_err()) {
                    break Cause::Slow;
                }
            }
            _ = super::stopped(&mut shutdown) => {
                close(&mut sink, 1001, "server shutting down").await;
                break Cause::Shutdown;
            }
            // A component failed: the client should reconnect (the server restarts).
            _ = shared.health.wait_failed() => {
                close(&mut sink, 1011, "server error: restarting").await;
                break Cause::Shutdown;
            }
        }
    };
    (cause, stream)
}

/// After our close frame, reads (and drops) what the client still sends until it closes too,
/// briefly: closing the TCP socket on unread data would reset it and lose our close frame.
async fn linger(stream: &mut SplitStream<WebSocket>) {
    let _ = timeout(LINGER, async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Handles one text frame; returns a cause when the socket must close.
async fn on_text(
    sink: &mut Sink,
    conn: ConnId,
    shared: &Shared,
    limits: &mut SocketLimits,
    text: &str,
    authed: &mut bool,
) -> Option<Cause> {
    let (id, method, params) = match parse_frame(text) {
        // Not answered, but counted: a flood of notifications is still a flood.
        Incoming::Notification => {
            return match limits.request(Instant::now().into_std()) {
                Verdict::Close => {
                    close(sink, 1008, "too many requests").await;
                    Some(Cause::Abuse)
                }
                _ => None,
            };
        }
        Incoming::Invalid { id, error } => return offence(sink, limits, shared, id, error).await,
        Incoming::Request { id, method, params } => (id, method, params),
    };
    let verdict = limits.request(Instant::now().into_std());
    if verdict != Verdict::Allow {
        // Over the rate: answered, and on a sustained flood the socket closes after that.
        let err = Err(RpcError::rate_limited());
        respond(sink, shared, id, Some(method), err).await;
        if verdict == Verdict::Close {
            close(sink, 1008, "too many requests").await;
            return Some(Cause::Abuse);
        }
        return None;
    }
    let input = if method == Method::Login {
        match verify_login(shared, params) {
            Ok(user) => {
                *authed = true;
                let ice_servers = match &shared.cfg.turn {
                    Some(turn) => turn.ice_servers(&user, unix_now()),
                    None => Vec::new(),
                };
                Input::Login {
                    conn,
                    id,
                    user,
                    ice_servers,
                }
            }
            Err(e) => {
                respond(sink, shared, id, Some(method), Err(e)).await;
                return None;
            }
        }
    } else {
        Input::Request {
            conn,
            id,
            method,
            params,
        }
    };
    // Waiting here is the backpressure on a client that outpaces the call model.
    if let Err(mpsc::error::SendError(input)) = shared.driver.send(input).await {
        // The call model is gone (shutting down): say so, then close.
        if let Input::Login { id, .. } | Input::Request { id, .. } = input {
            let err = RpcError::new(
                codes::INTERNAL,
                "internal error: the server is shutting down",
            );
            respond(sink, shared, id, Some(method), Err(err)).await;
        }
        close(sink, 1001, "server shutting down").await;
        return Some(Cause::Shutdown);
    }
    None
}

/// Login's params and token, checked here so the call model only sees verified users.
fn verify_login(shared: &Shared, params: serde_json::Value) -> Result<String, RpcError> {
    let p: LoginParams = crate::protocol::params(params)?;
    shared
        .auth
        .verify(&p.token, unix_now())
        .map(|claims| claims.sub)
        .map_err(|e| RpcError::unauthorized(&format!("login refused: {e}")))
}

/// Answers a bad frame, or closes the socket when it keeps sending them.
async fn offence(
    sink: &mut Sink,
    limits: &mut SocketLimits,
    shared: &Shared,
    id: RequestId,
    error: RpcError,
) -> Option<Cause> {
    match limits.offence(Instant::now().into_std()) {
        Verdict::Close => {
            close(sink, 1008, "too many invalid frames").await;
            Some(Cause::Abuse)
        }
        _ => {
            respond(sink, shared, id, None, Err(error)).await;
            None
        }
    }
}

async fn respond(
    sink: &mut Sink,
    shared: &Shared,
    id: RequestId,
    method: Option<Method>,
    result: Result<serde_json::Value, RpcError>,
) {
    let msg = Outbound::Response { id, method, result };
    let _ = write(sink, shared, &msg).await;
}

/// Writes one frame; false when the client is gone or not reading.
async fn write(sink: &mut Sink, shared: &Shared, msg: &Outbound) -> bool {
    if let Outbound::Response { method, result, .. } = msg {
        shared
            .metrics
            .response(*method, result.as_ref().err().map(|e| e.code));
    }
    let text = Message::Text(Utf8Bytes::from(msg.to_frame()));
    matches!(timeout(WRITE_TIMEOUT, sink.send(text)).await, Ok(Ok(())))
}

async fn close(sink: &mut Sink, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = timeout(WRITE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
}

/// RFC 6455: invalid UTF-8 closes with 1007, an oversized message with 1009.
async fn read_error(sink: &mut Sink, e: axum::Error) -> Cause {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Utf8(_)) => {
            close(sink, 1007, "invalid UTF-8 in a text frame").await;
            Cause::BadUtf8
        }
        Some(tungstenite::Error::Capacity(_)) => {
            close(sink, 1009, "message too big").await;
            Cause::TooLarge
        }
        Some(tungstenite::Error::Protocol(_)) => {
            close(sink, 1002, "WebSocket protocol error").await;
            Cause::Error
        }
        _ => Cause::Client,
    }
}
