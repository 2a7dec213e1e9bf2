//! A seeded random fuzz loop over every decoder: 100k buffers each, half
//! pure noise, half mutations of a valid message. Passing means no decoder
//! panicked and every message that parsed re-emitted to the same `Repr`
//! (see `overlay::wire::fuzzing`). Deterministic: a failure reproduces.
#![allow(clippy::unwrap_used)]

mod wire_common;

use overlay::odp::flow::{
    Action, FlowAttr, FlowMessage, FlowStats, KeyAttr, PacketAttr, PacketCmd, PacketMessage,
    TunnelKeyAttr,
};
use overlay::odp::wire::OvsCmd;
use overlay::wire::{control, fragment, fuzzing};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rstest::rstest;
use wire_common::*;

const ROUNDS: usize = 100_000;

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..5) {
            0 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b[i] = rng.random();
            }
            1 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            2 => {
                let n = rng.random_range(0..=b.len());
                b.truncate(n);
            }
            3 => {
                for _ in 0..rng.random_range(1..16) {
                    b.push(rng.random());
                }
            }
            _ if b.len() >= 2 => {
                // Length fields are the usual victims: write an extreme u16.
                let i = rng.random_range(0..b.len() - 1);
                let v: u16 = *[0, 1, 0x0fff, 0x1000, 0xffff]
                    .get(rng.random_range(0..5))
                    .unwrap();
                b[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
            _ => {}
        }
    }
    b
}

fn run(seed: u64, valid: &[u8], harness: fn(&[u8])) -> (usize, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    // The valid seed must itself pass through the harness.
    harness(valid);
    let (mut noise, mut mutated) = (0, 0);
    for _ in 0..ROUNDS {
        let buf = if rng.random() {
            noise += 1;
            let mut b = vec![0u8; rng.random_range(0..256)];
            rng.fill(&mut b[..]);
            b
        } else {
            mutated += 1;
            mutate(&mut rng, valid)
        };
        harness(&buf);
    }
    (noise, mutated)
}

#[rstest]
#[case::control(1, emit_control(control::MessageType::Close, b"bye"), fuzzing::control)]
#[case::hello(2, emit_hello(&hello()), fuzzing::hello)]
#[case::auth(3, emit_proof(&proof()), fuzzing::auth)]
#[case::gossip(4, emit_topology(&topology()), fuzzing::gossip)]
#[case::ipam(5, emit_claims(&claims()), fuzzing::ipam)]
#[case::heartbeat(6, emit_heartbeat(&heartbeat()), fuzzing::heartbeat)]
#[case::sleeve(7, emit_sleeve(&sleeve_header(), &[b"abc", b"defg"]), fuzzing::sleeve)]
#[case::icmp(8, big_df_udp_frame(1500), fuzzing::icmp)]
#[case::vxlan(10, vec![0x08, 0, 0, 0, 0, 0x20, 0x01, 0, 0xaa], fuzzing::vxlan)]
#[case::fragment(11, [&[1u8][..], &emit_fragment(&fragment_header(), &[7; 20]), &emit_fragment(&fragment::Repr { index: 0, ..fragment_header() }, &[7; 20])].concat(), fuzzing::fragment)]
#[case::macs(12, vec![0, 2, 2, 0, 0, 0, 0, 1, 0x0a, 0xbb, 0xcc, 0xdd, 0xee, 0xff], fuzzing::macs)]
#[case::fast_report(13, vec![3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], fuzzing::fast_report)]
#[case::sleeve_open(9, emit_sleeve(&sleeve_header(), &[b"abc"]), fuzzing::sleeve_open)]
#[case::odp_flow(14, odp_seed(2, 1, &egress_flow()), fuzzing::odp)]
#[case::odp_miss(15, odp_seed(3, 1, &miss()), fuzzing::odp)]
fn decoder_survives_random_buffers(
    #[case] seed: u64,
    #[case] valid: Vec<u8>,
    #[case] harness: fn(&[u8]),
) {
    let (noise, mutated) = run(seed, &valid, harness);
    assert_eq!(noise + mutated, ROUNDS);
    assert!(
        noise > ROUNDS / 4 && mutated > ROUNDS / 4,
        "both kinds of input were fed"
    );
}

/// An ODP message body behind the two bytes `fuzzing::odp` reads: family, command.
fn odp_seed(family: u8, cmd: u8, msg: &impl netlink_packet_core::Emitable) -> Vec<u8> {
    let mut b = vec![family, cmd];
    let at = b.len();
    b.resize(at + msg.buffer_len(), 0);
    msg.emit(&mut b[at..]);
    b
}

fn egress_flow() -> FlowMessage {
    FlowMessage {
        cmd: OvsCmd::New,
        dp_ifindex: 7,
        attrs: vec![
            FlowAttr::Key(vec![
                KeyAttr::InPort(1),
                KeyAttr::Ethernet {
                    src: [2, 0, 0, 0, 0, 1],
                    dst: [2, 0, 0, 0, 0, 2],
                },
            ]),
            FlowAttr::Actions(vec![
                Action::SetTunnel(vec![
                    TunnelKeyAttr::Id(0x2001),
                    TunnelKeyAttr::Ipv4Dst(std::net::Ipv4Addr::new(198, 18, 0, 2)),
                    TunnelKeyAttr::Ttl(64),
                ]),
                Action::Output(2),
            ]),
            FlowAttr::Stats(FlowStats {
                packets: 3,
                bytes: 180,
            }),
        ],
    }
}

fn miss() -> PacketMessage {
    PacketMessage {
        cmd: PacketCmd::Miss,
        dp_ifindex: 7,
        attrs: vec![
            PacketAttr::Packet(vec![0xab; 40]),
            PacketAttr::Key(vec![
                KeyAttr::InPort(3),
                KeyAttr::Tunnel(vec![
                    TunnelKeyAttr::Id(0x2001),
                    TunnelKeyAttr::Ipv4Src(std::net::Ipv4Addr::new(198, 18, 0, 2)),
                    TunnelKeyAttr::DontFragment,
                    TunnelKeyAttr::TpDst(6784),
                ]),
                KeyAttr::EtherType(0x0800),
            ]),
            PacketAttr::Mru(1500),
        ],
    }
}

#[test]
fn mutations_of_valid_messages_often_still_parse() {
    // Guards the fuzz loop against testing only the first length check:
    // a useful share of mutated hellos must get past check_len.
    let mut rng = StdRng::seed_from_u64(11);
    let valid = emit_hello(&hello());
    let parsed = (0..2000)
        .filter(|_| {
            let b = mutate(&mut rng, &valid);
            overlay::wire::handshake::Packet::new_checked(&b[..]).is_ok()
        })
        .count();
    assert!(
        parsed > 200,
        "only {parsed} of 2000 mutated hellos passed check_len"
    );
}
