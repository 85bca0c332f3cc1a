//! A media leg's UDP socket, in one of two modes. While the session sets up it is on the
//! reactor: each datagram wakes the caller at once (ICE and DTLS want prompt answers). Once
//! media flows it is polled: taken off the reactor, read when the caller wakes anyway (to send
//! its next frame or serve a timer), with the kernel's arrival time of each datagram, so that
//! hundreds of callers do not wake a thread per datagram and latency and jitter stay true.
//! [`open_leg`] opens one: a str0m client, its socket and the server's answer to its offer.
//! With `--transport tcp` the leg is an ICE-TCP connection to the server's passive candidate
//! instead (RFC 6544 active side, RFC 4571 framing), always on the reactor.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use serde_json::json;
use sfu::ice_tcp::{FrameDecoder, encode};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, TcpType};
use str0m::{Candidate, Rtc, RtcConfig};
use tokio::net::{TcpStream, UdpSocket};

use crate::caller::Shared;
use crate::signal::Signal;

pub enum LegSocket {
    Reactor(UdpSocket),
    Polled(std::net::UdpSocket),
    Tcp(TcpLeg),
}

/// Bytes waiting for a slow TCP connection; past this, datagrams are dropped as a full UDP
/// socket buffer would drop them.
const TCP_BACKLOG: usize = 256 * 1024;

/// An ICE-TCP connection to the server, framed.
pub struct TcpLeg {
    stream: TcpStream,
    server: SocketAddr,
    frames: FrameDecoder,
    /// Framed bytes not yet taken by the socket.
    out: BytesMut,
    closed: bool,
}

impl TcpLeg {
    fn send(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.out.len() + data.len() + 2 <= TCP_BACKLOG {
            encode(&mut self.out, data).map_err(io::Error::other)?;
        }
        while !self.out.is_empty() {
            match self.stream.try_write(&self.out) {
                Ok(n) => {
                    let _ = self.out.split_to(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(data.len())
    }

    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            if self.closed {
                return std::future::pending().await;
            }
            match self.frames.next_frame() {
                Ok(Some(f)) => {
                    let n = f.len().min(buf.len());
                    buf[..n].copy_from_slice(&f[..n]);
                    return Ok((n, self.server));
                }
                Ok(None) => {}
                Err(e) => {
                    self.closed = true;
                    return Err(io::Error::other(e));
                }
            }
            self.stream.readable().await?;
            match self.stream.try_read_buf(self.frames.buffer()) {
                Ok(0) => {
                    self.closed = true;
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.closed = true;
                    return Err(e);
                }
            }
        }
    }
}

impl LegSocket {
    pub fn try_send_to(&mut self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        match self {
            Self::Reactor(s) => s.try_send_to(data, to),
            Self::Polled(s) => s.send_to(data, to),
            Self::Tcp(t) => t.send(data),
        }
    }

    /// The next datagram, as soon as it comes; never, once polled (see [`LegSocket::poll`]).
    pub async fn recv_now(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            Self::Reactor(s) => s.recv_from(buf).await,
            Self::Polled(_) => std::future::pending().await,
            Self::Tcp(t) => t.recv(buf).await,
        }
    }

    /// Whether it is read by [`LegSocket::poll`] (a TCP leg never is: it stays on the
    /// reactor, and counts as done switching).
    pub fn is_polled(&self) -> bool {
        matches!(self, Self::Polled(_) | Self::Tcp(_))
    }

    /// The transport str0m must be told datagrams came over.
    pub fn proto(&self) -> Protocol {
        match self {
            Self::Tcp(_) => Protocol::Tcp,
            _ => Protocol::Udp,
        }
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
            other => Ok(other),
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
    let mut rtc: Rtc = RtcConfig::new()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .set_rtcp_report_interval_audio(Duration::from_secs(1))
        .build(Instant::now());
    let udp = match shared.tcp {
        true => None,
        false => {
            let (socket, local) = udp_socket(&sig.url).await?;
            rtc.add_local_candidate(
                Candidate::host(local, "udp").map_err(|e| anyhow::anyhow!("candidate: {e}"))?,
            );
            Some((socket, local))
        }
    };
    let mut api = rtc.sdp_api();
    let audio_mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let video_mid: Option<Mid> = shared.video.then(|| {
        let layers = crate::video::simulcast(shared.simulcast);
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, layers)
    });
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
    let answer = answer["sdp"].as_str().unwrap_or_default();
    let (socket, local) = match udp {
        Some((socket, local)) => (LegSocket::Reactor(socket), local),
        None => {
            // The active side of ICE-TCP: connect to the server's passive candidate, then
            // tell str0m the connection's local end is our candidate.
            let server = passive_tcp_candidate(answer).ok_or_else(|| {
                anyhow::anyhow!("answer: no passive tcp candidate (ICE-TCP off?)")
            })?;
            let stream = TcpStream::connect(server)
                .await
                .map_err(|e| anyhow::anyhow!("ICE-TCP connect {server}: {e}"))?;
            stream.set_nodelay(true)?;
            let local = stream.local_addr()?;
            let c = Candidate::builder()
                .tcp()
                .host(local)
                .tcptype(TcpType::Active)
                .build()
                .map_err(|e| anyhow::anyhow!("candidate: {e}"))?;
            rtc.add_local_candidate(c);
            let leg = TcpLeg {
                stream,
                server,
                frames: FrameDecoder::new(sfu::udp::DATAGRAM_MAX),
                out: BytesMut::new(),
                closed: false,
            };
            (LegSocket::Tcp(leg), local)
        }
    };
    let answer = SdpAnswer::from_sdp_string(answer).map_err(|e| anyhow::anyhow!("answer: {e}"))?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| anyhow::anyhow!("answer: {e}"))?;
    Ok((rtc, socket, local, audio_mid, video_mid))
}

/// The address of the `tcptype passive` candidate in an SDP.
fn passive_tcp_candidate(sdp: &str) -> Option<SocketAddr> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a="))
        .filter_map(|l| Candidate::from_sdp_string(l).ok())
        .find(|c| c.proto() == Protocol::Tcp && c.tcptype() == Some(TcpType::Passive))
        .map(|c| c.addr())
}

/// A UDP socket bound like the server will see us: on the local address toward the server.
async fn udp_socket(url: &str) -> anyhow::Result<(UdpSocket, SocketAddr)> {
    let socket = UdpSocket::bind("0.0.0.0:0").await?;
    let server_ip = server_ip(url).await?;
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
    Ok((socket, local))
}
