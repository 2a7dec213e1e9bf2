//! The datapaths: how frames cross between hosts.
//!
//! - [`sleeve`]: userspace, UDP 6783, always there (the fallback, and the only way when the
//!   overlay is encrypted).
//! - [`fast`]: the kernel fast path on UDP 6784: heartbeats and the tables that follow each
//!   connection's choice, over one of two kernel tiers ([`kernel`] chooses and wraps them):
//!   - the Open vSwitch kernel datapath with a vxlan vport ([`ovs_dev`] is its kernel adapter,
//!     [`ovs_flows`] the pure decisions on its misses);
//!   - a kernel vxlan device on the overlay bridge ([`vxlan_dev`]).
//!
//!   Both reach the bridge through [`steer`]'s static entries.
//! - [`select`]: the pure per-connection choice between fast path and sleeve, driven by
//!   heartbeats; [`pace`]: how often they go (briskly, or slowly on a connection both sides
//!   saw idle).
//! - [`tiers`]: what the router drives: sleeve and the fast path together, per connection.

pub mod fast;
pub mod kernel;
pub mod ovs_dev;
pub mod ovs_flows;
pub mod pace;
pub mod select;
pub mod sleeve;
mod sock;
pub mod steer;
pub mod tiers;
pub mod vxlan_dev;

use std::net::IpAddr;

use serde::Serialize;

use crate::crypto::handshake::SessionKeys;

/// The overlay MTU `mtu = "auto"` gives: the underlay MTU minus vxlan's 50 bytes when this host
/// has the fast path, else minus sleeve's overhead. Peers reached through sleeve on a host with
/// the fast path get DF frames above sleeve's limit answered with ICMP "fragmentation needed"
/// (and others fragmented), so one MTU serves both.
pub fn auto_mtu(underlay_mtu: u32, fast_path: bool, encrypted: bool) -> u32 {
    if fast_path && !encrypted {
        crate::wire::vxlan::overlay_mtu(underlay_mtu as usize) as u32
    } else {
        crate::wire::sleeve::overlay_mtu(underlay_mtu as usize, encrypted) as u32
    }
}

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
    /// The peer incarnation's uid (its fast-path heartbeats carry it).
    pub uid: u64,
    /// Whether the peer offers a kernel fast path (its Hello says so).
    pub fast_path: bool,
    /// Whether that fast path is the Open vSwitch tier (it reads pair VNIs).
    pub odp: bool,
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
    /// TCP bursts too big for the path, cut into pieces (counted as they are handed to the
    /// kernel; a failed send also counts in `tx_dropped`).
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
    /// The peer announced the MACs of its containers.
    fn set_peer_macs(&self, _name: &str, _macs: Vec<[u8; 6]>) {}
    /// The peer reported what arrives of our fast-path heartbeats.
    fn fast_report(&self, _name: &str, _report: &crate::wire::fast_report::Repr) {}
    /// Whether the connection to `name` is on the fast path with the peer's heartbeats arriving
    /// within `within` (then they show the peer alive, and keepalives are not needed).
    fn fast_alive(&self, _name: &str, _within: std::time::Duration) -> bool {
        false
    }
    /// Our short id changed (it clashed with a peer's).
    fn set_short_id(&self, _short_id: u16) {}
    /// The connected peer `name` has a new short id (it clashed with another's).
    fn set_peer_short_id(&self, _name: &str, _short_id: u16) {}
    /// Which datapath carries the connection to `name`, since when and why.
    fn peer_path(&self, _name: &str) -> Option<fast::PathStatus> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::vxlan_1500(1500, true, false, 1450)]
    #[case::vxlan_jumbo(9000, true, false, 8950)]
    #[case::sleeve_1500(1500, false, false, 1440)]
    #[case::encrypted_uses_sleeve(1500, true, true, 1424)]
    fn auto_mtu_follows_the_underlay_and_the_datapath(
        #[case] underlay: u32,
        #[case] fast: bool,
        #[case] encrypted: bool,
        #[case] want: u32,
    ) {
        assert_eq!(auto_mtu(underlay, fast, encrypted), want);
    }
}
