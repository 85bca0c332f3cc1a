//! Defaults and validation of the per-member media caps (`--max-tracks-per-kind` and friends).

use anyhow::bail;

use super::ServeArgs;
use crate::media::MediaLimits;

impl ServeArgs {
    pub(super) fn media_limits(&self) -> anyhow::Result<MediaLimits> {
        let d = MediaLimits::default();
        let l = MediaLimits {
            tracks_per_kind: self.max_tracks_per_kind.unwrap_or(d.tracks_per_kind),
            offer_mlines: self.max_offer_mlines.unwrap_or(d.offer_mlines),
            addresses: self.max_peer_addresses.unwrap_or(d.addresses),
            candidates: self.max_peer_candidates.unwrap_or(d.candidates),
            packet_rate: self.max_peer_packet_rate.unwrap_or(d.packet_rate),
            decode_budget: self.opus_decode_budget.unwrap_or(d.decode_budget),
        };
        if !(1..=16).contains(&l.tracks_per_kind) {
            bail!("--max-tracks-per-kind must be between 1 and 16");
        }
        if !(1..=64).contains(&l.offer_mlines) {
            bail!("--max-offer-mlines must be between 1 and 64");
        }
        if !(1..=64).contains(&l.addresses) {
            bail!("--max-peer-addresses must be between 1 and 64");
        }
        if l.candidates > 1000 {
            bail!("--max-peer-candidates must be at most 1000");
        }
        if !(100..=100_000).contains(&l.packet_rate) {
            bail!("--max-peer-packet-rate must be between 100 and 100000");
        }
        if !(0.0..=10.0).contains(&l.decode_budget) {
            bail!("--opus-decode-budget must be between 0 and 10 (seconds per second)");
        }
        Ok(l)
    }
}
