//! The signal each virtual caller sends and the check that receivers hear it: a tone at the
//! caller's own frequency with a speech-like on/off envelope, encoded once to a loop of real
//! Opus frames (so hundreds of callers cost little CPU), and Goertzel detection of the tones in
//! what a receiver decodes: at 16 kHz (the tones are under 2.7 kHz), and only windows of each
//! stream (a quarter of its frames), so that verifying costs a caller less than sending.

use opus::{Application, Channels, Decoder, Encoder};

/// 20 ms at 48 kHz.
pub const FRAME: usize = 960;
/// Loop length: 1.2 s talking, 0.6 s silent.
pub const TALK_FRAMES: usize = 60;
pub const PAUSE_FRAMES: usize = 30;

/// The tone of slot `slot` in a call (slots are positions in the call, 0..16).
pub fn frequency(slot: usize) -> f64 {
    400.0 + 150.0 * slot as f64
}

/// One pre-encoded frame: Opus bytes and its RFC 6464 level (−dBov) measured on the PCM.
#[derive(Clone, Debug)]
pub struct Frame {
    pub opus: Vec<u8>,
    pub level: u8,
    pub talking: bool,
}

/// The caller's loop of frames: its tone at about −20 dBov while talking, silence in pauses.
pub fn encode_loop(slot: usize) -> anyhow::Result<Vec<Frame>> {
    let mut enc = Encoder::new(48_000, Channels::Mono, Application::Voip)
        .map_err(|e| anyhow::anyhow!("opus encoder: {e}"))?;
    let f = frequency(slot);
    let amplitude = 0.14 * 32767.0;
    let mut frames = Vec::with_capacity(TALK_FRAMES + PAUSE_FRAMES);
    let mut out = [0u8; 1500];
    for i in 0..TALK_FRAMES + PAUSE_FRAMES {
        let talking = i < TALK_FRAMES;
        let pcm: Vec<i16> = (0..FRAME)
            .map(|n| {
                if !talking {
                    return 0;
                }
                let t = (i * FRAME + n) as f64 / 48_000.0;
                // Fade in and out over 10 ms so talk spurts start and end like speech.
                let pos = (i * FRAME + n) as f64;
                let end = (TALK_FRAMES * FRAME) as f64;
                let ramp = (pos / 480.0).min((end - pos) / 480.0).clamp(0.0, 1.0);
                (amplitude * ramp * (2.0 * std::f64::consts::PI * f * t).sin()) as i16
            })
            .collect();
        let level = sfu::media::level::level_of_pcm(&pcm);
        let n = enc
            .encode(&pcm, &mut out)
            .map_err(|e| anyhow::anyhow!("opus encode: {e}"))?;
        frames.push(Frame {
            opus: out[..n].to_vec(),
            level,
            talking,
        });
    }
    Ok(frames)
}

/// Power of `freq` in `pcm` sampled at `rate` Hz (Goertzel), normalized by length.
pub fn goertzel(pcm: &[i16], freq: f64, rate: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / rate;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in pcm {
        let s = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    power / (pcm.len().max(1) as f64).powi(2)
}

/// Receivers decode at this rate: above twice the highest tone, a third of the work of 48 kHz.
const DECODE_RATE: u32 = 16_000;
/// Of every `PERIOD` frames of a stream, the first `WINDOW` are decoded and all but the first
/// `PRIME` of those vote.
const PERIOD: u32 = 32;
const WINDOW: u32 = 8;
const PRIME: u32 = 2;

/// Decodes one received stream and finds whose tone it carries.
pub struct ToneDetector {
    decoder: Decoder,
    pcm: Vec<i16>,
    /// Frames pushed so far (decoded or not).
    seen: u32,
    /// Per slot: frames in which that slot's tone dominated.
    pub votes: Vec<u32>,
    pub frames: u32,
}

impl ToneDetector {
    pub fn new(slots: usize) -> anyhow::Result<Self> {
        Ok(Self {
            decoder: Decoder::new(DECODE_RATE, Channels::Mono)
                .map_err(|e| anyhow::anyhow!("opus decoder: {e}"))?,
            pcm: vec![0; 5760],
            seen: 0,
            votes: vec![0; slots],
            frames: 0,
        })
    }

    /// One received Opus payload. Frames without a clear tone (pauses) do not vote.
    pub fn push(&mut self, payload: &[u8]) {
        let at = self.seen % PERIOD;
        self.seen = self.seen.wrapping_add(1);
        if at >= WINDOW {
            return;
        }
        // The first frames of a window only bring the decoder's state (stale from before the
        // gap) up to date; a reset would cost more (libopus probes the CPU on each one).
        let Ok(n) = self.decoder.decode(payload, &mut self.pcm, false) else {
            return;
        };
        if at < PRIME {
            return;
        }
        self.frames += 1;
        let pcm = &self.pcm[..n];
        let mut best = (0usize, 0.0f64);
        let mut total = 0.0;
        for slot in 0..self.votes.len() {
            let p = goertzel(pcm, frequency(slot), f64::from(DECODE_RATE));
            total += p;
            if p > best.1 {
                best = (slot, p);
            }
        }
        // A tone, not silence, and clearly one slot's.
        if best.1 > 1000.0 && best.1 > 0.8 * total {
            self.votes[best.0] += 1;
        }
    }

    /// The slot heard on this stream, if one clearly dominates.
    pub fn heard(&self) -> Option<usize> {
        let (slot, votes) = self.votes.iter().enumerate().max_by_key(|(_, v)| **v)?;
        let all: u32 = self.votes.iter().sum();
        (*votes >= 5 && f64::from(*votes) >= 0.9 * f64::from(all)).then_some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_slot_is_recognised_after_opus() {
        for slot in 0..16 {
            let frames = encode_loop(slot).unwrap();
            assert_eq!(frames.len(), TALK_FRAMES + PAUSE_FRAMES);
            assert!(
                frames[10].talking && (18..=22).contains(&frames[10].level),
                "{}",
                frames[10].level
            );
            assert_eq!(frames[TALK_FRAMES + 5].level, 127);
            let mut d = ToneDetector::new(16).unwrap();
            for f in frames.iter().cycle().take(200) {
                d.push(&f.opus);
            }
            assert_eq!(d.heard(), Some(slot));
        }
    }

    #[test]
    fn silence_is_nobody() {
        let frames = encode_loop(0).unwrap();
        let mut d = ToneDetector::new(4).unwrap();
        for f in &frames[TALK_FRAMES + 2..] {
            d.push(&f.opus);
        }
        assert_eq!(d.heard(), None);
    }
}
