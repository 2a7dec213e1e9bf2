//! Address planning inside one subnet: explicit addresses are reserved first, then planned
//! interfaces take the lowest free usable address.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Why an explicit address cannot be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not inside the subnet.
    Outside,
    /// The subnet's network or broadcast address.
    NotUsable,
    /// Already reserved or planned.
    Taken,
}

/// The usable addresses of one subnet, and which are taken.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    net: Ipv4Net,
    taken: BTreeSet<Ipv4Addr>,
    /// Every usable address below this one is taken (planning only moves upwards). Wider than
    /// an address so stepping past 255.255.255.255 cannot wrap.
    cursor: u64,
}

impl Pool {
    pub(crate) fn new(net: Ipv4Net) -> Self {
        let net = net.trunc();
        Self {
            net,
            taken: BTreeSet::new(),
            cursor: u64::from(u32::from(first_usable(net))),
        }
    }

    /// How many addresses interfaces can use (/31 and /32 have no network or broadcast).
    pub(crate) fn usable(&self) -> u64 {
        let size = 1u64 << (32 - u32::from(self.net.prefix_len()));
        if size <= 2 {
            size
        } else {
            size - 2
        }
    }

    /// Marks `addr` as taken by an explicit address.
    pub(crate) fn reserve(&mut self, addr: Ipv4Addr) -> Result<(), Refused> {
        if !self.net.contains(&addr) {
            return Err(Refused::Outside);
        }
        let a = u32::from(addr);
        if a < u32::from(first_usable(self.net)) || a > u32::from(last_usable(self.net)) {
            return Err(Refused::NotUsable);
        }
        if !self.taken.insert(addr) {
            return Err(Refused::Taken);
        }
        Ok(())
    }

    /// Takes the lowest free usable address, or `None` when the subnet is full.
    pub(crate) fn next(&mut self) -> Option<Ipv4Addr> {
        let last = u64::from(u32::from(last_usable(self.net)));
        while self.cursor <= last {
            let addr = Ipv4Addr::from(u32::try_from(self.cursor).ok()?);
            self.cursor += 1;
            if self.taken.insert(addr) {
                return Some(addr);
            }
        }
        None
    }
}

fn first_usable(net: Ipv4Net) -> Ipv4Addr {
    if net.prefix_len() >= 31 {
        net.network()
    } else {
        Ipv4Addr::from(u32::from(net.network()) + 1)
    }
}

fn last_usable(net: Ipv4Net) -> Ipv4Addr {
    if net.prefix_len() >= 31 {
        net.broadcast()
    } else {
        Ipv4Addr::from(u32::from(net.broadcast()) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse()
            .unwrap_or_else(|e| panic!("bad test subnet {s}: {e}"))
    }

    fn addr(s: &str) -> Ipv4Addr {
        s.parse()
            .unwrap_or_else(|e| panic!("bad test address {s}: {e}"))
    }

    #[test]
    fn plans_from_the_bottom_skipping_the_network_address() {
        let mut p = Pool::new(net("198.18.1.0/24"));
        assert_eq!(p.next(), Some(addr("198.18.1.1")));
        assert_eq!(p.next(), Some(addr("198.18.1.2")));
    }

    #[test]
    fn skips_explicitly_taken_addresses() {
        let mut p = Pool::new(net("198.18.1.0/24"));
        assert_eq!(p.reserve(addr("198.18.1.2")), Ok(()));
        assert_eq!(p.next(), Some(addr("198.18.1.1")));
        assert_eq!(p.next(), Some(addr("198.18.1.3")));
    }

    #[test]
    fn exhaustion_leaves_out_the_broadcast_address() {
        let mut p = Pool::new(net("198.18.1.0/30"));
        assert_eq!(p.usable(), 2);
        assert_eq!(p.next(), Some(addr("198.18.1.1")));
        assert_eq!(p.next(), Some(addr("198.18.1.2")));
        assert_eq!(p.next(), None);
        assert_eq!(p.next(), None);
    }

    #[test]
    fn point_to_point_subnets_use_both_addresses() {
        let mut p = Pool::new(net("198.18.9.0/31"));
        assert_eq!(p.usable(), 2);
        assert_eq!(p.next(), Some(addr("198.18.9.0")));
        assert_eq!(p.next(), Some(addr("198.18.9.1")));
        assert_eq!(p.next(), None);
    }

    #[test]
    fn refuses_unusable_outside_and_duplicate_addresses() {
        let mut p = Pool::new(net("198.18.1.0/24"));
        assert_eq!(p.reserve(addr("198.18.1.0")), Err(Refused::NotUsable));
        assert_eq!(p.reserve(addr("198.18.1.255")), Err(Refused::NotUsable));
        assert_eq!(p.reserve(addr("198.18.2.1")), Err(Refused::Outside));
        assert_eq!(p.reserve(addr("198.18.1.7")), Ok(()));
        assert_eq!(p.reserve(addr("198.18.1.7")), Err(Refused::Taken));
    }

    #[test]
    fn the_top_of_the_address_space_does_not_wrap() {
        let mut p = Pool::new(net("255.255.255.254/31"));
        assert_eq!(p.next(), Some(addr("255.255.255.254")));
        assert_eq!(p.next(), Some(addr("255.255.255.255")));
        assert_eq!(p.next(), None);
    }
}
