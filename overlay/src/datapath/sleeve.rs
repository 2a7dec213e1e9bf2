//! Sleeve: the userspace datapath. Frames the overlay bridge sends to a TAP port are packed,
//! several per datagram when they fit, into sleeve datagrams (UDP 6783) to the peer that owns
//! the destination MAC (learned from received frames) or, for broadcast and unknown unicast,
//! to every peer once; received datagrams are opened and their frames written back into the
//! bridge. With a password each datagram is sealed with the connection's keys.
//!
//! Two blocking threads do the work (TAP to UDP, UDP to TAP); the router changes the peer set
//! under a lock they take for reading. Anything malformed, unauthenticated or replayed is
//! dropped and counted, never a panic.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use std::io::{IoSlice, IoSliceMut};

use nix::sys::socket::{self as nsock, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::crypto::sleeve::{Opener, Sealer};
use crate::crypto::CryptoError;
use crate::datapath::sock::{
    raise_receive_buffer, raise_send_buffer, set_int_opt, set_nonblocking, wait_readable,
};
use crate::datapath::{Datapath, DatapathStats, PeerSpec, PeerStats};
use crate::reassembly::{Reassembler, Refusal};
use crate::wire::fragment;
use crate::wire::sleeve::{
    self as wire, FrameIter, FrameWriter, FLAG_FRAGMENT, FLAG_VNET_HDR, HEADER_LEN, TAG_LEN,
};
use crate::wire::{heartbeat, icmp};

/// IPv4 + UDP header bytes in front of a sleeve datagram.
const IP_UDP: usize = 28;
/// Largest datagram handled.
const MAX_DATAGRAM: usize = 65_535;
/// Largest UDP payload over IPv4.
const MAX_UDP: usize = 65_507;
/// The `virtio_net_hdr` in front of every frame on the TAP (and on the wire).
const VNET: usize = wire::VNET_HDR_LEN;
/// `virtio_net_hdr.gso_type` of a plain frame.
const GSO_NONE: u8 = 0;
/// An Ethernet header without VLAN tags.
const ETH_HLEN: usize = 14;
/// `virtio_net_hdr.flags`: the checksum from `csum_start` is left to fill.
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// Frames read from the TAP before the batch is flushed.
const BATCH: usize = 64;
/// Segments one UDP GSO send may carry (the kernel's `UDP_MAX_SEGMENTS` of older kernels).
const GSO_MAX_SEGMENTS: usize = 64;

/// A heartbeat that arrived: the router acknowledges it over the control connection.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatSeen {
    /// The sending peer's underlay address.
    pub ip: IpAddr,
    /// The heartbeat as received (its padding length is what arrived).
    pub heartbeat: heartbeat::Repr,
}

#[derive(Default)]
struct Counters {
    tx_frames: AtomicU64,
    tx_datagrams: AtomicU64,
    tx_bytes: AtomicU64,
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    tx_flooded: AtomicU64,
    acked: AtomicU64,
    frag_needed: AtomicU64,
    replayed: AtomicU64,
    auth_failures: AtomicU64,
    unauthenticated: AtomicU64,
    bursts_split: AtomicU64,
    bursts_joined: AtomicU64,
    pieces_dropped: AtomicU64,
}

struct Peer {
    name: String,
    ip: IpAddr,
    short_id: u16,
    connection_id: u64,
    sealer: Option<Mutex<Sealer>>,
    opener: Option<Mutex<Opener>>,
    /// Largest acked datagram in the newest acked round, and that round.
    path_mtu: AtomicU32,
    best_round: AtomicU64,
    last_ack_round: AtomicU64,
    /// The last round that probed this peer (0: none yet), and how many probe rounds in a row
    /// went unanswered (counted every RETRY_AFTER rounds; 2 or more: unhealthy).
    last_probe_round: AtomicU64,
    unanswered_rounds: AtomicU32,
    /// Number of the next split body sent to this peer.
    next_burst: AtomicU32,
    /// Split bodies from this peer being put back together (receive thread only).
    reassembly: Mutex<Reassembler>,
    /// Whether broadcasts and unknown unicast go to this peer through sleeve (cleared while
    /// the fast path carries them, so each reaches the peer once).
    flooded: AtomicBool,
    /// Shared with the peer's next connection: a connection replaced by another to the same
    /// peer (two routers dialling each other at once) keeps counting where it was.
    c: Arc<Counters>,
}

impl Peer {
    fn encrypted(&self) -> bool {
        self.sealer.is_some()
    }

    /// Container IP bytes that fit one datagram to this peer.
    fn inner_mtu(&self) -> usize {
        wire::overlay_mtu(self.path_mtu.load(Relaxed) as usize, self.encrypted())
    }
}

struct Shared {
    local_short_id: AtomicU32,
    underlay_mtu: u32,
    sock: UdpSocket,
    probe_sock: UdpSocket,
    tap: OwnedFd,
    peers: RwLock<HashMap<IpAddr, Arc<Peer>>>,
    macs: RwLock<HashMap<[u8; 6], IpAddr>>,
    heartbeats: Mutex<Option<tokio::sync::mpsc::UnboundedSender<HeartbeatSeen>>>,
    probe_round: AtomicU64,
    stop: AtomicBool,
    unknown_peer: AtomicU64,
    malformed: AtomicU64,
    tx_dropped: AtomicU64,
    injected: AtomicU64,
    /// Cleared when the kernel refuses a UDP GSO send: pieces then go one `sendto` each.
    gso: AtomicBool,
}

/// The sleeve datapath of one router.
pub struct Sleeve {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Sleeve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleeve").finish_non_exhaustive()
    }
}

/// Probe sizes (underlay IP bytes) tried each heartbeat round, largest first.
pub fn probe_sizes(underlay_mtu: u32) -> Vec<usize> {
    let mut sizes: Vec<usize> = [
        9000, 4000, 1500, 1480, 1460, 1440, 1420, 1400, 1380, 1360, 1340, 1320, 1300, 1280, 1200,
        1100, 1000, 800, 576,
    ]
    .into_iter()
    .filter(|s| *s <= underlay_mtu as usize)
    .collect();
    if !sizes.contains(&(underlay_mtu as usize)) {
        sizes.insert(0, underlay_mtu as usize);
    }
    sizes
}

/// Rounds between two confirmations of a known path MTU.
pub const CONFIRM_EVERY: u64 = 10;
/// Rounds a probe may go unanswered before the whole list is sent again.
pub const RETRY_AFTER: u64 = 3;

/// The probe sizes to send one peer in heartbeat round `round` (one a second), given the last
/// round that probed it (`last_probed`, 0: never), the last round it answered, and its path
/// MTU: the whole list of [`probe_sizes`] at first and when the last probe went unanswered for
/// [`RETRY_AFTER`] rounds (the path shrank, or the peer is unreachable); once known, every [`CONFIRM_EVERY`]
/// rounds only the path MTU and the underlay MTU (a path that grew back to it is noticed);
/// otherwise nothing. An idle connection costs two probes every ten seconds instead of a
/// list of up to nineteen (seventeen at 1500) every second.
pub fn probe_plan(
    round: u64,
    last_probed: u64,
    last_answered: u64,
    path_mtu: u32,
    underlay_mtu: u32,
) -> Vec<usize> {
    // An answer may take a while on a loaded host: the list is sent again only after
    // RETRY_AFTER rounds without one (re-sending every round would only add to the load that
    // delays the answers).
    let waiting = last_answered < last_probed;
    if last_probed == 0 || waiting && round.saturating_sub(last_probed) >= RETRY_AFTER {
        return probe_sizes(underlay_mtu);
    }
    if waiting {
        return Vec::new();
    }
    if round.saturating_sub(last_probed) < CONFIRM_EVERY {
        return Vec::new();
    }
    let mut sizes = vec![underlay_mtu as usize];
    if path_mtu < underlay_mtu {
        sizes.push(path_mtu as usize);
    }
    sizes
}

/// The underlay IP size of a heartbeat datagram carrying `padding` bytes of padding.
pub fn heartbeat_size(padding: u16, encrypted: bool) -> usize {
    IP_UDP
        + HEADER_LEN
        + wire::FRAME_PREFIX_LEN
        + heartbeat::HEADER_LEN
        + usize::from(padding)
        + if encrypted { TAG_LEN } else { 0 }
}

impl Sleeve {
    /// Starts sleeve on `tap`, listening on UDP `port` of every underlay address. Heartbeats
    /// that arrive are handed to `heartbeats`.
    pub fn start(
        tap: OwnedFd,
        port: u16,
        underlay_mtu: u32,
        local_short_id: u16,
        heartbeats: tokio::sync::mpsc::UnboundedSender<HeartbeatSeen>,
    ) -> std::io::Result<Self> {
        let sock = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?;
        // Frames too big for the path still cross: the underlay fragments them.
        set_int_opt(
            &sock,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DONT,
        )?;
        // Room for dozens of 60 kB bursts; the FORCE variants pass net.core.*mem_max (root).
        raise_receive_buffer(&sock, 4 << 20);
        raise_send_buffer(&sock, 4 << 20);
        // Pieces of a split burst that arrive as one GSO packet are read in one go (kernels
        // without UDP GRO hand them over one by one, which works too).
        let _ = set_int_opt(&sock, libc::SOL_UDP, libc::UDP_GRO, 1);
        let probe_sock = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
        // Probes carry DF and ignore the cached path MTU: only what really crosses is acked.
        set_int_opt(
            &probe_sock,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        )?;
        set_nonblocking(&tap)?;
        let shared = Arc::new(Shared {
            local_short_id: AtomicU32::new(u32::from(local_short_id)),
            underlay_mtu,
            sock,
            probe_sock,
            tap,
            peers: RwLock::new(HashMap::new()),
            macs: RwLock::new(HashMap::new()),
            heartbeats: Mutex::new(Some(heartbeats)),
            probe_round: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            unknown_peer: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            tx_dropped: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            gso: AtomicBool::new(true),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("sleeve-tx".into())
            .spawn(move || tap_to_udp(&s))?;
        let s = shared.clone();
        std::thread::Builder::new()
            .name("sleeve-rx".into())
            .spawn(move || udp_to_tap(&s))?;
        Ok(Sleeve { shared })
    }

    /// Changes the short id put in sent headers.
    pub fn set_short_id(&self, id: u16) {
        self.shared.local_short_id.store(u32::from(id), Relaxed);
    }

    /// Whether sleeve floods broadcasts and unknown unicast to the peer `name` (it does unless
    /// the peer's connection is on the fast path). A connection coming back to sleeve has its
    /// path probed again with the whole list in the next round: the fast path may have left
    /// because the path shrank, which the paced confirmations would only notice ten rounds
    /// later.
    pub fn set_flooded(&self, name: &str, on: bool) {
        let peers = self.shared.peers.read().unwrap_or_else(|e| e.into_inner());
        for p in peers.values().filter(|p| p.name == name) {
            if on && !p.flooded.swap(on, Relaxed) {
                p.last_probe_round.store(0, Relaxed);
            } else {
                p.flooded.store(on, Relaxed);
            }
        }
    }

    /// Stops the threads (they notice within a second).
    pub fn stop(&self) {
        self.shared.stop.store(true, Relaxed);
    }
}

impl Drop for Sleeve {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Datapath for Sleeve {
    fn kind(&self) -> &'static str {
        "sleeve"
    }

    fn add_peer(&self, spec: PeerSpec) {
        let counters = {
            let peers = self.shared.peers.read().unwrap_or_else(|e| e.into_inner());
            peers
                .get(&spec.ip)
                .filter(|p| p.name == spec.name)
                .map(|p| p.c.clone())
                .unwrap_or_default()
        };
        let peer = Peer {
            name: spec.name,
            ip: spec.ip,
            short_id: spec.short_id,
            connection_id: spec.connection_id,
            sealer: spec.keys.as_ref().map(|k| Mutex::new(k.sealer())),
            opener: spec.keys.as_ref().map(|k| Mutex::new(k.opener())),
            // Optimistic until the first acked probe round says otherwise.
            path_mtu: AtomicU32::new(self.shared.underlay_mtu),
            best_round: AtomicU64::new(0),
            last_ack_round: AtomicU64::new(0),
            last_probe_round: AtomicU64::new(0),
            unanswered_rounds: AtomicU32::new(0),
            next_burst: AtomicU32::new(0),
            reassembly: Mutex::new(Reassembler::new()),
            flooded: AtomicBool::new(true),
            c: counters,
        };
        let mut peers = self.shared.peers.write().unwrap_or_else(|e| e.into_inner());
        peers.insert(spec.ip, Arc::new(peer));
    }

    fn remove_peer(&self, name: &str) {
        let mut peers = self.shared.peers.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<IpAddr> = peers
            .values()
            .filter(|p| p.name == name)
            .map(|p| p.ip)
            .collect();
        for ip in &gone {
            peers.remove(ip);
        }
        drop(peers);
        let mut macs = self.shared.macs.write().unwrap_or_else(|e| e.into_inner());
        macs.retain(|_, ip| !gone.contains(ip));
    }

    fn peer_stats(&self, name: &str) -> Option<PeerStats> {
        let peers = self.shared.peers.read().unwrap_or_else(|e| e.into_inner());
        let p = peers.values().find(|p| p.name == name)?;
        Some(PeerStats {
            tx_frames: p.c.tx_frames.load(Relaxed),
            tx_datagrams: p.c.tx_datagrams.load(Relaxed),
            tx_bytes: p.c.tx_bytes.load(Relaxed),
            rx_frames: p.c.rx_frames.load(Relaxed),
            rx_bytes: p.c.rx_bytes.load(Relaxed),
            tx_flooded: p.c.tx_flooded.load(Relaxed),
            heartbeats_acked: p.c.acked.load(Relaxed),
            path_mtu: p.path_mtu.load(Relaxed),
            overlay_mtu: p.inner_mtu() as u32,
            frag_needed_sent: p.c.frag_needed.load(Relaxed),
            replayed: p.c.replayed.load(Relaxed),
            auth_failures: p.c.auth_failures.load(Relaxed),
            unauthenticated: p.c.unauthenticated.load(Relaxed),
            bursts_split: p.c.bursts_split.load(Relaxed),
            bursts_joined: p.c.bursts_joined.load(Relaxed),
            pieces_dropped: p.c.pieces_dropped.load(Relaxed),
            healthy: p.unanswered_rounds.load(Relaxed) < 2,
        })
    }

    fn stats(&self) -> DatapathStats {
        let s = &self.shared;
        DatapathStats {
            unknown_peer: s.unknown_peer.load(Relaxed),
            malformed: s.malformed.load(Relaxed),
            tx_dropped: s.tx_dropped.load(Relaxed),
            injected: s.injected.load(Relaxed),
        }
    }

    fn probe(&self, round: u64) {
        self.shared.probe_round.store(round, Relaxed);
        let peers: Vec<Arc<Peer>> = {
            let peers = self.shared.peers.read().unwrap_or_else(|e| e.into_inner());
            peers.values().cloned().collect()
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        for p in peers {
            // A peer the fast path carries is not probed: its full-size heartbeats, answered,
            // already prove the path carries the underlay MTU, and at a hundred peers the
            // probes and their acknowledgements were a tenth of an idle mesh's CPU. Back on
            // sleeve, `set_flooded` has the whole list sent in the next round.
            if !p.flooded.load(Relaxed) {
                continue;
            }
            let last_probed = p.last_probe_round.load(Relaxed);
            let last_answered = p.last_ack_round.load(Relaxed);
            let sizes = probe_plan(
                round,
                last_probed,
                last_answered,
                p.path_mtu.load(Relaxed),
                self.shared.underlay_mtu,
            );
            if sizes.is_empty() {
                continue;
            }
            if last_probed != 0 && last_answered < last_probed {
                p.unanswered_rounds.fetch_add(1, Relaxed);
            }
            p.last_probe_round.store(round, Relaxed);
            for size in sizes {
                let padding = heartbeat::Repr::padding_for(
                    size - IP_UDP - HEADER_LEN - if p.encrypted() { TAG_LEN } else { 0 },
                    wire::FRAME_PREFIX_LEN,
                );
                let hb = heartbeat::Repr {
                    kind: heartbeat::Kind::Heartbeat,
                    connection_id: p.connection_id,
                    sequence: round,
                    timestamp_ns: 0,
                    padding_len: padding,
                };
                let mut frame = vec![0u8; hb.buffer_len()];
                if hb
                    .emit(&mut heartbeat::Packet::new_unchecked(&mut frame[..]))
                    .is_err()
                {
                    continue;
                }
                if let Some(len) = self.shared.build(&p, &mut buf, &[&frame], true, false) {
                    let _ = self
                        .shared
                        .probe_sock
                        .send_to(&buf[..len], SocketAddr::new(p.ip, crate::CONTROL_PORT));
                }
            }
        }
    }

    fn acked(&self, name: &str, round: u64, size: usize) {
        let peers = self.shared.peers.read().unwrap_or_else(|e| e.into_inner());
        let Some(p) = peers.values().find(|p| p.name == name) else {
            return;
        };
        p.c.acked.fetch_add(1, Relaxed);
        p.last_ack_round.fetch_max(round, Relaxed);
        p.unanswered_rounds.store(0, Relaxed);
        let size = size.min(self.shared.underlay_mtu as usize) as u32;
        let best = p.best_round.load(Relaxed);
        if round > best {
            p.best_round.store(round, Relaxed);
            p.path_mtu.store(size, Relaxed);
        } else if round == best {
            p.path_mtu.fetch_max(size, Relaxed);
        }
    }
}

impl Shared {
    /// Packs `frames` into one datagram to `p` in `buf`, sealed when the session is encrypted.
    fn build(
        &self,
        p: &Peer,
        buf: &mut [u8],
        frames: &[&[u8]],
        heartbeat: bool,
        vnet: bool,
    ) -> Option<usize> {
        let reserve = if p.encrypted() { TAG_LEN } else { 0 };
        let end = buf.len().min(MAX_UDP);
        let buf = &mut buf[..end];
        let mut w = FrameWriter::new(buf, reserve).ok()?;
        for f in frames {
            w.push(f).ok()?;
        }
        let body = w.body_len();
        let repr = wire::Repr {
            encrypted: false,
            heartbeat,
            src_short_id: self.local_short_id.load(Relaxed) as u16,
            dst_short_id: p.short_id,
            counter: 0,
        };
        let mut pkt = wire::Packet::new_unchecked(&mut *buf);
        repr.emit(&mut pkt).ok()?;
        if vnet {
            // GSO bursts carry the TAP's virtio_net_hdr.
            pkt.set_flags(pkt.flags() | FLAG_VNET_HDR);
        }
        match &p.sealer {
            Some(s) => s
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .seal(buf, body)
                .ok(),
            None => Some(HEADER_LEN + body),
        }
    }

    fn send_frames(&self, p: &Peer, frames: &[&[u8]], buf: &mut [u8], vnet: bool) {
        let reserve = if p.encrypted() { TAG_LEN } else { 0 };
        let limit = (p.path_mtu.load(Relaxed) as usize)
            .saturating_sub(IP_UDP)
            .max(HEADER_LEN + reserve + 64);
        let mut start = 0;
        while start < frames.len() {
            // Take as many frames as fit under the path MTU (at least one: the transmit loop
            // sends frames bigger than the path as sleeve fragments, so one that gets here
            // alone fits).
            let mut used = HEADER_LEN + reserve;
            let mut end = start;
            while end < frames.len() {
                let need = wire::FRAME_PREFIX_LEN + frames[end].len();
                if end > start && used + need > limit {
                    break;
                }
                used += need;
                end += 1;
            }
            match self.build(p, buf, &frames[start..end], false, vnet) {
                Some(len) => match self
                    .sock
                    .send_to(&buf[..len], SocketAddr::new(p.ip, crate::CONTROL_PORT))
                {
                    Ok(_) => {
                        p.c.tx_datagrams.fetch_add(1, Relaxed);
                        p.c.tx_frames.fetch_add((end - start) as u64, Relaxed);
                        let bytes: usize = frames[start..end].iter().map(|f| f.len()).sum();
                        p.c.tx_bytes.fetch_add(bytes as u64, Relaxed);
                    }
                    Err(_) => {
                        self.tx_dropped.fetch_add((end - start) as u64, Relaxed);
                    }
                },
                None => {
                    self.tx_dropped.fetch_add((end - start) as u64, Relaxed);
                }
            }
            start = end;
        }
    }

    /// Sends one TCP burst (`frame`: virtio_net_hdr + Ethernet) to `p`. A burst that fits the
    /// path goes whole; a bigger one is cut into pieces ([`fragment`]) of one datagram each,
    /// built side by side in `out` and handed to the kernel in UDP GSO sends, so the underlay
    /// carries one packet per send instead of dozens of IP fragments.
    fn send_burst(&self, p: &Peer, frame: &[u8], out: &mut Vec<u8>) {
        let reserve = if p.encrypted() { TAG_LEN } else { 0 };
        let total = wire::FRAME_PREFIX_LEN + frame.len();
        let room = (p.path_mtu.load(Relaxed) as usize)
            .saturating_sub(IP_UDP + HEADER_LEN + reserve)
            .min(MAX_UDP);
        let Some((piece, count)) = fragment::plan(total, room) else {
            self.send_frames(p, std::slice::from_ref(&frame), out, true);
            return;
        };
        let seg = HEADER_LEN + fragment::HEADER_LEN + piece + reserve;
        let count = usize::from(count);
        if out.len() < seg * count {
            out.resize(seg * count, 0);
        }
        let burst = p.next_burst.fetch_add(1, Relaxed);
        let prefix = u16::try_from(frame.len()).unwrap_or(u16::MAX).to_be_bytes();
        let header = wire::Repr {
            encrypted: false,
            heartbeat: false,
            src_short_id: self.local_short_id.load(Relaxed) as u16,
            dst_short_id: p.short_id,
            counter: 0,
        };
        let mut sealer = p
            .sealer
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()));
        let mut len = 0;
        for i in 0..count {
            let start = i * piece;
            let end = (start + piece).min(total);
            let d = &mut out[i * seg..(i + 1) * seg];
            let mut pkt = wire::Packet::new_unchecked(&mut *d);
            if header.emit(&mut pkt).is_err() {
                self.tx_dropped.fetch_add(1, Relaxed);
                return;
            }
            pkt.set_flags(FLAG_VNET_HDR | FLAG_FRAGMENT);
            let f = fragment::Repr {
                burst,
                total: total as u32,
                index: i as u16,
                count: count as u16,
            };
            let body = &mut d[HEADER_LEN..];
            if f.emit(&mut fragment::Packet::new_unchecked(&mut *body))
                .is_err()
            {
                self.tx_dropped.fetch_add(1, Relaxed);
                return;
            }
            copy_from_prefixed(
                &prefix,
                frame,
                start..end,
                &mut body[fragment::HEADER_LEN..],
            );
            let body_len = fragment::HEADER_LEN + end - start;
            len = match sealer.as_mut() {
                Some(s) => match s.seal(d, body_len) {
                    Ok(n) => n,
                    Err(_) => {
                        self.tx_dropped.fetch_add(1, Relaxed);
                        return;
                    }
                },
                None => HEADER_LEN + body_len,
            };
        }
        drop(sealer);
        // Every piece is `seg` bytes but the last, which is `len`.
        let bytes = (count - 1) * seg + len;
        let to = nsock::SockaddrIn::from(match p.ip {
            IpAddr::V4(ip) => std::net::SocketAddrV4::new(ip, crate::CONTROL_PORT),
            IpAddr::V6(_) => {
                self.tx_dropped.fetch_add(1, Relaxed);
                return;
            }
        });
        // Counted before the send: on one CPU the peer may join the burst before this thread
        // runs again, and `bursts_joined` must never run ahead of `bursts_split`.
        p.c.bursts_split.fetch_add(1, Relaxed);
        if self.send_segments(&out[..bytes], seg, &to) {
            p.c.tx_datagrams.fetch_add(count as u64, Relaxed);
            p.c.tx_frames.fetch_add(1, Relaxed);
            p.c.tx_bytes.fetch_add(frame.len() as u64, Relaxed);
        } else {
            self.tx_dropped.fetch_add(1, Relaxed);
        }
    }

    /// Sends `data`, datagrams of `seg` bytes back to back (the last may be shorter), to `to`:
    /// in UDP GSO sends of at most [`GSO_MAX_SEGMENTS`] datagrams and [`MAX_UDP`] bytes, or
    /// one `sendto` per datagram once the kernel refused GSO.
    fn send_segments(&self, data: &[u8], seg: usize, to: &nsock::SockaddrIn) -> bool {
        let fd = self.sock.as_raw_fd();
        let per_send = GSO_MAX_SEGMENTS.min(MAX_UDP / seg).max(1);
        let mut ok = true;
        for group in data.chunks(per_send * seg) {
            if self.gso.load(Relaxed) && group.len() > seg {
                let size = seg as u16;
                let cmsg = [ControlMessage::UdpGsoSegments(&size)];
                match nsock::sendmsg(
                    fd,
                    &[IoSlice::new(group)],
                    &cmsg,
                    MsgFlags::empty(),
                    Some(to),
                ) {
                    Ok(_) => continue,
                    // A full socket buffer drops like any other send.
                    Err(nix::errno::Errno::ENOBUFS | nix::errno::Errno::EAGAIN) => {
                        ok = false;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(
                            "UDP GSO send refused ({e}); sending sleeve pieces one by one from now on"
                        );
                        self.gso.store(false, Relaxed);
                    }
                }
            }
            for d in group.chunks(seg) {
                if nsock::sendto(fd, d, to, MsgFlags::empty()).is_err() {
                    ok = false;
                }
            }
        }
        ok
    }

    /// Writes a frame that starts with its virtio_net_hdr.
    fn write_tap(&self, frame: &[u8]) -> bool {
        // SAFETY: write(2) of an initialised buffer to our TAP descriptor.
        let n = unsafe { libc::write(self.tap.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        n >= 0
    }

    /// Writes a bare Ethernet frame behind an empty virtio_net_hdr.
    fn write_tap_plain(&self, frame: &[u8]) -> bool {
        let hdr = [0u8; VNET];
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr() as *mut libc::c_void,
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            },
        ];
        // SAFETY: writev(2) of two initialised buffers that outlive the call; the kernel only
        // reads through the pointers.
        let n = unsafe { libc::writev(self.tap.as_raw_fd(), iov.as_ptr(), 2) };
        n >= 0
    }
}

/// Frames for one peer from one TAP batch: plain Ethernet frames (packed several per
/// datagram) and GSO bursts with their virtio_net_hdr (one per datagram).
type PeerBatch<'a> = (Vec<&'a [u8]>, Vec<&'a [u8]>);

/// Copies bytes `range` of the body `prefix ++ frame` into `dst` (which is at least that long).
fn copy_from_prefixed(
    prefix: &[u8; wire::FRAME_PREFIX_LEN],
    frame: &[u8],
    range: std::ops::Range<usize>,
    dst: &mut [u8],
) {
    let mut at = 0;
    let mut pos = range.start;
    if pos < prefix.len() {
        let n = (prefix.len() - pos).min(range.len());
        dst[..n].copy_from_slice(&prefix[pos..pos + n]);
        at = n;
        pos += n;
    }
    let rest = range.end - pos;
    let from = pos - prefix.len();
    dst[at..at + rest].copy_from_slice(&frame[from..from + rest]);
}

fn is_multicast(mac: &[u8]) -> bool {
    mac.first().is_some_and(|b| b & 1 == 1)
}

fn tap_to_udp(s: &Shared) {
    let mut arena = vec![0u8; BATCH * MAX_DATAGRAM.min(16_384)];
    let mut out = vec![0u8; MAX_DATAGRAM + 64];
    let mut icmp_buf = [0u8; 256];
    let fd = s.tap.as_raw_fd();
    while !s.stop.load(Relaxed) {
        if !wait_readable(fd, 500) {
            continue;
        }
        // Read up to BATCH frames into the arena.
        let mut frames: Vec<(usize, usize)> = Vec::with_capacity(BATCH);
        let mut pos = 0;
        while frames.len() < BATCH {
            if arena.len() - pos < MAX_DATAGRAM {
                if frames.is_empty() {
                    arena.resize(pos + MAX_DATAGRAM, 0);
                } else {
                    break;
                }
            }
            let room = &mut arena[pos..];
            // SAFETY: read(2) into a live, writable buffer of `room.len()` bytes.
            let n = unsafe { libc::read(fd, room.as_mut_ptr().cast(), room.len()) };
            if n <= 0 {
                break;
            }
            let n = n as usize;
            frames.push((pos, n));
            pos += n;
        }
        if frames.is_empty() {
            continue;
        }
        // Plain frames cross without their virtio_net_hdr, so finish any checksum the kernel
        // left to the "hardware" (short frames: cheap).
        for &(off, len) in &frames {
            if len >= VNET + 14 {
                let (hdr, eth) = arena[off..off + len].split_at_mut(VNET);
                if hdr[1] == GSO_NONE && hdr[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
                    finish_checksum(hdr, eth);
                    // Done: a frame that crosses as sleeve fragments keeps this header, and
                    // the far TAP must not be asked to fill the checksum again.
                    hdr[0] &= !VIRTIO_NET_HDR_F_NEEDS_CSUM;
                }
            }
        }
        let peers = s.peers.read().unwrap_or_else(|e| e.into_inner());
        if peers.is_empty() {
            s.tx_dropped.fetch_add(frames.len() as u64, Relaxed);
            continue;
        }
        let macs = s.macs.read().unwrap_or_else(|e| e.into_inner());
        // Per peer: plain Ethernet frames (packed), and GSO bursts with their header (one per
        // datagram).
        let mut per_peer: HashMap<IpAddr, PeerBatch<'_>> = HashMap::new();
        for &(off, len) in &frames {
            let frame = &arena[off..off + len];
            if len < VNET + 14 {
                s.malformed.fetch_add(1, Relaxed);
                continue;
            }
            let (hdr, eth) = frame.split_at(VNET);
            let mut dst_mac = [0u8; 6];
            dst_mac.copy_from_slice(&eth[..6]);
            let known = if is_multicast(&dst_mac) {
                None
            } else {
                macs.get(&dst_mac).and_then(|ip| peers.get(ip))
            };
            let targets: Vec<&Arc<Peer>> = match known {
                Some(p) => vec![p],
                None => peers.values().filter(|p| p.flooded.load(Relaxed)).collect(),
            };
            let flooded = known.is_none();
            for p in targets {
                if let Some(mtu) = too_big(hdr, eth, p.inner_mtu()) {
                    // The ICMP comes "from" the original destination, so reverse-path checks
                    // in the container accept it.
                    let src = frame_dst_ip(eth).unwrap_or(Ipv4Addr::UNSPECIFIED);
                    if let Ok(n) = icmp::frag_needed(eth, mtu, src, &mut icmp_buf) {
                        if s.write_tap_plain(&icmp_buf[..n]) {
                            p.c.frag_needed.fetch_add(1, Relaxed);
                        }
                    }
                    continue;
                }
                if flooded {
                    p.c.tx_flooded.fetch_add(1, Relaxed);
                }
                let lists = per_peer.entry(p.ip).or_default();
                if goes_whole(hdr, eth, p.inner_mtu()) {
                    lists.0.push(eth);
                } else {
                    lists.1.push(frame);
                }
            }
        }
        for (ip, (plain, gso)) in &per_peer {
            if let Some(p) = peers.get(ip) {
                s.send_frames(p, plain, &mut out, false);
                for g in gso {
                    s.send_burst(p, g, &mut out);
                }
            }
        }
    }
}

/// Whether a frame from the TAP goes packed with others as it is, rather than as a burst cut
/// into sleeve fragments: plain frames that fit a datagram to a peer whose inner MTU is
/// `inner_mtu`. A plain frame bigger than the path (no DF, or its sender already got a
/// frag-needed) is cut like a burst: the underlay may drop IP fragments, or every datagram
/// above some size (weave's 105_frag).
fn goes_whole(hdr: &[u8], eth: &[u8], inner_mtu: usize) -> bool {
    hdr[1] == GSO_NONE && eth.len() <= inner_mtu + ETH_HLEN
}

/// Fills the checksum a `virtio_net_hdr` with NEEDS_CSUM leaves open: the one's complement
/// sum from `csum_start` to the end (the field already holds the pseudo-header sum), stored at
/// `csum_start + csum_offset`. Out-of-range offsets leave the frame as it is.
fn finish_checksum(hdr: &[u8], eth: &mut [u8]) {
    let start = usize::from(u16::from_le_bytes([hdr[6], hdr[7]]));
    let offset = usize::from(u16::from_le_bytes([hdr[8], hdr[9]]));
    let at = start + offset;
    if start >= eth.len() || at + 2 > eth.len() {
        return;
    }
    let sum = crate::wire::ipv4::checksum(&eth[start..]);
    eth[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// The MTU to advertise when a DF frame (or, for a GSO burst, each of its segments) is too big
/// for a peer whose overlay MTU is `mtu`; `None` when it fits or must simply be carried.
fn too_big(hdr: &[u8], eth: &[u8], mtu: usize) -> Option<u16> {
    let advertise = u16::try_from(mtu).unwrap_or(u16::MAX);
    let gso_type = hdr.get(1).copied().unwrap_or(GSO_NONE);
    if gso_type == GSO_NONE {
        return icmp::needs_frag_needed(eth, mtu).then_some(advertise);
    }
    // A TCP burst: the segments the receiving kernel cuts are IP header + TCP header +
    // gso_size; they must fit the path when DF is set.
    let gso_size = usize::from(u16::from_le_bytes([*hdr.get(4)?, *hdr.get(5)?]));
    let ip = eth.get(14..)?;
    if eth.get(12..14)? != [0x08, 0x00] || ip.len() < 20 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let df = ip[6] & 0x40 != 0;
    let doff = usize::from(ip.get(ihl + 12)? >> 4) * 4;
    (df && ihl + doff + gso_size > mtu).then_some(advertise)
}

fn frame_dst_ip(frame: &[u8]) -> Option<Ipv4Addr> {
    let ip = frame.get(14..)?;
    let d = ip.get(16..20)?;
    Some(Ipv4Addr::new(d[0], d[1], d[2], d[3]))
}

fn udp_to_tap(s: &Shared) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut cmsg = nix::cmsg_space!(i32);
    let fd = s.sock.as_raw_fd();
    while !s.stop.load(Relaxed) {
        if !wait_readable(fd, 500) {
            continue;
        }
        // One read may return several datagrams of one sender coalesced by UDP GRO; the
        // control message then gives their size (all equal but the last).
        let (n, from, gro) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let Ok(msg) = nsock::recvmsg::<nsock::SockaddrIn>(
                fd,
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT,
            ) else {
                continue;
            };
            let gro = msg.cmsgs().ok().and_then(|mut c| {
                c.find_map(|m| match m {
                    ControlMessageOwned::UdpGroSegments(size) => usize::try_from(size).ok(),
                    _ => None,
                })
            });
            let Some(from) = msg.address else {
                continue;
            };
            (msg.bytes, IpAddr::V4(from.ip()), gro)
        };
        let peer = {
            let peers = s.peers.read().unwrap_or_else(|e| e.into_inner());
            peers.get(&from).cloned()
        };
        let Some(p) = peer else {
            s.unknown_peer.fetch_add(1, Relaxed);
            continue;
        };
        let seg = gro.filter(|g| *g > 0).unwrap_or(n.max(1));
        for datagram in buf[..n].chunks_mut(seg) {
            receive_datagram(s, &p, datagram);
        }
    }
}

/// Handles one sleeve datagram from peer `p`: opens it, hands heartbeats to the router,
/// puts split bursts back together and writes frames into the bridge.
fn receive_datagram(s: &Shared, p: &Peer, datagram: &mut [u8]) {
    let repr = match wire::Packet::new_checked(&*datagram).and_then(|pk| wire::Repr::parse(&pk)) {
        Ok(r) => r,
        Err(_) => {
            s.malformed.fetch_add(1, Relaxed);
            return;
        }
    };
    let datagram_flags = datagram[1];
    if repr.encrypted != p.encrypted() {
        p.c.unauthenticated.fetch_add(1, Relaxed);
        return;
    }
    let body: &[u8] = match &p.opener {
        Some(o) => {
            let mut o = o.lock().unwrap_or_else(|e| e.into_inner());
            match o.open(datagram) {
                Ok(b) => b,
                Err(CryptoError::Duplicate(_)) | Err(CryptoError::TooOld(_)) => {
                    p.c.replayed.fetch_add(1, Relaxed);
                    return;
                }
                Err(CryptoError::Authentication) => {
                    p.c.auth_failures.fetch_add(1, Relaxed);
                    return;
                }
                Err(_) => {
                    s.malformed.fetch_add(1, Relaxed);
                    return;
                }
            }
        }
        None => &datagram[HEADER_LEN..],
    };
    if repr.heartbeat {
        if datagram_flags & FLAG_FRAGMENT != 0 {
            s.malformed.fetch_add(1, Relaxed);
            return;
        }
        receive_heartbeats(s, p, body);
        return;
    }
    let vnet = repr_has_vnet(datagram_flags);
    if datagram_flags & FLAG_FRAGMENT == 0 {
        deliver_frames(s, p, body, vnet);
        return;
    }
    let Ok(frag) = fragment::Packet::new_checked(body).and_then(|f| fragment::Repr::parse(&f))
    else {
        s.malformed.fetch_add(1, Relaxed);
        return;
    };
    let piece = body.get(fragment::HEADER_LEN..).unwrap_or(&[]);
    // The encrypted bit is the session's, not the burst's: compare the rest.
    let flags = datagram_flags & !wire::FLAG_ENCRYPTED;
    let mut r = p.reassembly.lock().unwrap_or_else(|e| e.into_inner());
    let evicted = r.evicted();
    match r.push(&frag, flags, piece) {
        Ok(Some((body, flags))) => {
            p.c.bursts_joined.fetch_add(1, Relaxed);
            deliver_frames(s, p, body, repr_has_vnet(flags));
        }
        Ok(None) => {}
        Err(Refusal::Duplicate | Refusal::Inconsistent) => {
            p.c.pieces_dropped.fetch_add(1, Relaxed);
        }
    }
    let newly_evicted = r.evicted() - evicted;
    if newly_evicted > 0 {
        p.c.pieces_dropped.fetch_add(newly_evicted, Relaxed);
    }
}

fn receive_heartbeats(s: &Shared, p: &Peer, body: &[u8]) {
    for f in FrameIter::new(body) {
        let Ok(f) = f else {
            s.malformed.fetch_add(1, Relaxed);
            break;
        };
        match heartbeat::Packet::new_checked(f).and_then(|pk| heartbeat::Repr::parse(&pk)) {
            Ok(hb) if hb.kind == heartbeat::Kind::Heartbeat => {
                let received = u16::try_from(f.len() - heartbeat::HEADER_LEN).unwrap_or(u16::MAX);
                let seen = HeartbeatSeen {
                    ip: p.ip,
                    heartbeat: heartbeat::Repr {
                        padding_len: received,
                        ..hb
                    },
                };
                if let Some(tx) = s
                    .heartbeats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                {
                    let _ = tx.send(seen);
                }
            }
            _ => {
                s.malformed.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Writes the frames of a plaintext body into the bridge, learning the sender's MACs.
fn deliver_frames(s: &Shared, p: &Peer, body: &[u8], vnet: bool) {
    let mut learned: Option<[u8; 6]> = None;
    for f in FrameIter::new(body) {
        let Ok(f) = f else {
            s.malformed.fetch_add(1, Relaxed);
            break;
        };
        let eth = if vnet {
            f.get(VNET..).unwrap_or(&[])
        } else {
            f
        };
        if eth.len() < 14 {
            s.malformed.fetch_add(1, Relaxed);
            continue;
        }
        let mut src = [0u8; 6];
        src.copy_from_slice(&eth[6..12]);
        if !is_multicast(&src) && learned != Some(src) {
            let known = s
                .macs
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&src)
                .copied();
            if known != Some(p.ip) {
                s.macs
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(src, p.ip);
            }
            learned = Some(src);
        }
        p.c.rx_frames.fetch_add(1, Relaxed);
        p.c.rx_bytes.fetch_add(eth.len() as u64, Relaxed);
        let written = if vnet {
            s.write_tap(f)
        } else {
            s.write_tap_plain(f)
        };
        if written {
            s.injected.fetch_add(1, Relaxed);
        } else {
            // The kernel refuses an inconsistent virtio_net_hdr (EINVAL).
            s.malformed.fetch_add(1, Relaxed);
        }
    }
}

fn repr_has_vnet(flags: u8) -> bool {
    flags & FLAG_VNET_HDR != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Path MTU probing: the whole list until answered, then two sizes every ten rounds; a
    /// confirmation that goes unanswered brings the whole list back at the next round.
    #[rstest::rstest]
    #[case::first_round(5, 0, 0, 1500, 17)]
    #[case::answer_still_on_its_way(7, 5, 0, 1500, 0)]
    #[case::unanswered_for_three_rounds(8, 5, 0, 1500, 17)]
    #[case::answered_recently(6, 5, 5, 1500, 0)]
    #[case::answered_nine_rounds_ago(14, 5, 5, 1500, 0)]
    #[case::confirm_at_the_underlay_mtu(15, 5, 5, 1500, 1)]
    #[case::confirm_a_smaller_path_too(15, 5, 5, 1400, 2)]
    #[case::confirmation_unanswered(18, 15, 5, 1400, 17)]
    fn probes_are_paced_once_the_path_mtu_is_known(
        #[case] round: u64,
        #[case] last_probed: u64,
        #[case] last_answered: u64,
        #[case] path_mtu: u32,
        #[case] probes: usize,
    ) {
        let sizes = probe_plan(round, last_probed, last_answered, path_mtu, 1500);
        assert_eq!(sizes.len(), probes, "{sizes:?}");
        if probes == 2 {
            assert_eq!(sizes, [1500, 1400]);
        }
    }

    #[test]
    fn probe_sizes_start_at_the_underlay_mtu() {
        assert_eq!(probe_sizes(1500)[0], 1500);
        assert_eq!(probe_sizes(1450)[0], 1450);
        assert!(probe_sizes(1400).iter().all(|s| *s <= 1400));
        assert_eq!(*probe_sizes(1400).last().unwrap_or(&0), 576);
    }

    /// An Ethernet/IPv4/TCP frame with `payload` bytes, DF set.
    fn tcp_frame(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[12] = 0x08;
        f[14] = 0x45;
        let total = (20 + 20 + payload) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[20] = 0x40;
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[198, 19, 0, 1]);
        f[30..34].copy_from_slice(&[198, 19, 0, 2]);
        f[34 + 12] = 5 << 4;
        f
    }

    fn vnet(gso_type: u8, gso_size: u16) -> [u8; VNET] {
        let mut h = [0u8; VNET];
        h[1] = gso_type;
        h[4..6].copy_from_slice(&gso_size.to_le_bytes());
        h
    }

    #[rstest::rstest]
    #[case::plain_fits(GSO_NONE, 1400, 1400, true)]
    #[case::plain_exactly_the_mtu(GSO_NONE, 1340, 1340, true)]
    #[case::plain_over_the_mtu(GSO_NONE, 1400, 1340, false)]
    #[case::gso_burst(4, 1400, 9000, false)]
    fn frames_over_the_path_are_cut_like_bursts(
        #[case] gso_type: u8,
        #[case] ip_len: usize,
        #[case] inner_mtu: usize,
        #[case] whole: bool,
    ) {
        let mut hdr = [0u8; VNET];
        hdr[1] = gso_type;
        let eth = vec![0u8; ETH_HLEN + ip_len];
        assert_eq!(goes_whole(&hdr, &eth, inner_mtu), whole);
    }

    #[test]
    fn plain_df_frames_over_the_mtu_get_frag_needed() {
        let f = tcp_frame(1400);
        assert_eq!(too_big(&vnet(GSO_NONE, 0), &f, 1440), None);
        assert_eq!(too_big(&vnet(GSO_NONE, 0), &f, 1340), Some(1340));
    }

    #[test]
    fn gso_bursts_are_judged_by_their_segment_size() {
        // A 30 kB burst of 1388-byte segments: segments of 1428 bytes.
        let f = tcp_frame(30_000);
        assert_eq!(too_big(&vnet(1, 1388), &f, 1440), None);
        assert_eq!(too_big(&vnet(1, 1388), &f, 1340), Some(1340));
        // Without DF it is carried anyway.
        let mut no_df = f.clone();
        no_df[20] = 0;
        assert_eq!(too_big(&vnet(1, 1388), &no_df, 1340), None);
        // Garbage never panics.
        assert_eq!(too_big(&vnet(1, 1388), &f[..20], 1340), None);
        assert_eq!(
            too_big(&[], &f, 1340),
            icmp::needs_frag_needed(&f, 1340).then_some(1340)
        );
    }

    #[test]
    fn finished_checksums_verify() {
        // A UDP datagram whose checksum field holds the pseudo-header sum, as the kernel
        // leaves it with NEEDS_CSUM.
        let mut f = tcp_frame(0);
        f.truncate(14 + 20);
        f[23] = 17;
        f.extend_from_slice(&[
            0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0, 0, b'h', b'i', b'!', b'?',
        ]);
        let udp_len = 12u32;
        let mut pseudo: u32 = 0xc613 + 0x0001 + 0xc613 + 0x0002 + 17 + udp_len;
        while pseudo >> 16 != 0 {
            pseudo = (pseudo & 0xffff) + (pseudo >> 16);
        }
        f[34 + 6..34 + 8].copy_from_slice(&(pseudo as u16).to_be_bytes());
        let mut h = [0u8; VNET];
        h[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        h[6..8].copy_from_slice(&34u16.to_le_bytes());
        h[8..10].copy_from_slice(&6u16.to_le_bytes());
        finish_checksum(&h, &mut f);
        // Verify: pseudo header + UDP segment sums to 0xffff.
        let mut sum: u32 = 0xc613 + 0x0001 + 0xc613 + 0x0002 + 17 + udp_len;
        for w in f[34..].chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
        // Offsets past the frame leave it alone.
        let before = f.clone();
        h[6..8].copy_from_slice(&4000u16.to_le_bytes());
        finish_checksum(&h, &mut f);
        assert_eq!(f, before);
    }

    #[test]
    fn heartbeat_size_round_trips_padding() {
        for enc in [false, true] {
            let pad = heartbeat::Repr::padding_for(
                1400 - IP_UDP - HEADER_LEN - if enc { TAG_LEN } else { 0 },
                wire::FRAME_PREFIX_LEN,
            );
            assert_eq!(heartbeat_size(pad, enc), 1400);
        }
    }
}
