//! The call-model driver: one task owns the [`CallModel`] (inside its cluster [`Relay`]), feeds
//! it session inputs, cluster messages and the clock, and carries out its outputs (frames to
//! sessions, closes, pushes, metrics, the call directory, and asks of the cluster). Nothing here
//! decides a call rule.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;

use super::Shared;
use super::push::PushQueue;
use crate::directory::{CallEntry, ToSocket};
use crate::media::{Command, MediaEvent};
use crate::protocol::{Method, RequestId};
use crate::signaling::relay::{NodeOut, Relay, RelayOut};
use crate::signaling::{CallEvent, CallModel, ConnId, ModelConfig, Output};

use super::cluster::{ClusterCmd, ClusterIn};

use super::worker::WorkerHandle;

/// What sessions send the driver.
#[derive(Debug)]
pub(crate) enum Input {
    /// A login whose token is verified.
    Login {
        conn: ConnId,
        id: RequestId,
        user: String,
        /// TURN servers with this user's credentials.
        ice_servers: Vec<serde_json::Value>,
    },
    Request {
        conn: ConnId,
        id: RequestId,
        method: Method,
        params: Value,
    },
    Disconnect {
        conn: ConnId,
    },
    /// What a Worker reported (replies, offers, volume, quality, availability, failures).
    Media(MediaEvent),
    /// What the cluster answered or another node sent (`--redis`).
    Cluster(ClusterIn),
}

/// The driver's link to the cluster tasks: this node's instance id and their queue.
pub(crate) struct ClusterLink {
    pub me: String,
    pub tx: mpsc::Sender<ClusterCmd>,
    /// `--spill-above`.
    pub spill_above: Option<u64>,
}

/// Inputs handled before outputs are flushed, to amortize wake-ups under load.
const BATCH: usize = 64;

/// The driver's view of the media Workers: where to send each call's commands.
struct Workers {
    handles: Vec<WorkerHandle>,
    /// Live calls per worker, to place new calls on the least loaded one.
    load: Vec<usize>,
}

pub(crate) async fn run(
    cfg: ModelConfig,
    mut rx: mpsc::Receiver<Input>,
    mut media_rx: mpsc::Receiver<Input>,
    shared: Arc<Shared>,
    push: PushQueue,
    handles: Vec<WorkerHandle>,
    cluster: Option<ClusterLink>,
) {
    let mut node = match &cluster {
        Some(c) => Relay::new(&c.me, CallModel::new(cfg)).with_placement(c.spill_above),
        None => Relay::single(CallModel::new(cfg)),
    };
    let host = cluster.as_ref().map_or_else(String::new, |c| c.me.clone());
    let cluster_tx = cluster.map(|c| c.tx);
    let mut snapshot = tokio::time::interval(crate::cluster::HEARTBEAT);
    snapshot.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = shared.shutdown.clone();
    let load = vec![0; handles.len()];
    let mut workers = Workers { handles, load };
    let mut pushes_limited = 0;
    let fail_at = shared
        .cfg
        .fail_driver_after
        .map(|d| std::time::Instant::now() + d);
    loop {
        let wake = node.model().poll_timeout();
        tokio::select! {
            // Test hook (--dev only): stop as a crashed driver would.
            _ = sleep_until(fail_at) => break,
            input = media_rx.recv() => {
                let Some(input) = input else { break };
                apply(&mut node, &shared, input);
            }
            input = rx.recv() => {
                let Some(input) = input else { break };
                apply(&mut node, &shared, input);
                for _ in 1..BATCH {
                    match rx.try_recv() {
                        Ok(input) => apply(&mut node, &shared, input),
                        Err(_) => break,
                    }
                }
            }
            _ = sleep_until(wake) => {
                node.model_mut().handle_timeout(Instant::now().into_std());
            }
            _ = snapshot.tick() => publish_live_calls(&shared, &node, &host, &cluster_tx),
            _ = super::stopped(&mut shutdown) => break,
        }
        while let Some(out) = node.poll_output() {
            let refused = match out {
                NodeOut::Model(out) => {
                    carry_out(&shared, &push, &mut workers, &mut node, &cluster_tx, out)
                }
                NodeOut::Relay(out) => to_cluster(&shared, &cluster_tx, out),
            };
            if let Some(cmd) = refused {
                answer_refused(&mut node, cmd);
            }
        }
        let limited = node.model().pushes_limited();
        if limited > pushes_limited {
            shared
                .metrics
                .push_webhooks
                .with_label_values(&["limited"])
                .inc_by(limited - pushes_limited);
            pushes_limited = limited;
        }
    }
}

/// The live-call directory: this node's calls for the admin API, and in a cluster for Redis.
fn publish_live_calls(
    shared: &Shared,
    node: &Relay,
    host: &str,
    tx: &Option<mpsc::Sender<ClusterCmd>>,
) {
    let calls = Arc::new(
        node.model()
            .live_calls(host, Instant::now().into_std(), unix_ms()),
    );
    *shared
        .live_calls
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = calls.clone();
    // A refused snapshot is replaced by the next one.
    let _ = ask(shared, tx, ClusterCmd::Calls(calls));
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Metrics and call records from the Workers' reports.
fn observe(shared: &Shared, event: &MediaEvent) {
    let m = &shared.metrics;
    match event {
        MediaEvent::Quality {
            call_id,
            user,
            leg,
            report,
        } => {
            let direction = crate::protocol::QualityDirection::from(*leg);
            let dir: &str = direction.into();
            m.quality_mos.with_label_values(&[dir]).observe(report.mos);
            m.quality_samples
                .with_label_values(&[dir, report.level.as_str()])
                .inc();
            m.quality_rtt_seconds
                .with_label_values(&[dir])
                .observe(report.rtt_ms / 1000.0);
            m.quality_jitter_seconds
                .with_label_values(&[dir])
                .observe(report.jitter_ms / 1000.0);
            m.quality_loss_ratio
                .with_label_values(&[dir])
                .observe(report.loss);
            shared.records().quality(
                call_id,
                user,
                direction,
                report.mos,
                report.level,
                report.loss,
                report.jitter_ms,
                report.rtt_ms,
            );
        }
        MediaEvent::Volume { .. } => m.volume_events.inc(),
        MediaEvent::Available {
            kind, available, ..
        } => m
            .availability_events
            .with_label_values(&[
                crate::media::peer::kind_name(*kind),
                if *available { "true" } else { "false" },
            ])
            .inc(),
        _ => {}
    }
}

fn apply(node: &mut Relay, shared: &Shared, input: Input) {
    let now = Instant::now().into_std();
    match input {
        Input::Login {
            conn,
            id,
            user,
            ice_servers,
        } => node.login(now, conn, id, &user, ice_servers),
        Input::Request {
            conn,
            id,
            method,
            params,
        } => node.request(now, conn, id, method, params),
        Input::Disconnect { conn } => node.disconnect(now, conn),
        Input::Media(event) => {
            observe(shared, &event);
            node.model_mut().media_event(event)
        }
        Input::Cluster(c) => match c {
            ClusterIn::Envelope(env) => node.envelope(now, env),
            ClusterIn::Located { token, found } => node.located(now, token, &found),
            ClusterIn::LocateFailed { token } => node.locate_failed(token),
            ClusterIn::Attach { conn, user, nodes } => node.attach_elsewhere(conn, &user, &nodes),
            ClusterIn::Claimed {
                call_id,
                user,
                granted,
            } => node.model_mut().claimed(now, &call_id, &user, granted),
            ClusterIn::NodeDead(n) => node.node_dead(now, &n),
            ClusterIn::Loads(loads) => node.node_loads(loads),
            ClusterIn::SendFailed(env) => node.send_failed(&env),
            ClusterIn::Resync => node.resync(),
        },
    }
}

/// Carries out the Relay's asks: frames from other nodes to local sockets, the rest to the
/// cluster tasks (never waiting: a full queue refuses, counted). Returns a refused ask.
fn to_cluster(
    shared: &Shared,
    tx: &Option<mpsc::Sender<ClusterCmd>>,
    out: RelayOut,
) -> Option<ClusterCmd> {
    let cmd = match out {
        RelayOut::Deliver { conn, frame } => {
            to_socket(shared, conn, ToSocket::Text(frame));
            return None;
        }
        RelayOut::Close { conn, code } => {
            let reason = if code == 4000 {
                "session replaced"
            } else {
                "closed by the call's node"
            };
            to_socket(shared, conn, ToSocket::Close { code, reason });
            return None;
        }
        RelayOut::Send { node, envelope } => ClusterCmd::Send { node, envelope },
        RelayOut::Locate { token, users } => ClusterCmd::Locate { token, users },
        RelayOut::Arrived { user, conn } => ClusterCmd::Arrived { user, conn },
        RelayOut::Departed { user, conn } => ClusterCmd::Departed { user, conn },
    };
    ask(shared, tx, cmd)
}

/// Queues `cmd` for the cluster tasks; returns it when the queue is full (counted).
fn ask(
    shared: &Shared,
    tx: &Option<mpsc::Sender<ClusterCmd>>,
    cmd: ClusterCmd,
) -> Option<ClusterCmd> {
    let tx = tx.as_ref()?;
    match tx.try_send(cmd) {
        Ok(()) => None,
        Err(TrySendError::Full(cmd) | TrySendError::Closed(cmd)) => {
            shared
                .metrics
                .queue_dropped
                .with_label_values(&["cluster"])
                .inc();
            Some(cmd)
        }
    }
}

/// An ask the cluster tasks could not take is answered as Redis being away would answer it,
/// so no client waits on it: a relayed request fails with 5000, a login is answered, a claim
/// is left to the local busy rule.
fn answer_refused(node: &mut Relay, cmd: ClusterCmd) {
    let now = Instant::now().into_std();
    match cmd {
        ClusterCmd::Send { envelope, .. } => node.send_failed(&envelope),
        ClusterCmd::Locate { token, .. } => node.locate_failed(token),
        ClusterCmd::Arrived { user, conn } => node.attach_elsewhere(conn, &user, &[]),
        ClusterCmd::Claim { call_id, user } => node.model_mut().claimed(now, &call_id, &user, true),
        ClusterCmd::Departed { .. } | ClusterCmd::Release { .. } | ClusterCmd::Calls(_) => {}
    }
}

fn carry_out(
    shared: &Shared,
    push: &PushQueue,
    workers: &mut Workers,
    node: &mut Relay,
    cluster: &Option<mpsc::Sender<ClusterCmd>>,
    out: Output,
) -> Option<ClusterCmd> {
    match out {
        Output::Media(cmd) => to_worker(shared, workers, node.model_mut(), cmd),
        Output::Send { conn, msg } => to_socket(shared, conn, ToSocket::Frame(msg)),
        Output::Close { conn, code, reason } => {
            to_socket(shared, conn, ToSocket::Close { code, reason })
        }
        Output::Push(notice) => match push {
            Some(tx) => {
                if tx.try_send(notice).is_err() {
                    shared
                        .metrics
                        .push_webhooks
                        .with_label_values(&["dropped"])
                        .inc();
                }
            }
            None => tracing::debug!(
                call_id = %notice.call_id,
                "callee offline and no --push-webhook configured"
            ),
        },
        Output::Event(event) => record(shared, workers, event),
        // Only with ModelConfig::claims, which a cluster node sets.
        Output::Claim { call_id, user } => {
            return ask(shared, cluster, ClusterCmd::Claim { call_id, user });
        }
        Output::Release { call_id, user } => {
            return ask(shared, cluster, ClusterCmd::Release { call_id, user });
        }
    }
    None
}

/// Hands a media command to the Worker hosting its call. An `offer`/`answer` that cannot be
/// delivered is answered with 5000 so the client is never left waiting.
fn to_worker(shared: &Shared, workers: &Workers, model: &mut CallModel, cmd: Command) {
    let worker = shared
        .directory
        .get(cmd.call_id())
        .and_then(|e| workers.handles.get(e.worker));
    let undelivered = match worker {
        Some(w) => match w.tx.try_send(cmd) {
            Ok(()) => None,
            Err(TrySendError::Full(cmd)) => {
                shared
                    .metrics
                    .queue_dropped
                    .with_label_values(&["worker_commands"])
                    .inc();
                Some(cmd)
            }
            Err(TrySendError::Closed(cmd)) => Some(cmd),
        },
        None => Some(cmd),
    };
    if let Some(cmd) = undelivered {
        model.media_undelivered(&cmd);
    }
}

/// Hands a frame to a session without ever waiting: a session whose queue is full cannot keep
/// up and is closed, so one slow client never stalls the others.
fn to_socket(shared: &Shared, conn: ConnId, msg: ToSocket) {
    let Some(handle) = shared.sessions.get(&conn).map(|h| h.clone()) else {
        return;
    };
    match handle.tx.try_send(msg) {
        Ok(()) | Err(TrySendError::Closed(_)) => {}
        Err(TrySendError::Full(_)) => handle.kill.notify_one(),
    }
}

fn record(shared: &Shared, workers: &mut Workers, event: CallEvent) {
    let m = &shared.metrics;
    match event {
        CallEvent::Started {
            call_id,
            group,
            media,
            members,
        } => {
            shared
                .records()
                .started(&call_id, group, media, &members, unix_ms());
            let kind = if group { "group" } else { "1v1" };
            m.calls_started
                .with_label_values(&[kind, media.into()])
                .inc();
            // The least loaded worker hosts the call for its whole life.
            let worker = (0..workers.load.len())
                .min_by_key(|&w| workers.load[w])
                .unwrap_or(0);
            if let Some(l) = workers.load.get_mut(worker) {
                *l += 1;
            }
            shared.directory.insert(
                &call_id,
                CallEntry {
                    group,
                    media,
                    worker,
                    started: Instant::now().into_std(),
                },
            );
        }
        CallEvent::Answered {
            call_id,
            user,
            setup,
        } => {
            m.call_setup_seconds.observe(setup.as_secs_f64());
            shared
                .records()
                .answered(&call_id, &user, setup.as_secs_f64());
        }
        CallEvent::Ended {
            call_id,
            reason,
            answered,
            duration,
        } => {
            let record = shared
                .records()
                .ended(&call_id, reason, answered, unix_ms());
            if let (Some(record), Some(cdr)) = (record, &shared.cdr)
                && let Ok(line) = serde_json::to_string(&record)
                && cdr.try_send(line).is_err()
            {
                m.queue_dropped.with_label_values(&["cdr"]).inc();
            }
            let answered = if answered { "true" } else { "false" };
            m.calls_ended
                .with_label_values(&[reason.into(), answered])
                .inc();
            m.call_duration_seconds.observe(duration.as_secs_f64());
            if let Some(e) = shared.directory.remove(&call_id)
                && let Some(l) = workers.load.get_mut(e.worker)
            {
                *l = l.saturating_sub(1);
            }
        }
    }
    m.calls_active.set(shared.directory.len() as i64);
}
