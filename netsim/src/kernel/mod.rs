//! Thin kernel adapters: netlink and system calls, knowing nothing of topologies.

/// Queueing disciplines (netem, tbf, htb) over rtnetlink.
pub mod tc;
