//! Simulcast in the in-memory world: a client that publishes its video as three RID layers of
//! distinct sizes (VP8-shaped: a payload descriptor with a 15-bit picture id, a keyframe only
//! at its start and when asked), and what a receiver books of them: packets per sender and
//! layer, every layer switch and whether it landed on a keyframe, picture-id breaks, and
//! gaps between video packets (freezes).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use str0m::media::{Mid, Rid, Simulcast, SimulcastLayer};
use str0m::rtp::RtpWrite;

use super::Client;

/// The layers a simulcast client sends, lowest first, and each one's payload size per frame
/// (at 30 frames/s: about 36, 144 and 216 kbit/s of payload; the top one as large as the
/// one-stream video packets, so the forwarding benchmark compares like with like). Three low
/// layers and one voice fit a 300 kbit/s link with room to spare; a middle one more does not.
pub const LAYERS: [(&str, usize); 3] = [("l", 150), ("m", 600), ("h", 900)];
/// Marks a simulcast payload (byte 5, after the VP8 descriptor and frame tag).
pub const MARK: u8 = 0x5C;

pub fn layers() -> Simulcast {
    Simulcast {
        send: LAYERS.iter().map(|(r, _)| SimulcastLayer::new(r)).collect(),
        recv: Vec::new(),
    }
}

pub fn layer_index(rid: Rid) -> Option<usize> {
    LAYERS.iter().position(|(r, _)| Rid::from(*r) == rid)
}

/// What a publisher keeps per layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct SendLayer {
    pub seq: u64,
    pub picture_id: u16,
    /// A keyframe goes out next (the first frame, or one was asked for).
    pub key_due: bool,
    pub keyframes: u64,
}

/// One frame of layer `layer` of `sender`, number `n`.
pub fn payload(sender: u8, layer: usize, n: u64, picture_id: u16, key: bool) -> Vec<u8> {
    let mut p = vec![
        0x90,
        0x80,
        0x80 | (picture_id >> 8) as u8 & 0x7f,
        picture_id as u8,
        if key { 0x00 } else { 0x01 },
        MARK,
        sender,
        1,
        layer as u8,
    ];
    p.extend_from_slice(&n.to_be_bytes());
    p.resize(LAYERS[layer].1, 0);
    p
}

/// A received simulcast frame: (sender, layer, keyframe, picture id).
pub fn parse(payload: &[u8]) -> Option<(u8, u8, bool, u16)> {
    if payload.len() < 9 || payload[0] != 0x90 || payload[5] != MARK {
        return None;
    }
    let pid = (u16::from(payload[2] & 0x7f) << 8) | u16::from(payload[3]);
    Some((payload[6], payload[8], payload[4] & 0x01 == 0, pid))
}

/// What a receiver saw of one simulcast sender.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Packets per layer.
    pub per_layer: [u64; 3],
    /// (when, layer) at every change of layer, the first included.
    pub switches: Vec<(Instant, u8)>,
    /// Layer changes whose first packet was not a keyframe.
    pub switches_off_keyframe: u64,
    /// Consecutive packets whose picture ids did not follow (same or +1).
    pub picture_id_breaks: u64,
    /// The longest time without a packet of this sender's video, once it started, and when
    /// it ended.
    pub longest_gap: Duration,
    pub longest_gap_until: Option<Instant>,
    last: Option<(u8, u16, Instant)>,
}

impl Seen {
    pub fn on_packet(&mut self, layer: u8, key: bool, pid: u16, at: Instant) {
        if let Some(c) = self.per_layer.get_mut(usize::from(layer)) {
            *c += 1;
        }
        match self.last {
            Some((l, last_pid, last_at)) => {
                if l != layer {
                    self.switches.push((at, layer));
                    self.switches_off_keyframe += u64::from(!key);
                }
                if pid != last_pid && pid != (last_pid + 1) % (1 << 15) {
                    self.picture_id_breaks += 1;
                }
                if at - last_at > self.longest_gap {
                    self.longest_gap = at - last_at;
                    self.longest_gap_until = Some(at);
                }
            }
            None => {
                self.switches.push((at, layer));
                self.switches_off_keyframe += u64::from(!key);
            }
        }
        self.last = Some((layer, pid, at));
    }

    /// The layer received last.
    pub fn layer(&self) -> Option<u8> {
        self.last.map(|l| l.0)
    }

    /// Time since the last packet (for a freeze still going on at `now`).
    pub fn silent_for(&self, now: Instant) -> Duration {
        self.last.map_or(Duration::ZERO, |l| now - l.2)
    }
}

/// Per receiver: sender index → what it saw.
pub type Received = BTreeMap<u8, Seen>;

/// Writes one frame of every simulcast layer of client `c`'s video track `mid`.
pub(super) fn frame(c: &mut Client, mid: Mid, pt: str0m::media::Pt, now: Instant) {
    let index = c.index;
    let Some(layers) = c.simulcast.as_mut() else {
        return;
    };
    for (i, (rid, _)) in LAYERS.iter().enumerate() {
        let l = &mut layers[i];
        l.seq += 1;
        l.picture_id = (l.picture_id + 1) % (1 << 15);
        let key = std::mem::take(&mut l.key_due);
        l.keyframes += u64::from(key);
        let payload = payload(index, i, l.seq, l.picture_id, key);
        let ts = (l.seq * 3000) as u32;
        if let Some(tx) = c
            .rtc
            .direct_api()
            .stream_tx_by_mid(mid, Some((*rid).into()))
        {
            tx.write_rtp(
                RtpWrite::new(pt, l.seq.into(), ts, now, payload)
                    .marker(true)
                    .nackable(true),
            );
            c.sent[1] += 1;
        }
    }
}
