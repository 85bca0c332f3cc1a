//! The MediaCore's side of `subscribe`: which of a publisher's video a member receives (the
//! high or low simulcast layer, or none), kept in the Room for the call and applied to the
//! member's subscriptions now and to those of their later Peers.

use std::time::Instant;

use str0m::media::{KeyframeRequestKind, MediaKind, Mid};

use super::{MediaCore, slot_peer};
use crate::media::simulcast::VideoChoice;

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
            self.request_keyframe(now, pub_peer, mid, KeyframeRequestKind::Pli);
        }
    }
}
