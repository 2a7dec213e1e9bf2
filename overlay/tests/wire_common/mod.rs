//! Canonical messages shared by the wire test files.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};

use overlay::wire::{auth, control, fragment, gossip, handshake, heartbeat, ipam, sleeve};

pub fn hello() -> handshake::Repr {
    handshake::Repr {
        version_min: handshake::PROTOCOL_VERSION_MIN,
        version_max: handshake::PROTOCOL_VERSION_MAX,
        password: true,
        features: handshake::Features::ALL,
        peer_uid: 0x0123_4567_89ab_cdef,
        short_id: 0x0abc,
        nonce: [0x11; 32],
        dh_public: [0x22; 32],
        name: "host-a".to_owned(),
    }
}

pub fn proof() -> auth::Repr {
    auth::Repr {
        role: auth::Role::Initiator,
        proof: [0xaa; 32],
    }
}

pub fn topology() -> gossip::Repr {
    gossip::Repr {
        peers: vec![
            gossip::PeerRepr {
                name: "host-a".to_owned(),
                uid: 1,
                short_id: 1,
                version: 7,
                connections: vec![
                    gossip::ConnectionRepr {
                        peer_name: "host-b".to_owned(),
                        address: "198.18.0.2:6783".parse().unwrap(),
                        established: true,
                    },
                    gossip::ConnectionRepr {
                        peer_name: "host-c".to_owned(),
                        // IPv4-mapped so that even an IPv6 test address lies in 198.18.0.0/15.
                        address: "[::ffff:198.18.0.3]:6783".parse().unwrap(),
                        established: false,
                    },
                ],
                removed: false,
            },
            gossip::PeerRepr {
                name: "host-b".to_owned(),
                uid: 2,
                short_id: 0x0fff,
                version: 1,
                connections: vec![],
                removed: false,
            },
            // A tombstone: host-d was removed as of version 10.
            gossip::PeerRepr {
                name: "host-d".to_owned(),
                uid: 4,
                short_id: 0x0123,
                version: 10,
                connections: vec![],
                removed: true,
            },
        ],
    }
}

pub fn claims() -> ipam::Repr {
    ipam::Repr {
        claims: vec![
            ipam::ClaimRepr {
                start: Ipv4Addr::new(198, 19, 0, 0),
                size: 256,
                owner: 1,
                version: 3,
            },
            ipam::ClaimRepr {
                start: Ipv4Addr::new(198, 19, 1, 0),
                size: 256,
                owner: 2,
                version: 1,
            },
        ],
    }
}

pub fn heartbeat() -> heartbeat::Repr {
    heartbeat::Repr {
        kind: heartbeat::Kind::Heartbeat,
        connection_id: 42,
        sequence: 7,
        timestamp_ns: 1_000_000_000,
        padding_len: 6,
    }
}

pub fn sleeve_header() -> sleeve::Repr {
    sleeve::Repr {
        encrypted: false,
        heartbeat: false,
        src_short_id: 1,
        dst_short_id: 2,
        counter: 5,
    }
}

pub fn underlay_addr() -> SocketAddr {
    "198.18.0.1:6783".parse().unwrap()
}

pub fn emit_hello(r: &handshake::Repr) -> Vec<u8> {
    let mut b = vec![0u8; r.buffer_len()];
    r.emit(&mut handshake::Packet::new_unchecked(&mut b[..]))
        .unwrap();
    b
}

pub fn emit_proof(r: &auth::Repr) -> Vec<u8> {
    let mut b = vec![0u8; r.buffer_len()];
    r.emit(&mut auth::Packet::new_unchecked(&mut b[..]))
        .unwrap();
    b
}

pub fn emit_topology(r: &gossip::Repr) -> Vec<u8> {
    let mut b = vec![0u8; r.buffer_len()];
    r.emit(&mut gossip::Packet::new_unchecked(&mut b[..]))
        .unwrap();
    b
}

pub fn emit_claims(r: &ipam::Repr) -> Vec<u8> {
    let mut b = vec![0u8; r.buffer_len()];
    r.emit(&mut ipam::Packet::new_unchecked(&mut b[..]))
        .unwrap();
    b
}

pub fn emit_heartbeat(r: &heartbeat::Repr) -> Vec<u8> {
    let mut b = vec![0xffu8; r.buffer_len()];
    r.emit(&mut heartbeat::Packet::new_unchecked(&mut b[..]))
        .unwrap();
    b
}

/// A plaintext sleeve datagram carrying `frames`.
pub fn emit_sleeve(r: &sleeve::Repr, frames: &[&[u8]]) -> Vec<u8> {
    let mut b = vec![0u8; 2048];
    r.emit(&mut sleeve::Packet::new_unchecked(&mut b[..]))
        .unwrap();
    let mut w = sleeve::FrameWriter::new(&mut b, 0).unwrap();
    for f in frames {
        w.push(f).unwrap();
    }
    let len = w.len();
    b.truncate(len);
    b
}

/// A fragment header of a split burst.
pub fn fragment_header() -> fragment::Repr {
    fragment::Repr {
        burst: 3,
        total: 50,
        index: 1,
        count: 3,
    }
}

/// A fragment header followed by `piece`.
pub fn emit_fragment(r: &fragment::Repr, piece: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; r.buffer_len()];
    r.emit(&mut fragment::Packet::new_unchecked(&mut b[..]))
        .unwrap();
    b.extend_from_slice(piece);
    b
}

/// A control frame around `payload`.
pub fn emit_control(t: control::MessageType, payload: &[u8]) -> Vec<u8> {
    let r = control::Repr {
        msg_type: t,
        payload_len: payload.len(),
    };
    let mut b = vec![0u8; r.buffer_len()];
    let mut p = control::Packet::new_unchecked(&mut b[..]);
    r.emit(&mut p).unwrap();
    p.payload_mut().copy_from_slice(payload);
    b
}

/// An Ethernet + IPv4 (DF) + UDP frame of `ip_len` IP bytes from
/// 198.19.1.2 to 198.19.2.3.
pub fn big_df_udp_frame(ip_len: usize) -> Vec<u8> {
    let mut f = vec![0u8; 14 + ip_len];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[198, 19, 1, 2]);
    ip[16..20].copy_from_slice(&[198, 19, 2, 3]);
    let c = overlay::wire::ipv4::checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    if ip_len < 28 {
        return f;
    }
    // UDP header: ports 40000 -> 5201, length, zero checksum; then payload.
    ip[20..22].copy_from_slice(&40000u16.to_be_bytes());
    ip[22..24].copy_from_slice(&5201u16.to_be_bytes());
    ip[24..26].copy_from_slice(&((ip_len - 20) as u16).to_be_bytes());
    for (i, b) in ip[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}
