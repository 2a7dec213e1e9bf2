//! Thin kernel adapters: netlink and system calls, knowing nothing of topologies.

pub mod error;
pub mod netns;
pub mod nft;
pub mod offload;
pub mod packet;
pub mod process;
pub mod rtnl;
pub mod sysctl;
/// Queueing disciplines (netem, tbf, htb) over rtnetlink.
pub mod tc;

pub use error::KernelError;
