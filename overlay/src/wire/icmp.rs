//! ICMP "fragmentation needed" (type 3, code 4; RFC 792 and RFC 1191) built
//! for a container that sent a DF IPv4 packet larger than the overlay path
//! carries: the router answers on the bridge as if it were the next hop, so
//! the container's kernel lowers its path MTU.
//!
//! ```text
//! Ethernet (dst = original src, src = original dst, type 0x0800)
//! IPv4     (src = icmp_src, dst = original src, proto 1, TTL 64, TOS 0xc0)
//! ICMP      0      1      2          4          6            8
//!          +------+------+----------+----------+------------+--------------------------------+
//!          | 3    | 4    | checksum | unused 0 | next-hop   | original IP header + 8 bytes   |
//!          +------+------+----------+----------+------------+--------------------------------+
//! ```

use std::net::Ipv4Addr;

use super::ethernet::{self, Frame, ETHERTYPE_IPV4};
use super::ipv4::{self, checksum, PROTO_ICMP};
use super::{need, Result, WireError};

/// ICMP type "destination unreachable".
pub const TYPE_DEST_UNREACHABLE: u8 = 3;
/// ICMP code "fragmentation needed and DF set".
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Bytes of the ICMP header before the quote.
pub const ICMP_HEADER_LEN: usize = 8;
/// Bytes of the original payload quoted after its IP header.
pub const QUOTED_PAYLOAD_LEN: usize = 8;

/// Whether `frame` is an IPv4 packet with DF set whose IP length exceeds
/// `mtu` (the overlay MTU in IP bytes): the case to answer with
/// [`frag_needed`]. Garbage is simply "no".
pub fn needs_frag_needed(frame: &[u8], mtu: usize) -> bool {
    let Ok(eth) = Frame::new_checked(frame) else {
        return false;
    };
    if eth.ethertype() != ETHERTYPE_IPV4 {
        return false;
    }
    match ipv4::Packet::new_checked(eth.payload()) {
        Ok(ip) => ip.dont_frag() && usize::from(ip.total_len()) > mtu,
        Err(_) => false,
    }
}

/// Checks the packet may be answered and returns (IP header length, quoted
/// length) for it.
fn quote_of(frame: &[u8]) -> Result<(usize, usize)> {
    let eth = Frame::new_checked(frame)?;
    if eth.ethertype() != ETHERTYPE_IPV4 {
        return Err(WireError::Malformed("frame is not IPv4"));
    }
    if eth.src()[0] & 0x01 != 0 {
        return Err(WireError::Malformed("frame source MAC is multicast"));
    }
    let ip = ipv4::Packet::new_checked(eth.payload())?;
    if !ip.dont_frag() {
        return Err(WireError::Malformed(
            "packet has DF clear: fragment it instead",
        ));
    }
    if ip.frag_offset() != 0 {
        return Err(WireError::Malformed("packet is a non-first fragment"));
    }
    let src = ip.src();
    if src.is_unspecified() || src.is_broadcast() || src.is_multicast() {
        return Err(WireError::Malformed("packet source cannot receive ICMP"));
    }
    if ip.protocol() == PROTO_ICMP {
        // Never answer an ICMP error with an ICMP error (RFC 1122 3.2.2).
        match ip.payload().first() {
            Some(3 | 4 | 5 | 11 | 12) | None => {
                return Err(WireError::Malformed("packet is itself an ICMP error"))
            }
            Some(_) => {}
        }
    }
    let hl = ip.header_len();
    let quoted = hl + ip.payload().len().min(QUOTED_PAYLOAD_LEN);
    Ok((hl, quoted))
}

/// Bytes [`frag_needed`] will write for `frame`.
pub fn frag_needed_len(frame: &[u8]) -> Result<usize> {
    let (_, quoted) = quote_of(frame)?;
    Ok(ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + ICMP_HEADER_LEN + quoted)
}

/// Writes into `out` the Ethernet frame carrying an ICMP "fragmentation
/// needed" about `frame`, advertising `next_hop_mtu`, sent from `icmp_src`
/// (the router's address on the overlay, or the original destination so
/// that reverse-path filters accept it). Returns the bytes written.
///
/// Fails with a reason when the frame must not be answered (not IPv4, DF
/// clear, a non-first fragment, an ICMP error, a source that cannot receive
/// one) or is garbage, and with [`WireError::BufferTooSmall`] when `out` is.
pub fn frag_needed(
    frame: &[u8],
    next_hop_mtu: u16,
    icmp_src: Ipv4Addr,
    out: &mut [u8],
) -> Result<usize> {
    let (_, quoted) = quote_of(frame)?;
    let total = frag_needed_len(frame)?;
    need(total, out.len())?;
    let out = &mut out[..total];
    let orig = Frame::new_unchecked(frame);
    let orig_ip = ipv4::Packet::new_unchecked(orig.payload());

    let mut eth = Frame::new_unchecked(&mut *out);
    ethernet::Repr {
        dst: orig.src(),
        src: orig.dst(),
        ethertype: ETHERTYPE_IPV4,
    }
    .emit(&mut eth)?;

    let ip_len = ipv4::MIN_HEADER_LEN + ICMP_HEADER_LEN + quoted;
    let ip_buf = eth.payload_mut();
    let mut ip = ipv4::Packet::new_unchecked(&mut *ip_buf);
    ip.set_version_and_header_len(ipv4::MIN_HEADER_LEN);
    // Internetwork control precedence, as routers send ICMP errors.
    ip.set_tos(0xc0);
    ip.set_total_len(ip_len as u16);
    ip.set_ident(0);
    ip.set_flags_frag(0);
    ip.set_ttl(64);
    ip.set_protocol(PROTO_ICMP);
    ip.set_src(icmp_src);
    ip.set_dst(orig_ip.src());
    ip.fill_checksum();

    let icmp = &mut ip_buf[ipv4::MIN_HEADER_LEN..];
    icmp[0] = TYPE_DEST_UNREACHABLE;
    icmp[1] = CODE_FRAG_NEEDED;
    icmp[2..6].fill(0);
    icmp[6..8].copy_from_slice(&next_hop_mtu.to_be_bytes());
    icmp[ICMP_HEADER_LEN..]
        .copy_from_slice(&frame[ethernet::HEADER_LEN..ethernet::HEADER_LEN + quoted]);
    let c = checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(total)
}
