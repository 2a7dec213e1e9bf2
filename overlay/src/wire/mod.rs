//! Wire formats of the overlay, as zero-copy views over byte buffers.
//!
//! Every format follows one shape: a `Packet<T: AsRef<[u8]>>` view whose
//! `new_checked` validates lengths once (so no getter can panic afterwards),
//! getters on `AsRef<[u8]>`, setters on `AsMut<[u8]>`, and a plain `Repr`
//! with `parse`, `buffer_len` and `emit`. Nothing here performs I/O and no
//! view allocates; the `Repr`s of list-carrying messages (gossip) own their
//! lists. The byte layouts are documented in `docs/overlay-protocol.md`.

pub mod auth;
pub mod control;
pub mod ethernet;
pub mod fast_report;
pub mod fragment;
pub mod fuzzing;
pub mod gossip;
pub mod handshake;
pub mod heartbeat;
pub mod icmp;
pub mod ipam;
pub mod ipv4;
pub mod macs;
pub mod sleeve;
pub mod vxlan;

use std::fmt::Write as _;

/// Why a buffer could not be read (or written) as a wire message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer ends before the message does.
    #[error("truncated message: the buffer ends before the message does")]
    Truncated,
    /// The magic bytes do not match: the peer is not an overlay router.
    #[error("bad magic: the peer does not speak the overlay protocol")]
    BadMagic,
    /// A version this implementation does not speak.
    #[error("unsupported version {0}")]
    BadVersion(u8),
    /// A length field exceeds the format's bound.
    #[error("length {len} exceeds the bound of {max} bytes")]
    TooLong {
        /// The length found (or asked for).
        len: usize,
        /// The bound it exceeds.
        max: usize,
    },
    /// The destination buffer is too small for the message being emitted.
    #[error("buffer too small: {needed} bytes needed, {available} available")]
    BufferTooSmall {
        /// Bytes the message needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// A field holds a value the format forbids.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, WireError>;

/// The largest short id: short ids are 12 bits wide because the vxlan VNI
/// carries `source | destination << 12`.
pub const MAX_SHORT_ID: u16 = 0x0fff;

/// Reads a big-endian u16 at `at`; the caller has checked the length.
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian u32 at `at`; the caller has checked the length.
#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads a big-endian u64 at `at`; the caller has checked the length.
#[inline]
pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Fails with [`WireError::BufferTooSmall`] unless `available >= needed`.
#[inline]
pub(crate) fn need(needed: usize, available: usize) -> Result<()> {
    if available < needed {
        Err(WireError::BufferTooSmall { needed, available })
    } else {
        Ok(())
    }
}

/// Renders bytes as a stable hexdump (16 bytes a line, offset first), the
/// text the snapshot tests keep so a reviewer sees every wire change.
pub fn hexdump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let _ = write!(out, "{:04x}:", i * 16);
        for (j, b) in chunk.iter().enumerate() {
            if j == 8 {
                out.push(' ');
            }
            let _ = write!(out, " {b:02x}");
        }
        for j in chunk.len()..16 {
            if j == 8 {
                out.push(' ');
            }
            out.push_str("   ");
        }
        out.push_str("  |");
        for b in chunk {
            out.push(if b.is_ascii_graphic() || *b == b' ' {
                char::from(*b)
            } else {
                '.'
            });
        }
        out.push_str("|\n");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hexdump_marks_offsets_and_ascii() {
        let text = hexdump(b"OVRL\x00\x01 abcdefghijklmnop");
        assert_eq!(
            text,
            "0000: 4f 56 52 4c 00 01 20 61  62 63 64 65 66 67 68 69  |OVRL.. abcdefghi|\n\
             0010: 6a 6b 6c 6d 6e 6f 70                              |jklmnop|\n"
        );
    }
}
