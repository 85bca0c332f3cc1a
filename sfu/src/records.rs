//! Call records: what happened in a call and how good it was, per member and direction,
//! assembled from call events and `quality` samples, kept in a bounded store for the admin API
//! and optionally appended to a CDR file (by the shell). Pure: wall-clock time is an argument.

use std::collections::{BTreeMap, HashMap, VecDeque};

use analytics::Level;
use serde::Serialize;

use crate::protocol::{EndReason, Media, QualityDirection};

/// Aggregate of one member's samples in one direction.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DirectionStats {
    pub samples: u32,
    pub mos_min: f64,
    pub mos_avg: f64,
    /// 5th percentile of the MOS samples (the bad moments of the call).
    pub mos_p5: f64,
    pub loss_avg: f64,
    pub jitter_avg_ms: f64,
    pub rtt_avg_ms: f64,
    /// Samples per quality level.
    pub levels: BTreeMap<&'static str, u32>,
}

/// MOS values are reported to 0.01 between 1.00 and 4.50: one counter per possible value keeps
/// percentiles exact in constant memory, however long the call.
const MOS_BINS: usize = 351;

#[derive(Clone, Debug, Default)]
struct Samples {
    n: u32,
    mos_sum: f64,
    mos_bins: Vec<u32>,
    loss: f64,
    jitter: f64,
    rtt: f64,
    levels: BTreeMap<&'static str, u32>,
}

fn mos_bin(mos: f64) -> usize {
    ((mos - 1.0) * 100.0)
        .round()
        .clamp(0.0, (MOS_BINS - 1) as f64) as usize
}

impl Samples {
    fn add(&mut self, mos: f64, level: Level, loss: f64, jitter: f64, rtt: f64) {
        if self.mos_bins.is_empty() {
            self.mos_bins = vec![0; MOS_BINS];
        }
        self.mos_bins[mos_bin(mos)] += 1;
        self.n = self.n.saturating_add(1);
        self.mos_sum += mos;
        self.loss += loss;
        self.jitter += jitter;
        self.rtt += rtt;
        *self.levels.entry(level.as_str()).or_default() += 1;
    }

    /// The MOS at nearest rank `rank` (1-based).
    fn mos_at_rank(&self, rank: u64) -> f64 {
        let mut seen = 0u64;
        for (i, &c) in self.mos_bins.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return 1.0 + i as f64 / 100.0;
            }
        }
        4.5
    }

    fn stats(&self) -> Option<DirectionStats> {
        let n = self.n;
        if n == 0 {
            return None;
        }
        let nf = f64::from(n);
        // Nearest-rank percentile.
        let p5_rank = ((nf * 0.05).ceil() as u64).clamp(1, u64::from(n));
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        let round2 = |x: f64| (x * 100.0).round() / 100.0;
        Some(DirectionStats {
            samples: n,
            mos_min: round2(self.mos_at_rank(1)),
            mos_avg: round(self.mos_sum / nf),
            mos_p5: round2(self.mos_at_rank(p5_rank)),
            loss_avg: round(self.loss / nf),
            jitter_avg_ms: round(self.jitter / nf),
            rtt_avg_ms: round(self.rtt / nf),
            levels: self.levels.clone(),
        })
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MemberRecord {
    pub user: String,
    pub up: Option<DirectionStats>,
    pub down: Option<DirectionStats>,
}

/// One finished call.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CallRecord {
    pub call_id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub media: Media,
    pub outcome: EndReason,
    pub answered: bool,
    /// Unix milliseconds.
    pub started_at: u64,
    pub ended_at: u64,
    pub duration_s: f64,
    /// Time from the first invite to the first accept, when answered.
    pub setup_s: Option<f64>,
    pub members: Vec<MemberRecord>,
}

#[derive(Debug)]
struct Open {
    group: bool,
    media: Media,
    started_at: u64,
    setup_s: Option<f64>,
    members: Vec<String>,
    samples: HashMap<(String, QualityDirection), Samples>,
}

/// Builds records as calls run and keeps the last `capacity` finished ones.
#[derive(Debug)]
pub struct CallRecorder {
    open: HashMap<String, Open>,
    done: VecDeque<CallRecord>,
    capacity: usize,
}

impl CallRecorder {
    pub fn new(capacity: usize) -> Self {
        Self {
            open: HashMap::new(),
            done: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn started(
        &mut self,
        call_id: &str,
        group: bool,
        media: Media,
        members: &[String],
        now_ms: u64,
    ) {
        self.open.insert(
            call_id.to_string(),
            Open {
                group,
                media,
                started_at: now_ms,
                setup_s: None,
                members: members.to_vec(),
                samples: HashMap::new(),
            },
        );
    }

    pub fn answered(&mut self, call_id: &str, user: &str, setup_s: f64) {
        if let Some(o) = self.open.get_mut(call_id) {
            o.setup_s.get_or_insert(setup_s);
            if !o.members.iter().any(|m| m == user) {
                o.members.push(user.to_string());
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn quality(
        &mut self,
        call_id: &str,
        user: &str,
        direction: QualityDirection,
        mos: f64,
        level: Level,
        loss: f64,
        jitter_ms: f64,
        rtt_ms: f64,
    ) {
        if let Some(o) = self.open.get_mut(call_id) {
            if !o.members.iter().any(|m| m == user) {
                o.members.push(user.to_string());
            }
            o.samples
                .entry((user.to_string(), direction))
                .or_default()
                .add(mos, level, loss, jitter_ms, rtt_ms);
        }
    }

    /// The call ended: its record is finished, stored and returned.
    pub fn ended(
        &mut self,
        call_id: &str,
        outcome: EndReason,
        answered: bool,
        now_ms: u64,
    ) -> Option<CallRecord> {
        let o = self.open.remove(call_id)?;
        let members = o
            .members
            .iter()
            .map(|user| MemberRecord {
                user: user.clone(),
                up: o
                    .samples
                    .get(&(user.clone(), QualityDirection::Up))
                    .and_then(Samples::stats),
                down: o
                    .samples
                    .get(&(user.clone(), QualityDirection::Down))
                    .and_then(Samples::stats),
            })
            .collect();
        let record = CallRecord {
            call_id: call_id.to_string(),
            kind: if o.group { "group" } else { "1v1" },
            media: o.media,
            outcome,
            answered,
            started_at: o.started_at,
            ended_at: now_ms,
            duration_s: now_ms.saturating_sub(o.started_at) as f64 / 1000.0,
            setup_s: o.setup_s,
            members,
        };
        if self.done.len() == self.capacity {
            self.done.pop_front();
        }
        self.done.push_back(record.clone());
        Some(record)
    }

    pub fn get(&self, call_id: &str) -> Option<&CallRecord> {
        self.done.iter().rev().find(|r| r.call_id == call_id)
    }

    /// The newest `limit` records, newest first.
    pub fn recent(&self, limit: usize) -> Vec<CallRecord> {
        self.done.iter().rev().take(limit).cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_of_a_call() {
        let mut r = CallRecorder::new(2);
        let members = vec!["alice".to_string(), "bob".to_string()];
        r.started("c1", false, Media::Audio, &members, 1_000);
        r.answered("c1", "bob", 2.5);
        for (i, mos) in [4.4, 4.3, 3.0, 4.4].iter().enumerate() {
            let level = Level::of(*mos).unwrap();
            r.quality(
                "c1",
                "alice",
                QualityDirection::Up,
                *mos,
                level,
                0.01 * i as f64,
                5.0,
                40.0,
            );
        }
        let rec = r.ended("c1", EndReason::Hangup, true, 61_000).unwrap();
        assert_eq!(rec.duration_s, 60.0);
        assert_eq!(rec.setup_s, Some(2.5));
        assert_eq!(rec.kind, "1v1");
        let alice = &rec.members[0];
        let up = alice.up.as_ref().unwrap();
        assert_eq!(up.samples, 4);
        assert_eq!(up.mos_min, 3.0);
        assert_eq!(up.mos_p5, 3.0);
        assert_eq!(up.mos_avg, 4.025);
        assert_eq!(up.loss_avg, 0.015);
        assert_eq!(up.levels.get("excellent"), Some(&3));
        assert_eq!(up.levels.get("bad"), Some(&1));
        assert!(alice.down.is_none());
        assert!(rec.members[1].up.is_none());
        assert_eq!(r.get("c1"), Some(&rec));
        let json = serde_json::to_value(&rec).unwrap();
        assert_eq!(json["type"], "1v1");
        assert_eq!(json["outcome"], "hangup");
    }

    #[test]
    fn store_is_bounded_and_newest_first() {
        let mut r = CallRecorder::new(2);
        for i in 0..3 {
            let id = format!("c{i}");
            r.started(&id, true, Media::Video, &[], 0);
            r.ended(&id, EndReason::Cancelled, false, 10);
        }
        assert_eq!(r.len(), 2);
        assert!(r.get("c0").is_none());
        let ids: Vec<_> = r.recent(10).into_iter().map(|c| c.call_id).collect();
        assert_eq!(ids, ["c2", "c1"]);
        assert_eq!(r.recent(1).len(), 1);
        assert!(r.ended("unknown", EndReason::Hangup, true, 0).is_none());
    }

    #[test]
    fn a_day_long_call_keeps_exact_percentiles_in_constant_memory() {
        let mut smp = Samples::default();
        // One sample per 5 s for 24 h, MOS cycling through 3.00..4.49.
        let values: Vec<f64> = (0..17_280)
            .map(|i| 3.0 + f64::from(i % 150) / 100.0)
            .collect();
        for &m in &values {
            smp.add(m, Level::Good, 0.0, 1.0, 20.0);
        }
        assert_eq!(
            smp.mos_bins.len(),
            MOS_BINS,
            "no growth with the call's length"
        );
        let st = smp.stats().unwrap();
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = (sorted.len() as f64 * 0.05).ceil() as usize;
        assert_eq!(st.samples, 17_280);
        assert_eq!(st.mos_min, sorted[0]);
        assert!(
            (st.mos_p5 - sorted[rank - 1]).abs() < 1e-9,
            "{} vs {}",
            st.mos_p5,
            sorted[rank - 1]
        );
        let avg = values.iter().sum::<f64>() / values.len() as f64;
        assert!((st.mos_avg - avg).abs() < 1e-3);
    }
}
