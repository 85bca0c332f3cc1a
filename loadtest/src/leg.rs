//! A media leg's UDP socket, in one of two modes. While the session sets up it is on the
//! reactor: each datagram wakes the caller at once (ICE and DTLS want prompt answers). Once
//! media flows it is polled: taken off the reactor, read when the caller wakes anyway (to send
//! its next frame or serve a timer), with the kernel's arrival time of each datagram, so that
//! hundreds of callers do not wake a thread per datagram and latency and jitter stay true.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Instant, SystemTime};

use tokio::net::UdpSocket;

pub enum LegSocket {
    Reactor(UdpSocket),
    Polled(std::net::UdpSocket),
}

impl LegSocket {
    pub fn try_send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        match self {
            Self::Reactor(s) => s.try_send_to(data, to),
            Self::Polled(s) => s.send_to(data, to),
        }
    }

    /// The next datagram, as soon as it comes; never, once polled (see [`LegSocket::poll`]).
    pub async fn recv_now(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            Self::Reactor(s) => s.recv_from(buf).await,
            Self::Polled(_) => std::future::pending().await,
        }
    }

    pub fn is_polled(&self) -> bool {
        matches!(self, Self::Polled(_))
    }

    /// Takes the socket off the reactor; from now on read it with [`LegSocket::poll`].
    pub fn into_polled(self) -> io::Result<Self> {
        match self {
            Self::Reactor(s) => {
                let s = s.into_std()?;
                s.set_nonblocking(true)?;
                sfu::udp::enable_rx_timestamps(s.as_raw_fd())?;
                Ok(Self::Polled(s))
            }
            polled => Ok(polled),
        }
    }

    /// A datagram waiting on a polled socket, with when it arrived (on the monotonic clock,
    /// never before `floor`: str0m's inputs must not go back in time). `None` when there is
    /// none (or the socket is on the reactor).
    pub fn poll(&self, buf: &mut [u8], floor: Instant) -> Option<(usize, SocketAddr, Instant)> {
        let Self::Polled(s) = self else {
            return None;
        };
        let (n, source, at) = sfu::udp::recv_timed(s.as_raw_fd(), buf).ok()?;
        let now = Instant::now();
        let waited = at
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .unwrap_or_default();
        let arrived = now.checked_sub(waited).unwrap_or(now).max(floor).min(now);
        Some((n, source, arrived))
    }
}
