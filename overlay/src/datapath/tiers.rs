//! What the router drives: sleeve for every connection, and the kernel fast path for those whose
//! heartbeats cross it. Sleeve keeps receiving from every peer whatever the choice, so frames
//! a peer sends while the two sides change datapath are not lost.

use std::sync::Arc;

use super::fast::{FastPath, PathStatus};
use super::sleeve::Sleeve;
use super::{Datapath, DatapathStats, PeerSpec, PeerStats};

/// Sleeve and the fast path together.
#[derive(Debug)]
pub struct Tiers {
    sleeve: Arc<Sleeve>,
    fast: FastPath,
}

impl Tiers {
    /// Both datapaths of one router.
    pub fn new(sleeve: Arc<Sleeve>, fast: FastPath) -> Self {
        Tiers { sleeve, fast }
    }

    /// The fast path.
    pub fn fast(&self) -> &FastPath {
        &self.fast
    }
}

impl Datapath for Tiers {
    fn kind(&self) -> &'static str {
        self.fast.tier().name()
    }

    fn add_peer(&self, spec: PeerSpec) {
        self.sleeve.add_peer(spec.clone());
        self.fast.add_peer(&spec);
    }

    fn remove_peer(&self, name: &str) {
        self.fast.remove_peer(name);
        self.sleeve.remove_peer(name);
    }

    fn peer_stats(&self, name: &str) -> Option<PeerStats> {
        self.sleeve.peer_stats(name)
    }

    fn stats(&self) -> DatapathStats {
        self.sleeve.stats()
    }

    fn probe(&self, round: u64) {
        self.sleeve.probe(round);
    }

    fn acked(&self, name: &str, round: u64, size: usize) {
        self.sleeve.acked(name, round, size);
    }

    fn set_peer_macs(&self, name: &str, macs: Vec<[u8; 6]>) {
        self.fast.set_peer_macs(name, macs);
    }

    fn fast_report(&self, name: &str, report: &crate::wire::fast_report::Repr) {
        self.fast.report(name, report);
    }

    fn fast_alive(&self, name: &str, within: std::time::Duration) -> bool {
        self.fast.alive(name, within)
    }

    fn set_short_id(&self, short_id: u16) {
        self.fast.set_short_id(short_id);
    }

    fn set_peer_short_id(&self, name: &str, short_id: u16) {
        self.fast.set_peer_short_id(name, short_id);
    }

    fn peer_path(&self, name: &str) -> Option<PathStatus> {
        self.fast.peer_path(name)
    }
}
