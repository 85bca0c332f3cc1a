//! Push webhook: POSTs a JSON invite for callees who are offline when invited, so the app can
//! wake them (PROTOCOL.md "Call rules"). Fire and forget, bounded in queue and concurrency.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use crate::metrics::Metrics;
use crate::signaling::PushNotice;

const QUEUE: usize = 1024;
const IN_FLIGHT: usize = 32;
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where the driver hands push notices; `None` when no webhook is configured.
pub(crate) type PushQueue = Option<mpsc::Sender<PushNotice>>;

pub(crate) fn spawn(url: Option<String>, metrics: Arc<Metrics>) -> anyhow::Result<PushQueue> {
    let Some(url) = url else {
        return Ok(None);
    };
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .user_agent(concat!("sfu/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let (tx, mut rx) = mpsc::channel::<PushNotice>(QUEUE);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    tokio::spawn(async move {
        while let Some(notice) = rx.recv().await {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let (client, url, metrics) = (client.clone(), url.clone(), metrics.clone());
            tokio::spawn(async move {
                let result = client.post(&url).json(&notice).send().await;
                let ok = match result {
                    Ok(r) if r.status().is_success() => true,
                    Ok(r) => {
                        tracing::warn!(status = %r.status(), call_id = %notice.call_id, "push webhook refused");
                        false
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.without_url(), call_id = %notice.call_id, "push webhook failed");
                        false
                    }
                };
                let label = if ok { "ok" } else { "error" };
                metrics.push_webhooks.with_label_values(&[label]).inc();
                drop(permit);
            });
        }
    });
    Ok(Some(tx))
}
