//! The Open vSwitch kernel datapath (ODP) over generic netlink: the overlay's fastest tier.
//!
//! - [`wire`]: the `ovs_datapath` and `ovs_vport` generic netlink messages as plain parse/emit
//!   types (commands and attributes from the kernel UAPI `include/uapi/linux/openvswitch.h`),
//!   free of I/O.
//! - [`flow`]: the `ovs_flow` and `ovs_packet` messages: flow keys and masks (in-port,
//!   Ethernet, tunnel), actions (output, set tunnel, userspace), flows with their counters,
//!   and packets handed up on a miss or sent down to execute.
//! - [`client`]: a small blocking client: create, read back and delete datapaths; add, list and
//!   delete vports (netdev, internal, vxlan) and point their misses at an upcall socket;
//!   install, read, dump, delete and flush flows; execute a packet.
//! - [`upcall`]: the socket misses arrive on, waited on with a timeout.
//!
//! Every decoder of kernel bytes is fuzzed (`wire::fuzzing::odp`, tests/wire_fuzz.rs), and
//! tests/odp_flows_kernel_lane.rs drives a real datapath in the kernel lane: a miss comes up,
//! is executed out through vxlan, a flow carries the next frame without an upcall, and a
//! vxlan packet from a peer misses with its tunnel key and is then delivered by a flow.
//!
//! No crate speaks these families (the `ovs_*` families are only spoken by Open vSwitch's own C
//! library), so the messages are written here on top of netlink-packet-generic's framing.
//! Needs the `openvswitch` kernel module (and `vport-vxlan` for vxlan vports): see
//! `netsim doctor`; where it is missing the overlay falls back to the kernel vxlan tier.

pub mod client;
pub mod flow;
pub mod upcall;
pub mod wire;

pub use client::{Datapath, Flow, OdpClient, OdpError, Vport};
pub use upcall::UpcallSocket;
pub use wire::{VportType, OVS_VXLAN_PORT};

/// Byte helpers shared by the family tests.
#[cfg(test)]
pub(crate) mod test_bytes {
    use netlink_packet_core::Emitable;

    /// `msg` as the bytes it emits.
    pub(crate) fn emit<M: Emitable>(msg: &M) -> Vec<u8> {
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        buf
    }

    /// Bytes as hex words of four, for snapshots a reviewer can read against the UAPI.
    pub(crate) fn hex(bytes: &[u8]) -> String {
        bytes
            .chunks(4)
            .map(|w| w.iter().map(|b| format!("{b:02x}")).collect::<String>())
            .collect::<Vec<_>>()
            .join(" ")
    }
}
