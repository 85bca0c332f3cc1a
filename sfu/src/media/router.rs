//! The Router: which Peer a datagram is for, in O(1): by source address once a Peer accepted
//! it, by the STUN username (our ICE ufrag) before. Never a scan of all Peers.
//!
//! Invariant: an entry points at a live Peer; a Peer's entries go with it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use str0m::net::Protocol;

use super::peer::PeerId;

/// Where a datagram came from: the transport counts, as a client's TCP connection and another
/// client's UDP socket may share an address and port.
pub type Source = (Protocol, SocketAddr);

#[derive(Default)]
pub struct Router {
    by_addr: HashMap<Source, PeerId>,
    by_ufrag: HashMap<String, PeerId>,
}

impl Router {
    #[inline]
    pub fn route(&self, source: Source, contents: &[u8]) -> Option<PeerId> {
        if let Some(&id) = self.by_addr.get(&source) {
            return Some(id);
        }
        let by_ufrag = &self.by_ufrag;
        super::peer::guarded(|| {
            let stun = str0m::ice::StunMessage::parse(contents).ok()?;
            let (ours, _theirs) = stun.split_username()?;
            by_ufrag.get(ours).copied()
        })
        .ok()
        .flatten()
    }

    pub fn add_peer(&mut self, ufrag: &str, id: PeerId) {
        self.by_ufrag.insert(ufrag.to_string(), id);
    }

    /// `source` is one of Peer `id`'s addresses (its Rtc accepted a datagram from it).
    pub fn learn(&mut self, source: Source, id: PeerId) {
        self.by_addr.insert(source, id);
    }

    /// `source` is no longer one of Peer `id`'s addresses.
    pub fn forget(&mut self, source: Source, id: PeerId) {
        if self.by_addr.get(&source) == Some(&id) {
            self.by_addr.remove(&source);
        }
    }

    pub fn remove_peer(&mut self, id: PeerId, ufrag: &str, addrs: &[(Source, Instant)]) {
        for (a, _) in addrs {
            if self.by_addr.get(a) == Some(&id) {
                self.by_addr.remove(a);
            }
        }
        if self.by_ufrag.get(ufrag) == Some(&id) {
            self.by_ufrag.remove(ufrag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN binding request with USERNAME `user`, PRIORITY and a (wrong) MESSAGE-INTEGRITY:
    /// routing reads the username only; the Peer's str0m checks the integrity.
    fn binding(user: &str) -> Vec<u8> {
        let mut attr = vec![0x00, 0x06];
        attr.extend_from_slice(&(user.len() as u16).to_be_bytes());
        attr.extend_from_slice(user.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        attr.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0, 0, 0, 1]);
        attr.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
        attr.extend_from_slice(&[0xab; 20]);
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        m.extend_from_slice(&0x2112_a442u32.to_be_bytes());
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attr);
        m
    }

    #[test]
    fn routes_by_ufrag_then_by_address() {
        let (a, b) = (PeerId::new(0, 0), PeerId::new(1, 0));
        let mut r = Router::default();
        r.add_peer("ufA", a);
        r.add_peer("ufB", b);
        let src = (
            Protocol::Udp,
            "192.0.2.1:5000".parse::<SocketAddr>().unwrap(),
        );
        assert_eq!(r.route(src, &binding("ufB:theirs")), Some(b));
        assert_eq!(r.route(src, &binding("nobody:theirs")), None);
        assert_eq!(r.route(src, b"\x80\x60junk"), None);
        r.learn(src, a);
        assert_eq!(r.route(src, b"\x80\x60rtp"), Some(a));
        r.remove_peer(a, "ufA", &[(src, Instant::now())]);
        assert_eq!(r.route(src, b"\x80\x60rtp"), None);
        assert_eq!(r.route(src, &binding("ufA:x")), None);
        // A stale Peer's removal leaves a newer owner of the ufrag alone.
        r.remove_peer(a, "ufB", &[]);
        assert_eq!(r.route(src, &binding("ufB:x")), Some(b));
    }

    #[test]
    fn a_tcp_source_is_not_the_udp_source_of_the_same_address() {
        let (a, b) = (PeerId::new(0, 0), PeerId::new(1, 0));
        let mut r = Router::default();
        let addr: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        r.learn((Protocol::Udp, addr), a);
        r.learn((Protocol::Tcp, addr), b);
        assert_eq!(r.route((Protocol::Udp, addr), b"\x80\x60rtp"), Some(a));
        assert_eq!(r.route((Protocol::Tcp, addr), b"\x80\x60rtp"), Some(b));
        r.forget((Protocol::Tcp, addr), b);
        assert_eq!(r.route((Protocol::Tcp, addr), b"\x80\x60rtp"), None);
        assert_eq!(r.route((Protocol::Udp, addr), b"\x80\x60rtp"), Some(a));
    }
}
