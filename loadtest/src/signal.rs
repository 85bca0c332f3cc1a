//! A caller's signaling socket: JSON-RPC 2.0 over a WebSocket, requests matched to their
//! responses, notifications that arrive meanwhile queued in order.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bytes a signaling socket reads at a time.
const WS_READ_BUFFER: usize = 4096;

pub struct Signal {
    ws: Ws,
    /// The node this socket is connected to (its media host is found from it).
    pub url: String,
    next_id: u64,
    pub queue: VecDeque<Value>,
}

impl Signal {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            // The library reads into a 128 KiB buffer it zeroes on every read: 17 % of this
            // process's CPU at 200 callers (perf), for frames of a few KiB.
            tokio_tungstenite::connect_async_with_config(
                url,
                Some(WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER)),
                false,
            ),
        )
        .await
        .map_err(|_| anyhow::anyhow!("connect timeout"))??;
        Ok(Self {
            ws,
            url: url.to_string(),
            next_id: 0,
            queue: VecDeque::new(),
        })
    }

    pub async fn send(&mut self, method: &str, params: Value) -> anyhow::Result<u64> {
        self.next_id += 1;
        let frame =
            json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params});
        self.ws.send(Message::text(frame.to_string())).await?;
        Ok(self.next_id)
    }

    /// The next notification or response: queued ones first, then the socket.
    pub async fn next(&mut self) -> anyhow::Result<Value> {
        match self.queue.pop_front() {
            Some(v) => Ok(v),
            None => self.next_raw().await,
        }
    }

    /// Sends a request and waits for its response; notifications meanwhile are queued.
    pub async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.send(method, params).await?;
        let mut held = Vec::new();
        let result = loop {
            let v = tokio::time::timeout(Duration::from_secs(10), self.next_raw())
                .await
                .map_err(|_| anyhow::anyhow!("{method}: no response"))??;
            if v.get("id").and_then(Value::as_u64) == Some(id) {
                break match v.get("error") {
                    Some(e) => Err(anyhow::anyhow!("{method}: error {}", e["code"])),
                    None => Ok(v["result"].clone()),
                };
            }
            if v.get("method").is_some() {
                held.push(v);
            }
        };
        self.queue.extend(held);
        result
    }

    /// Closes the socket (a close frame; errors ignored: the run is over).
    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }

    async fn next_raw(&mut self) -> anyhow::Result<Value> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t)?),
                Some(Ok(Message::Close(f))) => anyhow::bail!("signaling closed: {f:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("signaling closed"),
            }
        }
    }
}
