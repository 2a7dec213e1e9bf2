//! overlay: a Weave-Net-style container overlay router, the system netsim tests.
//!
//! One router per host; containers on a bridge; peers talk over TCP 6783; packets cross hosts
//! through the fastest datapath that works for each peer connection (Open vSwitch kernel
//! datapath, kernel vxlan, or the userspace "sleeve"). The daemon wires [`netdev`] (bridge, TAP,
//! container veths), [`sleeve`] (the userspace datapath behind the [`datapath`] trait), the
//! [`router`] control plane and the [`api`] socket; see docs/overlay.md.

pub mod alloc;
pub mod api;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod datapath;
pub mod ipam;
pub mod netdev;
pub mod odp;
pub mod reassembly;
pub mod router;

pub mod topology;
pub mod wire;

/// TCP port of the control plane, and UDP port of the sleeve datapath (Weave's, so field reports
/// map one to one).
pub const CONTROL_PORT: u16 = 6783;

/// UDP port of the vxlan fast datapath.
pub const VXLAN_PORT: u16 = 6784;
