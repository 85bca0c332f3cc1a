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
//!     layers.on_packet(lo, 200, at);
//!     layers.on_packet(hi, 1_000, at);
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

/// Layers a track may have; more rids are ignored.
pub const MAX_LAYERS: usize = 3;
/// Bitrates are measured over windows of this length.
const WINDOW: Duration = Duration::from_secs(1);
/// A layer without packets this long is not sent any more (the publisher paused it).
const INACTIVE_AFTER: Duration = Duration::from_millis(1500);

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

/// One received layer.
#[derive(Clone, Copy, Debug)]
struct Layer {
    rid: Rid,
    /// Bytes in the current window, and the bitrate of the last full one.
    bytes: u64,
    window_start: Instant,
    bitrate: u64,
    last_at: Instant,
}

/// The layers of one simulcast track.
#[derive(Clone, Debug, Default)]
pub struct Layers {
    layers: Vec<Layer>,
}

impl Layers {
    /// A packet of `rid` with `bytes` of payload arrived at `now`. Returns false for a rid
    /// beyond [`MAX_LAYERS`] (not forwarded).
    pub fn on_packet(&mut self, rid: Rid, bytes: usize, now: Instant) -> bool {
        let l = match self.layers.iter_mut().position(|l| l.rid == rid) {
            Some(i) => &mut self.layers[i],
            None if self.layers.len() < MAX_LAYERS => {
                self.layers.push(Layer {
                    rid,
                    bytes: 0,
                    window_start: now,
                    bitrate: 0,
                    last_at: now,
                });
                let i = self.layers.len() - 1;
                &mut self.layers[i]
            }
            None => return false,
        };
        let elapsed = now.saturating_duration_since(l.window_start);
        if elapsed >= WINDOW {
            l.bitrate = l.bytes * 8 * 1_000_000 / elapsed.as_micros().max(1) as u64;
            l.bytes = 0;
            l.window_start = now;
        }
        l.bytes += bytes as u64;
        l.last_at = now;
        true
    }

    /// The layers still sent at `now`, lowest bitrate first, with their bitrates (bit/s).
    /// Layers not measured for a full window yet rank by what they carried so far.
    pub fn active(&self, now: Instant) -> impl Iterator<Item = (Rid, u64)> + '_ {
        let mut v: [(Rid, u64); MAX_LAYERS] = [(Rid::from(""), 0); MAX_LAYERS];
        let mut n = 0;
        for l in &self.layers {
            if now.saturating_duration_since(l.last_at) < INACTIVE_AFTER {
                let rate = if l.bitrate > 0 {
                    l.bitrate
                } else {
                    let secs = now.saturating_duration_since(l.window_start).as_secs_f64();
                    (l.bytes as f64 * 8.0 / secs.max(0.02)) as u64
                };
                v[n] = (l.rid, rate);
                n += 1;
            }
        }
        v[..n].sort_by_key(|(_, rate)| *rate);
        v.into_iter().take(n)
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
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

    /// Chooses the layer to forward from those sent now. Returns the target when it differs
    /// from the layer forwarded (a keyframe of it is needed to switch).
    pub fn retarget(&mut self, layers: &Layers, now: Instant) -> Option<Rid> {
        let mut wanted = None;
        let mut lowest = None;
        for (rid, rate) in layers.active(now) {
            if lowest.is_none() {
                lowest = Some((rid, rate));
            }
            let fits = self.cap.is_none_or(|cap| rate <= cap);
            match self.choice {
                VideoChoice::High if fits => wanted = Some(rid),
                VideoChoice::Low if wanted.is_none() && fits => wanted = Some(rid),
                _ => {}
            }
        }
        self.paused = self.choice != VideoChoice::Off && lowest.is_some() && wanted.is_none();
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

    /// The layer forwarded now.
    pub fn current(&self) -> Option<Rid> {
        self.current
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
