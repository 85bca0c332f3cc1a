//! The browser demo in real Chromium (Debian's `chromium`, driven by playwright-core from
//! tests/browser/demo.mjs; both installed by scripts/setup.sh): 1v1 audio+video between two
//! browser contexts and a group of three through the real server, where alice publishes
//! simulcast and carol asks for her low layer, off, then high (getStats frame widths: 320 and
//! 640 px). Proves interoperability with libwebrtc. Screenshots land in
//! target/browser-artifacts/.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_calls_work_in_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run ./scripts/setup.sh"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists()
            || std::env::var_os("CHROMIUM").is_some(),
        "chromium is not installed: run ./scripts/setup.sh (Debian package `chromium`)"
    );
    let s = Server::start(&["--quality-interval", "2s"]).await;
    let artifacts = root.join("target/browser-artifacts");
    let out = tokio::process::Command::new("node")
        .arg(browser_dir.join("demo.mjs"))
        .arg(format!("http://{}", s.http))
        .arg(&artifacts)
        .current_dir(&browser_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("node is not installed: run ./scripts/setup.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "browser checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all browser checks passed"));
    assert!(artifacts.join("call-1v1.png").is_file(), "screenshot saved");
    assert!(artifacts.join("call-group.png").is_file());
    assert!(
        s.metric("sfu_simulcast_layer_switches_total").await >= 3.0,
        "carol's low, off and high were layer switches"
    );
}
