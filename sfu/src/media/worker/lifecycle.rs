//! Peer lifecycle in the MediaCore: slots with generations, lookups by member, timers, replies
//! and removal (which unpublishes the Peer's tracks from the rest of its room).

use std::cmp::Reverse;

use std::time::Instant;

use super::{MediaCore, Slot, slot_peer};
use crate::media::command::Ticket;
use crate::media::event::{Failure, MediaError, MediaEvent};
use crate::media::peer::{Peer, PeerId};
use crate::media::subscription::SubState;
use crate::media::tick::round_up;

impl MediaCore {
    pub(super) fn peer(&self, id: PeerId) -> Option<&Peer> {
        let slot = self.slots.get(id.index())?;
        (slot.generation == id.generation())
            .then_some(slot.peer.as_ref())
            .flatten()
    }

    pub(super) fn member(&self, call_id: &str, user: &str) -> Option<PeerId> {
        self.rooms.get(call_id)?.peer_of(user)
    }

    pub(super) fn member_mut(&mut self, call_id: &str, user: &str) -> Option<&mut Peer> {
        let id = self.member(call_id, user)?;
        slot_peer(&mut self.slots, id)
    }

    /// The id the next inserted Peer gets.
    pub(super) fn next_id(&self) -> PeerId {
        match self.free.last() {
            Some(&index) => PeerId::new(index, self.slots[index as usize].generation),
            None => PeerId::new(self.slots.len() as u32, 0),
        }
    }

    /// Puts `peer` in the slot `id` names (reserved by [`MediaCore::next_id`]; other Peers may
    /// have been freed since, so the free list is searched, not popped).
    pub(super) fn insert(&mut self, id: PeerId, peer: Peer) {
        match self.free.iter().rposition(|&i| i as usize == id.index()) {
            Some(pos) => {
                self.free.swap_remove(pos);
                self.slots[id.index()].peer = Some(peer);
            }
            None => self.slots.push(Slot {
                generation: 0,
                peer: Some(peer),
            }),
        }
    }

    /// Puts Peer `id`'s wake-up in the timer heap when str0m asked for a new one. A superseded
    /// entry stays in the heap and is skipped when popped.
    pub(super) fn schedule(&mut self, id: PeerId) {
        let Some(peer) = slot_peer(&mut self.slots, id) else {
            return;
        };
        if !std::mem::take(&mut peer.wake_changed) {
            return;
        }
        match peer.wake {
            Some(at) if peer.urgent => {
                self.urgent.push((at, id));
                self.urgent_at = Some(self.urgent_at.map_or(at, |u| u.min(at)));
            }
            Some(at) if peer.paced => self.timers.push(Reverse((at, id, at))),
            Some(at) => {
                let due = round_up(at, self.epoch.unwrap_or(at), self.cfg.tick);
                self.timers.push(Reverse((due, id, at)));
            }
            None => {}
        }
    }

    pub(super) fn reply(&mut self, ticket: Ticket, result: Result<Option<String>, MediaError>) {
        self.out.push_back(MediaEvent::Reply { ticket, result });
    }

    /// Closes and forgets Peer `id`; its tracks leave the others' offers. A failure is
    /// counted and reported to its member.
    pub(super) fn remove_peer(&mut self, now: Instant, id: PeerId, failure: Option<Failure>) {
        self.retire_peer(now, id, failure, None);
    }

    /// Replaces Peer `old` by `new` (the member re-offered): the others keep their m-lines for
    /// `old`'s tracks, adopted by `new`'s tracks of the same kind as they appear.
    pub(super) fn replace_peer(&mut self, now: Instant, old: PeerId, new: PeerId) {
        self.retire_peer(now, old, None, Some(new));
    }

    /// After `new`'s offer is applied: adopted m-lines its tracks did not take are stopped.
    pub(super) fn release_adopted(&mut self, now: Instant, new: PeerId) {
        let others: Vec<PeerId> = match self.peer(new).and_then(|p| self.rooms.get(&p.call_id)) {
            Some(room) => room.peers().filter(|p| *p != new).collect(),
            None => return,
        };
        for other in others {
            let Some(o) = slot_peer(&mut self.slots, other) else {
                continue;
            };
            let mut any = false;
            for (_, s) in o
                .subs
                .iter_mut()
                .filter(|(_, s)| s.adopted && s.source == new)
            {
                s.adopted = false;
                any = true;
                s.state = match s.state {
                    SubState::Open(m) | SubState::Negotiating(m) => SubState::ToStop(m),
                    other => other,
                };
            }
            if any {
                self.negotiate(now, other);
            }
        }
    }

    fn retire_peer(
        &mut self,
        now: Instant,
        id: PeerId,
        failure: Option<Failure>,
        successor: Option<PeerId>,
    ) {
        let Some(slot) = self.slots.get_mut(id.index()) else {
            return;
        };
        if slot.generation != id.generation() {
            return;
        }
        let Some(mut peer) = slot.peer.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index() as u32);
        peer.close();
        self.router.remove_peer(id, &peer.ufrag, &peer.addrs);
        let others: Vec<PeerId> = match self.rooms.get_mut(&peer.call_id) {
            Some(room) => {
                room.leave(id);
                let others = room.peers().collect();
                if room.is_empty() {
                    self.rooms.remove(&peer.call_id);
                }
                others
            }
            None => Vec::new(),
        };
        if let Some(f) = failure {
            match f {
                Failure::Ice => self.counters.ice_failures += 1,
                Failure::Dtls => self.counters.dtls_failures += 1,
                Failure::Rtc => self.counters.rtc_failures += 1,
            }
            tracing::info!(call_id = %peer.call_id, user = %peer.user, stage = f.as_str(), "media failed");
            self.out.push_back(MediaEvent::Failed {
                call_id: peer.call_id.clone(),
                user: peer.user.clone(),
                failure: f,
            });
        }
        // Stop forwarding its tracks to the others.
        for other in others {
            let Some(o) = slot_peer(&mut self.slots, other) else {
                continue;
            };
            let gone: Vec<_> = o
                .subs
                .iter_mut()
                .filter(|(_, s)| s.source == id)
                .filter_map(|(sub, s)| match (s.state, successor) {
                    (SubState::Open(_) | SubState::Negotiating(_), Some(new)) => {
                        s.adopt(new);
                        None
                    }
                    (SubState::ToOpen, _) => Some(sub),
                    (SubState::Open(m) | SubState::Negotiating(m), None) => {
                        s.state = SubState::ToStop(m);
                        None
                    }
                    _ => None,
                })
                .collect();
            for sub in gone {
                o.subs.remove(sub);
            }
            self.negotiate(now, other);
        }
    }
}
