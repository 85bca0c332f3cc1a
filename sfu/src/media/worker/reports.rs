//! The MediaCore's periodic reports: speaking volumes and availability stalls every volume
//! interval, E-model quality samples every quality window.

use std::time::{Duration, Instant};

use analytics::VolumeAggregator;
use str0m::media::MediaKind;

use super::MediaCore;
use crate::media::event::MediaEvent;

impl MediaCore {
    /// Every volume interval: each call's volumes (while anyone is audible, and once more when
    /// all fall silent), and availability stalls.
    pub(super) fn volume_tick(&mut self, now: Instant) {
        let interval = self.cfg.volume_interval;
        for (call_id, room) in self.rooms.iter_mut() {
            let mut agg = VolumeAggregator::new(interval);
            for id in room.peers() {
                let Some(p) = super::slot_peer(&mut self.slots, id) else {
                    continue;
                };
                let (e, d) = std::mem::take(&mut p.volume);
                if d > 0.0 {
                    agg.add_energy(&p.user, e, Duration::from_secs_f64(d));
                }
                for t in &mut p.tracks {
                    if let Some(available) = t.availability.poll(now) {
                        self.out.push_back(MediaEvent::Available {
                            call_id: call_id.clone(),
                            user: p.user.clone(),
                            kind: t.kind,
                            available,
                        });
                    }
                }
            }
            let report = agg.finish();
            let audible = !report.volumes.is_empty();
            let was = std::mem::replace(&mut room.audible, audible);
            if audible || was {
                self.out.push_back(MediaEvent::Volume {
                    call_id: call_id.clone(),
                    volumes: report.volumes,
                    total: report.total,
                });
            }
        }
    }

    /// Every quality window: per member, the E-model MOS of what they send (`up`) and of what
    /// we send them (`down`). A window without packets or without an RTT gives no sample.
    pub(super) fn quality_tick(&mut self) {
        for slot in &mut self.slots {
            let Some(p) = slot.peer.as_mut() else {
                continue;
            };
            let up = p
                .tracks
                .iter()
                .find(|t| t.kind == MediaKind::Audio)
                .and_then(|t| Some((t.counters()?, t.jitter_ms())));
            for (leg, report) in p.quality.window(up).into_iter().flatten() {
                self.out.push_back(MediaEvent::Quality {
                    call_id: p.call_id.clone(),
                    user: p.user.clone(),
                    leg,
                    report,
                });
            }
        }
    }
}
