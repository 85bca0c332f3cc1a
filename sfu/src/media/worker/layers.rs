//! The MediaCore's side of `subscribe`: which of a publisher's video a member receives (the
//! high or low simulcast layer, or none), kept in the Room for the call and applied to the
//! member's subscriptions now and to those of their later Peers; and the allocation of a
//! subscriber's estimated bandwidth among the simulcast videos it receives.

use std::time::{Duration, Instant};

use str0m::media::{KeyframeRequestKind, MediaKind, Mid};

use super::{MediaCore, slot_peer};
use crate::media::peer::{BWE_DESIRED_KBPS, PeerId, Sink};
use crate::media::simulcast::{Budget, LayerSelector, VideoChoice, Wanted, allocate};
use crate::media::subscription::SubId;

/// Bandwidth kept at least for each audio stream forwarded to a subscriber before video is
/// allocated (audio always goes first; its measured rate when higher): Opus voice is 24 to
/// 40 kbit/s. Like str0m's estimate and the layers' rates, it counts RTP payload.
const AUDIO_RESERVE: u64 = 40_000;
/// Share of the estimate a climb may fill (the rest absorbs keyframes and retransmissions);
/// what is forwarded now is kept up to the whole of it (see [`crate::media::downlink`]).
const CLIMB_PERCENT: u64 = 90;
/// How long after a Peer's start its first probes may still be running.
const FIRST_PROBES: Duration = Duration::from_secs(5);
/// How soon a subscriber whose next layer does not fit has its downlink probed, and how
/// rarely at most: each probe that did not make room doubles the wait (a probe overfills a
/// link that is full, for a moment; a link that stays full is not probed every few seconds).
const PROBE_FIRST: Duration = Duration::from_secs(4);
const PROBE_LAST: Duration = Duration::from_secs(16);

impl MediaCore {
    /// The bandwidth estimate toward `user`'s Peer in `call_id` (bit/s), once there is one.
    pub fn estimate(&mut self, call_id: &str, user: &str) -> Option<u64> {
        self.member_mut(call_id, user)
            .and_then(|p| p.downlink.latest())
    }

    /// Of the estimated subscribers: their estimates (into `estimates`, cleared first), and
    /// how many videos are paused for them. O(Peers × subscriptions): for the once-a-second
    /// flush, not the packet path.
    pub fn downlinks(&self, estimates: &mut Vec<u64>) -> usize {
        estimates.clear();
        let mut paused = 0;
        for p in self.slots.iter().filter_map(|s| s.peer.as_ref()) {
            if let Some(bps) = p.downlink.latest() {
                estimates.push(bps);
                paused += p.subs.iter().filter(|(_, s)| s.selector.paused()).count();
            }
        }
        paused
    }

    /// `user` wants `choice` of `publisher`'s video in `call_id`. A simulcast track follows
    /// it at the next re-targeting (every 250 ms, at a keyframe of the new layer); a single
    /// stream turned back on asks its publisher for a keyframe.
    pub(super) fn set_video_choice(
        &mut self,
        now: Instant,
        call_id: &str,
        user: &str,
        publisher: &str,
        choice: VideoChoice,
    ) {
        let Some(room) = self.rooms.get_mut(call_id) else {
            return;
        };
        room.set_choice(user, publisher, choice);
        let (Some(sub_peer), Some(pub_peer)) = (room.peer_of(user), room.peer_of(publisher)) else {
            return;
        };
        let Some(p) = slot_peer(&mut self.slots, sub_peer) else {
            return;
        };
        let mut resumed: Vec<Mid> = Vec::new();
        for (_, s) in p.subs.iter_mut() {
            if s.source == pub_peer && s.kind == MediaKind::Video {
                if s.selector.choice() == VideoChoice::Off && choice != VideoChoice::Off {
                    resumed.push(s.source_mid);
                }
                s.selector.set_choice(choice);
            }
        }
        for mid in resumed {
            self.request_keyframe(now, pub_peer, mid, KeyframeRequestKind::Pli, None);
        }
    }

    /// Allocates again for every estimated subscriber (on the volume tick): what they receive
    /// also changes without a new estimate (a mute, a layer's publisher slowing down).
    pub(super) fn reallocate(&mut self, now: Instant) {
        let mut ids = std::mem::take(&mut self.reallocating);
        ids.extend(
            self.slots
                .iter()
                .filter_map(|s| s.peer.as_ref())
                .filter(|p| p.downlink.latest().is_some())
                .map(|p| p.id()),
        );
        for &id in &ids {
            self.allocate(now, id);
        }
        ids.clear();
        self.reallocating = ids;
    }

    /// Shares subscriber `id`'s estimated bandwidth: first what it cannot choose (audio, and
    /// video sent as one stream), then among its simulcast videos; and tells the estimator
    /// what they would take. The selectors follow at their next re-targeting. Runs on every
    /// new estimate and every volume tick.
    pub(super) fn allocate(&mut self, now: Instant, id: PeerId) {
        let Some(p) = slot_peer(&mut self.slots, id) else {
            return;
        };
        let (Some(keep), Some(climb)) = (p.downlink.keep(now), p.downlink.climb(now)) else {
            return;
        };
        let subs: Vec<(SubId, PeerId, Mid, MediaKind, LayerSelector)> = p
            .subs
            .iter()
            .map(|(sub, s)| (sub, s.source, s.source_mid, s.kind, s.selector.clone()))
            .collect();
        // Fixed: what is forwarded whatever the estimate (withheld tracks of muted and held
        // members take nothing).
        let mut fixed = 0;
        // The simulcast videos, and what each wants.
        let mut videos: Vec<SubId> = Vec::new();
        let mut wanted: Vec<Wanted> = Vec::new();
        for (sub, source, mid, kind, sel) in subs {
            let Some(publisher) = slot_peer(&mut self.slots, source) else {
                continue;
            };
            let withheld = publisher.state.held || publisher.state.muted(kind);
            let Some(track) = publisher.tracks.iter().find(|t| t.mid == mid) else {
                continue;
            };
            match (kind, track.layers) {
                (MediaKind::Video, Some(l)) => {
                    videos.push(sub);
                    wanted.push(Wanted::of(sel.choice(), &l, sel.held(), now));
                }
                _ if withheld || sel.choice() == VideoChoice::Off => {}
                (MediaKind::Audio, _) => fixed += track.rate.get(now).max(AUDIO_RESERVE),
                (MediaKind::Video, None) => fixed += track.rate.get(now),
            }
        }
        let budget = Budget {
            keep: keep.saturating_sub(fixed),
            climb: (climb * CLIMB_PERCENT / 100).saturating_sub(fixed),
        };
        let mut caps = Vec::with_capacity(wanted.len());
        let (_, step) = allocate(budget, &wanted, &mut caps);
        let desired = fixed + wanted.iter().map(Wanted::desired).sum::<u64>();
        let Some(p) = slot_peer(&mut self.slots, id) else {
            return;
        };
        // Until str0m's first probes have run, they are capped by what we say we want: say
        // enough (the subscriptions are still arriving).
        let desired = if now < p.created + FIRST_PROBES {
            desired.max(BWE_DESIRED_KBPS * 1000)
        } else {
            desired
        };
        for (sub, cap) in videos.iter().zip(caps) {
            if let Some(s) = p.subs.get_mut(*sub) {
                s.selector.set_cap(cap);
            }
        }
        // While a step up does not fit, the downlink is probed now and then (after 4 s, 8,
        // then every 16): GCC alone grows its estimate to 1.5 times what is acknowledged, no
        // further, so what is sent would stay where it is after the link recovered. A probe:
        // the desired rate lowered now and raised at the next allocation (str0m starts an
        // allocation probe on a rise above its estimate). After losses str0m may stop probing
        // at all: an estimate stuck that long is restarted from itself instead (its first
        // probes, 3 and 6 times it for 15 ms, find a recovered link). No padding floor: sized
        // on str0m's payload-only estimate, one overfilled links carrying small packets.
        let wanting = step > 0 && desired > p.downlink.latest().unwrap_or(0);
        if !wanting {
            p.probe_wait = PROBE_FIRST;
        }
        let reprobe = wanting && p.probed_at.is_none_or(|t| now >= t + p.probe_wait);
        if desired > 0 && (desired.abs_diff(p.desired) * 10 > p.desired || reprobe) {
            let mut sink = Sink {
                out: &mut self.out,
                events: &mut self.events,
            };
            let result = if reprobe && desired <= p.desired {
                if p.probed_at.is_some() {
                    p.probe_wait = (p.probe_wait * 2).min(PROBE_LAST);
                }
                p.probed_at = Some(now);
                match p.downlink.stuck(now) {
                    Some(bps) => p.restart_estimate(now, bps, &mut sink),
                    None => p.set_desired(now, desired * 9 / 10, &mut sink),
                }
            } else {
                p.set_desired(now, desired, &mut sink)
            };
            if let Err(f) = result {
                self.remove_peer(now, id, Some(f));
                return;
            }
            self.schedule(id);
        }
    }
}
