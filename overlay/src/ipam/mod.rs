//! IPAM: container addresses from the overlay range, without a central server.
//!
//! The range is cut into equal blocks ([`block_prefix_len`]). A router claims whole blocks for
//! itself, gossips every claim it knows ([`Ipam::claims`]) and merges every claim it hears
//! ([`Ipam::merge`]). Per block, the claim with the greater `(version, owner)` pair wins: a
//! state-based CRDT (commutative, associative, idempotent), so all routers converge on the same
//! owners whatever the order, delay or duplication of gossip. A router hands out container
//! addresses only from blocks it owns, so routers that agree on ownership never hand out the same
//! address.
//!
//! Two routers that could not hear each other (a partition, or two claims crossing in flight) may
//! both claim one free block. When their claims meet, the greater `(version, owner)` keeps the
//! block and the other router's allocations in it come back from [`Ipam::merge`] as
//! [`Conflict`]s: the router re-addresses those containers with [`Ipam::allocate`]. No scheme
//! without consensus can avoid this across a partition; to make it rare otherwise, each router
//! picks a free block pseudo-randomly (seeded by its uid), and claims a spare block ahead of need
//! so the claim spreads before an address in it is handed out.
//!
//! Owner uid 0 means "nobody": a *tombstone*, written by [`Ipam::forget_peer`] with a version one
//! above the departed peer's claim, frees its blocks everywhere the tombstone spreads. A later
//! claim of a freed block takes the tombstone's version plus one.
//!
//! Allocations are keyed by a container id (the netns name, or an id the user chose): asking
//! again for the same id returns the same address. [`Ipam::save`] and [`Ipam::load`] keep claims
//! and allocations across a restart in a JSON state file written atomically; a restarted router
//! also re-learns its own claims from peers' gossip.
//!
//! Reserved addresses: the range's network and broadcast addresses are never handed out. There
//! is no gateway address: containers share one L2 overlay and talk to each other directly.
//!
//! Everything here is pure except [`Ipam::save`], [`Ipam::load`] and [`state_uid`].

mod state;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use thiserror::Error;

use crate::config::Range;
use crate::wire::ipam::{ClaimRepr, Repr};

pub use state::state_uid;
pub use status::{AllocationStatus, BlockStatus, Status};

/// The owner uid of a tombstone: a block nobody owns.
pub const NOBODY: u64 = 0;

/// Longest container id accepted.
pub const MAX_CONTAINER_ID_LEN: usize = 255;

/// The prefix length of the blocks a range of prefix length `range_len` is cut into.
///
/// `/24` blocks (256 addresses) for ranges of `/20` and wider, else 16 blocks; never smaller than
/// a `/30`. Every router derives it from the range alone, so all agree.
pub fn block_prefix_len(range_len: u8) -> u8 {
    range_len.saturating_add(4).clamp(24, 30).max(range_len)
}

/// An address handed to a container, with the prefix length of its overlay network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Lease {
    /// The container's address.
    pub addr: Ipv4Addr,
    /// The prefix length to configure on the container's interface (the range's).
    pub prefix_len: u8,
}

impl fmt::Display for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// A container whose address was in a block this router lost while merging claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The container's id.
    pub container: String,
    /// The address it held, now the winner's to hand out.
    pub addr: Ipv4Addr,
    /// The router that won the block (uid), or [`NOBODY`] when a tombstone freed it.
    pub winner: u64,
}

/// What [`Ipam::merge`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Some claim was new or newer: the router should gossip its claims again.
    pub changed: bool,
    /// This router's allocations in blocks it lost; they have been released here and the
    /// containers need new addresses ([`Ipam::allocate`]).
    pub conflicts: Vec<Conflict>,
    /// Blocks (first address) that gossip says this router owns and it did not know about, e.g.
    /// after a restart without a state file. Their addresses may still be in use by containers of
    /// the previous run, so [`Ipam::allocate`] uses them only as a last resort until
    /// [`Ipam::adopt_recovered`]: re-attach surviving containers with
    /// [`Ipam::allocate_specific`] first.
    pub recovered: Vec<Ipv4Addr>,
    /// Claims ignored because they do not match a block of this router's range (a peer
    /// configured with another range).
    pub ignored: usize,
}

/// Why an address could not be handed out or the state not kept, with how to fix it.
#[derive(Debug, Error)]
pub enum IpamError {
    /// This router's uid is 0, which means "nobody".
    #[error("router uid 0 is reserved for released blocks: give the router a non-zero uid")]
    ReservedUid,
    /// The container id is empty or too long.
    #[error("container id {0:?} is invalid: use 1 to 255 bytes (e.g. the netns name)")]
    BadContainerId(String),
    /// Every address this router owns is in use and no block is free.
    #[error(
        "the range {range} is exhausted: every block is claimed and this router's {owned} block(s) are full; widen the range, release containers, or `peers remove` departed routers to reclaim their blocks"
    )]
    Exhausted {
        /// The range.
        range: String,
        /// Blocks this router owns.
        owned: usize,
    },
    /// The address lies outside the range.
    #[error("{addr} is outside the overlay range {range}: pick an address inside it")]
    OutsideRange {
        /// The address asked for.
        addr: Ipv4Addr,
        /// The range.
        range: String,
    },
    /// The address is the range's network or broadcast address.
    #[error("{addr} is the {what} address of {range}: pick another address")]
    Reserved {
        /// The address asked for.
        addr: Ipv4Addr,
        /// "network" or "broadcast".
        what: &'static str,
        /// The range.
        range: String,
    },
    /// Another router owns the block of the address.
    #[error(
        "{addr} lies in block {block} owned by router {owner:016x}: attach the container on that router's host, or pick an address in this router's blocks (see `status`)"
    )]
    OwnedByOther {
        /// The address asked for.
        addr: Ipv4Addr,
        /// The block's first address and prefix.
        block: String,
        /// The owner's uid.
        owner: u64,
    },
    /// Another container holds the address.
    #[error("{addr} is in use by container {holder:?}: detach it first or pick another address")]
    InUse {
        /// The address asked for.
        addr: Ipv4Addr,
        /// The container holding it.
        holder: String,
    },
    /// The container already holds another address.
    #[error(
        "container {container:?} already has {addr}: detach it first to give it another address"
    )]
    AlreadyAttached {
        /// The container.
        container: String,
        /// The address it holds.
        addr: Ipv4Addr,
    },
    /// The state file could not be read or written.
    #[error(
        "IPAM state file {path}: cannot {op}: {source}; check the directory exists and is writable"
    )]
    Io {
        /// The state file.
        path: PathBuf,
        /// What was attempted.
        op: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The state file is not valid state.
    #[error("IPAM state file {path} is corrupt ({reason}): move it aside to start with an empty state (peers' gossip restores this router's claims)")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The state file was written for another range or router.
    #[error("IPAM state file {path} belongs to {what} {saved}, not {configured}: start with the same {what}, or move the file aside")]
    Mismatch {
        /// The state file.
        path: PathBuf,
        /// "range" or "router uid".
        what: &'static str,
        /// The saved value.
        saved: String,
        /// The configured value.
        configured: String,
    },
}

/// One block's winning claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Claim {
    owner: u64,
    version: u64,
}

impl Claim {
    fn key(self) -> (u64, u64) {
        (self.version, self.owner)
    }
}

/// The IPAM state of one router. See the [module docs](self) for the design.
#[derive(Debug, Clone)]
pub struct Ipam {
    /// Network address of the range (masked).
    base: u32,
    range_len: u8,
    block_len: u8,
    me: u64,
    /// Winning claim per block index.
    claims: BTreeMap<u32, Claim>,
    /// Container id to address.
    allocs: BTreeMap<String, Ipv4Addr>,
    /// Address to container id.
    by_addr: BTreeMap<Ipv4Addr, String>,
    /// Own blocks learnt from gossip, not from this router's state: possibly holding addresses
    /// of containers from an earlier run, so allocated from last.
    recovered: BTreeSet<u32>,
    /// Bumped whenever the claims change: gossip again when it moved.
    generation: u64,
}

impl Ipam {
    /// An empty IPAM for router `me` over `range` (its host bits are ignored).
    pub fn new(range: Range, me: u64) -> Result<Ipam, IpamError> {
        if me == NOBODY {
            return Err(IpamError::ReservedUid);
        }
        let range_len = range.len.min(32);
        let mask = if range_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(range_len))
        };
        Ok(Ipam {
            base: u32::from(range.addr) & mask,
            range_len,
            block_len: block_prefix_len(range_len),
            me,
            claims: BTreeMap::new(),
            allocs: BTreeMap::new(),
            by_addr: BTreeMap::new(),
            recovered: BTreeSet::new(),
            generation: 0,
        })
    }

    /// A counter that moves whenever the claims change (a claim made here, a newer claim merged,
    /// a peer forgotten): gossip [`Ipam::claims`] again when it moved.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// This router's uid.
    pub fn uid(&self) -> u64 {
        self.me
    }

    /// The range, masked to its network address.
    pub fn range(&self) -> Range {
        Range {
            addr: Ipv4Addr::from(self.base),
            len: self.range_len,
        }
    }

    /// The range as `a.b.c.d/len`.
    pub fn range_text(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.range_len)
    }

    /// Prefix length of container addresses (the range's: one L2 overlay).
    pub fn prefix_len(&self) -> u8 {
        self.range_len
    }

    /// Addresses per block.
    pub fn block_size(&self) -> u32 {
        1u32 << (32 - u32::from(self.block_len))
    }

    /// Number of blocks in the range.
    pub fn block_count(&self) -> u32 {
        1u32 << (self.block_len - self.range_len)
    }

    fn range_size(&self) -> u64 {
        1u64 << (32 - u32::from(self.range_len))
    }

    fn block_start(&self, index: u32) -> u32 {
        self.base + index * self.block_size()
    }

    fn block_text(&self, index: u32) -> String {
        format!(
            "{}/{}",
            Ipv4Addr::from(self.block_start(index)),
            self.block_len
        )
    }

    /// The block index of `addr`, `None` outside the range.
    fn block_of(&self, addr: Ipv4Addr) -> Option<u32> {
        let a = u32::from(addr);
        let off = u64::from(a.wrapping_sub(self.base));
        (a >= self.base && off < self.range_size())
            .then(|| (off / u64::from(self.block_size())) as u32)
    }

    /// "network" or "broadcast" for the range's reserved addresses.
    fn reserved(&self, addr: u32) -> Option<&'static str> {
        if self.range_size() < 4 {
            return None;
        }
        if addr == self.base {
            Some("network")
        } else if u64::from(addr) == u64::from(self.base) + self.range_size() - 1 {
            Some("broadcast")
        } else {
            None
        }
    }

    /// Every claim this router knows, tombstones included: what to gossip.
    pub fn claims(&self) -> Repr {
        Repr {
            claims: self
                .claims
                .iter()
                .map(|(&i, c)| ClaimRepr {
                    start: Ipv4Addr::from(self.block_start(i)),
                    size: self.block_size(),
                    owner: c.owner,
                    version: c.version,
                })
                .collect(),
        }
    }

    /// Merges claims heard from a peer. Returns what changed, including this router's
    /// allocations in blocks it lost (already released here: re-address those containers).
    pub fn merge(&mut self, claims: &[ClaimRepr]) -> MergeOutcome {
        let mut out = MergeOutcome::default();
        for c in claims {
            let start = u32::from(c.start);
            let index = match self.block_of(c.start) {
                Some(i) if c.size == self.block_size() && self.block_start(i) == start => i,
                _ => {
                    out.ignored += 1;
                    continue;
                }
            };
            let theirs = Claim {
                owner: c.owner,
                version: c.version,
            };
            let ours = self.claims.get(&index).copied();
            if ours.is_some_and(|o| o.key() >= theirs.key()) {
                continue;
            }
            out.changed = true;
            self.claims.insert(index, theirs);
            self.generation += 1;
            let was_mine = ours.is_some_and(|o| o.owner == self.me);
            if theirs.owner != self.me {
                self.recovered.remove(&index);
            }
            if was_mine && theirs.owner != self.me {
                out.conflicts.extend(self.evict_block(index, theirs.owner));
            } else if !was_mine && theirs.owner == self.me {
                out.recovered.push(c.start);
                self.recovered.insert(index);
            }
        }
        out
    }

    /// Releases every allocation in block `index`, returning them as conflicts.
    fn evict_block(&mut self, index: u32, winner: u64) -> Vec<Conflict> {
        let lo = Ipv4Addr::from(self.block_start(index));
        let hi = Ipv4Addr::from(self.block_start(index) + (self.block_size() - 1));
        let lost: Vec<(Ipv4Addr, String)> = self
            .by_addr
            .range(lo..=hi)
            .map(|(a, c)| (*a, c.clone()))
            .collect();
        lost.into_iter()
            .map(|(addr, container)| {
                self.by_addr.remove(&addr);
                self.allocs.remove(&container);
                Conflict {
                    container,
                    addr,
                    winner,
                }
            })
            .collect()
    }

    fn check_id(container: &str) -> Result<(), IpamError> {
        if container.is_empty() || container.len() > MAX_CONTAINER_ID_LEN {
            return Err(IpamError::BadContainerId(container.to_string()));
        }
        Ok(())
    }

    fn lease(&self, addr: Ipv4Addr) -> Lease {
        Lease {
            addr,
            prefix_len: self.range_len,
        }
    }

    fn insert(&mut self, container: &str, addr: Ipv4Addr) -> Lease {
        self.allocs.insert(container.to_string(), addr);
        self.by_addr.insert(addr, container.to_string());
        self.lease(addr)
    }

    /// Addresses of block `index` in use here.
    fn in_use(&self, index: u32) -> usize {
        let lo = Ipv4Addr::from(self.block_start(index));
        let hi = Ipv4Addr::from(self.block_start(index) + (self.block_size() - 1));
        self.by_addr.range(lo..=hi).count()
    }

    /// Usable (unreserved) addresses of block `index`.
    fn usable(&self, index: u32) -> usize {
        let start = self.block_start(index);
        (0..self.block_size())
            .filter(|o| self.reserved(start + o).is_none())
            .count()
    }

    /// The lowest free address of the fullest block among `blocks` that has one: filling one
    /// block before touching the next leaves a spare block untouched while its claim spreads.
    fn free_in_fullest(&self, blocks: &[u32]) -> Option<Ipv4Addr> {
        blocks
            .iter()
            .filter(|&&i| self.in_use(i) < self.usable(i))
            .max_by_key(|&&i| (self.in_use(i), std::cmp::Reverse(i)))
            .and_then(|&i| self.free_in(i))
    }

    /// Claims a spare block ahead of need when this router's settled blocks run low (under a
    /// quarter of a block free) and more than a quarter of the range is unclaimed. The spare's
    /// claim then spreads by gossip before any address in it is handed out, which makes crossing
    /// claims (and the conflicts they cause) rarer.
    fn keep_headroom(&mut self) {
        let mut free = 0;
        let mut claimed = 0u32;
        for (&i, c) in &self.claims {
            if c.owner != NOBODY {
                claimed += 1;
            }
            if c.owner == self.me && !self.recovered.contains(&i) {
                free += self.usable(i) - self.in_use(i);
            }
        }
        let unclaimed = self.block_count() - claimed;
        let low = free < (self.block_size() as usize / 4).max(1);
        if low && unclaimed * 4 > self.block_count() {
            self.claim_free_block();
        }
    }

    /// The lowest free, unreserved address of block `index`.
    fn free_in(&self, index: u32) -> Option<Ipv4Addr> {
        let start = self.block_start(index);
        (0..self.block_size())
            .map(|o| start + o)
            .filter(|&a| self.reserved(a).is_none())
            .map(Ipv4Addr::from)
            .find(|a| !self.by_addr.contains_key(a))
    }

    /// Claims block `index` for this router (it must be unclaimed or a tombstone).
    fn claim(&mut self, index: u32) {
        self.generation += 1;
        let version = self
            .claims
            .get(&index)
            .map_or(1, |c| c.version.saturating_add(1));
        self.claims.insert(
            index,
            Claim {
                owner: self.me,
                version,
            },
        );
    }

    /// Claims a free block picked pseudo-randomly from this router's uid and how many claims
    /// it has seen change, so routers claiming at the same moment rarely pick the same block.
    fn claim_free_block(&mut self) -> Option<u32> {
        let free: Vec<u32> = (0..self.block_count())
            .filter(|i| self.claims.get(i).is_none_or(|c| c.owner == NOBODY))
            .collect();
        if free.is_empty() {
            return None;
        }
        let pick = mix(self.me ^ mix(self.generation)) % free.len() as u64;
        let index = free[pick as usize];
        self.claim(index);
        Some(index)
    }

    /// An address for `container`: the one it holds, else a free one from this router's blocks
    /// (the fullest first), else one from a newly claimed free block, else (last resort) one from
    /// a block recovered from gossip (see [`MergeOutcome::recovered`]). May also claim a spare
    /// block ahead of need; gossip when [`Ipam::generation`] moved.
    pub fn allocate(&mut self, container: &str) -> Result<Lease, IpamError> {
        Self::check_id(container)?;
        if let Some(&addr) = self.allocs.get(container) {
            return Ok(self.lease(addr));
        }
        let lease = self.allocate_new(container)?;
        self.keep_headroom();
        Ok(lease)
    }

    fn allocate_new(&mut self, container: &str) -> Result<Lease, IpamError> {
        let mine: Vec<u32> = self
            .claims
            .iter()
            .filter(|(_, c)| c.owner == self.me)
            .map(|(&i, _)| i)
            .collect();
        let (recovered, settled): (Vec<u32>, Vec<u32>) =
            mine.iter().partition(|i| self.recovered.contains(i));
        if let Some(addr) = self.free_in_fullest(&settled) {
            return Ok(self.insert(container, addr));
        }
        // A freshly claimed block always has a free address: blocks hold at least 4, and at
        // most two (the range's network and broadcast) are reserved.
        if let Some(addr) = self.claim_free_block().and_then(|i| self.free_in(i)) {
            return Ok(self.insert(container, addr));
        }
        if let Some(addr) = self.free_in_fullest(&recovered) {
            return Ok(self.insert(container, addr));
        }
        Err(IpamError::Exhausted {
            range: self.range_text(),
            owned: mine.len(),
        })
    }

    /// Gives `container` the address `addr` (`attach NETNS ADDR`), claiming its block when no
    /// one owns it.
    pub fn allocate_specific(
        &mut self,
        container: &str,
        addr: Ipv4Addr,
    ) -> Result<Lease, IpamError> {
        Self::check_id(container)?;
        let index = self.block_of(addr).ok_or_else(|| IpamError::OutsideRange {
            addr,
            range: self.range_text(),
        })?;
        if let Some(what) = self.reserved(u32::from(addr)) {
            return Err(IpamError::Reserved {
                addr,
                what,
                range: self.range_text(),
            });
        }
        if let Some(&held) = self.allocs.get(container) {
            if held == addr {
                return Ok(self.lease(addr));
            }
            return Err(IpamError::AlreadyAttached {
                container: container.to_string(),
                addr: held,
            });
        }
        if let Some(holder) = self.by_addr.get(&addr) {
            return Err(IpamError::InUse {
                addr,
                holder: holder.clone(),
            });
        }
        match self.claims.get(&index) {
            Some(c) if c.owner == self.me => {}
            Some(c) if c.owner != NOBODY => {
                return Err(IpamError::OwnedByOther {
                    addr,
                    block: self.block_text(index),
                    owner: c.owner,
                })
            }
            _ => self.claim(index),
        }
        Ok(self.insert(container, addr))
    }

    /// Treats the blocks recovered from gossip as this router's own for allocation, once the
    /// router has re-attached the containers that survived its restart.
    pub fn adopt_recovered(&mut self) {
        self.recovered.clear();
    }

    /// Whether the block holding `addr` was recovered from gossip and not yet adopted.
    pub fn is_recovered(&self, addr: Ipv4Addr) -> bool {
        self.block_of(addr)
            .is_some_and(|i| self.recovered.contains(&i))
    }

    /// Releases `container`'s address (on detach); returns it, `None` if it held none.
    pub fn release(&mut self, container: &str) -> Option<Ipv4Addr> {
        let addr = self.allocs.remove(container)?;
        self.by_addr.remove(&addr);
        Some(addr)
    }

    /// The address `container` holds.
    pub fn lookup(&self, container: &str) -> Option<Lease> {
        self.allocs.get(container).map(|&a| self.lease(a))
    }

    /// The container holding `addr` on this router.
    pub fn holder_of(&self, addr: Ipv4Addr) -> Option<&str> {
        self.by_addr.get(&addr).map(String::as_str)
    }

    /// The uid of the router owning `addr`'s block; `None` outside the range, unclaimed or
    /// released.
    pub fn owner_of(&self, addr: Ipv4Addr) -> Option<u64> {
        let c = self.claims.get(&self.block_of(addr)?)?;
        (c.owner != NOBODY).then_some(c.owner)
    }

    /// Every allocation of this router, by container id.
    pub fn allocations(&self) -> impl Iterator<Item = (&str, Lease)> + '_ {
        self.allocs
            .iter()
            .map(|(c, &a)| (c.as_str(), self.lease(a)))
    }

    /// Frees the blocks of a peer that left for good (`peers remove`): a tombstone one version
    /// above each of its claims. Returns how many blocks were freed; gossip [`Ipam::claims`] so
    /// the others learn it. Forgetting this router itself frees nothing.
    pub fn forget_peer(&mut self, uid: u64) -> usize {
        if uid == self.me || uid == NOBODY {
            return 0;
        }
        let mut n = 0;
        for c in self.claims.values_mut().filter(|c| c.owner == uid) {
            *c = Claim {
                owner: NOBODY,
                version: c.version.saturating_add(1),
            };
            n += 1;
        }
        self.generation += u64::from(n > 0);
        n
    }
}

/// SplitMix64's finaliser: spreads uids over the blocks.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
