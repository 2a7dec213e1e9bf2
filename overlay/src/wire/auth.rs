//! The password proof message (control type
//! [`super::control::MessageType::AuthProof`]), sent by each side after the
//! Hellos when both have a password set (see `crate::crypto::handshake`).
//!
//! ```text
//!  0     1     2           4                                  36
//! +-----+-----+-----------+----------------------------------+
//! | ver |role | reserved  | proof: HMAC-SHA256 tag (32)      |
//! +-----+-----+-----------+----------------------------------+
//! ```

use super::{need, Result, WireError};

mod field {
    use core::ops::Range;
    pub(super) const VERSION: usize = 0;
    pub(super) const ROLE: usize = 1;
    pub(super) const RESERVED: Range<usize> = 2..4;
    pub(super) const PROOF: Range<usize> = 4..36;
}

/// Bytes of a proof message.
pub const MESSAGE_LEN: usize = field::PROOF.end;
/// The proof format version.
pub const VERSION: u8 = 1;

/// Which end of the control connection a party is. The side that dialled
/// the TCP connection is the initiator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The side that opened the TCP connection.
    Initiator,
    /// The side that accepted it.
    Responder,
}

impl Role {
    /// The other side's role.
    pub fn peer(self) -> Role {
        match self {
            Role::Initiator => Role::Responder,
            Role::Responder => Role::Initiator,
        }
    }
}

/// A read/write view of a proof message.
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
    /// Checks the message is complete.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < MESSAGE_LEN {
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
    /// Raw role byte (0 initiator, 1 responder).
    pub fn role(&self) -> u8 {
        self.buffer.as_ref()[field::ROLE]
    }
    /// The proof tag.
    pub fn proof(&self) -> [u8; 32] {
        let mut p = [0u8; 32];
        p.copy_from_slice(&self.buffer.as_ref()[field::PROOF]);
        p
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version.
    pub fn set_version(&mut self, v: u8) {
        self.buffer.as_mut()[field::VERSION] = v;
    }
    /// Sets the raw role byte.
    pub fn set_role(&mut self, v: u8) {
        self.buffer.as_mut()[field::ROLE] = v;
    }
    /// Zeroes the reserved bytes.
    pub fn clear_reserved(&mut self) {
        self.buffer.as_mut()[field::RESERVED].fill(0);
    }
    /// Sets the proof tag.
    pub fn set_proof(&mut self, v: &[u8; 32]) {
        self.buffer.as_mut()[field::PROOF].copy_from_slice(v);
    }
}

/// A proof message in plain form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// The sender's role.
    pub role: Role,
    /// HMAC-SHA256 over the handshake transcript.
    pub proof: [u8; 32],
}

impl Repr {
    /// Reads and validates a proof message.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        packet.check_len()?;
        if packet.version() != VERSION {
            return Err(WireError::BadVersion(packet.version()));
        }
        let role = match packet.role() {
            0 => Role::Initiator,
            1 => Role::Responder,
            _ => return Err(WireError::Malformed("auth proof role is neither 0 nor 1")),
        };
        Ok(Repr {
            role,
            proof: packet.proof(),
        })
    }
    /// Bytes the message occupies.
    pub fn buffer_len(&self) -> usize {
        MESSAGE_LEN
    }
    /// Writes the message.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(
        &self,
        packet: &mut Packet<&mut T>,
    ) -> Result<()> {
        need(MESSAGE_LEN, packet.buffer.as_ref().len())?;
        packet.set_version(VERSION);
        packet.set_role(match self.role {
            Role::Initiator => 0,
            Role::Responder => 1,
        });
        packet.clear_reserved();
        packet.set_proof(&self.proof);
        Ok(())
    }
}
