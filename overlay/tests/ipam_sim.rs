//! IPAM simulation: N routers attach and detach containers while gossip is sent, delayed,
//! reordered and duplicated at random (seeded), with restarts from state files and partitions.
//!
//! What must hold:
//! - always: a router holds only addresses in the range, never the network or broadcast address,
//!   only in blocks its own view says it owns, and never one address twice;
//! - hence two routers holding one address disagree on who owns its block: their claims crossed
//!   in flight (or across a partition), and the duplicate lives only until the loser hears the
//!   winner;
//! - once gossip settles: every router has the same claims, no address is held twice anywhere,
//!   every router agrees on who owns each held address, and every container that lost its address
//!   in a conflict got a new one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use overlay::config::Range;
use overlay::ipam::{Ipam, IpamError};
use overlay::wire::ipam::ClaimRepr;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rstest::rstest;

/// Containers the partition test attaches explicitly and never detaches.
const PINNED: [&str; 2] = ["left", "right"];

struct Message {
    to: usize,
    claims: Vec<ClaimRepr>,
}

struct Net {
    range: Range,
    routers: Vec<Ipam>,
    /// Live containers and the router they are attached to.
    containers: BTreeMap<String, usize>,
    inflight: Vec<Message>,
    rng: StdRng,
    next_container: usize,
    /// Containers re-addressed after losing a block.
    readdressed: usize,
    /// Containers that lost their address and found no space (range full).
    dropped: usize,
    /// Steps at which some address was held twice (claims crossing in flight).
    transient_duplicates: usize,
    restarts: usize,
    /// Every container that ever lost its address in a conflict.
    conflicted: BTreeSet<String>,
    state_dir: tempfile::TempDir,
    /// Which routers may talk: `side[i] == side[j]`.
    side: Vec<u8>,
}

fn uid(i: usize) -> u64 {
    // Uids far apart and not in router order, so ties between crossing claims go either way.
    (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

impl Net {
    fn new(n: usize, range: &str, seed: u64) -> Net {
        let range: Range = range.parse().expect("test range");
        Net {
            range,
            routers: (0..n)
                .map(|i| Ipam::new(range, uid(i)).expect("non-zero uid"))
                .collect(),
            containers: BTreeMap::new(),
            inflight: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            next_container: 0,
            readdressed: 0,
            dropped: 0,
            transient_duplicates: 0,
            restarts: 0,
            conflicted: BTreeSet::new(),
            state_dir: tempfile::tempdir().expect("tempdir"),
            side: vec![0; n],
        }
    }

    fn state_file(&self, r: usize) -> PathBuf {
        self.state_dir.path().join(format!("router-{r}.json"))
    }

    fn attach(&mut self, r: usize) {
        let name = format!("c{}", self.next_container);
        self.next_container += 1;
        match self.routers[r].allocate(&name) {
            Ok(_) => {
                self.containers.insert(name, r);
            }
            Err(IpamError::Exhausted { .. }) => {}
            Err(e) => panic!("allocate {name} on router {r}: {e}"),
        }
    }

    fn detach_random(&mut self) {
        if self.containers.is_empty() {
            return;
        }
        let k = self.rng.random_range(0..self.containers.len());
        let name = self.containers.keys().nth(k).cloned().expect("k < len");
        if PINNED.contains(&name.as_str()) {
            return;
        }
        let r = self.containers.remove(&name).expect("live");
        assert!(
            self.routers[r].release(&name).is_some(),
            "{name} held on {r}"
        );
    }

    fn send(&mut self, from: usize, to: usize) {
        if from != to && self.side[from] == self.side[to] {
            let claims = self.routers[from].claims().claims;
            self.inflight.push(Message { to, claims });
        }
    }

    /// Merges `claims` into router `to` and re-addresses the containers it lost.
    fn receive(&mut self, to: usize, claims: &[ClaimRepr]) -> bool {
        let out = self.routers[to].merge(claims);
        assert_eq!(out.ignored, 0);
        for c in &out.conflicts {
            self.conflicted.insert(c.container.clone());
            assert_eq!(self.containers.get(&c.container), Some(&to), "{c:?}");
            assert_ne!(
                self.routers[to].owner_of(c.addr),
                Some(uid(to)),
                "lost block {c:?}"
            );
            match self.routers[to].allocate(&c.container) {
                Ok(l) => {
                    assert_ne!(l.addr, c.addr);
                    self.readdressed += 1;
                }
                Err(IpamError::Exhausted { .. }) => {
                    self.containers.remove(&c.container);
                    self.dropped += 1;
                }
                Err(e) => panic!("re-address {}: {e}", c.container),
            }
        }
        out.changed || !out.conflicts.is_empty()
    }

    fn deliver_random(&mut self) {
        if self.inflight.is_empty() {
            return;
        }
        let k = self.rng.random_range(0..self.inflight.len());
        // Now and then a message is delivered twice.
        let m = if self.rng.random_range(0..10) == 0 {
            let m = &self.inflight[k];
            Message {
                to: m.to,
                claims: m.claims.clone(),
            }
        } else {
            self.inflight.swap_remove(k)
        };
        self.receive(m.to, &m.claims);
    }

    /// The router saves its state, crashes and starts again from the file.
    fn restart(&mut self, r: usize) {
        let path = self.state_file(r);
        let before = self.routers[r].status();
        self.routers[r].save(&path).expect("save");
        self.routers[r] = Ipam::load(&path, self.range, uid(r)).expect("load");
        assert_eq!(self.routers[r].status(), before, "router {r} restored");
        for (name, _) in self.containers.iter().filter(|(_, &h)| h == r) {
            let held = self.routers[r].lookup(name).expect("restored");
            assert_eq!(self.routers[r].allocate(name).expect("same"), held);
        }
        self.restarts += 1;
    }

    fn step(&mut self) {
        let n = self.routers.len();
        let r = self.rng.random_range(0..n);
        match self.rng.random_range(0..100) {
            0..35 => self.attach(r),
            35..47 => self.detach_random(),
            47..72 => {
                let to = self.rng.random_range(0..n);
                self.send(r, to);
            }
            72..99 => self.deliver_random(),
            _ => self.restart(r),
        }
        self.check_always();
    }

    /// Delivers everything in flight, then gossips all to all until nothing changes.
    fn settle(&mut self) {
        while !self.inflight.is_empty() {
            self.deliver_random();
            self.check_always();
        }
        let n = self.routers.len();
        for round in 0.. {
            assert!(round <= 4 * n + 10, "gossip does not converge");
            let mut changed = false;
            for from in 0..n {
                for to in 0..n {
                    if from != to && self.side[from] == self.side[to] {
                        let claims = self.routers[from].claims().claims;
                        changed |= self.receive(to, &claims);
                        self.check_always();
                    }
                }
            }
            if !changed {
                break;
            }
        }
    }

    fn check_always(&mut self) {
        let base = u32::from(self.range.addr);
        let size = 1u64 << (32 - u32::from(self.range.len));
        let mut holders: BTreeMap<Ipv4Addr, Vec<usize>> = BTreeMap::new();
        let mut held = 0;
        for (r, ipam) in self.routers.iter().enumerate() {
            let mut mine = BTreeSet::new();
            for (name, lease) in ipam.allocations() {
                held += 1;
                let a = u32::from(lease.addr);
                assert!(
                    a > base && u64::from(a) < u64::from(base) + size - 1,
                    "{lease}"
                );
                assert_eq!(lease.prefix_len, self.range.len);
                assert_eq!(ipam.owner_of(lease.addr), Some(uid(r)), "{name} {lease}");
                assert_eq!(self.containers.get(name), Some(&r), "{name}");
                assert!(mine.insert(lease.addr), "{lease} twice on router {r}");
                holders.entry(lease.addr).or_default().push(r);
            }
        }
        assert_eq!(
            held,
            self.containers.len(),
            "every live container has an address"
        );
        // A router holds addresses only in blocks its own view says it owns (checked above), so
        // two routers holding one address disagree on its block: their claims crossed and the
        // loser has not heard the winner yet. Count such moments; `settle` must end them all.
        if holders.values().any(|rs| rs.len() > 1) {
            self.transient_duplicates += 1;
        }
    }

    fn check_settled(&self) {
        let first = self.routers[0].claims();
        for (r, ipam) in self.routers.iter().enumerate() {
            assert_eq!(ipam.claims(), first, "router {r} converged");
        }
        let mut seen: BTreeMap<Ipv4Addr, (usize, String)> = BTreeMap::new();
        for (r, ipam) in self.routers.iter().enumerate() {
            for (name, lease) in ipam.allocations() {
                if let Some(other) = seen.insert(lease.addr, (r, name.to_string())) {
                    panic!("{} held by {name} on {r} and by {other:?}", lease.addr);
                }
                for view in &self.routers {
                    assert_eq!(view.owner_of(lease.addr), Some(uid(r)));
                }
            }
        }
        assert_eq!(seen.len(), self.containers.len());
    }
}

#[rstest]
#[case::three_small(3, "198.19.7.0/24", 1, 3000)]
#[case::five_small(5, "198.19.7.0/24", 2, 3000)]
#[case::eight(8, "198.19.16.0/20", 3, 3000)]
#[case::twelve_tight(12, "198.19.4.0/22", 4, 3000)]
#[case::twenty(20, "198.19.0.0/16", 5, 4000)]
#[case::twenty_tiny(20, "198.19.9.0/26", 6, 2000)]
fn routers_converge_and_never_keep_a_duplicate(
    #[case] n: usize,
    #[case] range: &str,
    #[case] seed: u64,
    #[case] steps: usize,
) {
    let mut net = Net::new(n, range, seed);
    for _ in 0..steps {
        net.step();
    }
    net.settle();
    net.check_settled();
    // The run did what it claims to: containers attached, gossip carried, restarts survived.
    assert!(
        net.next_container > steps / 5,
        "attached {}",
        net.next_container
    );
    assert!(net.restarts > 0);
    assert!(net.routers.iter().all(|r| !r.claims().claims.is_empty()));
    println!(
        "{n} routers: {} attached, {} live, {} re-addressed, {} dropped (range full), {} steps with a crossing duplicate, {} restarts",
        net.next_container,
        net.containers.len(),
        net.readdressed,
        net.dropped,
        net.transient_duplicates,
        net.restarts
    );
}

/// Two sides of a partition fill the same small range independently; after the heal, the losing
/// side's containers in doubly-claimed blocks get new addresses and everyone else keeps theirs.
#[rstest]
#[case(1)]
#[case(2)]
#[case(3)]
fn partition_then_heal(#[case] seed: u64) {
    let n = 6;
    let mut net = Net::new(n, "198.19.7.0/24", seed);
    net.side = vec![0, 0, 0, 1, 1, 1];
    // Both sides ask for addresses in the same block: a conflict is certain.
    for (r, name, addr) in [(0, "left", "198.19.7.20"), (4, "right", "198.19.7.21")] {
        net.routers[r]
            .allocate_specific(name, addr.parse().expect("address"))
            .expect("free on its side");
        net.containers.insert(name.to_string(), r);
    }
    for _ in 0..1500 {
        net.step();
    }
    net.settle();
    let before: BTreeMap<String, Ipv4Addr> = net
        .containers
        .keys()
        .map(|c| {
            let r = net.containers[c];
            (c.clone(), net.routers[r].lookup(c).expect("held").addr)
        })
        .collect();
    net.conflicted.clear();

    net.side = vec![0; n];
    net.settle();
    net.check_settled();

    assert!(
        !net.conflicted.is_empty(),
        "the heal re-addressed the losing side's containers"
    );
    assert!(
        net.conflicted.contains("left") != net.conflicted.contains("right"),
        "exactly one of the two explicit requests lost: {:?}",
        net.conflicted
    );
    let moved: BTreeSet<String> = before
        .iter()
        .filter(|(c, a)| {
            net.containers
                .get(*c)
                .is_none_or(|&r| net.routers[r].lookup(c).map(|l| l.addr) != Some(**a))
        })
        .map(|(c, _)| c.clone())
        .collect();
    assert_eq!(
        moved, net.conflicted,
        "exactly the containers in lost blocks changed address"
    );
}
