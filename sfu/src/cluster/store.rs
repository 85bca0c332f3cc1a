//! The Redis client of the cluster: node registry, presence, atomic busy claims and per-node
//! inboxes (see [`super`] for the key layout).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamMaxlen, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Script};

/// Longest wait for one Redis reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnect attempts after Redis went away (every 0.5 s at most: about an hour); callers put
/// their own deadline on each operation meanwhile.
const RETRIES: usize = 7200;

#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct StoreError(String);

impl StoreError {
    pub fn timeout() -> Self {
        Self("no answer in time".into())
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

/// A node as the registry holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    /// Signaling (HTTP/WebSocket) address clients and nodes reach.
    pub http: String,
    /// Media addresses of its workers, comma-separated.
    pub media: String,
    /// Live calls hosted.
    pub load: u64,
}

/// Where a user is logged in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    pub node: String,
    pub session: String,
}

/// The outcome of claiming a call's members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Every user is now busy with this call.
    Granted,
    /// `user` is in `call` (hosted by a live node); nobody was claimed.
    Busy { user: String, call: String },
}

/// Claims every KEYS[i] (a user's busy key) for ARGV[1] (call) hosted by ARGV[2] (node), or
/// none: a key held by another call whose host (ARGV[3] .. host) is alive wins.
const CLAIM: &str = r"
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v then
    local call, host = string.match(v, '^(.-)|(.*)$')
    if call and call ~= ARGV[1] and redis.call('EXISTS', ARGV[3] .. host) == 1 then
      return {i, call}
    end
  end
end
for _, k in ipairs(KEYS) do
  redis.call('SET', k, ARGV[1] .. '|' .. ARGV[2])
end
return {0, ''}
";

/// Deletes KEYS[1] if its value is ARGV[1] (compare-and-delete: a newer owner stays).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Runs one operation under [`OP_DEADLINE`]: the client keeps reconnecting for as long as
/// Redis is away, and what is issued meanwhile would wait for it.
async fn deadline<T>(
    f: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(OP_DEADLINE, f)
        .await
        .unwrap_or_else(|_| Err(StoreError::timeout()))
}

/// Longest any store operation takes, answered or not.
pub const OP_DEADLINE: Duration = Duration::from_secs(3);

/// A cluster node's handle on Redis. Cheap to clone (one multiplexed connection).
#[derive(Clone)]
pub struct Store {
    client: redis::Client,
    con: ConnectionManager,
    node_ttl: Duration,
    /// The scripts, hashed once (EVALSHA, loaded on first use).
    claim: Script,
    release: Script,
}

impl Store {
    /// Connects to `url` (`redis://HOST:PORT/`); nodes expire `node_ttl` after their last
    /// heartbeat.
    pub async fn connect(url: &str, node_ttl: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RETRIES)
            .set_max_delay(Duration::from_millis(500));
        let con = ConnectionManager::new_with_config(client.clone(), cfg).await?;
        Ok(Self {
            client,
            con,
            node_ttl,
            claim: Script::new(CLAIM),
            release: Script::new(RELEASE),
        })
    }

    /// Registers `node` or refreshes its entry and its expiry.
    pub async fn heartbeat(&self, node: &NodeInfo) -> Result<(), StoreError> {
        deadline(async move {
            let key = node_key(&node.id);
            let ttl = self.node_ttl.as_millis() as u64;
            let mut con = self.con.clone();
            redis::pipe()
                .atomic()
                .hset_multiple(
                    &key,
                    &[
                        ("http", node.http.as_str()),
                        ("media", node.media.as_str()),
                        ("load", &node.load.to_string()),
                    ],
                )
                .ignore()
                .pexpire(&key, ttl as i64)
                .ignore()
                .sadd("sfu:nodes", &node.id)
                .ignore()
                .query_async::<()>(&mut con)
                .await?;
            Ok(())
        })
        .await
    }

    /// Whether Redis holds none of the cluster's state (it restarted empty, or is new): true
    /// once, for the first caller after that.
    pub async fn fresh(&self) -> Result<bool, StoreError> {
        deadline(async move {
            let mut con = self.con.clone();
            let set: Option<String> = redis::cmd("SET")
                .arg("sfu:epoch")
                .arg(1)
                .arg("NX")
                .query_async(&mut con)
                .await?;
            Ok(set.is_some())
        })
        .await
    }

    /// Removes `id` from the registry at once (a clean shutdown).
    pub async fn leave(&self, id: &str) -> Result<(), StoreError> {
        deadline(async move {
            let mut con = self.con.clone();
            redis::pipe()
                .del(node_key(id))
                .ignore()
                .del(calls_key(id))
                .ignore()
                .srem("sfu:nodes", id)
                .ignore()
                .query_async::<()>(&mut con)
                .await?;
            Ok(())
        })
        .await
    }

    /// Writes the entries of `node`'s live-call directory that changed (`upserts`: call id,
    /// JSON) and drops `gone`; the directory expires one node TTL after its last write, as the
    /// node's registry entry does. Returns whether it existed before (not after Redis lost its
    /// state).
    pub async fn publish_calls(
        &self,
        node: &str,
        upserts: &[(String, String)],
        gone: &[String],
    ) -> Result<bool, StoreError> {
        deadline(async move {
            let key = calls_key(node);
            let mut con = self.con.clone();
            let mut p = redis::pipe();
            p.atomic().exists(&key);
            if !upserts.is_empty() {
                p.hset_multiple(&key, upserts).ignore();
            }
            if !gone.is_empty() {
                p.hdel(&key, gone).ignore();
            }
            p.pexpire(&key, self.node_ttl.as_millis() as i64).ignore();
            let (existed,): (bool,) = p.query_async(&mut con).await?;
            Ok(existed)
        })
        .await
    }

    /// The live-call directory entries (JSON) of every live node.
    pub async fn live_calls(&self) -> Result<Vec<String>, StoreError> {
        let nodes = self.nodes().await?;
        deadline(async move {
            let mut con = self.con.clone();
            let mut out = Vec::new();
            for n in nodes {
                let entries: Vec<String> = con.hvals(calls_key(&n.id)).await?;
                out.extend(entries);
            }
            Ok(out)
        })
        .await
    }

    /// The live nodes, by id; dead ones are dropped from the set on the way.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        deadline(async move {
            let mut con = self.con.clone();
            let mut ids: Vec<String> = con.smembers("sfu:nodes").await?;
            ids.sort();
            let mut live = Vec::with_capacity(ids.len());
            for id in ids {
                let h: std::collections::HashMap<String, String> =
                    con.hgetall(node_key(&id)).await?;
                if h.is_empty() {
                    let _: () = con.srem("sfu:nodes", &id).await?;
                    continue;
                }
                let field = |k: &str| h.get(k).cloned().unwrap_or_default();
                live.push(NodeInfo {
                    load: field("load").parse().unwrap_or(0),
                    http: field("http"),
                    media: field("media"),
                    id,
                });
            }
            Ok(live)
        })
        .await
    }

    /// Whether node `id` is alive.
    pub async fn alive(&self, id: &str) -> Result<bool, StoreError> {
        deadline(async move {
            let mut con = self.con.clone();
            Ok(con.exists(node_key(id)).await?)
        })
        .await
    }

    /// `user` is logged in on `node` as `session` (replacing wherever they were).
    pub async fn set_presence(&self, user: &str, p: &Presence) -> Result<(), StoreError> {
        deadline(async move {
            let mut con = self.con.clone();
            let _: () = con
                .set(user_key(user), format!("{}|{}", p.node, p.session))
                .await?;
            Ok(())
        })
        .await
    }

    /// Where `user` is logged in, if on a live node.
    pub async fn presence(&self, user: &str) -> Result<Option<Presence>, StoreError> {
        deadline(async move {
            let mut con = self.con.clone();
            let v: Option<String> = con.get(user_key(user)).await?;
            let Some((node, session)) = v.as_deref().and_then(|v| v.split_once('|')) else {
                return Ok(None);
            };
            if !self.alive(node).await? {
                return Ok(None);
            }
            Ok(Some(Presence {
                node: node.to_string(),
                session: session.to_string(),
            }))
        })
        .await
    }

    /// `user` left `p` (only if that is still where they are: a newer login elsewhere stays).
    pub async fn clear_presence(&self, user: &str, p: &Presence) -> Result<bool, StoreError> {
        deadline(async move {
            let mut con = self.con.clone();
            let n: i64 = self
                .release
                .key(user_key(user))
                .arg(format!("{}|{}", p.node, p.session))
                .invoke_async(&mut con)
                .await?;
            Ok(n == 1)
        })
        .await
    }

    /// Makes every one of `users` busy with `call` hosted by `host`, or none of them.
    pub async fn claim(&self, call: &str, host: &str, users: &[&str]) -> Result<Claim, StoreError> {
        deadline(async move {
            let mut con = self.con.clone();
            let mut script = self.claim.prepare_invoke();
            for u in users {
                script.key(busy_key(u));
            }
            script.arg(call).arg(host).arg("sfu:node:");
            let (i, other): (usize, String) = script.invoke_async(&mut con).await?;
            Ok(match i {
                0 => Claim::Granted,
                i => Claim::Busy {
                    user: users.get(i - 1).map_or_else(String::new, |u| u.to_string()),
                    call: other,
                },
            })
        })
        .await
    }

    /// `user` is no longer busy with `call` (hosted by `host`).
    pub async fn release(&self, call: &str, host: &str, user: &str) -> Result<bool, StoreError> {
        deadline(async move {
            let mut con = self.con.clone();
            let n: i64 = self
                .release
                .key(busy_key(user))
                .arg(format!("{call}|{host}"))
                .invoke_async(&mut con)
                .await?;
            Ok(n == 1)
        })
        .await
    }

    /// The live node hosting the call `user` is busy with or invited to, if any.
    pub async fn busy_host(&self, user: &str) -> Result<Option<String>, StoreError> {
        deadline(async move {
            let mut con = self.con.clone();
            let v: Option<String> = con.get(busy_key(user)).await?;
            let Some((_, host)) = v.as_deref().and_then(|v| v.rsplit_once('|')) else {
                return Ok(None);
            };
            Ok(self.alive(host).await?.then(|| host.to_string()))
        })
        .await
    }

    /// Appends `payload` to `node`'s inbox.
    pub async fn send(&self, node: &str, payload: &str) -> Result<(), StoreError> {
        deadline(async move {
            let mut con = self.con.clone();
            let _: String = con
                .xadd_maxlen(
                    inbox_key(node),
                    StreamMaxlen::Approx(super::INBOX_MAX),
                    "*",
                    &[("m", payload)],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// `node`'s inbox, from now on. It reads on a connection of its own, since a blocking
    /// read would hold up every other command on a shared one.
    pub async fn inbox(&self, node: &str) -> Result<Inbox, StoreError> {
        deadline(async move {
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(INBOX_BLOCK + RESPONSE_TIMEOUT))
                .set_number_of_retries(RETRIES)
                .set_max_delay(Duration::from_millis(500));
            let mut con = ConnectionManager::new_with_config(self.client.clone(), cfg).await?;
            // Start after the newest entry: what a previous run of this node left is not ours.
            let last: redis::streams::StreamRangeReply =
                con.xrevrange_count(inbox_key(node), "+", "-", 1).await?;
            let after = last
                .ids
                .first()
                .map_or_else(|| "0-0".to_string(), |e| e.id.clone());
            Ok(Inbox {
                con,
                key: inbox_key(node),
                after,
            })
        })
        .await
    }
}

/// How long one inbox read waits for an entry.
const INBOX_BLOCK: Duration = Duration::from_millis(500);

/// One node's inbox reader: entries in the order they were sent, each once.
pub struct Inbox {
    con: ConnectionManager,
    key: String,
    after: String,
}

impl Inbox {
    /// The next entries (up to `max`), waiting up to half a second; empty when none came.
    pub async fn next(&mut self, max: usize) -> Result<Vec<String>, StoreError> {
        deadline(async move {
            let opts = StreamReadOptions::default()
                .block(INBOX_BLOCK.as_millis() as usize)
                .count(max);
            let reply: Option<StreamReadReply> = self
                .con
                .xread_options(&[&self.key], &[&self.after], &opts)
                .await?;
            let mut out = Vec::new();
            for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                if let Some(redis::Value::BulkString(b)) = entry.map.get("m") {
                    out.push(String::from_utf8_lossy(b).into_owned());
                }
                self.after = entry.id;
            }
            Ok(out)
        })
        .await
    }
}

fn node_key(id: &str) -> String {
    format!("sfu:node:{id}")
}

fn calls_key(node: &str) -> String {
    format!("sfu:calls:{node}")
}

fn user_key(user: &str) -> String {
    format!("sfu:user:{user}")
}

fn busy_key(user: &str) -> String {
    format!("sfu:busy:{user}")
}

fn inbox_key(node: &str) -> String {
    format!("sfu:inbox:{node}")
}
