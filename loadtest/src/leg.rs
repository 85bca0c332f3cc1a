//! A media leg's UDP socket, in one of two modes. While the session sets up it is on the
//! reactor: each datagram wakes the caller at once (ICE and DTLS want prompt answers). Once
//! media flows it is polled: taken off the reactor, read when the caller wakes anyway (to send
//! its next frame or serve a timer), with the kernel's arrival time of each datagram, so that
//! hundreds of callers do not wake a thread per datagram and latency and jitter stay true.
//! [`open_leg`] opens one: a str0m client, its socket and the server's answer to its offer.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::{Candidate, Rtc, RtcConfig};
use tokio::net::UdpSocket;

use crate::caller::Shared;
use crate::signal::Signal;

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
        // Skip what cannot be read (oversized, an ICMP error reported on the socket) rather
        // than leave the rest for the next wake; bounded, so an error never spins.
        let (n, source, at) =
            (0..64).find_map(|_| match sfu::udp::recv_timed(s.as_raw_fd(), buf) {
                Ok(got) => Some(Some(got)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(None),
                Err(_) => None,
            })??;
        let now = Instant::now();
        let waited = at
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .unwrap_or_default();
        let arrived = now.checked_sub(waited).unwrap_or(now).max(floor).min(now);
        Some((n, source, arrived))
    }
}

/// The server's IP, to pick the local interface that reaches it.
async fn server_ip(url: &str) -> anyhow::Result<std::net::IpAddr> {
    let rest = url
        .split("://")
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("url: expected ws://HOST:PORT/ws"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let addr = tokio::net::lookup_host(hostport)
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("url: cannot resolve {hostport}"))?;
    Ok(addr.ip())
}

/// A media leg: a fresh str0m client on its own UDP socket, offered on `call_id`, with the
/// server's answer applied. A reconnect or re-offer opens a new one, as an SDK does after a
/// network change or an ICE restart.
pub async fn open_leg(
    shared: &Shared,
    sig: &mut Signal,
    call_id: &str,
) -> anyhow::Result<(Rtc, LegSocket, SocketAddr, Mid, Option<Mid>)> {
    let socket = UdpSocket::bind("0.0.0.0:0").await?;
    let server_ip = server_ip(&shared.url).await?;
    // Bind like the server will see us: the local address toward the server.
    socket.connect((server_ip, 9)).await.ok();
    let local: SocketAddr = match socket.local_addr() {
        Ok(a) if !a.ip().is_unspecified() => a,
        _ => SocketAddr::new(
            std::net::IpAddr::from([127, 0, 0, 1]),
            socket.local_addr()?.port(),
        ),
    };
    let socket = {
        // Re-bind on the concrete address (a connected socket would only talk to port 9).
        drop(socket);
        UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await?
    };
    let local = socket.local_addr()?;
    let mut rtc: Rtc = RtcConfig::new()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .set_rtcp_report_interval_audio(Duration::from_secs(1))
        .build(Instant::now());
    rtc.add_local_candidate(
        Candidate::host(local, "udp").map_err(|e| anyhow::anyhow!("candidate: {e}"))?,
    );
    let mut api = rtc.sdp_api();
    let audio_mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let video_mid: Option<Mid> = shared
        .video
        .then(|| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
    let (offer, pending) = api
        .apply()
        .ok_or_else(|| anyhow::anyhow!("offer: nothing to offer"))?;
    let answer = sig
        .request(
            "offer",
            json!({"call_id": call_id, "sdp": offer.to_sdp_string()}),
        )
        .await?;
    // Server offers that came before this response were for the session it replaced.
    sig.queue.retain(|n| n["method"] != "offer");
    let answer = SdpAnswer::from_sdp_string(answer["sdp"].as_str().unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("answer: {e}"))?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| anyhow::anyhow!("answer: {e}"))?;
    Ok((rtc, LegSocket::Reactor(socket), local, audio_mid, video_mid))
}
