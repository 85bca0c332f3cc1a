//! The `sfu` binary: `sfu serve` runs the server, `sfu token` prints a login token.

use std::process::ExitCode;

use clap::Parser;
use sfu::auth::{Auth, unix_now};
use sfu::config::{Cli, Command, ServeArgs, TokenArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Token(args) => token(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sfu: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let secret = args.secret()?;
    let token = match &args.kid {
        Some(kid) => sfu::auth::mint_with_kid(
            secret.as_bytes(),
            kid,
            &args.user,
            args.admin,
            args.ttl.0,
            unix_now(),
        ),
        None => Auth::new(secret.as_bytes()).mint(
            &args.user,
            args.name.as_deref(),
            args.admin,
            args.ttl.0,
            unix_now(),
        ),
    }
    .map_err(|e| anyhow::anyhow!("{e} (user {:?})", args.user))?;
    println!("{token}");
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = args.with_file()?.resolve()?;
    sfu::logging::init(cfg.log_format, &cfg.log_level);
    if cfg.dev {
        tracing::warn!(
            "DEV MODE: tokens are signed with the public secret \"devsecret\"; loopback only. \
             Never expose this server. Mint tokens with `sfu token <user> --dev`."
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = sfu::server::start(cfg).await?;
        let failure = tokio::select! {
            () = wait_for_signal() => None,
            reason = server.failed() => Some(reason),
        };
        tracing::info!("shutting down");
        server.shutdown();
        server.wait().await;
        // A failed component exits non-zero so an orchestrator restarts the server.
        match failure {
            Some(reason) => anyhow::bail!("stopped after a failure: {reason}"),
            None => Ok(()),
        }
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
