//! The VXLAN header (RFC 7348) on UDP 6784, and the overlay's use of the
//! VNI: it names both peers, `source short id | destination short id << 12`,
//! so a receiving router knows who sent a frame without any other lookup.
//!
//! ```text
//!  0       1                 4                       7          8
//! +-------+-----------------+-----------------------+----------+
//! | flags | reserved (3)    | VNI (24 bits)         | reserved |
//! +-------+-----------------+-----------------------+----------+
//! ```
//! flags must have the I bit (0x08) set.

use super::{need, Result, WireError, MAX_SHORT_ID};

mod field {
    use core::ops::Range;
    pub(super) const FLAGS: usize = 0;
    pub(super) const RESERVED1: Range<usize> = 1..4;
    pub(super) const VNI: Range<usize> = 4..7;
    pub(super) const RESERVED2: usize = 7;
    pub(super) const PAYLOAD: usize = 8;
}

/// Bytes of the header.
pub const HEADER_LEN: usize = field::PAYLOAD;
/// The "VNI is valid" flag.
pub const FLAG_VNI: u8 = 0x08;
/// The UDP port of the overlay's vxlan traffic.
pub const PORT: u16 = 6784;
/// Bytes vxlan adds on an IPv4 underlay: IPv4 20 + UDP 8 + VXLAN 8 + inner
/// Ethernet 14. The overlay MTU for vxlan is the underlay MTU minus this.
pub const OVERHEAD: usize = 50;

/// The overlay MTU over an IPv4 underlay of `underlay_mtu` (1500 gives
/// 1450; 9000 gives 8950).
pub const fn overlay_mtu(underlay_mtu: usize) -> usize {
    underlay_mtu.saturating_sub(OVERHEAD)
}

/// The VNI naming a frame from `src` to `dst` (short ids of 12 bits).
pub fn vni(src: u16, dst: u16) -> Result<u32> {
    if src > MAX_SHORT_ID || dst > MAX_SHORT_ID {
        return Err(WireError::Malformed("vxlan short id exceeds 12 bits"));
    }
    Ok(u32::from(src) | u32::from(dst) << 12)
}

/// The (source, destination) short ids a VNI names.
pub fn short_ids(vni: u32) -> (u16, u16) {
    ((vni & 0x0fff) as u16, ((vni >> 12) & 0x0fff) as u16)
}

/// A read/write view of a VXLAN packet.
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
    /// Checks the header is present.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }
    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// Flag bits.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    /// The 24-bit VNI.
    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }
    /// The inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the flags and zeroes the reserved bytes.
    pub fn set_flags(&mut self, v: u8) {
        let b = self.buffer.as_mut();
        b[field::FLAGS] = v;
        b[field::RESERVED1].fill(0);
        b[field::RESERVED2] = 0;
    }
    /// Sets the VNI (its low 24 bits).
    pub fn set_vni(&mut self, v: u32) {
        let bytes = v.to_be_bytes();
        self.buffer.as_mut()[field::VNI].copy_from_slice(&bytes[1..]);
    }
    /// The inner frame, for writing.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// A VXLAN header in plain form, with the peers its VNI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Sender's short id.
    pub src_short_id: u16,
    /// Receiver's short id.
    pub dst_short_id: u16,
}

impl Repr {
    /// Reads the header.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        packet.check_len()?;
        if packet.flags() & FLAG_VNI == 0 {
            return Err(WireError::Malformed("vxlan header without the VNI flag"));
        }
        let (src_short_id, dst_short_id) = short_ids(packet.vni());
        Ok(Repr {
            src_short_id,
            dst_short_id,
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
        let v = vni(self.src_short_id, self.dst_short_id)?;
        need(HEADER_LEN, packet.buffer.as_ref().len())?;
        packet.set_flags(FLAG_VNI);
        packet.set_vni(v);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn vni_packs_both_short_ids() {
        assert_eq!(vni(0x001, 0x002).unwrap(), 0x002001);
        assert_eq!(vni(0xfff, 0xfff).unwrap(), 0xff_ffff);
        assert_eq!(short_ids(0x00a_bcd), (0xbcd, 0x00a));
        assert!(vni(0x1000, 0).is_err());
    }

    #[test]
    fn parse_and_emit_fixed_bytes() {
        let bytes = [0x08, 0, 0, 0, 0x00, 0x20, 0x01, 0, 0xaa];
        let p = Packet::new_checked(&bytes[..]).unwrap();
        let r = Repr::parse(&p).unwrap();
        assert_eq!((r.src_short_id, r.dst_short_id), (1, 2));
        assert_eq!(p.payload(), &[0xaa]);
        let mut out = [0xffu8; 8];
        r.emit(&mut Packet::new_unchecked(&mut out[..])).unwrap();
        assert_eq!(out[..], bytes[..8]);
    }

    #[test]
    fn overlay_mtu_follows_the_underlay() {
        assert_eq!(overlay_mtu(1500), 1450);
        assert_eq!(overlay_mtu(9000), 8950);
        assert_eq!(overlay_mtu(10), 0);
        assert_eq!(crate::wire::sleeve::overlay_mtu(1500, false), 1440);
        assert_eq!(crate::wire::sleeve::overlay_mtu(1500, true), 1424);
        assert_eq!(crate::wire::sleeve::overlay_mtu(9000, true), 8924);
    }

    #[test]
    fn missing_flag_is_malformed() {
        let bytes = [0u8; 8];
        assert!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).is_err());
    }
}
