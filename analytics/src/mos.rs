//! The E-model (ITU-T G.107, simplified) as DESIGN.md "Call-quality model" fixes it: one-way
//! delay from RTT and jitter, delay and loss impairments, R, MOS and the quality level.

use serde::Serialize;

/// Opus algorithmic delay with 20 ms frames, in ms.
pub const CODEC_DELAY_MS: f64 = 26.5;
/// Opus equipment impairment.
pub const OPUS_IE: f64 = 0.0;

/// Inputs of one window, in ms and as a loss fraction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conditions {
    pub rtt_ms: f64,
    pub jitter_ms: f64,
    /// Packets lost / packets expected in the window, 0..1.
    pub loss: f64,
}

/// Quality level bands (DESIGN.md): excellent > 4.2 ≥ good ≥ 4.1 > fair ≥ 3.7 > poor ≥ 3.1 > bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Bad,
    Poor,
    Fair,
    Good,
    Excellent,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Excellent,
        Level::Good,
        Level::Fair,
        Level::Poor,
        Level::Bad,
    ];

    /// The band of a MOS value; `None` for NaN.
    pub fn of(mos: f64) -> Option<Level> {
        if mos.is_nan() {
            None
        } else if mos > 4.2 {
            Some(Level::Excellent)
        } else if mos >= 4.1 {
            Some(Level::Good)
        } else if mos >= 3.7 {
            Some(Level::Fair)
        } else if mos >= 3.1 {
            Some(Level::Poor)
        } else {
            Some(Level::Bad)
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Excellent => "excellent",
            Level::Good => "good",
            Level::Fair => "fair",
            Level::Poor => "poor",
            Level::Bad => "bad",
        }
    }
}

/// One MOS sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Sample {
    pub mos: f64,
    pub level: Level,
    pub r: f64,
}

/// `Bpl` for Opus: 20 with in-band FEC negotiated, 10 without.
pub fn bpl(fec: bool) -> f64 {
    if fec { 20.0 } else { 10.0 }
}

/// One-way delay `d = RTT/2 + 2·J + 26.5` ms.
pub fn one_way_delay_ms(rtt_ms: f64, jitter_ms: f64) -> f64 {
    rtt_ms / 2.0 + 2.0 * jitter_ms + CODEC_DELAY_MS
}

/// Delay impairment `Id = 0.024·d + 0.11·(d − 177.3)·[d > 177.3]`.
pub fn delay_impairment(d: f64) -> f64 {
    0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 }
}

/// Effective equipment impairment `Ie + (95 − Ie)·P/(P/BurstR + Bpl)`, `P = 100·p`, BurstR 1.
pub fn loss_impairment(loss: f64, fec: bool) -> f64 {
    let p = 100.0 * loss;
    let burst_r = 1.0;
    OPUS_IE + (95.0 - OPUS_IE) * p / (p / burst_r + bpl(fec))
}

/// R to MOS with the guards of DESIGN.md, clamped to [1, 4.5].
pub fn mos_from_r(r: f64) -> f64 {
    let mos = if r < 6.52 {
        1.0
    } else if r > 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)
    };
    mos.clamp(1.0, 4.5)
}

/// The MOS of a window. NaN or infinite inputs give no sample (never a number); negative RTT
/// or jitter count as 0; loss is clamped to [0, 1].
pub fn sample(c: Conditions, fec: bool) -> Option<Sample> {
    if !(c.rtt_ms.is_finite() && c.jitter_ms.is_finite() && c.loss.is_finite()) {
        return None;
    }
    let rtt = c.rtt_ms.max(0.0);
    let jitter = c.jitter_ms.max(0.0);
    let loss = c.loss.clamp(0.0, 1.0);
    let d = one_way_delay_ms(rtt, jitter);
    let r = 93.2 - delay_impairment(d) - loss_impairment(loss, fec);
    let r = if r.is_nan() { f64::NEG_INFINITY } else { r };
    let mos = mos_from_r(r);
    let level = Level::of(mos)?;
    Some(Sample { mos, level, r })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mos(rtt: f64, j: f64, loss_pct: f64) -> f64 {
        sample(
            Conditions {
                rtt_ms: rtt,
                jitter_ms: j,
                loss: loss_pct / 100.0,
            },
            true,
        )
        .unwrap()
        .mos
    }

    #[test]
    fn design_reference_points() {
        for (rtt, j, loss, want) in [
            (0.0, 0.0, 0.0, 4.40),
            (100.0, 10.0, 1.0, 4.24),
            (100.0, 10.0, 5.0, 3.68),
            (300.0, 30.0, 0.0, 4.06),
            (1000.0, 0.0, 0.0, 2.17),
        ] {
            let got = mos(rtt, j, loss);
            assert!(
                (got - want).abs() <= 0.01,
                "({rtt}, {j}, {loss}%) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn reference_table_rows() {
        // shared/notes/call-quality-reference.md §3, MOS_s FEC column.
        for (rtt, j, loss, want) in [
            (20.0, 2.0, 0.0, 4.39),
            (50.0, 5.0, 0.0, 4.38),
            (100.0, 10.0, 0.0, 4.36),
            (100.0, 10.0, 0.7, 4.28),
            (100.0, 10.0, 1.8, 4.13),
            (100.0, 20.0, 2.0, 4.09),
            (150.0, 30.0, 3.0, 3.90),
            (200.0, 20.0, 0.0, 4.32),
            (200.0, 40.0, 5.0, 3.41),
            (300.0, 50.0, 2.0, 3.45),
            (400.0, 50.0, 0.0, 3.55),
            (500.0, 80.0, 10.0, 1.33),
            (100.0, 10.0, 10.0, 3.06),
            (100.0, 10.0, 20.0, 2.23),
            (100.0, 10.0, 50.0, 1.35),
            (100.0, 10.0, 100.0, 1.06),
            (5000.0, 200.0, 0.0, 1.00),
            (1e9, 0.0, 0.0, 1.00),
            (0.0, 500.0, 0.0, 1.00),
            (-50.0, 0.0, 0.0, 4.40),
            (50.0, -10.0, 0.0, 4.38),
            (50.0, 5.0, -5.0, 4.38),
            (50.0, 5.0, 150.0, 1.07),
        ] {
            let got = mos(rtt, j, loss);
            assert!(
                (got - want).abs() <= 0.01,
                "({rtt}, {j}, {loss}%) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn no_fec_is_harsher() {
        let c = Conditions {
            rtt_ms: 100.0,
            jitter_ms: 10.0,
            loss: 0.01,
        };
        let without = sample(c, false).unwrap().mos;
        assert!((without - 4.11).abs() <= 0.01, "{without}");
    }

    #[test]
    fn nan_and_infinite_give_no_sample() {
        for c in [
            (f64::NAN, 5.0, 0.0),
            (50.0, f64::NAN, 0.0),
            (50.0, 5.0, f64::NAN),
            (f64::INFINITY, 5.0, 0.0),
            (50.0, f64::NEG_INFINITY, 0.0),
            (50.0, 5.0, f64::INFINITY),
        ] {
            let c = Conditions {
                rtt_ms: c.0,
                jitter_ms: c.1,
                loss: c.2,
            };
            assert_eq!(sample(c, true), None);
        }
        assert_eq!(Level::of(f64::NAN), None);
    }

    #[test]
    fn level_bands_have_no_gaps() {
        for (mos, level) in [
            (4.5, Level::Excellent),
            (4.2001, Level::Excellent),
            (4.2, Level::Good),
            (4.1, Level::Good),
            (4.0999, Level::Fair),
            (4.05, Level::Fair),
            (3.7, Level::Fair),
            (3.6999, Level::Poor),
            (3.65, Level::Poor),
            (3.1, Level::Poor),
            (3.0999, Level::Bad),
            (1.0, Level::Bad),
        ] {
            assert_eq!(Level::of(mos), Some(level), "{mos}");
        }
    }

    #[test]
    fn r_guards() {
        assert_eq!(
            mos_from_r(-49.0),
            1.0,
            "the cubic rises again below 0: guarded"
        );
        assert_eq!(mos_from_r(6.51), 1.0);
        assert_eq!(mos_from_r(100.1), 4.5);
        assert_eq!(mos_from_r(f64::NEG_INFINITY), 1.0);
    }
}
