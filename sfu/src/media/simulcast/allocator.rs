//! The allocator: shares what a subscriber's downlink carries among its simulcast videos,
//! lowest layers first, then upgrades in order, with headroom to climb (see
//! `worker/layers.rs` for what it is given and what is done with its caps).

use std::time::Instant;

use super::{Held, Layers, MAX_LAYERS, VideoChoice};

/// One subscribed simulcast video as the allocator sees it: what the subscriber asked for and
/// the bitrates of the layers sent now, lowest first.
#[derive(Clone, Copy, Debug, Default)]
pub struct Wanted {
    pub choice: VideoChoice,
    pub rates: [u64; MAX_LAYERS],
    pub layers: usize,
    /// The layer forwarded now (index into `rates`; `None`: none, paused or not started):
    /// climbing above it needs the `climb` budget.
    pub current: Option<usize>,
}

impl Wanted {
    /// What a subscription forwarding `held` wants of `layers`.
    pub fn of(choice: VideoChoice, layers: &Layers, held: Held, now: Instant) -> Self {
        let mut w = Wanted {
            choice,
            ..Default::default()
        };
        for (i, (rid, rate)) in layers.active(now).enumerate() {
            w.rates[i] = rate;
            w.layers = i + 1;
            if held == Held::Layer(rid) {
                w.current = Some(i);
            }
        }
        if held == Held::Lowest && w.layers > 0 {
            w.current = Some(0);
        }
        w
    }

    /// The highest layer it asked for (index into `rates`).
    fn top(&self) -> usize {
        match self.choice {
            VideoChoice::High => self.layers.saturating_sub(1),
            _ => 0,
        }
    }

    /// The bitrate this video would take at what it asked for.
    pub fn desired(&self) -> u64 {
        match (self.choice, self.layers) {
            (VideoChoice::Off, _) | (_, 0) => 0,
            (VideoChoice::Low, _) => self.rates[0],
            (VideoChoice::High, n) => self.rates[n - 1],
        }
    }
}

/// Headroom on a layer's measured rate (bursts, keyframes) when it is given as a cap, in %.
const HEADROOM_PERCENT: u64 = 115;
/// A step above the layer forwarded now costs this share of its rate, in %: an estimate
/// hovering at a step's edge does not switch a video up and down (each switch costs a
/// keyframe), and a step taken leaves room for the estimate's own swings.
const UPGRADE_PERCENT: u64 = 125;

/// What a subscriber's downlink carries for its simulcast videos (bit/s, after its audio):
/// `keep` for the layers forwarded now, `climb` for layers above them (see
/// [`crate::media::downlink`]: a dip must last to take a layer away, a rise to add one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub keep: u64,
    pub climb: u64,
}

impl Budget {
    /// One figure for both.
    pub fn flat(bps: u64) -> Self {
        Self {
            keep: bps,
            climb: bps,
        }
    }

    /// Whether a step of `step` fits on top of `used`: within `keep` for a layer forwarded
    /// now, within `climb` with [`UPGRADE_PERCENT`] of headroom for one above it.
    fn fits(&self, used: u64, step: u64, held: bool) -> bool {
        if held {
            used + step <= self.keep
        } else {
            used + step * UPGRADE_PERCENT / 100 <= self.climb
        }
    }
}

/// Shares `budget` among a subscriber's videos: first the lowest layer of each, in order,
/// while it fits (the rest are paused); then each one up toward what it asked for, in order,
/// while the step fits. Returns each video's cap (bit/s; 0 = paused; `None` = no cap needed,
/// off or nothing sent), and returns what the allocation uses and the cheapest step up it
/// could not take (the estimator is asked to find that much more).
pub fn allocate(budget: Budget, wanted: &[Wanted], caps: &mut Vec<Option<u64>>) -> (u64, u64) {
    caps.clear();
    let mut used = 0;
    let mut blocked = false; // nothing after a paused video jumps ahead of it
    let mut at: Vec<Option<usize>> = Vec::with_capacity(wanted.len());
    for w in wanted {
        if w.choice == VideoChoice::Off || w.layers == 0 {
            at.push(None);
        } else if !blocked && budget.fits(used, w.rates[0], w.current.is_some()) {
            used += w.rates[0];
            at.push(Some(0));
        } else {
            at.push(None);
            blocked = true;
        }
    }
    for (w, a) in wanted.iter().zip(at.iter_mut()) {
        let Some(cur) = a else {
            continue;
        };
        while *cur < w.top() {
            let step = w.rates[*cur + 1] - w.rates[*cur];
            if !budget.fits(used, step, w.current.is_some_and(|c| c > *cur)) {
                break;
            }
            used += step;
            *cur += 1;
        }
    }
    let mut next = u64::MAX;
    for (w, a) in wanted.iter().zip(&at) {
        match a {
            _ if w.choice == VideoChoice::Off || w.layers == 0 => {}
            Some(i) if *i < w.top() => next = next.min(w.rates[i + 1] - w.rates[*i]),
            Some(_) => {}
            None => next = next.min(w.rates[0]),
        }
    }
    for (w, a) in wanted.iter().zip(at) {
        caps.push(match a {
            _ if w.choice == VideoChoice::Off || w.layers == 0 => None,
            Some(i) => Some(w.rates[i] * HEADROOM_PERCENT / 100),
            None => Some(0),
        });
    }
    (used, if next == u64::MAX { 0 } else { next })
}
