//! Call quality of one member's two legs: what the member sends us (`up`, from the packets we
//! receive) and what we send them (`down`, from their RTCP receiver reports), turned into one
//! E-model sample per window (DESIGN.md). RTT comes from RR LSR/DLSR on what we send, else from
//! XR DLRR on what they send.

use std::collections::HashMap;
use std::time::Duration;

use analytics::WindowLoss;
use analytics::mos::{Conditions, sample};
use str0m::media::Mid;
use str0m::stats::{MediaEgressStats, MediaIngressStats};

use super::event::{Leg, QualityReport};

/// What a member's receivers tell us about the server-to-member leg, summed over the audio
/// streams they receive.
#[derive(Default)]
struct DownStats {
    /// Per our mid: (highest sequence number, cumulative lost) of the last RR.
    per_mid: HashMap<Mid, (u64, u64)>,
    expected_total: u64,
    lost_total: i64,
    jitter_ms: Option<f64>,
    loss: WindowLoss,
}

impl DownStats {
    fn on_report(&mut self, mid: Mid, max_seq: u64, lost: u64, jitter: u32) {
        let (m0, l0) = *self.per_mid.entry(mid).or_insert((max_seq, lost));
        self.expected_total += max_seq.saturating_sub(m0);
        self.lost_total += lost as i64 - l0 as i64;
        self.per_mid.insert(mid, (max_seq.max(m0), lost));
        self.jitter_ms = Some(f64::from(jitter) / 48.0);
    }
}

#[derive(Default)]
pub struct LinkQuality {
    rtt: Option<Duration>,
    rtt_from_rr: bool,
    down: DownStats,
    up_loss: WindowLoss,
    /// Opus in-band FEC negotiated (changes the E-model's Bpl).
    fec: bool,
    /// Cumulative NACKs per egress mid, for deltas.
    nacks_seen: HashMap<Mid, u64>,
}

impl LinkQuality {
    pub fn new(fec: bool) -> Self {
        Self {
            fec,
            ..Self::default()
        }
    }

    /// Stats of one stream we send; `audio` when it carries audio (the down leg's input).
    /// Returns the NACKs received since the last report.
    pub fn on_egress(&mut self, s: &MediaEgressStats, audio: bool) -> u64 {
        let seen = self.nacks_seen.entry(s.mid).or_insert(0);
        let new_nacks = s.nacks.saturating_sub(*seen);
        *seen = s.nacks.max(*seen);
        if let Some(rtt) = s.rtt {
            self.rtt = Some(rtt);
            self.rtt_from_rr = true;
        }
        if let (true, Some(r)) = (audio, &s.remote) {
            self.down
                .on_report(s.mid, *r.maximum_sequence_number, r.packets_lost, r.jitter);
        }
        new_nacks
    }

    pub fn on_ingress(&mut self, s: &MediaIngressStats) {
        if !self.rtt_from_rr
            && let Some(rtt) = s.rtt
        {
            self.rtt = Some(rtt);
        }
    }

    /// Closes a quality window. `up` is the audio track's cumulative (expected, lost) and its
    /// jitter in ms. A leg without packets in the window, or any leg before an RTT is known,
    /// gives no sample.
    pub fn window(&mut self, up: Option<((u64, i64), f64)>) -> [Option<(Leg, QualityReport)>; 2] {
        let up = up.and_then(|((expected, lost), jitter)| {
            Some((Leg::Up, self.up_loss.next(expected, lost)?, jitter))
        });
        let down = self
            .down
            .loss
            .next(self.down.expected_total, self.down.lost_total)
            .zip(self.down.jitter_ms)
            .map(|(loss, jitter)| (Leg::Down, loss, jitter));
        let rtt_ms = self.rtt.map(|r| r.as_secs_f64() * 1000.0);
        let fec = self.fec;
        [up, down].map(|leg| {
            let (leg, loss, jitter_ms) = leg?;
            let rtt_ms = rtt_ms?;
            let s = sample(
                Conditions {
                    rtt_ms,
                    jitter_ms,
                    loss,
                },
                fec,
            )?;
            Some((
                leg,
                QualityReport {
                    mos: round2(s.mos),
                    level: s.level,
                    rtt_ms: round2(rtt_ms),
                    jitter_ms: round2(jitter_ms),
                    loss: (loss * 10_000.0).round() / 10_000.0,
                },
            ))
        })
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_sample_before_an_rtt_and_down_loss_per_window() {
        let mut q = LinkQuality::new(true);
        assert_eq!(q.window(Some(((0, 0), 1.0))), [None, None]);
        assert_eq!(q.window(Some(((100, 0), 1.0))), [None, None], "no RTT yet");
        q.rtt = Some(Duration::from_millis(40));
        let m = Mid::from("1");
        q.down.on_report(m, 1000, 0, 48);
        q.window(None);
        q.down.on_report(m, 1100, 5, 48);
        let [up, down] = q.window(Some(((200, 10), 1.0)));
        let (leg, up) = up.unwrap();
        assert_eq!(leg, Leg::Up);
        assert_eq!(up.loss, 0.1);
        let (leg, down) = down.unwrap();
        assert_eq!((leg, down.loss, down.jitter_ms), (Leg::Down, 0.05, 1.0));
        assert!(down.mos > up.mos);
        // A window with no new packets on either leg: no sample.
        assert_eq!(q.window(Some(((200, 10), 1.0))), [None, None]);
    }
}
