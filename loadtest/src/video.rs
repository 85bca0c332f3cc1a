//! A caller's video, VP8-shaped: what it sends (one stream, or 2-3 simulcast layers of
//! distinct sizes, a keyframe every 3 s and whenever asked, per layer) and what it books of
//! each video it receives (whose it is, which layer, gaps that are freezes, bytes).
//!
//! Payload: VP8 descriptor (S=1, partition 0), frame tag (P bit 0 = keyframe), then
//! [`VIDEO_MARK`] + the sender's slot and the layer index: the SFU never rewrites payloads
//! beyond the descriptor, so a receiver knows whose video and which layer it sees.

use std::time::{Duration, Instant};

use str0m::media::{Rid, Simulcast, SimulcastLayer};

/// Third byte of every video payload: this plus the sender's slot.
pub const VIDEO_MARK: u8 = 0xa0;
/// A gap this long between two packets of one video is a freeze.
pub const FREEZE: Duration = Duration::from_millis(500);
/// Frame sizes (keyframe, delta) of the full layer; a simulcast layer `i` of `n` sends
/// `1 / 2^(n-1-i)` of them (a quarter, a half, all of it).
const FULL: (usize, usize) = (1100, 600);
const RIDS: [&str; 3] = ["l", "m", "h"];
const KEYFRAME_EVERY: Duration = Duration::from_secs(3);

/// The rids a publisher of `layers` layers sends, lowest first.
fn rids(layers: usize) -> &'static [&'static str] {
    match layers {
        2 => &["l", "h"],
        3 => &RIDS,
        _ => &[],
    }
}

/// The simulcast a publisher offers (none for one layer).
pub fn simulcast(layers: usize) -> Option<Simulcast> {
    let rids = rids(layers);
    (!rids.is_empty()).then(|| Simulcast {
        send: rids.iter().map(|r| SimulcastLayer::new(r)).collect(),
        recv: Vec::new(),
    })
}

/// What one publisher sends.
pub struct VideoSender {
    layers: usize,
    slot: u8,
    seq: [u64; 3],
    key_due: [bool; 3],
    last_key: [Option<Instant>; 3],
}

/// One frame to write: on layer `rid` (`None` without simulcast), sequence number `seq`.
pub struct Frame {
    pub rid: Option<Rid>,
    pub seq: u64,
    pub payload: Vec<u8>,
}

impl VideoSender {
    /// `layers`: 1 (no simulcast), 2 or 3.
    pub fn new(layers: usize, slot: usize) -> Self {
        Self {
            layers: layers.clamp(1, 3),
            slot: slot as u8,
            seq: [0; 3],
            key_due: [true; 3],
            last_key: [None; 3],
        }
    }

    /// The receiver of layer `rid` (of every layer, for `None`) asked for a keyframe.
    pub fn keyframe_requested(&mut self, rid: Option<Rid>) {
        match rid.and_then(|r| self.index_of(r)) {
            Some(i) => self.key_due[i] = true,
            None => self.key_due = [true; 3],
        }
    }

    /// A new media leg: every layer starts with a keyframe.
    pub fn restart(&mut self) {
        self.key_due = [true; 3];
    }

    fn index_of(&self, rid: Rid) -> Option<usize> {
        rids(self.layers).iter().position(|r| Rid::from(*r) == rid)
    }

    /// The frames of one frame interval, one per layer.
    pub fn frames(&mut self, now: Instant) -> impl Iterator<Item = Frame> + '_ {
        let n = self.layers;
        (0..n).map(move |i| {
            self.seq[i] += 1;
            if self.last_key[i].is_none_or(|t| now.duration_since(t) >= KEYFRAME_EVERY) {
                self.key_due[i] = true;
            }
            let key = std::mem::take(&mut self.key_due[i]);
            if key {
                self.last_key[i] = Some(now);
            }
            let shift = n - 1 - i;
            let size = if key { FULL.0 } else { FULL.1 } >> shift;
            let mut payload = vec![0x10, if key { 0x00 } else { 0x01 }];
            payload.push(VIDEO_MARK + self.slot);
            payload.push(i as u8);
            payload.resize(size.max(8), 0x5a);
            Frame {
                rid: rids(n).get(i).map(|r| Rid::from(*r)),
                seq: self.seq[i],
                payload,
            }
        })
    }
}

/// What a receiver books of one incoming video stream.
#[derive(Clone, Debug, Default)]
pub struct VideoSeen {
    /// The sender's slot, from the payloads.
    pub from: Option<usize>,
    /// The layer received last, and (seconds into the run, layer) at every change.
    pub layer: Option<u8>,
    pub layers: Vec<(f64, u8)>,
    pub bytes: u64,
    pub freezes: u64,
    pub longest_gap: Duration,
    /// Packets that arrived once the receiver's choices had settled.
    pub settled_packets: u64,
    last_at: Option<Instant>,
}

impl VideoSeen {
    pub fn on_packet(&mut self, payload: &[u8], at: Instant, epoch: Instant, settled: bool) {
        self.bytes += payload.len() as u64;
        self.settled_packets += u64::from(settled);
        if let Some(b) = payload.get(2)
            && (VIDEO_MARK..VIDEO_MARK + 16).contains(b)
        {
            self.from.get_or_insert(usize::from(b - VIDEO_MARK));
            let layer = payload.get(3).copied().unwrap_or(0);
            if self.layer != Some(layer) {
                self.layer = Some(layer);
                self.layers
                    .push((at.saturating_duration_since(epoch).as_secs_f64(), layer));
            }
        }
        if let Some(last) = self.last_at {
            let gap = at.saturating_duration_since(last);
            self.longest_gap = self.longest_gap.max(gap);
            self.freezes += u64::from(gap > FREEZE);
        }
        self.last_at = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_have_distinct_sizes_and_keyframes_when_asked() {
        let t = Instant::now();
        let mut s = VideoSender::new(3, 5);
        let first: Vec<Frame> = s.frames(t).collect();
        assert_eq!(first.len(), 3);
        assert!(
            first.iter().all(|f| f.payload[1] == 0x00),
            "keyframes first"
        );
        let sizes: Vec<usize> = first.iter().map(|f| f.payload.len()).collect();
        assert_eq!(sizes, [275, 550, 1100]);
        assert_eq!(first[2].rid, Some(Rid::from("h")));
        assert_eq!(first[0].payload[2], VIDEO_MARK + 5);
        let t1 = t + Duration::from_millis(33);
        assert!(s.frames(t1).all(|f| f.payload[1] == 0x01));
        s.keyframe_requested(Some(Rid::from("m")));
        let keys: Vec<bool> = s.frames(t1).map(|f| f.payload[1] == 0x00).collect();
        assert_eq!(keys, [false, true, false]);
        let one: Vec<Frame> = VideoSender::new(1, 0).frames(t).collect();
        assert_eq!(
            (one.len(), one[0].rid, one[0].payload.len()),
            (1, None, 1100)
        );
    }

    #[test]
    fn a_receiver_books_layers_and_freezes() {
        let t = Instant::now();
        let mut v = VideoSeen::default();
        let mut s = VideoSender::new(2, 3);
        let frames: Vec<Frame> = s.frames(t).collect();
        v.on_packet(&frames[1].payload, t, t, false);
        v.on_packet(&frames[1].payload, t + Duration::from_millis(100), t, false);
        v.on_packet(&frames[0].payload, t + Duration::from_millis(800), t, true);
        assert_eq!(v.settled_packets, 1);
        assert_eq!(v.from, Some(3));
        assert_eq!(v.layer, Some(0));
        assert_eq!(v.layers.len(), 2);
        assert_eq!(v.freezes, 1);
        assert_eq!(v.longest_gap, Duration::from_millis(700));
    }
}
