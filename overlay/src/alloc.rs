//! Container addresses, behind a small trait so the IPAM (its own module, merged separately)
//! can replace the stand-in here without touching the router.
//!
//! The stand-in gives each router a block of 256 addresses chosen by a hash of its name, and
//! remembers what it handed out in its state directory so a restarted router does not give an
//! address twice. It does not coordinate with other routers: two names hashing to the same
//! block would collide, which the real IPAM resolves through gossip.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::config::Range;

/// Where container addresses come from.
pub trait AddressSource: Send {
    /// An address for `container` (the same one again if it already has one); `wanted` asks
    /// for a specific address.
    fn allocate(&mut self, container: &str, wanted: Option<Ipv4Addr>) -> Result<Ipv4Addr, String>;
    /// Gives `container`'s address back.
    fn release(&mut self, container: &str) -> Option<Ipv4Addr>;
    /// Every (container, address) held.
    fn held(&self) -> Vec<(String, Ipv4Addr)>;
}

/// The stand-in: a per-router block derived from the router's name.
#[derive(Debug)]
pub struct BlockAllocator {
    range: Range,
    base: u32,
    size: u32,
    held: BTreeMap<String, Ipv4Addr>,
    path: Option<PathBuf>,
}

impl BlockAllocator {
    /// The block of router `name` in `range`, remembering holdings in `path` (loaded now).
    pub fn new(range: Range, name: &str, path: Option<PathBuf>) -> Self {
        let span: u32 = 1u32 << (32 - u32::from(range.len));
        let size = span.min(256);
        let blocks = (span / size).max(1);
        let block = crate::netdev::fnv32(name.as_bytes()) % blocks;
        let base = u32::from(range.addr) + block * size;
        let held = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| serde_json::from_str::<BTreeMap<String, Ipv4Addr>>(&s).ok())
            .unwrap_or_default();
        BlockAllocator {
            range,
            base,
            size,
            held,
            path,
        }
    }

    fn save(&self) {
        if let Some(p) = &self.path {
            if let Ok(s) = serde_json::to_string(&self.held) {
                let tmp = p.with_extension("tmp");
                if std::fs::write(&tmp, s).is_ok() {
                    let _ = std::fs::rename(&tmp, p);
                }
            }
        }
    }

    fn in_range(&self, a: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.range.len));
        u32::from(a) & mask == u32::from(self.range.addr) & mask
    }
}

impl AddressSource for BlockAllocator {
    fn allocate(&mut self, container: &str, wanted: Option<Ipv4Addr>) -> Result<Ipv4Addr, String> {
        if let Some(a) = self.held.get(container) {
            if wanted.is_none() || wanted == Some(*a) {
                return Ok(*a);
            }
        }
        let taken = |a: &Ipv4Addr, held: &BTreeMap<String, Ipv4Addr>| {
            held.iter().any(|(c, h)| h == a && c != container)
        };
        let addr = match wanted {
            Some(a) => {
                if !self.in_range(a) {
                    return Err(format!(
                        "{a} is outside the overlay range {}/{}",
                        self.range.addr, self.range.len
                    ));
                }
                if taken(&a, &self.held) {
                    return Err(format!("{a} is already in use on this router"));
                }
                a
            }
            None => (1..self.size.saturating_sub(1))
                .map(|i| Ipv4Addr::from(self.base + i))
                .find(|a| {
                    !taken(a, &self.held)
                        && u32::from(*a) & 0xff != 0
                        && u32::from(*a) & 0xff != 255
                })
                .ok_or_else(|| "this router's address block is exhausted".to_string())?,
        };
        self.held.insert(container.to_string(), addr);
        self.save();
        Ok(addr)
    }

    fn release(&mut self, container: &str) -> Option<Ipv4Addr> {
        let a = self.held.remove(container);
        self.save();
        a
    }

    fn held(&self) -> Vec<(String, Ipv4Addr)> {
        self.held.iter().map(|(c, a)| (c.clone(), *a)).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn blocks_hand_out_distinct_addresses_and_remember_them() {
        let dir = std::env::temp_dir().join(format!("overlay-alloc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("addrs.json");
        let range: Range = "198.19.0.0/16".parse().unwrap();
        let mut a = BlockAllocator::new(range, "h1", Some(path.clone()));
        let x = a.allocate("c1", None).unwrap();
        let y = a.allocate("c2", None).unwrap();
        assert_ne!(x, y);
        assert_eq!(a.allocate("c1", None).unwrap(), x);
        let mut b = BlockAllocator::new(range, "h1", Some(path));
        assert_ne!(b.allocate("c3", None).unwrap(), x);
        assert_eq!(b.held().len(), 3);
        assert!(b.allocate("c4", Some(x)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_three_host_names_get_different_blocks() {
        let range: Range = "198.19.0.0/16".parse().unwrap();
        let bases: std::collections::BTreeSet<u32> = ["h1", "h2", "h3"]
            .iter()
            .map(|n| BlockAllocator::new(range, n, None).base)
            .collect();
        assert_eq!(bases.len(), 3);
    }
}
