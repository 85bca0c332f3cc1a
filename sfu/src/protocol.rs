//! JSON-RPC 2.0 framing of the signaling protocol (`shared/PROTOCOL.md`): parsing client
//! frames, the request and notification names, error codes, and the frames the server sends.
//!
//! Everything here is pure: the session shell parses with [`parse_frame`] and serializes with
//! [`Outbound::to_frame`]; the call model works on the typed values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use strum::{EnumDiscriminants, EnumIter, EnumString, IntoStaticStr};

/// JSON-RPC and application error codes (PROTOCOL.md "Errors").
pub mod codes {
    pub const PARSE_ERROR: i32 = -32700;
    pub const INVALID_REQUEST: i32 = -32600;
    pub const METHOD_NOT_FOUND: i32 = -32601;
    pub const INVALID_PARAMS: i32 = -32602;
    pub const UNAUTHORIZED: i32 = 4001;
    pub const FORBIDDEN: i32 = 4003;
    pub const NO_SUCH_CALL: i32 = 4004;
    pub const WRONG_STATE: i32 = 4009;
    pub const RATE_LIMITED: i32 = 4029;
    pub const INTERNAL: i32 = 5000;

    /// Every code the server can send, for docs checks and metric label bounds.
    pub const ALL: [i32; 10] = [
        PARSE_ERROR,
        INVALID_REQUEST,
        METHOD_NOT_FOUND,
        INVALID_PARAMS,
        UNAUTHORIZED,
        FORBIDDEN,
        NO_SUCH_CALL,
        WRONG_STATE,
        RATE_LIMITED,
        INTERNAL,
    ];
}

/// A client request's method. Unknown names never become a `Method` (they get -32601).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, EnumString, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Method {
    Login,
    Logout,
    Call,
    Invite,
    Accept,
    Reject,
    Hangup,
    Offer,
    Answer,
    Mute,
    Hold,
    Dtmf,
    Message,
    Candidate,
    Subscribe,
    Ping,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A JSON-RPC request id: a number or a string (PROTOCOL.md "Transport").
pub type RequestId = Value;

/// A JSON-RPC error object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RpcError {
    pub code: i32,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }
    pub fn parse(detail: impl std::fmt::Display) -> Self {
        Self::new(codes::PARSE_ERROR, format!("parse error: {detail}"))
    }
    pub fn invalid_request(why: &str) -> Self {
        Self::new(codes::INVALID_REQUEST, format!("invalid request: {why}"))
    }
    pub fn method_not_found(method: &str) -> Self {
        let shown: String = method.chars().take(64).collect();
        Self::new(
            codes::METHOD_NOT_FOUND,
            format!("method not found: {shown:?}"),
        )
    }
    pub fn invalid_params(why: impl std::fmt::Display) -> Self {
        Self::new(codes::INVALID_PARAMS, format!("invalid params: {why}"))
    }
    pub fn unauthorized(why: &str) -> Self {
        Self::new(codes::UNAUTHORIZED, why)
    }
    pub fn forbidden() -> Self {
        Self::new(codes::FORBIDDEN, "you are not a member of that call")
    }
    pub fn no_such_call() -> Self {
        Self::new(codes::NO_SUCH_CALL, "no such call (or it has ended)")
    }
    pub fn wrong_state(why: impl Into<String>) -> Self {
        Self::new(codes::WRONG_STATE, why)
    }
    pub fn rate_limited() -> Self {
        Self::new(
            codes::RATE_LIMITED,
            "rate limited: too many requests on this socket",
        )
    }
}

/// What one client text frame turned out to be.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// A request to act on and answer.
    Request {
        id: RequestId,
        method: Method,
        params: Value,
    },
    /// A JSON-RPC notification (no `id`): acted on by nobody, answered by nobody.
    Notification,
    /// A frame that gets an error response (`id` is null when it could not be read).
    Invalid { id: RequestId, error: RpcError },
}

/// Parses one text frame. Check order per PROTOCOL.md: -32700, -32600, -32601; login and
/// params are checked by the caller.
pub fn parse_frame(text: &str) -> Incoming {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Incoming::Invalid {
                id: Value::Null,
                error: RpcError::parse(e),
            };
        }
    };
    let invalid = |id: Value, why: &str| Incoming::Invalid {
        id,
        error: RpcError::invalid_request(why),
    };
    let mut obj = match value {
        Value::Object(o) => o,
        Value::Array(_) => return invalid(Value::Null, "batches are not supported"),
        _ => return invalid(Value::Null, "a request must be a JSON object"),
    };
    let Some(id) = obj.remove("id") else {
        return Incoming::Notification;
    };
    if !(id.is_string() || id.is_number()) {
        return invalid(Value::Null, "id must be a number or a string");
    }
    // JSON-RPC 2.0: the member must be present and exactly "2.0".
    match obj.get("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => {}
        _ => return invalid(id, "jsonrpc must be \"2.0\""),
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => return invalid(id, "method must be a string"),
        None => return invalid(id, "method is missing"),
    };
    let Ok(method) = method.parse::<Method>() else {
        return Incoming::Invalid {
            id,
            error: RpcError::method_not_found(&method),
        };
    };
    let params = obj.remove("params").unwrap_or(Value::Null);
    Incoming::Request { id, method, params }
}

/// Deserializes a request's params into `T`; an absent or null `params` reads as `{}`.
pub fn params<T: serde::de::DeserializeOwned>(params: Value) -> Result<T, RpcError> {
    let params = match params {
        Value::Null => Value::Object(Default::default()),
        Value::Object(o) => Value::Object(o),
        _ => return Err(RpcError::invalid_params("params must be an object")),
    };
    serde_json::from_value(params).map_err(RpcError::invalid_params)
}

/// Media kind of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Media {
    Audio,
    Video,
}

/// Why a joined member left (`user_leave.reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    Hangup,
    Disconnected,
    Logout,
}

/// Why a call ended (`call_end.reason`); also the `reason` label of `sfu_calls_ended_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, EnumIter, IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum EndReason {
    Hangup,
    Rejected,
    Busy,
    NoResponse,
    Cancelled,
    Timeout,
    Disconnected,
    Error,
}

/// One member's speaking volume in a `volume` notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserVolume {
    pub user: String,
    pub volume: u8,
}

/// Which way a `quality` sample measures: `up` = member to server, `down` = server to member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum QualityDirection {
    Up,
    Down,
}

/// A server-to-client notification. The variant name is the JSON-RPC method.
#[derive(Clone, Debug, PartialEq, Serialize, EnumDiscriminants)]
#[strum_discriminants(
    name(NotificationKind),
    derive(EnumIter, IntoStaticStr),
    strum(serialize_all = "snake_case")
)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
pub enum Notification {
    Invited {
        call_id: String,
        from: String,
        to: Vec<String>,
        media: Media,
        group: bool,
        client_state: Option<String>,
        headers: BTreeMap<String, String>,
    },
    Accepted {
        call_id: String,
        user: String,
    },
    Rejected {
        call_id: String,
        user: String,
    },
    Busy {
        call_id: String,
        user: String,
    },
    NoResponse {
        call_id: String,
        user: String,
    },
    InviteTimeout {
        call_id: String,
    },
    Cancelled {
        call_id: String,
    },
    UserEnter {
        call_id: String,
        user: String,
    },
    UserLeave {
        call_id: String,
        user: String,
        reason: LeaveReason,
    },
    AudioAvailable {
        call_id: String,
        user: String,
        available: bool,
    },
    VideoAvailable {
        call_id: String,
        user: String,
        available: bool,
    },
    Volume {
        call_id: String,
        volumes: Vec<UserVolume>,
        total: u8,
    },
    Quality {
        call_id: String,
        user: String,
        direction: QualityDirection,
        mos: f64,
        quality: analytics::Level,
        rtt_ms: f64,
        jitter_ms: f64,
        loss: f64,
    },
    Dtmf {
        call_id: String,
        user: String,
        digits: String,
    },
    Message {
        call_id: String,
        user: String,
        text: String,
    },
    CallEnd {
        call_id: String,
        reason: EndReason,
    },
    /// A server-initiated offer (renegotiation); the client replies with `answer`.
    Offer {
        call_id: String,
        sdp: String,
    },
    /// The member's media connection failed and is gone (`reason`: `ice`, `dtls` or `rtc`);
    /// they are still in the call and may send a new `offer`.
    MediaFailed {
        call_id: String,
        reason: String,
    },
    /// The server asks for a new `offer` for the call (a fresh media session, as after a
    /// reconnect); `reason` is `compact`: the session holds many stopped m-lines.
    Reoffer {
        call_id: String,
        reason: String,
    },
    /// `user`'s video is paused for this member (`paused: true`): its downlink cannot carry
    /// even their lowest simulcast layer; `false` when it is forwarded again.
    StreamPaused {
        call_id: String,
        user: String,
        paused: bool,
    },
    SessionReplaced {},
}

impl Notification {
    pub fn kind(&self) -> NotificationKind {
        self.into()
    }
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A frame the server sends on a session.
#[derive(Clone, Debug, PartialEq)]
pub enum Outbound {
    Response {
        id: RequestId,
        /// The request's method, for metrics labels; `None` when it could not be read.
        method: Option<Method>,
        result: Result<Value, RpcError>,
    },
    Notify(Notification),
}

impl Outbound {
    /// The JSON text of this frame.
    pub fn to_frame(&self) -> String {
        let value = match self {
            Outbound::Response {
                id,
                result: Ok(result),
                ..
            } => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Outbound::Response {
                id,
                result: Err(error),
                ..
            } => json!({"jsonrpc": "2.0", "id": id, "error": error}),
            Outbound::Notify(n) => {
                let mut v = serde_json::to_value(n).unwrap_or(Value::Null);
                if let Value::Object(o) = &mut v {
                    o.insert("jsonrpc".into(), "2.0".into());
                }
                v
            }
        };
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    #[test]
    fn parse_order_and_shapes() {
        let err = |t: &str| match parse_frame(t) {
            Incoming::Invalid { error, .. } => error.code,
            other => panic!("expected error for {t}, got {other:?}"),
        };
        assert_eq!(err("{"), codes::PARSE_ERROR);
        assert_eq!(err("[]"), codes::INVALID_REQUEST);
        assert_eq!(
            err("[{\"id\":1,\"method\":\"ping\"}]"),
            codes::INVALID_REQUEST
        );
        assert_eq!(err("3"), codes::INVALID_REQUEST);
        assert_eq!(
            err("{\"id\":{},\"method\":\"ping\"}"),
            codes::INVALID_REQUEST
        );
        assert_eq!(
            err("{\"id\":null,\"method\":\"ping\"}"),
            codes::INVALID_REQUEST
        );
        assert_eq!(err("{\"id\":1,\"method\":7}"), codes::INVALID_REQUEST);
        assert_eq!(err("{\"id\":1}"), codes::INVALID_REQUEST);
        assert_eq!(
            err("{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"ping\"}"),
            codes::INVALID_REQUEST
        );
        // JSON-RPC 2.0 requires the member: missing is an invalid request.
        assert_eq!(
            err("{\"id\":1,\"method\":\"ping\"}"),
            codes::INVALID_REQUEST
        );
        assert_eq!(
            err("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"nope\"}"),
            codes::METHOD_NOT_FOUND
        );
        assert_eq!(
            parse_frame("{\"method\":\"call\",\"params\":{}}"),
            Incoming::Notification
        );
        assert_eq!(
            parse_frame("{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"ping\"}"),
            Incoming::Request {
                id: "a".into(),
                method: Method::Ping,
                params: Value::Null
            }
        );
    }

    #[test]
    fn error_ids_are_kept_when_readable() {
        match parse_frame("{\"id\":9,\"method\":\"nope\"}") {
            Incoming::Invalid { id, .. } => assert_eq!(id, json!(9)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn params_must_be_an_object() {
        #[derive(Deserialize, Debug)]
        struct P {
            #[allow(dead_code)]
            a: u32,
        }
        assert_eq!(
            params::<P>(json!([1])).unwrap_err().code,
            codes::INVALID_PARAMS
        );
        assert_eq!(
            params::<P>(json!({"a": "x"})).unwrap_err().code,
            codes::INVALID_PARAMS
        );
        assert!(params::<P>(json!({"a": 1, "extra": true})).is_ok());
    }

    #[test]
    fn notification_frames_carry_method_and_params() {
        for kind in NotificationKind::iter() {
            assert!(!kind.as_str().is_empty());
        }
        let n = Outbound::Notify(Notification::UserLeave {
            call_id: "c1".into(),
            user: "bob".into(),
            reason: LeaveReason::Disconnected,
        });
        let v: Value = serde_json::from_str(&n.to_frame()).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","method":"user_leave","params":{"call_id":"c1","user":"bob","reason":"disconnected"}})
        );
        let v: Value =
            serde_json::from_str(&Outbound::Notify(Notification::SessionReplaced {}).to_frame())
                .unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","method":"session_replaced","params":{}})
        );
    }

    #[test]
    fn serde_names_match_strum_names() {
        let n = Notification::NoResponse {
            call_id: "c".into(),
            user: "u".into(),
        };
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(v["method"], n.kind().as_str());
        assert_eq!(Method::Dtmf.as_str(), "dtmf");
        assert_eq!("hangup".parse::<Method>().unwrap(), Method::Hangup);
    }
}
