//! The MediaCore's side of `subscribe`: which of a publisher's video a member receives (the
//! high or low simulcast layer, or none), kept in the Room for the call and applied to the
//! member's subscriptions now and to those of their later Peers; and the allocation of a
//! subscriber's estimated bandwidth among the simulcast videos it receives.

use std::time::{Duration, Instant};

use str0m::media::{KeyframeRequestKind, MediaKind, Mid};

use super::{MediaCore, slot_peer};
use crate::media::peer::{PeerId, Sink};
use crate::media::simulcast::{Budget, LayerSelector, Layers, VideoChoice, Wanted, allocate};
use crate::media::subscription::SubId;

/// Bandwidth kept for each audio stream forwarded to a subscriber before video is allocated
/// (audio always goes first): Opus voice of 24 to 40 kbit/s. Like str0m's estimate and the
/// layers' rates, it counts RTP payload.
const AUDIO_RESERVE: u64 = 40_000;
/// Share of the estimate a climb may fill (the rest absorbs keyframes and retransmissions);
/// what is forwarded now is kept up to the whole of it (see [`crate::media::downlink`]).
const CLIMB_PERCENT: u64 = 90;
/// How soon a subscriber whose next layer does not fit has its downlink probed, and how
/// rarely at most: each probe that did not make room doubles the wait (a probe overfills a
/// link that is full, for a moment; a link that stays full is not probed every few seconds).
const PROBE_FIRST: Duration = Duration::from_secs(4);
const PROBE_LAST: Duration = Duration::from_secs(16);

impl MediaCore {
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

    /// Shares subscriber `id`'s estimated bandwidth among its simulcast videos (after its
    /// audio) and tells the estimator what they would take; the selectors follow at their
    /// next re-targeting. Runs on every new estimate.
    pub(super) fn allocate(&mut self, now: Instant, id: PeerId) {
        let Some(p) = slot_peer(&mut self.slots, id) else {
            return;
        };
        let (Some(keep), Some(climb)) = (p.downlink.keep(now), p.downlink.climb(now)) else {
            return;
        };
        let mut audio_from: Vec<PeerId> = Vec::new();
        let mut videos: Vec<(SubId, PeerId, Mid, LayerSelector)> = Vec::new();
        for (sub, s) in p.subs.iter() {
            match s.kind {
                MediaKind::Audio => audio_from.push(s.source),
                MediaKind::Video => videos.push((sub, s.source, s.source_mid, s.selector.clone())),
            }
        }
        // Muted and held members' audio is withheld: it takes nothing.
        let audio = audio_from
            .into_iter()
            .filter(|&src| {
                slot_peer(&mut self.slots, src)
                    .is_some_and(|p| !(p.state.held || p.state.muted(MediaKind::Audio)))
            })
            .count() as u64
            * AUDIO_RESERVE;
        let mut wanted: Vec<Wanted> = Vec::with_capacity(videos.len());
        for (_, source, mid, sel) in &videos {
            let layers: Option<Layers> = slot_peer(&mut self.slots, *source)
                .and_then(|p| p.tracks.iter().find(|t| t.mid == *mid))
                .and_then(|t| t.layers);
            wanted.push(match layers {
                Some(l) => Wanted::of(sel.choice(), &l, sel.held(), now),
                None => Wanted::default(), // one stream: nothing to choose
            });
        }
        let budget = Budget {
            keep: keep.saturating_sub(audio),
            climb: (climb * CLIMB_PERCENT / 100).saturating_sub(audio),
        };
        let mut caps = Vec::with_capacity(wanted.len());
        let (_, step) = allocate(budget, &wanted, &mut caps);
        let desired = audio + wanted.iter().map(Wanted::desired).sum::<u64>();
        let Some(p) = slot_peer(&mut self.slots, id) else {
            return;
        };
        for ((sub, ..), cap) in videos.iter().zip(caps) {
            if let Some(s) = p.subs.get_mut(*sub) {
                s.selector.set_cap(cap);
            }
        }
        // Told on a real change (a rise above the estimate starts str0m's allocation probe).
        // While a step up does not fit, asked again every PROBE_EVERY: a link whose capacity
        // came back is found by probing, since what is sent stays under the estimate's reach
        // (GCC grows it to 1.5 times what is acknowledged, no further).
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
            // str0m probes on a rise of the desired rate (seen on its next timeout): to ask
            // again, a step down now, back up at the next allocation (a volume tick later).
            let result = if reprobe && desired <= p.desired {
                if p.probed_at.is_some() {
                    p.probe_wait = (p.probe_wait * 2).min(PROBE_LAST);
                }
                p.probed_at = Some(now);
                p.set_desired(now, desired * 9 / 10, &mut sink)
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
