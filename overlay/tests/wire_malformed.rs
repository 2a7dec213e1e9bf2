//! Truncated and malformed inputs: every decoder returns an error, never panics.
#![allow(clippy::unwrap_used)]

mod wire_common;

use overlay::wire::{
    auth, control, fragment, gossip, handshake, heartbeat, ipam, ipv4, sleeve, WireError,
};
use rstest::rstest;
use wire_common::*;

fn parse_hello(b: &[u8]) -> Result<handshake::Repr, WireError> {
    handshake::Repr::parse(&handshake::Packet::new_checked(b)?)
}
fn parse_proof(b: &[u8]) -> Result<auth::Repr, WireError> {
    auth::Repr::parse(&auth::Packet::new_checked(b)?)
}
fn parse_topology(b: &[u8]) -> Result<gossip::Repr, WireError> {
    let packet = gossip::Packet::new_checked(b)?;
    let all = gossip::Repr::parse(&packet);
    // A router that wants none of the entries still refuses what is malformed.
    let none = gossip::Repr::parse_with(&packet, |_, _| false);
    assert_eq!(
        all.as_ref().err(),
        none.as_ref().err(),
        "same verdict when skipping"
    );
    all
}
fn parse_claims(b: &[u8]) -> Result<ipam::Repr, WireError> {
    ipam::Repr::parse(&ipam::Packet::new_checked(b)?)
}
fn parse_heartbeat(b: &[u8]) -> Result<heartbeat::Repr, WireError> {
    heartbeat::Repr::parse(&heartbeat::Packet::new_checked(b)?)
}
fn parse_sleeve(b: &[u8]) -> Result<sleeve::Repr, WireError> {
    sleeve::Repr::parse(&sleeve::Packet::new_checked(b)?)
}
fn parse_fragment(b: &[u8]) -> Result<fragment::Repr, WireError> {
    fragment::Repr::parse(&fragment::Packet::new_checked(b)?)
}
fn parse_control(b: &[u8]) -> Result<control::Repr, WireError> {
    control::Repr::parse(&control::Packet::new_checked(b)?)
}

/// Applies `edit` to a copy of `bytes`.
fn edited(mut bytes: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    edit(&mut bytes);
    bytes
}

#[rstest]
#[case::empty(vec![], WireError::Truncated)]
#[case::header_cut(emit_hello(&hello())[..40].to_vec(), WireError::Truncated)]
#[case::name_cut(edited(emit_hello(&hello()), |b| { b.pop(); }), WireError::Truncated)]
#[case::bad_magic(edited(emit_hello(&hello()), |b| b[0] = b'X'), WireError::BadMagic)]
#[case::empty_range(edited(emit_hello(&hello()), |b| { b[4] = 3; b[5] = 2; }),
    WireError::Malformed("hello version range is empty"))]
#[case::version_zero(edited(emit_hello(&hello()), |b| { b[4] = 0; }),
    WireError::Malformed("hello version range is empty"))]
#[case::short_id_13_bits(edited(emit_hello(&hello()), |b| b[16] = 0x10),
    WireError::Malformed("hello short id exceeds 12 bits"))]
#[case::empty_name(edited(emit_hello(&hello()), |b| { b[82] = 0; b.truncate(83); }),
    WireError::Malformed("hello peer name is empty"))]
#[case::name_not_utf8(edited(emit_hello(&hello()), |b| b[83] = 0xff),
    WireError::Malformed("hello peer name is not UTF-8"))]
fn hello_rejects(#[case] bytes: Vec<u8>, #[case] want: WireError) {
    assert_eq!(parse_hello(&bytes), Err(want));
}

#[rstest]
#[case::empty(vec![], WireError::Truncated)]
#[case::cut(emit_proof(&proof())[..35].to_vec(), WireError::Truncated)]
#[case::version(edited(emit_proof(&proof()), |b| b[0] = 9), WireError::BadVersion(9))]
#[case::role(edited(emit_proof(&proof()), |b| b[1] = 2),
    WireError::Malformed("auth proof role is neither 0 nor 1"))]
fn proof_rejects(#[case] bytes: Vec<u8>, #[case] want: WireError) {
    assert_eq!(parse_proof(&bytes), Err(want));
}

#[rstest]
#[case::empty(vec![], WireError::Truncated)]
#[case::count_without_peers(vec![1, 0, 0, 1], WireError::Truncated)]
#[case::too_many_peers(vec![1, 0, 0x10, 0x01], WireError::TooLong { len: 4097, max: 4096 })]
#[case::version(edited(emit_topology(&topology()), |b| b[0] = 2), WireError::BadVersion(2))]
#[case::cut_in_connection(emit_topology(&topology())[..50].to_vec(), WireError::Truncated)]
#[case::cut_at_end(edited(emit_topology(&topology()), |b| { b.pop(); }), WireError::Truncated)]
#[case::bad_family(edited(emit_topology(&topology()), |b| b[32] = 5),
    WireError::Malformed("gossip address family is neither 4 nor 6"))]
#[case::short_id_13_bits(edited(emit_topology(&topology()), |b| b[20] = 0x10),
    WireError::Malformed("gossip short id field has reserved bits 12-14 set"))]
#[case::reserved_flag_14(edited(emit_topology(&topology()), |b| b[20] = 0x40),
    WireError::Malformed("gossip short id field has reserved bits 12-14 set"))]
#[case::conn_count_huge(edited(emit_topology(&topology()), |b| { b[22] = 0xff; b[23] = 0xff; }),
    WireError::TooLong { len: 0xffff, max: 4096 })]
#[case::peer_name_not_utf8(edited(emit_topology(&topology()), |b| b[25] = 0xc3),
    WireError::Malformed("gossip peer name is empty or not UTF-8"))]
fn topology_rejects(#[case] bytes: Vec<u8>, #[case] want: WireError) {
    assert_eq!(parse_topology(&bytes), Err(want));
}

#[rstest]
#[case::empty(vec![], WireError::Truncated)]
#[case::cut(emit_claims(&claims())[..27].to_vec(), WireError::Truncated)]
#[case::version(edited(emit_claims(&claims()), |b| b[0] = 0), WireError::BadVersion(0))]
#[case::too_many(vec![1, 0, 0x10, 0x01], WireError::TooLong { len: 4097, max: 4096 })]
#[case::zero_size(edited(emit_claims(&claims()), |b| b[4 + 4..4 + 8].fill(0)),
    WireError::Malformed("ipam claim of zero addresses"))]
#[case::past_end_of_space(edited(emit_claims(&claims()), |b| { b[4..8].fill(0xff); }),
    WireError::Malformed("ipam claim runs past 255.255.255.255"))]
fn claims_reject(#[case] bytes: Vec<u8>, #[case] want: WireError) {
    assert_eq!(parse_claims(&bytes), Err(want));
}

#[rstest]
#[case::empty(vec![], WireError::Truncated)]
#[case::padding_cut(edited(emit_heartbeat(&heartbeat()), |b| { b.pop(); }), WireError::Truncated)]
#[case::version(edited(emit_heartbeat(&heartbeat()), |b| b[1] = 7), WireError::BadVersion(7))]
#[case::kind(edited(emit_heartbeat(&heartbeat()), |b| b[0] = 0),
    WireError::Malformed("heartbeat kind is neither 1 nor 2"))]
fn heartbeat_rejects(#[case] bytes: Vec<u8>, #[case] want: WireError) {
    assert_eq!(parse_heartbeat(&bytes), Err(want));
}

#[rstest]
#[case::empty(vec![], WireError::Truncated)]
#[case::header_cut(vec![1; 15], WireError::Truncated)]
#[case::encrypted_without_tag(edited(emit_sleeve(&sleeve_header(), &[b"ab"]), |b| b[1] = 1),
    WireError::Truncated)]
#[case::version(edited(emit_sleeve(&sleeve_header(), &[b"ab"]), |b| b[0] = 2), WireError::BadVersion(2))]
#[case::unknown_flags(edited(emit_sleeve(&sleeve_header(), &[b"ab"]), |b| b[1] = 0x80),
    WireError::Malformed("sleeve header has unknown flags"))]
#[case::src_13_bits(edited(emit_sleeve(&sleeve_header(), &[b"ab"]), |b| b[2] = 0x10),
    WireError::Malformed("sleeve short id exceeds 12 bits"))]
#[case::dst_13_bits(edited(emit_sleeve(&sleeve_header(), &[b"ab"]), |b| b[4] = 0xf0),
    WireError::Malformed("sleeve short id exceeds 12 bits"))]
fn sleeve_rejects(#[case] bytes: Vec<u8>, #[case] want: WireError) {
    assert_eq!(parse_sleeve(&bytes), Err(want));
}

fn fragment_with(edit: impl FnOnce(&mut fragment::Repr), piece: &[u8]) -> Vec<u8> {
    let mut r = fragment_header();
    edit(&mut r);
    // Emit checks the header too: write the fields by hand.
    let mut b = vec![0u8; fragment::HEADER_LEN];
    b[0..4].copy_from_slice(&r.burst.to_be_bytes());
    b[4..8].copy_from_slice(&r.total.to_be_bytes());
    b[8..10].copy_from_slice(&r.index.to_be_bytes());
    b[10..12].copy_from_slice(&r.count.to_be_bytes());
    b.extend_from_slice(piece);
    b
}

#[rstest]
#[case::empty(vec![], WireError::Truncated)]
#[case::header_cut(emit_fragment(&fragment_header(), b"x")[..11].to_vec(), WireError::Truncated)]
#[case::no_piece(fragment_with(|_| {}, b""), WireError::Malformed("sleeve fragment with an empty piece"))]
#[case::one_piece(fragment_with(|r| { r.count = 1; r.index = 0 }, b"x"),
    WireError::Malformed("sleeve fragment count outside 2..=256"))]
#[case::too_many(fragment_with(|r| r.count = 257, b"x"),
    WireError::Malformed("sleeve fragment count outside 2..=256"))]
#[case::index_past_count(fragment_with(|r| r.index = 3, b"x"),
    WireError::Malformed("sleeve fragment index past its count"))]
#[case::total_too_big(fragment_with(|r| r.total = 70_000, b"x"),
    WireError::TooLong { len: 70_000, max: 65_537 })]
#[case::piece_past_total(fragment_with(|r| r.total = 2, b"xyz"),
    WireError::Malformed("sleeve fragment piece longer than its body"))]
fn fragment_rejects(#[case] bytes: Vec<u8>, #[case] want: WireError) {
    assert_eq!(parse_fragment(&bytes), Err(want));
}

#[rstest]
#[case::lone_prefix_byte(vec![0], vec![Err(WireError::Truncated)])]
#[case::frame_cut(vec![0, 5, 1, 2], vec![Err(WireError::Truncated)])]
#[case::zero_len(vec![0, 1, 9, 0, 0, 0, 1, 9], vec![Ok(vec![9]), Err(WireError::Malformed("sleeve frame of length zero"))])]
#[case::good_then_garbage(vec![0, 1, 7, 0xff], vec![Ok(vec![7]), Err(WireError::Truncated)])]
#[case::empty_body(vec![], vec![])]
fn sleeve_frames_on_garbage(#[case] body: Vec<u8>, #[case] want: Vec<Result<Vec<u8>, WireError>>) {
    let got: Vec<_> = sleeve::FrameIter::new(&body)
        .map(|r| r.map(<[u8]>::to_vec))
        .collect();
    assert_eq!(got, want);
}

#[rstest]
#[case::empty(vec![], WireError::Truncated)]
#[case::length_only(vec![0, 0, 0, 2], WireError::Truncated)]
#[case::zero_length(vec![0, 0, 0, 0, 1], WireError::Malformed("control frame length is zero"))]
#[case::over_bound(vec![0, 0x10, 0, 1, 1], WireError::TooLong { len: 0x10_0001, max: 1 << 20 })]
#[case::payload_cut(vec![0, 0, 0, 4, 6, b'b', b'y'], WireError::Truncated)]
fn control_rejects(#[case] bytes: Vec<u8>, #[case] want: WireError) {
    assert_eq!(parse_control(&bytes), Err(want));
}

#[rstest]
#[case::empty(vec![], WireError::Truncated)]
#[case::v6(edited(big_df_udp_frame(100)[14..].to_vec(), |b| b[0] = 0x65), WireError::BadVersion(6))]
#[case::ihl_small(edited(big_df_udp_frame(100)[14..].to_vec(), |b| b[0] = 0x44),
    WireError::Malformed("ipv4 header length below 20"))]
#[case::total_below_header(edited(big_df_udp_frame(100)[14..].to_vec(), |b| { b[2] = 0; b[3] = 10; }),
    WireError::Malformed("ipv4 total length below header length"))]
#[case::total_past_buffer(big_df_udp_frame(100)[14..99].to_vec(), WireError::Truncated)]
fn ipv4_rejects(#[case] bytes: Vec<u8>, #[case] want: WireError) {
    assert_eq!(ipv4::Packet::new_checked(&bytes[..]).err(), Some(want));
}

type Emit = fn(&mut [u8]) -> Result<(), WireError>;

#[rstest]
#[case::hello(hello().buffer_len(), |b: &mut [u8]| hello().emit(&mut handshake::Packet::new_unchecked(b)))]
#[case::proof(proof().buffer_len(), |b: &mut [u8]| proof().emit(&mut auth::Packet::new_unchecked(b)))]
#[case::topology(topology().buffer_len(), |b: &mut [u8]| topology().emit(&mut gossip::Packet::new_unchecked(b)))]
#[case::claims(claims().buffer_len(), |b: &mut [u8]| claims().emit(&mut ipam::Packet::new_unchecked(b)))]
#[case::heartbeat(heartbeat().buffer_len(), |b: &mut [u8]| heartbeat().emit(&mut heartbeat::Packet::new_unchecked(b)))]
#[case::sleeve(sleeve_header().buffer_len(), |b: &mut [u8]| sleeve_header().emit(&mut sleeve::Packet::new_unchecked(b)))]
fn emit_into_short_buffer_fails_cleanly(#[case] len: usize, #[case] emit: Emit) {
    let mut short = vec![0u8; len - 1];
    assert_eq!(
        emit(&mut short),
        Err(WireError::BufferTooSmall {
            needed: len,
            available: len - 1
        })
    );
    let mut exact = vec![0u8; len];
    assert_eq!(emit(&mut exact), Ok(()));
}

#[test]
fn emit_refuses_values_the_format_cannot_carry() {
    let mut buf = vec![0u8; 1024];
    let long = handshake::Repr {
        name: "x".repeat(256),
        ..hello()
    };
    assert_eq!(
        long.emit(&mut handshake::Packet::new_unchecked(&mut buf[..])),
        Err(WireError::TooLong { len: 256, max: 255 })
    );
    let wide = sleeve::Repr {
        src_short_id: 0x1000,
        ..sleeve_header()
    };
    assert!(wide
        .emit(&mut sleeve::Packet::new_unchecked(&mut buf[..]))
        .is_err());
    let big = control::Repr {
        msg_type: control::MessageType::Topology,
        payload_len: 1 << 20,
    };
    assert!(big
        .emit(&mut control::Packet::new_unchecked(&mut buf[..]))
        .is_err());
}
