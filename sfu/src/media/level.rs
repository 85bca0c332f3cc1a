//! Audio level of publishers that send no RFC 6464 audio-level extension: their Opus is
//! decoded (only theirs) and the level measured as libwebrtc does, −dBov of the RMS relative to
//! full scale, 0..127.

use opus::{Channels, Decoder};

/// Packets without the extension after which a publisher's Opus is decoded.
pub const DECODE_AFTER: u32 = 5;

/// −dBov of a block of 16-bit PCM (0 = full-scale square wave, 127 = digital silence).
pub fn level_of_pcm(pcm: &[i16]) -> u8 {
    if pcm.is_empty() {
        return 127;
    }
    let sum: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let mean_square = sum / pcm.len() as f64;
    if mean_square <= 0.0 {
        return 127;
    }
    let db = 10.0 * (mean_square / (32768.0 * 32768.0)).log10();
    (-db).round().clamp(0.0, 127.0) as u8
}

/// Decodes one publisher's Opus packets to measure their level.
pub struct OpusLevel {
    decoder: Decoder,
    pcm: Vec<i16>,
}

impl OpusLevel {
    pub fn new() -> Option<Self> {
        Some(Self {
            decoder: Decoder::new(48_000, Channels::Mono).ok()?,
            // 120 ms at 48 kHz: the longest Opus packet.
            pcm: vec![0; 5760],
        })
    }

    /// The level of one packet; `None` if it does not decode.
    pub fn level(&mut self, payload: &[u8]) -> Option<u8> {
        let n = self.decoder.decode(payload, &mut self.pcm, false).ok()?;
        Some(level_of_pcm(self.pcm.get(..n)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opus::{Application, Encoder};

    fn sine(amplitude: f64, n: usize, phase: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = (i + phase) as f64 / 48_000.0;
                (amplitude * 32767.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn pcm_levels() {
        assert_eq!(level_of_pcm(&[]), 127);
        assert_eq!(level_of_pcm(&[0; 960]), 127);
        assert_eq!(level_of_pcm(&[i16::MAX; 960]), 0);
        // A full-scale sine is 3 dB below a square wave.
        assert_eq!(level_of_pcm(&sine(1.0, 960, 0)), 3);
        // -30 dBov RMS: amplitude 10^(-27/20).
        assert_eq!(level_of_pcm(&sine(10f64.powf(-27.0 / 20.0), 960, 0)), 30);
    }

    #[test]
    fn decoded_opus_keeps_the_level() {
        let mut enc = Encoder::new(48_000, Channels::Mono, Application::Voip).unwrap();
        let mut meter = OpusLevel::new().unwrap();
        let amplitude = 10f64.powf(-27.0 / 20.0);
        let mut out = [0u8; 1500];
        let mut levels = Vec::new();
        for frame in 0..50 {
            let pcm = sine(amplitude, 960, frame * 960);
            let n = enc.encode(&pcm, &mut out).unwrap();
            levels.push(meter.level(&out[..n]).unwrap());
        }
        // After the codec settles, the measured level is the encoded one.
        for l in &levels[10..] {
            assert!((28..=32).contains(l), "{levels:?}");
        }
        assert_eq!(meter.level(b"\xff\xff\xff not opus"), None);
    }
}
