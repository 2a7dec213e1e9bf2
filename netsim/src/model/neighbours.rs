//! How many ARP entries a lab can need at once.
//!
//! The kernel keeps one IPv4 neighbour table for all network namespaces together, capped by
//! `net.ipv4.neigh.default.gc_thresh3` (1024 by default): past it, resolving one more
//! neighbour fails with ENOBUFS, in any namespace. A switch with k hosts can need k(k-1)
//! entries (each host talking to every other, as an overlay's full mesh of routers does), and
//! an overlay's containers share one layer 2 across hosts. Measured here: 50 hosts on one
//! switch with the overlay filled the table (49 x 50 = 2450 entries wanted), and routers
//! past the 1024th entry could not even open their TCP connections. The lab raises the cap
//! before it brings such a topology up (see `Lab::up`).

use super::plan::{NodeKind, Plan};

/// The number of neighbour entries `plan` can need at once: every pair of interfaces on each
/// switch, and every pair of containers when the plan has an overlay.
pub fn neighbour_demand(plan: &Plan) -> u64 {
    let pairs = |k: u64| k * k.saturating_sub(1);
    let switches: u64 = plan
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Switch)
        .map(|n| pairs(n.interfaces.len() as u64))
        .sum();
    let containers = plan
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, NodeKind::Container { .. }))
        .count() as u64;
    let overlay = if plan.overlay.is_some() {
        pairs(containers)
    } else {
        0
    };
    switches + overlay
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::bench::star;
    use rstest::rstest;

    #[rstest]
    #[case::three_hosts(3, 6)]
    #[case::fifty_hosts(50, 2450)]
    #[case::a_hundred_hosts(100, 9900)]
    fn a_star_needs_every_pair_of_hosts(#[case] hosts: usize, #[case] entries: u64) {
        assert_eq!(neighbour_demand(&star("s", hosts, 1500)), entries);
    }
}
