//! The ICE-TCP connections of one media Worker (RFC 6544 passive candidate): accepts on the
//! worker's TCP port, frames each connection (RFC 4571, [`crate::ice_tcp`]) and moves whole
//! datagrams to and from the Worker thread over bounded queues. Runs on the server's runtime:
//! the Worker thread never waits on a TCP socket.
//!
//! Invariants: every queue is bounded and nothing waits on a full one but a connection's own
//! writer (a client that stops reading loses its frames, counted, and is closed after
//! [`WRITE_STALL`]); a connection is closed when it does not speak ICE first, falls silent for
//! [`IDLE`], or announces a frame over [`FRAME_MAX`]; when all [`MAX_CONNECTIONS`] slots are
//! taken, a new connection evicts the oldest one that has not sent a frame yet, so connections
//! that only hold a slot cannot lock real clients out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::ice_tcp::{FrameDecoder, encode};
use crate::metrics::Metrics;

/// Open connections per worker; more are refused at accept.
pub(crate) const MAX_CONNECTIONS: usize = 1024;
/// Longest frame taken, as for UDP datagrams.
pub(crate) const FRAME_MAX: usize = crate::udp::DATAGRAM_MAX;
/// Frames waiting for one connection's socket: about 100 ms of a video member's downlink.
const WRITE_QUEUE: usize = 256;
/// Frames from all of a worker's connections waiting for the worker.
pub(crate) const INBOX: usize = 4096;
/// Bytes gathered into one write.
const WRITE_BATCH: usize = 64 * 1024;
/// A new connection must send its first frame (a STUN binding request) within this long.
const FIRST_FRAME: Duration = Duration::from_secs(10);
/// ICE consent checks come every few seconds: this long without a frame ends a connection.
const IDLE: Duration = Duration::from_secs(30);
/// A write blocked this long (the client stopped reading) ends the connection.
const WRITE_STALL: Duration = Duration::from_secs(10);

/// Why connections close: the `reason` label of `sfu_ice_tcp_closed_total`.
pub(crate) const CLOSE_REASONS: [&str; 9] = [
    "evicted",
    "eof",
    "error",
    "idle",
    "not_ice",
    "oversized",
    "stalled",
    "full",
    "shutdown",
];

/// What a Worker learns of its TCP connections, in order per connection.
pub(crate) enum TcpInput {
    /// A connection from `peer`; the Worker sends its datagrams to `tx`.
    Open {
        peer: SocketAddr,
        tx: mpsc::Sender<Vec<u8>>,
    },
    Frame {
        peer: SocketAddr,
        data: bytes::Bytes,
    },
    Closed {
        peer: SocketAddr,
    },
}

/// The connection slots of one worker: how many are open, and which have not sent a frame yet
/// (oldest first), each with the handle that evicts it.
#[derive(Default)]
pub(crate) struct Slots {
    state: std::sync::Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    open: usize,
    next: u64,
    silent: std::collections::VecDeque<(u64, Arc<Notify>)>,
}

/// One connection's slot.
pub(crate) struct Slot {
    id: u64,
    evict: Arc<Notify>,
    slots: Arc<Slots>,
}

impl Slots {
    /// A slot for a new connection: a free one, or the oldest silent connection's (which is
    /// told to go), or none.
    pub(crate) fn admit(self: &Arc<Self>, max: usize) -> Option<Slot> {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if st.open >= max {
            let (_, victim) = st.silent.pop_front()?;
            victim.notify_one();
        }
        st.open += 1;
        st.next += 1;
        let slot = Slot {
            id: st.next,
            evict: Arc::new(Notify::new()),
            slots: self.clone(),
        };
        st.silent.push_back((slot.id, slot.evict.clone()));
        Some(slot)
    }

    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .open
    }
}

impl Slot {
    /// The connection spoke: it is no longer evictable.
    fn spoke(&self) {
        let mut st = self
            .slots
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.silent.retain(|(id, _)| *id != self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self
            .slots
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.open = st.open.saturating_sub(1);
        st.silent.retain(|(id, _)| *id != self.id);
    }
}

/// Accepts connections on `listener` until shutdown, each served by its own task.
pub(crate) fn spawn(
    listener: std::net::TcpListener,
    inbox: mpsc::Sender<TcpInput>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let slots = Arc::new(Slots::default());
    Ok(tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors and the like: wait instead of spinning.
                        tracing::debug!(error = %e, "ICE-TCP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = super::stopped(&mut shutdown) => return,
            };
            let Some(slot) = slots.admit(MAX_CONNECTIONS) else {
                metrics.ice_tcp_closed.with_label_values(&["full"]).inc();
                continue;
            };
            let (inbox, metrics, shutdown) = (inbox.clone(), metrics.clone(), shutdown.clone());
            tokio::spawn(async move {
                serve(stream, peer, inbox, &metrics, shutdown, &slot).await;
                drop(slot);
            });
        }
    }))
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    inbox: mpsc::Sender<TcpInput>,
    metrics: &Metrics,
    mut shutdown: watch::Receiver<bool>,
    slot: &Slot,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel(WRITE_QUEUE);
    if inbox.send(TcpInput::Open { peer, tx }).await.is_err() {
        return;
    }
    metrics.ice_tcp_connections.inc();
    let spoke = || slot.spoke();
    let reason = tokio::select! {
        r = read_frames(&mut rd, peer, &inbox, metrics, &spoke) => r,
        _ = slot.evict.notified() => "evicted",
        r = write_frames(&mut wr, &mut rx) => r,
        _ = super::stopped(&mut shutdown) => "shutdown",
    };
    metrics.ice_tcp_connections.dec();
    metrics.ice_tcp_closed.with_label_values(&[reason]).inc();
    let _ = inbox.send(TcpInput::Closed { peer }).await;
}

/// Reads frames and hands them to the Worker; returns why the connection ends.
pub(crate) async fn read_frames<R: AsyncReadExt + Unpin>(
    rd: &mut R,
    peer: SocketAddr,
    inbox: &mpsc::Sender<TcpInput>,
    metrics: &Metrics,
    spoke: &(dyn Fn() + Sync),
) -> &'static str {
    let mut frames = FrameDecoder::new(FRAME_MAX);
    let mut first = true;
    loop {
        let wait = if first { FIRST_FRAME } else { IDLE };
        match timeout(wait, rd.read_buf(frames.buffer())).await {
            Err(_) => return "idle",
            Ok(Ok(0)) => return "eof",
            Ok(Err(_)) => return "error",
            Ok(Ok(_)) => {}
        }
        loop {
            let data = match frames.next_frame() {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(_) => return "oversized",
            };
            // A STUN binding request (RFC 5389 type 0x0001) opens every ICE-TCP connection.
            if std::mem::take(&mut first) {
                if !data.starts_with(&[0x00, 0x01]) {
                    return "not_ice";
                }
                spoke();
            }
            match inbox.try_send(TcpInput::Frame { peer, data }) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => metrics
                    .datagrams_dropped
                    .with_label_values(&["tcp_receive_queue_full"])
                    .inc(),
                Err(mpsc::error::TrySendError::Closed(_)) => return "shutdown",
            }
        }
    }
}

/// Writes what the Worker sends, framed, several frames per write; returns why it stopped.
pub(crate) async fn write_frames<W: AsyncWriteExt + Unpin>(
    wr: &mut W,
    rx: &mut mpsc::Receiver<Vec<u8>>,
) -> &'static str {
    let mut buf = BytesMut::with_capacity(WRITE_BATCH);
    while let Some(first) = rx.recv().await {
        buf.clear();
        // The core never makes a datagram over 64 KiB; one that were would be skipped.
        let _ = encode(&mut buf, &first);
        while buf.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(d) => {
                    let _ = encode(&mut buf, &d);
                }
                Err(_) => break,
            }
        }
        match timeout(WRITE_STALL, wr.write_all(&buf)).await {
            Err(_) => return "stalled",
            Ok(Err(_)) => return "error",
            Ok(Ok(())) => {}
        }
    }
    "shutdown"
}

#[cfg(test)]
mod tests;
