//! The cluster store (`sfu::cluster::Store`) against a real `redis-server`: the node registry
//! and its expiry, presence tied to a live node, busy claims that two nodes racing for the
//! same users cannot both win, per-node inboxes in order, the live-call directory, and Redis
//! going away and coming back without a new client.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::redis::RedisServer;
use sfu::cluster::{Claim, NodeInfo, Presence, Store};

fn node(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        http: format!("127.0.0.1:{}", 7600 + id.len()),
        media: "127.0.0.1:7601".into(),
        load: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_and_expire_without_heartbeats() {
    let redis = RedisServer::start().await;
    let store = Store::connect(&redis.url(), Duration::from_millis(800))
        .await
        .unwrap();
    for id in ["a", "b", "c"] {
        store.heartbeat(&node(id)).await.unwrap();
    }
    let ids = |n: Vec<NodeInfo>| n.into_iter().map(|n| n.id).collect::<Vec<_>>();
    assert_eq!(ids(store.nodes().await.unwrap()), ["a", "b", "c"]);
    // b leaves cleanly; c stops heartbeating (killed); a keeps going.
    store.leave("b").await.unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        store
            .heartbeat(&NodeInfo {
                load: 7,
                ..node("a")
            })
            .await
            .unwrap();
    }
    let live = store.nodes().await.unwrap();
    assert_eq!(
        ids(live.clone()),
        ["a"],
        "c expired 0.8 s after its last heartbeat"
    );
    assert_eq!(live[0].load, 7);
    assert!(!store.alive("c").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_the_newest_login_and_dies_with_its_node() {
    let redis = RedisServer::start().await;
    let store = Store::connect(&redis.url(), Duration::from_millis(800))
        .await
        .unwrap();
    store.heartbeat(&node("a")).await.unwrap();
    store.heartbeat(&node("b")).await.unwrap();
    let on = |n: &str, s: &str| Presence {
        node: n.into(),
        session: s.into(),
    };
    assert_eq!(store.presence("alice").await.unwrap(), None);
    store.set_presence("alice", &on("a", "s1")).await.unwrap();
    // A second login on another node (takeover): the first node's late logout does not
    // erase it.
    store.set_presence("alice", &on("b", "s9")).await.unwrap();
    assert!(!store.clear_presence("alice", &on("a", "s1")).await.unwrap());
    assert_eq!(store.presence("alice").await.unwrap(), Some(on("b", "s9")));
    // Node b dies: alice is offline, whatever the key says.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        store.heartbeat(&node("a")).await.unwrap();
    }
    assert_eq!(store.presence("alice").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_callers_from_three_nodes_race_for_one_callee_and_one_wins() {
    let redis = RedisServer::start().await;
    let mut stores = Vec::new();
    for id in ["a", "b", "c"] {
        let s = Store::connect(&redis.url(), Duration::from_secs(10))
            .await
            .unwrap();
        s.heartbeat(&node(id)).await.unwrap();
        stores.push(Arc::new(s));
    }
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = stores[i % 3].clone();
        let host = ["a", "b", "c"][i % 3];
        tasks.push(tokio::spawn(async move {
            let caller = format!("caller{i}");
            let call = format!("call{i}");
            s.claim(&call, host, &[&caller, "bob"]).await.unwrap()
        }));
    }
    let mut granted = 0;
    let mut busy_with = std::collections::HashSet::new();
    for t in tasks {
        match t.await.unwrap() {
            Claim::Granted => granted += 1,
            Claim::Busy { user, call } => {
                assert_eq!(user, "bob");
                busy_with.insert(call);
            }
        }
    }
    assert_eq!(granted, 1, "exactly one call gets bob");
    assert_eq!(
        busy_with.len(),
        1,
        "every other caller is told the same call holds him"
    );
    // The losers claimed nothing: their callers are free for another call.
    let winner = busy_with.into_iter().next().unwrap();
    let mut free = 0;
    for i in 0..50 {
        if format!("call{i}") == winner {
            continue;
        }
        let c = stores[0]
            .claim(&format!("next{i}"), "a", &[&format!("caller{i}")])
            .await
            .unwrap();
        free += usize::from(c == Claim::Granted);
    }
    assert_eq!(free, 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_held_by_a_dead_host_is_free_and_release_is_by_owner() {
    let redis = RedisServer::start().await;
    let store = Store::connect(&redis.url(), Duration::from_millis(600))
        .await
        .unwrap();
    store.heartbeat(&node("a")).await.unwrap();
    store.heartbeat(&node("b")).await.unwrap();
    assert_eq!(
        store.claim("c1", "a", &["alice", "bob"]).await.unwrap(),
        Claim::Granted
    );
    assert_eq!(
        store.claim("c2", "b", &["carol", "bob"]).await.unwrap(),
        Claim::Busy {
            user: "bob".into(),
            call: "c1".into()
        }
    );
    // Claiming again for the same call is fine (a member invited twice).
    assert_eq!(
        store.claim("c1", "a", &["bob"]).await.unwrap(),
        Claim::Granted
    );
    // Only the owner releases.
    assert!(!store.release("c2", "b", "bob").await.unwrap());
    assert!(store.release("c1", "a", "alice").await.unwrap());
    // Host a dies (no heartbeat): bob's claim by c1 no longer holds.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        store.heartbeat(&node("b")).await.unwrap();
    }
    assert_eq!(
        store.claim("c2", "b", &["carol", "bob"]).await.unwrap(),
        Claim::Granted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_entries_arrive_in_order_once_and_stay_bounded() {
    let redis = RedisServer::start().await;
    let store = Store::connect(&redis.url(), Duration::from_secs(10))
        .await
        .unwrap();
    // Left from an earlier run of node b: not delivered to the new one.
    store.send("b", "stale").await.unwrap();
    let mut inbox = store.inbox("b").await.unwrap();
    let sender = store.clone();
    let send = tokio::spawn(async move {
        for i in 0..2_000 {
            sender.send("b", &format!("m{i}")).await.unwrap();
        }
    });
    let mut got = Vec::new();
    while got.len() < 2_000 {
        got.extend(inbox.next(500).await.unwrap());
    }
    send.await.unwrap();
    let want: Vec<String> = (0..2_000).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
    assert!(inbox.next(10).await.unwrap().is_empty(), "each once");
    // A reader gone for good leaves at most about INBOX_MAX entries behind.
    for i in 0..12_000 {
        store.send("gone", &format!("x{i}")).await.unwrap();
    }
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let len: usize = redis::cmd("XLEN")
        .arg("sfu:inbox:gone")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(len <= sfu::cluster::INBOX_MAX + 200, "{len}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_away_costs_errors_not_hangs_and_the_store_comes_back() {
    let mut redis = RedisServer::start().await;
    let store = Store::connect(&redis.url(), Duration::from_secs(10))
        .await
        .unwrap();
    store.heartbeat(&node("a")).await.unwrap();
    let mut inbox = store.inbox("a").await.unwrap();
    redis.kill().await;
    let t = std::time::Instant::now();
    assert!(store.heartbeat(&node("a")).await.is_err());
    assert!(store.claim("c", "a", &["x"]).await.is_err());
    assert!(inbox.next(10).await.is_err());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "errors within the deadlines: {:?}",
        t.elapsed()
    );
    // Back (empty, as after a restart without persistence): the same store works again.
    redis.restart().await;
    let mut ok = false;
    for _ in 0..40 {
        if store.heartbeat(&node("a")).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "reconnected without a new client");
    assert_eq!(store.nodes().await.unwrap().len(), 1);
    store.send("a", "after").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..20 {
        match inbox.next(10).await {
            Ok(m) if !m.is_empty() => {
                got = m;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(got, ["after"], "the inbox reads again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_call_directory_writes_changes_and_survives_a_redis_restart() {
    use sfu::cluster::CallDirectoryWriter;
    use sfu::directory::{LiveCall, LiveMember};
    let mut redis = RedisServer::start().await;
    let store = Store::connect(&redis.url(), Duration::from_secs(6))
        .await
        .unwrap();
    store.heartbeat(&node("a")).await.unwrap();
    let call = |id: &str, bob: &str| LiveCall {
        call_id: id.into(),
        host: "a".into(),
        group: false,
        media: sfu::protocol::Media::Audio,
        started_at: 1,
        members: vec![LiveMember {
            user: "bob".into(),
            state: bob.into(),
        }],
    };
    let listed = |v: Vec<String>| {
        let mut v: Vec<LiveCall> = v.iter().map(|e| serde_json::from_str(e).unwrap()).collect();
        v.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        v
    };
    let mut w = CallDirectoryWriter::default();
    w.write(&store, "a", &[call("c1", "ringing"), call("c2", "joined")])
        .await
        .unwrap();
    assert_eq!(
        listed(store.live_calls().await.unwrap()),
        [call("c1", "ringing"), call("c2", "joined")]
    );
    // c1's bob answers, c2 ends.
    w.write(&store, "a", &[call("c1", "joined")]).await.unwrap();
    assert_eq!(
        listed(store.live_calls().await.unwrap()),
        [call("c1", "joined")]
    );
    // Redis restarts empty: the next (unchanged) snapshot writes it all again.
    redis.restart().await;
    let mut back = false;
    for _ in 0..40 {
        // (The first command after the restart may meet the old socket and fail.)
        if store.heartbeat(&node("a")).await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the store reconnects");
    w.write(&store, "a", &[call("c1", "joined")]).await.unwrap();
    assert_eq!(
        listed(store.live_calls().await.unwrap()),
        [call("c1", "joined")]
    );
    // A node that is not in the registry lists nothing.
    store.leave("a").await.unwrap();
    assert!(store.live_calls().await.unwrap().is_empty());
}
