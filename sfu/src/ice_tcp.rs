//! ICE-TCP framing (RFC 4571, as RFC 6544 uses it): on a TCP connection every datagram
//! (STUN, DTLS, SRTP) travels as a 16-bit big-endian length, then that many bytes. Pure:
//! the shell reads into a [`FrameDecoder`] and takes whole frames out; [`encode`] frames a
//! datagram to write.
//!
//! Invariant: a decoder holds at most one frame's worth of unread bytes beyond what it was
//! given to read into; a length over its limit ends the connection (nothing is resynchronised:
//! a stream that lies about one length cannot be trusted about the next).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of the length prefix.
pub const HEADER: usize = 2;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the limit of {max}")]
    Oversized { len: usize, max: usize },
}

/// Splits a TCP byte stream into frames.
pub struct FrameDecoder {
    buf: BytesMut,
    max: usize,
}

impl FrameDecoder {
    /// Frames longer than `max` bytes are refused.
    pub fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max,
        }
    }

    /// Where to read into: room for at least one whole frame. The buffer is reused; frames
    /// handed out share its allocation until dropped, so a steady stream allocates about once
    /// per `max` bytes, not per frame.
    pub fn buffer(&mut self) -> &mut BytesMut {
        self.buf.reserve(HEADER + self.max);
        &mut self.buf
    }

    /// The next whole frame, `None` when more bytes are needed. Empty frames are skipped.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            if self.buf.len() < HEADER {
                return Ok(None);
            }
            let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
            if len > self.max {
                return Err(FrameError::Oversized { len, max: self.max });
            }
            if self.buf.len() < HEADER + len {
                return Ok(None);
            }
            self.buf.advance(HEADER);
            let frame = self.buf.split_to(len).freeze();
            if !frame.is_empty() {
                return Ok(Some(frame));
            }
        }
    }

    /// Bytes waiting for the rest of their frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Appends `datagram`, framed, to `out`.
pub fn encode(out: &mut BytesMut, datagram: &[u8]) -> Result<(), FrameError> {
    let len = u16::try_from(datagram.len()).map_err(|_| FrameError::Oversized {
        len: datagram.len(),
        max: usize::from(u16::MAX),
    })?;
    out.reserve(HEADER + datagram.len());
    out.put_u16(len);
    out.put_slice(datagram);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(frames: &[&[u8]]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for f in frames {
            encode(&mut out, f).unwrap();
        }
        out.to_vec()
    }

    fn feed(d: &mut FrameDecoder, bytes: &[u8]) -> Vec<Vec<u8>> {
        d.buffer().extend_from_slice(bytes);
        let mut got = Vec::new();
        while let Some(f) = d.next_frame().unwrap() {
            got.push(f.to_vec());
        }
        got
    }

    #[test]
    fn merged_frames_come_out_one_by_one() {
        let mut d = FrameDecoder::new(1500);
        let wire = framed(&[b"stun", b"dtls-record", &[0x80; 1200]]);
        let got = feed(&mut d, &wire);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], b"stun");
        assert_eq!(got[1], b"dtls-record");
        assert_eq!(got[2], vec![0x80; 1200]);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn a_frame_split_anywhere_waits_for_its_rest() {
        let wire = framed(&[b"first", &[7; 300], b"last"]);
        // Every split point, including inside a length prefix.
        for cut in 0..=wire.len() {
            let mut d = FrameDecoder::new(1500);
            let mut got = feed(&mut d, &wire[..cut]);
            got.extend(feed(&mut d, &wire[cut..]));
            assert_eq!(
                got,
                vec![b"first".to_vec(), vec![7; 300], b"last".to_vec()],
                "{cut}"
            );
        }
        // One byte at a time.
        let mut d = FrameDecoder::new(1500);
        let got: Vec<_> = wire.iter().flat_map(|b| feed(&mut d, &[*b])).collect();
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn an_oversized_length_is_refused_before_its_bytes_arrive() {
        let mut d = FrameDecoder::new(1500);
        d.buffer().extend_from_slice(&[0x05, 0xdd]); // 1501
        assert_eq!(
            d.next_frame(),
            Err(FrameError::Oversized {
                len: 1501,
                max: 1500
            })
        );
        let mut ok = FrameDecoder::new(1500);
        assert_eq!(feed(&mut ok, &framed(&[&[1; 1500]]))[0].len(), 1500);
        let mut out = BytesMut::new();
        assert!(encode(&mut out, &vec![0; 70_000]).is_err());
        assert!(out.is_empty(), "nothing half-written");
    }

    #[test]
    fn empty_frames_are_skipped() {
        let mut d = FrameDecoder::new(1500);
        assert_eq!(
            feed(&mut d, &framed(&[b"", b"x", b""])),
            vec![b"x".to_vec()]
        );
    }

    #[test]
    fn the_buffer_stays_bounded_on_a_long_stream() {
        let mut d = FrameDecoder::new(1500);
        let frame: &[u8] = &[9; 1000];
        let wire = framed(&[frame; 8]);
        let mut frames = 0;
        for _ in 0..10_000 {
            frames += feed(&mut d, &wire).len();
            assert!(
                d.buffer().capacity() <= 16 * 1024 + 1502,
                "{}",
                d.buffer().capacity()
            );
        }
        assert_eq!(frames, 80_000);
    }
}
