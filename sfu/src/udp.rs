//! Batched UDP I/O: one `recvmmsg` takes up to [`BATCH`] datagrams, one `sendmmsg` sends up to
//! [`BATCH`], so a wake-up costs two system calls instead of two per datagram. Used by the
//! media Workers and by `loadtest`; buffers are allocated once, never per datagram.
//!
//! ```no_run
//! # fn demo(socket: &std::net::UdpSocket) -> std::io::Result<()> {
//! use std::os::fd::AsRawFd;
//! use sfu::udp::{RecvBatch, SendQueue};
//! let mut rx = RecvBatch::new();
//! let mut tx = SendQueue::new(4096);
//! for (source, datagram) in rx.recv(socket.as_raw_fd())?.iter() {
//!     tx.push(source, datagram.to_vec()); // echo
//! }
//! tx.flush(|batch| sfu::udp::send_batch(socket.as_raw_fd(), batch))?;
//! # Ok(()) }
//! ```
//!
//! Invariant: [`SendQueue`] sends in push order; a datagram leaves the queue only once the
//! kernel took it or refused it for a reason of its own (never for a full buffer).

use std::collections::VecDeque;
use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::time::Duration;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Receive buffer per datagram: more than any path MTU; a longer datagram is dropped whole.
pub const DATAGRAM_MAX: usize = 2048;

/// Asks the kernel for `bytes` of receive and send buffer on `fd` (it grants at most
/// `net.core.rmem_max` / `wmem_max`); returns what it granted for receiving. A media socket
/// needs room for the datagrams that arrive while its thread sleeps out a batch window or is
/// preempted: the usual 208 KiB default holds about 7 ms at 25,000 packets/s.
pub fn set_buffers(fd: RawFd, bytes: usize) -> io::Result<usize> {
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: a c_int option value of the stated size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&want as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as _,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let mut got: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a c_int out-value of the stated size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut got as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // Linux reports twice what it granted (the doubling covers its bookkeeping).
    Ok(usize::try_from(got).unwrap_or(0) / 2)
}

/// Has the kernel stamp each datagram `fd` receives with its arrival time (`SO_TIMESTAMPNS`),
/// for [`recv_timed`].
pub fn enable_rx_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a c_int option value of the stated size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as _,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One datagram from the non-blocking socket `fd` into `buf` (a longer one is consumed and
/// refused with `InvalidData`): its length, source and, if
/// [`enable_rx_timestamps`] was called, when the kernel received it (wall clock). A reader that
/// reads late (on its own schedule, not at readiness) still knows when each datagram came.
pub fn recv_timed(
    fd: RawFd,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<std::time::SystemTime>)> {
    let mut name = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: all-zero is a valid msghdr.
    let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
    hdr.msg_name = name.as_mut_ptr().cast();
    hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as _;
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = mem::size_of_val(&control) as _;
    // SAFETY: the header points at live buffers of the stated lengths for the call.
    let n = unsafe { libc::recvmsg(fd, &mut hdr, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the name; an unknown family is refused below.
    let source = unsafe { decode(name.assume_init_ref()) }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown address family"))?;
    let mut at = None;
    // SAFETY: walking the control messages the kernel wrote, with libc's own macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                at = Some(
                    std::time::UNIX_EPOCH
                        + Duration::new(
                            ts.tv_sec.max(0) as u64,
                            ts.tv_nsec.clamp(0, 999_999_999) as u32,
                        ),
                );
            }
            c = libc::CMSG_NXTHDR(&hdr, c);
        }
    }
    if hdr.msg_flags & libc::MSG_TRUNC != 0 {
        // As in `RecvBatch`: a datagram longer than the buffer is dropped whole, never cut.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "datagram longer than the buffer",
        ));
    }
    Ok((n as usize, source, at))
}

/// Receive buffers for one `recvmmsg`, reused for every call.
pub struct RecvBatch {
    bufs: Box<[[u8; DATAGRAM_MAX]]>,
    /// Per buffer of the last call: its source and length, or None if dropped (truncated).
    got: [Option<(SocketAddr, usize)>; BATCH],
    n: usize,
    /// Datagrams longer than [`DATAGRAM_MAX`] seen (and dropped) so far.
    pub truncated: u64,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        Self {
            bufs: vec![[0u8; DATAGRAM_MAX]; BATCH].into_boxed_slice(),
            got: [None; BATCH],
            n: 0,
            truncated: 0,
        }
    }

    /// Takes what is queued on the non-blocking socket `fd`, up to [`BATCH`] datagrams.
    /// `WouldBlock` when there is none.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<&Self> {
        self.n = 0;
        let mut names = [MaybeUninit::<libc::sockaddr_storage>::zeroed(); BATCH];
        // SAFETY: all-zero is a valid iovec and mmsghdr (null pointers, zero lengths).
        let mut iovs: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for i in 0..BATCH {
            iovs[i].iov_base = self.bufs[i].as_mut_ptr().cast();
            iovs[i].iov_len = DATAGRAM_MAX;
            hdrs[i].msg_hdr.msg_name = names[i].as_mut_ptr().cast();
            hdrs[i].msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as _;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at live buffers of the stated lengths for the call.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as _,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        self.n = r as usize;
        for ((hdr, name), got) in hdrs.iter().zip(&names).zip(&mut self.got).take(self.n) {
            *got = None;
            if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.truncated += 1;
                continue;
            }
            // SAFETY: the kernel filled `msg_namelen` bytes of the zeroed storage.
            if let Some(source) = unsafe { decode(name.assume_init_ref()) } {
                *got = Some((source, hdr.msg_len as usize));
            }
        }
        Ok(self)
    }

    /// The datagrams of the last [`RecvBatch::recv`], in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.got[..self.n]
            .iter()
            .zip(self.bufs.iter())
            .filter_map(|(got, buf)| got.map(|(source, len)| (source, &buf[..len])))
    }

    /// Datagrams the last call took off the socket, dropped ones included.
    pub fn taken(&self) -> usize {
        self.n
    }
}

/// Datagrams waiting to be sent, in order, at most `cap` of them.
pub struct SendQueue {
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    cap: usize,
    /// Datagrams refused because the queue was full.
    pub overflowed: u64,
    /// Datagrams the kernel refused (unreachable destination, too long...).
    pub failed: u64,
}

impl SendQueue {
    pub fn new(cap: usize) -> Self {
        Self {
            queue: VecDeque::with_capacity(BATCH),
            cap: cap.max(1),
            overflowed: 0,
            failed: 0,
        }
    }

    /// Queues one datagram; a full queue drops it (counted in `overflowed`).
    pub fn push(&mut self, destination: SocketAddr, contents: Vec<u8>) {
        if self.queue.len() >= self.cap {
            self.overflowed += 1;
            return;
        }
        self.queue.push_back((destination, contents));
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Hands the queue to `send` a batch at a time, front first. `send` returns how many of
    /// the batch the kernel took (at least one) or the error of the first. `WouldBlock` stops
    /// the flush with the rest still queued, in order; any other error drops that one
    /// datagram (counted in `failed`) and goes on.
    pub fn flush(
        &mut self,
        mut send: impl FnMut(&[(SocketAddr, Vec<u8>)]) -> io::Result<usize>,
    ) -> io::Result<()> {
        while !self.queue.is_empty() {
            let front = {
                let (a, b) = self.queue.as_slices();
                if a.is_empty() { b } else { a }
            };
            let batch = &front[..front.len().min(BATCH)];
            match send(batch) {
                Ok(n) => {
                    self.queue.drain(..n.clamp(1, batch.len()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.queue.pop_front();
                    self.failed += 1;
                }
            }
        }
        Ok(())
    }
}

/// One `sendmmsg` of `batch` (at most [`BATCH`] datagrams) on the non-blocking socket `fd`.
pub fn send_batch(fd: RawFd, batch: &[(SocketAddr, Vec<u8>)]) -> io::Result<usize> {
    let batch = &batch[..batch.len().min(BATCH)];
    let mut names = [MaybeUninit::<libc::sockaddr_storage>::zeroed(); BATCH];
    // SAFETY: all-zero is a valid iovec and mmsghdr.
    let mut iovs: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
    for (i, (destination, contents)) in batch.iter().enumerate() {
        // SAFETY: the storage is zeroed and large enough for either address family.
        let len = unsafe { encode(*destination, names[i].assume_init_mut()) };
        iovs[i].iov_base = contents.as_ptr() as *mut _;
        iovs[i].iov_len = contents.len();
        hdrs[i].msg_hdr.msg_name = names[i].as_mut_ptr().cast();
        hdrs[i].msg_hdr.msg_namelen = len;
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every header points at live buffers of the stated lengths for the call.
    let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), batch.len() as _, libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// # Safety
/// `s` must be a socket address the kernel filled (or zeroed storage).
unsafe fn decode(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes `addr` into zeroed storage; returns the length to pass the kernel.
///
/// # Safety
/// `s` must be zeroed.
unsafe fn encode(addr: SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let sin = unsafe { &mut *(s as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as _;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            mem::size_of::<libc::sockaddr_in>() as _
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in6.
            let sin6 = unsafe { &mut *(s as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as _;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>() as _
        }
    }
}

#[cfg(test)]
mod tests;
