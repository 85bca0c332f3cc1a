//! The MediaCore's side of `subscribe`: which of a publisher's video a member receives (the
//! high or low simulcast layer, or none), kept in the Room for the call and applied to the
//! member's subscriptions now and to those of their later Peers; and the allocation of a
//! subscriber's estimated bandwidth among the simulcast videos it receives.

use std::time::Instant;

use str0m::media::{KeyframeRequestKind, MediaKind, Mid};

use super::{MediaCore, slot_peer};
use crate::media::peer::{PeerId, Sink};
use crate::media::simulcast::{Layers, VideoChoice, Wanted, allocate};
use crate::media::subscription::SubId;

/// Bandwidth kept for each audio stream toward a subscriber before video is allocated: audio
/// always goes first.
const AUDIO_RESERVE: u64 = 50_000;
/// Share of the estimate allocated (the rest absorbs keyframes and retransmissions).
const USABLE_PERCENT: u64 = 90;

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

    /// Shares subscriber `id`'s estimated bandwidth among its simulcast videos (after its
    /// audio) and tells the estimator what they would take; the selectors follow at their
    /// next re-targeting. Runs on every new estimate.
    pub(super) fn allocate(&mut self, now: Instant, id: PeerId) {
        let Some(p) = slot_peer(&mut self.slots, id) else {
            return;
        };
        let Some(estimate) = p.estimate else {
            return;
        };
        let mut audio = 0;
        let mut videos: Vec<(SubId, PeerId, Mid, VideoChoice)> = Vec::new();
        for (sub, s) in p.subs.iter() {
            match s.kind {
                MediaKind::Audio => audio += AUDIO_RESERVE,
                MediaKind::Video => videos.push((sub, s.source, s.source_mid, s.selector.choice())),
            }
        }
        let mut wanted: Vec<Wanted> = Vec::with_capacity(videos.len());
        for (_, source, mid, choice) in &videos {
            let layers: Option<Layers> = slot_peer(&mut self.slots, *source)
                .and_then(|p| p.tracks.iter().find(|t| t.mid == *mid))
                .and_then(|t| t.layers);
            wanted.push(match layers {
                Some(l) => Wanted::of(*choice, &l, now),
                None => Wanted::default(), // one stream: nothing to choose
            });
        }
        let budget = (estimate * USABLE_PERCENT / 100).saturating_sub(audio);
        let mut caps = Vec::with_capacity(wanted.len());
        let (used, step) = allocate(budget, &wanted, &mut caps);
        let desired = audio + wanted.iter().map(Wanted::desired).sum::<u64>();
        // Padding up to the next step lets the estimator see whether it fits.
        let minimum = (audio + used + step).min(desired);
        let Some(p) = slot_peer(&mut self.slots, id) else {
            return;
        };
        for ((sub, ..), cap) in videos.iter().zip(caps) {
            if let Some(s) = p.subs.get_mut(*sub) {
                s.selector.set_cap(cap);
            }
        }
        // Told again only on a real change: each call may start a probe.
        if desired > 0
            && (desired.abs_diff(p.desired) * 10 > p.desired
                || minimum.abs_diff(p.minimum) * 10 > p.minimum)
        {
            let mut sink = Sink {
                out: &mut self.out,
                events: &mut self.events,
            };
            if let Err(f) = p.set_bitrates(now, minimum, desired, &mut sink) {
                self.remove_peer(now, id, Some(f));
                return;
            }
            self.schedule(id);
        }
    }
}
