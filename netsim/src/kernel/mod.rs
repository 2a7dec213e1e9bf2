//! Thin kernel adapters: netlink and system calls, knowing nothing of topologies.
