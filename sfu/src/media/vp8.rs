//! VP8 picture-id continuity of one forwarded stream (LiveKit's VP8 munger): across simulcast
//! layer switches, the PictureID and TL0PICIDX a subscriber sees follow on from the last ones
//! it got, as its decoder's frame-reference logic expects of one stream.
//!
//! Invariants: within one layer the fields map 1:1 (offsets, wrapping at 15 and 8 bits), so
//! loss and reordering upstream stay visible; a switch makes the next picture id the last one
//! written plus one, and the next TL0PICIDX likewise.

use str0m::rtp::{Vp8Descriptor, Vp8Patch};

const PICTURE_ID_MOD: u16 = 1 << 15;

/// Rewrites PictureID and TL0PICIDX for one subscriber stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct Vp8Munger {
    pid_delta: u16,
    tl0_delta: u8,
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
    /// Set by [`Vp8Munger::switch`]: the next packet rebases the offsets.
    rebase: bool,
    /// Whether any offset is non-zero (a stream never switched is passed through as is).
    shifted: bool,
}

impl Vp8Munger {
    /// The next packet starts a new layer.
    pub fn switch(&mut self) {
        self.rebase = true;
    }

    /// The rewrite of one packet's payload descriptor `d` (parsed once per packet by the
    /// core, from `payload`), or `None`: nothing to change.
    pub fn munge(&mut self, d: &Vp8Descriptor, payload: &[u8]) -> Option<Vp8Patch> {
        let (pid, tl0) = self.next(d.picture_id(), d.tl0_pic_idx());
        if !self.shifted || (pid.is_none() && tl0.is_none()) {
            return None;
        }
        let mut b = d.patch();
        if let Some(p) = pid {
            // A 7-bit field wraps at 128.
            let short = payload.get(2).is_some_and(|x| x & 0x80 == 0);
            b = b.picture_id(if short { p % 128 } else { p });
        }
        if let Some(t) = tl0 {
            b = b.tl0_pic_idx(t);
        }
        b.build().ok()
    }

    /// The outgoing (PictureID, TL0PICIDX) for a packet carrying these.
    pub fn next(&mut self, pid: Option<u16>, tl0: Option<u8>) -> (Option<u16>, Option<u8>) {
        if std::mem::take(&mut self.rebase) {
            if let (Some(last), Some(pid)) = (self.last_pid, pid) {
                self.pid_delta =
                    (last + 1 + PICTURE_ID_MOD - pid % PICTURE_ID_MOD) % PICTURE_ID_MOD;
            }
            if let (Some(last), Some(tl0)) = (self.last_tl0, tl0) {
                self.tl0_delta = last.wrapping_add(1).wrapping_sub(tl0);
            }
            self.shifted = self.pid_delta != 0 || self.tl0_delta != 0;
        }
        let pid_out = pid.map(|p| (p % PICTURE_ID_MOD + self.pid_delta) % PICTURE_ID_MOD);
        let tl0_out = tl0.map(|t| t.wrapping_add(self.tl0_delta));
        if let Some(p) = pid_out {
            self.last_pid = Some(p);
        }
        if let Some(t) = tl0_out {
            self.last_tl0 = Some(t);
        }
        (pid_out, tl0_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 payload with a 15-bit picture id and a TL0PICIDX.
    fn payload(pid: u16, tl0: u8, key: bool) -> Vec<u8> {
        vec![
            0x90,                    // X=1, S=1, PID 0
            0xe0,                    // I=1, L=1, T=1
            0x80 | (pid >> 8) as u8, // M=1 + high bits
            pid as u8,
            tl0,
            0x00, // TID/KEYIDX
            if key { 0x00 } else { 0x01 },
            0,
            0,
        ]
    }

    fn apply(m: &mut Vp8Munger, pid: u16, tl0: u8) -> (u16, u8) {
        let (p, t) = m.next(Some(pid), Some(tl0));
        (p.unwrap(), t.unwrap())
    }

    #[test]
    fn one_layer_passes_through_and_a_switch_follows_on() {
        let mut m = Vp8Munger::default();
        assert_eq!(apply(&mut m, 100, 7), (100, 7));
        assert_eq!(apply(&mut m, 101, 8), (101, 8));
        assert_eq!(
            apply(&mut m, 103, 9),
            (103, 9),
            "a gap upstream stays a gap"
        );
        m.switch();
        assert_eq!(apply(&mut m, 30_000, 200), (104, 10));
        assert_eq!(apply(&mut m, 30_001, 201), (105, 11));
        // Wrapping: back near the top of the 15-bit space.
        m.switch();
        assert_eq!(apply(&mut m, 32_767, 255), (106, 12));
        assert_eq!(
            apply(&mut m, 0, 0),
            (107, 13),
            "the input wraps, the output follows"
        );
    }

    fn munge(m: &mut Vp8Munger, p: &[u8]) -> Option<Vp8Patch> {
        m.munge(&Vp8Descriptor::parse(p).unwrap(), p)
    }

    #[test]
    fn a_descriptor_is_patched_only_once_shifted() {
        let mut m = Vp8Munger::default();
        assert!(
            munge(&mut m, &payload(5, 1, true)).is_none(),
            "passed through"
        );
        m.switch();
        assert!(munge(&mut m, &payload(900, 40, true)).is_some());
        assert!(munge(&mut m, &payload(901, 41, false)).is_some());
        assert!(
            munge(&mut m, &[0x10, 0x00]).is_none(),
            "no descriptor extension: nothing to patch"
        );
    }
}
