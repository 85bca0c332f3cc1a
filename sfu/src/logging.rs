//! Logging setup: human-readable by default, JSON lines for production. Tokens and secrets are
//! never logged anywhere in the crate.

use clap::ValueEnum;
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Crates that log per packet (str0m's STUN parser warns on some attributes before any
/// integrity check): anyone on the internet could fill the logs through them, so below
/// `error` they are off unless `RUST_LOG` or `--log-level` names them.
const QUIET_CRATES: [&str; 4] = ["str0m", "is", "str0m_proto", "dimpl"];

/// The filter for `--log-level`: the level as given, plus `=error` for each quiet crate it
/// does not mention.
pub fn directives(level: &str) -> String {
    let mut d = level.to_string();
    for c in QUIET_CRATES {
        let named = level
            .split(',')
            .any(|part| part.split(['=', ':', '[']).next().map(str::trim) == Some(c));
        if !named {
            d.push_str(&format!(",{c}=error"));
        }
    }
    d
}

/// Installs the global subscriber; `RUST_LOG` overrides `level`. Logs go to stderr.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(directives(level)))
        .unwrap_or_else(|_| EnvFilter::new(directives("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_packet_crates_are_quiet_unless_named() {
        assert_eq!(
            directives("info"),
            "info,str0m=error,is=error,str0m_proto=error,dimpl=error"
        );
        let d = directives("debug,str0m=trace");
        assert!(d.starts_with("debug,str0m=trace,"));
        assert!(!d.contains("str0m=error"));
        assert!(d.contains("is=error"));
        assert!(EnvFilter::try_new(directives("warn")).is_ok());
    }
}
