//! The Open vSwitch kernel datapath (ODP) over generic netlink: the overlay's fastest tier.
//!
//! - [`wire`]: the `ovs_datapath` and `ovs_vport` generic netlink messages as plain parse/emit
//!   types (commands and attributes from the kernel UAPI `include/uapi/linux/openvswitch.h`),
//!   free of I/O.
//! - [`client`]: a small blocking client: create, read back and delete datapaths; add, list and
//!   delete vports (netdev, internal, vxlan).
//!
//! No crate speaks these families (the `ovs_*` families are only spoken by Open vSwitch's own C
//! library), so the messages are written here on top of netlink-packet-generic's framing.
//! Needs the `openvswitch` kernel module (and `vport-vxlan` for vxlan vports): see
//! `netsim doctor`; where it is missing the overlay falls back to the kernel vxlan tier.

pub mod client;
pub mod wire;

pub use client::{Datapath, OdpClient, OdpError, Vport};
pub use wire::{VportType, OVS_VXLAN_PORT};
