//! The gossiped peer table: every other router this one knows, with the rules that make
//! departed routers drop out of it everywhere.
//!
//! An entry is replaced only by one with a greater version (its owner bumps the version on every
//! change). Two kinds of entry leave the table:
//!
//! - **Removed** peers (`peers remove`): [`PeerTable::remove`] turns the entry into a
//!   *tombstone* one version above it ([`PeerRepr::removed`], bit 15 of the short-id field on
//!   the wire). Tombstones are gossiped like entries, so every router learns the removal, and
//!   stale copies of the entry (lower versions) still travelling in others' gossip lose to it.
//!   A new incarnation of the peer starts at a higher version (its start time in microseconds)
//!   and replaces the tombstone: a removed router that is restarted may rejoin.
//! - **Unreachable** peers: a peer no reachable router lists a connection to, for
//!   [`Timing::forget_unreachable_after`], is forgotten *locally* ([`PeerTable::expire`]). It
//!   becomes a local tombstone at the same version, which is not gossiped (each router decides
//!   for itself, so a partition does not make one side delete the other for everybody) but
//!   keeps gossip carrying that same stale version from bringing the entry back.
//!
//! Tombstones are dropped after [`Timing::tombstone_ttl`], by when every router has heard them.
//!
//! Everything here is pure: time comes in as an argument.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::wire::gossip::PeerRepr;

/// How long departed peers linger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A peer unreachable this long is forgotten locally.
    pub forget_unreachable_after: Duration,
    /// A tombstone is dropped this long after it was stored.
    pub tombstone_ttl: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            forget_unreachable_after: Duration::from_secs(60),
            tombstone_ttl: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    repr: PeerRepr,
    /// A tombstone kept only here (an unreachable peer forgotten locally): never gossiped.
    local: bool,
    /// When the entry was stored; tombstones expire from this.
    since: Instant,
    /// Since when no reachable router lists a connection to the peer.
    unreachable_since: Option<Instant>,
    /// The table's change counter when this entry last changed by gossip or removal (0: a
    /// placeholder, never changed): what [`PeerTable::changed_since`] looks at.
    changed: u64,
}

/// What [`PeerTable::merge`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    /// Some entry was new or newer: gossip again.
    pub changed: bool,
    /// Peers a tombstone newly removed here (stop dialling them).
    pub removed: Vec<String>,
}

/// What [`PeerTable::expire`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    /// Peers forgotten because they stayed unreachable.
    pub forgotten: Vec<String>,
    /// Tombstones dropped after their time to live.
    pub tombstones_dropped: usize,
}

/// Every other router this one knows. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct PeerTable {
    own: String,
    entries: BTreeMap<String, Entry>,
    /// Counts changes (merges of newer entries, removals): gossip sends what changed after
    /// the count it last sent at.
    seq: u64,
}

impl PeerTable {
    /// An empty table of the router called `own` (whose own entry it never holds).
    pub fn new(own: &str) -> Self {
        PeerTable {
            own: own.to_string(),
            entries: BTreeMap::new(),
            seq: 0,
        }
    }

    /// Merges received entries (never this router's own): a greater version replaces the
    /// stored entry or tombstone, an equal or smaller one is ignored.
    pub fn merge(&mut self, received: Vec<PeerRepr>, now: Instant) -> Merged {
        let mut out = Merged::default();
        for p in received {
            if p.name == self.own {
                continue;
            }
            let old = self.entries.get(&p.name);
            if old.is_some_and(|o| o.repr.version >= p.version) {
                continue;
            }
            if p.removed && old.is_none_or(|o| !o.repr.removed || o.local) {
                out.removed.push(p.name.clone());
            }
            out.changed = true;
            self.seq += 1;
            self.entries.insert(
                p.name.clone(),
                Entry {
                    repr: p,
                    local: false,
                    since: now,
                    unreachable_since: None,
                    changed: self.seq,
                },
            );
        }
        out
    }

    /// Records a peer that just connected, until its own gossip arrives (version 0, so any
    /// gossiped entry replaces it). Leaves a known entry or tombstone alone.
    pub fn note_connected(&mut self, name: &str, uid: u64, short_id: u16, now: Instant) {
        if name == self.own {
            return;
        }
        self.entries.entry(name.to_string()).or_insert(Entry {
            repr: PeerRepr {
                name: name.to_string(),
                uid,
                short_id,
                version: 0,
                connections: Vec::new(),
                removed: false,
            },
            local: false,
            since: now,
            unreachable_since: None,
            changed: 0,
        });
    }

    /// Turns `name`'s entry into a gossiped tombstone one version above it; returns the
    /// tombstone, `None` when the peer is unknown or already removed.
    ///
    /// The tombstone's version is the entry's next one, or `at_least` if that is greater: a
    /// router passes the time in microseconds (the unit of versions), so the tombstone
    /// outranks copies of the entry newer than its own that other routers may hold (the
    /// removed router's last change may have reached them and not this one), while a later
    /// incarnation of the router, whose versions start at its start time, outranks it.
    pub fn remove(&mut self, name: &str, now: Instant, at_least: u64) -> Option<PeerRepr> {
        let e = self.entries.get_mut(name)?;
        if e.repr.removed && !e.local {
            return None;
        }
        e.repr.version = e.repr.version.saturating_add(1).max(at_least);
        e.repr.removed = true;
        e.repr.connections.clear();
        e.local = false;
        e.since = now;
        e.unreachable_since = None;
        e.changed = self.seq + 1;
        self.seq += 1;
        Some(e.repr.clone())
    }

    /// The live entry of `name` (not a tombstone).
    pub fn get(&self, name: &str) -> Option<&PeerRepr> {
        self.entries
            .get(name)
            .map(|e| &e.repr)
            .filter(|p| !p.removed)
    }

    /// The entry or tombstone of `name`.
    pub fn get_any(&self, name: &str) -> Option<&PeerRepr> {
        self.entries.get(name).map(|e| &e.repr)
    }

    /// Whether `name` is a tombstone here (removed, or forgotten as unreachable).
    pub fn is_removed(&self, name: &str) -> bool {
        self.entries.get(name).is_some_and(|e| e.repr.removed)
    }

    /// Whether `name` was removed (`peers remove` here or elsewhere): a gossiped tombstone.
    pub fn is_tombstoned(&self, name: &str) -> bool {
        self.entries
            .get(name)
            .is_some_and(|e| e.repr.removed && !e.local)
    }

    /// Every live entry, by name.
    pub fn live(&self) -> impl Iterator<Item = &PeerRepr> + '_ {
        self.entries
            .values()
            .map(|e| &e.repr)
            .filter(|p| !p.removed)
    }

    /// What to gossip: live entries and removal tombstones (not local tombstones).
    pub fn gossip(&self) -> Vec<&PeerRepr> {
        self.entries
            .values()
            .filter(|e| !e.local)
            .map(|e| &e.repr)
            .collect()
    }

    /// The removal tombstones this router gossips (not local ones).
    pub fn tombstones(&self) -> impl Iterator<Item = &PeerRepr> {
        self.entries
            .values()
            .filter(|e| e.repr.removed && !e.local)
            .map(|e| &e.repr)
    }

    /// Whether an entry of `name` at `version` is news here: newer than the entry or
    /// tombstone held, or of a peer not known at all.
    pub fn is_news(&self, name: &str, version: u64) -> bool {
        self.get_any(name)
            .is_none_or(|known| version > known.version)
    }

    /// The change counter now: pass it to [`PeerTable::changed_since`] next time.
    pub fn change_seq(&self) -> u64 {
        self.seq
    }

    /// What to gossip of the changes after `seq`: the live entries and removal tombstones
    /// that changed since (not local tombstones, not placeholders).
    pub fn changed_since(&self, seq: u64) -> Vec<&PeerRepr> {
        self.entries
            .values()
            .filter(|e| !e.local && e.changed > seq)
            .map(|e| &e.repr)
            .collect()
    }

    /// Names of the removed peers whose tombstones this router gossips.
    pub fn removed(&self) -> Vec<String> {
        self.tombstones().map(|p| p.name.clone()).collect()
    }

    /// The peers reachable from this router: its own connections (`own_conns`), then every
    /// established connection a reachable peer's live entry lists, transitively.
    pub fn reachable<'a>(&self, own_conns: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        // Borrowed names while walking (a 100-router mesh lists ~10,000 connections); owned
        // ones only for the answer.
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut todo: Vec<&str> = own_conns.into_iter().collect();
        while let Some(name) = todo.pop() {
            if name == self.own || !seen.insert(name) {
                continue;
            }
            if let Some(p) = self.get(name) {
                todo.extend(
                    p.connections
                        .iter()
                        .filter(|c| c.established && !seen.contains(c.peer_name.as_str()))
                        .map(|c| c.peer_name.as_str()),
                );
            }
        }
        seen.into_iter().map(str::to_string).collect()
    }

    /// The reachable peers (names) whose live entries list an established connection to
    /// `name`, and whether `own_conns` holds it: who would refuse to call it gone.
    pub fn connected_to<'a>(
        &self,
        name: &str,
        own_conns: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Vec<String> {
        let reachable = self.reachable(own_conns.clone());
        let mut via: Vec<String> = own_conns
            .into_iter()
            .filter(|c| *c == name)
            .map(|_| self.own.clone())
            .collect();
        via.extend(
            self.live()
                .filter(|p| reachable.contains(&p.name) && p.name != name)
                .filter(|p| {
                    p.connections
                        .iter()
                        .any(|c| c.established && c.peer_name == name)
                })
                .map(|p| p.name.clone()),
        );
        via
    }

    /// Ages the table: a live peer outside `reachable` for [`Timing::forget_unreachable_after`]
    /// becomes a local tombstone; tombstones older than [`Timing::tombstone_ttl`] are dropped.
    pub fn expire(&mut self, reachable: &BTreeSet<String>, now: Instant, t: Timing) -> Expired {
        let mut out = Expired::default();
        self.entries.retain(|_, e| {
            let keep = !e.repr.removed || now.saturating_duration_since(e.since) < t.tombstone_ttl;
            out.tombstones_dropped += usize::from(!keep);
            keep
        });
        for e in self.entries.values_mut().filter(|e| !e.repr.removed) {
            if reachable.contains(&e.repr.name) {
                e.unreachable_since = None;
                continue;
            }
            let since = *e.unreachable_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= t.forget_unreachable_after {
                e.repr.removed = true;
                e.repr.connections.clear();
                e.local = true;
                e.since = now;
                e.unreachable_since = None;
                out.forgotten.push(e.repr.name.clone());
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::gossip::ConnectionRepr;
    use rstest::rstest;

    const T: Timing = Timing {
        forget_unreachable_after: Duration::from_secs(60),
        tombstone_ttl: Duration::from_secs(600),
    };

    fn peer(name: &str, version: u64, conns: &[&str]) -> PeerRepr {
        PeerRepr {
            name: name.into(),
            uid: 100 + u64::from(name.as_bytes()[name.len() - 1]),
            short_id: 1,
            version,
            connections: conns
                .iter()
                .map(|c| ConnectionRepr {
                    peer_name: (*c).into(),
                    address: std::net::SocketAddr::from(([198, 18, 1, 9], 6783)),
                    established: true,
                })
                .collect(),
            removed: false,
        }
    }

    fn tomb(name: &str, version: u64) -> PeerRepr {
        PeerRepr {
            removed: true,
            ..peer(name, version, &[])
        }
    }

    fn names<'a>(it: impl Iterator<Item = &'a PeerRepr>) -> Vec<&'a str> {
        it.map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn merge_keeps_newer_versions_and_skips_self() {
        let now = Instant::now();
        let mut t = PeerTable::new("me");
        assert!(
            t.merge(vec![peer("a", 5, &[]), peer("me", 99, &[])], now)
                .changed
        );
        assert_eq!(names(t.live()), ["a"]);
        assert!(!t.merge(vec![peer("a", 4, &[])], now).changed);
        assert_eq!(t.get("a").map(|p| p.version), Some(5));
        assert!(
            t.merge(vec![peer("a", 6, &[]), peer("b", 1, &[])], now)
                .changed
        );
        assert_eq!(t.get("a").map(|p| p.version), Some(6));
        assert_eq!(names(t.live()), ["a", "b"]);
    }

    /// Gossip sends only what changed since it last sent: newer entries and tombstones, never
    /// placeholders of peers that only connected, nor local tombstones.
    #[test]
    fn changed_since_lists_only_what_changed_after_a_count() {
        let now = Instant::now();
        let mut t = PeerTable::new("me");
        t.note_connected("p", 1, 1, now);
        assert!(t.changed_since(0).is_empty());
        t.merge(vec![peer("a", 5, &[]), peer("b", 1, &[])], now);
        let sent = t.change_seq();
        assert_eq!(names(t.changed_since(0).into_iter()), ["a", "b"]);
        assert!(t.changed_since(sent).is_empty());
        t.merge(vec![peer("a", 5, &[]), peer("b", 2, &[])], now);
        assert_eq!(names(t.changed_since(sent).into_iter()), ["b"]);
        let sent = t.change_seq();
        t.remove("a", now, 0);
        let tomb = t.changed_since(sent);
        assert_eq!(names(tomb.iter().copied()), ["a"]);
        assert!(tomb[0].removed);
        let sent = t.change_seq();
        let far = now + T.forget_unreachable_after * 2;
        t.expire(&BTreeSet::new(), far, T);
        t.expire(&BTreeSet::new(), far + T.forget_unreachable_after, T);
        assert!(
            t.changed_since(sent).is_empty(),
            "local tombstones stay local"
        );
    }
    /// Whatever order a removed peer's tombstone and stale copies of its entry arrive in,
    /// the tombstone wins; only a newer incarnation brings the peer back.
    #[rstest]
    #[case::tombstone_then_stale(vec![tomb("x", 8), peer("x", 7, &[])], true)]
    #[case::stale_then_tombstone(vec![peer("x", 7, &[]), tomb("x", 8)], true)]
    #[case::same_version_as_tombstone(vec![tomb("x", 8), peer("x", 8, &[])], true)]
    #[case::new_incarnation(vec![tomb("x", 8), peer("x", 9_000, &[])], false)]
    #[case::old_tombstone_of_a_newer_entry(vec![peer("x", 9_000, &[]), tomb("x", 8)], false)]
    fn tombstones_beat_stale_gossip(#[case] order: Vec<PeerRepr>, #[case] removed: bool) {
        let now = Instant::now();
        let mut t = PeerTable::new("me");
        for p in order {
            t.merge(vec![p], now);
        }
        assert_eq!(t.is_removed("x"), removed);
        assert_eq!(t.get("x").is_none(), removed);
        assert_eq!(t.removed().is_empty(), !removed);
    }

    #[test]
    fn remove_writes_a_tombstone_one_version_above_that_spreads() {
        let now = Instant::now();
        let mut a = PeerTable::new("a");
        a.merge(vec![peer("x", 7, &["a"])], now);
        let ts = a.remove("x", now, 0).unwrap();
        assert_eq!((ts.name.as_str(), ts.version, ts.removed), ("x", 8, true));
        assert!(ts.connections.is_empty());
        assert!(a.remove("x", now, 0).is_none(), "removing twice is a no-op");
        assert!(a.is_tombstoned("x") && a.is_removed("x"));
        assert!(a.remove("nobody", now, 0).is_none());
        assert!(a.get("x").is_none());
        assert_eq!(a.removed(), ["x"]);
        // Another router holding the stale entry drops it on the tombstone, and reports it.
        let mut b = PeerTable::new("b");
        b.merge(vec![peer("x", 7, &["b"])], now);
        let m = b.merge(a.gossip().into_iter().cloned().collect(), now);
        assert!(m.changed);
        assert_eq!(m.removed, ["x"]);
        assert!(b.get("x").is_none());
        // b's stale copy travelling back to a changes nothing.
        assert!(!a.merge(vec![peer("x", 7, &[])], now).changed);
    }

    #[test]
    fn a_connection_placeholder_never_hides_a_tombstone() {
        let now = Instant::now();
        let mut t = PeerTable::new("me");
        t.merge(vec![tomb("x", 8)], now);
        t.note_connected("x", 1, 2, now);
        assert!(t.is_removed("x"));
        t.note_connected("y", 1, 2, now);
        assert_eq!(t.get("y").map(|p| p.version), Some(0));
        assert!(t.merge(vec![peer("y", 1, &[])], now).changed);
    }

    #[rstest]
    #[case::direct(&["a"], &["a", "b", "c"])]
    #[case::through_nobody(&[], &[])]
    #[case::only_c(&["c"], &["c"])]
    fn reachability_follows_established_connections(#[case] own: &[&str], #[case] want: &[&str]) {
        let now = Instant::now();
        let mut t = PeerTable::new("me");
        // a - b - c chain, and d which lists a connection nobody reachable confirms.
        t.merge(
            vec![
                peer("a", 1, &["me", "b"]),
                peer("b", 1, &["a", "c"]),
                peer("c", 1, &[]),
                peer("d", 1, &["a"]),
            ],
            now,
        );
        let r = t.reachable(own.iter().copied());
        assert_eq!(r.iter().map(String::as_str).collect::<Vec<_>>(), want);
    }

    #[test]
    fn connected_to_names_who_still_sees_a_peer() {
        let now = Instant::now();
        let mut t = PeerTable::new("me");
        t.merge(
            vec![
                peer("a", 1, &["me", "x"]),
                peer("x", 1, &["a"]),
                peer("z", 1, &["x"]),
            ],
            now,
        );
        // z is unreachable, so its stale claim to see x does not count.
        assert_eq!(t.connected_to("x", ["a"]), ["a"]);
        assert_eq!(t.connected_to("x", ["a", "x"]), ["me", "a"]);
        assert!(t.connected_to("x", []).is_empty());
    }

    #[test]
    fn an_unreachable_peer_is_forgotten_locally_and_stale_gossip_cannot_revive_it() {
        let t0 = Instant::now();
        let mut t = PeerTable::new("me");
        t.merge(vec![peer("a", 3, &["me"]), peer("gone", 5, &[])], t0);
        let reach = t.reachable(["a"]);
        assert_eq!(t.expire(&reach, t0, T), Expired::default());
        let half = t0 + Duration::from_secs(30);
        assert!(t.expire(&reach, half, T).forgotten.is_empty());
        let later = t0 + Duration::from_secs(61);
        let e = t.expire(&reach, later, T);
        assert_eq!(e.forgotten, ["gone"]);
        assert_eq!(names(t.live()), ["a"]);
        // Local: not gossiped, not listed as removed.
        assert!(t.gossip().iter().all(|p| p.name != "gone"));
        assert!(t.removed().is_empty());
        assert!(t.is_removed("gone") && !t.is_tombstoned("gone"));
        // The same version from another router's gossip stays forgotten; a newer one returns.
        assert!(!t.merge(vec![peer("gone", 5, &[])], later).changed);
        assert!(t.get("gone").is_none());
        // `peers remove` of a forgotten peer still writes a tombstone others can hear.
        let mut again = t.clone();
        let ts = again.remove("gone", later, 0).unwrap();
        assert_eq!((ts.version, again.removed()), (6, vec!["gone".to_string()]));
        assert!(t.merge(vec![peer("gone", 6, &[])], later).changed);
        assert!(t.get("gone").is_some());
    }

    #[test]
    fn becoming_reachable_again_resets_the_clock() {
        let t0 = Instant::now();
        let mut t = PeerTable::new("me");
        t.merge(vec![peer("x", 1, &[])], t0);
        let none = BTreeSet::new();
        let x: BTreeSet<String> = ["x".to_string()].into();
        t.expire(&none, t0, T);
        t.expire(&x, t0 + Duration::from_secs(50), T);
        let e = t.expire(&none, t0 + Duration::from_secs(70), T);
        assert!(e.forgotten.is_empty(), "unreachable for 20 s only");
        let e = t.expire(&none, t0 + Duration::from_secs(131), T);
        assert_eq!(e.forgotten, ["x"]);
    }

    #[rstest]
    #[case::young(Duration::from_secs(599), 1)]
    #[case::expired(Duration::from_secs(600), 0)]
    fn tombstones_expire_after_their_ttl(#[case] age: Duration, #[case] left: usize) {
        let t0 = Instant::now();
        let mut t = PeerTable::new("me");
        t.merge(vec![tomb("x", 8)], t0);
        let e = t.expire(&BTreeSet::new(), t0 + age, T);
        assert_eq!(e.tombstones_dropped, 1 - left);
        assert_eq!(t.gossip().len(), left);
    }
}
