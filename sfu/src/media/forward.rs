//! Per-subscriber stream rewriting of forwarded RTP: sequence numbers rebased so every
//! subscriber stream starts below 65536 (a fresh SRTP receiver assumes ROC 0), gap-free for the
//! packets we forward, with reordering and loss mapped 1:1.

/// First sequence number written on a new subscriber stream.
pub const FIRST_OUT_SEQ: u64 = 1000;

/// Maps a publisher's extended sequence numbers onto one subscriber stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqRebase {
    /// (first extended seq seen from the publisher, its number on this stream)
    base: Option<(u64, u64)>,
}

impl SeqRebase {
    /// The outgoing extended sequence number for `seq_in`, or `None` for a packet older than
    /// the stream's first one (it would map below the start and cannot be sent).
    pub fn map(&mut self, seq_in: u64) -> Option<u64> {
        let (first_in, first_out) = *self.base.get_or_insert((seq_in, FIRST_OUT_SEQ));
        if seq_in >= first_in {
            Some(first_out + (seq_in - first_in))
        } else {
            let back = first_in - seq_in;
            (back < first_out).then(|| first_out - back)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_subscriber_starts_below_65536() {
        let mut r = SeqRebase::default();
        // Publisher is deep into its stream (ROC 3).
        let start = 3 * 65536 + 40_000;
        assert_eq!(r.map(start), Some(FIRST_OUT_SEQ));
        assert_eq!(r.map(start + 1), Some(FIRST_OUT_SEQ + 1));
        // Loss keeps the gap, so the subscriber can NACK it.
        assert_eq!(r.map(start + 5), Some(FIRST_OUT_SEQ + 5));
        // Reordered packets map back 1:1.
        assert_eq!(r.map(start + 3), Some(FIRST_OUT_SEQ + 3));
        assert_eq!(r.map(start - 2), Some(FIRST_OUT_SEQ - 2));
        // Way older than the start cannot be sent.
        assert_eq!(r.map(start - FIRST_OUT_SEQ), None);
    }

    #[test]
    fn crosses_the_16_bit_wrap_continuously() {
        let mut r = SeqRebase::default();
        let mut last = r.map(65_530).unwrap();
        for s in 65_531..65_600u64 {
            let o = r.map(s).unwrap();
            assert_eq!(o, last + 1);
            last = o;
        }
    }
}
