//! Measurements taken inside lab namespaces. Each probe runs on the node's own thread
//! (see [`crate::lab::NodeHandle::run`]) so its sockets live in that node's namespace.

pub mod external;
pub mod icmp;
pub mod matrix;
pub mod mtu;
pub mod overlay_scale;
pub mod pair;
pub mod perf;
pub mod shaping_bench;
pub mod stream;
