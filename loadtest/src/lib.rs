//! `loadtest`: emulated SDK callers, end to end (signaling, ICE, DTLS, SRTP, real Opus),
//! against any `sfu` deployment, reporting what callers experience and failing when a caller
//! does not hear exactly who it should or a threshold is breached.
//!
//! - [`audio`]: each caller's tone (pre-encoded Opus loop) and the detection of tones;
//! - [`impair`]: loss, burst loss, delay and jitter on a caller's outgoing packets;
//! - [`caller`]: one virtual caller;
//! - [`plan`]: who calls whom and how each callee answers;
//! - [`report`]: aggregation, the summary table and the JSON report.

pub mod audio;
pub mod caller;
pub mod churn;
pub mod impair;
pub mod leg;
pub mod plan;
pub mod report;
pub mod signal;
mod verify;
pub mod video;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

use crate::impair::Impairment;
use crate::report::Report;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Pairs: each caller calls one callee.
    #[value(name = "1v1")]
    OneToOne,
    /// Rooms of `--group-size`: the first member calls the others.
    Group,
}

/// How callers' media reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    /// The server's UDP host candidate.
    Udp,
    /// ICE-TCP to the server's passive `tcp` candidate (RFC 6544), as a client whose network
    /// blocks UDP.
    Tcp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ViewArg {
    High,
    Low,
    Off,
}

impl ViewArg {
    pub fn as_str(self) -> &'static str {
        match self {
            ViewArg::High => "high",
            ViewArg::Low => "low",
            ViewArg::Off => "off",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MediaArg {
    Audio,
    Video,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 30s, 500ms)"))
}

fn rate(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches("/s")
        .parse()
        .map_err(|e| format!("{e} (write a rate like 20 or 20/s)"))?;
    if v > 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err("must be positive".into())
    }
}

fn share(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be between 0 and 1".into())
    }
}

/// The command line (DESIGN.md "CLI contract").
#[derive(Clone, Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Emulated SDK callers against an sfu deployment: real signaling, ICE, DTLS, SRTP and Opus, with verification"
)]
pub struct Args {
    /// Signaling URL of the deployment; several (repeated, or comma-separated) for a cluster:
    /// callers are spread over them, and each call's members are on different ones unless
    /// `--same-node`.
    #[arg(
        long = "url",
        default_value = "ws://127.0.0.1:7600/ws",
        value_delimiter = ',',
        num_args = 1..
    )]
    pub urls: Vec<String>,
    /// With several URLs: all members of a call on the same one (calls still spread).
    #[arg(long)]
    pub same_node: bool,
    /// Secret to mint callers' tokens with (the server's). Defaults to the dev secret.
    #[arg(long, env = "SFU_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// File of `user token` lines to use instead of minting (one caller per line).
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "1v1")]
    pub scenario: Scenario,
    /// Calls to place (pairs for 1v1, rooms for group).
    #[arg(long, default_value_t = 10)]
    pub calls: usize,
    /// Members per group call (2..16).
    #[arg(long, default_value_t = 4)]
    pub group_size: usize,
    #[arg(long, value_enum, default_value = "audio")]
    pub media: MediaArg,
    /// Video layers each publisher sends: 1 (one stream), or 2-3 simulcast layers of distinct
    /// sizes (the server forwards each receiver one).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub simulcast: u8,
    /// Which of every other member's video callers ask for (`subscribe`): high, low or off.
    #[arg(long, value_enum, default_value = "high")]
    pub view: ViewArg,
    /// Share of callers that make the `--view` choice (the others keep high).
    #[arg(long, default_value_t = 1.0, value_parser = share)]
    pub view_share: f64,
    /// Emulated downlink capacity (kbit/s) of `--capped` callers: what arrives beyond it is
    /// dropped as a bottleneck would.
    #[arg(long, value_name = "KBPS")]
    pub downlink_kbps: Option<u32>,
    /// Callers whose downlink is capped (the last callee of the first calls).
    #[arg(long, default_value_t = 1)]
    pub capped: usize,
    /// Media over UDP, or over ICE-TCP (checks that clients behind UDP-blocking firewalls
    /// connect; the server must run with ICE-TCP on, its default).
    #[arg(long, value_enum, default_value = "udp")]
    pub transport: TransportArg,
    /// Media time per connected call.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub duration: Duration,
    /// Calls started per second (`20` or `20/s`).
    #[arg(long, default_value = "10", value_parser = rate)]
    pub ramp: f64,
    /// Share of callees that reject.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub reject: f64,
    /// Share of callees that never answer (the server's invite timeout ends those calls).
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub no_answer: f64,
    /// Share of 1v1 calls placed to a callee who is already in a call.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub busy: f64,
    /// Loss on each caller's outgoing packets, 0..1.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub loss: f64,
    /// Mean loss burst length in packets (1 = independent losses).
    #[arg(long, default_value_t = 1.0)]
    pub burst: f64,
    /// Random extra delay 0..JITTER on outgoing packets.
    #[arg(long, default_value = "0ms", value_parser = duration)]
    pub jitter: Duration,
    /// Fixed extra delay on outgoing packets.
    #[arg(long, default_value = "0ms", value_parser = duration)]
    pub delay: Duration,
    /// Every this often, each connected caller mutes its microphone for 2 s (0 = never).
    #[arg(long, default_value = "0s", value_parser = duration)]
    pub mute_every: Duration,
    /// Every this often, each connected caller puts the call on hold for 2 s (0 = never).
    #[arg(long, default_value = "0s", value_parser = duration)]
    pub hold_every: Duration,
    /// Every this often, each connected caller drops its signaling socket (no close frame, as a
    /// lost network does), logs in again on a new one and re-offers a new media leg (0 = never).
    #[arg(long, default_value = "0s", value_parser = duration)]
    pub reconnect_every: Duration,
    /// Every this often, each connected caller re-offers a new media leg on the same socket, as
    /// after an ICE restart (0 = never).
    #[arg(long, default_value = "0s", value_parser = duration)]
    pub reoffer_every: Duration,
    /// Share of calls in which one member is killed mid-call (sockets dropped, no hangup, never
    /// back); the others must have heard it before and go on (or see the call end).
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub kill: f64,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Fail if the overall loss is above this (0..1).
    #[arg(long)]
    pub max_loss: Option<f64>,
    /// Fail if the median up or down MOS is below this.
    #[arg(long)]
    pub min_mos: Option<f64>,
    /// Fail if the 95th percentile of call setup (call to accepted) is above this, in ms.
    #[arg(long)]
    pub max_setup_p95: Option<f64>,
    /// Prefix of the generated user ids (run several loadtests against one server).
    #[arg(long, default_value = "lt")]
    pub prefix: String,
    /// Tokio worker threads (1 = measure what one core emulates).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Testing the verifier: also expect a peer that is not in the call.
    #[arg(long, hide = true)]
    pub expect_phantom_peer: bool,
    /// No progress bar (it is off anyway when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the load test and returns its judged report.
pub async fn run(args: Args) -> anyhow::Result<Report> {
    let planned = plan::plan(&args)?;
    let epoch = Instant::now();
    let shared = Arc::new(caller::Shared {
        urls: args.urls.clone(),
        video: args.media == MediaArg::Video,
        tcp: args.transport == TransportArg::Tcp,
        simulcast: usize::from(args.simulcast),
        talk_for: args.duration,
        wait: args.duration + Duration::from_secs(40),
        impairment: Impairment {
            loss: args.loss,
            burst: args.burst,
            delay: args.delay,
            jitter: args.jitter,
        },
        epoch,
        slots: plan::MAX_SLOTS,
        mute_every: args.mute_every,
        hold_every: args.hold_every,
        reconnect_every: args.reconnect_every,
        reoffer_every: args.reoffer_every,
    });
    let bar = (!args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let bar = indicatif::ProgressBar::new(planned.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} callers done {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut tasks = Vec::with_capacity(planned.len());
    for p in planned {
        tasks.push(tokio::spawn(caller::run(shared.clone(), p)));
    }
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok(r) => results.push(r),
            Err(e) => results.push(report::CallerResult {
                user: "?".into(),
                outcome: "failed".into(),
                errors: vec![format!("caller task: {e}")],
                ..Default::default()
            }),
        }
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let scenario = match args.scenario {
        Scenario::OneToOne => "1v1",
        Scenario::Group => "group",
    };
    let media = match args.media {
        MediaArg::Audio => "audio",
        MediaArg::Video => "video",
    };
    let mut report = Report::build(scenario, media, epoch.elapsed().as_secs_f64(), &results);
    report.judge(args.max_loss, args.min_mos, args.max_setup_p95);
    Ok(report)
}
