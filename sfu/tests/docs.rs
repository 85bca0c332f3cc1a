//! The docs stay true: every method, notification, error code and end reason of the code is in
//! docs/protocol.md, and every metric family in docs/metrics.md.

use strum::IntoEnumIterator;

use sfu::metrics::Metrics;
use sfu::protocol::{EndReason, Method, NotificationKind, codes};

fn doc(name: &str) -> String {
    let path = format!("{}/../docs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

#[test]
fn protocol_doc_names_every_method_notification_and_code() {
    let text = doc("protocol.md");
    let mut missing = Vec::new();
    for m in Method::iter() {
        if !text.contains(&format!("| `{}` |", m.as_str())) {
            missing.push(format!("request {}", m.as_str()));
        }
    }
    for n in NotificationKind::iter() {
        if !text.contains(&format!("| `{}` |", n.as_str())) {
            missing.push(format!("notification {}", n.as_str()));
        }
    }
    for code in codes::ALL {
        if !text.contains(&format!("| `{code}` |")) {
            missing.push(format!("error code {code}"));
        }
    }
    for r in EndReason::iter() {
        let r: &str = r.into();
        if !text.contains(&format!("| `{r}` |")) {
            missing.push(format!("call_end reason {r}"));
        }
    }
    assert!(missing.is_empty(), "docs/protocol.md lacks: {missing:?}");
}

#[test]
fn metrics_doc_names_every_family() {
    let text = doc("metrics.md");
    let m = Metrics::new();
    assert!(m.families.len() >= 10);
    let missing: Vec<_> = m
        .families
        .iter()
        .filter(|f| !text.contains(&format!("`{f}`")))
        .collect();
    assert!(missing.is_empty(), "docs/metrics.md lacks: {missing:?}");
}
