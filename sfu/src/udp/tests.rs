//! Batched UDP I/O against real loopback sockets, and the send queue's ordering under
//! partial sends and a full socket buffer.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use super::{
    BATCH, DATAGRAM_MAX, RecvBatch, SendQueue, enable_rx_timestamps, recv_timed, send_batch,
    set_buffers,
};

fn pair(ip: &str) -> (UdpSocket, UdpSocket) {
    let a = UdpSocket::bind(format!("{ip}:0")).expect("bind a");
    let b = UdpSocket::bind(format!("{ip}:0")).expect("bind b");
    a.set_nonblocking(true).expect("nonblocking");
    b.set_nonblocking(true).expect("nonblocking");
    (a, b)
}

/// Everything queued on `socket`, batch by batch, with each batch's size.
fn drain(rx: &mut RecvBatch, socket: &UdpSocket) -> (Vec<(SocketAddr, Vec<u8>)>, Vec<usize>) {
    let (mut got, mut sizes) = (Vec::new(), Vec::new());
    loop {
        match rx.recv(socket.as_raw_fd()) {
            Ok(b) => {
                sizes.push(b.taken());
                got.extend(b.iter().map(|(s, d)| (s, d.to_vec())));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (got, sizes),
            Err(e) => panic!("recv: {e}"),
        }
    }
}

#[test]
fn a_hundred_datagrams_arrive_in_order_in_full_batches() {
    let (server, client) = pair("127.0.0.1");
    for i in 0..100u32 {
        client
            .send_to(&i.to_be_bytes(), server.local_addr().expect("addr"))
            .expect("send");
    }
    let mut rx = RecvBatch::new();
    let (got, sizes) = drain(&mut rx, &server);
    assert_eq!(sizes, vec![BATCH, BATCH, BATCH, 100 - 3 * BATCH]);
    let client_addr = client.local_addr().expect("addr");
    for (i, (source, data)) in got.iter().enumerate() {
        assert_eq!(*source, client_addr);
        assert_eq!(data.as_slice(), (i as u32).to_be_bytes());
    }
    assert_eq!(got.len(), 100);
}

#[test]
fn an_empty_socket_would_block() {
    let (server, _) = pair("127.0.0.1");
    let err = RecvBatch::new()
        .recv(server.as_raw_fd())
        .err()
        .expect("nothing queued");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
}

#[test]
fn an_oversized_datagram_is_dropped_and_counted_not_cut() {
    let (server, client) = pair("127.0.0.1");
    let to = server.local_addr().expect("addr");
    client.send_to(b"before", to).expect("send");
    client.send_to(&[7u8; DATAGRAM_MAX + 1], to).expect("send");
    client.send_to(&[9u8; DATAGRAM_MAX], to).expect("send");
    let mut rx = RecvBatch::new();
    let (got, _) = drain(&mut rx, &server);
    let sizes: Vec<usize> = got.iter().map(|(_, d)| d.len()).collect();
    assert_eq!(sizes, vec![6, DATAGRAM_MAX]);
    assert_eq!(rx.truncated, 1);
}

#[test]
fn one_sendmmsg_reaches_forty_destinations_each_its_own() {
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sender.set_nonblocking(true).expect("nonblocking");
    let sinks: Vec<UdpSocket> = (0..40).map(|_| pair("127.0.0.1").0).collect();
    let mut q = SendQueue::new(1000);
    for (i, s) in sinks.iter().enumerate() {
        q.push(s.local_addr().expect("addr"), vec![i as u8; 100 + i]);
    }
    let mut calls = 0;
    q.flush(|b| {
        calls += 1;
        send_batch(sender.as_raw_fd(), b)
    })
    .expect("flush");
    assert!(q.is_empty());
    assert_eq!(calls, 2, "40 datagrams go in two system calls");
    let mut rx = RecvBatch::new();
    for (i, s) in sinks.iter().enumerate() {
        let (got, _) = drain(&mut rx, s);
        assert_eq!(
            got,
            vec![(sender.local_addr().expect("addr"), vec![i as u8; 100 + i])]
        );
    }
}

#[test]
fn ipv6_round_trip_keeps_the_address() {
    let (server, client) = pair("[::1]");
    let mut q = SendQueue::new(10);
    q.push(server.local_addr().expect("addr"), b"six".to_vec());
    q.flush(|b| send_batch(client.as_raw_fd(), b))
        .expect("flush");
    let (got, _) = drain(&mut RecvBatch::new(), &server);
    assert_eq!(
        got,
        vec![(client.local_addr().expect("addr"), b"six".to_vec())]
    );
}

/// A sender that takes `take[k]` datagrams on its k-th call (0 = the socket buffer is full).
struct Flaky {
    take: Vec<usize>,
    calls: usize,
    sent: Vec<u32>,
}

impl Flaky {
    fn send(&mut self, batch: &[(SocketAddr, Vec<u8>)]) -> io::Result<usize> {
        assert!(!batch.is_empty() && batch.len() <= BATCH);
        let take = self.take.get(self.calls).copied().unwrap_or(BATCH);
        self.calls += 1;
        if take == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = take.min(batch.len());
        for (_, d) in &batch[..n] {
            self.sent
                .push(u32::from_be_bytes(d[..4].try_into().expect("4 bytes")));
        }
        Ok(n)
    }
}

fn numbered(q: &mut SendQueue, range: std::ops::Range<u32>) {
    let to = SocketAddr::from(([127, 0, 0, 1], 9));
    for i in range {
        q.push(to, i.to_be_bytes().to_vec());
    }
}

#[test]
fn a_full_socket_buffer_keeps_the_rest_in_order_for_the_next_flush() {
    let mut q = SendQueue::new(10_000);
    numbered(&mut q, 0..1000);
    // Partial batches, then a full buffer, again and again.
    let mut f = Flaky {
        take: [5, 32, 0, 1, 31, 0, 0, 17].repeat(40),
        calls: 0,
        sent: Vec::new(),
    };
    let mut would_block = 0;
    while !q.is_empty() {
        match q.flush(|b| f.send(b)) {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                would_block += 1;
                // More arrives while the socket is full: it queues behind.
                if would_block == 3 {
                    numbered(&mut q, 1000..1100);
                }
            }
        }
    }
    assert!(would_block > 10);
    assert_eq!(
        f.sent,
        (0..1100).collect::<Vec<_>>(),
        "no loss, no reordering"
    );
    assert_eq!((q.failed, q.overflowed), (0, 0));
}

#[test]
fn a_refused_datagram_is_dropped_alone() {
    let mut q = SendQueue::new(100);
    numbered(&mut q, 0..10);
    let mut sent = Vec::new();
    q.flush(|b| {
        let first = u32::from_be_bytes(b[0].1[..4].try_into().expect("4 bytes"));
        if first == 4 {
            return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
        }
        // Stop at the bad one, as the kernel does.
        let n = b
            .iter()
            .take_while(|(_, d)| d[..4] != 4u32.to_be_bytes())
            .count();
        sent.extend(b[..n].iter().map(|(_, d)| d[3]));
        Ok(n)
    })
    .expect("flush");
    assert_eq!(sent, vec![0, 1, 2, 3, 5, 6, 7, 8, 9]);
    assert_eq!(q.failed, 1);
}

#[test]
fn the_queue_is_bounded() {
    let mut q = SendQueue::new(50);
    numbered(&mut q, 0..80);
    assert_eq!((q.len(), q.overflowed), (50, 30));
}

#[test]
fn socket_buffers_grow_up_to_what_the_kernel_allows() {
    let (socket, _) = pair("127.0.0.1");
    let max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .expect("rmem_max")
        .trim()
        .parse()
        .expect("a number");
    let got = set_buffers(socket.as_raw_fd(), 4 << 20).expect("setsockopt");
    assert_eq!(got, max.min(4 << 20));
}

#[test]
fn a_late_reader_still_learns_when_each_datagram_came() {
    let (server, client) = pair("127.0.0.1");
    enable_rx_timestamps(server.as_raw_fd()).expect("SO_TIMESTAMPNS");
    let to = server.local_addr().expect("addr");
    let before = std::time::SystemTime::now();
    client.send_to(b"first", to).expect("send");
    client.send_to(b"second", to).expect("send");
    let mut buf = [0u8; 64];
    let (n, source, at) = recv_timed(server.as_raw_fd(), &mut buf).expect("first");
    assert_eq!(
        (&buf[..n], source),
        (&b"first"[..], client.local_addr().expect("addr"))
    );
    let first = at.expect("a kernel timestamp");
    assert!(
        first >= before - std::time::Duration::from_millis(1),
        "{first:?} {before:?}"
    );
    let (n, _, at) = recv_timed(server.as_raw_fd(), &mut buf).expect("second");
    assert_eq!(&buf[..n], b"second");
    assert!(at.expect("a kernel timestamp") >= first);
    let e = recv_timed(server.as_raw_fd(), &mut buf).expect_err("empty");
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    // Longer than the buffer: refused, consumed, and the next one reads whole.
    client.send_to(&[7u8; 100], to).expect("send");
    client.send_to(b"after", to).expect("send");
    let e = recv_timed(server.as_raw_fd(), &mut buf).expect_err("oversized");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    let (n, _, _) = recv_timed(server.as_raw_fd(), &mut buf).expect("after");
    assert_eq!(&buf[..n], b"after");
    // Without the option, no timestamp.
    let (plain, client) = pair("127.0.0.1");
    client
        .send_to(b"x", plain.local_addr().expect("addr"))
        .expect("send");
    let (_, _, at) = recv_timed(plain.as_raw_fd(), &mut buf).expect("plain");
    assert_eq!(at, None);
}
