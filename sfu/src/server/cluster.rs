//! The cluster shell (`--redis`): the only code that talks to Redis. Three tasks: one carries
//! out the Relay's and the call model's asks in order (inbox sends, presence, look-ups, busy
//! claims), one reads this node's inbox, one heartbeats the registry and watches the other
//! nodes. Their answers reach the driver as [`Input::Cluster`]. Redis away costs errors
//! (counted), never a stall of the driver: asks queue in a bounded channel and wait out
//! Redis's deadlines in these tasks.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::Input;
use crate::cluster::{CallDirectoryWriter, Claim, HEARTBEAT, NodeInfo, Presence, Store};
use crate::directory::LiveCall;
use crate::metrics::Metrics;
use crate::signaling::ConnId;
use crate::signaling::relay::Envelope;

/// Asks waiting for the cluster task; more are dropped (counted).
pub(crate) const QUEUE: usize = 16_384;

/// What the driver asks of the cluster.
#[derive(Debug)]
pub(crate) enum ClusterCmd {
    Send {
        node: String,
        envelope: Envelope,
    },
    Locate {
        token: u64,
        users: Vec<String>,
    },
    Arrived {
        user: String,
        conn: ConnId,
    },
    Departed {
        user: String,
        conn: ConnId,
    },
    Claim {
        call_id: String,
        user: String,
    },
    Release {
        call_id: String,
        user: String,
    },
    /// This node's live calls now (the directory entries that changed are written).
    Calls(Arc<Vec<LiveCall>>),
}

/// What the cluster tells the driver.
#[derive(Debug)]
pub(crate) enum ClusterIn {
    Envelope(Envelope),
    Located {
        token: u64,
        found: Vec<(String, Option<(String, u64)>)>,
    },
    LocateFailed {
        token: u64,
    },
    Attach {
        conn: ConnId,
        user: String,
        nodes: Vec<String>,
    },
    Claimed {
        call_id: String,
        user: String,
        granted: bool,
    },
    NodeDead(String),
    /// The live nodes and the calls each hosts (every heartbeat).
    Loads(Vec<(String, u64)>),
    SendFailed(Envelope),
    /// Redis answered again after failing: publish and claim everything again.
    Resync,
}

/// Starts the cluster tasks of node `me`.
pub(crate) async fn start(
    store: Store,
    node: NodeInfo,
    metrics: Arc<Metrics>,
    to_driver: mpsc::Sender<Input>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(mpsc::Sender<ClusterCmd>, Vec<JoinHandle<()>>)> {
    store
        .heartbeat(&node)
        .await
        .map_err(|e| anyhow::anyhow!("cannot register in the cluster: {e}"))?;
    let inbox = store
        .inbox(&node.id)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open this node's inbox: {e}"))?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let tasks = vec![
        tokio::spawn(asks(
            store.clone(),
            node.id.clone(),
            rx,
            to_driver.clone(),
            metrics.clone(),
        )),
        tokio::spawn(read_inbox(
            inbox,
            to_driver.clone(),
            metrics.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(heartbeat(store, node, to_driver, metrics, shutdown)),
    ];
    Ok((tx, tasks))
}

async fn tell(to_driver: &mpsc::Sender<Input>, c: ClusterIn) {
    let _ = to_driver.send(Input::Cluster(c)).await;
}

/// Carries out the driver's asks, in order (so envelopes to one node stay in order).
async fn asks(
    store: Store,
    me: String,
    mut rx: mpsc::Receiver<ClusterCmd>,
    to_driver: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
) {
    let error = || metrics.cluster_redis_errors.inc();
    let mut directory = CallDirectoryWriter::default();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            ClusterCmd::Send { node, envelope } => {
                let text = serde_json::to_string(&envelope).unwrap_or_default();
                let t = std::time::Instant::now();
                match store.send(&node, &text).await {
                    Ok(()) => {
                        metrics
                            .cluster_relay_seconds
                            .observe(t.elapsed().as_secs_f64());
                        metrics.cluster_envelopes.with_label_values(&["sent"]).inc();
                    }
                    Err(_) => {
                        error();
                        tell(&to_driver, ClusterIn::SendFailed(envelope)).await;
                    }
                }
            }
            ClusterCmd::Locate { token, users } => {
                let mut found = Vec::with_capacity(users.len());
                let mut failed = false;
                for u in users {
                    match store.presence(&u).await {
                        Ok(p) => {
                            let at = p.and_then(|p| Some((p.node, p.session.parse().ok()?)));
                            found.push((u, at));
                        }
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                let c = if failed {
                    error();
                    ClusterIn::LocateFailed { token }
                } else {
                    tracing::debug!(?found, "located");
                    ClusterIn::Located { token, found }
                };
                tell(&to_driver, c).await;
            }
            ClusterCmd::Arrived { user, conn } => {
                let here = Presence {
                    node: me.clone(),
                    session: conn.0.to_string(),
                };
                let before = store.presence(&user).await;
                let host = store.busy_host(&user).await;
                let set = store.set_presence(&user, &here).await;
                tracing::debug!(%user, conn = conn.0, ok = set.is_ok(), "presence published");
                // Always answered: the login's response waits for it.
                let nodes = match (before, host, set) {
                    (Ok(before), Ok(host), Ok(())) => {
                        before.map(|p| p.node).into_iter().chain(host).collect()
                    }
                    _ => {
                        error();
                        Vec::new()
                    }
                };
                tell(&to_driver, ClusterIn::Attach { conn, user, nodes }).await;
            }
            ClusterCmd::Departed { user, conn } => {
                let here = Presence {
                    node: me.clone(),
                    session: conn.0.to_string(),
                };
                if store.clear_presence(&user, &here).await.is_err() {
                    error();
                }
            }
            ClusterCmd::Claim { call_id, user } => {
                // Redis away: the local busy rule alone decides (calls on this node go on).
                let granted = match store.claim(&call_id, &me, &[&user]).await {
                    Ok(Claim::Granted) => true,
                    Ok(Claim::Busy { .. }) => false,
                    Err(_) => {
                        error();
                        true
                    }
                };
                tell(
                    &to_driver,
                    ClusterIn::Claimed {
                        call_id,
                        user,
                        granted,
                    },
                )
                .await;
            }
            ClusterCmd::Release { call_id, user } => {
                if store.release(&call_id, &me, &user).await.is_err() {
                    error();
                }
            }
            ClusterCmd::Calls(calls) => {
                if directory.write(&store, &me, &calls).await.is_err() {
                    error();
                }
            }
        }
    }
}

async fn read_inbox(
    mut inbox: crate::cluster::Inbox,
    to_driver: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let got = tokio::select! {
            r = inbox.next(256) => r,
            _ = super::stopped(&mut shutdown) => return,
        };
        match got {
            Ok(entries) => {
                for text in entries {
                    match serde_json::from_str::<Envelope>(&text) {
                        Ok(env) => {
                            metrics
                                .cluster_envelopes
                                .with_label_values(&["received"])
                                .inc();
                            tell(&to_driver, ClusterIn::Envelope(env)).await;
                        }
                        Err(_) => metrics
                            .cluster_envelopes
                            .with_label_values(&["invalid"])
                            .inc(),
                    }
                }
            }
            Err(_) => {
                metrics.cluster_redis_errors.inc();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Refreshes this node's registry entry and reports nodes that disappeared from it.
async fn heartbeat(
    store: Store,
    mut node: NodeInfo,
    to_driver: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut alive: HashSet<String> = HashSet::new();
    let mut failing = false;
    // After Redis came back empty, nodes re-register one by one: absence means nothing yet.
    let mut amnesty_until: Option<std::time::Instant> = None;
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = super::stopped(&mut shutdown) => {
                let _ = store.leave(&node.id).await;
                return;
            }
        }
        node.load = metrics.calls_active.get().max(0) as u64;
        let fresh = store.fresh().await;
        let nodes = match (fresh, store.heartbeat(&node).await) {
            (Ok(fresh), Ok(())) => {
                if fresh {
                    amnesty_until = Some(std::time::Instant::now() + crate::cluster::NODE_TTL);
                    failing = true; // and publish everything again
                }
                store.nodes().await
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        let nodes = match nodes {
            Ok(n) => n,
            Err(_) => {
                metrics.cluster_redis_errors.inc();
                failing = true;
                continue;
            }
        };
        if std::mem::take(&mut failing) {
            tell(&to_driver, ClusterIn::Resync).await;
        }
        let loads = nodes.iter().map(|n| (n.id.clone(), n.load)).collect();
        tell(&to_driver, ClusterIn::Loads(loads)).await;
        let now: HashSet<String> = nodes.into_iter().map(|n| n.id).collect();
        metrics.cluster_nodes.set(now.len() as i64);
        if amnesty_until.is_some_and(|t| std::time::Instant::now() < t) {
            alive.extend(now);
            continue;
        }
        amnesty_until = None;
        for gone in alive.difference(&now) {
            tell(&to_driver, ClusterIn::NodeDead(gone.clone())).await;
        }
        alive = now;
    }
}
