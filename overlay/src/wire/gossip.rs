//! Topology gossip (control type [`super::control::MessageType::Topology`]):
//! the peers a router knows, each with its version and its connections.
//!
//! ```text
//! message:   0     1          2                4
//!           +-----+----------+----------------+---------------------+
//!           | ver | reserved | peer count u16 | peer entries ...    |
//!           +-----+----------+----------------+---------------------+
//! peer:      0            8             16        18          20   21
//!           +------------+-------------+---------+-----------+----+------+-------------+
//!           | uid (u64)  | version u64 | shortid | conns u16 |nlen| name | connections |
//!           +------------+-------------+---------+-----------+----+------+-------------+
//! connection: 0     1      2          4
//!           +-----+------+----------+------------------+----+-----------+
//!           |flags|family| port u16 | addr (4 or 16)   |nlen| peer name |
//!           +-----+------+----------+------------------+----+-----------+
//! ```
//! `family` is 4 or 6; flag bit 0 marks an established connection. The
//! `shortid` field holds the 12-bit short id in bits 0-11 and peer flags in
//! bits 12-15: bit 15 ([`PEER_REMOVED`]) marks a *tombstone*, an entry that
//! says the peer was removed (`peers remove`) as of that version; bits 12-14
//! are reserved and must be zero. Entries are variable length, so [`Packet::check_len`] walks them all once; the
//! iterators then hand out views that cannot read out of bounds (and stop,
//! rather than panic, on a buffer that was never checked).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{be16, be64, need, Result, WireError, MAX_SHORT_ID};

mod field {
    use core::ops::Range;
    pub(super) const VERSION: usize = 0;
    pub(super) const RESERVED: usize = 1;
    pub(super) const PEER_COUNT: Range<usize> = 2..4;
    pub(super) const PEERS: usize = 4;

    pub(super) const PEER_UID: Range<usize> = 0..8;
    pub(super) const PEER_VERSION: Range<usize> = 8..16;
    pub(super) const PEER_SHORT_ID: Range<usize> = 16..18;
    pub(super) const PEER_CONNS: Range<usize> = 18..20;
    pub(super) const PEER_NAME_LEN: usize = 20;
    pub(super) const PEER_NAME: usize = 21;

    pub(super) const CONN_FLAGS: usize = 0;
    pub(super) const CONN_FAMILY: usize = 1;
    pub(super) const CONN_PORT: Range<usize> = 2..4;
    pub(super) const CONN_ADDR: usize = 4;
}

/// Bytes before the first peer entry.
pub const HEADER_LEN: usize = field::PEERS;
/// Format version.
pub const VERSION: u8 = 1;
/// Most peers (and most connections of one peer) a message may carry: one
/// per 12-bit short id.
pub const MAX_PEERS: usize = 4096;
/// Connection flag: the connection is established.
pub const CONN_ESTABLISHED: u8 = 0x01;
/// Peer flag (bit 15 of the short-id field): the entry is a tombstone, the peer was removed.
pub const PEER_REMOVED: u16 = 0x8000;
/// Bits of the short-id field that carry the short id.
const SHORT_ID_MASK: u16 = MAX_SHORT_ID;
/// Bits of the short-id field that are reserved (must be zero).
const PEER_RESERVED: u16 = !(SHORT_ID_MASK | PEER_REMOVED);

/// End offset of the connection starting at `at`, or why it is invalid.
fn conn_end(b: &[u8], at: usize) -> Result<usize> {
    let family = *b.get(at + field::CONN_FAMILY).ok_or(WireError::Truncated)?;
    let addr_len = match family {
        4 => 4,
        6 => 16,
        _ => {
            return Err(WireError::Malformed(
                "gossip address family is neither 4 nor 6",
            ))
        }
    };
    let name_len_at = at + field::CONN_ADDR + addr_len;
    let name_len = *b.get(name_len_at).ok_or(WireError::Truncated)?;
    let end = name_len_at + 1 + usize::from(name_len);
    if b.len() < end {
        return Err(WireError::Truncated);
    }
    Ok(end)
}

/// End offset of the peer entry (connections included) starting at `at`.
fn peer_end(b: &[u8], at: usize) -> Result<usize> {
    let name_at = at + field::PEER_NAME;
    if b.len() < name_at {
        return Err(WireError::Truncated);
    }
    let conns = usize::from(be16(b, at + field::PEER_CONNS.start));
    if conns > MAX_PEERS {
        return Err(WireError::TooLong {
            len: conns,
            max: MAX_PEERS,
        });
    }
    let mut pos = name_at + usize::from(b[at + field::PEER_NAME_LEN]);
    if b.len() < pos {
        return Err(WireError::Truncated);
    }
    for _ in 0..conns {
        pos = conn_end(b, pos)?;
    }
    Ok(pos)
}

/// A read/write view of a topology message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; getters may panic on a short
    /// one, the iterators stop early instead.
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }
    /// Wraps a buffer after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }
    /// Walks every entry, checking that all announced bytes are present and
    /// the counts are within bounds.
    pub fn check_len(&self) -> Result<()> {
        self.entries_end().map(|_| ())
    }
    /// Offset just past the last entry.
    fn entries_end(&self) -> Result<usize> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let count = usize::from(be16(b, field::PEER_COUNT.start));
        if count > MAX_PEERS {
            return Err(WireError::TooLong {
                len: count,
                max: MAX_PEERS,
            });
        }
        let mut pos = HEADER_LEN;
        for _ in 0..count {
            pos = peer_end(b, pos)?;
        }
        Ok(pos)
    }
    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// Format version.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }
    /// Number of peer entries.
    pub fn peer_count(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PEER_COUNT.start)
    }
    /// Bytes of the whole message.
    pub fn total_len(&self) -> Result<usize> {
        self.entries_end()
    }
    /// The peer entries.
    pub fn peers(&self) -> PeerIter<'_> {
        let b = self.buffer.as_ref();
        PeerIter {
            buf: b,
            pos: HEADER_LEN,
            remaining: if b.len() >= HEADER_LEN {
                self.peer_count()
            } else {
                0
            },
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version and zeroes the reserved byte.
    pub fn set_version(&mut self, v: u8) {
        let b = self.buffer.as_mut();
        b[field::VERSION] = v;
        b[field::RESERVED] = 0;
    }
    /// Sets the peer count.
    pub fn set_peer_count(&mut self, v: u16) {
        self.buffer.as_mut()[field::PEER_COUNT].copy_from_slice(&v.to_be_bytes());
    }
}

/// Iterator over peer entries; ends early (never panics) on bad bytes.
#[derive(Debug, Clone)]
pub struct PeerIter<'a> {
    buf: &'a [u8],
    pos: usize,
    remaining: u16,
}

impl<'a> Iterator for PeerIter<'a> {
    type Item = PeerView<'a>;
    fn next(&mut self) -> Option<PeerView<'a>> {
        if self.remaining == 0 {
            return None;
        }
        match peer_end(self.buf, self.pos) {
            Ok(end) => {
                let view = PeerView {
                    bytes: &self.buf[self.pos..end],
                };
                self.pos = end;
                self.remaining -= 1;
                Some(view)
            }
            Err(_) => {
                self.remaining = 0;
                None
            }
        }
    }
}

/// One validated peer entry, connections included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerView<'a> {
    bytes: &'a [u8],
}

impl<'a> PeerView<'a> {
    /// The peer's uid.
    pub fn uid(&self) -> u64 {
        be64(self.bytes, field::PEER_UID.start)
    }
    /// The version of this peer's entry (bumped by its owner on change).
    pub fn version(&self) -> u64 {
        be64(self.bytes, field::PEER_VERSION.start)
    }
    /// The peer's short id (bits 0-11 of its field).
    pub fn short_id(&self) -> u16 {
        be16(self.bytes, field::PEER_SHORT_ID.start) & SHORT_ID_MASK
    }
    /// Whether the entry is a tombstone ([`PEER_REMOVED`]).
    pub fn removed(&self) -> bool {
        be16(self.bytes, field::PEER_SHORT_ID.start) & PEER_REMOVED != 0
    }
    /// The reserved flag bits (12-14 of the short-id field); zero in a valid entry.
    pub fn reserved_flags(&self) -> u16 {
        be16(self.bytes, field::PEER_SHORT_ID.start) & PEER_RESERVED
    }
    /// Number of connections.
    pub fn connection_count(&self) -> u16 {
        be16(self.bytes, field::PEER_CONNS.start)
    }
    /// The peer name bytes.
    pub fn name(&self) -> &'a [u8] {
        let len = usize::from(self.bytes[field::PEER_NAME_LEN]);
        &self.bytes[field::PEER_NAME..field::PEER_NAME + len]
    }
    /// The peer's connections.
    pub fn connections(&self) -> ConnIter<'a> {
        let len = usize::from(self.bytes[field::PEER_NAME_LEN]);
        ConnIter {
            buf: self.bytes,
            pos: field::PEER_NAME + len,
            remaining: self.connection_count(),
        }
    }
}

/// Iterator over one peer's connections; ends early on bad bytes.
#[derive(Debug, Clone)]
pub struct ConnIter<'a> {
    buf: &'a [u8],
    pos: usize,
    remaining: u16,
}

impl<'a> Iterator for ConnIter<'a> {
    type Item = ConnView<'a>;
    fn next(&mut self) -> Option<ConnView<'a>> {
        if self.remaining == 0 {
            return None;
        }
        match conn_end(self.buf, self.pos) {
            Ok(end) => {
                let view = ConnView {
                    bytes: &self.buf[self.pos..end],
                };
                self.pos = end;
                self.remaining -= 1;
                Some(view)
            }
            Err(_) => {
                self.remaining = 0;
                None
            }
        }
    }
}

/// One validated connection entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnView<'a> {
    bytes: &'a [u8],
}

impl<'a> ConnView<'a> {
    fn addr_len(&self) -> usize {
        if self.bytes[field::CONN_FAMILY] == 6 {
            16
        } else {
            4
        }
    }
    /// Whether the connection is established.
    pub fn established(&self) -> bool {
        self.bytes[field::CONN_FLAGS] & CONN_ESTABLISHED != 0
    }
    /// The remote address of the connection.
    pub fn address(&self) -> SocketAddr {
        let port = be16(self.bytes, field::CONN_PORT.start);
        let a = &self.bytes[field::CONN_ADDR..field::CONN_ADDR + self.addr_len()];
        let ip = if let Ok(v6) = <[u8; 16]>::try_from(a) {
            IpAddr::V6(Ipv6Addr::from(v6))
        } else {
            IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
        };
        SocketAddr::new(ip, port)
    }
    /// The name of the peer at the other end.
    pub fn peer_name(&self) -> &'a [u8] {
        let at = field::CONN_ADDR + self.addr_len();
        let len = usize::from(self.bytes[at]);
        &self.bytes[at + 1..at + 1 + len]
    }
}

/// A connection in plain form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRepr {
    /// Name of the peer at the other end.
    pub peer_name: String,
    /// Its address.
    pub address: SocketAddr,
    /// Whether the connection is established (not just being attempted).
    pub established: bool,
}

/// A peer in plain form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRepr {
    /// Peer name (1 to 255 bytes of UTF-8).
    pub name: String,
    /// Unique id of this incarnation of the peer.
    pub uid: u64,
    /// Short id (at most [`MAX_SHORT_ID`]).
    pub short_id: u16,
    /// Version of this entry.
    pub version: u64,
    /// The peer's connections.
    pub connections: Vec<ConnectionRepr>,
    /// A tombstone: the peer was removed as of `version` ([`PEER_REMOVED`]).
    pub removed: bool,
}

impl PeerRepr {
    fn buffer_len(&self) -> usize {
        field::PEER_NAME
            + self.name.len()
            + self
                .connections
                .iter()
                .map(|c| {
                    let addr = if c.address.is_ipv4() { 4 } else { 16 };
                    field::CONN_ADDR + addr + 1 + c.peer_name.len()
                })
                .sum::<usize>()
    }
}

fn utf8_str<'a>(b: &'a [u8], what: &'static str) -> Result<&'a str> {
    if b.is_empty() {
        return Err(WireError::Malformed(what));
    }
    std::str::from_utf8(b).map_err(|_| WireError::Malformed(what))
}

fn utf8_name(b: &[u8], what: &'static str) -> Result<String> {
    utf8_str(b, what).map(str::to_owned)
}

fn check_name(name: &str, what: &'static str) -> Result<()> {
    if name.is_empty() {
        return Err(WireError::Malformed(what));
    }
    if name.len() > usize::from(u8::MAX) {
        return Err(WireError::TooLong {
            len: name.len(),
            max: usize::from(u8::MAX),
        });
    }
    Ok(())
}

/// A topology message in plain form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Repr {
    /// The peers, in sender order.
    pub peers: Vec<PeerRepr>,
}

impl Repr {
    /// Reads and validates a topology message.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        Self::parse_with(packet, |_, _| true)
    }

    /// Reads and validates a topology message, copying out only the entries `keep(name,
    /// version)` wants (a router wants those newer than what it holds: in a mesh that
    /// already agrees, none). The whole message is validated either way.
    pub fn parse_with<T: AsRef<[u8]> + ?Sized>(
        packet: &Packet<&T>,
        mut keep: impl FnMut(&str, u64) -> bool,
    ) -> Result<Repr> {
        packet.check_len()?;
        if packet.version() != VERSION {
            return Err(WireError::BadVersion(packet.version()));
        }
        let mut peers = Vec::new();
        for p in packet.peers() {
            if p.reserved_flags() != 0 {
                return Err(WireError::Malformed(
                    "gossip short id field has reserved bits 12-14 set",
                ));
            }
            let name = utf8_str(p.name(), "gossip peer name is empty or not UTF-8")?;
            if !keep(name, p.version()) {
                for c in p.connections() {
                    utf8_str(
                        c.peer_name(),
                        "gossip connection peer name is empty or not UTF-8",
                    )?;
                }
                continue;
            }
            let mut connections = Vec::new();
            for c in p.connections() {
                connections.push(ConnectionRepr {
                    peer_name: utf8_name(
                        c.peer_name(),
                        "gossip connection peer name is empty or not UTF-8",
                    )?,
                    address: c.address(),
                    established: c.established(),
                });
            }
            peers.push(PeerRepr {
                name: utf8_name(p.name(), "gossip peer name is empty or not UTF-8")?,
                uid: p.uid(),
                short_id: p.short_id(),
                version: p.version(),
                connections,
                removed: p.removed(),
            });
        }
        Ok(Repr { peers })
    }

    /// Bytes the message occupies.
    pub fn buffer_len(&self) -> usize {
        buffer_len_of(&self.peers.iter().collect::<Vec<_>>())
    }

    /// Writes the message.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(
        &self,
        packet: &mut Packet<&mut T>,
    ) -> Result<()> {
        emit_peers(&self.peers.iter().collect::<Vec<_>>(), packet)
    }
}

/// Bytes a message of `peers` occupies.
pub fn buffer_len_of(peers: &[&PeerRepr]) -> usize {
    HEADER_LEN + peers.iter().map(|p| p.buffer_len()).sum::<usize>()
}

/// Writes a message of borrowed `peers`: a router sends the same entries on many
/// connections, and encodes them without copying them first.
pub fn emit_peers<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(
    peers: &[&PeerRepr],
    packet: &mut Packet<&mut T>,
) -> Result<()> {
    if peers.len() > MAX_PEERS {
        return Err(WireError::TooLong {
            len: peers.len(),
            max: MAX_PEERS,
        });
    }
    for p in peers {
        check_name(&p.name, "gossip peer name is empty")?;
        if p.short_id > MAX_SHORT_ID {
            return Err(WireError::Malformed("gossip short id exceeds 12 bits"));
        }
        if p.connections.len() > MAX_PEERS {
            return Err(WireError::TooLong {
                len: p.connections.len(),
                max: MAX_PEERS,
            });
        }
        for c in &p.connections {
            check_name(&c.peer_name, "gossip connection peer name is empty")?;
        }
    }
    need(buffer_len_of(peers), packet.buffer.as_ref().len())?;
    packet.set_version(VERSION);
    packet.set_peer_count(peers.len() as u16);
    let b = packet.buffer.as_mut();
    let mut pos = HEADER_LEN;
    for p in peers {
        let at = |r: core::ops::Range<usize>| pos + r.start..pos + r.end;
        b[at(field::PEER_UID)].copy_from_slice(&p.uid.to_be_bytes());
        b[at(field::PEER_VERSION)].copy_from_slice(&p.version.to_be_bytes());
        let flags = if p.removed { PEER_REMOVED } else { 0 };
        b[at(field::PEER_SHORT_ID)].copy_from_slice(&(p.short_id | flags).to_be_bytes());
        b[at(field::PEER_CONNS)].copy_from_slice(&(p.connections.len() as u16).to_be_bytes());
        b[pos + field::PEER_NAME_LEN] = p.name.len() as u8;
        pos += field::PEER_NAME;
        b[pos..pos + p.name.len()].copy_from_slice(p.name.as_bytes());
        pos += p.name.len();
        for c in &p.connections {
            let (family, addr): (u8, &[u8]) = match c.address.ip() {
                IpAddr::V4(a) => (4, &a.octets()[..]),
                IpAddr::V6(a) => (6, &a.octets()[..]),
            };
            b[pos + field::CONN_FLAGS] = if c.established { CONN_ESTABLISHED } else { 0 };
            b[pos + field::CONN_FAMILY] = family;
            b[pos + field::CONN_PORT.start..pos + field::CONN_PORT.end]
                .copy_from_slice(&c.address.port().to_be_bytes());
            pos += field::CONN_ADDR;
            b[pos..pos + addr.len()].copy_from_slice(addr);
            pos += addr.len();
            b[pos] = c.peer_name.len() as u8;
            b[pos + 1..pos + 1 + c.peer_name.len()].copy_from_slice(c.peer_name.as_bytes());
            pos += 1 + c.peer_name.len();
        }
    }
    Ok(())
}
