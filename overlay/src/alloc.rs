//! Container addresses for the daemon: the [`crate::ipam::Ipam`] behind a small trait, saved to
//! the state directory after every change so a restarted router neither loses its containers'
//! addresses nor hands one out twice.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::config::Range;
use crate::ipam::{Conflict, Ipam, IpamError, MergeOutcome};
use crate::wire::ipam::Repr;

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

/// The IPAM with its state file.
#[derive(Debug)]
pub struct IpamSource {
    ipam: Ipam,
    path: Option<PathBuf>,
    /// Claim conflicts not yet handled (containers whose block another router won).
    pub conflicts: Vec<Conflict>,
    /// Conflicts seen since start.
    pub conflicts_total: u64,
    /// Claims learnt from peers changed since the last save ([`IpamSource::flush`]).
    unsaved: bool,
}

impl IpamSource {
    /// The uid a router restarting from `state_dir` must reuse to keep its claims, if any.
    pub fn saved_uid(state_dir: Option<&PathBuf>) -> Result<Option<u64>, IpamError> {
        match state_dir {
            Some(d) => crate::ipam::state_uid(&d.join("ipam.json")),
            None => Ok(None),
        }
    }

    /// Loads (or starts) the IPAM of router `uid` over `range`, kept in `state_dir/ipam.json`.
    pub fn open(range: Range, uid: u64, state_dir: Option<&PathBuf>) -> Result<Self, IpamError> {
        let path = state_dir.map(|d| d.join("ipam.json"));
        let ipam = match &path {
            Some(p) => Ipam::load(p, range, uid)?,
            None => Ipam::new(range, uid)?,
        };
        Ok(IpamSource {
            ipam,
            path,
            conflicts: Vec::new(),
            conflicts_total: 0,
            unsaved: false,
        })
    }

    fn save(&mut self) {
        self.unsaved = false;
        if let Some(p) = &self.path {
            if let Err(e) = self.ipam.save(p) {
                tracing::warn!("cannot save the IPAM state: {e}");
            }
        }
    }

    /// The claims to gossip, and the generation they belong to.
    pub fn claims(&self) -> (u64, Repr) {
        (self.ipam.generation(), self.ipam.claims())
    }

    /// Merges claims heard from a peer.
    pub fn merge(&mut self, claims: &Repr) -> MergeOutcome {
        let out = self.ipam.merge(&claims.claims);
        if !out.conflicts.is_empty() {
            for c in &out.conflicts {
                tracing::warn!(
                    "IPAM: container {} lost {} to router {:016x}; re-attach it for a new address",
                    c.container,
                    c.addr,
                    c.winner
                );
            }
            self.conflicts.extend(out.conflicts.iter().cloned());
            self.conflicts_total += out.conflicts.len() as u64;
        }
        // What peers claim is saved a little later ([`IpamSource::flush`]): a mesh coming up
        // changes it with every claims frame (at 100 routers, writing the file each time was a
        // tenth of all the CPU). What changes this router's own addresses is saved at once.
        if out.changed {
            if out.conflicts.is_empty() {
                self.unsaved = true;
            } else {
                self.save();
            }
        }
        out
    }

    /// Saves claims learnt since the last save, if any (the daemon calls it twice a second).
    pub fn flush(&mut self) {
        if self.unsaved {
            self.save();
        }
    }

    /// Frees the blocks of router `uid`, which left for good (`peers remove`), and saves.
    /// Returns how many blocks were freed.
    pub fn forget_peer(&mut self, uid: u64) -> usize {
        let n = self.ipam.forget_peer(uid);
        if n > 0 {
            self.save();
        }
        n
    }

    /// Takes the conflicts to handle (the containers to re-address).
    pub fn take_conflicts(&mut self) -> Vec<Conflict> {
        std::mem::take(&mut self.conflicts)
    }

    /// The IPAM's status.
    pub fn status(&self) -> crate::ipam::Status {
        self.ipam.status()
    }
}

impl AddressSource for IpamSource {
    fn allocate(&mut self, container: &str, wanted: Option<Ipv4Addr>) -> Result<Ipv4Addr, String> {
        let lease = match wanted {
            Some(a) => self.ipam.allocate_specific(container, a),
            None => self.ipam.allocate(container),
        }
        .map_err(|e| e.to_string())?;
        self.save();
        Ok(lease.addr)
    }

    fn release(&mut self, container: &str) -> Option<Ipv4Addr> {
        let a = self.ipam.release(container);
        self.save();
        a
    }

    fn held(&self) -> Vec<(String, Ipv4Addr)> {
        self.ipam
            .allocations()
            .map(|(c, l)| (c.to_string(), l.addr))
            .collect()
    }
}

impl Drop for IpamSource {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn addresses_survive_a_restart_with_the_saved_uid() {
        let dir = std::env::temp_dir().join(format!("overlay-alloc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let range: Range = "198.19.0.0/16".parse().unwrap();
        let mut a = IpamSource::open(range, 42, Some(&dir)).unwrap();
        let x = a.allocate("c1", None).unwrap();
        let y = a.allocate("c2", None).unwrap();
        assert_ne!(x, y);
        assert_eq!(a.allocate("c1", None).unwrap(), x);
        drop(a);
        assert_eq!(IpamSource::saved_uid(Some(&dir)).unwrap(), Some(42));
        let mut b = IpamSource::open(range, 42, Some(&dir)).unwrap();
        assert_eq!(b.held().len(), 2);
        let z = b.allocate("c3", None).unwrap();
        assert!(z != x && z != y);
        assert!(b.allocate("c4", Some(x)).is_err(), "x is still in use");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Claims learnt from peers are written on `flush` (twice a second), not once per frame;
    /// dropping the source flushes too.
    #[test]
    fn learnt_claims_are_saved_on_flush_not_per_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let range: Range = "198.19.0.0/16".parse().unwrap();
        let mut a = IpamSource::open(range, 1, Some(&path)).unwrap();
        a.allocate("a1", None).unwrap();
        let mut b = IpamSource::open(range, 2, None).unwrap();
        b.allocate("b1", None).unwrap();
        let saved = || std::fs::read_to_string(path.join("ipam.json")).unwrap();
        let before = saved();
        assert!(a.merge(&b.claims().1).changed);
        assert_eq!(saved(), before, "not written for a claims frame");
        a.flush();
        let after = saved();
        assert_ne!(after, before, "written on flush");
        let mut c = IpamSource::open(range, 3, None).unwrap();
        c.allocate("c1", None).unwrap();
        assert!(a.merge(&c.claims().1).changed);
        drop(a);
        assert_ne!(saved(), after, "written when dropped");
    }

    #[test]
    fn two_routers_merging_claims_hand_out_distinct_addresses() {
        let range: Range = "198.19.0.0/16".parse().unwrap();
        let mut a = IpamSource::open(range, 1, None).unwrap();
        let mut b = IpamSource::open(range, 2, None).unwrap();
        let xa = a.allocate("a1", None).unwrap();
        b.merge(&a.claims().1);
        let xb = b.allocate("b1", None).unwrap();
        a.merge(&b.claims().1);
        assert_ne!(xa, xb);
        assert!(a.conflicts.is_empty() && b.conflicts.is_empty());
    }
}
