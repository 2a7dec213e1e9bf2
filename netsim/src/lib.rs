//! netsim: a test bed for container overlay networks.
//!
//! A TOML topology describes hosts, switches, routers, containers and the links between them.
//! The layers, arrows pointing one way:
//!
//! - [`model`]: parse, validate and plan a topology. Pure: never touches the kernel.
//! - [`kernel`]: thin adapters over netlink and system calls (namespaces, links, addresses,
//!   routes, sysctls, qdiscs). They know nothing of topologies.
//! - [`lab`]: the lifecycle engine. Applies a [`model::Plan`] through the adapters, owns
//!   teardown, records state so crashed labs can be swept.
//! - [`caps`]: what this kernel can do (shared by `netsim doctor` and the test helpers);
//!   [`tools`]: the user-space programs a lab runs, and their Debian packages.
//! - [`measure`] and [`verify`]: probes run inside nodes, and checking one expectation
//!   against a running lab; [`scenario`]: a topology file run as a test (up, `[[expect]]`,
//!   `[[step]]`s, report, down), as `netsim test` does it.
//! - [`uml`]: booting a User-Mode-Linux guest and running netsim inside it
//!   (`--kernel uml`), for hosts whose kernel lacks openvswitch or netem.
//! - [`capture`]: packet capture inside a node, to pcap files or one line per frame.
//! - [`cli`]: the `netsim` command, a thin layer over the library.

pub mod caps;
pub mod capture;
pub mod cli;
pub mod delay_line;
pub mod kernel;
pub mod lab;
pub mod measure;
pub mod model;
pub mod overlay_run;
pub mod scenario;
pub mod suite;
pub mod testing;
pub mod tools;
pub mod uml;
pub mod verify;

pub use lab::{Lab, NodeHandle, UpOptions};
pub use model::Plan;
