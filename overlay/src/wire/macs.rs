//! The MAC addresses of a router's local containers, announced to each peer over the control
//! connection (control type [`super::control::MessageType::LocalMacs`]) whenever they change.
//! A peer steers frames for these MACs to the datapath its connection uses (the kernel vxlan
//! device's FDB, or sleeve); a MAC nobody announced is flooded, once to each peer.
//!
//! ```text
//!  0          2            8           14
//! +----------+------------+-----------+-----
//! | count u16| MAC 1 (6)  | MAC 2 (6) | ...
//! +----------+------------+-----------+-----
//! ```

use super::{be16, need, Result, WireError};

mod field {
    pub(super) const COUNT: core::ops::Range<usize> = 0..2;
    pub(super) const MACS: usize = 2;
}

/// Bytes before the list.
pub const HEADER_LEN: usize = field::MACS;
/// Most MACs one message carries (a host with more containers sends the first ones; the rest
/// are flooded, which is correct, only slower).
pub const MAX_MACS: usize = 4096;

/// A read/write view of a MAC announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short one.
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }
    /// Wraps a buffer after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }
    /// Checks the count and every MAC it announces are present.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if usize::from(self.count()) > MAX_MACS {
            return Err(WireError::TooLong {
                len: usize::from(self.count()),
                max: MAX_MACS,
            });
        }
        if b.len() < self.total_len() {
            return Err(WireError::Truncated);
        }
        Ok(())
    }
    /// Number of MACs.
    pub fn count(&self) -> u16 {
        be16(self.buffer.as_ref(), field::COUNT.start)
    }
    /// Bytes of the whole message.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + 6 * usize::from(self.count())
    }
    /// MAC `i`, if `i < count`.
    pub fn mac(&self, i: usize) -> Option<[u8; 6]> {
        if i >= usize::from(self.count()) {
            return None;
        }
        let at = HEADER_LEN + 6 * i;
        let mut m = [0u8; 6];
        m.copy_from_slice(self.buffer.as_ref().get(at..at + 6)?);
        Some(m)
    }
}

/// A MAC announcement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Repr {
    /// The MACs, unicast only.
    pub macs: Vec<[u8; 6]>,
}

impl Repr {
    /// Reads a checked packet; multicast or all-zero MACs are refused.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self> {
        let mut macs = Vec::with_capacity(usize::from(p.count()));
        for i in 0..usize::from(p.count()) {
            let m = p.mac(i).ok_or(WireError::Truncated)?;
            if m[0] & 1 == 1 || m == [0; 6] {
                return Err(WireError::Malformed("announced MAC is multicast or zero"));
            }
            macs.push(m);
        }
        Ok(Repr { macs })
    }
    /// Bytes [`Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + 6 * self.macs.len().min(MAX_MACS)
    }
    /// Writes the message (the first [`MAX_MACS`] MACs).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) -> Result<()> {
        let b = p.buffer.as_mut();
        need(self.buffer_len(), b.len())?;
        let n = self.macs.len().min(MAX_MACS);
        b[field::COUNT].copy_from_slice(&(n as u16).to_be_bytes());
        for (i, m) in self.macs.iter().take(n).enumerate() {
            let at = HEADER_LEN + 6 * i;
            b[at..at + 6].copy_from_slice(m);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_bad_input() {
        let r = Repr {
            macs: vec![[2, 0, 0, 0, 0, 1], [0x0a, 0xbb, 0xcc, 0xdd, 0xee, 0xff]],
        };
        let mut b = vec![0u8; r.buffer_len()];
        assert!(r.emit(&mut Packet::new_unchecked(&mut b[..])).is_ok());
        assert_eq!(b[..2], [0, 2]);
        let p = Packet::new_checked(&b[..]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Repr::parse(&p), Ok(r));
        assert_eq!(
            Packet::new_checked(&b[..7]).err(),
            Some(WireError::Truncated)
        );
        let mut multicast = b.clone();
        multicast[2] = 1;
        let p = Packet::new_checked(&multicast[..]).unwrap_or_else(|e| panic!("{e}"));
        assert!(Repr::parse(&p).is_err());
        assert!(matches!(
            Packet::new_checked(&[0xff, 0xff][..]),
            Err(WireError::TooLong { .. })
        ));
    }
}
