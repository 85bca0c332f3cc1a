//! The `loadtest` binary: runs the scenario, prints the summary, writes the JSON report, and
//! exits non-zero when a verification fails or a threshold is breached.

use std::process::ExitCode;

use clap::Parser;
use loadtest::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: error: {e}");
            return ExitCode::from(2);
        }
    };
    let report_path = args.report.clone();
    let report = match rt.block_on(loadtest::run(args)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest: error: {e:#}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.table());
    if let Some(path) = report_path {
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, json) {
            eprintln!("loadtest: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
