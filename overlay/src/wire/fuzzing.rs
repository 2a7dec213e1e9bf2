//! Decoder harnesses shared by the cargo-fuzz targets (`overlay/fuzz`) and
//! the seeded random test (`overlay/tests/wire_fuzz.rs`).
//!
//! Each function feeds arbitrary bytes to one decoder, touches every
//! accessor and iterator the decoder makes safe, and when the bytes parse,
//! re-emits the `Repr` and parses it again: a panic here (from the decoder,
//! or from the round-trip assertion) is a bug the fuzzer reports.

use super::{
    auth, control, fast_report, fragment, gossip, handshake, heartbeat, icmp, ipam, ipv4, macs,
    sleeve, vxlan,
};

/// Emits `repr` with `emit` into a buffer of `len` bytes and returns it.
fn re_emit(len: usize, emit: impl FnOnce(&mut [u8]) -> super::Result<()>) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    if let Err(e) = emit(&mut buf) {
        panic!("a parsed message must re-emit: {e}");
    }
    buf
}

/// Control framing.
pub fn control(data: &[u8]) {
    let _ = control::frame_len(data);
    // Splitting a stream must consume exactly one whole frame each time.
    let mut rest = data;
    while let Ok(Some((frame, after))) = control::next_frame(rest) {
        assert_eq!(frame.total_len() + after.len(), rest.len());
        rest = after;
    }
    let Ok(p) = control::Packet::new_checked(data) else {
        return;
    };
    let _ = (p.payload(), p.total_len());
    if let Ok(r) = control::Repr::parse(&p) {
        let again = re_emit(r.buffer_len(), |b| {
            r.emit(&mut control::Packet::new_unchecked(b))
        });
        let back = control::Repr::parse(&control::Packet::new_unchecked(&again[..]));
        assert_eq!(back, Ok(r));
    }
}

/// Hello.
pub fn hello(data: &[u8]) {
    let Ok(p) = handshake::Packet::new_checked(data) else {
        return;
    };
    let _ = (p.magic(), p.name(), p.nonce(), p.dh_public(), p.features());
    if let Ok(r) = handshake::Repr::parse(&p) {
        let again = re_emit(r.buffer_len(), |b| {
            r.emit(&mut handshake::Packet::new_unchecked(b))
        });
        let back = handshake::Repr::parse(&handshake::Packet::new_unchecked(&again[..]));
        assert_eq!(back.as_ref(), Ok(&r));
    }
}

/// Password proof.
pub fn auth(data: &[u8]) {
    let Ok(p) = auth::Packet::new_checked(data) else {
        return;
    };
    let _ = (p.role(), p.proof());
    if let Ok(r) = auth::Repr::parse(&p) {
        let again = re_emit(r.buffer_len(), |b| {
            r.emit(&mut auth::Packet::new_unchecked(b))
        });
        let back = auth::Repr::parse(&auth::Packet::new_unchecked(&again[..]));
        assert_eq!(back, Ok(r));
    }
}

/// Topology gossip, including iteration over an unchecked buffer.
pub fn gossip(data: &[u8]) {
    let unchecked = gossip::Packet::new_unchecked(data);
    for peer in unchecked.peers() {
        let _ = (peer.uid(), peer.name());
        for c in peer.connections() {
            let _ = (c.address(), c.peer_name(), c.established());
        }
    }
    let Ok(p) = gossip::Packet::new_checked(data) else {
        return;
    };
    if let Ok(r) = gossip::Repr::parse(&p) {
        let again = re_emit(r.buffer_len(), |b| {
            r.emit(&mut gossip::Packet::new_unchecked(b))
        });
        let back = gossip::Repr::parse(&gossip::Packet::new_unchecked(&again[..]));
        assert_eq!(back.as_ref(), Ok(&r));
    }
}

/// IPAM claims.
pub fn ipam(data: &[u8]) {
    let Ok(p) = ipam::Packet::new_checked(data) else {
        return;
    };
    for i in 0..=usize::from(p.count()) {
        let _ = p.claim(i);
    }
    if let Ok(r) = ipam::Repr::parse(&p) {
        let again = re_emit(r.buffer_len(), |b| {
            r.emit(&mut ipam::Packet::new_unchecked(b))
        });
        let back = ipam::Repr::parse(&ipam::Packet::new_unchecked(&again[..]));
        assert_eq!(back.as_ref(), Ok(&r));
    }
}

/// MAC announcements.
pub fn macs(data: &[u8]) {
    let Ok(p) = macs::Packet::new_checked(data) else {
        return;
    };
    for i in 0..=usize::from(p.count()) {
        let _ = p.mac(i);
    }
    if let Ok(r) = macs::Repr::parse(&p) {
        let again = re_emit(r.buffer_len(), |b| {
            r.emit(&mut macs::Packet::new_unchecked(b))
        });
        let back = macs::Repr::parse(&macs::Packet::new_unchecked(&again[..]));
        assert_eq!(back.as_ref(), Ok(&r));
    }
}

/// Fast-path reports.
pub fn fast_report(data: &[u8]) {
    let Ok(p) = fast_report::Packet::new_checked(data) else {
        return;
    };
    let _ = (p.flags(), p.timestamp_ns());
    if let Ok(r) = fast_report::Repr::parse(&p) {
        let again = re_emit(r.buffer_len(), |b| {
            r.emit(&mut fast_report::Packet::new_unchecked(b))
        });
        let back = fast_report::Repr::parse(&fast_report::Packet::new_unchecked(&again[..]));
        assert_eq!(back.as_ref(), Ok(&r));
    }
}

/// Heartbeats and acks.
pub fn heartbeat(data: &[u8]) {
    let Ok(p) = heartbeat::Packet::new_checked(data) else {
        return;
    };
    let _ = (p.total_len(), p.sequence(), p.timestamp_ns());
    if let Ok(r) = heartbeat::Repr::parse(&p) {
        let again = re_emit(r.buffer_len(), |b| {
            r.emit(&mut heartbeat::Packet::new_unchecked(b))
        });
        let back = heartbeat::Repr::parse(&heartbeat::Packet::new_unchecked(&again[..]));
        assert_eq!(back, Ok(r));
    }
}

/// Sleeve datagrams and their frames (iterated even when unchecked).
pub fn sleeve(data: &[u8]) {
    for f in sleeve::Packet::new_unchecked(data).frames().flatten() {
        assert!(!f.is_empty());
    }
    let Ok(p) = sleeve::Packet::new_checked(data) else {
        return;
    };
    let _ = (p.header(), p.counter());
    if let Ok(r) = sleeve::Repr::parse(&p) {
        let again = re_emit(r.buffer_len(), |b| {
            r.emit(&mut sleeve::Packet::new_unchecked(b))
        });
        let back = sleeve::Repr::parse(&sleeve::Packet::new_unchecked(&again[..]));
        // An encrypted header re-emitted alone lacks its tag: compare views.
        if !r.encrypted {
            assert_eq!(back, Ok(r));
        }
    }
}

/// Fragment headers, and their pieces fed to a reassembler: the input is cut into up to eight
/// fragment datagrams at offsets its first bytes choose, so pieces of one burst, duplicates
/// and contradictions all occur.
pub fn fragment(data: &[u8]) {
    let Some((&cuts, rest)) = data.split_first() else {
        return;
    };
    let mut r = crate::reassembly::Reassembler::new();
    let step = usize::from(cuts % 8) + 1;
    let len = rest.len().div_ceil(step).max(1);
    for chunk in rest.chunks(len) {
        let Ok(p) = fragment::Packet::new_checked(chunk) else {
            continue;
        };
        let _ = (p.burst(), p.total(), p.index(), p.count(), p.piece());
        let Ok(f) = fragment::Repr::parse(&p) else {
            continue;
        };
        let again = re_emit(f.buffer_len(), |b| {
            f.emit(&mut fragment::Packet::new_unchecked(b))
        });
        let back = fragment::Repr::parse(&fragment::Packet::new_unchecked(
            &[&again[..], p.piece()].concat()[..],
        ));
        assert_eq!(back, Ok(f));
        if let Ok(Some((body, _))) = r.push(&f, cuts, p.piece()) {
            assert_eq!(body.len(), f.total as usize);
        }
    }
}

/// Ethernet/IPv4 and the ICMP "fragmentation needed" builder.
pub fn icmp(data: &[u8]) {
    if let Ok(ip) = ipv4::Packet::new_checked(data) {
        let _ = (ip.payload(), ip.verify_checksum(), ip.src(), ip.dst());
    }
    let _ = icmp::needs_frag_needed(data, 1400);
    let mut out = [0u8; 256];
    if let Ok(n) = icmp::frag_needed(data, 1400, std::net::Ipv4Addr::new(198, 19, 0, 1), &mut out) {
        let ip = ipv4::Packet::new_checked(&out[14..n]);
        match ip {
            Ok(ip) => {
                assert!(ip.verify_checksum());
                assert_eq!(ipv4::checksum(ip.payload()), 0);
            }
            Err(e) => panic!("frag_needed wrote an invalid IPv4 packet: {e}"),
        }
    }
}

/// The sleeve decryptor: garbage must be refused, never accepted or panic.
pub fn sleeve_open(data: &[u8]) {
    let mut opener = crate::crypto::sleeve::Opener::new(&[7u8; 32]);
    let mut buf = data.to_vec();
    assert!(
        opener.open(&mut buf).is_err(),
        "random bytes authenticated under a fixed key"
    );
}

/// VXLAN header.
pub fn vxlan(data: &[u8]) {
    let Ok(p) = vxlan::Packet::new_checked(data) else {
        return;
    };
    let _ = (p.payload(), p.vni(), p.flags());
    if let Ok(r) = vxlan::Repr::parse(&p) {
        let again = re_emit(r.buffer_len(), |b| {
            r.emit(&mut vxlan::Packet::new_unchecked(b))
        });
        let back = vxlan::Repr::parse(&vxlan::Packet::new_unchecked(&again[..]));
        assert_eq!(back, Ok(r));
    }
}

/// Replies and upcalls of the Open vSwitch families, as the kernel sends them: a netlink
/// message whose generic netlink command and family pick the parser. Parsed messages re-emit
/// and parse back to the same value.
pub fn odp(data: &[u8]) {
    use crate::odp::flow::{FlowMessage, PacketMessage};
    use crate::odp::wire::{DatapathMessage, VportMessage};
    use netlink_packet_core::{Emitable, ParseableParametrized};
    use netlink_packet_generic::GenlHeader;

    fn round_trip<M>(body: &[u8], header: GenlHeader)
    where
        M: Emitable + ParseableParametrized<[u8], GenlHeader> + PartialEq + std::fmt::Debug,
    {
        let emit = |m: &M| {
            let mut b = vec![0u8; m.buffer_len()];
            m.emit(&mut b);
            b
        };
        let again = |m: &M| match M::parse_with_param(&emit(m), header) {
            Ok(back) => back,
            Err(e) => panic!("a parsed message must parse again once emitted: {e:?}"),
        };
        if let Ok(m) = M::parse_with_param(body, header) {
            // One round first: an unknown attribute's reserved flag bits (which the kernel
            // never sets on these families) come back as netlink-packet-core's DefaultNla
            // normalises them; from then on every round must give the same message.
            let once = again(&m);
            assert_eq!(again(&once), once);
        }
    }

    let _ = crate::odp::upcall::parse_upcall(data);
    // The first byte picks the family, the second is the command; the rest is the body.
    let [family, cmd, body @ ..] = data else {
        return;
    };
    let header = GenlHeader {
        cmd: *cmd,
        version: 1,
    };
    match family % 4 {
        0 => round_trip::<DatapathMessage>(body, header),
        1 => round_trip::<VportMessage>(body, header),
        2 => round_trip::<FlowMessage>(body, header),
        _ => round_trip::<PacketMessage>(body, header),
    }
}
