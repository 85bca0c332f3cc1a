//! A Room: the media side of one call on a Worker: which member's Peer is which, and the
//! publisher→subscriptions index the fan-out walks (no search of every member per packet).
//!
//! Invariant: an index entry exists exactly while its Subscription is in its subscriber Peer.

use str0m::media::{Mid, Rid};

use super::peer::PeerId;
use super::simulcast::VideoChoice;
use super::subscription::SubId;

/// One subscription in a track's fan-out, with the simulcast layers it needs packets of (the
/// one it is forwarded, the one it waits for a keyframe of), so a packet of another layer skips
/// it without touching its Peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fan {
    pub peer: PeerId,
    pub sub: SubId,
    pub layers: [Option<Rid>; 2],
}

impl Fan {
    /// Whether a packet of layer `rid` can matter to this subscription.
    #[inline]
    pub fn wants(&self, rid: Rid) -> bool {
        self.layers.contains(&Some(rid))
    }
}

/// A published track (publisher, mid) and the subscriptions that receive it.
type Fanout = ((PeerId, Mid), Vec<Fan>);

#[derive(Default)]
pub struct Room {
    members: Vec<(String, PeerId)>,
    /// Per published track: its subscriptions. A call has a few dozen tracks at most, so a
    /// scan beats hashing the key on every packet.
    fanout: Vec<Fanout>,
    /// Whether the last volume report had someone audible.
    pub audible: bool,
    /// (subscriber, publisher) → the video the subscriber asked for, when not the default.
    /// Members' Peers come and go (reconnects); what they asked stays for the call.
    choices: Vec<(String, String, VideoChoice)>,
}

impl Room {
    pub fn peer_of(&self, user: &str) -> Option<PeerId> {
        self.members
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| *p)
    }

    /// `user`'s Peer is now `id` (replacing any earlier one).
    pub fn join(&mut self, user: &str, id: PeerId) {
        match self.members.iter_mut().find(|(u, _)| u == user) {
            Some(m) => m.1 = id,
            None => self.members.push((user.to_string(), id)),
        }
    }

    /// Forgets Peer `id`: as a member, as a publisher and as a subscriber.
    pub fn leave(&mut self, id: PeerId) {
        self.members.retain(|(_, p)| *p != id);
        self.fanout.retain_mut(|((publisher, _), subs)| {
            subs.retain(|f| f.peer != id);
            *publisher != id
        });
    }

    /// `subscriber` wants `choice` of `publisher`'s video.
    pub fn set_choice(&mut self, subscriber: &str, publisher: &str, choice: VideoChoice) {
        self.choices
            .retain(|(s, p, _)| !(s == subscriber && p == publisher));
        if choice != VideoChoice::default() {
            self.choices
                .push((subscriber.to_string(), publisher.to_string(), choice));
        }
    }

    /// What `subscriber` asked of `publisher`'s video.
    pub fn choice(&self, subscriber: &str, publisher: &str) -> VideoChoice {
        self.choices
            .iter()
            .find(|(s, p, _)| s == subscriber && p == publisher)
            .map_or_else(VideoChoice::default, |c| c.2)
    }

    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.members.iter().map(|(_, p)| *p)
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn subscribe(&mut self, publisher: PeerId, mid: Mid, subscriber: PeerId, sub: SubId) {
        let fan = Fan {
            peer: subscriber,
            sub,
            layers: [None; 2],
        };
        match self.fanout.iter_mut().find(|(k, _)| *k == (publisher, mid)) {
            Some((_, subs)) => subs.push(fan),
            None => self.fanout.push(((publisher, mid), vec![fan])),
        }
    }

    pub fn unsubscribe(&mut self, publisher: PeerId, mid: Mid, subscriber: PeerId) {
        if let Some((_, subs)) = self.fanout.iter_mut().find(|(k, _)| *k == (publisher, mid)) {
            subs.retain(|f| f.peer != subscriber);
        }
    }

    /// The simulcast layers subscription `sub` of `subscriber` needs of `publisher`'s `mid`.
    pub fn set_layers(
        &mut self,
        publisher: PeerId,
        mid: Mid,
        subscriber: PeerId,
        sub: SubId,
        layers: [Option<Rid>; 2],
    ) {
        if let Some((_, subs)) = self.fanout.iter_mut().find(|(k, _)| *k == (publisher, mid))
            && let Some(f) = subs
                .iter_mut()
                .find(|f| f.peer == subscriber && f.sub == sub)
        {
            f.layers = layers;
        }
    }

    /// Who receives `publisher`'s track `mid`.
    #[inline]
    pub fn subscribers(&self, publisher: PeerId, mid: Mid) -> &[Fan] {
        self.fanout
            .iter()
            .find(|(k, _)| *k == (publisher, mid))
            .map_or(&[], |(_, subs)| subs.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_follows_subscriptions_and_members() {
        let (a, b, c) = (PeerId::new(0, 0), PeerId::new(1, 0), PeerId::new(2, 0));
        let mut r = Room::default();
        r.join("a", a);
        r.join("b", b);
        r.join("c", c);
        let m = Mid::from("0");
        r.subscribe(a, m, b, 0);
        r.subscribe(a, m, c, 3);
        r.subscribe(b, m, a, 1);
        let who = |r: &Room| -> Vec<(PeerId, SubId)> {
            r.subscribers(a, m)
                .iter()
                .map(|f| (f.peer, f.sub))
                .collect()
        };
        assert_eq!(who(&r), [(b, 0), (c, 3)]);
        let h = Rid::from("h");
        r.set_layers(a, m, c, 3, [Some(h), None]);
        assert!(r.subscribers(a, m)[1].wants(h));
        assert!(!r.subscribers(a, m)[0].wants(h));
        r.unsubscribe(a, m, b);
        assert_eq!(who(&r), [(c, 3)]);
        r.leave(c);
        assert!(r.subscribers(a, m).is_empty());
        r.leave(a);
        assert!(r.subscribers(b, m).is_empty(), "a no longer subscribes");
        assert_eq!(r.peer_of("b"), Some(b));
        assert_eq!(r.peer_of("a"), None);
        // A reconnect replaces the member's Peer.
        let b2 = PeerId::new(1, 1);
        r.join("b", b2);
        assert_eq!(r.peer_of("b"), Some(b2));
        assert_eq!(r.peers().count(), 1);
        // Video choices outlive Peers.
        r.set_choice("b", "a", VideoChoice::Low);
        r.set_choice("c", "a", VideoChoice::Off);
        r.join("b", PeerId::new(1, 2));
        assert_eq!(r.choice("b", "a"), VideoChoice::Low);
        assert_eq!(r.choice("a", "b"), VideoChoice::High);
        r.set_choice("b", "a", VideoChoice::High);
        assert_eq!(r.choice("b", "a"), VideoChoice::High);
        assert_eq!(r.choice("c", "a"), VideoChoice::Off);
    }
}
