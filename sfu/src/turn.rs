//! TURN credentials for `login`'s `ice_servers`, in coturn's REST API scheme
//! (`use-auth-secret`, draft-uberti-behave-turn-rest): the username is `EXPIRY:USER` (unix
//! seconds), the credential base64(HMAC-SHA1(secret, username)). The TURN server checks both
//! with the shared secret alone: nothing to provision per user, and a leaked credential dies
//! at its expiry.

use std::time::Duration;

use anyhow::bail;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

/// Default lifetime of a credential (`--turn-ttl`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
const MAX_URLS: usize = 8;
const MAX_URL_BYTES: usize = 256;

/// `--turn-url`, `--turn-secret` and `--turn-ttl`, checked.
#[derive(Clone)]
pub struct TurnConfig {
    urls: Vec<String>,
    secret: String,
    ttl: Duration,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TurnConfig {
    /// `None` without URLs; an error for a malformed URL, URLs without a secret or a secret
    /// without URLs, or a TTL outside one minute to seven days.
    pub fn new(
        urls: Vec<String>,
        secret: Option<String>,
        ttl: Option<Duration>,
    ) -> anyhow::Result<Option<Self>> {
        let ttl = ttl.unwrap_or(DEFAULT_TTL);
        if !(Duration::from_secs(60)..=Duration::from_secs(7 * 24 * 3600)).contains(&ttl) {
            bail!("--turn-ttl must be between 1m and 7days");
        }
        let secret = match (urls.is_empty(), secret) {
            (true, None) => return Ok(None),
            (true, Some(_)) => bail!("--turn-secret is set but no --turn-url"),
            (false, None) => bail!("--turn-url needs --turn-secret (coturn's static-auth-secret)"),
            (false, Some(s)) if s.is_empty() => bail!("--turn-secret is empty"),
            (false, Some(s)) => s,
        };
        if urls.len() > MAX_URLS {
            bail!("at most {MAX_URLS} --turn-url");
        }
        for url in &urls {
            check_url(url)?;
        }
        Ok(Some(Self { urls, secret, ttl }))
    }

    /// The `ice_servers` of `user`'s login at `unix_now` (seconds).
    pub fn ice_servers(&self, user: &str, unix_now: u64) -> Vec<Value> {
        let (username, credential) = credentials(&self.secret, user, unix_now + self.ttl.as_secs());
        vec![json!({
            "urls": self.urls,
            "username": username,
            "credential": credential,
        })]
    }
}

/// The username and credential valid until `expiry` (unix seconds) for `user`.
pub fn credentials(secret: &str, user: &str, expiry: u64) -> (String, String) {
    let username = format!("{expiry}:{user}");
    // HMAC takes a key of any length: new_from_slice cannot fail here.
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()) else {
        return (username, String::new());
    };
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

/// A TURN or STUN URI (RFC 7065 / RFC 7064): `turn:`, `turns:` or `stun:`, a host, an
/// optional port and `?transport=udp|tcp`.
fn check_url(url: &str) -> anyhow::Result<()> {
    let bad = |why: &str| anyhow::anyhow!("--turn-url {url:?}: {why}");
    if url.len() > MAX_URL_BYTES || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("too long or contains spaces"));
    }
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(bad("expected turn:HOST[:PORT][?transport=udp|tcp]"));
    };
    if !matches!(scheme, "turn" | "turns" | "stun") {
        return Err(bad("the scheme must be turn, turns or stun"));
    }
    let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => (host, Some(port.strip_prefix(':').unwrap_or(port))),
            None => return Err(bad("unclosed [")),
        },
        None => match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        },
    };
    if host.is_empty() || host.contains(['/', '@', '[', ']']) {
        return Err(bad("no host"));
    }
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return Err(bad("bad port"));
    }
    match query {
        "" | "transport=udp" | "transport=tcp" => Ok(()),
        _ => Err(bad("the only query is transport=udp or transport=tcp")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// coturn's own check, done the way coturn does it (turnutils / `use-auth-secret`):
    /// `echo -n "$username" | openssl dgst -binary -sha1 -hmac "$secret" | base64`.
    #[test]
    fn credential_is_base64_hmac_sha1_of_the_expiring_username() {
        let (u, c) = credentials("north", "alice", 1_700_000_000);
        assert_eq!(u, "1700000000:alice");
        // Computed independently: printf '1700000000:alice' | openssl dgst -binary -sha1
        // -hmac north | base64
        assert_eq!(c, "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
        // RFC 2202 test case 2 (HMAC-SHA1, key "Jefe").
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }

    #[test]
    fn login_gets_one_server_entry_with_every_url_and_the_ttl() {
        let t = TurnConfig::new(
            vec![
                "turn:turn.example.com:3478?transport=udp".into(),
                "turns:turn.example.com:5349?transport=tcp".into(),
            ],
            Some("s3cret".into()),
            Some(Duration::from_secs(600)),
        )
        .unwrap()
        .unwrap();
        let v = t.ice_servers("bob", 1000);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["urls"].as_array().unwrap().len(), 2);
        assert_eq!(v[0]["username"], "1600:bob");
        assert_eq!(v[0]["credential"], credentials("s3cret", "bob", 1600).1);
        assert!(
            !format!("{t:?}").contains("s3cret"),
            "the secret is never logged"
        );
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        let new = |urls: &[&str], secret: Option<&str>| {
            TurnConfig::new(
                urls.iter().map(|u| u.to_string()).collect(),
                secret.map(String::from),
                None,
            )
        };
        assert!(new(&[], None).unwrap().is_none());
        let err = |urls: &[&str], secret: Option<&str>| new(urls, secret).unwrap_err().to_string();
        assert!(err(&["turn:h:3478"], None).contains("needs --turn-secret"));
        assert!(err(&[], Some("s")).contains("no --turn-url"));
        assert!(err(&["turn:h:3478"], Some("")).contains("empty"));
        assert!(err(&["http://h"], Some("s")).contains("scheme"));
        assert!(err(&["turn:"], Some("s")).contains("no host"));
        assert!(err(&["turn:h:99999"], Some("s")).contains("bad port"));
        assert!(err(&["turn:h:3478?transport=sctp"], Some("s")).contains("transport"));
        assert!(err(&["turn:h 1"], Some("s")).contains("spaces"));
        let ttl = TurnConfig::new(
            vec!["turn:h".into()],
            Some("s".into()),
            Some(Duration::ZERO),
        );
        assert!(ttl.unwrap_err().to_string().contains("--turn-ttl"));
        for ok in [
            "turn:h",
            "turn:10.0.0.1:3478",
            "turns:turn.example.com:5349?transport=tcp",
            "stun:stun.example.com:3478",
            "turn:[2001:db8::1]:3478?transport=udp",
        ] {
            assert!(new(&[ok], Some("s")).is_ok(), "{ok}");
        }
    }
}
