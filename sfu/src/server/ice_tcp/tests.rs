//! The connection halves against in-memory streams, on tokio's paused clock.

use super::*;
use tokio::io::{AsyncWriteExt, duplex};

fn stun_frame() -> Vec<u8> {
    let mut f = BytesMut::new();
    encode(&mut f, &[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42]).unwrap();
    f.to_vec()
}

fn peer() -> SocketAddr {
    "192.0.2.7:50000".parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_loses_frames_then_is_closed() {
    // The client's side of the connection is never read: 4 KiB of socket buffer in all.
    let (_client, mut server) = duplex(4096);
    let (tx, mut rx) = mpsc::channel(WRITE_QUEUE);
    let writer = tokio::spawn(async move { write_frames(&mut server, &mut rx).await });
    let (mut sent, mut refused) = (0, 0);
    for _ in 0..2_000 {
        // What the Worker does: never wait.
        match tx.try_send(vec![0x80; 1000]) {
            Ok(()) => sent += 1,
            Err(_) => refused += 1,
        }
        tokio::task::yield_now().await;
    }
    assert!(sent <= WRITE_QUEUE + 70, "bounded: {sent} taken");
    assert!(refused >= 1_700, "the rest dropped at once: {refused}");
    // Nothing moves for WRITE_STALL: the connection is given up.
    tokio::time::advance(WRITE_STALL + Duration::from_secs(1)).await;
    assert_eq!(writer.await.unwrap(), "stalled");
}

#[tokio::test(start_paused = true)]
async fn frames_reach_the_worker_in_order_and_bad_streams_are_closed() {
    let metrics = Metrics::new();
    // Good: a binding request, then datagrams split across writes.
    let (mut client, mut server) = duplex(64 * 1024);
    let (inbox, mut worker) = mpsc::channel(16);
    let mut wire = stun_frame();
    for i in 0..5u8 {
        encode_into(&mut wire, &[0x80, i]);
    }
    client.write_all(&wire[..7]).await.unwrap();
    client.write_all(&wire[7..]).await.unwrap();
    drop(client);
    assert_eq!(
        read_frames(&mut server, peer(), &inbox, &metrics, &|| {}).await,
        "eof"
    );
    let mut got = Vec::new();
    while let Ok(TcpInput::Frame { data, .. }) = worker.try_recv() {
        got.push(data.to_vec());
    }
    assert_eq!(got.len(), 6);
    assert_eq!(got[5], vec![0x80, 4]);

    // Not ICE first.
    let (mut client, mut server) = duplex(1024);
    client.write_all(&[0, 3, 0x80, 0, 0]).await.unwrap();
    assert_eq!(
        read_frames(&mut server, peer(), &inbox, &metrics, &|| {}).await,
        "not_ice"
    );

    // A length over FRAME_MAX, before its bytes.
    let (mut client, mut server) = duplex(1024);
    client.write_all(&stun_frame()).await.unwrap();
    client.write_all(&[0xff, 0xff]).await.unwrap();
    assert_eq!(
        read_frames(&mut server, peer(), &inbox, &metrics, &|| {}).await,
        "oversized"
    );

    // Silent from the start, and silent later.
    let (_client, mut server) = duplex(1024);
    assert_eq!(
        read_frames(&mut server, peer(), &inbox, &metrics, &|| {}).await,
        "idle"
    );
    let (mut client, mut server) = duplex(1024);
    client.write_all(&stun_frame()).await.unwrap();
    assert_eq!(
        read_frames(&mut server, peer(), &inbox, &metrics, &|| {}).await,
        "idle"
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_behind_costs_frames_not_the_connection() {
    let metrics = Metrics::new();
    let (mut client, mut server) = duplex(1 << 20);
    let (inbox, mut worker) = mpsc::channel(8);
    let mut wire = stun_frame();
    for _ in 0..100 {
        encode_into(&mut wire, &[0x80; 200]);
    }
    client.write_all(&wire).await.unwrap();
    drop(client);
    assert_eq!(
        read_frames(&mut server, peer(), &inbox, &metrics, &|| {}).await,
        "eof"
    );
    let dropped = metrics
        .datagrams_dropped
        .with_label_values(&["tcp_receive_queue_full"])
        .get();
    let mut taken = 0;
    while worker.try_recv().is_ok() {
        taken += 1;
    }
    assert_eq!(taken, 8);
    assert_eq!(dropped, 101 - 8);
}

fn encode_into(wire: &mut Vec<u8>, datagram: &[u8]) {
    let mut b = BytesMut::new();
    encode(&mut b, datagram).unwrap();
    wire.extend_from_slice(&b);
}

#[test]
fn a_full_worker_evicts_the_oldest_silent_connection_never_one_that_spoke() {
    let slots = Arc::new(Slots::default());
    let a = slots.admit(3).unwrap();
    let b = slots.admit(3).unwrap();
    let c = slots.admit(3).unwrap();
    a.spoke();
    c.spoke();
    // Full: the new one takes b's slot (b is told to go), never a's or c's.
    let d = slots.admit(3).expect("b evicted for it");
    assert_eq!(slots.open(), 4, "b's slot is freed when its task ends");
    drop(b);
    assert_eq!(slots.open(), 3);
    d.spoke();
    // Everyone spoke: a further connection is refused.
    assert!(slots.admit(3).is_none());
    drop(a);
    assert!(slots.admit(3).is_some(), "a freed slot is taken again");
    drop((c, d));
}

#[tokio::test]
async fn an_evicted_connection_is_told_at_once() {
    let slots = Arc::new(Slots::default());
    let silent = slots.admit(1).unwrap();
    let _new = slots.admit(1).unwrap();
    tokio::time::timeout(Duration::from_secs(1), silent.evict.notified())
        .await
        .expect("the silent one is told to go");
}
