//! The sleeve datagram (UDP 6783): userspace encapsulation carrying one or
//! more Ethernet frames between two peers.
//!
//! ```text
//!  0     1       2              4              6          8                       16
//! +-----+-------+--------------+--------------+----------+-----------------------+
//! | ver | flags | src short id | dst short id | reserved | counter (u64)         |
//! +-----+-------+--------------+--------------+----------+-----------------------+
//! body (plaintext):  | len u16 | frame | len u16 | frame | ...
//! body (encrypted):  | ChaCha20-Poly1305(plaintext body) | tag (16) |
//! body (fragment):   | fragment header (12) | piece of a plaintext body |
//! ```
//! The header is the AAD of the encryption and `counter` is its nonce, so it
//! must never repeat under one key (see `crate::crypto::sleeve`). Frames are
//! packed while they fit ([`FrameWriter`]); a zero length ends nothing and is
//! rejected as malformed. [`FrameIter`] reads them back and never panics on
//! garbage: it yields an error once and stops.

use super::{be16, be64, need, Result, WireError, MAX_SHORT_ID};

mod field {
    use core::ops::Range;
    pub(super) const VERSION: usize = 0;
    pub(super) const FLAGS: usize = 1;
    pub(super) const SRC: Range<usize> = 2..4;
    pub(super) const DST: Range<usize> = 4..6;
    pub(super) const RESERVED: Range<usize> = 6..8;
    pub(super) const COUNTER: Range<usize> = 8..16;
    pub(super) const BODY: usize = 16;
}

/// Bytes of the sleeve header.
pub const HEADER_LEN: usize = field::BODY;
/// Bytes of each frame's length prefix.
pub const FRAME_PREFIX_LEN: usize = 2;
/// Bytes of the Poly1305 tag appended to an encrypted body.
pub const TAG_LEN: usize = 16;
/// Format version.
pub const VERSION: u8 = 1;
/// Flag: the body is encrypted and authenticated.
pub const FLAG_ENCRYPTED: u8 = 0x01;
/// Flag: the frames are heartbeats ([`super::heartbeat`]), not Ethernet.
pub const FLAG_HEARTBEAT: u8 = 0x02;
/// Flag: every frame starts with a [`VNET_HDR_LEN`]-byte `virtio_net_hdr` (the segmentation
/// and checksum metadata of a TAP with offloads), so one frame may be a whole TCP segment
/// burst of up to 64 KiB that the receiving kernel segments.
pub const FLAG_VNET_HDR: u8 = 0x04;
/// Bytes of the `virtio_net_hdr` in front of each frame under [`FLAG_VNET_HDR`].
pub const VNET_HDR_LEN: usize = 10;
/// Flag: the body is one piece of a larger body, behind a [`super::fragment`] header.
pub const FLAG_FRAGMENT: u8 = 0x08;
const KNOWN_FLAGS: u8 = FLAG_ENCRYPTED | FLAG_HEARTBEAT | FLAG_VNET_HDR | FLAG_FRAGMENT;

/// Bytes sleeve adds around one frame on an IPv4 underlay: IPv4 (20) + UDP
/// (8) + header + length prefix, plus the tag when encrypted. The overlay
/// MTU is the underlay MTU minus this (minus 14 of the inner Ethernet header
/// when the MTU counts IP bytes).
pub const fn overhead(encrypted: bool) -> usize {
    20 + 8 + HEADER_LEN + FRAME_PREFIX_LEN + if encrypted { TAG_LEN } else { 0 }
}

/// The overlay MTU (IP bytes of a container packet) that sleeve carries
/// in one datagram over an IPv4 underlay of `underlay_mtu`: the underlay MTU
/// minus [`overhead`] and the 14-byte inner Ethernet header. 1500 gives
/// 1440, or 1424 encrypted.
pub const fn overlay_mtu(underlay_mtu: usize, encrypted: bool) -> usize {
    underlay_mtu.saturating_sub(overhead(encrypted) + 14)
}

/// A read/write view of a sleeve datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; header getters may panic on a
    /// short one (the frame iterator never does).
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }
    /// Wraps a buffer after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }
    /// Checks the header is present (and, when encrypted, the tag).
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.flags() & FLAG_ENCRYPTED != 0 && b.len() < HEADER_LEN + TAG_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }
    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// Format version.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }
    /// Flag bits.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    /// Sender's short id.
    pub fn src_short_id(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC.start)
    }
    /// Receiver's short id.
    pub fn dst_short_id(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST.start)
    }
    /// Sequence counter (the AEAD nonce when encrypted).
    pub fn counter(&self) -> u64 {
        be64(self.buffer.as_ref(), field::COUNTER.start)
    }
    /// The header bytes (the AAD).
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }
    /// The body: frames, or ciphertext and tag.
    pub fn body(&self) -> &[u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or(&[])
    }
    /// The frames of a plaintext body.
    pub fn frames(&self) -> FrameIter<'_> {
        FrameIter::new(self.body())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version and zeroes the reserved bytes.
    pub fn set_version(&mut self, v: u8) {
        let b = self.buffer.as_mut();
        b[field::VERSION] = v;
        b[field::RESERVED].fill(0);
    }
    /// Sets the flag bits.
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }
    /// Sets the sender's short id.
    pub fn set_src_short_id(&mut self, v: u16) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the receiver's short id.
    pub fn set_dst_short_id(&mut self, v: u16) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the counter.
    pub fn set_counter(&mut self, v: u64) {
        self.buffer.as_mut()[field::COUNTER].copy_from_slice(&v.to_be_bytes());
    }
    /// The header (for writing) and the body, split.
    pub fn header_and_body_mut(&mut self) -> (&mut [u8], &mut [u8]) {
        self.buffer.as_mut().split_at_mut(HEADER_LEN)
    }
}

/// Iterator over length-prefixed frames; yields one error on garbage and
/// then stops.
#[derive(Debug, Clone)]
pub struct FrameIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> FrameIter<'a> {
    /// Iterates the frames of a plaintext body.
    pub fn new(body: &'a [u8]) -> Self {
        FrameIter {
            rest: body,
            failed: false,
        }
    }
}

impl<'a> Iterator for FrameIter<'a> {
    type Item = Result<&'a [u8]>;
    fn next(&mut self) -> Option<Result<&'a [u8]>> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let fail = |s: &mut Self, e| {
            s.failed = true;
            Some(Err(e))
        };
        let Some(prefix) = self.rest.get(..FRAME_PREFIX_LEN) else {
            return fail(self, WireError::Truncated);
        };
        let len = usize::from(be16(prefix, 0));
        if len == 0 {
            return fail(self, WireError::Malformed("sleeve frame of length zero"));
        }
        let Some(frame) = self.rest.get(FRAME_PREFIX_LEN..FRAME_PREFIX_LEN + len) else {
            return fail(self, WireError::Truncated);
        };
        self.rest = &self.rest[FRAME_PREFIX_LEN + len..];
        Some(Ok(frame))
    }
}

/// Packs frames into a datagram buffer after the header, while they fit.
#[derive(Debug)]
pub struct FrameWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
    limit: usize,
}

impl<'a> FrameWriter<'a> {
    /// Writes frames into `buf[HEADER_LEN..]`, leaving `reserve` bytes free
    /// at the end of `buf` (a tag when the datagram will be encrypted).
    /// `buf` should be as long as the largest datagram the path carries.
    pub fn new(buf: &'a mut [u8], reserve: usize) -> Result<Self> {
        need(HEADER_LEN + reserve, buf.len())?;
        let limit = buf.len() - reserve;
        Ok(FrameWriter {
            buf,
            pos: HEADER_LEN,
            limit,
        })
    }
    /// Whether a frame of `len` bytes still fits.
    pub fn fits(&self, len: usize) -> bool {
        len > 0 && len <= usize::from(u16::MAX) && self.pos + FRAME_PREFIX_LEN + len <= self.limit
    }
    /// Appends a frame, or fails (leaving the writer as it was) when it does
    /// not fit or is empty.
    pub fn push(&mut self, frame: &[u8]) -> Result<()> {
        if frame.is_empty() {
            return Err(WireError::Malformed("sleeve frame of length zero"));
        }
        if !self.fits(frame.len()) {
            return Err(WireError::TooLong {
                len: frame.len(),
                max: self.limit.saturating_sub(self.pos + FRAME_PREFIX_LEN),
            });
        }
        let len = frame.len() as u16;
        self.buf[self.pos..self.pos + FRAME_PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
        self.pos += FRAME_PREFIX_LEN;
        self.buf[self.pos..self.pos + frame.len()].copy_from_slice(frame);
        self.pos += frame.len();
        Ok(())
    }
    /// Bytes of body written so far.
    pub fn body_len(&self) -> usize {
        self.pos - HEADER_LEN
    }
    /// Bytes of datagram written so far (header included, reserve not).
    pub fn len(&self) -> usize {
        self.pos
    }
    /// Whether no frame was pushed.
    pub fn is_empty(&self) -> bool {
        self.pos == HEADER_LEN
    }
}

/// A sleeve header in plain form; the body travels separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// The body is encrypted.
    pub encrypted: bool,
    /// The frames are heartbeats.
    pub heartbeat: bool,
    /// Sender's short id.
    pub src_short_id: u16,
    /// Receiver's short id.
    pub dst_short_id: u16,
    /// Sequence counter.
    pub counter: u64,
}

impl Repr {
    /// Reads and validates the header.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        packet.check_len()?;
        if packet.version() != VERSION {
            return Err(WireError::BadVersion(packet.version()));
        }
        if packet.flags() & !KNOWN_FLAGS != 0 {
            return Err(WireError::Malformed("sleeve header has unknown flags"));
        }
        if packet.src_short_id() > MAX_SHORT_ID || packet.dst_short_id() > MAX_SHORT_ID {
            return Err(WireError::Malformed("sleeve short id exceeds 12 bits"));
        }
        Ok(Repr {
            encrypted: packet.flags() & FLAG_ENCRYPTED != 0,
            heartbeat: packet.flags() & FLAG_HEARTBEAT != 0,
            src_short_id: packet.src_short_id(),
            dst_short_id: packet.dst_short_id(),
            counter: packet.counter(),
        })
    }
    /// Bytes of the header.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    /// Writes the header.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(
        &self,
        packet: &mut Packet<&mut T>,
    ) -> Result<()> {
        if self.src_short_id > MAX_SHORT_ID || self.dst_short_id > MAX_SHORT_ID {
            return Err(WireError::Malformed("sleeve short id exceeds 12 bits"));
        }
        need(HEADER_LEN, packet.buffer.as_ref().len())?;
        packet.set_version(VERSION);
        let mut flags = 0;
        if self.encrypted {
            flags |= FLAG_ENCRYPTED;
        }
        if self.heartbeat {
            flags |= FLAG_HEARTBEAT;
        }
        packet.set_flags(flags);
        packet.set_src_short_id(self.src_short_id);
        packet.set_dst_short_id(self.dst_short_id);
        packet.set_counter(self.counter);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn writer_packs_frames_until_full_and_iter_reads_them_back() {
        let mut buf = [0u8; HEADER_LEN + 2 + 3 + 2 + 4 + 1];
        let mut w = FrameWriter::new(&mut buf, 0).unwrap();
        w.push(b"abc").unwrap();
        w.push(b"defg").unwrap();
        assert!(!w.fits(1), "only one byte left, a frame needs a prefix too");
        assert!(w.push(b"h").is_err());
        assert_eq!(w.body_len(), 11);
        let frames: Vec<_> = FrameIter::new(&buf[HEADER_LEN..HEADER_LEN + 11]).collect();
        assert_eq!(frames, vec![Ok(&b"abc"[..]), Ok(&b"defg"[..])]);
    }

    #[test]
    fn iter_reports_garbage_once() {
        let body = [0u8, 2, b'x', b'y', 0, 9, 1];
        let mut it = FrameIter::new(&body);
        assert_eq!(it.next(), Some(Ok(&b"xy"[..])));
        assert_eq!(it.next(), Some(Err(WireError::Truncated)));
        assert_eq!(it.next(), None);
    }
}
