//! IPAM: allocation rules, claim merging, tombstones, the state file and the status rendering.

use std::net::Ipv4Addr;

use overlay::config::Range;
use overlay::ipam::{block_prefix_len, state_uid, Ipam, IpamError, NOBODY};
use overlay::wire::ipam::ClaimRepr;
use rstest::rstest;

fn range(s: &str) -> Range {
    s.parse().expect("test range")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

fn ipam(r: &str, me: u64) -> Ipam {
    Ipam::new(range(r), me).expect("non-zero uid")
}

/// Gossips `from`'s claims to `to`, returning the merge outcome.
fn gossip(from: &Ipam, to: &mut Ipam) -> overlay::ipam::MergeOutcome {
    to.merge(&from.claims().claims)
}

#[rstest]
#[case(16, 24)]
#[case(20, 24)]
#[case(22, 26)]
#[case(24, 28)]
#[case(26, 30)]
#[case(28, 30)]
#[case(30, 30)]
fn blocks_are_cut_from_the_range_alone(#[case] range_len: u8, #[case] block_len: u8) {
    assert_eq!(block_prefix_len(range_len), block_len);
}

#[rstest]
#[case("198.19.0.0/16", 256, 256)]
#[case("198.19.4.0/24", 16, 16)]
#[case("198.19.4.0/30", 4, 1)]
fn block_geometry(#[case] r: &str, #[case] size: u32, #[case] count: u32) {
    let a = ipam(r, 1);
    assert_eq!((a.block_size(), a.block_count()), (size, count));
}

#[test]
fn uid_zero_is_refused() {
    assert!(matches!(
        Ipam::new(range("198.19.0.0/16"), NOBODY),
        Err(IpamError::ReservedUid)
    ));
}

#[test]
fn host_bits_of_the_range_are_ignored() {
    let a = ipam("198.19.4.77/24", 1);
    assert_eq!(a.range_text(), "198.19.4.0/24");
    assert_eq!(a.prefix_len(), 24);
}

#[test]
fn allocation_is_per_container_and_stable() {
    let mut a = ipam("198.19.0.0/16", 7);
    let c1 = a.allocate("c1").expect("free range");
    let c2 = a.allocate("c2").expect("free range");
    assert_ne!(c1.addr, c2.addr);
    assert_eq!(
        a.allocate("c1").expect("held"),
        c1,
        "asking again returns the same address"
    );
    assert_eq!(c1.prefix_len, 16, "containers share the range's prefix");
    assert_eq!(a.lookup("c2"), Some(c2));
    assert_eq!(a.owner_of(c1.addr), Some(7));
    assert_eq!(a.holder_of(c2.addr), Some("c2"));
    assert_eq!(a.release("c1"), Some(c1.addr));
    assert_eq!(a.release("c1"), None);
    assert_eq!(a.lookup("c1"), None);
    let c3 = a.allocate("c3").expect("free range");
    assert_eq!(c3.addr, c1.addr, "a released address is handed out again");
}

#[test]
fn network_and_broadcast_are_never_handed_out() {
    // A /30 is one block of four addresses: two usable.
    let mut a = ipam("198.19.9.0/30", 3);
    let got = [
        a.allocate("x").expect("usable"),
        a.allocate("y").expect("usable"),
    ];
    assert_eq!(got.map(|l| l.addr), [ip("198.19.9.1"), ip("198.19.9.2")]);
    let err = a.allocate("z").expect_err("exhausted");
    assert!(
        matches!(err, IpamError::Exhausted { owned: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("widen the range"), "{err}");
}

#[rstest]
#[case::network("198.19.4.0", "network address")]
#[case::broadcast("198.19.4.255", "broadcast address")]
#[case::outside("198.19.5.1", "outside the overlay range")]
#[case::underlay("198.18.0.1", "outside the overlay range")]
#[case::other_router("198.19.4.20", "owned by router 0000000000000002")]
#[case::in_use("198.19.4.40", "in use by container \"held\"")]
fn explicit_requests_are_checked(#[case] addr: &str, #[case] message: &str) {
    let mut me = ipam("198.19.4.0/24", 1);
    let mut other = ipam("198.19.4.0/24", 2);
    other
        .allocate_specific("theirs", ip("198.19.4.17"))
        .expect("free block");
    gossip(&other, &mut me);
    me.allocate_specific("held", ip("198.19.4.40"))
        .expect("free block");
    let err = me.allocate_specific("new", ip(addr)).expect_err("refused");
    assert!(err.to_string().contains(message), "{err}");
    assert_eq!(me.lookup("new"), None);
}

#[test]
fn explicit_request_claims_a_free_block_and_is_idempotent() {
    let mut a = ipam("198.19.0.0/16", 5);
    let l = a.allocate_specific("c1", ip("198.19.200.9")).expect("free");
    assert_eq!(l.addr, ip("198.19.200.9"));
    assert_eq!(a.owner_of(ip("198.19.200.1")), Some(5));
    assert_eq!(
        a.allocate_specific("c1", ip("198.19.200.9")).expect("same"),
        l
    );
    let err = a
        .allocate_specific("c1", ip("198.19.200.10"))
        .expect_err("already attached");
    assert!(matches!(err, IpamError::AlreadyAttached { .. }), "{err}");
    // The next dynamic allocation comes from the block it already owns (x.y.200.0 is an
    // ordinary address inside a /16).
    assert_eq!(a.allocate("c2").expect("free").addr, ip("198.19.200.0"));
}

#[rstest]
#[case::empty("")]
#[case::too_long(&"n".repeat(256))]
fn container_ids_are_checked(#[case] id: &str) {
    let mut a = ipam("198.19.0.0/16", 5);
    assert!(matches!(a.allocate(id), Err(IpamError::BadContainerId(_))));
}

/// Every order of merging the same claims gives the same state.
#[test]
fn merge_is_order_independent_and_idempotent() {
    let claims = [
        ClaimRepr {
            start: ip("198.19.1.0"),
            size: 256,
            owner: 3,
            version: 1,
        },
        ClaimRepr {
            start: ip("198.19.1.0"),
            size: 256,
            owner: 9,
            version: 1,
        },
        ClaimRepr {
            start: ip("198.19.1.0"),
            size: 256,
            owner: 2,
            version: 2,
        },
        ClaimRepr {
            start: ip("198.19.2.0"),
            size: 256,
            owner: 4,
            version: 1,
        },
        ClaimRepr {
            start: ip("198.19.2.0"),
            size: 256,
            owner: NOBODY,
            version: 2,
        },
        ClaimRepr {
            start: ip("198.19.3.0"),
            size: 256,
            owner: 8,
            version: 5,
        },
    ];
    let mut states = Vec::new();
    // All rotations, forwards and backwards, each merged one claim at a time and twice over.
    for rot in 0..claims.len() {
        for rev in [false, true] {
            let mut order: Vec<ClaimRepr> = claims.to_vec();
            order.rotate_left(rot);
            if rev {
                order.reverse();
            }
            let mut a = ipam("198.19.0.0/16", 100);
            for c in order.iter().chain(order.iter()) {
                a.merge(std::slice::from_ref(c));
            }
            states.push(a.claims());
        }
    }
    assert!(states.windows(2).all(|w| w[0] == w[1]));
    let winners: Vec<(Ipv4Addr, u64, u64)> = states[0]
        .claims
        .iter()
        .map(|c| (c.start, c.owner, c.version))
        .collect();
    assert_eq!(
        winners,
        [
            (ip("198.19.1.0"), 2, 2),
            (ip("198.19.2.0"), NOBODY, 2),
            (ip("198.19.3.0"), 8, 5)
        ]
    );
}

#[rstest]
#[case::misaligned(ClaimRepr { start: ip("198.19.1.128"), size: 256, owner: 3, version: 1 })]
#[case::other_block_size(ClaimRepr { start: ip("198.19.1.0"), size: 128, owner: 3, version: 1 })]
#[case::outside(ClaimRepr { start: ip("198.18.1.0"), size: 256, owner: 3, version: 1 })]
fn claims_of_another_geometry_are_ignored(#[case] claim: ClaimRepr) {
    let mut a = ipam("198.19.0.0/16", 1);
    let out = a.merge(&[claim]);
    assert_eq!((out.changed, out.ignored), (false, 1));
    assert!(a.claims().claims.is_empty());
}

/// Two routers claim the same block without hearing each other: the greater uid keeps it, the
/// other's containers come back as conflicts and get new addresses.
#[test]
fn concurrent_claims_the_greater_uid_wins_and_the_loser_readdresses() {
    let mut lo = ipam("198.19.0.0/16", 10);
    let mut hi = ipam("198.19.0.0/16", 20);
    lo.allocate_specific("a", ip("198.19.7.1")).expect("free");
    lo.allocate_specific("b", ip("198.19.7.2")).expect("free");
    hi.allocate_specific("c", ip("198.19.7.1")).expect("free");

    let out = gossip(&lo, &mut hi);
    assert!(
        !out.changed && out.conflicts.is_empty(),
        "the winner keeps its block: {out:?}"
    );
    let out = gossip(&hi, &mut lo);
    assert!(out.changed);
    let lost: Vec<(&str, Ipv4Addr, u64)> = out
        .conflicts
        .iter()
        .map(|c| (c.container.as_str(), c.addr, c.winner))
        .collect();
    assert_eq!(
        lost,
        [("a", ip("198.19.7.1"), 20), ("b", ip("198.19.7.2"), 20)]
    );
    assert_eq!(lo.lookup("a"), None);
    for c in &out.conflicts {
        let new = lo.allocate(&c.container).expect("space elsewhere");
        assert_ne!(lo.owner_of(new.addr), Some(20));
        assert_ne!(new.addr.octets()[2], 7);
    }
    assert_eq!(hi.lookup("c").map(|l| l.addr), Some(ip("198.19.7.1")));
    assert_eq!(gossip(&lo, &mut hi).conflicts, []);
    assert_eq!(lo.claims(), hi.claims());
}

#[test]
fn a_removed_peers_blocks_are_reclaimed_through_a_tombstone() {
    let mut gone = ipam("198.19.4.0/24", 30);
    let mut a = ipam("198.19.4.0/24", 10);
    let mut b = ipam("198.19.4.0/24", 20);
    gone.allocate_specific("old", ip("198.19.4.33"))
        .expect("free");
    gossip(&gone, &mut a);
    gossip(&gone, &mut b);
    assert_eq!(a.owner_of(ip("198.19.4.33")), Some(30));

    assert_eq!(a.forget_peer(30), 1);
    assert_eq!(a.forget_peer(10), 0, "a router never forgets itself");
    assert_eq!(a.owner_of(ip("198.19.4.33")), None);
    // The tombstone (version 2) beats the departed peer's claim (version 1) elsewhere.
    assert!(gossip(&a, &mut b).changed);
    assert_eq!(b.owner_of(ip("198.19.4.33")), None);
    // Claiming the freed block takes version 3, which beats the tombstone and the old claim.
    let l = b
        .allocate_specific("new", ip("198.19.4.33"))
        .expect("freed");
    assert_eq!(l.addr, ip("198.19.4.33"));
    let claim = b
        .claims()
        .claims
        .into_iter()
        .find(|c| c.start == ip("198.19.4.32"))
        .expect("claimed");
    assert_eq!((claim.owner, claim.version), (20, 3));
    gossip(&b, &mut a);
    gossip(&gone, &mut a);
    assert_eq!(a.owner_of(ip("198.19.4.33")), Some(20));
    // The departed router, should it come back, loses its containers there.
    let out = gossip(&a, &mut gone);
    assert_eq!(out.conflicts.len(), 1);
    assert_eq!(out.conflicts[0].container, "old");
}

#[test]
fn restart_from_the_state_file_keeps_every_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ipam.json");
    let r = range("198.19.0.0/16");
    let mut peer = ipam("198.19.0.0/16", 2);
    peer.allocate("p1").expect("free");
    let mut a = Ipam::load(&path, r, 1).expect("no file yet: empty");
    assert!(a.claims().claims.is_empty());
    assert_eq!(state_uid(&path).expect("readable"), None);
    gossip(&peer, &mut a);
    let held: Vec<_> = (0..300)
        .map(|i| a.allocate(&format!("c{i}")).expect("free"))
        .collect();
    a.release("c5");
    a.save(&path).expect("save");
    assert_eq!(state_uid(&path).expect("readable"), Some(1));
    assert!(!dir.path().join("ipam.json.tmp").exists());

    let mut b = Ipam::load(&path, r, 1).expect("load");
    assert_eq!(b.claims(), a.claims());
    assert_eq!(b.status(), a.status());
    for (i, l) in held.iter().enumerate().filter(|(i, _)| *i != 5) {
        assert_eq!(b.allocate(&format!("c{i}")).expect("held"), *l, "c{i}");
    }
    let fresh = b.allocate("new").expect("free");
    assert_eq!(
        fresh.addr, held[5].addr,
        "only the released address is reused"
    );
    let out = gossip(&peer, &mut b);
    assert!(
        out.conflicts.is_empty() && out.recovered.is_empty(),
        "{out:?}"
    );
}

#[test]
fn restart_without_a_state_file_learns_its_blocks_but_allocates_elsewhere_first() {
    let r = "198.19.0.0/16";
    let mut before = ipam(r, 1);
    let old = before.allocate("survivor").expect("free");
    let mut peer = ipam(r, 2);
    gossip(&before, &mut peer);

    let mut after = ipam(r, 1);
    let out = gossip(&peer, &mut after);
    let block = Ipv4Addr::from(u32::from(old.addr) & !0xff);
    assert_eq!(out.recovered, [block]);
    assert!(after.is_recovered(old.addr));
    assert!(after.status().blocks[0].recovered);
    let new = after.allocate("newcomer").expect("free");
    assert_ne!(new.addr, old.addr);
    assert!(!after.is_recovered(new.addr), "a fresh block is preferred");
    assert_eq!(
        after
            .allocate_specific("survivor", old.addr)
            .expect("re-attach"),
        old
    );
    after.adopt_recovered();
    assert!(!after.is_recovered(old.addr));
}

#[test]
fn the_state_file_is_refused_for_another_range_or_router() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ipam.json");
    let mut a = ipam("198.19.0.0/16", 1);
    a.allocate("c").expect("free");
    a.save(&path).expect("save");
    let other_range = Ipam::load(&path, range("198.19.0.0/17"), 1).expect_err("range");
    let other_uid = Ipam::load(&path, range("198.19.0.0/16"), 2).expect_err("uid");
    std::fs::write(&path, "{ not json").expect("write");
    let corrupt = Ipam::load(&path, range("198.19.0.0/16"), 1).expect_err("corrupt");
    let shown = [other_range, other_uid, corrupt]
        .iter()
        .map(|e| {
            e.to_string()
                .replace(&dir.path().display().to_string(), "$DIR")
        })
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!("state_file_errors", shown);
}

#[test]
fn the_save_directory_must_exist() {
    let a = ipam("198.19.0.0/16", 1);
    let err = a
        .save(std::path::Path::new("/nonexistent-ipam-dir/ipam.json"))
        .expect_err("no directory");
    assert!(matches!(err, IpamError::Io { .. }), "{err}");
    assert!(
        err.to_string().contains("check the directory exists"),
        "{err}"
    );
}

#[test]
fn status_rendering() {
    let r = "198.19.4.0/24";
    let mut me = ipam(r, 0x11);
    let mut other = ipam(r, 0x22);
    let mut gone = ipam(r, 0x33);
    other
        .allocate_specific("theirs", ip("198.19.4.200"))
        .expect("free");
    gone.allocate_specific("old", ip("198.19.4.100"))
        .expect("free");
    me.allocate_specific("web", ip("198.19.4.1")).expect("free");
    me.allocate_specific("db", ip("198.19.4.2")).expect("free");
    me.allocate_specific("cache", ip("198.19.4.130"))
        .expect("free");
    gossip(&other, &mut me);
    gossip(&gone, &mut me);
    me.forget_peer(0x33);
    let status = me.status();
    let json = serde_json::to_string_pretty(&status).expect("serialisable");
    insta::assert_snapshot!("status_text", status.to_string());
    insta::assert_snapshot!("status_json", json);
}

#[test]
fn error_messages_say_how_to_fix() {
    let mut a = ipam("198.19.9.0/30", 3);
    a.allocate("x").expect("usable");
    a.allocate("y").expect("usable");
    let mut b = ipam("198.19.9.0/30", 4);
    b.merge(&a.claims().claims);
    let errs = [
        a.allocate("z").expect_err("exhausted"),
        a.allocate_specific("z", ip("198.19.9.3"))
            .expect_err("broadcast"),
        a.allocate_specific("z", ip("198.19.9.2"))
            .expect_err("in use"),
        a.allocate_specific("x", ip("198.19.9.2"))
            .expect_err("attached"),
        a.allocate_specific("z", ip("198.19.10.2"))
            .expect_err("outside"),
        b.allocate_specific("z", ip("198.19.9.2"))
            .expect_err("owned"),
        b.allocate("").expect_err("empty id"),
        Ipam::new(range("198.19.0.0/16"), 0).expect_err("uid 0"),
    ];
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    insta::assert_snapshot!("errors", shown.join("\n"));
}

#[test]
fn a_spare_block_is_claimed_ahead_of_need_and_left_untouched() {
    // 198.19.4.0/24: 16 blocks of 16; the headroom threshold is 4 free addresses.
    let mut a = ipam("198.19.4.0/24", 9);
    let g0 = a.generation();
    let first = a.allocate("c0").expect("free");
    assert!(a.generation() > g0, "claiming a block moves the generation");
    // The first block may hold the range's network address: 15 or 16 usable.
    let mut i = 1;
    while a.status().addresses_free >= 4 {
        assert_eq!(
            a.status().blocks_owned,
            1,
            "{} free: no spare yet",
            a.status().addresses_free
        );
        let g = a.generation();
        a.allocate(&format!("c{i}")).expect("free");
        i += 1;
        if a.status().blocks_owned == 2 {
            assert!(a.generation() > g);
            break;
        }
    }
    assert_eq!(
        a.status().blocks_owned,
        2,
        "under 4 left: a spare is claimed"
    );
    let spare = a
        .status()
        .blocks
        .into_iter()
        .find(|b| b.mine && b.in_use == 0)
        .expect("an untouched spare");
    // The first block fills up before the spare is used.
    let in_first = a
        .status()
        .blocks
        .iter()
        .find(|b| b.mine && b.in_use > 0)
        .map(|b| b.in_use);
    assert_eq!(in_first, Some(i as u32));
    for i in i..i + 3 {
        let l = a.allocate(&format!("c{i}")).expect("free");
        assert_eq!(a.owner_of(l.addr), Some(9));
        assert!(a
            .status()
            .blocks
            .iter()
            .any(|b| b.block == spare.block && b.in_use == 0));
        assert_eq!(u32::from(l.addr) & !0xf, u32::from(first.addr) & !0xf);
    }
    let g2 = a.generation();
    a.lookup("c0");
    a.release("c3");
    assert_eq!(
        a.generation(),
        g2,
        "lookups and releases leave claims alone"
    );
}

#[test]
fn the_generation_moves_on_every_claim_change() {
    let mut a = ipam("198.19.0.0/16", 1);
    let mut b = ipam("198.19.0.0/16", 2);
    b.allocate("x").expect("free");
    let g = a.generation();
    assert!(gossip(&b, &mut a).changed);
    assert!(a.generation() > g);
    let g = a.generation();
    assert!(
        !gossip(&b, &mut a).changed,
        "the same claims again change nothing"
    );
    assert_eq!(a.generation(), g);
    assert_eq!(a.forget_peer(2), 1);
    assert!(a.generation() > g);
}

/// Arbitrary claims (any start, size, owner, version) never panic and keep the state sane.
#[test]
fn arbitrary_claims_are_merged_safely() {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    let mut rng = StdRng::seed_from_u64(7);
    let mut a = ipam("198.19.4.0/24", 5);
    a.allocate("mine").expect("free");
    for _ in 0..20_000 {
        let claim = ClaimRepr {
            start: Ipv4Addr::from(if rng.random_range(0..2) == 0 {
                rng.random::<u32>()
            } else {
                u32::from(ip("198.19.4.0")) + 16 * rng.random_range(0..17u32)
            }),
            size: [16, 0, 1, 256, u32::MAX][rng.random_range(0..5)],
            owner: rng.random_range(0..4),
            version: [0, 1, 2, u64::MAX][rng.random_range(0..4)],
        };
        let out = a.merge(&[claim]);
        for c in &out.conflicts {
            assert_eq!(a.lookup(&c.container), None);
        }
        let _ = a.allocate("probe");
        for (name, lease) in a.allocations() {
            assert_eq!(a.owner_of(lease.addr), Some(5), "{name}");
        }
        a.release("probe");
    }
    assert!(a.claims().claims.len() <= 16);
}
