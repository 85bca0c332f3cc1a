//! The soak's short version: `scripts/soak.sh 60s` (debug binaries) against one real `sfu`:
//! loadtest waves with churn (mute and hold toggles, reconnects, re-offers, members killed
//! mid-call), every wave verified, then RSS within 10 % of its value after warm-up, every gauge
//! back to 0, no panic in the log. The 30-minute run is recorded in docs/perf.md.

use std::process::Command;

#[test]
fn sixty_seconds_of_churn_leak_nothing() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/soak.sh"))
        .arg("60s")
        .env("SOAK_PROFILE", "debug")
        .output()
        .expect("run scripts/soak.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("soak: PASS"),
        "soak failed:\n{stdout}\n{stderr}"
    );
    // The churn really happened.
    let summary = stdout
        .lines()
        .find(|l| l.contains("waves in"))
        .unwrap_or("");
    let count = |what: &str| -> u64 {
        summary
            .split(", ")
            .find(|p| p.ends_with(what))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("reconnects") > 10, "{summary}");
    assert!(count("re-offers") > 10, "{summary}");
    assert!(count("mute/hold toggles") > 10, "{summary}");
    assert!(count("killed") > 0, "{summary}");
    assert!(summary.ends_with("failed waves 0"), "{summary}");
}
