//! A cluster of real `sfu` nodes on a real `redis-server` (each test starts its own, on
//! ephemeral ports): users on different nodes call each other with the rules of a single node,
//! media flows from each client straight to the call's host node, 50 callers on three nodes
//! race for one callee, a node killed ends or keeps calls as docs/architecture.md says, and a
//! Redis restart mid-call keeps the call's media and signaling while cross-node asks answer
//! 5000, until the nodes publish everything again.

mod common;

use std::time::Duration;

use common::media::{Media, listener, talk};
use common::redis::RedisServer;
use common::{Closed, Server, connected_call};
use serde_json::{Value, json};
use tokio::sync::watch;

async fn nodes(redis: &RedisServer, names: &[&str]) -> Vec<Server> {
    let mut out = Vec::new();
    for n in names {
        out.push(
            Server::start(&[
                "--redis",
                &redis.url(),
                "--node-id",
                n,
                "--quality-interval",
                "2s",
                "--log-level",
                "info,sfu::server::cluster=debug",
            ])
            .await,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_different_nodes_call_with_the_single_node_rules() {
    let redis = RedisServer::start().await;
    let s = nodes(&redis, &["a", "b", "c"]).await;
    let mut alice = s[0].login("alice").await;
    let mut bob = s[1].login("bob").await;
    let call = connected_call(&mut alice, &mut bob, "audio").await;
    assert!(
        call.starts_with("a."),
        "hosted by the caller's node: {call}"
    );
    // Relayed both ways.
    bob.request("message", json!({"call_id": call, "text": "hi"}))
        .await
        .unwrap();
    assert_eq!(alice.expect_past_reports("message").await["text"], "hi");
    alice
        .request("dtmf", json!({"call_id": call, "digits": "1#"}))
        .await
        .unwrap();
    assert_eq!(bob.expect("dtmf").await["digits"], "1#");
    // Busy across nodes.
    let mut carol = s[2].login("carol").await;
    carol
        .request("call", json!({"to": ["bob"], "media": "audio"}))
        .await
        .unwrap();
    assert_eq!(carol.expect("busy").await["user"], "bob");
    assert_eq!(carol.expect("call_end").await["reason"], "busy");
    // Takeover: bob logs in on node c; his socket on b is replaced, the call goes on.
    let mut bob2 = s[2].login("bob").await;
    let (code, frames) = bob.closed().await;
    assert_eq!(code, Closed::Code(4000));
    assert!(
        frames.iter().any(|f| f["method"] == "session_replaced"),
        "{frames:?}"
    );
    assert_eq!(bob2.expect("user_enter").await["user"], "alice");
    bob2.request("message", json!({"call_id": call, "text": "moved"}))
        .await
        .unwrap();
    assert_eq!(alice.expect_past_reports("message").await["text"], "moved");
    bob2.request("hangup", json!({"call_id": call}))
        .await
        .unwrap();
    assert_eq!(alice.expect("user_leave").await["user"], "bob");
    assert_eq!(alice.expect("call_end").await["reason"], "hangup");
    // Cancel and reject across nodes; an offline callee who logs in on another node rings there.
    let r = carol
        .request("call", json!({"to": ["dave"], "media": "audio"}))
        .await
        .unwrap();
    let c2 = r["call_id"].as_str().unwrap().to_string();
    let mut dave = s[0].login("dave").await;
    assert_eq!(dave.expect("invited").await["call_id"], c2.as_str());
    dave.request("reject", json!({"call_id": c2}))
        .await
        .unwrap();
    assert_eq!(carol.expect("rejected").await["user"], "dave");
    // The admin API lists the nodes.
    let nodes = common::admin_json(&s[0], "/api/nodes").await;
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 3, "{nodes}");
    assert!(
        s[0].metric("sfu_cluster_envelopes_total{direction=\"sent\"}")
            .await
            > 0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_flows_between_users_on_different_nodes() {
    let redis = RedisServer::start().await;
    let s = nodes(&redis, &["a", "b"]).await;
    let mut a = s[0].login("alice").await;
    let mut b = s[1].login("bob").await;
    let call = connected_call(&mut a, &mut b, "audio").await;
    let (a_done, a_rx) = watch::channel(false);
    let (b_done, b_rx) = watch::channel(false);
    let mut steps = vec![common::media::Step::Offer, talk(Duration::from_secs(3))];
    steps.push(common::media::Step::Done);
    let a = Media::new(a, &call, 0).await;
    let b = Media::new(b, &call, 1).await;
    let ta = tokio::spawn(a.run(steps, a_done, b_rx));
    let tb = tokio::spawn(b.run(listener(), b_done, a_rx));
    let (sa, sb) = (ta.await.unwrap(), tb.await.unwrap());
    assert!(
        sb.got.len() > 100,
        "bob (on node b) heard alice: {}",
        sb.got.len()
    );
    assert!(sa.got.len() > 100, "alice heard bob: {}", sa.got.len());
    // Media went to the host (node a): bob's answer names node a's media address.
    let host_media = s[0].media_addrs();
    assert!(
        host_media
            .iter()
            .any(|m| sb.answer.contains(&m.port().to_string())),
        "bob's answer names the host's media port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_callers_on_three_nodes_race_for_one_callee() {
    let redis = RedisServer::start().await;
    let s = nodes(&redis, &["a", "b", "c"]).await;
    let mut bob = s[0].login("bob").await;
    let mut callers = Vec::new();
    for i in 0..50 {
        callers.push(s[i % 3].login(&format!("caller{i}")).await);
    }
    let mut tasks = Vec::new();
    for mut c in callers {
        tasks.push(tokio::spawn(async move {
            c.request("call", json!({"to": ["bob"], "media": "audio"}))
                .await
                .unwrap();
            c
        }));
    }
    let mut callers = Vec::new();
    for t in tasks {
        callers.push(t.await.unwrap());
    }
    let inv = bob.expect("invited").await;
    bob.expect_silence(Duration::from_millis(1500)).await;
    let mut busy = 0;
    for c in &mut callers {
        if c.user == inv["from"] {
            continue;
        }
        assert_eq!(c.expect("busy").await["user"], "bob");
        assert_eq!(c.expect("call_end").await["reason"], "busy");
        busy += 1;
    }
    assert_eq!(busy, 49, "exactly one rings, every other caller gets busy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_host_ends_calls_with_error_and_a_killed_edge_is_a_disconnect() {
    let redis = RedisServer::start().await;
    let s = nodes(&redis, &["a", "b", "c"]).await;
    // Host a killed: bob on b hears `call_end` with `error` within 15 s, and calls again.
    let mut alice = s[0].login("alice").await;
    let mut bob = s[1].login("bob").await;
    let call = connected_call(&mut alice, &mut bob, "audio").await;
    s[0].signal("KILL");
    let t = std::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(15), bob.expect("call_end"))
        .await
        .expect("call_end within 15 s");
    assert_eq!(end["call_id"], call.as_str());
    assert_eq!(end["reason"], "error");
    eprintln!("host loss noticed in {:?}", t.elapsed());
    let mut carol = s[2].login("carol").await;
    bob.request("call", json!({"to": ["carol"], "media": "audio"}))
        .await
        .unwrap();
    let inv = carol.expect("invited").await;
    assert_eq!(inv["from"], "bob");
    carol
        .request("reject", json!({"call_id": inv["call_id"]}))
        .await
        .unwrap();
    // Edge b killed while bob is in carol's call on c: after the grace, carol sees him leave.
    let mut carol2 = s[2].login("erin").await;
    let mut dan = s[1].login("dan").await;
    let c2 = connected_call(&mut carol2, &mut dan, "audio").await;
    s[1].signal("KILL");
    let leave = tokio::time::timeout(Duration::from_secs(30), carol2.expect("user_leave"))
        .await
        .expect("user_leave after the grace");
    assert_eq!(leave["user"], "dan");
    assert_eq!(leave["reason"], "disconnected");
    assert_eq!(carol2.expect("call_end").await["call_id"], c2.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_keeps_running_calls_and_the_cluster_recovers() {
    let mut redis = RedisServer::start().await;
    let s = nodes(&redis, &["a", "b"]).await;
    let mut alice = s[0].login("alice").await;
    let mut bob = s[1].login("bob").await;
    let mut carol = s[1].login("carol").await;
    let _dave = s[0].login("dave").await;
    let call = connected_call(&mut alice, &mut bob, "audio").await;
    let (a_done, a_rx) = watch::channel(false);
    let (b_done, b_rx) = watch::channel(false);
    let a = Media::new(alice, &call, 0).await;
    let b = Media::new(bob, &call, 1).await;
    let steps = vec![
        common::media::Step::Offer,
        talk(Duration::from_secs(9)),
        common::media::Step::Done,
    ];
    let ta = tokio::spawn(a.run_keeping_socket(steps, a_done, b_rx));
    let tb = tokio::spawn(b.run_keeping_socket(listener(), b_done, a_rx));

    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.kill().await;
    // Redis away: a new cross-node call is refused clearly, at once.
    let t = std::time::Instant::now();
    let code = carol
        .error_code("call", json!({"to": ["dave"], "media": "audio"}))
        .await;
    assert_eq!(code, 5000, "cross-node call while Redis is away");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart().await;

    // Redis back, empty: presence is published again and cross-node calls ring once more.
    let t = std::time::Instant::now();
    let rang = loop {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "cluster recovered within 15 s"
        );
        match carol
            .request("call", json!({"to": ["dave"], "media": "audio"}))
            .await
        {
            Ok(r) => break r["call_id"].as_str().unwrap().to_string(),
            Err(e) => {
                assert_eq!(e["code"], 5000, "{e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    eprintln!(
        "cross-node calls again {:?} after Redis returned",
        t.elapsed()
    );
    carol
        .request("hangup", json!({"call_id": rang}))
        .await
        .unwrap();

    let ((sa, mut alice), (sb, mut bob)) = (ta.await.unwrap(), tb.await.unwrap());
    // Media never stopped: bob heard alice's packets from before, during and after the outage.
    let sent = sa.marks.last().unwrap().1;
    assert!(
        sb.got.len() as f64 > 0.9 * sent as f64,
        "bob heard {} of alice's {sent} packets",
        sb.got.len()
    );
    assert!(sa.got.len() > 300, "alice heard bob: {}", sa.got.len());
    // The running call's signaling is relayed again, both ways.
    bob.request("message", json!({"call_id": call, "text": "still here"}))
        .await
        .unwrap();
    assert_eq!(
        alice.expect_past_reports("message").await["text"],
        "still here"
    );
    alice
        .request("mute", json!({"call_id": call, "audio": true}))
        .await
        .unwrap();
    let n = bob.expect_past_reports("audio_available").await;
    assert_eq!(
        (&n["user"], &n["available"]),
        (&json!("alice"), &json!(false))
    );
    // The live-call directory was written again (Redis lost it with the rest).
    common::live_calls_until(&s[1], |c| c.iter().any(|c| c["call_id"] == call.as_str())).await;
    // Busy claims were made again: carol (on b) calling alice (busy on a) hears `busy`.
    carol
        .request("call", json!({"to": ["alice"], "media": "audio"}))
        .await
        .unwrap();
    assert_eq!(carol.expect("busy").await["user"], "alice");
    assert_eq!(carol.expect("call_end").await["reason"], "busy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_over_its_threshold_places_new_calls_on_another_node() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let a = Server::start(&["--redis", &url, "--node-id", "a", "--spill-above", "1"]).await;
    let b = Server::start(&["--redis", &url, "--node-id", "b"]).await;
    let mut alice = a.login("alice").await;
    let mut bob = a.login("bob").await;
    let first = connected_call(&mut alice, &mut bob, "audio").await;
    assert!(first.starts_with("a."), "{first}");
    // a hosts one call: once its heartbeat saw b (every 2 s), the next call goes to b, though
    // every user is on a.
    let mut carol = a.login("carol").await;
    let mut dave = a.login("dave").await;
    let t = std::time::Instant::now();
    let call = loop {
        let c = connected_call(&mut carol, &mut dave, "audio").await;
        if c.starts_with("b.") {
            break c;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "placed on b: {c}");
        carol
            .request("hangup", json!({"call_id": c}))
            .await
            .unwrap();
        dave.expect("user_leave").await;
        dave.expect("call_end").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The call lives on b: its rules and relays work for both users on a.
    dave.request("message", json!({"call_id": call, "text": "on b"}))
        .await
        .unwrap();
    assert_eq!(carol.expect_past_reports("message").await["text"], "on b");
    b.wait_metric("sfu_calls_active", 1.0).await;
    carol
        .request("hangup", json!({"call_id": call}))
        .await
        .unwrap();
    assert_eq!(
        dave.expect_past_reports("user_leave").await["user"],
        "carol"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_over_three_nodes_verifies_who_hears_whom() {
    let redis = RedisServer::start().await;
    let s = nodes(&redis, &["a", "b", "c"]).await;
    let others = format!("{},{}", s[1].ws_url(), s[2].ws_url());
    // 100 audio callers: every pair's caller and callee on different nodes.
    let (code, r) = common::loadtest(
        &s[0],
        "cl1v1",
        &[
            "--url",
            &others,
            "--calls",
            "50",
            "--duration",
            "5s",
            "--ramp",
            "25",
        ],
    )
    .await;
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["passed"], true);
    assert_eq!(r["callers"], 100);
    assert_eq!(r["calls"]["connected"], 50, "{}", r["calls"]);
    assert!(
        r["mos_up"]["p50"].as_f64().unwrap() > 4.2,
        "{}",
        r["mos_up"]
    );
    let by_url = r["by_url"].as_object().unwrap();
    assert_eq!(by_url.len(), 3, "{by_url:?}");
    for (url, u) in by_url {
        assert!(u["callers"].as_u64().unwrap() >= 33, "{url}: {u}");
        assert_eq!(u["failed_verification"], 0, "{url}: {u}");
    }
    // A group of 4 over the 3 nodes with audio and video, muting and holding: each member
    // hears and sees exactly the other three, and is told who speaks and the call's quality.
    let (code, r) = common::loadtest(
        &s[0],
        "clgroup",
        &[
            "--url",
            &others,
            "--scenario",
            "group",
            "--group-size",
            "4",
            "--calls",
            "1",
            "--media",
            "video",
            "--duration",
            "8s",
            "--mute-every",
            "3s",
            "--hold-every",
            "4s",
        ],
    )
    .await;
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["passed"], true);
    assert_eq!(r["calls"]["connected"], 1);
    assert_eq!(r["volume_named_speakers"]["yes"], 4);
    assert!(r["toggles"].as_u64().unwrap() >= 4, "{}", r["toggles"]);
    assert!(
        r["mos_up"]["samples"].as_u64().unwrap() > 0,
        "quality reported"
    );
    assert!(
        r["mos_down"]["samples"].as_u64().unwrap() > 0,
        "quality reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_invites_no_answer_cancel_mute_and_reconnect_across_nodes() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let mut s = Vec::new();
    for id in ["a", "b", "c"] {
        let args = [
            "--redis",
            &url,
            "--node-id",
            id,
            "--invite-timeout",
            "2s",
            "--reconnect-grace",
            "4s",
        ];
        s.push(Server::start(&args).await);
    }
    // Cancel: bob on b hears `cancelled` when alice (on a) hangs up before he answers.
    let mut alice = s[0].login("alice").await;
    let mut bob = s[1].login("bob").await;
    let mut carol = s[2].login("carol").await;
    let r = alice
        .request("call", json!({"to": ["bob"], "media": "audio"}))
        .await
        .unwrap();
    let c0 = r["call_id"].as_str().unwrap().to_string();
    bob.expect("invited").await;
    alice
        .request("hangup", json!({"call_id": c0}))
        .await
        .unwrap();
    assert_eq!(bob.expect("cancelled").await["call_id"], c0.as_str());

    // A group call hosted on a with members on b and c.
    let r = alice
        .request("call", json!({"to": ["bob", "carol"], "media": "audio"}))
        .await
        .unwrap();
    let call = r["call_id"].as_str().unwrap().to_string();
    for c in [&mut bob, &mut carol] {
        assert_eq!(c.expect("invited").await["group"], true);
        c.request("accept", json!({"call_id": call})).await.unwrap();
    }
    assert_eq!(alice.expect("accepted").await["user"], "bob");
    assert_eq!(alice.expect("user_enter").await["user"], "bob");
    assert_eq!(alice.expect("accepted").await["user"], "carol");
    assert_eq!(alice.expect("user_enter").await["user"], "carol");
    bob.expect("user_enter").await; // alice
    assert_eq!(bob.expect("accepted").await["user"], "carol");
    assert_eq!(bob.expect("user_enter").await["user"], "carol");
    carol.expect("user_enter").await;
    carol.expect("user_enter").await;

    // bob (a member on b) invites dave on c, who never answers: no_response to everyone joined.
    let mut dave = s[2].login("dave").await;
    bob.request("invite", json!({"call_id": call, "to": ["dave"]}))
        .await
        .unwrap();
    let inv = dave.expect("invited").await;
    assert_eq!((&inv["from"], &inv["group"]), (&json!("bob"), &json!(true)));
    assert_eq!(
        dave.expect("invite_timeout").await["call_id"],
        call.as_str()
    );
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(c.expect("no_response").await["user"], "dave");
    }

    // carol (on c) mutes: the others, on a and b, are told at once.
    carol
        .request("mute", json!({"call_id": call, "audio": true}))
        .await
        .unwrap();
    for c in [&mut alice, &mut bob] {
        let n = c.expect("audio_available").await;
        assert_eq!(
            (&n["user"], &n["available"]),
            (&json!("carol"), &json!(false))
        );
    }

    // bob's network drops; he comes back on node c within the grace: nobody sees him leave,
    // he is told who is in the call, and he is still muted-aware members' peer.
    bob.drop_hard();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut bob = s[2].login("bob").await;
    let mut back: Vec<String> = Vec::new();
    for _ in 0..2 {
        back.push(
            bob.expect("user_enter").await["user"]
                .as_str()
                .unwrap()
                .into(),
        );
    }
    back.sort();
    assert_eq!(back, ["alice", "carol"]);
    alice.expect_silence(Duration::from_secs(5)).await;
    bob.request("message", json!({"call_id": call, "text": "back on c"}))
        .await
        .unwrap();
    assert_eq!(alice.expect("message").await["user"], "bob");
    assert_eq!(carol.expect("message").await["text"], "back on c");

    // carol's connection dies for good: after the grace, the others see her leave.
    carol.drop_hard();
    let leave = tokio::time::timeout(Duration::from_secs(10), alice.expect("user_leave"))
        .await
        .expect("user_leave after the grace");
    assert_eq!(
        (&leave["user"], &leave["reason"]),
        (&json!("carol"), &json!("disconnected"))
    );
    assert_eq!(bob.expect("user_leave").await["user"], "carol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_call_directory_spans_the_cluster() {
    let redis = RedisServer::start().await;
    let s = nodes(&redis, &["a", "b", "c"]).await;
    let mut alice = s[0].login("alice").await;
    let mut bob = s[1].login("bob").await;
    let call = connected_call(&mut alice, &mut bob, "audio").await;
    let mut carol = s[2].login("carol").await;
    let r = carol
        .request("call", json!({"to": ["zed"], "media": "video"}))
        .await
        .unwrap();
    let waiting = r["call_id"].as_str().unwrap().to_string();
    // Any node lists every node's calls, with their hosts and members' states.
    let calls = common::live_calls_until(&s[1], |c| c.len() == 2).await;
    let find = |id: &str| calls.iter().find(|c| c["call_id"] == id).unwrap().clone();
    let (c1, c2) = (find(&call), find(&waiting));
    assert!(c1["host"].as_str().unwrap().starts_with("a."), "{c1}");
    assert_eq!(common::member_state(&c1, "bob").as_deref(), Some("joined"));
    assert!(c2["host"].as_str().unwrap().starts_with("c."), "{c2}");
    assert_eq!(common::member_state(&c2, "zed").as_deref(), Some("invited"));
    // Node c killed: its calls leave the directory with it.
    s[2].signal("KILL");
    let calls = common::live_calls_until(&s[0], |c| c.len() == 1).await;
    assert_eq!(calls[0]["call_id"], call.as_str());
    alice
        .request("hangup", json!({"call_id": call}))
        .await
        .unwrap();
    common::live_calls_until(&s[1], <[Value]>::is_empty).await;
}
