//! Tests of the CLI, config file and validation.
use super::*;

#[test]
fn dev_needs_nothing_else() {
    let c = ServeArgs {
        dev: true,
        ..Default::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(c.jwt_secret.as_deref(), Some(DEV_SECRET));
    assert_eq!(c.http, "127.0.0.1:7600".parse().unwrap());
    assert_eq!(c.metrics, "127.0.0.1:9600".parse().unwrap());
    assert_eq!(c.invite_timeout, Duration::from_secs(30));
}

#[test]
fn production_needs_a_real_secret() {
    assert!(ServeArgs::default().resolve().is_err());
    let short = ServeArgs {
        jwt_secret: Some("short".into()),
        ..Default::default()
    };
    assert!(short.resolve().is_err());
    let dev_secret = ServeArgs {
        jwt_secret: Some(DEV_SECRET.into()),
        ..Default::default()
    };
    assert!(dev_secret.resolve().is_err());
    let ok = ServeArgs {
        jwt_secret: Some("0123456789abcdef".into()),
        ..Default::default()
    };
    assert!(ok.resolve().is_ok());
}

#[test]
fn dev_refuses_public_binds() {
    let c = ServeArgs {
        dev: true,
        http: Some("0.0.0.0:7600".parse().unwrap()),
        ..Default::default()
    };
    assert!(c.resolve().is_err());
}

#[test]
fn file_fills_gaps_under_the_command_line() {
    let file: ServeArgs = toml::from_str(
        "dev = true\ninvite-timeout = \"5s\"\nmax-call-members = 4\nhttp = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let cli = ServeArgs {
        http: Some("127.0.0.1:2".parse().unwrap()),
        ..Default::default()
    };
    let c = cli.over(file).resolve().unwrap();
    assert!(c.dev);
    assert_eq!(c.invite_timeout, Duration::from_secs(5));
    assert_eq!(c.max_call_members, 4);
    assert_eq!(c.http, "127.0.0.1:2".parse().unwrap());
}

#[test]
fn bad_values_are_explained() {
    assert!(toml::from_str::<ServeArgs>("invite-timeout = \"soon\"").is_err());
    assert!(toml::from_str::<ServeArgs>("no-such-key = 1").is_err());
    let zero = ServeArgs {
        dev: true,
        invite_timeout: Some(Dur(Duration::ZERO)),
        ..Default::default()
    };
    assert!(zero.resolve().is_err());
    let hook = ServeArgs {
        dev: true,
        push_webhook: Some("ftp://x".into()),
        ..Default::default()
    };
    assert!(hook.resolve().is_err());
    let tick = |ms| ServeArgs {
        dev: true,
        media_tick: Some(Dur(Duration::from_millis(ms))),
        ..Default::default()
    };
    assert!(tick(60).resolve().is_err(), "a tick over 50ms is refused");
    assert_eq!(tick(0).resolve().unwrap().media_tick, Duration::ZERO);
    let default = ServeArgs {
        dev: true,
        ..Default::default()
    };
    let default = default.resolve().unwrap();
    assert_eq!(default.media_tick, Duration::from_millis(10));
    let window = |ms| ServeArgs {
        dev: true,
        media_batch_window: Some(Dur(Duration::from_millis(ms))),
        ..Default::default()
    };
    assert!(
        window(11).resolve().is_err(),
        "a window over 10ms is refused"
    );
    assert_eq!(
        window(0).resolve().unwrap().media_batch_window,
        Duration::ZERO
    );
    assert_eq!(default.media_batch_window, Duration::from_millis(1));
}

#[test]
fn cli_parses() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
    let cli = Cli::try_parse_from(["sfu", "serve", "--dev", "--invite-timeout", "2s"]).unwrap();
    match cli.command {
        Command::Serve(a) => assert_eq!(a.invite_timeout, Some(Dur(Duration::from_secs(2)))),
        _ => panic!("expected serve"),
    }
}

#[test]
fn cluster_settings_are_checked() {
    let with = |redis: Option<&str>, node: Option<&str>, spill: Option<u64>| ServeArgs {
        dev: true,
        redis: redis.map(String::from),
        node_id: node.map(String::from),
        spill_above: spill,
        ..Default::default()
    };
    let err = |a: ServeArgs| a.resolve().unwrap_err().to_string();
    assert!(err(with(Some("http://x"), Some("a"), None)).contains("redis://"));
    assert!(err(with(Some("redis://x/"), Some("a b"), None)).contains("--node-id"));
    assert!(err(with(None, Some("a"), Some(10))).contains("needs --redis"));
    let ok = with(Some("redis://127.0.0.1:6379/"), Some("a"), Some(10));
    assert_eq!(ok.resolve().unwrap().spill_above, Some(10));
    let toml: ServeArgs = toml::from_str("spill-above = 5").unwrap();
    assert_eq!(toml.spill_above, Some(5));
}

#[test]
fn downlink_estimation_is_off_unless_asked() {
    use clap::Parser;
    let dev = ServeArgs {
        dev: true,
        ..Default::default()
    };
    assert!(!dev.resolve().unwrap().bwe);
    let cli = Cli::try_parse_from(["sfu", "serve", "--dev", "--bwe", "true"]).unwrap();
    match cli.command {
        Command::Serve(a) => assert!(a.resolve().unwrap().bwe),
        _ => panic!("expected serve"),
    }
    let toml: ServeArgs = toml::from_str("bwe = true").unwrap();
    assert!(
        ServeArgs {
            dev: true,
            ..Default::default()
        }
        .over(toml)
        .resolve()
        .unwrap()
        .bwe
    );
    assert!(Cli::try_parse_from(["sfu", "serve", "--bwe", "maybe"]).is_err());
}
