//! What a router sees of a peer's fast-path heartbeats, reported to that peer over the control
//! connection (control type [`super::control::MessageType::FastPathReport`]) when it changes.
//!
//! Heartbeats cross the fast path one way each; the receiver, not the sender, knows whether
//! they arrive. Instead of acknowledging every heartbeat (two control frames per peer per
//! heartbeat interval, which at 100 routers is most of what an idle mesh does), the receiver
//! tells the sender only when its view changes: "your full-size heartbeats arrive", "only
//! small ones arrive", "nothing arrives". The report also echoes the timestamp of the
//! heartbeat that made it, so the sender learns a round trip.
//!
//! The busy flag paces the connection's heartbeats ([`crate::datapath::pace`]): set while the
//! reporting side wants them brisk (its kernel carried frames over the connection lately, or
//! the connection is new or unsettled). A report is also sent when only that flag changes.
//!
//! ```text
//!  0        1          4                         12
//! +--------+----------+-------------------------+
//! | flags  | reserved | echoed timestamp ns u64 |
//! +--------+----------+-------------------------+
//! flags: bit 0 small heartbeats arrive, bit 1 full-size heartbeats arrive, bit 2 busy;
//!        others zero
//! ```

use super::{need, Result, WireError};

mod field {
    pub(super) const FLAGS: usize = 0;
    pub(super) const TIMESTAMP: core::ops::Range<usize> = 4..12;
}

/// Bytes of a report.
pub const LEN: usize = field::TIMESTAMP.end;

const SMALL: u8 = 1;
const FULL: u8 = 2;
const BUSY: u8 = 4;

/// A read/write view of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short one.
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }
    /// Wraps a buffer of at least [`LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < LEN {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }
    /// The flag byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    /// The echoed timestamp.
    pub fn timestamp_ns(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buffer.as_ref()[field::TIMESTAMP]);
        u64::from_be_bytes(b)
    }
}

/// A report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Repr {
    /// The sender's small heartbeats arrive (any heartbeat does).
    pub small: bool,
    /// Its full-size heartbeats (padded to the overlay MTU) arrive.
    pub full: bool,
    /// Timestamp of the newest heartbeat seen, as its sender wrote it (0: none).
    pub timestamp_ns: u64,
    /// The reporting side wants brisk heartbeats on this connection (both sides then send
    /// them briskly); clear: it saw the connection idle and healthy.
    pub busy: bool,
}

impl Repr {
    /// Reads a checked report; unknown flag bits are refused.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self> {
        let f = p.flags();
        if f & !(SMALL | FULL | BUSY) != 0 {
            return Err(WireError::Malformed("unknown fast-path report flags"));
        }
        Ok(Repr {
            small: f & SMALL != 0,
            full: f & FULL != 0,
            timestamp_ns: p.timestamp_ns(),
            busy: f & BUSY != 0,
        })
    }
    /// Bytes [`Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        LEN
    }
    /// Writes the report.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) -> Result<()> {
        let b = p.buffer.as_mut();
        need(LEN, b.len())?;
        b[..LEN].fill(0);
        b[field::FLAGS] = (u8::from(self.small) * SMALL)
            | (u8::from(self.full) * FULL)
            | (u8::from(self.busy) * BUSY);
        b[field::TIMESTAMP].copy_from_slice(&self.timestamp_ns.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_bad_input() {
        let r = Repr {
            small: true,
            full: false,
            timestamp_ns: 0x0102_0304_0506_0708,
            busy: true,
        };
        let mut b = vec![0u8; r.buffer_len()];
        assert!(r.emit(&mut Packet::new_unchecked(&mut b[..])).is_ok());
        assert_eq!(b, [5, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let p = Packet::new_checked(&b[..]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Repr::parse(&p), Ok(r));
        assert_eq!(
            Packet::new_checked(&b[..11]).err(),
            Some(WireError::Truncated)
        );
        b[0] = 8;
        let p = Packet::new_checked(&b[..]).unwrap_or_else(|e| panic!("{e}"));
        assert!(Repr::parse(&p).is_err());
    }
}
