//! What the router asks of a datapath, per peer connection. Sleeve implements it; the kernel
//! fast paths (Open vSwitch, vxlan) will sit beside it and the router will pick one per peer.

use std::net::IpAddr;

use serde::Serialize;

use crate::crypto::handshake::SessionKeys;

/// A peer the datapath should carry frames to and from.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// The peer's name.
    pub name: String,
    /// Its underlay address (datagrams go to this address, port 6783, and are accepted from it).
    pub ip: IpAddr,
    /// Its short id (sleeve headers carry it).
    pub short_id: u16,
    /// The connection's id, echoed by heartbeats.
    pub connection_id: u64,
    /// Session keys when the overlay is encrypted.
    pub keys: Option<SessionKeys>,
}

/// Counters and health of one peer on a datapath.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PeerStats {
    /// Frames sent to the peer.
    pub tx_frames: u64,
    /// Datagrams sent to the peer.
    pub tx_datagrams: u64,
    /// Bytes of frames sent.
    pub tx_bytes: u64,
    /// Frames received from the peer.
    pub rx_frames: u64,
    /// Bytes of frames received.
    pub rx_bytes: u64,
    /// Broadcast or unknown-unicast frames sent to the peer.
    pub tx_flooded: u64,
    /// Heartbeats the peer acknowledged.
    pub heartbeats_acked: u64,
    /// Largest underlay datagram (IP bytes) the peer acknowledged in the last probe round.
    pub path_mtu: u32,
    /// The overlay MTU toward this peer (container IP bytes that fit one datagram).
    pub overlay_mtu: u32,
    /// DF frames too big for the path, answered with ICMP "fragmentation needed".
    pub frag_needed_sent: u64,
    /// Datagrams refused by the replay window.
    pub replayed: u64,
    /// Datagrams failing authentication.
    pub auth_failures: u64,
    /// Datagrams whose encryption flag disagreed with the session.
    pub unauthenticated: u64,
    /// TCP bursts too big for the path, sent cut into pieces.
    pub bursts_split: u64,
    /// Bursts received in pieces and put back together.
    pub bursts_joined: u64,
    /// Pieces refused (duplicate or contradicting their burst) and bursts given up incomplete.
    pub pieces_dropped: u64,
    /// Whether heartbeats are answered.
    pub healthy: bool,
}

/// Datapath-wide counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DatapathStats {
    /// Datagrams from an address that is no connected peer.
    pub unknown_peer: u64,
    /// Datagrams or frames that did not parse.
    pub malformed: u64,
    /// Frames dropped because no peer was connected or sending failed.
    pub tx_dropped: u64,
    /// Frames injected into the bridge.
    pub injected: u64,
}

/// A datapath the router drives.
pub trait Datapath: Send + Sync {
    /// A short name for status (`sleeve`, `vxlan`, `odp`).
    fn kind(&self) -> &'static str;
    /// Starts (or restarts, with new keys) carrying frames for a peer.
    fn add_peer(&self, spec: PeerSpec);
    /// Stops carrying frames for a peer.
    fn remove_peer(&self, name: &str);
    /// One peer's counters and health.
    fn peer_stats(&self, name: &str) -> Option<PeerStats>;
    /// Datapath-wide counters.
    fn stats(&self) -> DatapathStats;
    /// Sends one round of heartbeats (path-MTU probes) to every peer.
    fn probe(&self, round: u64);
    /// A peer acknowledged heartbeat `round` of `size` underlay bytes.
    fn acked(&self, name: &str, round: u64, size: usize);
}
