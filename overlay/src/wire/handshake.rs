//! The Hello message: the first message each side sends on a control
//! connection (control type [`super::control::MessageType::Hello`]).
//!
//! ```text
//!  0       4     5     6     7     8                16       18
//! +-------+-----+-----+-----+-----+----------------+--------+
//! | magic | vmin| vmax|flags|feat | peer uid (u64) |shortid |
//! +-------+-----+-----+-----+-----+----------------+--------+
//!  18                50                82   83
//! +-----------------+-----------------+----+----------------+
//! | nonce (32)      | dh public (32)  |nlen| name (nlen)    |
//! +-----------------+-----------------+----+----------------+
//! ```
//! Both sides send a Hello at once; the connection uses the highest version
//! in both ranges ([`negotiate`]). Unknown flag and feature bits are ignored
//! on receipt and sent as zero.

use super::{be16, be64, need, Result, WireError, MAX_SHORT_ID};

mod field {
    use core::ops::Range;
    pub(super) const MAGIC: Range<usize> = 0..4;
    pub(super) const VERSION_MIN: usize = 4;
    pub(super) const VERSION_MAX: usize = 5;
    pub(super) const FLAGS: usize = 6;
    pub(super) const FEATURES: usize = 7;
    pub(super) const UID: Range<usize> = 8..16;
    pub(super) const SHORT_ID: Range<usize> = 16..18;
    pub(super) const NONCE: Range<usize> = 18..50;
    pub(super) const DH_PUBLIC: Range<usize> = 50..82;
    pub(super) const NAME_LEN: usize = 82;
    pub(super) const NAME: usize = 83;
}

/// The four bytes every Hello starts with.
pub const MAGIC: [u8; 4] = *b"OVRL";
/// Length of the fixed part, before the name.
pub const HEADER_LEN: usize = field::NAME;
/// Lowest protocol version this implementation speaks.
pub const PROTOCOL_VERSION_MIN: u8 = 1;
/// Highest protocol version this implementation speaks.
pub const PROTOCOL_VERSION_MAX: u8 = 1;
/// Longest peer name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = u8::MAX as usize;

/// Flag bit: the sender has a password set and will send an auth proof.
pub const FLAG_PASSWORD: u8 = 0x01;

/// Datapath features a router offers, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Features(pub u8);

impl Features {
    /// The Open vSwitch kernel datapath (vxlan on UDP 6784 with peers in the VNI).
    pub const FAST_DATAPATH: Features = Features(0x01);
    /// A plain kernel vxlan device with per-peer FDB entries.
    pub const VXLAN: Features = Features(0x02);
    /// Userspace encapsulation on UDP 6783.
    pub const SLEEVE: Features = Features(0x04);
    /// Every feature this version knows.
    pub const ALL: Features = Features(0x07);

    /// Whether every bit of `other` is set here.
    pub fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }

    /// Features both sides offer (unknown bits dropped).
    pub fn intersect(self, other: Features) -> Features {
        Features(self.0 & other.0 & Self::ALL.0)
    }
}

/// Picks the protocol version for a connection: the highest one in both
/// ranges, or [`WireError::BadVersion`] carrying the peer's maximum.
pub fn negotiate(local: (u8, u8), peer: (u8, u8)) -> Result<u8> {
    let lo = local.0.max(peer.0);
    let hi = local.1.min(peer.1);
    if lo <= hi {
        Ok(hi)
    } else {
        Err(WireError::BadVersion(peer.1))
    }
}

/// A read/write view of a Hello.
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

    /// Checks the fixed part and the announced name are present.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN || b.len() < HEADER_LEN + usize::from(b[field::NAME_LEN]) {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The magic bytes.
    pub fn magic(&self) -> [u8; 4] {
        let mut m = [0u8; 4];
        m.copy_from_slice(&self.buffer.as_ref()[field::MAGIC]);
        m
    }
    /// Lowest version the sender speaks.
    pub fn version_min(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION_MIN]
    }
    /// Highest version the sender speaks.
    pub fn version_max(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION_MAX]
    }
    /// Flag bits ([`FLAG_PASSWORD`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    /// Offered datapath features.
    pub fn features(&self) -> Features {
        Features(self.buffer.as_ref()[field::FEATURES])
    }
    /// The sender's unique id (new on every router start).
    pub fn peer_uid(&self) -> u64 {
        be64(self.buffer.as_ref(), field::UID.start)
    }
    /// The sender's short id candidate (12 bits used).
    pub fn short_id(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SHORT_ID.start)
    }
    /// The sender's fresh random nonce.
    pub fn nonce(&self) -> [u8; 32] {
        let mut n = [0u8; 32];
        n.copy_from_slice(&self.buffer.as_ref()[field::NONCE]);
        n
    }
    /// The sender's ephemeral X25519 public key.
    pub fn dh_public(&self) -> [u8; 32] {
        let mut n = [0u8; 32];
        n.copy_from_slice(&self.buffer.as_ref()[field::DH_PUBLIC]);
        n
    }
    /// Length of the peer name.
    pub fn name_len(&self) -> u8 {
        self.buffer.as_ref()[field::NAME_LEN]
    }
    /// Bytes of the whole message.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.name_len())
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The peer name bytes (UTF-8 once parsed).
    pub fn name(&self) -> &'a [u8] {
        let end = self.total_len();
        &self.buffer.as_ref()[field::NAME..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the magic bytes.
    pub fn set_magic(&mut self, v: [u8; 4]) {
        self.buffer.as_mut()[field::MAGIC].copy_from_slice(&v);
    }
    /// Sets the lowest version.
    pub fn set_version_min(&mut self, v: u8) {
        self.buffer.as_mut()[field::VERSION_MIN] = v;
    }
    /// Sets the highest version.
    pub fn set_version_max(&mut self, v: u8) {
        self.buffer.as_mut()[field::VERSION_MAX] = v;
    }
    /// Sets the flag bits.
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }
    /// Sets the offered features.
    pub fn set_features(&mut self, v: Features) {
        self.buffer.as_mut()[field::FEATURES] = v.0;
    }
    /// Sets the peer uid.
    pub fn set_peer_uid(&mut self, v: u64) {
        self.buffer.as_mut()[field::UID].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the short id candidate.
    pub fn set_short_id(&mut self, v: u16) {
        self.buffer.as_mut()[field::SHORT_ID].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the nonce.
    pub fn set_nonce(&mut self, v: &[u8; 32]) {
        self.buffer.as_mut()[field::NONCE].copy_from_slice(v);
    }
    /// Sets the ephemeral public key.
    pub fn set_dh_public(&mut self, v: &[u8; 32]) {
        self.buffer.as_mut()[field::DH_PUBLIC].copy_from_slice(v);
    }
    /// Sets the name length and the name (`name.len()` must fit in a u8 and
    /// in the buffer).
    pub fn set_name(&mut self, name: &[u8]) {
        let b = self.buffer.as_mut();
        b[field::NAME_LEN] = name.len() as u8;
        b[field::NAME..field::NAME + name.len()].copy_from_slice(name);
    }
}

/// A Hello in plain form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr {
    /// Lowest protocol version the sender speaks.
    pub version_min: u8,
    /// Highest protocol version the sender speaks.
    pub version_max: u8,
    /// Whether the sender has a password set.
    pub password: bool,
    /// Offered datapath features.
    pub features: Features,
    /// The sender's unique id.
    pub peer_uid: u64,
    /// The sender's short id candidate (at most [`MAX_SHORT_ID`]).
    pub short_id: u16,
    /// The sender's fresh nonce.
    pub nonce: [u8; 32],
    /// The sender's ephemeral X25519 public key.
    pub dh_public: [u8; 32],
    /// The sender's peer name (1 to 255 bytes of UTF-8).
    pub name: String,
}

impl Repr {
    /// Reads and validates a Hello.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        packet.check_len()?;
        if packet.magic() != MAGIC {
            return Err(WireError::BadMagic);
        }
        if packet.version_min() == 0 || packet.version_min() > packet.version_max() {
            return Err(WireError::Malformed("hello version range is empty"));
        }
        if packet.short_id() > MAX_SHORT_ID {
            return Err(WireError::Malformed("hello short id exceeds 12 bits"));
        }
        if packet.name_len() == 0 {
            return Err(WireError::Malformed("hello peer name is empty"));
        }
        let name = std::str::from_utf8(packet.name())
            .map_err(|_| WireError::Malformed("hello peer name is not UTF-8"))?;
        Ok(Repr {
            version_min: packet.version_min(),
            version_max: packet.version_max(),
            password: packet.flags() & FLAG_PASSWORD != 0,
            // Unknown bits are ignored on receipt.
            features: Features(packet.features().0 & Features::ALL.0),
            peer_uid: packet.peer_uid(),
            short_id: packet.short_id(),
            nonce: packet.nonce(),
            dh_public: packet.dh_public(),
            name: name.to_owned(),
        })
    }

    /// Bytes the message occupies.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.name.len()
    }

    /// Writes the message.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(
        &self,
        packet: &mut Packet<&mut T>,
    ) -> Result<()> {
        if self.name.is_empty() {
            return Err(WireError::Malformed("hello peer name is empty"));
        }
        if self.name.len() > MAX_NAME_LEN {
            return Err(WireError::TooLong {
                len: self.name.len(),
                max: MAX_NAME_LEN,
            });
        }
        if self.short_id > MAX_SHORT_ID {
            return Err(WireError::Malformed("hello short id exceeds 12 bits"));
        }
        if self.version_min == 0 || self.version_min > self.version_max {
            return Err(WireError::Malformed("hello version range is empty"));
        }
        need(self.buffer_len(), packet.buffer.as_ref().len())?;
        packet.set_magic(MAGIC);
        packet.set_version_min(self.version_min);
        packet.set_version_max(self.version_max);
        packet.set_flags(if self.password { FLAG_PASSWORD } else { 0 });
        packet.set_features(Features(self.features.0 & Features::ALL.0));
        packet.set_peer_uid(self.peer_uid);
        packet.set_short_id(self.short_id);
        packet.set_nonce(&self.nonce);
        packet.set_dh_public(&self.dh_public);
        packet.set_name(self.name.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn negotiate_picks_highest_common() {
        assert_eq!(negotiate((1, 3), (2, 5)), Ok(3));
        assert_eq!(negotiate((1, 1), (1, 1)), Ok(1));
        assert_eq!(negotiate((1, 1), (2, 4)), Err(WireError::BadVersion(4)));
    }

    #[test]
    fn features_intersect_drops_unknown_bits() {
        let a = Features(0xff);
        let b = Features::VXLAN;
        assert_eq!(a.intersect(b), Features::VXLAN);
        assert!(Features::ALL.contains(Features::SLEEVE));
        assert!(!Features::VXLAN.contains(Features::SLEEVE));
    }

    #[test]
    fn parse_fixed_bytes() {
        let mut b = Vec::new();
        b.extend_from_slice(b"OVRL");
        b.extend_from_slice(&[1, 1, FLAG_PASSWORD, 0x05]);
        b.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        b.extend_from_slice(&[0x0a, 0xbc]);
        b.extend_from_slice(&[0x11; 32]);
        b.extend_from_slice(&[0x22; 32]);
        b.push(2);
        b.extend_from_slice(b"h1");
        let r = Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap();
        assert_eq!(r.name, "h1");
        assert_eq!(r.short_id, 0x0abc);
        assert!(r.password);
        assert!(r.features.contains(Features::FAST_DATAPATH));
        assert!(r.features.contains(Features::SLEEVE));
        assert!(!r.features.contains(Features::VXLAN));
        assert_eq!(r.peer_uid, 0x0102_0304_0506_0708);
        assert_eq!(r.nonce, [0x11; 32]);
        assert_eq!(r.dh_public, [0x22; 32]);
    }
}
