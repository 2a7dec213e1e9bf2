//! One line per captured frame, as `netsim capture` prints them without `-w`: addresses,
//! protocol and the fields a person checks first (ICMP type, ports, TCP flags), and for a vxlan
//! packet (UDP 4789, or the overlay's 6784) the frame it carries.
//!
//! A summary, not a dissector: tshark or Wireshark read the files `-w` writes.

use std::fmt::Write as _;

use pnet_packet::arp::{ArpOperations, ArpPacket};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::icmp::{IcmpPacket, IcmpTypes};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::ipv6::Ipv6Packet;
use pnet_packet::tcp::TcpPacket;
use pnet_packet::udp::UdpPacket;
use pnet_packet::Packet;

/// UDP ports whose packets are decoded as vxlan: IANA's and the overlay's fast path.
pub const VXLAN_PORTS: [u16; 2] = [4789, 6784];

/// How deep vxlan packets are unwrapped (a frame in a frame in a frame is still shown).
const MAX_DEPTH: usize = 3;

/// One line describing an Ethernet frame.
pub fn describe(frame: &[u8]) -> String {
    describe_at(frame, 0)
}

fn describe_at(frame: &[u8], depth: usize) -> String {
    let Some(eth) = EthernetPacket::new(frame) else {
        return format!("truncated frame, length {}", frame.len());
    };
    match eth.get_ethertype() {
        EtherTypes::Arp => arp(eth.payload()),
        EtherTypes::Ipv4 => ipv4(eth.payload(), depth),
        EtherTypes::Ipv6 => ipv6(eth.payload()),
        other => format!(
            "{} > {} ethertype 0x{:04x}, length {}",
            eth.get_source(),
            eth.get_destination(),
            other.0,
            frame.len()
        ),
    }
}

fn arp(payload: &[u8]) -> String {
    let Some(a) = ArpPacket::new(payload) else {
        return "ARP, truncated".into();
    };
    match a.get_operation() {
        ArpOperations::Request => format!(
            "ARP who-has {} tell {}",
            a.get_target_proto_addr(),
            a.get_sender_proto_addr()
        ),
        ArpOperations::Reply => format!(
            "ARP reply {} is-at {}",
            a.get_sender_proto_addr(),
            a.get_sender_hw_addr()
        ),
        other => format!("ARP operation {}", other.0),
    }
}

fn ipv4(payload: &[u8], depth: usize) -> String {
    let Some(ip) = Ipv4Packet::new(payload) else {
        return "IPv4, truncated".into();
    };
    let (src, dst) = (ip.get_source(), ip.get_destination());
    let len = ip.get_total_length();
    // A fragment after the first carries no transport header.
    if ip.get_fragment_offset() > 0 {
        return format!("{src} > {dst}: IPv4 fragment, length {len}");
    }
    let body = ip.payload();
    match ip.get_next_level_protocol() {
        IpNextHeaderProtocols::Icmp => format!("{src} > {dst}: {}, length {len}", icmp(body)),
        IpNextHeaderProtocols::Udp => {
            let Some(u) = UdpPacket::new(body) else {
                return format!("{src} > {dst}: UDP, truncated");
            };
            let (sp, dp) = (u.get_source(), u.get_destination());
            let mut out = format!("{src}.{sp} > {dst}.{dp}: UDP, length {}", u.get_length());
            if VXLAN_PORTS.contains(&dp) && depth < MAX_DEPTH {
                if let Some((vni, inner)) = vxlan(u.payload()) {
                    out = format!(
                        "{src}.{sp} > {dst}.{dp}: VXLAN vni {vni}: {}",
                        describe_at(inner, depth + 1)
                    );
                }
            }
            out
        }
        IpNextHeaderProtocols::Tcp => {
            let Some(t) = TcpPacket::new(body) else {
                return format!("{src} > {dst}: TCP, truncated");
            };
            let data = usize::from(len)
                .saturating_sub(usize::from(ip.get_header_length()) * 4)
                .saturating_sub(usize::from(t.get_data_offset()) * 4);
            format!(
                "{src}.{} > {dst}.{}: TCP [{}] seq {}, length {data}",
                t.get_source(),
                t.get_destination(),
                tcp_flags(t.get_flags()),
                t.get_sequence()
            )
        }
        other => format!("{src} > {dst}: IP protocol {}, length {len}", other.0),
    }
}

fn icmp(body: &[u8]) -> String {
    let Some(i) = IcmpPacket::new(body) else {
        return "ICMP, truncated".into();
    };
    // Echo: identifier and sequence follow the 4-byte header.
    let echo_ids = || {
        let b = i.payload();
        match b {
            [a, b2, c, d, ..] => format!(
                " id {} seq {}",
                u16::from_be_bytes([*a, *b2]),
                u16::from_be_bytes([*c, *d])
            ),
            _ => String::new(),
        }
    };
    match i.get_icmp_type() {
        IcmpTypes::EchoRequest => format!("ICMP echo request{}", echo_ids()),
        IcmpTypes::EchoReply => format!("ICMP echo reply{}", echo_ids()),
        IcmpTypes::DestinationUnreachable => {
            format!("ICMP unreachable code {}", i.get_icmp_code().0)
        }
        IcmpTypes::TimeExceeded => "ICMP time exceeded".into(),
        other => format!("ICMP type {}", other.0),
    }
}

fn ipv6(payload: &[u8]) -> String {
    let Some(ip) = Ipv6Packet::new(payload) else {
        return "IPv6, truncated".into();
    };
    format!(
        "{} > {}: IPv6 next header {}, length {}",
        ip.get_source(),
        ip.get_destination(),
        ip.get_next_header().0,
        ip.get_payload_length()
    )
}

/// The vni and inner frame of a vxlan payload (RFC 7348: flags with I set, 3 reserved bytes,
/// a 24-bit vni, a reserved byte, then the frame).
fn vxlan(payload: &[u8]) -> Option<(u32, &[u8])> {
    match payload {
        [flags, _, _, _, a, b, c, _, inner @ ..] if flags & 0x08 != 0 && inner.len() >= 14 => {
            Some((u32::from_be_bytes([0, *a, *b, *c]), inner))
        }
        _ => None,
    }
}

/// tcpdump's flag letters: S F R P U, `.` for ACK.
fn tcp_flags(flags: u8) -> String {
    let mut out = String::new();
    for (bit, c) in [
        (0x02, 'S'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x20, 'U'),
        (0x10, '.'),
    ] {
        if flags & bit != 0 {
            let _ = write!(out, "{c}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

    fn ether(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&MAC_B);
        f.extend_from_slice(&MAC_A);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], body: &[u8]) -> Vec<u8> {
        let len = u16::try_from(20 + body.len()).expect("small");
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(body);
        p
    }

    fn udp(sport: u16, dport: u16, body: &[u8]) -> Vec<u8> {
        let len = u16::try_from(8 + body.len()).expect("small");
        let mut u = Vec::new();
        for v in [sport, dport, len, 0] {
            u.extend_from_slice(&v.to_be_bytes());
        }
        u.extend_from_slice(body);
        u
    }

    fn echo(kind: u8, id: u16, seq: u16) -> Vec<u8> {
        let mut i = vec![kind, 0, 0, 0];
        i.extend_from_slice(&id.to_be_bytes());
        i.extend_from_slice(&seq.to_be_bytes());
        i.extend_from_slice(&[0xab; 56]);
        i
    }

    #[test]
    fn frames_of_every_kind_in_one_line() {
        let (a, b) = ([198, 18, 1, 1], [198, 18, 1, 2]);
        let (c1, c2) = ([198, 19, 0, 1], [198, 19, 64, 1]);
        let ping = ether(0x0800, &ipv4(1, a, b, &echo(8, 7, 1)));
        let pong = ether(0x0800, &ipv4(1, b, a, &echo(0, 7, 1)));
        let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
        arp.extend_from_slice(&MAC_A);
        arp.extend_from_slice(&a);
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&b);
        let arp = ether(0x0806, &arp);
        let mut tcp = vec![0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x12];
        tcp.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        let tcp = ether(0x0800, &ipv4(6, a, b, &tcp));
        let inner = ether(0x0800, &ipv4(1, c1, c2, &echo(8, 9, 3)));
        let mut vx = vec![0x08, 0, 0, 0, 0, 0x0f, 0x42, 0];
        vx.extend_from_slice(&inner);
        let vxlan = ether(0x0800, &ipv4(17, a, b, &udp(40000, 6784, &vx)));
        let sleeve = ether(0x0800, &ipv4(17, a, b, &udp(6783, 6783, &[0; 40])));
        let lldp = ether(0x88cc, &[0; 20]);
        let text: Vec<String> = [ping, pong, arp, tcp, vxlan, sleeve, lldp, vec![1, 2, 3]]
            .iter()
            .map(|f| describe(f))
            .collect();
        insta::assert_snapshot!(text.join("\n"));
    }
}
