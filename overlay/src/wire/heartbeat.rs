//! Datapath heartbeats and their acknowledgements.
//!
//! A heartbeat travels on the datapath being tested (inside a sleeve
//! datagram flagged [`super::sleeve::FLAG_HEARTBEAT`], or inside vxlan as an
//! Ethernet frame of type [`HEARTBEAT_ETHERTYPE`]) with DF set, padded so
//! the whole packet reaches the overlay MTU: if it arrives, frames of that
//! size cross. The receiver answers over the TCP control connection
//! (control type [`super::control::MessageType::HeartbeatAck`]) with the
//! same layout, kind = ack, echoing connection id, sequence and timestamp
//! and reporting in `padding_len` the padding it received; an ack carries
//! no padding bytes itself.
//!
//! ```text
//!  0      1     2              4                  12               20                 28
//! +------+-----+--------------+------------------+----------------+------------------+---------+
//! | kind | ver | padding u16  | connection id u64| sequence u64   | timestamp ns u64 | padding |
//! +------+-----+--------------+------------------+----------------+------------------+---------+
//! ```
//! kind 1 = heartbeat, 2 = ack. Padding bytes are zero when sent and
//! ignored when received.

use super::{be16, be64, need, Result, WireError};

mod field {
    use core::ops::Range;
    pub(super) const KIND: usize = 0;
    pub(super) const VERSION: usize = 1;
    pub(super) const PADDING_LEN: Range<usize> = 2..4;
    pub(super) const CONNECTION_ID: Range<usize> = 4..12;
    pub(super) const SEQUENCE: Range<usize> = 12..20;
    pub(super) const TIMESTAMP: Range<usize> = 20..28;
    pub(super) const PADDING: usize = 28;
}

/// Bytes before the padding.
pub const HEADER_LEN: usize = field::PADDING;
/// Format version.
pub const VERSION: u8 = 1;
/// Ethertype of a heartbeat carried in vxlan: IEEE 802 "local experimental
/// ethertype 1", which no container traffic should use.
pub const HEARTBEAT_ETHERTYPE: u16 = 0x88b5;

const KIND_HEARTBEAT: u8 = 1;
const KIND_ACK: u8 = 2;

/// Heartbeat or acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Sent on the datapath, padded.
    Heartbeat,
    /// Sent back over TCP.
    Ack,
}

/// A read/write view of a heartbeat.
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
    /// Checks the header and the announced padding are present.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN || b.len() < self.total_len() {
            return Err(WireError::Truncated);
        }
        Ok(())
    }
    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// Raw kind byte.
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }
    /// Format version.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }
    /// Padding length.
    pub fn padding_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PADDING_LEN.start)
    }
    /// Id of the peer connection the heartbeat tests.
    pub fn connection_id(&self) -> u64 {
        be64(self.buffer.as_ref(), field::CONNECTION_ID.start)
    }
    /// Sequence number.
    pub fn sequence(&self) -> u64 {
        be64(self.buffer.as_ref(), field::SEQUENCE.start)
    }
    /// Sender's monotonic timestamp, nanoseconds (echoed in the ack).
    pub fn timestamp_ns(&self) -> u64 {
        be64(self.buffer.as_ref(), field::TIMESTAMP.start)
    }
    /// Bytes of the whole message: an ack carries no padding, whatever
    /// its `padding_len` reports.
    pub fn total_len(&self) -> usize {
        if self.kind() == KIND_ACK {
            HEADER_LEN
        } else {
            HEADER_LEN + usize::from(self.padding_len())
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the raw kind byte.
    pub fn set_kind(&mut self, v: u8) {
        self.buffer.as_mut()[field::KIND] = v;
    }
    /// Sets the version.
    pub fn set_version(&mut self, v: u8) {
        self.buffer.as_mut()[field::VERSION] = v;
    }
    /// Sets the padding length.
    pub fn set_padding_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::PADDING_LEN].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the connection id.
    pub fn set_connection_id(&mut self, v: u64) {
        self.buffer.as_mut()[field::CONNECTION_ID].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the sequence number.
    pub fn set_sequence(&mut self, v: u64) {
        self.buffer.as_mut()[field::SEQUENCE].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the timestamp.
    pub fn set_timestamp_ns(&mut self, v: u64) {
        self.buffer.as_mut()[field::TIMESTAMP].copy_from_slice(&v.to_be_bytes());
    }
    /// Zeroes the padding (as long as the padding field says).
    pub fn clear_padding(&mut self) {
        let end = self.total_len();
        self.buffer.as_mut()[field::PADDING..end].fill(0);
    }
}

/// A heartbeat or ack in plain form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Heartbeat or ack.
    pub kind: Kind,
    /// Which peer connection (and datapath) is tested.
    pub connection_id: u64,
    /// Sequence number, per connection.
    pub sequence: u64,
    /// Sender's timestamp in nanoseconds, echoed by the ack.
    pub timestamp_ns: u64,
    /// Padding bytes after the header.
    pub padding_len: u16,
}

impl Repr {
    /// The padding that makes a heartbeat exactly `target_len` bytes once
    /// `overhead` bytes of encapsulation (Ethernet, or the sleeve frame
    /// prefix) precede it; zero when the header alone is already larger.
    pub fn padding_for(target_len: usize, overhead: usize) -> u16 {
        let pad = target_len.saturating_sub(overhead + HEADER_LEN);
        u16::try_from(pad).unwrap_or(u16::MAX)
    }

    /// Reads and validates a heartbeat.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        packet.check_len()?;
        if packet.version() != VERSION {
            return Err(WireError::BadVersion(packet.version()));
        }
        let kind = match packet.kind() {
            KIND_HEARTBEAT => Kind::Heartbeat,
            KIND_ACK => Kind::Ack,
            _ => return Err(WireError::Malformed("heartbeat kind is neither 1 nor 2")),
        };
        Ok(Repr {
            kind,
            connection_id: packet.connection_id(),
            sequence: packet.sequence(),
            timestamp_ns: packet.timestamp_ns(),
            padding_len: packet.padding_len(),
        })
    }
    /// Bytes the message occupies, padding included (none for an ack).
    pub fn buffer_len(&self) -> usize {
        match self.kind {
            Kind::Heartbeat => HEADER_LEN + usize::from(self.padding_len),
            Kind::Ack => HEADER_LEN,
        }
    }
    /// Writes the message, zeroing the padding.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(
        &self,
        packet: &mut Packet<&mut T>,
    ) -> Result<()> {
        need(self.buffer_len(), packet.buffer.as_ref().len())?;
        packet.set_kind(match self.kind {
            Kind::Heartbeat => KIND_HEARTBEAT,
            Kind::Ack => KIND_ACK,
        });
        packet.set_version(VERSION);
        packet.set_padding_len(self.padding_len);
        packet.set_connection_id(self.connection_id);
        packet.set_sequence(self.sequence);
        packet.set_timestamp_ns(self.timestamp_ns);
        packet.clear_padding();
        Ok(())
    }

    /// The ack answering this heartbeat, reporting `received_padding`.
    pub fn ack(&self, received_padding: u16) -> Repr {
        Repr {
            kind: Kind::Ack,
            padding_len: received_padding,
            ..*self
        }
    }
}
