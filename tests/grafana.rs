//! The Grafana dashboards are proven against a live deployment: two real `sfu` nodes in a
//! cluster on a real `redis-server`, a short
//! `loadtest`, a real Prometheus (Debian's `prometheus`, installed by scripts/setup.sh)
//! scraping it, and every panel's query evaluated through Prometheus' HTTP API: each must parse
//! and return data. Lint: valid JSON, unique panel ids, every metric named by a query exists in
//! docs/metrics.md and in the live `/metrics` output.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::Server;
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = root().join("grafana/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("grafana/dashboards") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
            out.push((path.display().to_string(), v));
        }
    }
    assert!(out.len() >= 2, "overview and call quality dashboards");
    out
}

/// Every (dashboard, panel title, expr).
fn queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (name, d) in dashboards() {
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap().to_string();
                out.push((name.clone(), p["title"].as_str().unwrap().to_string(), expr));
            }
        }
    }
    out
}

/// Metric names a query uses, as they appear in `/metrics` (e.g. `sfu_x_bucket`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        if (rest.starts_with("sfu_") || rest.starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.insert(rest[..len].to_string());
            i += len;
        } else {
            i += 1;
        }
    }
    names
}

fn family(name: &str) -> &str {
    for suffix in ["_bucket", "_count", "_sum"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return base;
        }
    }
    name
}

#[test]
fn dashboards_are_valid_with_unique_panel_ids_and_templates() {
    for (name, d) in dashboards() {
        let ids: Vec<u64> = d["panels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_u64().unwrap())
            .collect();
        let unique: BTreeSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{name}: duplicate panel ids");
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert!(
            vars.contains(&"datasource") && vars.contains(&"instance"),
            "{name}"
        );
        for p in d["panels"].as_array().unwrap() {
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{name}: {}",
                p["title"]
            );
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                assert!(
                    expr.contains("$instance"),
                    "{name}: {expr} ignores $instance"
                );
            }
        }
    }
}

#[test]
fn every_metric_a_query_names_is_documented() {
    let docs = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    for (name, title, expr) in queries() {
        for m in metric_names(&expr) {
            assert!(
                docs.contains(&format!("`{}`", family(&m))),
                "{name} / {title}: {m} is not in docs/metrics.md"
            );
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn prom_query(http: &reqwest::Client, base: &str, expr: &str) -> Value {
    http.get(format!("{base}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_returns_data_from_a_live_deployment() {
    let prometheus = which("prometheus").expect(
        "prometheus is not installed: run ./scripts/setup.sh (Debian package `prometheus`)",
    );
    // A cluster of two nodes, so the cluster row has data too.
    let redis = common::redis::RedisServer::start().await;
    let node = |id: &'static str| {
        let url = redis.url();
        async move {
            Server::start(&["--quality-interval", "1s", "--redis", &url, "--node-id", id]).await
        }
    };
    let (s, s2) = (node("a").await, node("b").await);

    let dir = std::env::temp_dir().join(format!("sfu-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: sfu\n    static_configs:\n      - targets: [\"{}\", \"{}\"]\n",
            s.metrics, s2.metrics
        ),
    )
    .unwrap();
    let port = free_port();
    let mut prom = tokio::process::Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start prometheus");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    // Traffic: a short video load test, and one signaling error.
    let report = dir.join("report.json");
    let status = tokio::process::Command::new(common::loadtest_bin())
        .arg("--url")
        .arg(format!("{},{}", s.ws_url(), s2.ws_url()))
        .args([
            "--calls",
            "2",
            "--media",
            "video",
            "--duration",
            "6s",
            "--quiet",
        ])
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "loadtest passed");
    let mut c = s.client().await;
    assert_eq!(c.error_code("ping", json!({})).await, 4001);

    // Prometheus up and scraping.
    let mut up = false;
    for _ in 0..100 {
        if let Ok(r) = http
            .get(format!("{base}/api/v1/query"))
            .query(&[("query", "up")])
            .send()
            .await
            && let Ok(v) = r.json::<Value>().await
            && v["data"]["result"][0]["value"][1] == "1"
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(up, "prometheus scrapes the sfu");
    tokio::time::sleep(Duration::from_secs(3)).await;

    let live = s.metrics_text().await + &s2.metrics_text().await;
    let mut failures = Vec::new();
    for (name, title, expr) in queries() {
        for m in metric_names(&expr) {
            if !live.contains(&m) {
                failures.push(format!("{name} / {title}: {m} not in live /metrics"));
            }
        }
        let q = expr
            .replace("$instance", ".*")
            .replace("$__rate_interval", "1m");
        let v = prom_query(&http, &base, &q).await;
        if v["status"] != "success" {
            failures.push(format!("{name} / {title}: {q}: {}", v["error"]));
        } else if v["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
            failures.push(format!("{name} / {title}: no data for {q}"));
        }
    }
    let _ = prom.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{failures:#?}");
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(bin))
        .find(|p| p.is_file())
}

#[test]
fn compose_files_use_only_settings_sfu_knows_and_scrape_their_nodes() {
    let help = std::process::Command::new(common::sfu_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for file in ["docker-compose.yml", "docker-compose.cluster.yml"] {
        let text = std::fs::read_to_string(root().join("grafana").join(file)).unwrap();
        let mut named = 0;
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let Some(key) = line.trim().split(':').next() else {
                continue;
            };
            if key.starts_with("SFU_") && key != "SFU_TURN_HOST" {
                named += 1;
                assert!(
                    help.contains(&format!("env: {key}")),
                    "{file}: {key} is not a setting of `sfu serve`"
                );
            }
        }
        assert!(named >= 5, "{file}: {named} settings read");
    }
    // Prometheus scrapes every node of the cluster file.
    let compose =
        std::fs::read_to_string(root().join("grafana/docker-compose.cluster.yml")).unwrap();
    let prom = std::fs::read_to_string(root().join("grafana/prometheus-cluster.yml")).unwrap();
    for node in ["sfu-a", "sfu-b"] {
        assert!(compose.contains(&format!("  {node}:\n")), "service {node}");
        assert!(compose.contains(&format!("SFU_NODE_ID: {node}")));
        assert!(prom.contains(&format!("\"{node}:9600\"")), "{node} scraped");
    }
    assert!(compose.contains("SFU_REDIS: redis://redis:6379/") && compose.contains("  redis:\n"));
}
