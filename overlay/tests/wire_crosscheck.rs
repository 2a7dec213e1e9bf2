//! Independent cross-checks: what `overlay::wire` writes, read back with
//! pnet_packet (another implementation of the same standards).
#![allow(clippy::unwrap_used)]

mod wire_common;

use std::net::Ipv4Addr;

use overlay::wire::{icmp, vxlan};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::icmp::destination_unreachable::{DestinationUnreachablePacket, IcmpCodes};
use pnet_packet::icmp::{IcmpPacket, IcmpTypes};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::vxlan::VxlanPacket;
use pnet_packet::Packet as _;
use rstest::rstest;
use wire_common::big_df_udp_frame;

#[rstest]
#[case::full_quote(1500, 1410)]
#[case::jumbo(9000, 8950)]
#[case::short_payload(24, 20)]
fn pnet_reads_our_frag_needed(#[case] ip_len: usize, #[case] mtu: u16) {
    let frame = big_df_udp_frame(ip_len);
    let mut out = [0u8; 128];
    let n = icmp::frag_needed(&frame, mtu, Ipv4Addr::new(198, 19, 2, 3), &mut out).unwrap();

    let eth = EthernetPacket::new(&out[..n]).unwrap();
    assert_eq!(eth.get_ethertype(), EtherTypes::Ipv4);
    assert_eq!(
        eth.get_destination().octets(),
        <[u8; 6]>::try_from(&frame[6..12]).unwrap()
    );

    let ip = Ipv4Packet::new(eth.payload()).unwrap();
    assert_eq!(ip.get_checksum(), pnet_packet::ipv4::checksum(&ip));
    assert_eq!(ip.get_next_level_protocol(), IpNextHeaderProtocols::Icmp);
    assert_eq!(usize::from(ip.get_total_length()), n - 14);
    assert_eq!(ip.get_destination(), Ipv4Addr::new(198, 19, 1, 2));

    let icmp_pkt = IcmpPacket::new(ip.payload()).unwrap();
    assert_eq!(icmp_pkt.get_icmp_type(), IcmpTypes::DestinationUnreachable);
    assert_eq!(
        icmp_pkt.get_icmp_code(),
        IcmpCodes::FragmentationRequiredAndDFFlagSet
    );
    assert_eq!(
        icmp_pkt.get_checksum(),
        pnet_packet::icmp::checksum(&icmp_pkt)
    );

    let du = DestinationUnreachablePacket::new(ip.payload()).unwrap();
    assert_eq!(du.get_next_hop_mtu(), mtu);
    let quoted = Ipv4Packet::new(du.payload()).unwrap();
    assert_eq!(quoted.get_identification(), 0x1234);
    assert_eq!(du.payload(), &frame[14..14 + 20 + (ip_len - 20).min(8)]);
}

#[test]
fn pnet_reads_our_vxlan_vni() {
    let r = vxlan::Repr {
        src_short_id: 0x123,
        dst_short_id: 0x456,
    };
    let mut b = [0u8; vxlan::HEADER_LEN];
    r.emit(&mut vxlan::Packet::new_unchecked(&mut b[..]))
        .unwrap();
    let p = VxlanPacket::new(&b).unwrap();
    assert_eq!(p.get_flags(), vxlan::FLAG_VNI);
    assert_eq!(p.get_vni(), 0x456123);
}
