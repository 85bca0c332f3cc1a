//! Simulcast: the layers a publisher sends of one video track (RID-based, as browsers send
//! them with `sendEncodings`), ranked by what they carry, and per subscription the one layer
//! it is forwarded ([`LayerSelector`]): the subscriber's choice (TRTC's big / small stream,
//! or off), capped by what its downlink carries, switched only at a keyframe of the new layer.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use sfu::media::simulcast::{Decision, LayerSelector, Layers, VideoChoice};
//! use str0m::media::Rid;
//! let (t0, lo, hi) = (Instant::now(), Rid::from("l"), Rid::from("h"));
//! let mut layers = Layers::default();
//! for i in 0..60u32 {
//!     let at = t0 + Duration::from_millis(u64::from(i) * 20);
//!     layers.on_packet(lo, 1.into(), 200, at);
//!     layers.on_packet(hi, 2.into(), 1_000, at);
//! }
//! let now = t0 + Duration::from_millis(1_200);
//! let mut sel = LayerSelector::default();
//! sel.retarget(&layers, now);
//! assert_eq!(sel.target(), Some(hi), "high by default");
//! assert_eq!(sel.on_packet(hi, false), Decision::Drop, "waits for a keyframe");
//! assert_eq!(sel.on_packet(hi, true), Decision::Switch);
//! sel.set_choice(VideoChoice::Low);
//! sel.retarget(&layers, now);
//! assert_eq!(sel.on_packet(hi, false), Decision::Forward, "until low's keyframe");
//! assert_eq!(sel.on_packet(lo, true), Decision::Switch);
//! ```
//!
//! Invariants: a subscription's layer changes only on a packet that starts a keyframe of the
//! new layer (its decoder could not use anything else); layers are ranked by measured bitrate,
//! never by their names, which are the publisher's choice.

use std::time::{Duration, Instant};

use str0m::media::Rid;
use str0m::rtp::Ssrc;

use super::keyframe::KeyframeThrottle;

/// Layers a track may have; more rids are ignored.
pub const MAX_LAYERS: usize = 3;
/// Bitrates are measured over windows of this length.
const WINDOW: Duration = Duration::from_secs(1);
/// A layer without packets this long is not sent any more (the publisher paused it).
const INACTIVE_AFTER: Duration = Duration::from_millis(1500);
/// How often subscriptions are re-targeted on what the layers carry.
pub const RETARGET_EVERY: Duration = Duration::from_millis(250);

/// What a subscription forwards, as the allocator counts it ([`LayerSelector::held`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    Layer(Rid),
    Lowest,
    Nothing,
}

/// What a subscriber asked for a publisher's video.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VideoChoice {
    /// The best layer the downlink carries (TRTC's big stream).
    #[default]
    High,
    /// The lowest layer (TRTC's small stream).
    Low,
    /// None at all (TRTC's stopRemoteView).
    Off,
}

/// The bitrate of a stream's payload, measured over windows of [`WINDOW`].
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// Bytes in the current window, and the bitrate of the last full one.
    bytes: u64,
    window_start: Instant,
    bitrate: u64,
}

impl Rate {
    pub fn new(now: Instant) -> Self {
        Self {
            bytes: 0,
            window_start: now,
            bitrate: 0,
        }
    }

    #[inline]
    pub fn on_bytes(&mut self, bytes: usize, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW {
            self.bitrate = self.bytes * 8 * 1_000_000 / elapsed.as_micros().max(1) as u64;
            self.bytes = 0;
            self.window_start = now;
        }
        self.bytes += bytes as u64;
    }

    /// Bit/s: of the last full window, or before there was one, of what came so far.
    pub fn get(&self, now: Instant) -> u64 {
        if self.bitrate > 0 {
            return self.bitrate;
        }
        let secs = now
            .saturating_duration_since(self.window_start)
            .as_secs_f64();
        (self.bytes as f64 * 8.0 / secs.max(0.02)) as u64
    }
}

/// One received layer.
#[derive(Clone, Copy, Debug)]
struct Layer {
    rid: Rid,
    ssrc: Ssrc,
    keyframe: KeyframeThrottle,
    rate: Rate,
    last_at: Instant,
}

/// The layers of one simulcast track.
/// Copy and allocation-free: the core hands a snapshot to every subscription it re-targets.
#[derive(Clone, Copy, Debug, Default)]
pub struct Layers {
    layers: [Option<Layer>; MAX_LAYERS],
    next_retarget: Option<Instant>,
    /// The first packet of any layer.
    first_at: Option<Instant>,
}

/// What one packet told of its layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerPacket {
    /// A rid beyond [`MAX_LAYERS`]: not forwarded.
    Refused,
    /// Booked; `new_source` when the layer's SSRC changed (the publisher re-offered).
    Booked { new_source: bool },
}

impl Layers {
    /// A packet of `rid` from `ssrc` with `bytes` of payload arrived at `now`. Payload only,
    /// as str0m's estimate counts it (it measures what the link carries of payload, with
    /// the headers of the packets it carries now).
    pub fn on_packet(&mut self, rid: Rid, ssrc: Ssrc, bytes: usize, now: Instant) -> LayerPacket {
        let slot = match self
            .layers
            .iter()
            .position(|l| l.is_some_and(|l| l.rid == rid))
        {
            Some(i) => Some(i),
            None => self.layers.iter().position(Option::is_none),
        };
        let Some(i) = slot else {
            return LayerPacket::Refused;
        };
        self.first_at.get_or_insert(now);
        let l = self.layers[i].get_or_insert(Layer {
            rid,
            ssrc,
            keyframe: KeyframeThrottle::default(),
            rate: Rate::new(now),
            last_at: now,
        });
        let new_source = std::mem::replace(&mut l.ssrc, ssrc) != ssrc;
        l.rate.on_bytes(bytes, now);
        l.last_at = now;
        LayerPacket::Booked { new_source }
    }

    /// The SSRC layer `rid` is received on.
    pub fn ssrc_of(&self, rid: Rid) -> Option<Ssrc> {
        self.layers
            .iter()
            .flatten()
            .find(|l| l.rid == rid)
            .map(|l| l.ssrc)
    }

    /// Whether a keyframe of `rid` may be asked for now (merged across subscribers).
    pub fn keyframe_allowed(&mut self, rid: Rid, now: Instant) -> bool {
        self.layers
            .iter_mut()
            .flatten()
            .find(|l| l.rid == rid)
            .is_some_and(|l| l.keyframe.allow(now))
    }

    /// Whether subscriptions should be re-targeted now (every [`RETARGET_EVERY`]).
    pub fn retarget_due(&mut self, now: Instant) -> bool {
        if self.next_retarget.is_some_and(|t| now < t) {
            return false;
        }
        self.next_retarget = Some(now + RETARGET_EVERY);
        true
    }

    /// How long layers have been arriving: under [`RETARGET_EVERY`], some may not have shown
    /// up yet, and the ranking is a guess.
    pub fn age(&self, now: Instant) -> Duration {
        self.first_at
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }

    /// The layers still sent at `now`, lowest bitrate first, with their bitrates (bit/s).
    /// Layers not measured for a full window yet rank by what they carried so far.
    pub fn active(&self, now: Instant) -> impl Iterator<Item = (Rid, u64)> + '_ {
        let mut v: [(Rid, u64); MAX_LAYERS] = [(Rid::from(""), 0); MAX_LAYERS];
        let mut n = 0;
        for l in self.layers.iter().flatten() {
            if now.saturating_duration_since(l.last_at) < INACTIVE_AFTER {
                v[n] = (l.rid, l.rate.get(now));
                n += 1;
            }
        }
        v[..n].sort_by_key(|(_, rate)| *rate);
        v.into_iter().take(n)
    }
}

/// What to do with one packet of a simulcast track for one subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Forward it (the current layer).
    Forward,
    /// Forward it as the first of a new layer: the stream continues (sequence numbers,
    /// timestamps, VP8 picture ids follow on) and the decoder restarts on this keyframe.
    Switch,
    /// Not for this subscriber (another layer, or video off or paused).
    Drop,
}

/// The layer one subscription is forwarded.
#[derive(Clone, Debug, Default)]
pub struct LayerSelector {
    choice: VideoChoice,
    /// What this subscriber's downlink carries for this video (bit/s), if limited.
    cap: Option<u64>,
    current: Option<Rid>,
    target: Option<Rid>,
    /// The cap left no layer that fits: the video is paused for this subscriber.
    paused: bool,
    /// Until a cap is set, only the lowest layer (the subscriber's downlink is estimated and
    /// nothing is known of it yet: start low and climb, never flood it first).
    start_low: bool,
    /// Whether the target, and the layer forwarded, were chosen under a cap (else at the
    /// start, on layers ranked before they were all measured: not a layer the downlink
    /// was shown to carry).
    target_capped: bool,
    current_capped: bool,
}

impl LayerSelector {
    pub fn set_choice(&mut self, choice: VideoChoice) {
        self.choice = choice;
    }

    pub fn choice(&self) -> VideoChoice {
        self.choice
    }

    /// The bandwidth this video may use toward the subscriber (`None`: unlimited).
    pub fn set_cap(&mut self, cap: Option<u64>) {
        self.cap = cap;
    }

    /// The subscriber's downlink is estimated: the lowest layer until the first cap.
    pub fn start_low(&mut self) {
        self.start_low = true;
    }

    /// Chooses the layer to forward from those sent now. Returns the target when it differs
    /// from the layer forwarded (a keyframe of it is needed to switch).
    pub fn retarget(&mut self, layers: &Layers, now: Instant) -> Option<Rid> {
        if self.start_low && self.cap.is_none() && layers.age(now) < RETARGET_EVERY {
            // Which layer is the lowest is not known yet: wait for the next re-targeting.
            self.paused = false;
            self.target = None;
            return None;
        }
        let mut wanted = None;
        let mut lowest = None;
        for (rid, rate) in layers.active(now) {
            let is_lowest = lowest.is_none();
            if is_lowest {
                lowest = Some((rid, rate));
            }
            let fits = match self.cap {
                Some(cap) => rate <= cap,
                None => !self.start_low || is_lowest,
            };
            match self.choice {
                VideoChoice::High if fits => wanted = Some(rid),
                VideoChoice::Low if wanted.is_none() && fits => wanted = Some(rid),
                _ => {}
            }
        }
        self.paused = self.choice != VideoChoice::Off && lowest.is_some() && wanted.is_none();
        self.target_capped = self.cap.is_some();
        self.target = match self.choice {
            VideoChoice::Off => None,
            _ => wanted,
        };
        if self.target.is_none() {
            self.current = None;
        }
        self.target.filter(|t| Some(*t) != self.current)
    }

    /// A packet of layer `rid`, `keyframe` if it starts one.
    #[inline]
    pub fn on_packet(&mut self, rid: Rid, keyframe: bool) -> Decision {
        if self.target == Some(rid) && self.current != self.target {
            if keyframe {
                self.current = Some(rid);
                self.current_capped = self.target_capped;
                return Decision::Switch;
            }
            return Decision::Drop;
        }
        if self.current == Some(rid) {
            Decision::Forward
        } else {
            Decision::Drop
        }
    }

    /// The stream's source changed under it (a re-offer): the next layer starts at a keyframe.
    pub fn reset(&mut self) {
        self.current = None;
    }

    /// The layer forwarded now.
    pub fn current(&self) -> Option<Rid> {
        self.current
    }

    /// What the allocator counts as forwarded now (kept while the downlink carries it; more
    /// needs a lasting rise): the layer a cap led to (or any, when the downlink is not
    /// estimated); else, unless paused, the lowest (a stream starting, or one on the layer it
    /// started on: the stream is kept, not that layer).
    pub fn held(&self) -> Held {
        match self.current {
            Some(rid) if self.current_capped || !self.start_low => Held::Layer(rid),
            _ if self.paused => Held::Nothing,
            _ => Held::Lowest,
        }
    }

    /// The layer wanted (`None`: video off or paused).
    pub fn target(&self) -> Option<Rid> {
        self.target
    }

    /// Whether a keyframe of the target is awaited (to ask the publisher for one).
    pub fn switching(&self) -> bool {
        self.target.is_some() && self.target != self.current
    }

    /// The subscriber's downlink cannot carry even the lowest layer: video paused.
    pub fn paused(&self) -> bool {
        self.paused
    }
}

#[cfg(test)]
mod tests;

mod allocator;
pub use allocator::{Budget, Wanted, allocate};
