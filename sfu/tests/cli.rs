//! The `sfu` command line as a user runs it: `sfu token`, `sfu serve` settings from flags,
//! environment and config file, and clear errors for bad settings.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sfu::auth::{Auth, DEV_SECRET, unix_now};

fn sfu() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sfu"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SFU_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

fn run(c: &mut Command) -> (bool, String, String) {
    let out = c.output().expect("run sfu");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `sfu serve` with `args`, waits for it to listen, returns its stderr so far.
fn serve_until_listening(c: &mut Command) -> String {
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("sfu listening") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("sfu listening"), "did not start:\n{seen}");
    seen
}

#[test]
fn token_for_the_dev_server() {
    let (ok, out, err) = run(sfu().args(["token", "alice", "--dev", "--name", "Alice A."]));
    assert!(ok, "{err}");
    let token = out.trim();
    let claims = Auth::new(DEV_SECRET.as_bytes())
        .verify(token, unix_now())
        .unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.name.as_deref(), Some("Alice A."));
    let ttl = claims.exp - unix_now();
    assert!((3590..=3600).contains(&ttl), "default ttl 1h, got {ttl}");
}

#[test]
fn token_with_secret_from_env_and_ttl() {
    let secret = "a-long-production-secret";
    let (ok, out, err) = run(sfu()
        .args(["token", "bob", "--ttl", "2m", "--admin"])
        .env("SFU_JWT_SECRET", secret));
    assert!(ok, "{err}");
    let claims = Auth::new(secret.as_bytes())
        .verify(out.trim(), unix_now())
        .unwrap();
    assert!(claims.admin);
    assert!(claims.exp - unix_now() <= 120);
    assert!(
        Auth::new(DEV_SECRET.as_bytes())
            .verify(out.trim(), unix_now())
            .is_err()
    );
}

#[test]
fn token_errors_are_clear() {
    let (ok, _, err) = run(sfu().args(["token", "alice"]));
    assert!(!ok);
    assert!(err.contains("--jwt-secret"), "{err}");
    let (ok, _, err) = run(sfu().args(["token", "not valid", "--dev"]));
    assert!(!ok);
    assert!(err.contains("[A-Za-z0-9_-]"), "{err}");
    let (ok, _, err) = run(sfu().args(["token", "alice", "--dev", "--ttl", "soon"]));
    assert!(!ok);
    assert!(err.contains("30s"), "{err}");
}

#[test]
fn serve_refuses_to_start_without_a_secret() {
    let (ok, _, err) = run(sfu().args(["serve"]));
    assert!(!ok);
    assert!(
        err.contains("SFU_JWT_SECRET") && err.contains("--dev"),
        "{err}"
    );
    let (ok, _, err) = run(sfu().args(["serve", "--jwt-secret", "short"]));
    assert!(!ok);
    assert!(err.contains("16 bytes"), "{err}");
}

#[test]
fn dev_mode_is_loud_and_loopback_only() {
    let err = serve_until_listening(sfu().args([
        "serve",
        "--dev",
        "--http",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]));
    assert!(err.contains("DEV MODE"), "{err}");
    assert!(err.contains("devsecret"), "{err}");
    let (ok, _, err) = run(sfu().args(["serve", "--dev", "--http", "0.0.0.0:0"]));
    assert!(!ok);
    assert!(err.contains("loopback"), "{err}");
}

#[test]
fn settings_from_env_and_config_file() {
    let dir = std::env::temp_dir().join(format!("sfu-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sfu.toml");
    std::fs::write(
        &file,
        "jwt-secret = \"from-the-config-file-0123\"\nhttp = \"127.0.0.1:0\"\n\
         invite-timeout = \"20s\"\nlog-format = \"json\"\n",
    )
    .unwrap();
    let err = serve_until_listening(
        sfu()
            .args(["serve", "--config"])
            .arg(&file)
            .env("SFU_METRICS", "127.0.0.1:0"),
    );
    // JSON logs were picked from the file.
    assert!(
        err.lines()
            .any(|l| l.starts_with('{') && l.contains("sfu listening")),
        "{err}"
    );
    assert!(!err.contains("from-the-config-file"), "secret logged");

    std::fs::write(&file, "no-such-setting = 1\n").unwrap();
    let (ok, _, err) = run(sfu().args(["serve", "--config"]).arg(&file));
    assert!(!ok);
    assert!(
        err.contains("sfu.toml") && err.contains("no-such-setting"),
        "{err}"
    );
    let (ok, _, err) = run(sfu().args(["serve", "--config", "/nonexistent/sfu.toml"]));
    assert!(!ok);
    assert!(err.contains("cannot read config file"), "{err}");
    let (ok, _, err) = run(sfu()
        .args(["serve", "--dev"])
        .env("SFU_INVITE_TIMEOUT", "0s"));
    assert!(!ok);
    assert!(err.contains("--invite-timeout"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_lists_every_flag_with_its_env_var() {
    let (ok, out, _) = run(sfu().args(["serve", "--help"]));
    assert!(ok);
    for flag in [
        "--dev",
        "--http",
        "--metrics",
        "--jwt-secret",
        "--invite-timeout",
        "--reconnect-grace",
        "--push-webhook",
        "--max-frame-bytes",
        "--max-requests-per-sec",
        "--max-call-members",
        "--max-calls-per-user",
        "--ws-idle-timeout",
        "--log-format",
        "--config",
    ] {
        assert!(out.contains(flag), "{flag} missing from help");
        let env = format!(
            "SFU_{}",
            flag.trim_start_matches("--")
                .replace('-', "_")
                .to_uppercase()
        );
        assert!(out.contains(&env), "{env} missing from help");
    }
}

#[test]
fn port_in_use_is_reported() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let (ok, _, err) = run(sfu().args(["serve", "--dev", "--http", &addr]));
    assert!(!ok);
    assert!(err.contains("cannot listen on --http"), "{err}");
}

#[test]
fn ice_tcp_and_turn_settings() {
    // ICE-TCP on by default, on the worker's UDP port number when free; off on request.
    let listening = |extra: &[&str]| {
        let err = serve_until_listening(
            sfu()
                .args([
                    "serve",
                    "--dev",
                    "--http",
                    "127.0.0.1:0",
                    "--metrics",
                    "127.0.0.1:0",
                ])
                .args(["--udp-port", "0", "--workers", "1", "--log-format", "json"])
                .args(extra),
        );
        let line = err.lines().find(|l| l.contains("sfu listening")).unwrap();
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        (
            v["media"].as_str().unwrap().to_string(),
            v["ice_tcp"].as_str().unwrap().to_string(),
        )
    };
    let (udp, tcp) = listening(&[]);
    assert!(
        udp.starts_with("127.0.0.1:") && tcp.starts_with("127.0.0.1:"),
        "{udp} {tcp}"
    );
    let (_, tcp) = listening(&["--ice-tcp", "false"]);
    assert_eq!(tcp, "", "ICE-TCP off");
    // A TCP port already taken is a clear start-up error.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let (ok, _, err) = run(sfu().args([
        "serve",
        "--dev",
        "--http",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--udp-port",
        "0",
        "--workers",
        "1",
        "--tcp-port",
        &port,
    ]));
    assert!(!ok);
    assert!(err.contains("cannot bind ICE-TCP listener"), "{err}");
    // TURN: URLs need the secret, and bad URLs say why.
    let (ok, _, err) = run(sfu()
        .args(["serve", "--dev"])
        .env("SFU_TURN_URLS", "turn:turn.example.com:3478"));
    assert!(!ok);
    assert!(err.contains("--turn-secret"), "{err}");
    let (ok, _, err) = run(sfu().args([
        "serve",
        "--dev",
        "--turn-url",
        "http://turn.example.com",
        "--turn-secret",
        "s",
    ]));
    assert!(!ok);
    assert!(err.contains("scheme"), "{err}");
    let (ok, out, _) = run(sfu().args(["serve", "--help"]));
    assert!(ok);
    for flag in [
        "--ice-tcp",
        "--tcp-port",
        "--turn-url",
        "--turn-secret",
        "--turn-ttl",
    ] {
        assert!(out.contains(flag), "{flag} missing from help");
    }
    assert!(out.contains("SFU_TURN_URLS") && out.contains("SFU_TURN_SECRET"));
}
