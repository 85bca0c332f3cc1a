//! HTTP routes: `GET /ws` (signaling), `GET /healthz`, and the separate metrics listener.

use std::sync::Arc;

use axum::Router;
use std::collections::HashMap;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::admission::Refusal;
use crate::auth::unix_now;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{Shared, session};
use crate::metrics::Metrics;

/// The demo client, embedded so the binary serves it with no build step.
const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");

pub(crate) fn app(shared: Arc<Shared>) -> Router {
    let router = if shared.cfg.dev {
        Router::new().route("/dev/token", get(dev_token))
    } else {
        Router::new()
    };
    let router = router
        .route(
            "/",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    INDEX_HTML,
                )
            }),
        )
        .route(
            "/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    APP_JS,
                )
            }),
        )
        .route(
            "/style.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    STYLE_CSS,
                )
            }),
        )
        .route("/ws", get(ws))
        .route("/healthz", get(healthz));
    // Without --admin, the admin API shares the main listener.
    let router = if shared.cfg.admin.is_none() {
        router.merge(admin_routes())
    } else {
        router
    };
    router.with_state(shared)
}

fn admin_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/calls", get(list_calls))
        .route("/api/calls/live", get(live_calls))
        .route("/api/calls/{id}", get(get_call))
        .route("/api/nodes", get(list_nodes))
}

/// The cluster's live nodes (`--redis`), or this node alone.
async fn list_nodes(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse_non_admin(&shared, &headers) {
        return r;
    }
    let Some(store) = &shared.cluster else {
        return axum::Json(serde_json::json!({"cluster": false, "nodes": []})).into_response();
    };
    match store.nodes().await {
        Ok(nodes) => {
            let nodes: Vec<_> = nodes
                .into_iter()
                .map(|n| {
                    serde_json::json!({"id": n.id, "http": n.http, "media": n.media, "calls": n.load})
                })
                .collect();
            axum::Json(serde_json::json!({"cluster": true, "nodes": nodes})).into_response()
        }
        Err(e) => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the cluster store is unreachable: {e}"),
        ),
    }
}

/// The live calls, with where each is hosted and its members' states: this node's, or in a
/// cluster every live node's (as of their last snapshot, at most 2 s old).
async fn live_calls(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse_non_admin(&shared, &headers) {
        return r;
    }
    let Some(store) = &shared.cluster else {
        let calls = shared
            .live_calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        return axum::Json(serde_json::json!({"cluster": false, "calls": *calls})).into_response();
    };
    match store.live_calls().await {
        Ok(entries) => {
            let calls: Vec<serde_json::Value> = entries
                .iter()
                .filter_map(|e| serde_json::from_str(e).ok())
                .collect();
            axum::Json(serde_json::json!({"cluster": true, "calls": calls})).into_response()
        }
        Err(e) => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the cluster store is unreachable: {e}"),
        ),
    }
}

/// The admin API alone, for `--admin`.
pub(crate) fn admin_app(shared: Arc<Shared>) -> Router {
    admin_routes()
        .route("/healthz", get(healthz))
        .with_state(shared)
}

pub(crate) fn metrics_app(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(metrics)
}

/// In `--dev` the secret is public, so a web page the developer happens to visit must not be
/// able to open a socket to their server: a browser's `Origin` must be a loopback page.
/// Non-browser clients send no `Origin`.
fn dev_origin_allowed(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => rest.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn ws(
    ws: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    State(shared): State<Arc<Shared>>,
) -> Response {
    if shared.cfg.dev && !dev_origin_allowed(&headers) {
        return api_error(
            StatusCode::FORBIDDEN,
            "--dev accepts sockets from loopback pages only (Origin)",
        );
    }
    let refused = |reason: &str| {
        shared
            .metrics
            .sockets_refused
            .with_label_values(&[reason])
            .inc();
    };
    if let Some(fault) = shared.health.fault() {
        refused("failing");
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("failing: {fault}"),
        );
    }
    let seat = match shared.admission.admit(peer.ip()) {
        Ok(seat) => seat,
        Err(Refusal::PerIp) => {
            refused("per_ip");
            return api_error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many sockets from this address (--max-sockets-per-ip)",
            );
        }
        Err(Refusal::Total) => {
            refused("total");
            return api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is at its socket limit (--max-sockets)",
            );
        }
    };
    let max = shared.cfg.max_frame_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        // The library's default reads into 128 KiB allocated up front per socket: a third of
        // a member's memory. Frames here are small (an SDP is a few KiB); larger ones grow it.
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| async move {
            session::run(socket, shared).await;
            drop(seat);
        })
        .into_response()
}

/// Bytes each WebSocket reads at a time (`docs/perf.md`: memory per member).
const WS_READ_BUFFER: usize = 4096;

/// Most records one `GET /api/calls` returns.
const MAX_LIMIT: usize = 1000;

fn api_error(status: StatusCode, message: &str) -> Response {
    let mut r = (status, Json(json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED
        && let Ok(v) = header::HeaderValue::from_str("Bearer")
    {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 7235).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// The call records API needs a token with `admin: true` as `Authorization: Bearer`; returns
/// the refusal, if any.
fn refuse_non_admin(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
    else {
        return Some(api_error(
            StatusCode::UNAUTHORIZED,
            "an admin bearer token is required",
        ));
    };
    match shared.auth.verify(token.trim(), unix_now()) {
        Err(e) => Some(api_error(StatusCode::UNAUTHORIZED, &e.to_string())),
        Ok(claims) if !claims.admin => Some(api_error(
            StatusCode::FORBIDDEN,
            "the token is not an admin token",
        )),
        Ok(_) => None,
    }
}

async fn list_calls(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = refuse_non_admin(&shared, &headers) {
        return r;
    }
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 50,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "limit must be an integer from 1 to 1000",
            );
        }
    };
    let calls = shared.records().recent(limit);
    Json(json!({ "calls": calls })).into_response()
}

async fn get_call(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = refuse_non_admin(&shared, &headers) {
        return r;
    }
    match shared.records().get(&id) {
        Some(record) => Json(record.clone()).into_response(),
        None => api_error(
            StatusCode::NOT_FOUND,
            "no record of that call (it may still be running)",
        ),
    }
}

/// `--dev` only: a login token for `?user=`, so the demo page needs no backend.
async fn dev_token(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(user) = q.get("user") else {
        return api_error(StatusCode::BAD_REQUEST, "give ?user=NAME");
    };
    match shared.auth.mint(
        user,
        None,
        false,
        std::time::Duration::from_secs(12 * 3600),
        unix_now(),
    ) {
        Ok(token) => Json(json!({ "token": token })).into_response(),
        Err(e) => api_error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// 200 `{"status":"ok"}` while every component runs; 503 with the reason once one failed.
async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.health.fault() {
        None => (
            [(header::CONTENT_TYPE, "application/json")],
            "{\"status\":\"ok\"}",
        )
            .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "failing", "reason": reason })),
        )
            .into_response(),
    }
}

async fn render_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

/// Serves `app` until shutdown is signalled: our own accept loop, because `axum::serve`
/// installs no timer, which leaves hyper's header-read timeout inert. A connection that has not
/// sent a complete request head within `header_timeout` (slowloris, or an idle keep-alive) is
/// closed. No route reads a request body; hyper closes a connection rather than drain one.
pub(crate) async fn serve_app(
    listener: TcpListener,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
    header_timeout: std::time::Duration,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = super::stopped(&mut shutdown) => return,
        };
        // Signaling frames are small and latency-bound: without this, a notification that
        // follows another within the client's delayed-ACK time waits ~40 ms (Nagle).
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = tower::service_fn(
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(req.map(axum::body::Body::new))
            },
        );
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let builder = builder.http1_only();
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(service),
            );
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = super::stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn dev_mode_takes_loopback_origins_only() {
        use super::{HeaderMap, dev_origin_allowed, header};
        let with = |o: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, o.parse().unwrap());
            dev_origin_allowed(&h)
        };
        assert!(
            dev_origin_allowed(&HeaderMap::new()),
            "no Origin: not a browser"
        );
        assert!(with("http://127.0.0.1:7600"));
        assert!(with("http://localhost:7600"));
        assert!(with("http://[::1]:7600"));
        assert!(!with("https://evil.example"));
        assert!(!with("http://127.0.0.1.evil.example"));
        assert!(!with("null"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
