//! Property tests of the call-quality model: MOS stays in [1, 4.5] and never improves as RTT,
//! jitter or loss grow; non-finite inputs never produce a number that is not a MOS; volume and
//! loss stay in range.

use std::time::Duration;

use analytics::WindowLoss;
use analytics::mos::{Conditions, Level, sample};
use analytics::volume::VolumeAggregator;
use proptest::prelude::*;

fn cond(rtt: f64, j: f64, loss: f64) -> Conditions {
    Conditions {
        rtt_ms: rtt,
        jitter_ms: j,
        loss,
    }
}

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e6..1e6f64,
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        any::<f64>(),
    ]
}

proptest! {
    #[test]
    fn mos_is_in_range(rtt in any_f64(), j in any_f64(), loss in any_f64(), fec in any::<bool>()) {
        match sample(cond(rtt, j, loss), fec) {
            Some(s) => {
                prop_assert!((1.0..=4.5).contains(&s.mos), "{s:?}");
                prop_assert_eq!(Level::of(s.mos), Some(s.level));
            }
            None => prop_assert!(!(rtt.is_finite() && j.is_finite() && loss.is_finite())),
        }
    }

    #[test]
    fn mos_never_rises_with_rtt(rtt in 0.0..5000f64, d in 0.0..5000f64, j in 0.0..500f64, loss in 0.0..1f64) {
        let a = sample(cond(rtt, j, loss), true).unwrap().mos;
        let b = sample(cond(rtt + d, j, loss), true).unwrap().mos;
        prop_assert!(b <= a + 1e-12, "{a} -> {b}");
    }

    #[test]
    fn mos_never_rises_with_jitter(rtt in 0.0..5000f64, j in 0.0..500f64, d in 0.0..500f64, loss in 0.0..1f64) {
        let a = sample(cond(rtt, j, loss), true).unwrap().mos;
        let b = sample(cond(rtt, j + d, loss), true).unwrap().mos;
        prop_assert!(b <= a + 1e-12, "{a} -> {b}");
    }

    #[test]
    fn mos_never_rises_with_loss(rtt in 0.0..5000f64, j in 0.0..500f64, loss in 0.0..1f64, d in 0.0..1f64, fec in any::<bool>()) {
        let a = sample(cond(rtt, j, loss), fec).unwrap().mos;
        let b = sample(cond(rtt, j, (loss + d).min(1.0)), fec).unwrap().mos;
        prop_assert!(b <= a + 1e-12, "{a} -> {b}");
    }

    #[test]
    fn non_finite_never_samples(
        rtt in any_f64(),
        j in any_f64(),
        which in 0..3usize,
        bad in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
    ) {
        let mut v = [rtt, j, 0.1];
        v[which] = bad;
        prop_assert_eq!(sample(cond(v[0], v[1], v[2]), true), None);
    }

    #[test]
    fn volume_in_range(levels in proptest::collection::vec((0u8..=255, 0u64..100), 0..60)) {
        let mut a = VolumeAggregator::new(Duration::from_millis(300));
        for (i, (level, ms)) in levels.iter().enumerate() {
            a.add(&(i % 3), *level, Duration::from_millis(*ms));
        }
        let r = a.finish();
        prop_assert!(r.total <= 100);
        for (_, v) in &r.volumes {
            prop_assert!((1..=100).contains(v));
            prop_assert!(*v <= r.total, "a member is never louder than the total");
        }
    }

    #[test]
    fn window_loss_in_range(steps in proptest::collection::vec((0u64..1000, -50i64..1000), 1..40)) {
        let mut w = WindowLoss::default();
        let (mut e, mut l) = (0u64, 0i64);
        for (de, dl) in steps {
            e += de;
            l += dl;
            if let Some(p) = w.next(e, l) {
                prop_assert!((0.0..=1.0).contains(&p));
            }
        }
    }
}
