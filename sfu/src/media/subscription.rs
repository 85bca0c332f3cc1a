//! A Subscription: one forwarded copy of another member's Track toward one subscriber Peer:
//! its negotiation state (our `sendonly` m-line), the publisher→subscriber payload-type map and
//! the sequence munger. [`Subscriptions`] is a subscriber's set of them, with stable ids the
//! room's fan-out index points at.

use std::time::Instant;

use str0m::media::{MediaKind, Mid};

use super::peer::PeerId;
use super::seq::SeqMunger;
use super::simulcast::LayerSelector;
use super::track::clock_rate;
use super::vp8::Vp8Munger;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubState {
    /// Wanted; goes into our next offer.
    ToOpen,
    /// In our offer, waiting for the answer.
    Negotiating(Mid),
    /// Negotiated: packets flow on this mid.
    Open(Mid),
    /// The track is gone; its m-line is stopped in our next offer.
    ToStop(Mid),
    /// The stop is in our offer, waiting for the answer.
    NegotiatingStop(Mid),
}

pub struct Subscription {
    pub source: PeerId,
    /// The publishing member: our offer names it as the m-line's stream id (msid), so clients
    /// know whose track it is.
    pub source_user: String,
    pub source_mid: Mid,
    pub kind: MediaKind,
    pub state: SubState,
    munger: SeqMunger,
    /// Which layer of a simulcast track this stream carries, and the VP8 picture-id rewrite
    /// that keeps switches seamless.
    pub selector: LayerSelector,
    pub vp8: Vp8Munger,
    /// The publisher track's source epoch this stream last followed.
    epoch: u32,
    /// Last (publisher PT, our PT) mapping, to skip the codec lookup per packet.
    pt_cache: Option<(u8, u8)>,
    /// Kept from the publisher's previous Peer (a re-offer): waits for a track of its kind
    /// from `source`, the new Peer, so the subscriber needs no new m-line.
    pub adopted: bool,
}

impl Subscription {
    pub fn new(source: PeerId, source_user: &str, source_mid: Mid, kind: MediaKind) -> Self {
        Self {
            source,
            source_user: source_user.to_string(),
            source_mid,
            kind,
            state: SubState::ToOpen,
            munger: SeqMunger::new(clock_rate(kind)),
            selector: LayerSelector::default(),
            vp8: Vp8Munger::default(),
            epoch: 0,
            pt_cache: None,
            adopted: false,
        }
    }

    /// The publisher re-offered: this m-line will carry a track of the same kind from their new
    /// Peer `source` (no renegotiation, continuous numbering).
    pub fn adopt(&mut self, source: PeerId) {
        self.source = source;
        self.adopted = true;
    }

    /// The new Peer published track `mid`: this stream continues with it.
    pub fn bind(&mut self, mid: Mid) {
        self.source_mid = mid;
        self.adopted = false;
        self.pt_cache = None;
        self.munger.restart();
    }

    /// The next packet starts another simulcast layer: numbers, timestamps and picture ids
    /// follow on from the last ones written.
    pub fn switch_layer(&mut self) {
        self.munger.restart();
        self.vp8.switch();
    }

    /// The mid packets are written on, once negotiated.
    #[inline]
    pub fn open_mid(&self) -> Option<Mid> {
        match self.state {
            SubState::Open(m) => Some(m),
            _ => None,
        }
    }

    /// Our payload type for the publisher's `pt_in`, looked up once per change.
    #[inline]
    pub fn payload_type(&mut self, pt_in: u8, lookup: impl FnOnce() -> Option<u8>) -> Option<u8> {
        match self.pt_cache {
            Some((i, o)) if i == pt_in => Some(o),
            _ => {
                let o = lookup()?;
                self.pt_cache = Some((pt_in, o));
                Some(o)
            }
        }
    }

    /// The outgoing (sequence number, timestamp) of a forwarded packet, or `None` if it
    /// cannot be written without reusing a number.
    #[inline]
    pub fn rewrite(
        &mut self,
        seq_in: u64,
        ts_in: u32,
        epoch: u32,
        at: Instant,
    ) -> Option<(u64, u32)> {
        self.follow(epoch);
        self.munger.forward(seq_in, ts_in, at)
    }

    /// A packet of the track is not forwarded on this stream: it leaves no gap.
    #[inline]
    pub fn withhold(&mut self, seq_in: u64, epoch: u32) {
        self.follow(epoch);
        self.munger.withhold(seq_in);
    }

    /// Follows the publisher track's source epoch: a new source restarts the stream (and a
    /// simulcast layer waits for a keyframe).
    #[inline]
    pub fn follow(&mut self, epoch: u32) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.munger.restart();
            self.selector.reset();
        }
    }
}

/// Index of a Subscription within its subscriber Peer; stable while it exists.
pub type SubId = u32;

/// A subscriber's Subscriptions, in slots that are reused once freed.
#[derive(Default)]
pub struct Subscriptions {
    slots: Vec<Option<Subscription>>,
    free: Vec<SubId>,
}

impl Subscriptions {
    pub fn insert(&mut self, s: Subscription) -> SubId {
        match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(s);
                id
            }
            None => {
                self.slots.push(Some(s));
                (self.slots.len() - 1) as SubId
            }
        }
    }

    #[inline]
    pub fn get_mut(&mut self, id: SubId) -> Option<&mut Subscription> {
        self.slots.get_mut(id as usize)?.as_mut()
    }

    pub fn remove(&mut self, id: SubId) -> Option<Subscription> {
        let s = self.slots.get_mut(id as usize)?.take()?;
        self.free.push(id);
        Some(s)
    }

    pub fn iter(&self) -> impl Iterator<Item = (SubId, &Subscription)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i as SubId, s.as_ref()?)))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (SubId, &mut Subscription)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| Some((i as SubId, s.as_mut()?)))
    }

    /// The subscription to `source`'s track `mid`.
    pub fn find(&self, source: PeerId, mid: Mid) -> Option<SubId> {
        self.iter()
            .find(|(_, s)| s.source == source && s.source_mid == mid && !s.adopted)
            .map(|(i, _)| i)
    }

    /// A subscription adopted for `source`'s next track of `kind`.
    pub fn adopted(&self, source: PeerId, kind: MediaKind) -> Option<SubId> {
        self.iter()
            .find(|(_, s)| s.adopted && s.source == source && s.kind == kind)
            .map(|(i, _)| i)
    }

    /// The open subscription written on our `mid`.
    pub fn by_open_mid(&self, mid: Mid) -> Option<&Subscription> {
        self.iter()
            .map(|(_, s)| s)
            .find(|s| s.state == SubState::Open(mid))
    }

    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(source: PeerId, mid: &str) -> Subscription {
        Subscription::new(source, "alice", Mid::from(mid), MediaKind::Audio)
    }

    #[test]
    fn slots_are_stable_and_reused() {
        let (a, b) = (PeerId::new(1, 0), PeerId::new(2, 0));
        let mut s = Subscriptions::default();
        let x = s.insert(sub(a, "0"));
        let y = s.insert(sub(b, "0"));
        assert_eq!(s.find(b, Mid::from("0")), Some(y));
        assert!(s.remove(x).is_some());
        assert!(s.remove(x).is_none());
        assert_eq!(s.find(b, Mid::from("0")), Some(y), "y keeps its id");
        assert_eq!(s.insert(sub(a, "1")), x, "the freed slot is reused");
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_new_source_epoch_restarts_the_munger() {
        let t = Instant::now();
        let mut s = sub(PeerId::new(1, 0), "0");
        let (first, _) = s.rewrite(40_000, 0, 0, t).unwrap();
        // The publisher's new SSRC starts at a low number: the stream still continues.
        let (next, _) = s.rewrite(3, 0, 1, t).unwrap();
        assert_eq!(next, first + 1);
    }

    #[test]
    fn an_adopted_stream_continues_on_the_new_source() {
        let t = Instant::now();
        let (old, new) = (PeerId::new(1, 0), PeerId::new(1, 1));
        let mut s = sub(old, "0");
        let (first, _) = s.rewrite(20_000, 0, 0, t).unwrap();
        s.adopt(new);
        let mut subs = Subscriptions::default();
        let id = subs.insert(s);
        assert_eq!(subs.find(new, Mid::from("0")), None, "not bound yet");
        assert_eq!(subs.adopted(new, MediaKind::Audio), Some(id));
        assert_eq!(subs.adopted(new, MediaKind::Video), None);
        let s = subs.get_mut(id).unwrap();
        s.bind(Mid::from("1"));
        let (next, _) = s.rewrite(5, 0, 0, t).unwrap();
        assert_eq!(next, first + 1, "numbering continues across the re-offer");
        assert_eq!(subs.find(new, Mid::from("1")), Some(id));
    }

    #[test]
    fn payload_type_is_looked_up_once_per_change() {
        let mut s = sub(PeerId::new(1, 0), "0");
        let mut lookups = 0;
        for _ in 0..3 {
            s.payload_type(111, || {
                lookups += 1;
                Some(100)
            });
        }
        assert_eq!(lookups, 1);
        assert_eq!(s.payload_type(112, || None), None);
    }
}
