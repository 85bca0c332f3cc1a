//! The keys file (`--keys-file`): one `kid secret` pair per line, so secrets rotate without
//! downtime and several apps share a deployment, each with its own key id (TRTC's `sdkAppId`).
//! Blank lines and `#` comments are skipped. Reloaded on SIGHUP.

use std::collections::HashMap;

/// Key id → HS256 secret.
pub type KeySet = HashMap<String, Vec<u8>>;

/// Most keys one file may hold.
pub const MAX_KEYS: usize = 1000;
const MIN_SECRET_BYTES: usize = 16;

/// Parses a keys file; the error names the line.
pub fn parse_keys(text: &str) -> Result<KeySet, String> {
    let mut keys = KeySet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(kid), Some(secret), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("line {}: expected `kid secret`", n + 1));
        };
        let kid_ok = kid.len() <= 64
            && kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !kid_ok {
            return Err(format!("line {}: a kid is 1-64 of [A-Za-z0-9_.-]", n + 1));
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "line {}: the secret of {kid:?} is shorter than {MIN_SECRET_BYTES} bytes",
                n + 1
            ));
        }
        if keys
            .insert(kid.to_string(), secret.as_bytes().to_vec())
            .is_some()
        {
            return Err(format!("line {}: kid {kid:?} appears twice", n + 1));
        }
        if keys.len() > MAX_KEYS {
            return Err(format!("more than {MAX_KEYS} keys"));
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_clearly() {
        let k =
            parse_keys("# app keys\n\napp1 0123456789abcdef0123\n app-2.b  secret-of-16-bytes!\n")
                .unwrap();
        assert_eq!(k.len(), 2);
        assert_eq!(k["app1"], b"0123456789abcdef0123");
        assert!(parse_keys("app1").unwrap_err().contains("line 1"));
        assert!(parse_keys("a b c").unwrap_err().contains("kid secret"));
        assert!(parse_keys("app short").unwrap_err().contains("shorter"));
        assert!(
            parse_keys("bad/kid 0123456789abcdef")
                .unwrap_err()
                .contains("kid")
        );
        let dup = "a 0123456789abcdef\na 0123456789abcdef";
        assert!(parse_keys(dup).unwrap_err().contains("twice"));
    }
}
