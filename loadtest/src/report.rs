//! What the callers experienced, aggregated into the run's report: outcomes, setup times,
//! loss, jitter, latency, MOS per direction, verification failures and errors; printed as a
//! summary table and written as JSON.

use std::collections::BTreeMap;

use serde::Serialize;

/// Everything one caller measured.
#[derive(Clone, Debug, Default)]
pub struct CallerResult {
    pub user: String,
    /// The signaling URL it logged in to first.
    pub url: String,
    /// `connected`, `rejected`, `no_answer`, `busy`, `failed` (callers); `answered`,
    /// `rejected_by_me`, `ignored` (callees); `killed` (either, by `--kill`).
    pub outcome: String,
    /// call → accepted, and call → first media received, in ms (callers that connected).
    pub setup_accept_ms: Option<f64>,
    pub setup_media_ms: Option<f64>,
    pub packets_expected: u64,
    pub packets_received: u64,
    pub jitter_ms: Vec<f64>,
    pub latency_ms: Vec<f64>,
    /// MOS samples the server reported about this caller, by direction.
    pub mos_up: Vec<f64>,
    pub mos_down: Vec<f64>,
    pub levels: BTreeMap<String, u64>,
    pub verification_failures: Vec<String>,
    pub errors: Vec<String>,
    /// Whether the server's volume notifications named every peer that was talking.
    pub heard_speakers_in_volume: Option<bool>,
    /// Mute and hold toggles sent.
    pub toggles: u64,
    /// Churn: reconnects (new socket, login, new media leg) and re-offers on the same socket.
    pub reconnects: u64,
    pub reoffers: u64,
    /// Video received: freezes (gaps over 500 ms), bytes, and per sender the layers over time
    /// (seconds into the run, layer index).
    pub video_freezes: u64,
    pub video_bytes: u64,
    pub video_kbps: f64,
    pub video_layers: Vec<(String, Vec<(f64, u8)>)>,
}

/// One receiver's video, in the report.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ReceiverVideo {
    pub user: String,
    /// Video payload bit rate received over its media time.
    pub kbps: f64,
    /// Gaps over 500 ms in one sender's video.
    pub freezes: u64,
    /// Per sender: (seconds into the run, layer) at every change of layer.
    pub layers: BTreeMap<String, Vec<(f64, u8)>>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub mean: Option<f64>,
}

impl Percentiles {
    pub fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let pick = |q: f64| -> Option<f64> {
            if v.is_empty() {
                return None;
            }
            let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
            Some(round(v[i]))
        };
        Self {
            count: v.len(),
            p50: pick(0.50),
            p95: pick(0.95),
            p99: pick(0.99),
            mean: (!v.is_empty()).then(|| round(v.iter().sum::<f64>() / v.len() as f64)),
        }
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct MosSummary {
    pub samples: usize,
    pub p5: Option<f64>,
    pub p50: Option<f64>,
    pub mean: Option<f64>,
}

impl MosSummary {
    fn of(values: &[f64]) -> Self {
        let p = Percentiles::of(values);
        let mut v: Vec<f64> = values.to_vec();
        v.sort_by(f64::total_cmp);
        let p5 = (!v.is_empty())
            .then(|| v[((v.len() as f64 * 0.05).ceil() as usize).clamp(1, v.len()) - 1]);
        Self {
            samples: p.count,
            p5,
            p50: p.p50,
            mean: p.mean,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct UrlSummary {
    pub callers: usize,
    pub failed_verification: usize,
}

/// The run's report (`--report FILE.json`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub media: String,
    pub callers: usize,
    pub duration_s: f64,
    /// Outcomes of the calls as their callers saw them.
    pub calls: BTreeMap<String, usize>,
    pub setup_accept_ms: Percentiles,
    pub setup_media_ms: Percentiles,
    pub loss: f64,
    pub packets_expected: u64,
    pub packets_received: u64,
    pub jitter_ms: Percentiles,
    pub latency_ms: Percentiles,
    pub mos_up: MosSummary,
    pub mos_down: MosSummary,
    pub quality_levels: BTreeMap<String, u64>,
    pub volume_named_speakers: BTreeMap<String, usize>,
    pub toggles: u64,
    pub reconnects: u64,
    pub reoffers: u64,
    pub verification_failures: Vec<String>,
    /// Video runs: freezes over every receiver, and each receiver's video.
    pub video_freezes: u64,
    pub receivers: Vec<ReceiverVideo>,
    /// Per signaling URL (each node of a cluster): its callers, and those whose verification
    /// failed.
    pub by_url: BTreeMap<String, UrlSummary>,
    pub errors: BTreeMap<String, usize>,
    pub thresholds_breached: Vec<String>,
    pub passed: bool,
}

impl Report {
    pub fn build(scenario: &str, media: &str, duration_s: f64, results: &[CallerResult]) -> Self {
        let mut r = Report {
            scenario: scenario.to_string(),
            media: media.to_string(),
            callers: results.len(),
            duration_s,
            ..Default::default()
        };
        let cat = |f: &dyn Fn(&CallerResult) -> &Vec<f64>| -> Vec<f64> {
            results.iter().flat_map(|c| f(c).iter().copied()).collect()
        };
        for c in results {
            if c.outcome.is_empty() {
                continue;
            }
            if !matches!(
                c.outcome.as_str(),
                "answered" | "rejected_by_me" | "ignored"
            ) {
                *r.calls.entry(c.outcome.clone()).or_default() += 1;
            }
            r.packets_expected += c.packets_expected;
            r.toggles += c.toggles;
            r.reconnects += c.reconnects;
            r.reoffers += c.reoffers;
            r.packets_received += c.packets_received;
            for (k, v) in &c.levels {
                *r.quality_levels.entry(k.clone()).or_default() += v;
            }
            for f in &c.verification_failures {
                r.verification_failures.push(format!("{}: {f}", c.user));
            }
            if c.video_bytes > 0 || !c.video_layers.is_empty() {
                r.video_freezes += c.video_freezes;
                r.receivers.push(ReceiverVideo {
                    user: c.user.clone(),
                    kbps: round(c.video_kbps),
                    freezes: c.video_freezes,
                    layers: c.video_layers.iter().cloned().collect(),
                });
            }
            let u = r.by_url.entry(c.url.clone()).or_default();
            u.callers += 1;
            u.failed_verification += usize::from(!c.verification_failures.is_empty());
            for e in &c.errors {
                *r.errors.entry(e.clone()).or_default() += 1;
            }
            if let Some(ok) = c.heard_speakers_in_volume {
                *r.volume_named_speakers
                    .entry(if ok { "yes" } else { "no" }.to_string())
                    .or_default() += 1;
            }
        }
        let setup_a: Vec<f64> = results.iter().filter_map(|c| c.setup_accept_ms).collect();
        let setup_m: Vec<f64> = results.iter().filter_map(|c| c.setup_media_ms).collect();
        r.setup_accept_ms = Percentiles::of(&setup_a);
        r.setup_media_ms = Percentiles::of(&setup_m);
        r.loss = if r.packets_expected == 0 {
            0.0
        } else {
            round(1.0 - r.packets_received as f64 / r.packets_expected as f64).max(0.0)
        };
        r.jitter_ms = Percentiles::of(&cat(&|c| &c.jitter_ms));
        r.latency_ms = Percentiles::of(&cat(&|c| &c.latency_ms));
        r.mos_up = MosSummary::of(&cat(&|c| &c.mos_up));
        r.mos_down = MosSummary::of(&cat(&|c| &c.mos_down));
        r
    }

    /// Applies the thresholds; sets `passed`.
    pub fn judge(
        &mut self,
        max_loss: Option<f64>,
        min_mos: Option<f64>,
        max_setup_p95: Option<f64>,
    ) {
        if let Some(m) = max_loss
            && self.loss > m
        {
            self.thresholds_breached
                .push(format!("loss {} > --max-loss {m}", self.loss));
        }
        if let Some(m) = min_mos {
            for (dir, s) in [("up", &self.mos_up), ("down", &self.mos_down)] {
                match s.p50 {
                    Some(p) if p < m => self
                        .thresholds_breached
                        .push(format!("median {dir} MOS {p} < --min-mos {m}")),
                    None => self
                        .thresholds_breached
                        .push(format!("no {dir} MOS samples to check --min-mos")),
                    _ => {}
                }
            }
        }
        if let Some(m) = max_setup_p95
            && let Some(p) = self.setup_accept_ms.p95
            && p > m
        {
            self.thresholds_breached
                .push(format!("setup p95 {p} ms > --max-setup-p95 {m} ms"));
        }
        self.passed = self.verification_failures.is_empty() && self.thresholds_breached.is_empty();
    }

    /// The human summary printed at the end of a run.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.2}"));
        let mut s = String::new();
        s.push_str(&format!(
            "loadtest: {} {} calls, {} callers, {:.0} s\n",
            self.scenario, self.media, self.callers, self.duration_s
        ));
        s.push_str(&format!("  outcomes           {:?}\n", self.calls));
        if self.by_url.len() > 1 {
            for (url, u) in &self.by_url {
                s.push_str(&format!(
                    "  node {url}  {} callers, {} failed verification\n",
                    u.callers, u.failed_verification
                ));
            }
        }
        if self.toggles + self.reconnects + self.reoffers > 0 {
            s.push_str(&format!(
                "  churn              {} mute/hold toggles, {} reconnects, {} re-offers\n",
                self.toggles, self.reconnects, self.reoffers
            ));
        }
        s.push_str(&format!(
            "  setup (accept) ms  p50 {}  p95 {}  p99 {}\n",
            opt(self.setup_accept_ms.p50),
            opt(self.setup_accept_ms.p95),
            opt(self.setup_accept_ms.p99)
        ));
        s.push_str(&format!(
            "  setup (media) ms   p50 {}  p95 {}  p99 {}\n",
            opt(self.setup_media_ms.p50),
            opt(self.setup_media_ms.p95),
            opt(self.setup_media_ms.p99)
        ));
        s.push_str(&format!(
            "  loss               {:.2} % ({} of {} packets received)\n",
            self.loss * 100.0,
            self.packets_received,
            self.packets_expected
        ));
        s.push_str(&format!(
            "  jitter ms          p50 {}  p95 {}\n",
            opt(self.jitter_ms.p50),
            opt(self.jitter_ms.p95)
        ));
        s.push_str(&format!(
            "  latency ms         p50 {}  p95 {}  p99 {}\n",
            opt(self.latency_ms.p50),
            opt(self.latency_ms.p95),
            opt(self.latency_ms.p99)
        ));
        s.push_str(&format!(
            "  MOS up             p5 {}  p50 {}  ({} samples)\n",
            opt(self.mos_up.p5),
            opt(self.mos_up.p50),
            self.mos_up.samples
        ));
        s.push_str(&format!(
            "  MOS down           p5 {}  p50 {}  ({} samples)\n",
            opt(self.mos_down.p5),
            opt(self.mos_down.p50),
            self.mos_down.samples
        ));
        s.push_str(&format!("  quality levels     {:?}\n", self.quality_levels));
        s.push_str(&format!(
            "  volume names speakers {:?}\n",
            self.volume_named_speakers
        ));
        if !self.receivers.is_empty() {
            let kbps: Vec<f64> = self.receivers.iter().map(|r| r.kbps).collect();
            let p = Percentiles::of(&kbps);
            s.push_str(&format!(
                "  video received     {} freezes (gaps > 500 ms); kbit/s per receiver p50 {} min {}\n",
                self.video_freezes,
                opt(p.p50),
                opt(kbps.iter().copied().reduce(f64::min))
            ));
        }
        s.push_str(&format!(
            "  verification       {} failure(s)\n",
            self.verification_failures.len()
        ));
        for f in self.verification_failures.iter().take(10) {
            s.push_str(&format!("    - {f}\n"));
        }
        s.push_str(&format!("  errors             {:?}\n", self.errors));
        for t in &self.thresholds_breached {
            s.push_str(&format!("  THRESHOLD BREACHED: {t}\n"));
        }
        s.push_str(if self.passed {
            "  result: PASS\n"
        } else {
            "  result: FAIL\n"
        });
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let p = Percentiles::of(&[5.0, 1.0, 3.0, 2.0, 4.0, f64::NAN]);
        assert_eq!(p.count, 5);
        assert_eq!(p.p50, Some(3.0));
        assert_eq!(p.p95, Some(5.0));
        assert_eq!(p.mean, Some(3.0));
        assert_eq!(Percentiles::of(&[]).p50, None);
    }

    #[test]
    fn judging() {
        let c = CallerResult {
            user: "a".into(),
            outcome: "connected".into(),
            packets_expected: 100,
            packets_received: 90,
            mos_up: vec![3.0],
            mos_down: vec![3.0],
            ..Default::default()
        };
        let mut r = Report::build("1v1", "audio", 1.0, &[c]);
        assert_eq!(r.loss, 0.1);
        r.judge(Some(0.05), Some(3.5), None);
        assert!(!r.passed);
        assert_eq!(r.thresholds_breached.len(), 3);
        let mut r = Report::build("1v1", "audio", 1.0, &[]);
        r.judge(Some(0.05), None, Some(100.0));
        assert!(r.passed);
    }
}
