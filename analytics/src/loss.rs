//! Loss per window from cumulative counters: what was lost in this window over what was
//! expected in it, never a lifetime ratio (a call that was bad an hour ago is not bad now).

/// Turns cumulative (expected, lost) counters into per-window loss fractions.
#[derive(Clone, Debug, Default)]
pub struct WindowLoss {
    last: Option<(u64, i64)>,
}

impl WindowLoss {
    /// Feeds the counters at the end of a window; returns that window's loss in [0, 1], or
    /// `None` when nothing was expected in it (or on the first call, which only sets the base).
    /// `lost_total` may go down (duplicates make RFC 3550's cumulative loss negative).
    pub fn next(&mut self, expected_total: u64, lost_total: i64) -> Option<f64> {
        let prev = self.last.replace((expected_total, lost_total));
        let (e0, l0) = prev?;
        let expected = expected_total.checked_sub(e0)?;
        if expected == 0 {
            return None;
        }
        let lost = lost_total.saturating_sub(l0);
        Some((lost as f64 / expected as f64).clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_window_not_lifetime() {
        let mut w = WindowLoss::default();
        assert_eq!(w.next(0, 0), None, "first call sets the base");
        assert_eq!(w.next(100, 10), Some(0.10));
        // A clean window after a bad one is clean.
        assert_eq!(w.next(200, 10), Some(0.0));
        assert_eq!(w.next(300, 15), Some(0.05));
        // Nothing expected: no sample.
        assert_eq!(w.next(300, 15), None);
        // Duplicates can make the counter go down: clamped at 0.
        assert_eq!(w.next(400, 12), Some(0.0));
        // Counters that go backwards (a reset) give no sample.
        assert_eq!(w.next(10, 0), None);
        assert_eq!(w.next(20, 20), Some(1.0));
    }
}
