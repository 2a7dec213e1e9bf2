//! The kernel vxlan fast path end to end (run as root; the host kernel has vxlan): containers
//! talk through it while sleeve idles; a blocked UDP 6784 moves a connection to sleeve and an
//! unblock brings it back, under a live TCP stream; a host that cannot make its vxlan device runs
//! on sleeve beside peers on the fast path, broadcasts reaching everyone once; the automatic MTU
//! follows a jumbo underlay.
//!
//! Timing bounds are the documented defaults (fall back within 3 s, return within 15 s),
//! measured from the fault to the router's own status, polled every 50 ms.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use netsim::caps::Feature;
use netsim::lab::shaping::Proto;
use netsim::measure::icmp::PingOptions;
use netsim::overlay_run::Overlay;

const THREE: &str = "topologies/three-host.toml";
const JUMBO: &str = "topologies/jumbo.toml";
const PAIRS: [(&str, &str); 3] = [("h1", "h2"), ("h1", "h3"), ("h2", "h3")];

/// Waits until every connection of the lab's three hosts is on the fast path.
async fn all_fast(o: &Overlay) {
    for (a, b) in PAIRS {
        for (x, y) in [(a, b), (b, a)] {
            wait_datapath(o, x, y, "vxlan", Duration::from_secs(20))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

fn sleeve_frames(c: &serde_json::Value) -> u64 {
    c["stats"]["tx_frames"].as_u64().unwrap() + c["stats"]["rx_frames"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containers_talk_over_the_fast_path_and_sleeve_stays_idle() {
    netsim::require_features!(Feature::Netns, Feature::Vxlan, Feature::Tun);
    let id = unique("fp-on");
    let lab = up(THREE, &id).await;
    let o = overlay(&lab, vxlan_tier()).await;
    all_fast(&o).await;
    let c3 = o.address_of("c3").unwrap();
    assert!(ping_until(&lab, "c1", c3).await);
    let sleeve_before = sleeve_frames(&conn_status(&o, "h1", "h2").await.unwrap());
    let (rx0, tx0) = dev_bytes(&lab, "h1", "ovlvx").await;
    tcp_bulk(&lab, "c1", "c3", c3, 16 << 20)
        .await
        .unwrap_or_else(|e| panic!("16 MiB c1 -> c3: {e}"));
    let (rx1, tx1) = dev_bytes(&lab, "h1", "ovlvx").await;
    let c = conn_status(&o, "h1", "h2").await.unwrap();
    let sleeve_after = sleeve_frames(&c);
    assert!(
        tx1 - tx0 >= 16 << 20 && rx1 - rx0 >= 1000,
        "16 MiB (and its ACKs) went through the vxlan device: tx {} rx {} bytes",
        tx1 - tx0,
        rx1 - rx0
    );
    assert_eq!(
        sleeve_after, sleeve_before,
        "sleeve carried none of it: {c}"
    );
    assert_eq!(c["datapath"], "vxlan");
    assert_eq!(
        c["path"]["reason"],
        "heartbeats on UDP 6784 answered both ways"
    );
    assert!(c["path"]["heartbeat_rtt_us"].as_u64().is_some(), "{c}");
    let st = o.status("h1").await.unwrap();
    assert_eq!(st["datapath"], "vxlan");
    assert_eq!(st["mtu"], 1450, "auto MTU: 1500 - 50");
    // `netsim status ID` shows every router's connections, found by the lab id alone.
    let routers = netsim::overlay_run::router_statuses(lab.id()).await;
    assert_eq!(routers.len(), 3);
    let text = netsim::overlay_run::render_routers(&routers);
    assert!(
        text.contains("h1: datapath vxlan, MTU 1450 (underlay 1500)"),
        "{text}"
    );
    assert!(
        text.contains("-> h2       vxlan  for ") && text.contains("answered both ways"),
        "{text}"
    );
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocked_fast_path_falls_back_and_recovers_under_a_live_tcp_stream() {
    netsim::require_features!(Feature::Netns, Feature::Vxlan, Feature::Nftables);
    let id = unique("fp-block");
    let lab = up(THREE, &id).await;
    let o = overlay(&lab, vxlan_tier()).await;
    all_fast(&o).await;
    let c3 = o.address_of("c3").unwrap();
    assert!(ping_until(&lab, "c1", c3).await);
    let stream = tcp_paced(&lab, "c1", "c3", c3, Duration::from_secs(16));
    let faults = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        lab.block("h2", Proto::Udp, 6784).await.unwrap();
        let back = wait_datapath(&o, "h1", "h2", "sleeve", Duration::from_secs(10)).await;
        let other_side = wait_datapath(&o, "h2", "h1", "sleeve", Duration::from_secs(10)).await;
        let reason = conn_status(&o, "h1", "h2").await.unwrap()["path"]["reason"].clone();
        let h3_fast = conn_status(&o, "h1", "h3").await.unwrap()["datapath"].clone();
        tokio::time::sleep(Duration::from_secs(2)).await;
        lab.unblock("h2", Proto::Udp, 6784).await.unwrap();
        let fast = wait_datapath(&o, "h1", "h2", "vxlan", Duration::from_secs(30)).await;
        let fast_other = wait_datapath(&o, "h2", "h1", "vxlan", Duration::from_secs(30)).await;
        (back, other_side, reason, h3_fast, fast, fast_other)
    };
    let (paced, (back, other_side, reason, h3_fast, fast, fast_other)) =
        futures::join!(stream, faults);
    let back = back.unwrap_or_else(|e| panic!("fallback: {e}"));
    other_side.unwrap_or_else(|e| panic!("fallback, h2's side: {e}"));
    let fast = fast.unwrap_or_else(|e| panic!("recovery: {e}"));
    fast_other.unwrap_or_else(|e| panic!("recovery, h2's side: {e}"));
    println!("fell back after {back:?}, returned after {fast:?}");
    assert!(back <= Duration::from_secs(3), "fell back after {back:?}");
    assert!(fast <= Duration::from_secs(15), "returned after {fast:?}");
    let reason = reason.as_str().unwrap_or("").to_string();
    assert!(
        reason.contains("unanswered") || reason.contains("have not arrived"),
        "{reason}"
    );
    assert_eq!(
        h3_fast, "vxlan",
        "the other connections stayed on the fast path"
    );
    let paced = paced.unwrap_or_else(|e| panic!("the TCP stream across both moves: {e}"));
    println!("stream: {paced:?}");
    // Bounded, not small: TCP backs off its retransmissions (0.2, 0.4, 0.8, 1.6, 3.2 s) while
    // the blocked fast path drops its segments, so a fallback at 2 s shows as a ~3 s stall and
    // one at 3 s (a slow guest) as ~6 s.
    assert!(
        paced.longest_stall < Duration::from_secs(10),
        "the stream stalled {:?}",
        paced.longest_stall
    );
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

/// Binds UDP 6784 in `host` (before its router starts): the kernel cannot open its vxlan
/// socket there (weave #2375).
async fn take_vxlan_port(lab: &netsim::Lab, host: &str) -> UdpSocket {
    node(lab, host)
        .run(|| async { UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 6784)) })
        .await
        .unwrap()
        .unwrap()
}

/// The datapath table of every router, stable fields only.
async fn datapath_table(o: &Overlay) -> String {
    let mut out = String::new();
    for h in ["h1", "h2", "h3"] {
        let st = o.status(h).await.unwrap();
        let fp = &st["fast_path"];
        out += &format!(
            "{h}: datapath {}, MTU {}, fast path {}\n",
            st["datapath"].as_str().unwrap(),
            st["mtu"],
            if fp["available"] == true {
                "available".to_string()
            } else {
                format!("unavailable: {}", fp["reason"].as_str().unwrap())
            }
        );
        for c in st["router"]["connections"].as_array().unwrap() {
            out += &format!(
                "  {} {}: {}\n",
                c["peer"].as_str().unwrap(),
                c["datapath"].as_str().unwrap(),
                c["path"]["reason"].as_str().unwrap()
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_without_its_vxlan_port_uses_sleeve_beside_fast_peers_and_broadcasts_arrive_once() {
    netsim::require_features!(Feature::Netns, Feature::Vxlan, Feature::AfPacket);
    let id = unique("fp-mixed");
    let lab = up(THREE, &id).await;
    let holder = take_vxlan_port(&lab, "h3").await;
    let o = overlay(&lab, vxlan_tier()).await;
    for (x, y) in [("h1", "h2"), ("h2", "h1")] {
        wait_datapath(&o, x, y, "vxlan", Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let table = datapath_table(&o).await;
    insta::assert_snapshot!(table);
    // Everyone reaches everyone, on whichever datapath.
    for (from, to) in [("c1", "c3"), ("c1", "c5"), ("c5", "c4"), ("c6", "c2")] {
        assert!(
            ping_until(&lab, from, o.address_of(to).unwrap()).await,
            "{from} -> {to}"
        );
    }
    // A broadcast from a host with both datapaths, and from the sleeve-only host, reaches
    // every other container exactly once.
    for (from, others) in [
        ("c1", ["c2", "c3", "c4", "c5", "c6"]),
        ("c5", ["c1", "c2", "c3", "c4", "c6"]),
    ] {
        let marker = format!("BROADCAST-ONCE-FROM-{from}");
        let counts = broadcast_copies(&lab, from, &others, marker.as_bytes()).await;
        assert!(
            counts.iter().all(|(_, n)| *n == 1),
            "broadcast from {from}: {counts:?}"
        );
    }
    drop(holder);
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mtu_auto_gives_8950_on_a_jumbo_underlay_and_full_frames_cross() {
    netsim::require_features!(Feature::Netns, Feature::Vxlan);
    let id = unique("fp-jumbo");
    let lab = up(JUMBO, &id).await;
    let o = overlay(&lab, vxlan_tier()).await;
    all_fast(&o).await;
    for h in ["h1", "h2", "h3"] {
        let st = o.status(h).await.unwrap();
        assert_eq!(
            (st["mtu"].clone(), st["underlay_mtu"].clone()),
            (8950.into(), 9000.into()),
            "{h}"
        );
    }
    let c5 = o.address_of("c5").unwrap();
    assert!(ping_until(&lab, "c1", c5).await);
    // A DF ping of exactly the overlay MTU crosses; one byte more is refused at c1's own link.
    let full = PingOptions {
        count: 2,
        size: 8950 - 28,
        df: true,
        ..PingOptions::default()
    };
    let r = ping(&lab, "c1", c5, full.clone()).await;
    assert!(r.received > 0, "8950-byte DF ping: {r:?}");
    let start = Instant::now();
    tcp_bulk(&lab, "c1", "c5", c5, 16 << 20).await.unwrap();
    println!("16 MiB over the jumbo fast path in {:?}", start.elapsed());
    assert_eq!(
        conn_status(&o, "h1", "h3").await.unwrap()["datapath"],
        "vxlan"
    );
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_router_replaces_its_leftover_vxlan_device() {
    netsim::require_features!(Feature::Netns, Feature::Vxlan);
    let id = unique("fp-kill");
    let lab = up(THREE, &id).await;
    let mut o = overlay(&lab, vxlan_tier()).await;
    all_fast(&o).await;
    o.kill("h2").unwrap();
    // The device outlives a SIGKILL (dev_bytes panics on a missing device); the restarted
    // router replaces it and is fast again.
    dev_bytes(&lab, "h2", "ovlvx").await;
    o.restart(&lab, "h2").await.unwrap();
    all_fast(&o).await;
    assert!(
        o.log("h2").contains("replacing the vxlan device"),
        "{}",
        o.log("h2")
    );
    // It announced its containers' MACs again without being asked to re-attach them.
    let mut macs = serde_json::Value::Null;
    for _ in 0..100 {
        macs = conn_status(&o, "h1", "h2").await.unwrap()["path"]["peer_macs"].clone();
        if macs == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        macs,
        2,
        "h1 hears h2's two container MACs again; h2's log:\n{}",
        o.log("h2")
    );
    let c3 = o.address_of("c3").unwrap();
    assert!(ping_until(&lab, "c1", c3).await);
    o.stop();
    // An orderly stop removes it.
    let gone = node(&lab, "h2")
        .run(|| async { std::fs::read_to_string("/proc/thread-self/net/dev") })
        .await
        .unwrap()
        .unwrap();
    assert!(!gone.contains("ovlvx"), "{gone}");
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

/// Total control frames `host`'s router has sent, all types.
async fn control_frames(o: &Overlay, host: &str) -> u64 {
    let st = o.status(host).await.unwrap();
    st["router"]["control_sent"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["frames"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_fast_connections_send_no_keepalives_and_a_cut_control_connection_still_ends() {
    netsim::require_features!(Feature::Netns, Feature::Vxlan, Feature::Nftables);
    let id = unique("fp-quiet");
    let lab = up(THREE, &id).await;
    let o = overlay(&lab, vxlan_tier()).await;
    all_fast(&o).await;
    // Idle for longer than two keepalive periods (5 s each): heartbeats show both routers
    // alive, so no control frame is needed, and no connection is dropped as silent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = control_frames(&o, "h1").await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let sent = control_frames(&o, "h1").await - before;
    // At most one frame per connection: the report that it went idle (heartbeat pace).
    assert!(
        sent <= 2,
        "h1 sent {sent} control frames in 12 s of idling on the fast path (keepalives would be 4)"
    );
    for peer in ["h2", "h3"] {
        assert!(
            conn_status(&o, "h1", peer).await.is_some(),
            "h1 -> {peer} kept"
        );
    }
    assert!(!o.log("h1").contains("peer silent"), "{}", o.log("h1"));
    // The control connection cut while heartbeats still cross: the kernel's keepalive and
    // user timeout end it (within DEAD_AFTER of the first unanswered probe).
    lab.block("h2", Proto::Tcp, 6783).await.unwrap();
    let start = Instant::now();
    let mut gone = None;
    while start.elapsed() < Duration::from_secs(40) {
        if conn_status(&o, "h1", "h2").await.is_none() {
            gone = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone =
        gone.unwrap_or_else(|| panic!("h1 -> h2 still up 40 s after the cut: {}", o.log("h1")));
    println!("h1 -> h2 ended {gone:?} after its control connection was cut");
    assert!(gone <= Duration::from_secs(25), "ended after {gone:?}");
    lab.unblock("h2", Proto::Tcp, 6783).await.unwrap();
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

fn heartbeats_sent(c: &serde_json::Value) -> u64 {
    c["path"]["heartbeats_sent"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_connection_slows_its_heartbeats_and_frames_starting_over_a_broken_path_still_fall_back_in_seconds(
) {
    netsim::require_features!(Feature::Netns, Feature::Vxlan, Feature::Nftables);
    let id = unique("fp-pace");
    let lab = up(THREE, &id).await;
    let o = overlay(&lab, vxlan_tier()).await;
    all_fast(&o).await;
    // c1 knows c3's MAC (a connect over a broken path would otherwise fail on ARP first).
    let c3 = o.address_of("c3").unwrap();
    assert!(ping_until(&lab, "c1", c3).await);
    // The ping's neighbour entries are confirmed by unicast ARP 5 s later (the kernel's
    // delay_first_probe_time): frames too, which keep the connection brisk for 2 s more.
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Settled and without frames for 2 s: both sides slow down.
    for (a, b) in [("h1", "h2"), ("h2", "h1")] {
        wait_path_field(&o, a, b, "pace", "idle", Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let c = conn_status(&o, "h1", "h2").await.unwrap();
    assert_eq!(c["path"]["heartbeat_interval_ms"], 5000, "{c}");
    let before = heartbeats_sent(&c);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let c = conn_status(&o, "h1", "h2").await.unwrap();
    let sent = heartbeats_sent(&c) - before;
    assert!(
        (1..=3).contains(&sent),
        "{sent} heartbeat rounds in 10 s at the idle pace (brisk would be 20)"
    );
    assert_eq!(c["datapath"], "vxlan", "idle, still on the fast path: {c}");
    // A path broken while idle goes unnoticed until frames flow, then costs about the
    // documented fallback time: the sender's kernel shows the use, both sides quicken, and
    // the peer's heartbeats are missed within a brisk window.
    lab.block("h2", Proto::Udp, 6784).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stream = tcp_paced(&lab, "c1", "c3", c3, Duration::from_secs(14));
    let watch = async {
        let back = wait_datapath(&o, "h1", "h2", "sleeve", Duration::from_secs(15)).await;
        let brisk = conn_status(&o, "h1", "h2").await.unwrap()["path"]["pace"].clone();
        (back, brisk)
    };
    let (paced, (back, pace)) = futures::join!(stream, watch);
    let back = back.unwrap_or_else(|e| panic!("fallback once frames flow: {e}"));
    println!("fell back {back:?} after frames started over the broken idle path");
    assert!(back <= Duration::from_secs(5), "fell back after {back:?}");
    assert_eq!(pace, "brisk", "a connection on sleeve is brisk");
    let paced = paced.unwrap_or_else(|e| panic!("the stream across the fallback: {e}"));
    println!("stream: {paced:?}");
    assert!(
        paced.longest_stall < Duration::from_secs(10),
        "the stream stalled {:?}",
        paced.longest_stall
    );
    lab.unblock("h2", Proto::Udp, 6784).await.unwrap();
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}
