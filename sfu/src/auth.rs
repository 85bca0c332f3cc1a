//! Login tokens: HS256 JWTs with `sub`, `exp` and optional `name` (PROTOCOL.md
//! "Authentication"). Minting and verification take the wall-clock time as an argument so the
//! rules, expiry included, are tested without a clock.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

/// The secret `--dev` uses. Never for a deployment anyone else can reach.
pub const DEV_SECRET: &str = "devsecret";
/// Longest token we try to decode; real ones are a few hundred bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest display name.
pub const MAX_NAME_CHARS: usize = 128;

/// The claims we read and write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not valid before this time (Unix seconds), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Grants the admin HTTP API; never needed for calls.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// Why a token was refused. Messages are safe to send to the client and to log: they never
/// contain the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token is too large")]
    TooLarge,
    #[error("token signature or algorithm is not valid for this server")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token lacks a required claim (sub, exp)")]
    MissingClaim,
    #[error("token subject must match [A-Za-z0-9_-]{{1,64}}")]
    BadSubject,
    #[error("token name is longer than 128 characters")]
    BadName,
    #[error("token names a key id (kid) this server does not have")]
    UnknownKid,
    #[error("token has no key id (kid) and this server has no default secret")]
    NeedsKid,
    #[error("no secret to sign with")]
    NoKey,
}

/// True when `user` is a valid user id: `[A-Za-z0-9_-]{1,64}`.
pub fn valid_user_id(user: &str) -> bool {
    (1..=64).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A token for `user` signed with `secret` and naming `kid` (as an app with a key in the keys
/// file mints it); `sfu token --kid` prints one.
pub fn mint_with_kid(
    secret: &[u8],
    kid: &str,
    user: &str,
    admin: bool,
    ttl: Duration,
    now: u64,
) -> Result<String, AuthError> {
    let claims = Claims::new(user, None, admin, ttl, now)?;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret))
        .map_err(|_| AuthError::Malformed)
}

impl Claims {
    /// The claims of a token for `user`, valid for `ttl` from `now`; checks user and name.
    fn new(
        user: &str,
        name: Option<&str>,
        admin: bool,
        ttl: Duration,
        now: u64,
    ) -> Result<Self, AuthError> {
        if !valid_user_id(user) {
            return Err(AuthError::BadSubject);
        }
        if name.is_some_and(|n| n.chars().count() > MAX_NAME_CHARS) {
            return Err(AuthError::BadName);
        }
        Ok(Claims {
            sub: user.to_string(),
            exp: now.saturating_add(ttl.as_secs()),
            iat: Some(now),
            nbf: None,
            name: name.map(str::to_string),
            admin,
        })
    }
}

/// Seconds since the Unix epoch, for the shell to pass in.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Tolerance for a token minted on a clock slightly ahead of ours.
const NBF_LEEWAY_SECS: u64 = 5;

mod keys;
pub use keys::{KeySet, parse_keys};

/// Signs and verifies tokens: with the main secret (`--jwt-secret`) for tokens without a `kid`,
/// and with the keys file's secret of their `kid` otherwise.
pub struct Auth {
    encoding: Option<EncodingKey>,
    default: Option<DecodingKey>,
    kids: RwLock<HashMap<String, DecodingKey>>,
    validation: Validation,
}

impl Auth {
    pub fn new(secret: &[u8]) -> Self {
        Self::with_keys(Some(secret), KeySet::new())
    }

    /// The main secret (if any) and a set of `kid` keys.
    pub fn with_keys(secret: Option<&[u8]>, kids: KeySet) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked by `verify` against the time it is given.
        validation.validate_exp = false;
        validation.required_spec_claims = ["exp", "sub"].iter().map(|s| s.to_string()).collect();
        let auth = Self {
            encoding: secret.map(EncodingKey::from_secret),
            default: secret.map(DecodingKey::from_secret),
            kids: RwLock::new(HashMap::new()),
            validation,
        };
        auth.set_keys(kids);
        auth
    }

    /// Replaces the `kid` keys (a reloaded keys file); tokens of removed kids stop working.
    pub fn set_keys(&self, kids: KeySet) {
        let keys = kids
            .into_iter()
            .map(|(kid, secret)| (kid, DecodingKey::from_secret(&secret)))
            .collect();
        *self.kids.write().unwrap_or_else(PoisonError::into_inner) = keys;
    }

    /// The key that verifies a token with this `kid` (or without one).
    fn key_for(&self, kid: Option<&str>) -> Result<DecodingKey, AuthError> {
        match kid {
            None => self.default.clone().ok_or(AuthError::NeedsKid),
            Some(kid) => self
                .kids
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(kid)
                .cloned()
                .ok_or(AuthError::UnknownKid),
        }
    }

    /// Mints a token for `user` valid for `ttl` from `now` (Unix seconds).
    pub fn mint(
        &self,
        user: &str,
        name: Option<&str>,
        admin: bool,
        ttl: Duration,
        now: u64,
    ) -> Result<String, AuthError> {
        let claims = Claims::new(user, name, admin, ttl, now)?;
        let key = self.encoding.as_ref().ok_or(AuthError::NoKey)?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(|_| AuthError::Malformed)
    }

    /// Verifies `token` at `now` (Unix seconds): HS256 only, signature, `exp` > now, `nbf` ≤ now
    /// (5 s leeway), `sub` syntax, name length.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let key = self.key_for(header.kid.as_deref())?;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation).map_err(|e| {
            match e.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    AuthError::BadSignature
                }
                ErrorKind::MissingRequiredClaim(_) => AuthError::MissingClaim,
                ErrorKind::Json(_) => AuthError::MissingClaim,
                _ => AuthError::Malformed,
            }
        })?;
        let claims = data.claims;
        if claims.exp <= now {
            return Err(AuthError::Expired);
        }
        // Clocks of the app's backend and ours may differ by a little.
        if claims.nbf.is_some_and(|nbf| nbf > now + NBF_LEEWAY_SECS) {
            return Err(AuthError::NotYetValid);
        }
        if !valid_user_id(&claims.sub) {
            return Err(AuthError::BadSubject);
        }
        if claims
            .name
            .as_deref()
            .is_some_and(|n| n.chars().count() > MAX_NAME_CHARS)
        {
            return Err(AuthError::BadName);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn auth() -> Auth {
        Auth::new(b"a-test-secret-of-some-length")
    }

    #[test]
    fn round_trip() {
        let a = auth();
        let t = a
            .mint("alice", Some("Alice"), false, Duration::from_secs(60), NOW)
            .unwrap();
        let c = a.verify(&t, NOW).unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!(c.name.as_deref(), Some("Alice"));
        assert_eq!(c.exp, NOW + 60);
        assert!(!c.admin);
    }

    #[test]
    fn expiry_boundary() {
        let a = auth();
        let t = a
            .mint("alice", None, false, Duration::from_secs(60), NOW)
            .unwrap();
        assert!(a.verify(&t, NOW + 59).is_ok());
        assert_eq!(a.verify(&t, NOW + 60), Err(AuthError::Expired));
    }

    #[test]
    fn wrong_secret_and_garbage() {
        let t = Auth::new(b"other-secret-xxxxxxxx")
            .mint("alice", None, false, Duration::from_secs(60), NOW)
            .unwrap();
        assert_eq!(auth().verify(&t, NOW), Err(AuthError::BadSignature));
        assert_eq!(auth().verify("garbage", NOW), Err(AuthError::Malformed));
        assert_eq!(auth().verify("", NOW), Err(AuthError::Malformed));
        assert_eq!(auth().verify("a.b.c", NOW), Err(AuthError::Malformed));
        let huge = "x".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(auth().verify(&huge, NOW), Err(AuthError::TooLarge));
    }

    #[test]
    fn other_algorithms_are_refused() {
        let key = EncodingKey::from_secret(b"a-test-secret-of-some-length");
        let claims = Claims {
            sub: "alice".into(),
            exp: NOW + 60,
            iat: None,
            nbf: None,
            name: None,
            admin: false,
        };
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &key).unwrap();
        assert_eq!(auth().verify(&t, NOW), Err(AuthError::BadSignature));
        // alg "none" with an empty signature.
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(format!(r#"{{"sub":"alice","exp":{}}}"#, NOW + 60).as_bytes())
        );
        assert!(auth().verify(&none, NOW).is_err());
    }

    #[test]
    fn claims_rules() {
        let key = EncodingKey::from_secret(b"a-test-secret-of-some-length");
        let sign = |v: serde_json::Value| {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &v, &key).unwrap()
        };
        let a = auth();
        assert_eq!(
            a.verify(&sign(serde_json::json!({"sub": "alice"})), NOW),
            Err(AuthError::MissingClaim)
        );
        assert_eq!(
            a.verify(&sign(serde_json::json!({"exp": NOW + 60})), NOW),
            Err(AuthError::MissingClaim)
        );
        assert_eq!(
            a.verify(
                &sign(serde_json::json!({"sub": "al ice", "exp": NOW + 60})),
                NOW
            ),
            Err(AuthError::BadSubject)
        );
        assert_eq!(
            a.verify(
                &sign(serde_json::json!({"sub": "x".repeat(65), "exp": NOW + 60})),
                NOW
            ),
            Err(AuthError::BadSubject)
        );
        assert_eq!(
            a.verify(
                &sign(serde_json::json!({"sub": "bob", "exp": NOW + 60, "name": "n".repeat(129)})),
                NOW
            ),
            Err(AuthError::BadName)
        );
        assert!(
            a.verify(
                &sign(serde_json::json!({"sub": "b_o-B9", "exp": NOW + 60, "admin": true})),
                NOW
            )
            .unwrap()
            .admin
        );
    }

    #[test]
    fn user_ids() {
        assert!(valid_user_id("a"));
        assert!(valid_user_id(&"Z".repeat(64)));
        assert!(!valid_user_id(""));
        assert!(!valid_user_id(&"Z".repeat(65)));
        assert!(!valid_user_id("a.b"));
        assert!(!valid_user_id("é"));
    }

    fn b64(bytes: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..=chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn not_before_is_honoured() {
        let secret = b"a-test-secret-of-some-length";
        let token = |nbf: u64| {
            let claims = Claims {
                sub: "alice".into(),
                exp: NOW + 3600,
                iat: Some(NOW),
                nbf: Some(nbf),
                name: None,
                admin: false,
            };
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(secret),
            )
            .unwrap()
        };
        let a = Auth::new(secret);
        assert_eq!(a.verify(&token(NOW + 60), NOW), Err(AuthError::NotYetValid));
        assert!(a.verify(&token(NOW + 5), NOW).is_ok(), "within the leeway");
        assert!(a.verify(&token(NOW - 60), NOW).is_ok());
        assert!(a.verify(&token(NOW + 60), NOW + 60).is_ok());
    }

    #[test]
    fn tokens_are_verified_by_their_kid_and_keys_rotate() {
        let mut keys = KeySet::new();
        keys.insert("app1".into(), b"secret-of-app-one-123".to_vec());
        let a = Auth::with_keys(None, keys);
        let t1 = mint_with_kid(
            b"secret-of-app-one-123",
            "app1",
            "alice",
            false,
            Duration::from_secs(60),
            NOW,
        )
        .unwrap();
        assert_eq!(a.verify(&t1, NOW).unwrap().sub, "alice");
        let t2 = mint_with_kid(
            b"secret-of-app-two-456",
            "app2",
            "bob",
            false,
            Duration::from_secs(60),
            NOW,
        )
        .unwrap();
        assert_eq!(a.verify(&t2, NOW), Err(AuthError::UnknownKid));
        let forged = mint_with_kid(
            b"not-the-secret-of-app1",
            "app1",
            "eve",
            false,
            Duration::from_secs(60),
            NOW,
        )
        .unwrap();
        assert_eq!(a.verify(&forged, NOW), Err(AuthError::BadSignature));
        let plain = auth()
            .mint("carol", None, false, Duration::from_secs(60), NOW)
            .unwrap();
        assert_eq!(a.verify(&plain, NOW), Err(AuthError::NeedsKid));
        // Rotation: app2 in, app1 out.
        let mut keys = KeySet::new();
        keys.insert("app2".into(), b"secret-of-app-two-456".to_vec());
        a.set_keys(keys);
        assert!(a.verify(&t2, NOW).is_ok());
        assert_eq!(a.verify(&t1, NOW), Err(AuthError::UnknownKid));
    }
}
