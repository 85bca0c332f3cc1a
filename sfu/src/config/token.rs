//! `sfu token` flags: mint a login token for a user (dev or with the server's secret).

use anyhow::bail;
use clap::Args;

use super::Dur;
use crate::auth::DEV_SECRET;

/// `sfu token` flags.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id ([A-Za-z0-9_-]{1,64}).
    pub user: String,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub ttl: Dur,
    /// Secret to sign with (same as the server's).
    #[arg(long, env = "SFU_JWT_SECRET", value_name = "S", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Sign with the dev secret, for a server started with `sfu serve --dev`.
    #[arg(long)]
    pub dev: bool,
    /// Grant the admin API (call records).
    #[arg(long)]
    pub admin: bool,
    /// Name this key id in the token's header: sign with that kid's secret from the server's
    /// keys file (passed as --jwt-secret).
    #[arg(long, value_name = "KID")]
    pub kid: Option<String>,
}

impl TokenArgs {
    pub fn secret(&self) -> anyhow::Result<String> {
        match (&self.jwt_secret, self.dev) {
            (Some(s), _) => Ok(s.clone()),
            (None, true) => Ok(DEV_SECRET.to_string()),
            (None, false) => bail!(
                "no secret: pass --jwt-secret (or set SFU_JWT_SECRET) to match the server, \
                 or --dev for a server started with `sfu serve --dev`"
            ),
        }
    }
}
