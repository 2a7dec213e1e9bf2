//! The fragment header of a sleeve datagram flagged [`FLAG_FRAGMENT`]: the datagram's body is
//! one piece of a larger plaintext body (a TCP burst of up to 64 KiB from a TAP with
//! offloads) that did not fit the path in one datagram.
//!
//! ```text
//!  0              4              8           10          12
//! +--------------+--------------+-----------+-----------+---------------------+
//! | burst (u32)  | total (u32)  | index u16 | count u16 | piece of the body   |
//! +--------------+--------------+-----------+-----------+---------------------+
//! ```
//! `burst` numbers the sender's split bodies (per peer, wrapping), `total` is the length of
//! the whole body, `index` this piece's place among `count` pieces. Every piece but the last
//! carries the same number of bytes, so piece `i` starts at `i * len` and the last one ends at
//! `total`. Splitting the body in sleeve rather than letting the underlay fragment one big
//! datagram lets the sender hand all pieces to the kernel in one UDP GSO send and the receiver
//! take them back in one UDP GRO read: one packet crosses the underlay's stack instead of
//! dozens of IP fragments, and each piece is sealed and replay-checked on its own.
//!
//! [`FLAG_FRAGMENT`]: super::sleeve::FLAG_FRAGMENT

use super::{be16, be32, need, Result, WireError};

mod field {
    use core::ops::Range;
    pub(super) const BURST: Range<usize> = 0..4;
    pub(super) const TOTAL: Range<usize> = 4..8;
    pub(super) const INDEX: Range<usize> = 8..10;
    pub(super) const COUNT: Range<usize> = 10..12;
    pub(super) const PIECE: usize = 12;
}

/// Bytes of the fragment header.
pub const HEADER_LEN: usize = field::PIECE;
/// The most pieces one body may be cut into (a 64 KiB burst over a 576-byte path needs ~120).
pub const MAX_COUNT: u16 = 256;
/// The largest body that may be split: a length-prefixed frame of at most 64 KiB.
pub const MAX_TOTAL: u32 = 2 + 65_535;

/// A read/write view of a fragment header and its piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; getters may panic on a short one.
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }
    /// Wraps a buffer that holds at least the header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        if p.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }
    /// The sender's number for the split body.
    pub fn burst(&self) -> u32 {
        be32(self.buffer.as_ref(), field::BURST.start)
    }
    /// Length of the whole body.
    pub fn total(&self) -> u32 {
        be32(self.buffer.as_ref(), field::TOTAL.start)
    }
    /// This piece's place, from 0.
    pub fn index(&self) -> u16 {
        be16(self.buffer.as_ref(), field::INDEX.start)
    }
    /// How many pieces the body was cut into.
    pub fn count(&self) -> u16 {
        be16(self.buffer.as_ref(), field::COUNT.start)
    }
    /// The piece of the body this datagram carries.
    pub fn piece(&self) -> &[u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or(&[])
    }
}

/// A fragment header in plain form; the piece travels separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// The sender's number for the split body.
    pub burst: u32,
    /// Length of the whole body.
    pub total: u32,
    /// This piece's place, from 0.
    pub index: u16,
    /// How many pieces the body was cut into.
    pub count: u16,
}

impl Repr {
    /// Reads and validates a header: at least two pieces and at most [`MAX_COUNT`], the index
    /// among them, a total of at most [`MAX_TOTAL`] and a non-empty piece no longer than it.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        if packet.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let r = Repr {
            burst: packet.burst(),
            total: packet.total(),
            index: packet.index(),
            count: packet.count(),
        };
        r.check()?;
        let piece = packet.piece().len();
        if piece == 0 {
            return Err(WireError::Malformed("sleeve fragment with an empty piece"));
        }
        if piece > r.total as usize {
            return Err(WireError::Malformed(
                "sleeve fragment piece longer than its body",
            ));
        }
        Ok(r)
    }

    fn check(&self) -> Result<()> {
        if self.count < 2 || self.count > MAX_COUNT {
            return Err(WireError::Malformed(
                "sleeve fragment count outside 2..=256",
            ));
        }
        if self.index >= self.count {
            return Err(WireError::Malformed("sleeve fragment index past its count"));
        }
        if self.total > MAX_TOTAL {
            return Err(WireError::TooLong {
                len: self.total as usize,
                max: MAX_TOTAL as usize,
            });
        }
        Ok(())
    }

    /// Bytes of the header.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header in front of the piece.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(
        &self,
        packet: &mut Packet<&mut T>,
    ) -> Result<()> {
        self.check()?;
        let b = packet.buffer.as_mut();
        need(HEADER_LEN, b.len())?;
        b[field::BURST].copy_from_slice(&self.burst.to_be_bytes());
        b[field::TOTAL].copy_from_slice(&self.total.to_be_bytes());
        b[field::INDEX].copy_from_slice(&self.index.to_be_bytes());
        b[field::COUNT].copy_from_slice(&self.count.to_be_bytes());
        Ok(())
    }
}

/// How a body of `total` bytes is cut for datagrams whose body may hold `room` bytes (fragment
/// header included): the piece length and the number of pieces. `None` when it fits whole or
/// would need more than [`MAX_COUNT`] pieces.
pub fn plan(total: usize, room: usize) -> Option<(usize, u16)> {
    if total <= room || room <= HEADER_LEN || total > MAX_TOTAL as usize {
        return None;
    }
    let piece = room - HEADER_LEN;
    let count = total.div_ceil(piece);
    let count = u16::try_from(count).ok().filter(|c| *c <= MAX_COUNT)?;
    Some((piece, count))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = Repr {
            burst: 7,
            total: 3000,
            index: 1,
            count: 3,
        };
        let mut b = [0u8; HEADER_LEN + 4];
        r.emit(&mut Packet::new_unchecked(&mut b[..])).unwrap();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap(), r);
        assert_eq!(p.piece().len(), 4);
    }

    #[test]
    fn plan_cuts_a_burst_into_equal_pieces() {
        // A 64 KiB burst over a 1500-byte path: 1444 bytes of room, 1432 per piece.
        assert_eq!(plan(65_537, 1444), Some((1432, 46)));
        assert_eq!(plan(1000, 1444), None, "fits whole");
        assert_eq!(plan(65_537, 100), None, "would need more than 256 pieces");
        assert_eq!(plan(65_537, HEADER_LEN), None);
    }
}
