//! The Open vSwitch tier end to end on three-host.toml (the kernel lane: its guest has the
//! openvswitch module). Containers talk through datapath flows while sleeve idles and misses
//! stay flat; Debian's `ovs-dpctl` reads the datapath back as an independent reader; idle flows
//! expire; a MAC seen behind another host flushes the flows; a blocked UDP 6784 moves a
//! connection to sleeve and unblocking brings it back (the vxlan tier's bounds); a killed
//! router replaces its leftover datapath; stopping removes everything. Where the module is
//! missing (the host lane) the router says so and uses kernel vxlan.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use netsim::caps::Feature;
use netsim::lab::shaping::Proto;
use netsim::lab::Lab;
use netsim::overlay_run::{Overlay, OverlayOptions};

const THREE: &str = "topologies/three-host.toml";
const PAIRS: [(&str, &str); 3] = [("h1", "h2"), ("h1", "h3"), ("h2", "h3")];

/// Flows idle this long go: shorter than the default 10 s so the test sees it happen, long
/// enough that the flows of the transfer are still there to be read back on a loaded guest.
const IDLE_MS: u64 = 8000;

fn odp_options() -> OverlayOptions {
    OverlayOptions {
        router_args: vec!["--flow-idle-ms".into(), IDLE_MS.to_string()],
        ..OverlayOptions::default()
    }
}

async fn all_on(o: &Overlay, datapath: &str) {
    for (a, b) in PAIRS {
        for (x, y) in [(a, b), (b, a)] {
            wait_datapath(o, x, y, datapath, Duration::from_secs(20))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

fn sleeve_frames(c: &serde_json::Value) -> u64 {
    c["stats"]["tx_frames"].as_u64().unwrap() + c["stats"]["rx_frames"].as_u64().unwrap()
}

async fn odp_stats(o: &Overlay, host: &str) -> serde_json::Value {
    o.status(host).await.unwrap()["odp"].clone()
}

/// `ovs-dpctl ARGS` run inside `host`'s namespace: its output.
fn dpctl(lab: &Lab, host: &str, args: &[&str]) -> String {
    let out = node(lab, host)
        .command("ovs-dpctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run ovs-dpctl (ci/setup installs openvswitch-switch): {e}"));
    assert!(
        out.status.success(),
        "ovs-dpctl {args:?} in {host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The MAC of `container`'s eth0, as ovs-dpctl prints MACs (read with `ip`: sysfs in a
/// namespace's thread shows the root namespace's devices).
async fn mac_of(lab: &Lab, container: &str) -> String {
    let out = node(lab, container)
        .command("ip")
        .args(["-o", "link", "show", "dev", "eth0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split("link/ether ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no MAC in {text:?}"))
        .to_string()
}

/// `ovs-dpctl show`, stable lines only: the datapath and its ports.
fn show_stable(text: &str) -> String {
    text.lines()
        .filter(|l| l.starts_with("system@") || l.trim_start().starts_with("port "))
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One flow of `ovs-dpctl dump-flows`, without counters and with MACs and VNIs named.
fn flow_stable(line: &str, names: &[(String, &str)]) -> String {
    let mut l = line.to_string();
    for (mac, name) in names {
        l = l.replace(mac.as_str(), name);
    }
    // Counters and timers change from run to run; what matches and what is done does not.
    let cut = |l: &str, from: &str, to: &str| -> String {
        match (l.find(from), l.find(to)) {
            (Some(a), Some(b)) if b > a => format!("{}{}", &l[..a], &l[b..]),
            _ => l.to_string(),
        }
    };
    let l = cut(&l, " packets:", "actions:");
    // tun_id carries the pair of short ids, which are random per run.
    let mut out = String::new();
    let mut rest = l.as_str();
    while let Some(i) = rest.find("tun_id=0x") {
        out += &rest[..i + "tun_id=".len()];
        rest = &rest[i + "tun_id=".len()..];
        let end = rest.find([',', ')']).unwrap_or(rest.len());
        out += "<pair>";
        rest = &rest[end..];
    }
    out + rest
}

fn flow_bytes(dump: &str) -> u64 {
    dump.lines()
        .filter_map(|l| l.split(" bytes:").nth(1))
        .filter_map(|b| b.split(',').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containers_talk_through_datapath_flows_while_upcalls_and_sleeve_stay_flat() {
    netsim::require_features!(
        Feature::Netns,
        Feature::Veth,
        Feature::Tun,
        Feature::Openvswitch
    );
    let id = unique("odp-on");
    let lab = up(THREE, &id).await;
    let o = overlay(&lab, odp_options()).await;
    all_on(&o, "odp").await;
    let st = o.status("h1").await.unwrap();
    assert_eq!(st["datapath"], "odp");
    assert_eq!(st["datapaths"], serde_json::json!(["odp", "sleeve"]));
    assert_eq!(st["fast_path"]["tier"], "odp");
    assert_eq!(st["fast_path"]["reason"], "using the openvswitch datapath");
    assert_eq!(st["mtu"], 1450, "auto MTU: 1500 - 50");

    // c1 (h1) and c3 (h2): the first frames miss and make flows; then 16 MiB go through the
    // flows with no more misses, and sleeve carries none of it.
    let c3 = o.address_of("c3").unwrap();
    assert!(ping_until(&lab, "c1", c3).await);
    let before = odp_stats(&o, "h1").await;
    assert!(before["flows_installed"].as_u64().unwrap() >= 1, "{before}");
    let sleeve_before = sleeve_frames(&conn_status(&o, "h1", "h2").await.unwrap());
    tcp_bulk(&lab, "c1", "c3", c3, 16 << 20)
        .await
        .unwrap_or_else(|e| panic!("16 MiB c1 -> c3: {e}"));
    let after = odp_stats(&o, "h1").await;
    let c = conn_status(&o, "h1", "h2").await.unwrap();
    assert_eq!(
        sleeve_frames(&c),
        sleeve_before,
        "sleeve carried none of it: {c}"
    );
    // Broadcast and multicast (the namespaces' own IPv6 chatter) come up every time; unicast
    // misses are the first frames of flows. A flow may expire between the ping and the
    // transfer (on a very slow guest): at most one per direction then.
    let unicast = |s: &serde_json::Value| {
        let dropped: u64 = s["dropped"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        s["upcalls"].as_u64().unwrap() - s["group"].as_u64().unwrap() - dropped
    };
    let misses = unicast(&after) - unicast(&before);
    assert!(
        misses <= 2,
        "16 MiB through existing flows missed {misses} times: {before} -> {after}"
    );
    assert_eq!(after["errors"], 0, "{after}");

    // Debian's ovs-dpctl reads the same datapath: its ports, and flows that carried the bytes.
    let show = dpctl(&lab, "h1", &["show"]);
    insta::assert_snapshot!("odp_show_h1", show_stable(&show));
    let dump = dpctl(&lab, "h1", &["dump-flows"]);
    assert!(
        flow_bytes(&dump) >= 16 << 20,
        "the flows counted the 16 MiB: {dump}"
    );
    let names = [
        (mac_of(&lab, "c1").await, "<c1>"),
        (mac_of(&lab, "c3").await, "<c3>"),
    ];
    let mut flows: Vec<String> = dump
        .lines()
        .filter(|l| {
            names.iter().all(|(m, _)| l.contains(m.as_str())) || l.contains("eth_type(0x88b5)")
        })
        .map(|l| flow_stable(l, &names))
        .collect();
    flows.sort();
    flows.dedup();
    insta::assert_snapshot!("odp_flows_h1_c1_c3", flows.join("\n"));

    // c5 (behind h3) takes c3's MAC and speaks while c1 streams to c3: h1 learns the MAC
    // behind h3 and flushes the busy flows (they are made again for c3's announced host).
    let flushes = after["flushes"].as_u64().unwrap();
    let c3_mac = names[1].0.clone();
    let c1 = o.address_of("c1").unwrap();
    let stream = tcp_paced(&lab, "c1", "c3", c3, Duration::from_secs(6));
    let mover = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let c5 = node(&lab, "c5");
        assert!(c5
            .exec(&["ip", "link", "set", "dev", "eth0", "address", &c3_mac])
            .unwrap()
            .success());
        let _ = ping(
            &lab,
            "c5",
            c1,
            netsim::measure::icmp::PingOptions::default(),
        )
        .await;
        odp_stats(&o, "h1").await
    };
    let (streamed, moved) = futures::join!(stream, mover);
    streamed.unwrap_or_else(|e| panic!("c1 -> c3 across the flush: {e}"));
    assert!(moved["macs_moved"].as_u64().unwrap() >= 1, "{moved}");
    assert!(moved["flushes"].as_u64().unwrap() > flushes, "{moved}");
    assert!(o.log("h1").contains("moved to"), "{}", o.log("h1"));

    // Idle flows expire: once traffic stops, only the heartbeat flow is left.
    let start = Instant::now();
    eventually("h1's flows expire once idle", || async {
        odp_stats(&o, "h1").await["flows"] == 0
    })
    .await;
    println!("flows gone {:?} after the traffic stopped", start.elapsed());
    let left = dpctl(&lab, "h1", &["dump-flows"]);
    assert_eq!(left.lines().count(), 1, "only the heartbeat flow: {left}");

    // Stopping removes the datapath, its vports and the veth.
    o.stop();
    let show = dpctl(&lab, "h1", &["show"]);
    assert!(!show.contains("ovldp"), "{show}");
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocked_odp_path_falls_back_to_sleeve_and_returns() {
    netsim::require_features!(
        Feature::Netns,
        Feature::Veth,
        Feature::Tun,
        Feature::Openvswitch,
        Feature::Nftables
    );
    let id = unique("odp-block");
    let lab = up(THREE, &id).await;
    let o = overlay(&lab, odp_options()).await;
    all_on(&o, "odp").await;
    let c3 = o.address_of("c3").unwrap();
    assert!(ping_until(&lab, "c1", c3).await);
    lab.block("h2", Proto::Udp, 6784).await.unwrap();
    let back = wait_datapath(&o, "h1", "h2", "sleeve", Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("fallback: {e}"));
    wait_datapath(&o, "h2", "h1", "sleeve", Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("fallback, h2's side: {e}"));
    assert_eq!(
        conn_status(&o, "h1", "h3").await.unwrap()["datapath"],
        "odp"
    );
    assert!(
        ping_until(&lab, "c1", c3).await,
        "c1 reaches c3 over sleeve"
    );
    lab.unblock("h2", Proto::Udp, 6784).await.unwrap();
    let fast = wait_datapath(&o, "h1", "h2", "odp", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("recovery: {e}"));
    wait_datapath(&o, "h2", "h1", "odp", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("recovery, h2's side: {e}"));
    println!("fell back after {back:?}, returned after {fast:?}");
    assert!(back <= Duration::from_secs(3), "fell back after {back:?}");
    assert!(fast <= Duration::from_secs(15), "returned after {fast:?}");
    assert!(
        ping_until(&lab, "c1", c3).await,
        "c1 reaches c3 over odp again"
    );
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_router_replaces_its_leftover_datapath() {
    netsim::require_features!(
        Feature::Netns,
        Feature::Veth,
        Feature::Tun,
        Feature::Openvswitch
    );
    let id = unique("odp-kill");
    let lab = up(THREE, &id).await;
    let mut o = overlay(&lab, odp_options()).await;
    all_on(&o, "odp").await;
    o.kill("h2").unwrap();
    assert!(
        dpctl(&lab, "h2", &["show"]).contains("ovldp"),
        "the datapath outlives SIGKILL"
    );
    o.restart(&lab, "h2").await.unwrap();
    all_on(&o, "odp").await;
    assert!(
        o.log("h2").contains("replacing the datapath"),
        "{}",
        o.log("h2")
    );
    let c3 = o.address_of("c3").unwrap();
    assert!(ping_until(&lab, "c1", c3).await);
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

/// Both lanes: with the module the router picks the Open vSwitch tier; without it (the host
/// lane) it says so and uses kernel vxlan.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_router_names_its_tier_and_why() {
    netsim::require_features!(Feature::Netns, Feature::Veth, Feature::Tun, Feature::Vxlan);
    let id = unique("odp-tier");
    let lab = up(THREE, &id).await;
    let o = overlay(&lab, OverlayOptions::default()).await;
    let with_module = netsim::caps::probe().has(Feature::Openvswitch);
    let (tier, reason) = if with_module {
        ("odp", "using the openvswitch datapath")
    } else {
        ("vxlan", "openvswitch module missing: using kernel vxlan")
    };
    all_on(&o, tier).await;
    for h in ["h1", "h2", "h3"] {
        let st = o.status(h).await.unwrap();
        assert_eq!(st["fast_path"]["tier"], tier, "{h}: {st}");
        assert_eq!(st["fast_path"]["reason"], reason, "{h}: {st}");
    }
    let c5 = o.address_of("c5").unwrap();
    assert!(ping_until(&lab, "c1", c5).await);
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}
