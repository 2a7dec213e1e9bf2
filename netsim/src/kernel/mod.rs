//! Thin kernel adapters: netlink and system calls, knowing nothing of topologies.

pub mod error;
pub mod netns;
pub mod process;
pub mod rtnl;
pub mod sysctl;

pub use error::KernelError;
