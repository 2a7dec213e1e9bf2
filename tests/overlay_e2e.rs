//! The overlay end to end, on real namespaces (run as root): netsim starts the real
//! `overlay-router` in every host of three-host.toml and attaches the containers; the tests
//! probe container to container, with and without a password, through a router crash, on the
//! wire (capture), against replays, for broadcast fan-out and for path MTU.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use futures::future::join_all;
use netsim::measure::icmp::PingOptions;
use netsim::overlay_run::OverlayOptions;
use rstest::rstest;

const THREE: &str = "topologies/three-host.toml";
const CONTAINERS: [(&str, &str); 6] = [
    ("c1", "h1"),
    ("c2", "h1"),
    ("c3", "h2"),
    ("c4", "h2"),
    ("c5", "h3"),
    ("c6", "h3"),
];

fn with_password(p: Option<&str>) -> OverlayOptions {
    OverlayOptions {
        password: Some(p.map(str::to_string)),
        ..vxlan_tier()
    }
}

/// Sleeve alone (`--fast-path off`), for tests of sleeve's own behaviour.
fn sleeve_only(p: Option<&str>) -> OverlayOptions {
    OverlayOptions {
        router_args: vec!["--fast-path".into(), "off".into()],
        ..with_password(p)
    }
}

#[rstest]
#[case::plain(None)]
#[case::encrypted(Some("correct horse battery staple"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_container_reaches_every_other(#[case] password: Option<&str>) {
    let id = unique("ovl-all");
    let lab = up(THREE, &id).await;
    let o = overlay(&lab, with_password(password)).await;
    let addrs: BTreeMap<String, Ipv4Addr> = o.addresses().clone();
    assert_eq!(addrs.len(), 6, "every container attached: {addrs:?}");
    let distinct: std::collections::BTreeSet<_> = addrs.values().collect();
    assert_eq!(distinct.len(), 6, "distinct addresses: {addrs:?}");
    // Probes (`netsim ping|perf|mtu LAB A c3`) find a container by the address its router gave.
    for (c, addr) in &addrs {
        assert_eq!(lab.address_of(c).await.unwrap(), *addr, "{c}");
        assert_eq!(lab.address_of(&format!("{c}:eth0")).await.unwrap(), *addr);
    }
    let err = lab.address_of("c1:eth9").await.unwrap_err().to_string();
    assert!(err.contains("c1 has no interface \"eth9\""), "{err}");
    // Plain: every connection reaches the fast path; encrypted: sleeve carries everything
    // (kernel vxlan would carry frames in clear).
    let datapath = if password.is_some() {
        "sleeve"
    } else {
        "vxlan"
    };
    for (h, peer) in [
        ("h1", "h2"),
        ("h1", "h3"),
        ("h2", "h1"),
        ("h2", "h3"),
        ("h3", "h1"),
        ("h3", "h2"),
    ] {
        wait_datapath(&o, h, peer, datapath, Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for st in ["h1", "h2", "h3"] {
        let s = o.status(st).await.unwrap();
        assert_eq!(s["router"]["encrypted"], password.is_some());
        assert_eq!(
            s["ipam_conflicts"], 0,
            "IPAM claims converged without conflicts"
        );
        for c in s["router"]["connections"].as_array().unwrap() {
            assert_eq!(c["encrypted"], password.is_some(), "{c}");
            assert_eq!(c["datapath"], datapath, "{c}");
        }
    }

    // ICMP, every ordered pair (the first probes may wait for ARP and MAC learning).
    let pairs: Vec<(&str, &str)> = CONTAINERS
        .iter()
        .flat_map(|(a, _)| CONTAINERS.iter().map(move |(b, _)| (*a, *b)))
        .filter(|(a, b)| a != b)
        .collect();
    let results = join_all(pairs.iter().map(|(a, b)| {
        let lab = &lab;
        let dst = addrs[*b];
        async move { (*a, *b, ping_until(lab, a, dst).await) }
    }))
    .await;
    let failed: Vec<_> = results.iter().filter(|r| !r.2).collect();
    assert!(failed.is_empty(), "ICMP failed for {failed:?}");

    // TCP connect + echo, every ordered pair across hosts.
    for (a, ha) in CONTAINERS {
        for (b, hb) in CONTAINERS {
            if ha != hb {
                tcp_echo(&lab, a, b, addrs[b])
                    .await
                    .unwrap_or_else(|e| panic!("TCP {a} -> {b}: {e}"));
            }
        }
    }
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

/// The start limit is a setting, and running out of it names every router still missing
/// peers, which peers, and each router's log; nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routers_not_connected_in_time_are_all_named_with_their_logs() {
    let id = unique("ovl-late");
    let lab = up(THREE, &id).await;
    // h3 can neither dial nor be dialled: the control port is blocked on it.
    lab.block("h3", netsim::lab::shaping::Proto::Tcp, 6783)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = netsim::overlay_run::Overlay::start(
        &lab,
        &OverlayOptions {
            start_timeout: Some(Duration::from_secs(3)),
            ..with_password(None)
        },
    )
    .await
    .expect_err("h3 cannot connect");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the limit was not kept"
    );
    let text = err.to_string();
    let run = netsim::overlay_run::log_dir(&id);
    let expected = [
        format!("lab {id}: 3 routers not connected to all their peers after 3 s"),
        format!(
            "  h1: 1 of 2 peers connected, missing h3; log: {}/h1.log",
            run.display()
        ),
        format!(
            "  h2: 1 of 2 peers connected, missing h3; log: {}/h2.log",
            run.display()
        ),
        format!(
            "  h3: 0 of 2 peers connected, missing h1, h2; log: {}/h3.log",
            run.display()
        ),
    ];
    for line in expected {
        assert!(text.contains(&line), "{line:?} not in:\n{text}");
    }
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
    // The logs the error points at are still there to read.
    let h1 = std::fs::read_to_string(run.join("h1.log")).unwrap();
    assert!(h1.contains("connected to h2"), "{h1}");
    std::fs::remove_dir_all(&run).unwrap();
}

#[rstest]
#[case::wrong_password(Some("not the password"))]
#[case::no_password(None)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_without_the_password_is_refused(#[case] h3_password: Option<&str>) {
    let id = unique("ovl-pw");
    let lab = up(THREE, &id).await;
    let mut opts = with_password(Some("the password"));
    opts.host_passwords
        .insert("h3".into(), h3_password.map(str::to_string));
    let o = overlay(&lab, opts).await;
    o.wait_connected("h1", 1).await.unwrap();
    eventually("h1 refuses h3", || async {
        let s = o.status("h1").await.unwrap();
        s["router"]["refused"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let h1 = o.status("h1").await.unwrap();
    let why = h1["router"]["last_refusal"].as_str().unwrap().to_string();
    assert!(why.contains("198.18.1.3"), "{why}");
    let peers: Vec<&str> = h1["router"]["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["peer"].as_str().unwrap())
        .collect();
    assert_eq!(peers, ["h2"], "only h2 is connected to h1");
    let h3 = o.status("h3").await.unwrap();
    assert_eq!(h3["router"]["connections"].as_array().unwrap().len(), 0);
    assert!(h3["router"]["refused"].as_u64().unwrap() > 0);
    assert!(o.log("h1").contains("refused connection with 198.18.1.3"));
    // The authenticated part still works; h3's containers stay cut off.
    assert!(ping_until(&lab, "c1", o.address_of("c3").unwrap()).await);
    // Cut off, h3 hands out addresses on its own and may pick a block h1 or h2 uses (1 in 256
    // per block: it happened once in CI, c5 got c1's address and "reached" itself). Aim at a
    // container of h1 or h2 whose address no container of h3 holds.
    let h3_addresses: Vec<_> = ["c5", "c6"]
        .iter()
        .map(|c| o.address_of(c).unwrap())
        .collect();
    let target = ["c1", "c2", "c3", "c4"]
        .iter()
        .map(|c| o.address_of(c).unwrap())
        .find(|a| !h3_addresses.contains(a))
        .expect("h3 has two containers, h1 and h2 four");
    let r = ping(&lab, "c5", target, PingOptions::default()).await;
    assert_eq!(r.received, 0, "c5 reached {target}");
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_router_rejoins_after_restart() {
    let id = unique("ovl-kill");
    let lab = up(THREE, &id).await;
    let mut o = overlay(&lab, with_password(Some("restart secret"))).await;
    let (c1, c3, c4, c5) = (
        o.address_of("c1").unwrap(),
        o.address_of("c3").unwrap(),
        o.address_of("c4").unwrap(),
        o.address_of("c5").unwrap(),
    );
    assert!(ping_until(&lab, "c3", c1).await);
    let before = o.status("h2").await.unwrap();
    let own_version = |st: &serde_json::Value| {
        st["router"]["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "h2")
            .unwrap()["version"]
            .as_u64()
            .unwrap()
    };
    let old_version = own_version(&before);

    o.kill("h2").unwrap();
    eventually("h1 notices h2 is gone", || async {
        conn_status(&o, "h1", "h2").await.is_none()
    })
    .await;
    o.restart(&lab, "h2").await.unwrap();
    o.wait_connected("h2", 2).await.unwrap();
    o.wait_connected("h1", 2).await.unwrap();
    o.wait_connected("h3", 2).await.unwrap();
    let st = o.status("h2").await.unwrap();
    // The same identity (its IPAM claims stay its own), gossiped under a newer version.
    assert_eq!(st["router"]["uid"], before["router"]["uid"]);
    assert!(own_version(&st) > old_version);
    // The restarted router kept its containers' addresses on record, and hands out new ones
    // elsewhere.
    assert_eq!(st["containers"], before["containers"]);
    let c4_ns = node(&lab, "c4").netns_path().display().to_string();
    let again = netsim::overlay_run::api_call(
        &o.api_path("h2").unwrap(),
        &serde_json::json!({"cmd": "attach", "netns": c4_ns}),
    )
    .await;
    assert!(again.is_ok(), "re-attaching c4 is idempotent: {again:?}");
    assert_eq!(
        again.unwrap()["addr"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap(),
        c4.to_string()
    );

    assert!(ping_until(&lab, "c3", c1).await, "c3 -> c1 after restart");
    assert!(ping_until(&lab, "c1", c4).await, "c1 -> c4 after restart");
    assert!(ping_until(&lab, "c5", c3).await, "c5 -> c3 after restart");
    tcp_echo(&lab, "c1", "c3", c3).await.unwrap();
    tcp_echo(&lab, "c4", "c5", c5).await.unwrap();
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

#[rstest]
#[case::plain(None)]
#[case::encrypted(Some("capture secret"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_underlay_shows_container_payload_only_without_password(
    #[case] password: Option<&str>,
) {
    let id = unique("ovl-cap");
    let lab = up(THREE, &id).await;
    let o = overlay(&lab, with_password(password)).await;
    let c3 = o.address_of("c3").unwrap();
    assert!(ping_until(&lab, "c1", c3).await);
    let marker = b"PLAINTEXT-MARKER-7f3a9c".to_vec();
    // Only the underlay interface: inside h2 the bridge and veths carry the decrypted frames.
    let cap = Capture::open_on(&node(&lab, "h2"), Some("eth0")).await;
    udp_send(&lab, "c1", c3, 9999, marker.clone(), 10).await;
    let frames = tokio::task::spawn_blocking(move || cap.drain(Duration::from_millis(1500)))
        .await
        .unwrap();
    // The capture works: it sees the overlay's datagrams to h2 (sleeve's on 6783 when
    // encrypted; the fast path's on 6784 otherwise, where sleeve stays quiet).
    let overlay: Vec<&Vec<u8>> = frames
        .iter()
        .filter(|f| {
            udp_of(f).is_some_and(|u| {
                (u.3 == 6783 || u.3 == 6784) && u.1 == Ipv4Addr::new(198, 18, 1, 2)
            })
        })
        .collect();
    assert!(
        !overlay.is_empty(),
        "the capture saw overlay datagrams to h2"
    );
    let seen = frames.iter().filter(|f| contains(f, &marker)).count();
    if password.is_some() {
        assert_eq!(
            seen, 0,
            "the marker is visible on the underlay although encrypted"
        );
    } else {
        assert!(seen > 0, "the capture does not see the plaintext marker");
    }
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

/// TCP bursts from a TAP with offloads (up to 64 KiB) are cut into one-datagram pieces, sent
/// with UDP GSO and put back together: the bytes arrive intact, and the counters show bursts
/// were split on one side and joined on the other.
#[rstest]
#[case::plain(None)]
#[case::encrypted(Some("piece by piece"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_bursts_cross_in_pieces_and_arrive_intact(#[case] password: Option<&str>) {
    let id = unique("ovl-gso");
    let lab = up(THREE, &id).await;
    let o = overlay(&lab, sleeve_only(password)).await;
    let c3 = o.address_of("c3").unwrap();
    assert!(ping_until(&lab, "c1", c3).await);
    tcp_bulk(&lab, "c1", "c3", c3, 64 << 20)
        .await
        .unwrap_or_else(|e| panic!("64 MiB c1 -> c3: {e}"));
    // The receiver first: a burst is counted split before it can be joined.
    let got = conn_status(&o, "h2", "h1").await.unwrap()["stats"].clone();
    let sent = conn_status(&o, "h1", "h2").await.unwrap()["stats"].clone();
    let split = sent["bursts_split"].as_u64().unwrap();
    let joined = got["bursts_joined"].as_u64().unwrap();
    assert!(split > 0, "h1 split no burst: {sent}");
    assert!(joined > 0, "h2 joined no burst: {got}");
    assert!(joined <= split, "joined more than were split: {sent} {got}");
    assert!(
        sent["tx_datagrams"].as_u64().unwrap() > 2 * split,
        "each split burst took several datagrams: {sent}"
    );
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_datagram_is_counted_and_dropped() {
    let id = unique("ovl-rep");
    let lab = up(THREE, &id).await;
    let o = overlay(&lab, with_password(Some("replay secret"))).await;
    let c1 = o.address_of("c1").unwrap();
    assert!(ping_until(&lab, "c3", c1).await);
    let h1_ip = Ipv4Addr::new(198, 18, 1, 1);
    let h2_ip = Ipv4Addr::new(198, 18, 1, 2);
    let cap = Capture::open_on(&node(&lab, "h2"), Some("eth0")).await;
    udp_send(&lab, "c3", c1, 9999, b"to be replayed".to_vec(), 5).await;
    let frames = tokio::task::spawn_blocking(move || cap.drain(Duration::from_millis(1000)))
        .await
        .unwrap();
    let payloads: Vec<Vec<u8>> = frames
        .iter()
        .filter_map(|f| udp_of(f))
        .filter(|u| u.0 == h2_ip && u.1 == h1_ip && u.3 == 6783)
        .map(|u| u.4.to_vec())
        .collect();
    assert!(
        !payloads.is_empty(),
        "captured sleeve datagrams from h2 to h1"
    );
    let before = conn_status(&o, "h1", "h2").await.unwrap()["stats"]["replayed"]
        .as_u64()
        .unwrap();
    let n = payloads.len().min(5) as u64;
    node(&lab, "h2")
        .run(move || async move {
            let s = std::net::UdpSocket::bind((h2_ip, 0)).unwrap();
            for p in payloads.iter().take(5) {
                s.send_to(p, (h1_ip, 6783)).unwrap();
            }
        })
        .await
        .unwrap();
    eventually("h1 counts the replays", || async {
        let now = conn_status(&o, "h1", "h2").await.unwrap()["stats"]["replayed"]
            .as_u64()
            .unwrap();
        now >= before + n
    })
    .await;
    // The session survives the replays.
    assert!(ping_until(&lab, "c3", c1).await);
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broadcast_reaches_each_remote_container_once() {
    let id = unique("ovl-bc");
    let lab = up(THREE, &id).await;
    let o = overlay(&lab, sleeve_only(None)).await;
    assert!(ping_until(&lab, "c1", o.address_of("c3").unwrap()).await);
    assert!(ping_until(&lab, "c1", o.address_of("c5").unwrap()).await);
    let counts = broadcast_copies(
        &lab,
        "c1",
        &["c2", "c3", "c4", "c5", "c6"],
        b"BROADCAST-ONCE-4411",
    )
    .await;
    assert_eq!(
        counts,
        [("c2", 1), ("c3", 1), ("c4", 1), ("c5", 1), ("c6", 1)],
        "each container sees the broadcast exactly once"
    );
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

/// A 1400-byte hop between a 1500-byte host and a 1400-byte one. On sleeve alone, and with the
/// fast path: there the automatic MTU follows each host's own link (1450 on h1), h1's
/// full-size heartbeats do not cross the hop, and the connection moves to sleeve saying why;
/// sleeve then learns the path and answers DF frames that do not fit.
#[rstest]
#[case::sleeve(true)]
#[case::fast_path_too_small(false)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_smaller_path_mtu_is_learnt_and_df_traffic_gets_frag_needed(#[case] sleeve: bool) {
    let id = unique("ovl-pmtu");
    let lab = up("tests/topologies/overlay-pmtu.toml", &id).await;
    let opts = if sleeve {
        sleeve_only(None)
    } else {
        with_password(None)
    };
    let o = overlay(&lab, opts).await;
    let (c1, c2) = (o.address_of("c1").unwrap(), o.address_of("c2").unwrap());
    let h1 = o.status("h1").await.unwrap();
    let h2 = o.status("h2").await.unwrap();
    // Automatic MTU from each host's own link: 1500 and 1400 minus sleeve's 60 or vxlan's 50.
    let overhead = if sleeve { 60 } else { 50 };
    assert_eq!(h1["mtu"], 1500 - overhead);
    assert_eq!(h2["mtu"], 1400 - overhead);
    if !sleeve {
        // The heartbeats see the hop: sleeve carries this connection, and status says why.
        eventually("h1 finds the fast path too small for the hop", || async {
            conn_status(&o, "h1", "h2").await.is_some_and(|c| {
                c["path"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("path MTU too small"))
            })
        })
        .await;
        let c = conn_status(&o, "h1", "h2").await.unwrap();
        assert_eq!(c["datapath"], "sleeve", "{c}");
        assert_eq!(
            conn_status(&o, "h2", "h1").await.unwrap()["datapath"],
            "sleeve"
        );
    }
    eventually("h1 learns the 1400-byte path to h2", || async {
        conn_status(&o, "h1", "h2")
            .await
            .is_some_and(|c| c["stats"]["path_mtu"] == 1400)
    })
    .await;
    let c = conn_status(&o, "h1", "h2").await.unwrap();
    assert_eq!(c["stats"]["overlay_mtu"], 1340);
    assert!(ping_until(&lab, "c1", c2).await);
    // A DF ping that fits c1's link (1440) but not the path gets "fragmentation needed".
    let big = PingOptions {
        count: 2,
        size: 1400 - 28,
        df: true,
        ..PingOptions::default()
    };
    let r = ping(&lab, "c1", c2, big.clone()).await;
    assert_eq!(r.frag_needed_mtu, Some(1340), "{r:?}");
    let c = conn_status(&o, "h1", "h2").await.unwrap();
    assert!(c["stats"]["frag_needed_sent"].as_u64().unwrap() >= 1);
    // Without DF the same size still crosses (fragmented by the underlay).
    let r = ping(&lab, "c1", c2, PingOptions { df: false, ..big }).await;
    assert!(r.received > 0, "large non-DF ping: {r:?}");
    // TCP adapts to the smaller MTU.
    tcp_echo(&lab, "c1", "c2", c2).await.unwrap();
    assert!(ping_until(&lab, "c2", c1).await);
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_healed_partition_re_addresses_the_container_that_lost_its_block() {
    let id = unique("ovl-heal");
    let lab = up("topologies/two-host.toml", &id).await;
    // Partitioned: the two routers refuse each other, so neither hears the other's claims.
    let mut opts = with_password(Some("one"));
    opts.host_passwords.insert("h2".into(), Some("two".into()));
    opts.no_attach = true;
    let mut o = overlay(&lab, opts).await;
    let same = "198.19.77.10";
    for (host, c) in [("h1", "c1"), ("h2", "c2")] {
        let ns = node(&lab, c).netns_path().display().to_string();
        netsim::overlay_run::api_call(
            &o.api_path(host).unwrap(),
            &serde_json::json!({"cmd": "attach", "netns": ns, "addr": same}),
        )
        .await
        .unwrap();
    }
    // Heal: h2 restarts with the right password (same state, same claims).
    o.set_password("h2", Some("one".into()));
    o.restart(&lab, "h2").await.unwrap();
    o.wait_connected("h1", 1).await.unwrap();
    eventually("one side sees the conflict and re-addresses", || async {
        let a = netsim::verify::overlay_address(&node(&lab, "c1")).await;
        let b = netsim::verify::overlay_address(&node(&lab, "c2")).await;
        matches!((a, b), (Ok(a), Ok(b)) if a != b)
    })
    .await;
    let conflicts: u64 = [o.status("h1").await.unwrap(), o.status("h2").await.unwrap()]
        .iter()
        .map(|s| s["ipam_conflicts"].as_u64().unwrap())
        .sum();
    assert!(conflicts >= 1);
    let c2 = netsim::verify::overlay_address(&node(&lab, "c2"))
        .await
        .unwrap();
    let c1 = netsim::verify::overlay_address(&node(&lab, "c1"))
        .await
        .unwrap();
    assert!(ping_until(&lab, "c1", c2).await);
    assert!(ping_until(&lab, "c2", c1).await);
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_on_both_ports_is_dropped_and_counted() {
    let id = unique("ovl-junk");
    let lab = up(THREE, &id).await;
    let o = overlay(&lab, with_password(Some("junk secret"))).await;
    let c1 = o.address_of("c1").unwrap();
    let h1_ip = Ipv4Addr::new(198, 18, 1, 1);
    let h2_ip = Ipv4Addr::new(198, 18, 1, 2);
    // Datagrams from a connected peer's address: empty, truncated, bad version, random.
    node(&lab, "h2")
        .run(move || async move {
            let s = std::net::UdpSocket::bind((h2_ip, 0)).unwrap();
            let mut seed: u32 = 12345;
            let mut junk: Vec<Vec<u8>> = vec![vec![], vec![1], vec![1, 0, 0, 1, 0, 2], vec![9; 40]];
            for n in 0..200 {
                let mut d = vec![0u8; (n * 7) % 1500];
                for b in &mut d {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    *b = (seed >> 16) as u8;
                }
                if let Some(v) = d.first_mut() {
                    *v = 1; // the right version, so deeper checks run
                }
                junk.push(d);
            }
            for d in &junk {
                let _ = s.send_to(d, (h1_ip, 6783));
            }
        })
        .await
        .unwrap();
    // A TCP client that speaks garbage is dropped, not kept.
    let closed = node(&lab, "h3")
        .run(move || async move {
            use std::io::{Read, Write};
            let mut t = std::net::TcpStream::connect((h1_ip, 6783)).unwrap();
            t.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let _ = t.write_all(&[0, 0, 0, 9, 77, 1, 2, 3, 4, 5, 6, 7, 8]);
            let mut buf = [0u8; 4096];
            loop {
                match t.read(&mut buf) {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                }
            }
        })
        .await
        .unwrap();
    assert!(closed, "h1 closed the garbage connection");
    eventually("h1 counts the junk", || async {
        let s = o.status("h1").await.unwrap();
        let dp = &s["datapath_stats"];
        let conn = conn_status(&o, "h1", "h2").await.unwrap();
        let dropped = dp["malformed"].as_u64().unwrap()
            + conn["stats"]["unauthenticated"].as_u64().unwrap()
            + conn["stats"]["auth_failures"].as_u64().unwrap()
            + conn["stats"]["replayed"].as_u64().unwrap();
        dropped >= 200 && s["router"]["handshake_failures"].as_u64().unwrap() >= 1
    })
    .await;
    // Everything still works.
    assert!(ping_until(&lab, "c3", c1).await);
    assert!(ping_until(&lab, "c5", c1).await);
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

/// Block prefixes (`a.b.c.d/len`) the IPAM status `st` says are owned by `uid`.
fn blocks_of(st: &serde_json::Value, uid: u64) -> Vec<String> {
    st["ipam"]["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["owner"].as_u64() == Some(uid))
        .map(|b| b["block"].as_str().unwrap().to_string())
        .collect()
}

/// The peer names a router's status lists (itself included).
fn peer_names(st: &serde_json::Value) -> Vec<String> {
    st["router"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_router_frees_its_blocks_and_leaves_every_table() {
    let id = unique("ovl-rm");
    let lab = up(THREE, &id).await;
    let mut o = overlay(&lab, with_password(None)).await;
    let h3_ip = "198.18.1.3";
    let remove = serde_json::json!({"cmd": "peers", "op": "remove", "addr": h3_ip});
    let h1_api = o.api_path("h1").unwrap();
    let h3_uid = o.status("h3").await.unwrap()["router"]["uid"]
        .as_u64()
        .unwrap();
    // h1 and h2 agree with h3 on which blocks h3 owns (c5 and c6 live in them).
    eventually("h1 and h2 learn h3's claims", || async {
        let h3 = blocks_of(&o.status("h3").await.unwrap(), h3_uid);
        let h1 = blocks_of(&o.status("h1").await.unwrap(), h3_uid);
        let h2 = blocks_of(&o.status("h2").await.unwrap(), h3_uid);
        !h3.is_empty() && h1 == h3 && h2 == h3
    })
    .await;
    let h3_blocks = blocks_of(&o.status("h3").await.unwrap(), h3_uid);
    // An address in h3's first block that h3 has not handed out (it hands out the lowest).
    let block: Ipv4Addr = h3_blocks[0].split('/').next().unwrap().parse().unwrap();
    let reclaimed = Ipv4Addr::from(u32::from(block) + 200);

    // Removing a live peer is refused, and changes nothing.
    let err = netsim::overlay_run::api_call(&h1_api, &remove)
        .await
        .unwrap_err();
    assert!(
        err.contains("h3") && err.contains("still connected"),
        "{err}"
    );
    let h1 = o.status("h1").await.unwrap();
    assert_eq!(blocks_of(&h1, h3_uid), h3_blocks);
    assert!(peer_names(&h1).contains(&"h3".to_string()));
    // So is taking an address in h3's block.
    let c1_ns = node(&lab, "c1").netns_path().display().to_string();
    let detach = serde_json::json!({"cmd": "detach", "netns": c1_ns});
    let attach = serde_json::json!({"cmd": "attach", "netns": c1_ns, "addr": reclaimed});
    netsim::overlay_run::api_call(&h1_api, &detach)
        .await
        .unwrap();
    let err = netsim::overlay_run::api_call(&h1_api, &attach)
        .await
        .unwrap_err();
    assert!(err.contains("owned by router"), "{err}");

    // h3's router stops for good; once h1 sees nobody connected to it, h1 removes it.
    o.kill("h3").unwrap();
    eventually(
        "h1 sees that nobody is connected to h3 any more",
        || async {
            let st = o.status("h1").await.unwrap();
            conn_status(&o, "h1", "h3").await.is_none()
                && st["router"]["peers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["name"] != "h3")
                    .all(|p| {
                        !p["connections"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|c| c == "h3")
                    })
        },
    )
    .await;
    let answer = netsim::overlay_run::api_call(&h1_api, &remove)
        .await
        .unwrap();
    assert_eq!(answer["removed"][0]["name"], "h3", "{answer}");
    assert_eq!(answer["removed"][0]["uid"], h3_uid, "{answer}");
    assert_eq!(answer["removed"][0]["was_connected"], false, "{answer}");
    assert_eq!(answer["blocks_freed"], h3_blocks.len(), "{answer}");
    assert!(answer.get("warning").is_none(), "{answer}");

    // Every remaining router forgets h3 and sees its blocks released.
    for host in ["h1", "h2"] {
        let dropped = |st: &serde_json::Value| {
            let released = st["ipam"]["blocks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|b| h3_blocks.contains(&b["block"].as_str().unwrap().to_string()))
                .all(|b| b["owner"].is_null());
            (
                peer_names(st) == ["h1", "h2"],
                st["router"]["removed_peers"] == serde_json::json!(["h3"]),
                released,
            )
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let st = o.status(host).await.unwrap();
            let got = dropped(&st);
            if got == (true, true, true) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{host} did not drop h3 and its blocks in 30 s (peers listed, tombstone, blocks released: {got:?}); status: {st}\nlog:\n{}\nh1 status: {}\nh1 log:\n{}",
                o.log(host),
                o.status("h1").await.unwrap(),
                o.log("h1")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // h1 does not dial h3 any more.
    let h1 = o.status("h1").await.unwrap();
    let targets = h1["router"]["targets"].as_array().unwrap();
    assert!(
        !targets.iter().any(|t| t == h3_ip),
        "h1 still dials h3: {targets:?}"
    );

    // The freed block is reclaimed: h1 hands out the address, h2 sees h1 own the block, and
    // c3 on h2 reaches c1 there.
    let got = netsim::overlay_run::api_call(&h1_api, &attach)
        .await
        .unwrap();
    assert_eq!(got["addr"], format!("{reclaimed}/16"));
    let h1_uid = h1["router"]["uid"].as_u64().unwrap();
    eventually("h2 sees h1 own the reclaimed block", || async {
        blocks_of(&o.status("h2").await.unwrap(), h1_uid).contains(&h3_blocks[0])
    })
    .await;
    assert!(
        ping_until(&lab, "c3", reclaimed).await,
        "c3 -> c1 at {reclaimed}"
    );

    // A few gossip rounds later h3 is still gone everywhere (no stale gossip revived it).
    tokio::time::sleep(Duration::from_secs(3)).await;
    for host in ["h1", "h2"] {
        let st = o.status(host).await.unwrap();
        assert_eq!(peer_names(&st), ["h1", "h2"], "{host}");
        assert!(blocks_of(&st, h3_uid).is_empty(), "{host}");
    }
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forced_removal_of_a_live_router_re_addresses_its_containers_and_it_stays() {
    let id = unique("ovl-rmf");
    let lab = up(THREE, &id).await;
    let o = overlay(&lab, with_password(None)).await;
    let h3_uid = o.status("h3").await.unwrap()["router"]["uid"]
        .as_u64()
        .unwrap();
    eventually("h1 learns h3's claims", || async {
        let h3 = blocks_of(&o.status("h3").await.unwrap(), h3_uid);
        !h3.is_empty() && blocks_of(&o.status("h1").await.unwrap(), h3_uid) == h3
    })
    .await;
    let old_blocks = blocks_of(&o.status("h1").await.unwrap(), h3_uid);
    let answer = netsim::overlay_run::api_call(
        &o.api_path("h1").unwrap(),
        &serde_json::json!({"cmd": "peers", "op": "remove", "addr": "198.18.1.3", "force": true}),
    )
    .await
    .unwrap();
    assert_eq!(answer["removed"][0]["was_connected"], true, "{answer}");
    assert_eq!(answer["blocks_freed"], old_blocks.len(), "{answer}");
    assert!(
        answer["warning"]
            .as_str()
            .unwrap()
            .contains("h3 still connected"),
        "{answer}"
    );
    // h3 hears its blocks were freed: its containers lose their addresses (conflicts) and are
    // re-addressed; it outranks its own tombstone and every router lists it again.
    eventually("h3 re-addresses c5 and c6", || async {
        o.status("h3").await.unwrap()["ipam_conflicts"]
            .as_u64()
            .unwrap()
            >= 2
            && o.status("h3").await.unwrap()["containers"]
                .as_array()
                .unwrap()
                .len()
                == 2
    })
    .await;
    for host in ["h1", "h2", "h3"] {
        eventually(&format!("{host} lists all three routers again"), || async {
            let st = o.status(host).await.unwrap();
            peer_names(&st) == ["h1", "h2", "h3"]
                && st["router"]["removed_peers"] == serde_json::json!([])
        })
        .await;
    }
    let h3_log = o.log("h3");
    assert!(
        h3_log.contains("this router was removed by a peer"),
        "h3 never heard its tombstone; h3 log:\n{h3_log}\nh2 log:\n{}",
        o.log("h2")
    );
    // The containers work at their new addresses.
    let c5 = netsim::verify::overlay_address(&node(&lab, "c5"))
        .await
        .unwrap();
    assert!(ping_until(&lab, "c1", c5).await, "c1 -> c5 at {c5}");
    assert!(ping_until(&lab, "c5", o.address_of("c3").unwrap()).await);
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}
