//! What the MediaCore does with what Peers report: tracks published and subscribed, each RTP
//! packet booked and fanned out through the Room's index (or withheld without a gap), keyframe
//! requests relayed and merged, and our offers sent.

use std::time::Instant;

use analytics::volume::energy;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::rtp::{ExtensionValues, RtpPacket, Vp8Descriptor};

use super::{MediaCore, kind_index, slot_peer};
use crate::media::event::MediaEvent;
use crate::media::peer::{Forward, PeerEvent, PeerId, Sink};
use crate::media::simulcast::{Decision, VideoChoice};
use crate::media::subscription::Subscription;
use crate::media::track::{Arrival, Track};

impl MediaCore {
    /// Acts on everything drained Peers reported, including what acting on it reports.
    pub(super) fn pump(&mut self, now: Instant) {
        while let Some((id, event)) = self.events.pop_front() {
            self.on_peer_event(now, id, event);
        }
    }

    pub(super) fn on_peer_event(&mut self, now: Instant, id: PeerId, event: PeerEvent) {
        let Some(peer) = slot_peer(&mut self.slots, id) else {
            return;
        };
        match event {
            PeerEvent::IceConnected => peer.ice_connected = true,
            PeerEvent::Connected => {
                peer.connected = true;
                self.counters.peers_connected += 1;
                // str0m reports the member's tracks right after: act once they are all in.
                self.events.push_back((id, PeerEvent::Settled));
            }
            PeerEvent::Settled => self.release_adopted(now, id),
            PeerEvent::IceDisconnected => self.counters.ice_disconnects += 1,
            PeerEvent::MediaAdded(mid, kind) => {
                let limits = self.cfg.limits;
                let wanted = (kind == MediaKind::Audio || peer.video)
                    && !peer.tracks.iter().any(|t| t.mid == mid);
                if !wanted {
                    return;
                }
                // Every published track costs every other member an m-line: capped per kind.
                if peer.tracks.iter().filter(|t| t.kind == kind).count() >= limits.tracks_per_kind {
                    self.counters.tracks_refused += 1;
                    return;
                }
                let muted = peer.state.muted(kind) || peer.state.held;
                let budget = limits.decode_budget;
                peer.tracks.push(Track::new(mid, kind, muted, budget, now));
                self.publish(now, id, mid, kind);
            }
            PeerEvent::Rtp(mid, rid, pkt) => self.on_rtp(now, id, mid, rid, &pkt),
            PeerEvent::KeyframeRequest(mid, kind) => {
                self.counters.keyframe_requests_in += 1;
                if let Some(s) = peer.subs.by_open_mid(mid) {
                    let (source, source_mid) = (s.source, s.source_mid);
                    // Of a simulcast track: the layer this subscriber is sent.
                    let rid = s.selector.current().or(s.selector.target());
                    self.request_keyframe(now, source, source_mid, kind, rid);
                }
            }
            PeerEvent::Egress(s) => {
                let audio = peer
                    .subs
                    .by_open_mid(s.mid)
                    .is_some_and(|t| t.kind == MediaKind::Audio);
                self.counters.nacks_in += peer.quality.on_egress(&s, audio);
            }
            PeerEvent::Ingress(s) => peer.quality.on_ingress(&s),
            PeerEvent::Estimate(bps) => {
                peer.downlink.on_estimate(bps, now);
                self.allocate(now, id);
            }
        }
    }

    /// Member `id` published track `mid`: every other member of the call subscribes.
    pub(super) fn publish(&mut self, now: Instant, id: PeerId, mid: Mid, kind: MediaKind) {
        let Some(peer) = self.peer(id) else {
            return;
        };
        let publisher = peer.user.clone();
        let others: Vec<PeerId> = match self.rooms.get(&peer.call_id) {
            Some(r) => r.peers().filter(|p| *p != id).collect(),
            None => return,
        };
        let mut rebound = false;
        for other in others {
            rebound |= self.subscribe(other, id, &publisher, mid, kind);
            self.negotiate(now, other);
        }
        if rebound && kind == MediaKind::Video {
            // Subscribers kept their m-line across the re-offer: their decoders need a
            // keyframe of the new source.
            self.request_keyframe(now, id, mid, KeyframeRequestKind::Pli, None);
        }
    }

    /// `subscriber` receives `publisher`'s track `mid`: on an m-line kept from the
    /// publisher's previous Peer if there is one (returns true), else from our next offer on.
    pub(super) fn subscribe(
        &mut self,
        subscriber: PeerId,
        publisher: PeerId,
        user: &str,
        mid: Mid,
        kind: MediaKind,
    ) -> bool {
        let Some(s) = slot_peer(&mut self.slots, subscriber) else {
            return false;
        };
        if s.subs.find(publisher, mid).is_some() {
            return false;
        }
        let choice = match self.rooms.get(&s.call_id) {
            Some(room) if kind == MediaKind::Video => room.choice(&s.user, user),
            _ => VideoChoice::default(),
        };
        let (sub, rebound) = match s.subs.adopted(publisher, kind) {
            Some(sub) => {
                if let Some(x) = s.subs.get_mut(sub) {
                    x.bind(mid);
                }
                (sub, true)
            }
            None => (
                s.subs.insert(Subscription::new(publisher, user, mid, kind)),
                false,
            ),
        };
        let paced = s.paced;
        if let Some(x) = s.subs.get_mut(sub) {
            x.selector.set_choice(choice);
            if paced {
                x.selector.start_low();
            }
        }
        if let Some(room) = self.rooms.get_mut(&s.call_id) {
            room.subscribe(publisher, mid, subscriber, sub);
        }
        rebound
    }

    /// One packet of `from`'s track `mid` (of simulcast layer `rid`): booked, then forwarded
    /// to every subscription of it (or withheld, leaving no gap, while its publisher is muted
    /// or held); of a simulcast track, only to the subscriptions forwarded that layer.
    pub(super) fn on_rtp(
        &mut self,
        now: Instant,
        from: PeerId,
        mid: Mid,
        rid: Option<Rid>,
        pkt: &RtpPacket,
    ) {
        let Some(publisher) = slot_peer(&mut self.slots, from) else {
            return;
        };
        let pt_in = *pkt.header.payload_type;
        let Some(track) = publisher.tracks.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        let kind = track.kind;
        let k = kind_index(kind);
        self.counters.rtp_in_packets[k] += 1;
        self.counters.rtp_in_bytes[k] += pkt.payload.len() as u64;
        let received = match rid {
            None => {
                track.rate.on_bytes(pkt.payload.len(), now);
                track.on_packet(Arrival::of(pkt), now)
            }
            Some(rid) => {
                let Some(r) = track.on_layer_packet(Arrival::of(pkt), rid, pkt.payload.len(), now)
                else {
                    self.counters.layers_refused += 1;
                    return;
                };
                r
            }
        };
        // Simulcast: the layer, whether the packet starts a keyframe of it, and every
        // RETARGET_EVERY a snapshot of the layers to re-target the subscriptions on.
        let vp8 = rid.and_then(|_| Vp8Descriptor::parse(&pkt.payload).ok());
        let layer = rid.map(|rid| (rid, vp8.is_some_and(|d| d.starts_keyframe(&pkt.payload))));
        let retarget = match (track.layers.as_mut(), rid) {
            (Some(l), Some(_)) => l.retarget_due(now).then_some(*l),
            _ => None,
        };
        let withheld = publisher.state.held || publisher.state.muted(kind);
        let level = match kind {
            MediaKind::Audio if !withheld => match track.audio_level(pkt, now) {
                Ok(level) => level,
                Err(last) => {
                    self.counters.decodes_skipped += 1;
                    last
                }
            },
            _ => None,
        };
        if let Some(level) = level {
            let secs = received.duration.as_secs_f64();
            publisher.volume.0 += energy(level) * secs;
            publisher.volume.1 += secs;
        }
        let epoch = track.epoch;
        if let Some(available) = received.available {
            self.out.push_back(MediaEvent::Available {
                call_id: publisher.call_id.clone(),
                user: publisher.user.clone(),
                kind,
                available,
            });
        }
        let params = publisher.params_of(pt_in);
        let Some(room) = self.rooms.get(&publisher.call_id) else {
            return;
        };
        let mut subs = std::mem::take(&mut self.scratch);
        subs.clear();
        subs.extend_from_slice(room.subscribers(from, mid));
        let ext = ExtensionValues {
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            video_orientation: pkt.header.ext_vals.video_orientation,
            ..Default::default()
        };
        for fan in &subs {
            let (sub_peer, sub) = (fan.peer, fan.sub);
            // A packet of a layer this subscription neither receives nor waits for: skipped
            // without touching its Peer (except when re-targeting, which visits them all).
            if let Some((rid, _)) = layer
                && retarget.is_none()
                && !fan.wants(rid)
            {
                continue;
            }
            let Some(peer) = slot_peer(&mut self.slots, sub_peer) else {
                continue;
            };
            if let Some((rid, keyframe)) = layer
                && let Some(s) = peer.subs.get_mut(sub)
            {
                s.follow(epoch);
                if let Some(layers) = &retarget {
                    let was = s.selector.paused();
                    if let Some(target) = s.selector.retarget(layers, now) {
                        self.keyframes_wanted.push((from, mid, target));
                    }
                    if s.selector.paused() != was {
                        self.out.push_back(MediaEvent::VideoPaused {
                            call_id: peer.call_id.clone(),
                            user: peer.user.clone(),
                            publisher: s.source_user.clone(),
                            paused: !was,
                        });
                    }
                }
                let decision = s.selector.on_packet(rid, keyframe);
                let layers = [s.selector.current(), s.selector.target()];
                if layers != fan.layers {
                    self.fanout_changed.push((sub_peer, sub, layers));
                }
                match decision {
                    Decision::Drop => continue,
                    Decision::Switch => {
                        s.switch_layer();
                        self.counters.layer_switches += 1;
                    }
                    Decision::Forward => {}
                }
            } else if kind == MediaKind::Video
                && let Some(s) = peer.subs.get_mut(sub)
                && s.selector.choice() == VideoChoice::Off
            {
                // One stream only, and this subscriber turned it off.
                s.withhold(*pkt.seq_no, epoch);
                continue;
            }
            let Some(params) = params.filter(|_| !withheld) else {
                if let Some(s) = peer.subs.get_mut(sub) {
                    // Another layer's numbers are not this stream's.
                    if layer.is_none_or(|(r, _)| s.selector.current() == Some(r)) {
                        s.withhold(*pkt.seq_no, epoch);
                    }
                }
                continue;
            };
            let f = Forward {
                pkt,
                params,
                epoch,
                ext: &ext,
                vp8,
            };
            let mut sink = Sink {
                out: &mut self.out,
                events: &mut self.events,
            };
            match peer.forward(now, sub, &f, &mut sink) {
                Ok(true) => {
                    self.counters.rtp_out_packets[k] += 1;
                    self.counters.rtp_out_bytes[k] += pkt.payload.len() as u64;
                }
                Ok(false) => {}
                Err(f) => {
                    self.schedule(sub_peer);
                    self.remove_peer(now, sub_peer, Some(f));
                    continue;
                }
            }
            self.schedule(sub_peer);
        }
        self.scratch = subs;
        if !self.fanout_changed.is_empty()
            && let Some(call_id) = slot_peer(&mut self.slots, from).map(|p| p.call_id.clone())
            && let Some(room) = self.rooms.get_mut(&call_id)
        {
            for (peer, sub, layers) in self.fanout_changed.drain(..) {
                room.set_layers(from, mid, peer, sub, layers);
            }
        }
        self.fanout_changed.clear();
        while let Some((p, m, rid)) = self.keyframes_wanted.pop() {
            self.request_keyframe(now, p, m, KeyframeRequestKind::Pli, Some(rid));
        }
        if received.new_source && kind == MediaKind::Video && rid.is_none() {
            // The subscribers' decoders need a keyframe of the new source.
            self.request_keyframe(now, from, mid, KeyframeRequestKind::Pli, None);
        }
    }

    /// A keyframe of `source`'s video track `mid` (of its simulcast layer `rid`, if one),
    /// merged with other requests (per track, or per layer).
    pub(super) fn request_keyframe(
        &mut self,
        now: Instant,
        source: PeerId,
        mid: Mid,
        kind: KeyframeRequestKind,
        rid: Option<Rid>,
    ) {
        let Some(p) = slot_peer(&mut self.slots, source) else {
            return;
        };
        let Some(t) = p.tracks.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        let allowed = match (rid, t.layers.as_mut()) {
            (Some(rid), Some(layers)) => layers.keyframe_allowed(rid, now),
            (None, _) => t.kind == MediaKind::Video && t.keyframe.allow(now),
            (Some(_), None) => false,
        };
        if !allowed {
            return;
        }
        let ssrc = match (rid, &t.layers) {
            (Some(rid), Some(layers)) => layers.ssrc_of(rid),
            _ => t.ssrc(),
        };
        let mut sink = Sink {
            out: &mut self.out,
            events: &mut self.events,
        };
        match p.request_keyframe(now, mid, ssrc, kind, &mut sink) {
            Ok(sent) => self.counters.keyframe_requests_out += u64::from(sent),
            Err(f) => self.remove_peer(now, source, Some(f)),
        }
        self.schedule(source);
    }

    /// Sends our offer for whatever this Peer's subscriptions need, if it may.
    pub(super) fn negotiate(&mut self, now: Instant, id: PeerId) {
        let Some(peer) = slot_peer(&mut self.slots, id) else {
            return;
        };
        let mut sink = Sink {
            out: &mut self.out,
            events: &mut self.events,
        };
        let result = peer.negotiate(now, &mut sink);
        match result {
            Ok(Some(sdp)) => self.out.push_back(MediaEvent::Offer {
                call_id: peer.call_id.clone(),
                user: peer.user.clone(),
                sdp,
            }),
            Ok(None) => {}
            Err(f) => self.remove_peer(now, id, Some(f)),
        }
        self.schedule(id);
    }
}
