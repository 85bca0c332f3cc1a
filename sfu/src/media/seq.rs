//! The sequence munger of one forwarded stream (LiveKit's RTPMunger, mediasoup's SeqManager):
//! maps a publisher's extended sequence numbers and RTP timestamps onto one subscriber stream.
//!
//! Invariants:
//! - the first number written is [`FIRST_OUT_SEQ`] (a fresh SRTP receiver assumes ROC 0);
//! - packets the server withholds (mute, hold) leave no gap: the next forwarded packet follows
//!   the last forwarded one, however long the pause;
//! - loss and reordering upstream map 1:1, so the subscriber sees real loss and can NACK it;
//! - a publisher source change (new SSRC on the m-line) continues the stream: numbers follow
//!   on, timestamps advance by the wall-clock time that passed.

use std::time::Instant;

/// First sequence number written on a new subscriber stream.
pub const FIRST_OUT_SEQ: u64 = 1000;

/// Sequence and timestamp rewriting for one subscriber stream.
#[derive(Clone, Debug)]
pub struct SeqMunger {
    /// RTP clock rate of the stream (48 kHz audio, 90 kHz video).
    clock: u32,
    state: Option<Run>,
    /// Set when packets newer than the last forwarded one were withheld: the next forwarded
    /// packet starts a new run right after the last number written.
    resync: bool,
    /// Set when the publisher's source changed: its sequence space and timestamps are new.
    restart: bool,
}

/// The current mapping: `out = in + seq_delta`, `ts_out = ts_in + ts_delta` (wrapping).
#[derive(Clone, Copy, Debug)]
struct Run {
    seq_delta: u64,
    ts_delta: u32,
    /// Lowest input number of this run: anything older would map onto numbers already used.
    floor_in: u64,
    /// Highest input number seen (forwarded or withheld) in the current source.
    highest_in: u64,
    /// Highest number written, and the timestamp and arrival of that packet.
    highest_out: u64,
    last_ts_out: u32,
    last_at: Instant,
}

impl SeqMunger {
    pub fn new(clock: u32) -> Self {
        Self {
            clock,
            state: None,
            resync: false,
            restart: false,
        }
    }

    /// The packet `seq_in` (extended) with timestamp `ts_in`, arrived at `at`, is forwarded:
    /// its outgoing (extended sequence number, timestamp), or `None` when it is too old to be
    /// written without reusing a number.
    #[inline]
    pub fn forward(&mut self, seq_in: u64, ts_in: u32, at: Instant) -> Option<(u64, u32)> {
        let Some(run) = self.state.as_mut() else {
            self.state = Some(Run {
                seq_delta: FIRST_OUT_SEQ.wrapping_sub(seq_in),
                ts_delta: 0,
                floor_in: seq_in,
                highest_in: seq_in,
                highest_out: FIRST_OUT_SEQ,
                last_ts_out: ts_in,
                last_at: at,
            });
            self.resync = false;
            self.restart = false;
            return Some((FIRST_OUT_SEQ, ts_in));
        };
        if self.restart {
            // New source: follow on from the last packet, timestamps by elapsed time.
            let elapsed = at.saturating_duration_since(run.last_at);
            let ticks = (elapsed.as_micros() as u64 * u64::from(self.clock) / 1_000_000).max(1);
            run.ts_delta = run
                .last_ts_out
                .wrapping_add(ticks as u32)
                .wrapping_sub(ts_in);
            run.start(seq_in);
            self.restart = false;
            self.resync = false;
        } else if self.resync {
            if seq_in <= run.highest_in {
                return None; // from before the pause
            }
            run.start(seq_in);
            self.resync = false;
        }
        let run = self.state.as_mut()?;
        if seq_in < run.floor_in {
            return None;
        }
        let out = seq_in.wrapping_add(run.seq_delta);
        let ts = ts_in.wrapping_add(run.ts_delta);
        if out > run.highest_out {
            run.highest_out = out;
            run.last_ts_out = ts;
            run.last_at = at;
        }
        run.highest_in = run.highest_in.max(seq_in);
        Some((out, ts))
    }

    /// The packet `seq_in` is not forwarded on this stream (publisher muted or held, subscriber
    /// held or not ready): its number is not written and leaves no gap.
    #[inline]
    pub fn withhold(&mut self, seq_in: u64) {
        if let Some(run) = self.state.as_mut()
            && !self.restart
            && seq_in > run.highest_in
        {
            run.highest_in = seq_in;
            self.resync = true;
        }
    }

    /// The publisher's source changed (a new SSRC on the same m-line): its next packet
    /// continues this stream.
    #[inline]
    pub fn restart(&mut self) {
        if self.state.is_some() {
            self.restart = true;
        }
    }

    /// The highest number written so far.
    pub fn highest_out(&self) -> Option<u64> {
        self.state.map(|r| r.highest_out)
    }
}

impl Run {
    /// A new run: `seq_in` is written right after the highest number so far.
    #[inline]
    fn start(&mut self, seq_in: u64) {
        self.seq_delta = (self.highest_out + 1).wrapping_sub(seq_in);
        self.floor_in = seq_in;
        self.highest_in = seq_in;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn m() -> (SeqMunger, Instant) {
        (SeqMunger::new(48_000), Instant::now())
    }

    #[test]
    fn late_subscriber_starts_below_65536() {
        let (mut s, t) = m();
        let start = 3 * 65_536 + 40_000;
        assert_eq!(s.forward(start, 7, t), Some((FIRST_OUT_SEQ, 7)));
        assert_eq!(s.forward(start + 1, 8, t).unwrap().0, FIRST_OUT_SEQ + 1);
    }

    #[test]
    fn upstream_loss_keeps_its_gap_and_reorder_maps_back() {
        let (mut s, t) = m();
        s.forward(100, 0, t);
        assert_eq!(s.forward(105, 0, t).unwrap().0, FIRST_OUT_SEQ + 5);
        assert_eq!(s.forward(103, 0, t).unwrap().0, FIRST_OUT_SEQ + 3);
        // Older than the first packet: it would map onto numbers never negotiated.
        assert_eq!(s.forward(99, 0, t), None);
    }

    #[test]
    fn crosses_the_16_bit_wrap_continuously() {
        let (mut s, t) = m();
        let mut last = s.forward(65_530, 0, t).unwrap().0;
        for seq in 65_531..65_600u64 {
            let o = s.forward(seq, 0, t).unwrap().0;
            assert_eq!(o, last + 1);
            last = o;
        }
    }

    #[test]
    fn withheld_packets_leave_no_gap_however_many() {
        let (mut s, t) = m();
        s.forward(10, 0, t);
        s.forward(11, 0, t);
        for seq in 12..100_012 {
            s.withhold(seq);
        }
        assert_eq!(s.forward(100_012, 0, t).unwrap().0, FIRST_OUT_SEQ + 2);
        assert_eq!(s.forward(100_013, 0, t).unwrap().0, FIRST_OUT_SEQ + 3);
        // Loss after the resume still shows.
        assert_eq!(s.forward(100_016, 0, t).unwrap().0, FIRST_OUT_SEQ + 6);
    }

    #[test]
    fn a_late_packet_from_before_the_pause_is_dropped_not_renumbered() {
        let (mut s, t) = m();
        s.forward(10, 0, t);
        s.withhold(12);
        // 11 arrives late, after 12 was withheld: writing it would collide with the resume.
        assert_eq!(s.forward(11, 0, t), None);
        assert_eq!(s.forward(13, 0, t).unwrap().0, FIRST_OUT_SEQ + 1);
        // Reordering across the resume point is dropped too.
        assert_eq!(s.forward(12, 0, t), None);
    }

    #[test]
    fn duplicates_and_old_withholds_change_nothing() {
        let (mut s, t) = m();
        s.forward(10, 0, t);
        s.forward(11, 0, t);
        s.withhold(9); // older than what we have: no resync
        assert_eq!(s.forward(12, 0, t).unwrap().0, FIRST_OUT_SEQ + 2);
        assert_eq!(s.forward(12, 0, t).unwrap().0, FIRST_OUT_SEQ + 2);
        assert_eq!(s.highest_out(), Some(FIRST_OUT_SEQ + 2));
    }

    #[test]
    fn timestamps_pass_through_within_a_source() {
        let (mut s, t) = m();
        s.forward(1, 1_000, t);
        s.withhold(2);
        // The publisher's clock kept running while muted: passed through unchanged.
        assert_eq!(
            s.forward(50, 1_000 + 49 * 960, t),
            Some((1001, 1_000 + 49 * 960))
        );
    }

    #[test]
    fn a_new_source_continues_numbers_and_time() {
        let (mut s, t) = m();
        s.forward(500, 4_000_000_000, t);
        s.forward(501, 4_000_000_960, t);
        s.restart();
        // New SSRC: sequence and timestamps start elsewhere, 100 ms later.
        let later = t + Duration::from_millis(100);
        let (seq, ts) = s.forward(7, 12_345, later).unwrap();
        assert_eq!(seq, FIRST_OUT_SEQ + 2);
        assert_eq!(ts, 4_000_000_960u32.wrapping_add(4_800));
        let (seq, ts2) = s.forward(8, 12_345 + 960, later).unwrap();
        assert_eq!((seq, ts2), (FIRST_OUT_SEQ + 3, ts.wrapping_add(960)));
        // The new source's numbers may be lower than the old ones: still no collision.
        assert_eq!(s.forward(6, 0, later), None);
    }

    #[test]
    fn restart_before_any_packet_is_a_plain_start() {
        let (mut s, t) = m();
        s.restart();
        assert_eq!(s.forward(42, 9, t), Some((FIRST_OUT_SEQ, 9)));
    }
}
