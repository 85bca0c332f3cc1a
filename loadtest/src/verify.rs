//! A caller's verdict on its media session: it heard exactly the expected peers (tones on the
//! audio streams of every leg, never itself), saw exactly their video (none with view off, their
//! lowest layer with view low), and was told who speaks; and what it received, booked into its
//! result (packets, jitter, video freezes, bit rate, layers).

use std::collections::BTreeSet;

use str0m::media::MediaKind;

use crate::audio::ToneDetector;
use crate::caller::{Plan, Received, Shared};
use crate::report::CallerResult;

pub(crate) fn verify(shared: &Shared, plan: &Plan, seen: &Received, r: &mut CallerResult) {
    let all = &seen.streams;
    let (audio_now, legs, first_media) = (seen.audio_now, seen.legs, seen.first_media);
    let named_in_volume = seen.named_in_volume;
    for s in all {
        r.packets_expected += s.highest - s.first + 1;
        r.packets_received += s.received;
        r.jitter_ms.push(s.jitter.ms());
    }
    let heard: Vec<Option<usize>> = all
        .iter()
        .filter(|s| s.kind == MediaKind::Audio)
        .map(|s| s.tone.as_ref().and_then(ToneDetector::heard))
        .collect();
    if heard.contains(&Some(plan.slot)) {
        r.verification_failures.push("heard its own signal".into());
    }
    for (peer, slot) in &plan.expected {
        if !heard.contains(&Some(*slot)) {
            r.verification_failures.push(format!("did not hear {peer}"));
        }
    }
    let expected_slots: BTreeSet<usize> = plan.expected.iter().map(|(_, s)| *s).collect();
    for h in heard.iter().flatten() {
        if *h != plan.slot && !expected_slots.contains(h) {
            r.verification_failures
                .push(format!("heard an unexpected signal (slot {h})"));
        }
    }
    // A later leg may end before every stream reached it, but never has more.
    if audio_now > plan.expected.len() || (legs == 1 && audio_now != plan.expected.len()) {
        r.verification_failures.push(format!(
            "received {audio_now} audio streams, expected {}",
            plan.expected.len()
        ));
    }
    if shared.video {
        // Exactly the expected peers' video (none with view off), never our own; with view
        // low, their lowest layer.
        let seen: BTreeSet<usize> = all.iter().filter_map(|s| s.video.from).collect();
        if seen.contains(&plan.slot) {
            r.verification_failures.push("saw its own video".into());
        }
        let name = |slot: usize| {
            plan.expected
                .iter()
                .find(|(_, s)| *s == slot)
                .map_or_else(|| format!("slot {slot}"), |(p, _)| p.clone())
        };
        for s in all {
            let (Some(from), Some(layer)) = (s.video.from, s.video.layer) else {
                continue;
            };
            r.video_freezes += s.video.freezes;
            r.video_bytes += s.video.bytes;
            r.video_layers.push((name(from), s.video.layers.clone()));
            match plan.view {
                Some("off") if s.video.settled_packets > 0 => r
                    .verification_failures
                    .push(format!("received {}'s video after asking off", name(from))),
                Some("low") if shared.simulcast > 1 && layer != 0 => r.verification_failures.push(
                    format!("{}'s video on layer {layer}, asked low", name(from)),
                ),
                _ => {}
            }
        }
        if let Some(t) = first_media {
            let secs = t.elapsed().as_secs_f64().max(0.001);
            r.video_kbps = r.video_bytes as f64 * 8.0 / secs / 1000.0;
        }
        for (peer, slot) in &plan.expected {
            if !seen.contains(slot) && plan.view != Some("off") {
                r.verification_failures
                    .push(format!("did not see {peer}'s video"));
            }
        }
        for s in seen.difference(&expected_slots) {
            if *s != plan.slot {
                r.verification_failures
                    .push(format!("saw an unexpected video (slot {s})"));
            }
        }
    }
    if !plan.expected.is_empty() {
        let all = plan
            .expected
            .iter()
            .all(|(p, _)| named_in_volume.contains(p));
        r.heard_speakers_in_volume = Some(all);
        if !all {
            r.verification_failures
                .push("volume notifications did not name every talking peer".into());
        }
    }
}
