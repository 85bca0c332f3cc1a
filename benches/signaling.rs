//! Call-model and framing throughput: how many call lifecycles and frames per second one core
//! handles. Run: `cargo bench --bench signaling`.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use sfu::protocol::{Method, Outbound, parse_frame};
use sfu::signaling::{CallModel, ConnId, ModelConfig};

/// A model with `n` logged-in users u0..u{n-1} on sockets 1..=n.
fn model_with_users(n: u64) -> CallModel {
    let mut m = CallModel::new(ModelConfig {
        max_call_members: 64,
        ..ModelConfig::default()
    });
    let now = Instant::now();
    for i in 0..n {
        m.login(now, ConnId(i + 1), json!(0), format!("u{i}"));
    }
    while m.poll_output().is_some() {}
    m
}

/// One call from u0 to u1..u{size-1}: placed, accepted by everyone, hung up by everyone.
fn lifecycle(m: &mut CallModel, now: Instant, size: u64) -> usize {
    let to: Vec<String> = (1..size).map(|i| format!("u{i}")).collect();
    m.request(
        now,
        ConnId(1),
        json!(1),
        Method::Call,
        json!({"to": to, "media": "audio"}),
    );
    let mut call_id = String::new();
    let mut frames = 0;
    while let Some(o) = m.poll_output() {
        frames += 1;
        if let sfu::signaling::Output::Send {
            msg: Outbound::Response { result: Ok(r), .. },
            ..
        } = o
            && let Some(id) = r["call_id"].as_str()
        {
            call_id = id.to_string();
        }
    }
    for i in 1..size {
        m.request(
            now,
            ConnId(i + 1),
            json!(2),
            Method::Accept,
            json!({ "call_id": call_id }),
        );
    }
    for i in 0..size {
        m.request(
            now,
            ConnId(i + 1),
            json!(3),
            Method::Hangup,
            json!({ "call_id": call_id }),
        );
    }
    while m.poll_output().is_some() {
        frames += 1;
    }
    frames
}

fn call_lifecycles(c: &mut Criterion) {
    let mut g = c.benchmark_group("call_lifecycle");
    g.measurement_time(Duration::from_secs(5));
    for size in [2u64, 4, 8, 16] {
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            let mut m = model_with_users(size);
            // Time moves so that stale invite deadlines are popped as in a real server.
            let mut now = Instant::now();
            b.iter(|| {
                now += Duration::from_millis(1);
                lifecycle(&mut m, now, size)
            });
        });
    }
    g.finish();
}

fn framing(c: &mut Criterion) {
    let mut g = c.benchmark_group("framing");
    g.throughput(Throughput::Elements(1));
    let request = r#"{"jsonrpc":"2.0","id":42,"method":"call","params":{"to":["bob","carol"],"media":"video","client_state":"abcdef","headers":{"X-Trace":"1"}}}"#;
    g.bench_function("parse_call_request", |b| b.iter(|| parse_frame(request)));
    let n = Outbound::Notify(sfu::protocol::Notification::UserEnter {
        call_id: "3fa2c1d0-c1".into(),
        user: "alice".into(),
    });
    g.bench_function("serialize_user_enter", |b| b.iter(|| n.to_frame()));
    g.finish();
}

criterion_group!(benches, call_lifecycles, framing);
criterion_main!(benches);
