//! The MediaCore's commands that build and renegotiate Peers: a member's offer (a new Peer,
//! answered before any offer of ours), their answer to our offer, and trickled candidates.

use std::time::Instant;

use str0m::Candidate;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};

use super::{MAX_SDP_BYTES, MediaCore, slot_peer};
use crate::limits::TokenBucket;
use crate::media::command::{MemberMedia, Ticket};
use crate::media::event::MediaError;
use crate::media::peer::{Peer, PeerId, Sink, guarded};

impl MediaCore {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn offer(
        &mut self,
        now: Instant,
        call_id: &str,
        user: &str,
        sdp: &str,
        video: bool,
        state: MemberMedia,
        ticket: Ticket,
    ) {
        let mlines = sdp.lines().filter(|l| l.starts_with("m=")).count();
        let max_mlines = self.cfg.limits.offer_mlines;
        let offer = if sdp.len() > MAX_SDP_BYTES {
            Err(MediaError::BadSdp("larger than 64 KiB".into()))
        } else if mlines > max_mlines {
            Err(MediaError::BadSdp(format!(
                "{mlines} m-lines; at most {max_mlines} are accepted"
            )))
        } else {
            guarded(|| SdpOffer::from_sdp_string(sdp))
                .map_err(|_| MediaError::BadSdp("offer could not be parsed".into()))
                .and_then(|r| r.map_err(|e| MediaError::BadSdp(e.to_string())))
        };
        let offer = match offer {
            Ok(o) => o,
            Err(e) => return self.reply(ticket, Err(e)),
        };
        let id = self.next_id();
        let mut sink = Sink {
            out: &mut self.out,
            events: &mut self.events,
        };
        let (udp, tcp, bwe) = (self.cfg.advertised, self.cfg.advertised_tcp, self.cfg.bwe);
        let accepted = Peer::accept(
            id, now, udp, tcp, call_id, user, offer, video, bwe, state, &mut sink,
        );
        let (mut peer, answer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                self.events.retain(|(p, _)| *p != id);
                return self.reply(ticket, Err(e));
            }
        };
        let rate = f64::from(self.cfg.limits.packet_rate.max(1));
        peer.rate = TokenBucket::new(rate, rate, now);
        // A new offer replaces the member's Peer (a reconnect, or an ICE restart); the others
        // keep their m-lines for it, so re-offers never grow their SDP.
        if let Some(old) = self.member(call_id, user) {
            self.replace_peer(now, old, id);
        }
        self.router.add_peer(&peer.ufrag, id);
        self.insert(id, peer);
        self.schedule(id);
        let room = self.rooms.entry(call_id.to_string()).or_default();
        room.join(user, id);
        // Subscribe the newcomer to what the others already publish.
        let others: Vec<PeerId> = room.peers().filter(|p| *p != id).collect();
        for other in others {
            let tracks: Vec<(Mid, MediaKind, String)> = match self.peer(other) {
                Some(o) => o
                    .tracks
                    .iter()
                    .map(|t| (t.mid, t.kind, o.user.clone()))
                    .collect(),
                None => continue,
            };
            for (mid, kind, publisher) in tracks {
                self.subscribe(id, other, &publisher, mid, kind);
            }
        }
        self.next_volume
            .get_or_insert(now + self.cfg.volume_interval);
        self.next_quality
            .get_or_insert(now + self.cfg.quality_interval);
        // Learn its tracks (MediaAdded) and tell the others, then answer, then our offer.
        self.pump(now);
        self.reply(ticket, Ok(Some(answer)));
        if let Some(p) = slot_peer(&mut self.slots, id) {
            p.replied = true;
        }
        self.negotiate(now, id);
    }

    pub(super) fn answer(
        &mut self,
        now: Instant,
        call_id: &str,
        user: &str,
        sdp: &str,
        ticket: Ticket,
    ) {
        let Some(id) = self.member(call_id, user) else {
            return self.reply(ticket, Err(MediaError::NoPeer));
        };
        let answer = if sdp.len() > MAX_SDP_BYTES {
            Err(MediaError::BadSdp("larger than 64 KiB".into()))
        } else {
            guarded(|| SdpAnswer::from_sdp_string(sdp))
                .map_err(|_| MediaError::BadSdp("answer could not be parsed".into()))
                .and_then(|r| r.map_err(|e| MediaError::BadSdp(e.to_string())))
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => return self.reply(ticket, Err(e)),
        };
        let Some(peer) = slot_peer(&mut self.slots, id) else {
            return self.reply(ticket, Err(MediaError::NoPeer));
        };
        let mut sink = Sink {
            out: &mut self.out,
            events: &mut self.events,
        };
        let result = peer.accept_answer(now, answer, &mut sink);
        self.schedule(id);
        match result {
            Err(f) => {
                self.remove_peer(now, id, Some(f));
                self.reply(
                    ticket,
                    Err(MediaError::BadSdp("answer could not be handled".into())),
                );
            }
            Ok(Err(e)) => self.reply(ticket, Err(e)),
            Ok(Ok(opened)) => {
                self.reply(ticket, Ok(None));
                if let Some(p) = slot_peer(&mut self.slots, id)
                    && p.wants_fresh_session(super::COMPACT_AFTER)
                {
                    let (call_id, user) = (p.call_id.clone(), p.user.clone());
                    self.out
                        .push_back(crate::media::MediaEvent::Reoffer { call_id, user });
                }
                // A new subscriber needs a keyframe to start decoding.
                for (source, mid) in opened {
                    self.request_keyframe(now, source, mid, KeyframeRequestKind::Pli, None);
                }
            }
        }
        self.pump(now);
        self.negotiate(now, id);
    }

    pub(super) fn candidate(&mut self, now: Instant, call_id: &str, user: &str, candidate: &str) {
        let Some(id) = self.member(call_id, user) else {
            return;
        };
        let text = candidate.strip_prefix("candidate:").unwrap_or(candidate);
        let Ok(Ok(c)) = guarded(|| Candidate::from_sdp_string(&format!("candidate:{text}"))) else {
            return;
        };
        let Some(peer) = slot_peer(&mut self.slots, id) else {
            return;
        };
        if peer.candidates >= self.cfg.limits.candidates {
            self.counters.candidates_refused += 1;
            return;
        }
        peer.candidates += 1;
        let mut sink = Sink {
            out: &mut self.out,
            events: &mut self.events,
        };
        let result = peer.add_candidate(now, c, &mut sink);
        self.schedule(id);
        if let Err(f) = result {
            self.remove_peer(now, id, Some(f));
        }
    }
}
