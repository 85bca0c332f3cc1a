//! A Track: one stream a member publishes (their `sendonly` m-line, our `recvonly`), as the
//! server receives it: its current source (SSRC), loss and jitter counters, availability, the
//! speaking level of audio, and the throttle on keyframe requests toward it.
//!
//! Invariant: counters survive a source change (a new SSRC on the m-line): the new source's
//! sequence space is booked on top of the old one, never compared with it.

use std::time::{Duration, Instant};

use analytics::{Availability, AvailabilityConfig, Jitter};
use str0m::media::{MediaKind, Mid, Rid};
use str0m::rtp::{RtpPacket, Ssrc};

use super::keyframe::KeyframeThrottle;
use super::level::{DECODE_AFTER, OpusLevel};
use super::simulcast::{LayerPacket, Layers, Rate};

/// Seconds charged to the decode budget for a packet at least: Opus's shortest frame.
const MIN_DECODE_CHARGE: f64 = 0.0025;
use crate::limits::TokenBucket;

/// The facts of one received packet the Track books.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    pub ssrc: Ssrc,
    /// Extended sequence number.
    pub seq: u64,
    pub rtp_ts: u32,
    pub at: Instant,
}

impl Arrival {
    #[inline]
    pub fn of(pkt: &RtpPacket) -> Self {
        Self {
            ssrc: pkt.header.ssrc,
            seq: *pkt.seq_no,
            rtp_ts: pkt.header.timestamp,
            at: pkt.timestamp,
        }
    }
}

/// What one received packet changed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Received {
    /// Availability flipped to this value.
    pub available: Option<bool>,
    /// Audio time the packet covers (for volume weighting).
    pub duration: Duration,
    /// The packet starts a new source (the SSRC changed).
    pub new_source: bool,
}

pub struct Track {
    pub mid: Mid,
    pub kind: MediaKind,
    /// Bumped on every source change; subscriptions compare it with what they last saw.
    pub epoch: u32,
    pub keyframe: KeyframeThrottle,
    pub availability: Availability,
    /// The simulcast layers, once a packet with a rid came.
    pub layers: Option<Layers>,
    /// The payload bitrate of a track sent as one stream (what a subscriber's downlink
    /// must carry of it).
    pub rate: Rate,
    /// Of a simulcast track, the one layer whose packets the loss and jitter counters book.
    booked_rid: Option<Rid>,
    ssrc: Option<Ssrc>,
    /// Extended sequence numbers of the current source: first, highest, and packets received.
    first_seq: Option<u64>,
    highest_seq: u64,
    received: u64,
    /// (expected, lost) of earlier sources.
    carried: (u64, i64),
    jitter: Jitter,
    last_ts: Option<u32>,
    /// Consecutive audio packets without the audio-level extension, and the Opus decoder
    /// that measures the level once there were enough of them.
    no_level_ext: u32,
    meter: Option<OpusLevel>,
    /// Seconds of audio we may still decode (refills at the decode budget per second).
    decode: TokenBucket,
    last_level: Option<u8>,
}

impl Track {
    /// A new track, muted if its member is (availability waits for unmute and media).
    /// `decode_budget`: seconds of Opus decoded per second when the level must be measured.
    pub fn new(mid: Mid, kind: MediaKind, muted: bool, decode_budget: f64, now: Instant) -> Self {
        let cfg = match kind {
            MediaKind::Audio => AvailabilityConfig::AUDIO,
            MediaKind::Video => AvailabilityConfig::VIDEO,
        };
        let mut availability = Availability::new(cfg);
        availability.set_muted(muted);
        availability.set_published(true);
        Self {
            mid,
            kind,
            epoch: 0,
            keyframe: KeyframeThrottle::default(),
            availability,
            layers: None,
            rate: Rate::new(now),
            booked_rid: None,
            ssrc: None,
            first_seq: None,
            highest_seq: 0,
            received: 0,
            carried: (0, 0),
            jitter: Jitter::new(clock_rate(kind)),
            last_ts: None,
            no_level_ext: 0,
            meter: None,
            decode: TokenBucket::new(decode_budget, decode_budget, now),
            last_level: None,
        }
    }

    /// Books one new packet: source, loss counters, jitter, availability.
    #[inline]
    pub fn on_packet(&mut self, pkt: Arrival, now: Instant) -> Received {
        let ssrc = pkt.ssrc;
        let new_source = self.ssrc.is_some_and(|s| s != ssrc);
        if new_source {
            self.epoch = self.epoch.wrapping_add(1);
            let (e, l) = self.counters_of_source();
            self.carried = (self.carried.0 + e, self.carried.1 + l);
            self.first_seq = None;
            self.highest_seq = 0;
            self.received = 0;
            self.jitter = Jitter::new(clock_rate(self.kind));
            self.last_ts = None;
        }
        self.ssrc = Some(ssrc);
        let seq = pkt.seq;
        let first = *self.first_seq.get_or_insert(seq);
        self.received += 1;
        if seq >= self.highest_seq || seq == first {
            self.highest_seq = seq.max(self.highest_seq);
            self.jitter.on_packet(pkt.at, pkt.rtp_ts);
        }
        let duration = match self.last_ts.replace(pkt.rtp_ts) {
            Some(prev) if self.kind == MediaKind::Audio => {
                let step = pkt.rtp_ts.wrapping_sub(prev);
                Duration::from_micros((u64::from(step) * 1000 / 48).min(120_000))
            }
            _ => Duration::from_millis(20),
        };
        Received {
            available: self.availability.on_packet(now),
            duration,
            new_source,
        }
    }

    /// Books one packet of simulcast layer `rid`: the layers' rates and sources; the counters
    /// follow one layer (the first seen). `None` for a layer beyond the ones forwarded.
    #[inline]
    pub fn on_layer_packet(
        &mut self,
        pkt: Arrival,
        rid: Rid,
        bytes: usize,
        now: Instant,
    ) -> Option<Received> {
        let layers = self.layers.get_or_insert_with(Layers::default);
        let LayerPacket::Booked { new_source } = layers.on_packet(rid, pkt.ssrc, bytes, now) else {
            return None;
        };
        if *self.booked_rid.get_or_insert(rid) == rid {
            return Some(self.on_packet(pkt, now));
        }
        if new_source {
            self.epoch = self.epoch.wrapping_add(1);
        }
        Some(Received {
            available: self.availability.on_packet(now),
            duration: Duration::from_millis(20),
            new_source,
        })
    }

    /// The packet's level (−dBov): from the RFC 6464 extension, or by decoding the Opus of a
    /// publisher that does not send it, within the decode budget (`Err(level)` when the budget
    /// is spent: the last measured level stands in).
    #[inline]
    pub fn audio_level(&mut self, pkt: &RtpPacket, now: Instant) -> Result<Option<u8>, Option<u8>> {
        if let Some(l) = pkt.header.ext_vals.audio_level {
            self.no_level_ext = 0;
            self.meter = None;
            return Ok(Some(l.unsigned_abs().min(127)));
        }
        self.no_level_ext = self.no_level_ext.saturating_add(1);
        if self.no_level_ext < DECODE_AFTER {
            return Ok(None);
        }
        // Charged by the audio the packet holds (its TOC), not by the RTP timestamp step,
        // which the sender chooses: a step of 0 must not make decoding free.
        if !self.decode.take_n(now, decode_charge(&pkt.payload)) {
            return Err(self.last_level);
        }
        if self.meter.is_none() {
            self.meter = OpusLevel::new();
        }
        let level = self.meter.as_mut().and_then(|m| m.level(&pkt.payload));
        self.last_level = level.or(self.last_level);
        Ok(level)
    }

    /// Cumulative (expected, lost) over every source, for windowed loss.
    pub fn counters(&self) -> Option<(u64, i64)> {
        self.first_seq?;
        let (e, l) = self.counters_of_source();
        Some((self.carried.0 + e, self.carried.1 + l))
    }

    /// The source (SSRC) the member sends on this track now.
    pub fn ssrc(&self) -> Option<Ssrc> {
        self.ssrc
    }

    pub fn jitter_ms(&self) -> f64 {
        self.jitter.ms()
    }

    fn counters_of_source(&self) -> (u64, i64) {
        match self.first_seq {
            Some(first) => {
                let expected = self.highest_seq - first + 1;
                (expected, expected as i64 - self.received as i64)
            }
            None => (0, 0),
        }
    }
}

pub fn clock_rate(kind: MediaKind) -> u32 {
    match kind {
        MediaKind::Audio => 48_000,
        MediaKind::Video => 90_000,
    }
}

/// Seconds of audio an Opus packet holds, by its TOC (at least [`MIN_DECODE_CHARGE`]).
fn decode_charge(payload: &[u8]) -> f64 {
    opus::packet::get_nb_samples(payload, 48_000)
        .map_or(MIN_DECODE_CHARGE, |n| n as f64 / 48_000.0)
        .max(MIN_DECODE_CHARGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_is_charged_by_the_audio_a_packet_holds() {
        let mut enc =
            opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        for ms in [20usize, 60, 120] {
            let frame = enc.encode_vec(&vec![1000i16; 48 * ms], 4000).unwrap();
            let charged = decode_charge(&frame);
            assert!(
                (charged - ms as f64 / 1000.0).abs() < 1e-9,
                "{ms} ms: {charged}"
            );
        }
        // Garbage decodes to nothing but still costs the shortest frame.
        assert_eq!(decode_charge(&[]), MIN_DECODE_CHARGE);
        assert_eq!(decode_charge(&[0xff, 0xff, 0xff]), MIN_DECODE_CHARGE);
    }

    fn pkt(ssrc: u32, seq: u64, rtp_ts: u32, at: Instant) -> Arrival {
        Arrival {
            ssrc: ssrc.into(),
            seq,
            rtp_ts,
            at,
        }
    }

    #[test]
    fn loss_is_counted_across_a_source_change() {
        let t = Instant::now();
        let mut tr = Track::new(Mid::from("0"), MediaKind::Audio, false, 1.2, Instant::now());
        for s in [10, 11, 13] {
            assert!(!tr.on_packet(pkt(1, s, 0, t), t).new_source);
        }
        assert_eq!(tr.counters(), Some((4, 1)));
        let r = tr.on_packet(pkt(2, 5000, 0, t), t);
        assert!(r.new_source);
        assert_eq!(tr.epoch, 1);
        tr.on_packet(pkt(2, 5002, 0, t), t);
        assert_eq!(tr.counters(), Some((7, 2)));
    }

    #[test]
    fn a_muted_track_is_not_available_until_unmuted() {
        let t = Instant::now();
        let mut tr = Track::new(Mid::from("0"), MediaKind::Audio, true, 1.2, t);
        for i in 0..50u64 {
            let at = t + Duration::from_millis(20 * i);
            assert_eq!(tr.on_packet(pkt(1, i, 0, at), at).available, None);
        }
        tr.availability.set_muted(false);
        let mut flipped = false;
        for i in 50..80u64 {
            let at = t + Duration::from_millis(20 * i);
            flipped |= tr.on_packet(pkt(1, i, 0, at), at).available == Some(true);
        }
        assert!(flipped);
    }
}
