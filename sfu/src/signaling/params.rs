//! Typed params of the signaling requests and their validation (PROTOCOL.md "Precise rules").
//! Everything that is `-32602` is decided here, before the call model looks at any call.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::auth::valid_user_id;
use crate::protocol::{Media, RpcError};

/// Largest `client_state` and `text`, in bytes of UTF-8.
pub const MAX_BLOB_BYTES: usize = 4 * 1024;
/// At most this many custom headers, with names and values up to these lengths.
pub const MAX_HEADERS: usize = 32;
pub const MAX_HEADER_NAME: usize = 128;
pub const MAX_HEADER_VALUE: usize = 1024;
/// Longest `digits` of a `dtmf` request.
pub const MAX_DTMF_DIGITS: usize = 32;
/// Longest call id we look up; ours are much shorter.
const MAX_CALL_ID: usize = 128;

#[derive(Debug, Deserialize)]
pub struct LoginParams {
    pub token: String,
}

#[derive(Debug, Deserialize)]
pub struct CallParams {
    pub to: Vec<String>,
    pub media: Media,
    #[serde(default)]
    pub group: Option<bool>,
    #[serde(default)]
    pub client_state: Option<String>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
pub struct CallIdParams {
    pub call_id: String,
}

#[derive(Debug, Deserialize)]
pub struct InviteParams {
    pub call_id: String,
    pub to: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct MuteParams {
    pub call_id: String,
    #[serde(default)]
    pub audio: Option<bool>,
    #[serde(default)]
    pub video: Option<bool>,
}

/// `subscribe`: which of `user`'s video the caller receives.
#[derive(Debug, Deserialize)]
pub struct SubscribeParams {
    pub call_id: String,
    pub user: String,
    pub video: StreamChoice,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StreamChoice {
    High,
    Low,
    Off,
}

#[derive(Debug, Deserialize)]
pub struct HoldParams {
    pub call_id: String,
    pub held: bool,
}

#[derive(Debug, Deserialize)]
pub struct DtmfParams {
    pub call_id: String,
    pub digits: String,
}

#[derive(Debug, Deserialize)]
pub struct MessageParams {
    pub call_id: String,
    pub text: String,
}

#[derive(Debug, Deserialize)]
pub struct SdpParams {
    pub call_id: String,
    pub sdp: String,
}

#[derive(Debug, Deserialize)]
pub struct CandidateParams {
    pub call_id: String,
    pub candidate: String,
    #[serde(default)]
    pub sdp_mid: Option<String>,
}

/// Largest SDP accepted (the frame limit bounds it too).
pub const MAX_SDP_BYTES: usize = 64 * 1024;

pub fn check_sdp(sdp: &str) -> Result<(), RpcError> {
    if sdp.is_empty() || sdp.len() > MAX_SDP_BYTES {
        return Err(RpcError::invalid_params("sdp must be 1 byte to 64 KiB"));
    }
    Ok(())
}

pub fn check_candidate(candidate: &str) -> Result<(), RpcError> {
    if candidate.len() > 1024 {
        return Err(RpcError::invalid_params("candidate is over 1 KiB"));
    }
    Ok(())
}

/// A validated `call` request.
#[derive(Debug)]
pub struct NewCall {
    pub to: Vec<String>,
    pub media: Media,
    pub group: bool,
    pub client_state: Option<String>,
    pub headers: BTreeMap<String, String>,
}

pub fn check_call_id(id: &str) -> Result<(), RpcError> {
    if id.is_empty() || id.len() > MAX_CALL_ID {
        return Err(RpcError::invalid_params("call_id is empty or too long"));
    }
    Ok(())
}

/// Validates and de-duplicates (keeping order) a list of callees.
pub fn callees(to: Vec<String>, me: &str) -> Result<Vec<String>, RpcError> {
    if to.is_empty() {
        return Err(RpcError::invalid_params("`to` must name at least one user"));
    }
    let mut out: Vec<String> = Vec::with_capacity(to.len());
    for user in to {
        if !valid_user_id(&user) {
            return Err(RpcError::invalid_params(
                "user ids must match [A-Za-z0-9_-]{1,64}",
            ));
        }
        if user == me {
            return Err(RpcError::invalid_params("you cannot call yourself"));
        }
        if !out.contains(&user) {
            out.push(user);
        }
    }
    Ok(out)
}

impl CallParams {
    pub fn validate(self, me: &str, max_members: usize) -> Result<NewCall, RpcError> {
        let to = callees(self.to, me)?;
        let group = self.group.unwrap_or(to.len() > 1);
        if !group && to.len() > 1 {
            return Err(RpcError::invalid_params(
                "a 1v1 call (group: false) takes exactly one callee",
            ));
        }
        if to.len() + 1 > max_members {
            return Err(RpcError::invalid_params(format!(
                "too many members: a call holds at most {max_members}"
            )));
        }
        if self
            .client_state
            .as_ref()
            .is_some_and(|s| s.len() > MAX_BLOB_BYTES)
        {
            return Err(RpcError::invalid_params("client_state is over 4 KiB"));
        }
        let headers = self.headers.unwrap_or_default();
        if headers.len() > MAX_HEADERS {
            return Err(RpcError::invalid_params("at most 32 headers"));
        }
        for (name, value) in &headers {
            let is_x = name.len() > 2 && name.as_bytes()[..2].eq_ignore_ascii_case(b"x-");
            if !is_x || name.len() > MAX_HEADER_NAME || !name.bytes().all(is_header_char) {
                return Err(RpcError::invalid_params(
                    "header names must start with X- and be at most 128 token characters",
                ));
            }
            if value.len() > MAX_HEADER_VALUE {
                return Err(RpcError::invalid_params("header values are at most 1 KiB"));
            }
        }
        Ok(NewCall {
            to,
            media: self.media,
            group,
            client_state: self.client_state,
            headers,
        })
    }
}

fn is_header_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub fn check_digits(digits: &str) -> Result<(), RpcError> {
    let ok = (1..=MAX_DTMF_DIGITS).contains(&digits.len())
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'*' | b'#' | b'A'..=b'D'));
    if ok {
        Ok(())
    } else {
        Err(RpcError::invalid_params(
            "digits must be 1 to 32 of 0-9 * # A-D",
        ))
    }
}

pub fn check_text(text: &str) -> Result<(), RpcError> {
    if text.is_empty() || text.len() > MAX_BLOB_BYTES {
        return Err(RpcError::invalid_params(
            "text must be 1 byte to 4 KiB of UTF-8",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(to: &[&str]) -> CallParams {
        CallParams {
            to: to.iter().map(|s| s.to_string()).collect(),
            media: Media::Audio,
            group: None,
            client_state: None,
            headers: None,
        }
    }

    #[test]
    fn callee_rules() {
        assert!(call(&[]).validate("me", 16).is_err());
        assert!(call(&["me"]).validate("me", 16).is_err());
        assert!(call(&["a b"]).validate("me", 16).is_err());
        let c = call(&["a", "b", "a"]).validate("me", 16).unwrap();
        assert_eq!(c.to, ["a", "b"]);
        assert!(c.group);
        let c = call(&["a", "a"]).validate("me", 16).unwrap();
        assert!(!c.group, "duplicates dropped before the group default");
        let mut p = call(&["a", "b"]);
        p.group = Some(false);
        assert!(p.validate("me", 16).is_err());
        let mut p = call(&["a"]);
        p.group = Some(true);
        assert!(p.validate("me", 16).unwrap().group);
        assert!(call(&["a", "b", "c"]).validate("me", 3).is_err());
        assert!(call(&["a", "b"]).validate("me", 3).is_ok());
    }

    #[test]
    fn blobs_and_headers() {
        let mut p = call(&["a"]);
        p.client_state = Some("x".repeat(MAX_BLOB_BYTES));
        assert!(p.validate("me", 16).is_ok());
        let mut p = call(&["a"]);
        p.client_state = Some("é".repeat(MAX_BLOB_BYTES / 2 + 1));
        assert!(p.validate("me", 16).is_err(), "limit is in bytes of UTF-8");
        for (name, ok) in [
            ("X-Foo", true),
            ("x-foo", true),
            ("Foo", false),
            ("X-", false),
            ("X-a b", false),
        ] {
            let mut p = call(&["a"]);
            p.headers = Some([(name.to_string(), "v".to_string())].into());
            assert_eq!(p.validate("me", 16).is_ok(), ok, "{name}");
        }
    }

    #[test]
    fn digits_and_text() {
        assert!(check_digits("0123456789*#ABCD").is_ok());
        assert!(check_digits("").is_err());
        assert!(check_digits("E").is_err());
        assert!(check_digits("a").is_err());
        assert!(check_digits(&"1".repeat(32)).is_ok());
        assert!(check_digits(&"1".repeat(33)).is_err());
        assert!(check_text("hi").is_ok());
        assert!(check_text("").is_err());
        assert!(check_text(&"x".repeat(4097)).is_err());
    }
}
