//! Framing of the TCP control connection (port 6783).
//!
//! ```text
//!  0               4       5
//! +---------------+-------+---------------------------+
//! | length (u32)  | type  | payload (length - 1 bytes)|
//! +---------------+-------+---------------------------+
//! ```
//! `length` counts the type byte and the payload, never the length field
//! itself; it is at least 1 and at most [`MAX_FRAME_LEN`], so a reader never
//! buffers more than that for one message.

use super::{be32, need, Result, WireError};

mod field {
    use core::ops::Range;
    pub(super) const LENGTH: Range<usize> = 0..4;
    pub(super) const TYPE: usize = 4;
    pub(super) const PAYLOAD: usize = 5;
}

/// Bytes before the payload: length and type.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// Bound on the length field (type byte + payload): 1 MiB.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// What a control frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// [`super::handshake`]: the first message on a connection.
    Hello,
    /// [`super::auth`]: proof of knowledge of the password.
    AuthProof,
    /// [`super::gossip`]: topology update.
    Topology,
    /// [`super::ipam`]: address-range ownership claims.
    IpamClaims,
    /// [`super::heartbeat`]: acknowledgement of a datapath heartbeat.
    HeartbeatAck,
    /// Orderly close; the payload is an optional UTF-8 reason.
    Close,
    /// [`super::macs`]: the MACs of the sender's local containers.
    LocalMacs,
    /// [`super::fast_report`]: which of the peer's fast-path heartbeats arrive, sent when that
    /// changes (type 9; type 8, an acknowledgement of every heartbeat in earlier versions, is
    /// skipped as unknown).
    FastPathReport,
    /// A type this version does not know; a reader skips it.
    Unknown(u8),
}

impl From<u8> for MessageType {
    fn from(v: u8) -> Self {
        match v {
            1 => Self::Hello,
            2 => Self::AuthProof,
            3 => Self::Topology,
            4 => Self::IpamClaims,
            5 => Self::HeartbeatAck,
            6 => Self::Close,
            7 => Self::LocalMacs,
            9 => Self::FastPathReport,
            other => Self::Unknown(other),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(t: MessageType) -> u8 {
        match t {
            MessageType::Hello => 1,
            MessageType::AuthProof => 2,
            MessageType::Topology => 3,
            MessageType::IpamClaims => 4,
            MessageType::HeartbeatAck => 5,
            MessageType::Close => 6,
            MessageType::LocalMacs => 7,
            MessageType::FastPathReport => 9,
            MessageType::Unknown(v) => v,
        }
    }
}

/// How many bytes the frame at the start of `stream` occupies, once its
/// length field has arrived: `Ok(None)` while fewer than 4 bytes are
/// buffered. A stream reader calls this to know when a whole frame is in.
pub fn frame_len(stream: &[u8]) -> Result<Option<usize>> {
    if stream.len() < field::LENGTH.end {
        return Ok(None);
    }
    let len = be32(stream, field::LENGTH.start) as usize;
    if len == 0 {
        return Err(WireError::Malformed("control frame length is zero"));
    }
    if len > MAX_FRAME_LEN {
        return Err(WireError::TooLong {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(Some(field::LENGTH.end + len))
}

/// A complete frame split off a stream, and the bytes after it.
pub type Split<'a> = (Packet<&'a [u8]>, &'a [u8]);

/// Splits the first complete frame off a stream buffer: `Ok(None)` while
/// it is incomplete, else the checked frame and the bytes after it. A
/// reader appends what the socket gave to its buffer and calls this until
/// it returns `None`.
pub fn next_frame(stream: &[u8]) -> Result<Option<Split<'_>>> {
    match frame_len(stream)? {
        Some(total) if stream.len() >= total => {
            let (frame, rest) = stream.split_at(total);
            Ok(Some((Packet::new_checked(frame)?, rest)))
        }
        _ => Ok(None),
    }
}

/// A read/write view of one control frame.
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

    /// Checks that the header and the whole announced payload are present
    /// and that the length field is within bounds. Bytes after the frame are
    /// allowed (the next frame of the stream).
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        match frame_len(b)? {
            None => Err(WireError::Truncated),
            Some(total) if b.len() < total => Err(WireError::Truncated),
            Some(_) => Ok(()),
        }
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The length field (type byte + payload).
    pub fn length(&self) -> u32 {
        be32(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// The message type.
    pub fn msg_type(&self) -> MessageType {
        self.buffer.as_ref()[field::TYPE].into()
    }

    /// Bytes of the whole frame, header included.
    pub fn total_len(&self) -> usize {
        field::LENGTH.end + self.length() as usize
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload (exactly `length - 1` bytes).
    pub fn payload(&self) -> &'a [u8] {
        let end = self.total_len();
        &self.buffer.as_ref()[field::PAYLOAD..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the length field.
    pub fn set_length(&mut self, v: u32) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the message type.
    pub fn set_msg_type(&mut self, t: MessageType) {
        self.buffer.as_mut()[field::TYPE] = t.into();
    }

    /// The payload, for writing (as long as the length field says).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }
}

/// A control frame header in plain form; the payload travels separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// The message type.
    pub msg_type: MessageType,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl Repr {
    /// Reads the header of a checked frame.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr {
            msg_type: packet.msg_type(),
            payload_len: packet.length() as usize - 1,
        })
    }

    /// Bytes the whole frame occupies.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header; the caller then fills `payload_mut()`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(
        &self,
        packet: &mut Packet<&mut T>,
    ) -> Result<()> {
        let len = self.payload_len + 1;
        if len > MAX_FRAME_LEN {
            return Err(WireError::TooLong {
                len,
                max: MAX_FRAME_LEN,
            });
        }
        need(self.buffer_len(), packet.buffer.as_ref().len())?;
        packet.set_length(len as u32);
        packet.set_msg_type(self.msg_type);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    static FRAME: [u8; 8] = [0x00, 0x00, 0x00, 0x04, 0x06, b'b', b'y', b'e'];

    #[test]
    fn parse_fixed_bytes() {
        let p = Packet::new_checked(&FRAME[..]).unwrap();
        assert_eq!(p.msg_type(), MessageType::Close);
        assert_eq!(p.payload(), b"bye");
        let r = Repr::parse(&p).unwrap();
        assert_eq!(
            r,
            Repr {
                msg_type: MessageType::Close,
                payload_len: 3
            }
        );
    }

    #[test]
    fn emit_matches_fixed_bytes() {
        let r = Repr {
            msg_type: MessageType::Close,
            payload_len: 3,
        };
        let mut buf = vec![0u8; r.buffer_len()];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        r.emit(&mut p).unwrap();
        p.payload_mut().copy_from_slice(b"bye");
        assert_eq!(&buf[..], &FRAME[..]);
    }

    #[test]
    fn next_frame_splits_a_stream() {
        let mut stream = FRAME.to_vec();
        stream.extend_from_slice(&FRAME[..6]);
        let (first, rest) = next_frame(&stream).unwrap().unwrap();
        assert_eq!(first.payload(), b"bye");
        assert_eq!(rest, &FRAME[..6]);
        assert!(
            next_frame(rest).unwrap().is_none(),
            "second frame incomplete"
        );
        assert!(next_frame(&[]).unwrap().is_none());
        assert!(next_frame(&[0, 0, 0, 0]).is_err());
    }

    #[test]
    fn frame_len_waits_for_length_then_bounds_it() {
        assert_eq!(frame_len(&[0, 0]), Ok(None));
        assert_eq!(frame_len(&FRAME[..4]), Ok(Some(8)));
        assert_eq!(
            frame_len(&[0x00, 0x20, 0x00, 0x00]),
            Err(WireError::TooLong {
                len: 0x20_0000,
                max: MAX_FRAME_LEN
            })
        );
    }
}
