//! Supervision: the first component that stops unasked (the call-model driver, a media worker)
//! records why here. From then on `/healthz` answers 503 with the reason, `sfu_healthy` is 0,
//! sessions are closed with 1011 and new ones refused; after [`FAILURE_LINGER`] (so probes
//! and scrapes see it) the process shuts down and exits non-zero, and an orchestrator
//! restarts it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::metrics::Metrics;

/// How long a failed server keeps answering `/healthz` (503) and `/metrics` before it exits.
pub const FAILURE_LINGER: Duration = Duration::from_secs(2);

pub(crate) struct Health {
    fault: OnceLock<String>,
    notify: Notify,
    shutdown: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

impl Health {
    pub fn new(shutdown: watch::Sender<bool>, metrics: Arc<Metrics>) -> Self {
        metrics.healthy.set(1);
        Self {
            fault: OnceLock::new(),
            notify: Notify::new(),
            shutdown,
            metrics,
        }
    }

    /// `component` stopped without being asked to: the server is failing. Ignored during a
    /// shutdown (components stop then by design).
    pub fn failed(&self, component: &'static str, reason: String) {
        if self.stopping() {
            return;
        }
        self.metrics
            .component_failures
            .with_label_values(&[component])
            .inc();
        if self.fault.set(reason.clone()).is_ok() {
            tracing::error!(component, reason = %reason, "component failed: shutting down");
            self.metrics.healthy.set(0);
            self.notify.notify_waiters();
        }
    }

    pub fn fault(&self) -> Option<&str> {
        self.fault.get().map(String::as_str)
    }

    pub fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Resolves once a component has failed.
    pub async fn wait_failed(&self) -> String {
        loop {
            let notified = self.notify.notified();
            if let Some(f) = self.fault() {
                return f.to_string();
            }
            notified.await;
        }
    }
}
