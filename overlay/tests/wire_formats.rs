//! Round trips, fixed byte arrays and hexdump snapshots of every wire format.
#![allow(clippy::unwrap_used)]

mod wire_common;

use overlay::wire::{
    auth, control, fragment, gossip, handshake, heartbeat, hexdump, icmp, ipam, ipv4, sleeve,
    WireError,
};
use wire_common::*;

#[test]
fn hello_round_trip_and_snapshot() {
    let r = hello();
    let b = emit_hello(&r);
    let p = handshake::Packet::new_checked(&b[..]).unwrap();
    assert_eq!(p.total_len(), b.len());
    assert_eq!(handshake::Repr::parse(&p).unwrap(), r);
    insta::assert_snapshot!("hello", hexdump(&b));
}

#[test]
fn hello_inside_control_frame_snapshot() {
    let body = emit_hello(&hello());
    let frame = emit_control(control::MessageType::Hello, &body);
    let p = control::Packet::new_checked(&frame[..]).unwrap();
    assert_eq!(p.msg_type(), control::MessageType::Hello);
    assert_eq!(p.payload(), &body[..]);
    assert_eq!(control::frame_len(&frame).unwrap(), Some(frame.len()));
    insta::assert_snapshot!("control_hello", hexdump(&frame));
}

#[test]
fn control_frames_back_to_back_are_split_by_frame_len() {
    let mut stream = emit_control(control::MessageType::Topology, b"x");
    stream.extend(emit_control(control::MessageType::Unknown(200), b"yz"));
    let first = control::frame_len(&stream).unwrap().unwrap();
    let p1 = control::Packet::new_checked(&stream[..first]).unwrap();
    let p2 = control::Packet::new_checked(&stream[first..]).unwrap();
    assert_eq!(p1.payload(), b"x");
    assert_eq!(p2.msg_type(), control::MessageType::Unknown(200));
    assert_eq!(p2.payload(), b"yz");
}

#[test]
fn proof_round_trip_and_snapshot() {
    let r = proof();
    let b = emit_proof(&r);
    assert_eq!(
        auth::Repr::parse(&auth::Packet::new_checked(&b[..]).unwrap()).unwrap(),
        r
    );
    insta::assert_snapshot!("auth_proof", hexdump(&b));
}

#[test]
fn topology_round_trip_and_snapshot() {
    let r = topology();
    let b = emit_topology(&r);
    let p = gossip::Packet::new_checked(&b[..]).unwrap();
    assert_eq!(p.total_len().unwrap(), b.len());
    assert_eq!(gossip::Repr::parse(&p).unwrap(), r);
    // The zero-copy views agree with the Repr.
    let peers: Vec<_> = p.peers().collect();
    assert_eq!(peers.len(), 3);
    assert_eq!(peers[0].name(), b"host-a");
    assert!(!peers[0].removed());
    // The tombstone flag shares the short-id field without disturbing the short id.
    assert!(peers[2].removed());
    assert_eq!(peers[2].short_id(), 0x0123);
    let conns: Vec<_> = peers[0].connections().collect();
    assert_eq!(conns[1].address(), r.peers[0].connections[1].address);
    assert!(conns[0].established());
    insta::assert_snapshot!("gossip_topology", hexdump(&b));
}

#[test]
fn topology_parse_copies_out_only_the_entries_wanted() {
    let r = topology();
    let b = emit_topology(&r);
    let p = gossip::Packet::new_checked(&b[..]).unwrap();
    let mut asked = Vec::new();
    let kept = gossip::Repr::parse_with(&p, |name, version| {
        asked.push((name.to_string(), version));
        name == "host-a"
    })
    .unwrap();
    assert_eq!(kept.peers, [r.peers[0].clone()]);
    let all: Vec<_> = r
        .peers
        .iter()
        .map(|p| (p.name.clone(), p.version))
        .collect();
    assert_eq!(asked, all, "asked about every entry, in order");
    // Borrowed entries encode to the same bytes as owned ones.
    let refs: Vec<&gossip::PeerRepr> = r.peers.iter().collect();
    let mut again = vec![0u8; gossip::buffer_len_of(&refs)];
    gossip::emit_peers(&refs, &mut gossip::Packet::new_unchecked(&mut again[..])).unwrap();
    assert_eq!(again, b);
}

#[test]
fn empty_topology_is_four_bytes() {
    let b = emit_topology(&gossip::Repr::default());
    assert_eq!(b, [gossip::VERSION, 0, 0, 0]);
}

#[test]
fn claims_round_trip_and_snapshot() {
    let r = claims();
    let b = emit_claims(&r);
    assert_eq!(b.len(), ipam::HEADER_LEN + 2 * ipam::CLAIM_LEN);
    assert_eq!(
        ipam::Repr::parse(&ipam::Packet::new_checked(&b[..]).unwrap()).unwrap(),
        r
    );
    insta::assert_snapshot!("ipam_claims", hexdump(&b));
}

#[test]
fn heartbeat_and_ack_round_trip_and_snapshot() {
    let hb = heartbeat();
    let b = emit_heartbeat(&hb);
    assert!(
        b[heartbeat::HEADER_LEN..].iter().all(|&x| x == 0),
        "padding is zeroed"
    );
    assert_eq!(
        heartbeat::Repr::parse(&heartbeat::Packet::new_checked(&b[..]).unwrap()).unwrap(),
        hb
    );
    let ack = hb.ack(hb.padding_len);
    let a = emit_heartbeat(&ack);
    assert_eq!(a.len(), heartbeat::HEADER_LEN, "an ack carries no padding");
    assert_eq!(
        heartbeat::Repr::parse(&heartbeat::Packet::new_checked(&a[..]).unwrap()).unwrap(),
        ack
    );
    insta::assert_snapshot!("heartbeat", format!("{}--\n{}", hexdump(&b), hexdump(&a)));
}

#[test]
fn heartbeat_padding_reaches_target() {
    // A 1410-byte overlay MTU heartbeat inside an Ethernet header.
    let pad = heartbeat::Repr::padding_for(1410 + 14, 14);
    let hb = heartbeat::Repr {
        padding_len: pad,
        ..heartbeat()
    };
    assert_eq!(hb.buffer_len(), 1410);
    assert_eq!(heartbeat::Repr::padding_for(10, 14), 0);
}

#[test]
fn sleeve_round_trip_and_snapshot() {
    let r = sleeve_header();
    let b = emit_sleeve(&r, &[b"abc", b"defg"]);
    let p = sleeve::Packet::new_checked(&b[..]).unwrap();
    assert_eq!(sleeve::Repr::parse(&p).unwrap(), r);
    let frames: Vec<_> = p.frames().collect::<Result<_, _>>().unwrap();
    assert_eq!(frames, vec![&b"abc"[..], &b"defg"[..]]);
    insta::assert_snapshot!("sleeve", hexdump(&b));
}

#[test]
fn sleeve_fragment_round_trip_and_snapshot() {
    // A whole piece datagram: sleeve header flagged vnet + fragment, fragment header, piece.
    let mut b = emit_sleeve(&sleeve_header(), &[]);
    b[1] = sleeve::FLAG_VNET_HDR | sleeve::FLAG_FRAGMENT;
    b.extend(emit_fragment(&fragment_header(), b"second piece"));
    let p = sleeve::Packet::new_checked(&b[..]).unwrap();
    let r = sleeve::Repr::parse(&p).unwrap();
    assert_eq!(r, sleeve_header());
    let f = fragment::Packet::new_checked(p.body()).unwrap();
    assert_eq!(fragment::Repr::parse(&f).unwrap(), fragment_header());
    assert_eq!(f.piece(), b"second piece");
    insta::assert_snapshot!("sleeve_fragment", hexdump(&b));
}

#[test]
fn fragment_parse_fixed_bytes() {
    let b = [0, 0, 1, 2, 0, 0, 0, 30, 0, 2, 0, 3, 0xaa, 0xbb];
    let p = fragment::Packet::new_checked(&b[..]).unwrap();
    let r = fragment::Repr::parse(&p).unwrap();
    assert_eq!((r.burst, r.total, r.index, r.count), (258, 30, 2, 3));
    assert_eq!(p.piece(), [0xaa, 0xbb]);
}

#[test]
fn sleeve_parse_fixed_bytes() {
    let b = [
        1, 0x02, 0x0f, 0xff, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0, 1, 0xee,
    ];
    let p = sleeve::Packet::new_checked(&b[..]).unwrap();
    let r = sleeve::Repr::parse(&p).unwrap();
    assert!(r.heartbeat && !r.encrypted);
    assert_eq!((r.src_short_id, r.dst_short_id, r.counter), (0xfff, 1, 256));
    assert_eq!(p.frames().collect::<Vec<_>>(), vec![Ok(&[0xee][..])]);
}

#[test]
fn sleeve_overhead_matches_design() {
    // 20 IPv4 + 8 UDP + 16 header + 2 length prefix (+ 16 tag).
    assert_eq!(sleeve::overhead(false), 46);
    assert_eq!(sleeve::overhead(true), 62);
}

#[test]
fn sleeve_writer_packs_several_frames_per_datagram() {
    let mut buf = vec![0u8; 1500];
    let mut w = sleeve::FrameWriter::new(&mut buf, sleeve::TAG_LEN).unwrap();
    let frame = [7u8; 300];
    let mut n = 0;
    while w.fits(frame.len()) {
        w.push(&frame).unwrap();
        n += 1;
    }
    // (1500 - 16 header - 16 tag) / 302 = 4 frames.
    assert_eq!(n, 4);
    assert_eq!(
        w.push(&frame),
        Err(WireError::TooLong {
            len: 300,
            max: 1500 - 16 - 16 - 4 * 302 - 2
        })
    );
}

#[test]
fn frag_needed_quotes_header_and_eight_bytes_with_valid_checksums() {
    let frame = big_df_udp_frame(1500);
    assert!(icmp::needs_frag_needed(&frame, 1410));
    assert!(!icmp::needs_frag_needed(&frame, 1500));
    let src = std::net::Ipv4Addr::new(198, 19, 2, 3);
    let mut out = [0u8; 128];
    let n = icmp::frag_needed(&frame, 1410, src, &mut out).unwrap();
    assert_eq!(n, icmp::frag_needed_len(&frame).unwrap());
    assert_eq!(n, 14 + 20 + 8 + 20 + 8);
    let out = &out[..n];
    // Ethernet: addresses swapped.
    assert_eq!(&out[0..6], &frame[6..12]);
    assert_eq!(&out[6..12], &frame[0..6]);
    let ip = ipv4::Packet::new_checked(&out[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.protocol(), ipv4::PROTO_ICMP);
    assert_eq!(ip.src(), src);
    assert_eq!(ip.dst(), std::net::Ipv4Addr::new(198, 19, 1, 2));
    let icmp_bytes = ip.payload();
    assert_eq!(ipv4::checksum(icmp_bytes), 0, "ICMP checksum verifies");
    assert_eq!(icmp_bytes[0], 3);
    assert_eq!(icmp_bytes[1], 4);
    assert_eq!(u16::from_be_bytes([icmp_bytes[6], icmp_bytes[7]]), 1410);
    assert_eq!(&icmp_bytes[8..], &frame[14..14 + 28]);
    insta::assert_snapshot!("icmp_frag_needed", hexdump(out));
}

#[test]
fn frag_needed_on_tiny_payload_quotes_what_there_is() {
    let frame = big_df_udp_frame(24);
    let mut out = [0u8; 128];
    let n = icmp::frag_needed(
        &frame,
        1400,
        std::net::Ipv4Addr::new(198, 19, 2, 3),
        &mut out,
    )
    .unwrap();
    assert_eq!(n, 14 + 20 + 8 + 24);
}

#[test]
fn frag_needed_refuses_frames_it_must_not_answer() {
    let src = std::net::Ipv4Addr::new(198, 19, 2, 3);
    let mut out = [0u8; 128];
    let mut no_df = big_df_udp_frame(1500);
    no_df[14 + 6] = 0;
    assert!(!icmp::needs_frag_needed(&no_df, 1400));
    assert!(icmp::frag_needed(&no_df, 1400, src, &mut out).is_err());

    let mut icmp_err = big_df_udp_frame(1500);
    icmp_err[14 + 9] = ipv4::PROTO_ICMP;
    icmp_err[14 + 20] = 3;
    assert_eq!(
        icmp::frag_needed(&icmp_err, 1400, src, &mut out),
        Err(WireError::Malformed("packet is itself an ICMP error"))
    );

    let frame = big_df_udp_frame(1500);
    let mut small = [0u8; 40];
    assert_eq!(
        icmp::frag_needed(&frame, 1400, src, &mut small),
        Err(WireError::BufferTooSmall {
            needed: 70,
            available: 40
        })
    );
}

#[test]
fn vxlan_header_round_trip_and_snapshot() {
    use overlay::wire::vxlan;
    let r = vxlan::Repr {
        src_short_id: 0x0abc,
        dst_short_id: 0x0001,
    };
    let mut b = vec![0u8; r.buffer_len()];
    r.emit(&mut vxlan::Packet::new_unchecked(&mut b[..]))
        .unwrap();
    let p = vxlan::Packet::new_checked(&b[..]).unwrap();
    assert_eq!(p.vni(), 0x0abc | 0x0001 << 12);
    assert_eq!(vxlan::Repr::parse(&p).unwrap(), r);
    insta::assert_snapshot!("vxlan", hexdump(&b));
}
