//! IPAM ownership claims (control type
//! [`super::control::MessageType::IpamClaims`]): which peer owns which
//! range of the overlay address space, each claim versioned so the newest
//! wins when gossip converges.
//!
//! ```text
//!  0     1          2            4
//! +-----+----------+------------+-------------------------------+
//! | ver | reserved | count (u16)| count x claim (24 bytes each) |
//! +-----+----------+------------+-------------------------------+
//! claim:
//!  0                4               8                  16               24
//! +----------------+---------------+------------------+----------------+
//! | start (IPv4)   | size (u32)    | owner uid (u64)  | version (u64)  |
//! +----------------+---------------+------------------+----------------+
//! ```

use std::net::Ipv4Addr;

use super::{be32, be64, need, Result, WireError};

mod field {
    use core::ops::Range;
    pub(super) const VERSION: usize = 0;
    pub(super) const RESERVED: usize = 1;
    pub(super) const COUNT: Range<usize> = 2..4;
    pub(super) const CLAIMS: usize = 4;

    pub(super) const START: usize = 0;
    pub(super) const SIZE: usize = 4;
    pub(super) const OWNER: usize = 8;
    pub(super) const CLAIM_VERSION: usize = 16;
}

/// Bytes before the first claim.
pub const HEADER_LEN: usize = field::CLAIMS;
/// Bytes of one claim.
pub const CLAIM_LEN: usize = 24;
/// Format version.
pub const VERSION: u8 = 1;
/// Most claims one message may carry.
pub const MAX_CLAIMS: usize = 4096;

/// A read/write view of a claims message.
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
    /// Checks the header and every announced claim are present.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let count = usize::from(self.count());
        if count > MAX_CLAIMS {
            return Err(WireError::TooLong {
                len: count,
                max: MAX_CLAIMS,
            });
        }
        if b.len() < HEADER_LEN + count * CLAIM_LEN {
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
    /// Number of claims.
    pub fn count(&self) -> u16 {
        super::be16(self.buffer.as_ref(), field::COUNT.start)
    }
    /// The `i`th claim, `None` past the end.
    pub fn claim(&self, i: usize) -> Option<ClaimRepr> {
        if i >= usize::from(self.count()) {
            return None;
        }
        let at = HEADER_LEN + i * CLAIM_LEN;
        let c = self.buffer.as_ref().get(at..at + CLAIM_LEN)?;
        Some(ClaimRepr {
            start: Ipv4Addr::from(be32(c, field::START)),
            size: be32(c, field::SIZE),
            owner: be64(c, field::OWNER),
            version: be64(c, field::CLAIM_VERSION),
        })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version and zeroes the reserved byte.
    pub fn set_version(&mut self, v: u8) {
        let b = self.buffer.as_mut();
        b[field::VERSION] = v;
        b[field::RESERVED] = 0;
    }
    /// Sets the claim count.
    pub fn set_count(&mut self, v: u16) {
        self.buffer.as_mut()[field::COUNT].copy_from_slice(&v.to_be_bytes());
    }
    /// Writes the `i`th claim (the buffer must hold it).
    pub fn set_claim(&mut self, i: usize, c: &ClaimRepr) {
        let at = HEADER_LEN + i * CLAIM_LEN;
        let b = &mut self.buffer.as_mut()[at..at + CLAIM_LEN];
        b[0..4].copy_from_slice(&c.start.octets());
        b[4..8].copy_from_slice(&c.size.to_be_bytes());
        b[8..16].copy_from_slice(&c.owner.to_be_bytes());
        b[16..24].copy_from_slice(&c.version.to_be_bytes());
    }
}

/// One claim: `owner` owns `size` addresses from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimRepr {
    /// First address of the range.
    pub start: Ipv4Addr,
    /// Number of addresses (at least 1).
    pub size: u32,
    /// The owning peer's uid.
    pub owner: u64,
    /// Claim version; the higher wins.
    pub version: u64,
}

impl ClaimRepr {
    fn validate(&self) -> Result<()> {
        if self.size == 0 {
            return Err(WireError::Malformed("ipam claim of zero addresses"));
        }
        if u64::from(u32::from(self.start)) + u64::from(self.size) > 1 << 32 {
            return Err(WireError::Malformed("ipam claim runs past 255.255.255.255"));
        }
        Ok(())
    }
}

/// A claims message in plain form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Repr {
    /// The claims, in sender order.
    pub claims: Vec<ClaimRepr>,
}

impl Repr {
    /// Reads and validates a claims message.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        packet.check_len()?;
        if packet.version() != VERSION {
            return Err(WireError::BadVersion(packet.version()));
        }
        let mut claims = Vec::with_capacity(usize::from(packet.count()));
        for i in 0..usize::from(packet.count()) {
            let c = packet.claim(i).ok_or(WireError::Truncated)?;
            c.validate()?;
            claims.push(c);
        }
        Ok(Repr { claims })
    }
    /// Bytes the message occupies.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.claims.len() * CLAIM_LEN
    }
    /// Writes the message.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(
        &self,
        packet: &mut Packet<&mut T>,
    ) -> Result<()> {
        if self.claims.len() > MAX_CLAIMS {
            return Err(WireError::TooLong {
                len: self.claims.len(),
                max: MAX_CLAIMS,
            });
        }
        for c in &self.claims {
            c.validate()?;
        }
        need(self.buffer_len(), packet.buffer.as_ref().len())?;
        packet.set_version(VERSION);
        packet.set_count(self.claims.len() as u16);
        for (i, c) in self.claims.iter().enumerate() {
            packet.set_claim(i, c);
        }
        Ok(())
    }
}
