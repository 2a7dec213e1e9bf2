//! A serialisable picture of the IPAM state, for the router's `status` (text and `--json`).

use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;

use super::{Ipam, NOBODY};

/// The IPAM part of the router's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The range, `a.b.c.d/len`.
    pub range: String,
    /// This router's uid.
    pub uid: u64,
    /// Addresses per block.
    pub block_size: u32,
    /// Blocks in the range.
    pub blocks_total: u32,
    /// Blocks this router owns.
    pub blocks_owned: u32,
    /// Blocks other routers own.
    pub blocks_others: u32,
    /// Blocks nobody owns (never claimed, or released by a tombstone).
    pub blocks_free: u32,
    /// Addresses still free in this router's blocks.
    pub addresses_free: u64,
    /// Every claimed or released block, in address order.
    pub blocks: Vec<BlockStatus>,
    /// This router's allocations, by container id.
    pub allocations: Vec<AllocationStatus>,
}

/// One block's winning claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockStatus {
    /// The block, `a.b.c.d/len`.
    pub block: String,
    /// Owner uid; `None` for a block released by a tombstone.
    pub owner: Option<u64>,
    /// Claim version.
    pub version: u64,
    /// Whether this router owns it.
    pub mine: bool,
    /// Addresses in use (known only for this router's blocks).
    pub in_use: u32,
    /// This router's block learnt back from gossip, allocated from last until adopted.
    pub recovered: bool,
}

/// One container's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllocationStatus {
    /// The container id.
    pub container: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix_len: u8,
}

impl Ipam {
    /// The state, for `status`.
    pub fn status(&self) -> Status {
        let mut blocks = Vec::new();
        let (mut owned, mut others, mut free_addrs) = (0u32, 0u32, 0u64);
        for (&i, c) in &self.claims {
            let mine = c.owner == self.me;
            let lo = Ipv4Addr::from(self.block_start(i));
            let hi = Ipv4Addr::from(self.block_start(i) + (self.block_size() - 1));
            let in_use = self.by_addr.range(lo..=hi).count() as u32;
            if mine {
                owned += 1;
                let usable = (0..self.block_size())
                    .filter(|o| self.reserved(self.block_start(i) + o).is_none())
                    .count() as u64;
                free_addrs += usable - u64::from(in_use);
            } else if c.owner != NOBODY {
                others += 1;
            }
            blocks.push(BlockStatus {
                block: self.block_text(i),
                owner: (c.owner != NOBODY).then_some(c.owner),
                version: c.version,
                mine,
                in_use,
                recovered: self.recovered.contains(&i),
            });
        }
        Status {
            range: self.range_text(),
            uid: self.me,
            block_size: self.block_size(),
            blocks_total: self.block_count(),
            blocks_owned: owned,
            blocks_others: others,
            blocks_free: self.block_count() - owned - others,
            addresses_free: free_addrs,
            blocks,
            allocations: self
                .allocations()
                .map(|(c, l)| AllocationStatus {
                    container: c.to_string(),
                    addr: l.addr,
                    prefix_len: l.prefix_len,
                })
                .collect(),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "IPAM {} (blocks of {}), router {:016x}",
            self.range, self.block_size, self.uid
        )?;
        writeln!(
            f,
            "  blocks: {} mine, {} other routers', {} free of {}; {} address(es) free in mine",
            self.blocks_owned,
            self.blocks_others,
            self.blocks_free,
            self.blocks_total,
            self.addresses_free
        )?;
        for b in &self.blocks {
            let owner = match b.owner {
                Some(o) if b.mine => format!("{o:016x} (this router)"),
                Some(o) => format!("{o:016x}"),
                None => "released".to_string(),
            };
            write!(f, "  {:<18} v{:<3} {owner}", b.block, b.version)?;
            if b.mine {
                write!(f, ", {} in use", b.in_use)?;
            }
            if b.recovered {
                write!(f, ", recovered from gossip")?;
            }
            writeln!(f)?;
        }
        if self.allocations.is_empty() {
            writeln!(f, "  containers: none attached")?;
        } else {
            writeln!(f, "  containers:")?;
        }
        for a in &self.allocations {
            writeln!(f, "    {:<16} {}/{}", a.container, a.addr, a.prefix_len)?;
        }
        Ok(())
    }
}
