//! The fast path against what it is built from, side by side in one lab per MTU: tcp_bw (one
//! stream and eight) and udp_lat between two hosts natively, between two containers over a raw
//! kernel vxlan + bridge wired by hand (the physical limit of this datapath), between two
//! containers over the overlay's fast path (the kernel vxlan tier, and the Open vSwitch tier
//! where the module is), and over sleeve. Each figure is the median of
//! ROUNDS runs, each ratio the median of per-round ratios (the paths of one round run back to
//! back, in an order that turns from round to round). Ignored by default (it measures, it does not assert figures: the machine is shared);
//! run it with a release router:
//!
//! ```text
//! cargo build --release -p overlay --bin overlay-router
//! NETSIM_OVERLAY_BIN=target/release/overlay-router \
//!   cargo test --release --test fast_path_bench -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use netsim::lab::Lab;
use netsim::measure::matrix::{self, MatrixServer};
use netsim::measure::pair;
use netsim::measure::perf::{PerfOptions, Test};
use netsim::overlay_run::OverlayOptions;

/// Rounds per path (`NETSIM_BENCH_ROUNDS` overrides: fewer in the slow kernel-lane guest).
static ROUNDS: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
    std::env::var("NETSIM_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
});
const H1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const H2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const RAW_C2: Ipv4Addr = Ipv4Addr::new(198, 19, 250, 1);
const RAW_C4: Ipv4Addr = Ipv4Addr::new(198, 19, 250, 2);

fn ip(lab: &Lab, node_name: &str, args: &[&str]) {
    let st = node(lab, node_name)
        .exec(&[&["ip"], args].concat())
        .unwrap();
    assert!(st.success(), "ip {args:?} in {node_name}");
}

/// A raw kernel vxlan between the hosts (VNI 42, UDP 4789), on a bridge per host with one
/// container each (c2, c4) on a veth: what the fast path is made of, without the router.
fn wire_raw_vxlan(lab: &Lab, mtu: u32) {
    let inner = (mtu - 50).to_string();
    for (host, local, remote, c, addr) in
        [("h1", H1, H2, "c2", RAW_C2), ("h2", H2, H1, "c4", RAW_C4)]
    {
        let (local, remote) = (local.to_string(), remote.to_string());
        let cns = node(lab, c).netns_name();
        ip(lab, host, &["link", "add", "rawbr", "type", "bridge"]);
        ip(
            lab,
            host,
            &[
                "link", "add", "rawvx", "mtu", &inner, "type", "vxlan", "id", "42", "dstport",
                "4789", "local", &local, "remote", &remote,
            ],
        );
        ip(
            lab,
            host,
            &["link", "set", "rawvx", "master", "rawbr", "up"],
        );
        ip(
            lab,
            host,
            &[
                "link", "add", "rawv", "mtu", &inner, "type", "veth", "peer", "name", "eth0",
                "netns", &cns,
            ],
        );
        ip(lab, host, &["link", "set", "rawv", "master", "rawbr", "up"]);
        ip(lab, host, &["link", "set", "rawbr", "mtu", &inner, "up"]);
        ip(
            lab,
            c,
            &["addr", "add", &format!("{addr}/24"), "dev", "eth0"],
        );
        ip(lab, c, &["link", "set", "eth0", "up"]);
        ip(lab, c, &["link", "set", "lo", "up"]);
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    bw1: f64,
    bw8: f64,
    lat: f64,
}

async fn measure(lab: &Lab, server: &str, addr: Ipv4Addr, client: &str) -> Figures {
    let s = node(lab, server);
    let c = node(lab, client);
    let mut bw = PerfOptions::for_test(Test::TcpBw);
    bw.duration = Duration::from_secs(3);
    let (r, _) = pair::run(&s, addr, &c, Test::TcpBw, bw).await.unwrap();
    let bw1 = r.bytes_per_sec.unwrap_or(0.0) * 8.0 / 1e6;
    let (servers, clients) = matrix::streams_per_client(
        MatrixServer {
            node: s.clone(),
            addr,
        },
        std::slice::from_ref(&c),
        8,
    );
    let m = matrix::run(&servers, &clients, bw).await.unwrap();
    let bw8 = m.aggregate_bytes_per_sec * 8.0 / 1e6;
    let lat = PerfOptions::for_test(Test::UdpLat);
    let (r, _) = pair::run(&s, addr, &c, Test::UdpLat, lat).await.unwrap();
    Figures {
        bw1,
        bw8,
        lat: r.latency_us.unwrap_or(0.0),
    }
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// One table row: the path's median figures, and its ratios to `base` (per round, medians).
fn row(table: &mut String, mtu: u32, path: &str, runs: &[Figures], base: &[Figures], of: &str) {
    let (bw1, _, _) = median(runs.iter().map(|f| f.bw1).collect());
    let (bw8, _, _) = median(runs.iter().map(|f| f.bw8).collect());
    let (lat, _, _) = median(runs.iter().map(|f| f.lat).collect());
    let ratio = |f: fn(&Figures) -> f64| {
        median(
            runs.iter()
                .zip(base)
                .map(|(r, b)| 100.0 * f(r) / f(b).max(1e-9))
                .collect(),
        )
    };
    let (r1, l1, h1) = ratio(|f| f.bw1);
    let (r8, l8, h8) = ratio(|f| f.bw8);
    let (rl, _, _) = ratio(|f| f.lat);
    let _ = writeln!(
        table,
        "| {mtu} | {path} | {bw1:.0} | {r1:.0} ({l1:.0}-{h1:.0}) | {bw8:.0} | {r8:.0} ({l8:.0}-{h8:.0}) | {lat:.0} | {rl:.0} | {of} |"
    );
}

/// The overlay on kernel tier `tier` (c1 on h1, c3 on h2), measured round by round beside
/// native and raw vxlan: (native, raw, overlay) figures. The order turns from round to round,
/// so no path always runs first or last.
async fn beside_native_and_raw(
    lab: &Lab,
    tier: &str,
) -> (Vec<Figures>, Vec<Figures>, Vec<Figures>) {
    let o = overlay(
        lab,
        OverlayOptions {
            no_attach: true,
            router_args: vec!["--fast-path".into(), tier.into()],
            ..OverlayOptions::default()
        },
    )
    .await;
    o.attach(lab, "h1", "c1").await.unwrap();
    let c3 = o.attach(lab, "h2", "c3").await.unwrap();
    wait_datapath(&o, "h1", "h2", tier, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(ping_until(lab, "c1", c3).await);
    let (mut native, mut raw, mut fast) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..*ROUNDS {
        for k in 0..3 {
            match (round + k) % 3 {
                0 => native.push(measure(lab, "h2", H2, "h1").await),
                1 => raw.push(measure(lab, "c4", RAW_C4, "c2").await),
                _ => fast.push(measure(lab, "c3", c3, "c1").await),
            }
        }
    }
    let st = o.status("h1").await.unwrap();
    assert_eq!(
        conn_status(&o, "h1", "h2").await.unwrap()["datapath"],
        tier,
        "still on {tier}: {st}"
    );
    if tier == "odp" {
        println!("h1's datapath after the odp rounds: {}", st["odp"]);
    }
    o.stop();
    (native, raw, fast)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run with --ignored --nocapture and a release router"]
async fn fast_path_vs_raw_vxlan_vs_native() {
    let mut table = String::from(
        "| MTU | path | tcp_bw 1 stream Mbit/s | % of base (range) | tcp_bw 8 streams Mbit/s | % of base (range) | udp_lat us | % of base | base |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for mtu in [1500u32, 9000] {
        let id = unique("fp-bench");
        let lab = up(&format!("tests/topologies/fastpath-bench-{mtu}.toml"), &id).await;
        wire_raw_vxlan(&lab, mtu);
        assert!(ping_until(&lab, "c2", RAW_C4).await, "raw vxlan");
        let no_attach = |args: &[&str]| OverlayOptions {
            no_attach: true,
            router_args: args.iter().map(|s| s.to_string()).collect(),
            ..OverlayOptions::default()
        };
        let (native, raw, fast) = beside_native_and_raw(&lab, "vxlan").await;
        let o = overlay(&lab, no_attach(&["--fast-path", "off"])).await;
        o.attach(&lab, "h1", "c1").await.unwrap();
        let c3 = o.attach(&lab, "h2", "c3").await.unwrap();
        assert!(ping_until(&lab, "c1", c3).await);
        let (mut native2, mut sleeve) = (Vec::new(), Vec::new());
        for round in 0..*ROUNDS {
            if round % 2 == 0 {
                native2.push(measure(&lab, "h2", H2, "h1").await);
                sleeve.push(measure(&lab, "c3", c3, "c1").await);
            } else {
                sleeve.push(measure(&lab, "c3", c3, "c1").await);
                native2.push(measure(&lab, "h2", H2, "h1").await);
            }
        }
        o.stop();
        // The Open vSwitch tier, where the module is (the kernel lane): its own rounds beside
        // native and raw vxlan again, so its ratios come from the same minutes.
        let mut odp_rows = None;
        if netsim::caps::probe().has(netsim::caps::Feature::Openvswitch) {
            odp_rows = Some(beside_native_and_raw(&lab, "odp").await);
        }
        row(&mut table, mtu, "native", &native, &native, "native");
        row(
            &mut table,
            mtu,
            "raw vxlan + bridge",
            &raw,
            &native,
            "native",
        );
        row(
            &mut table,
            mtu,
            "fast path (vxlan)",
            &fast,
            &native,
            "native",
        );
        row(
            &mut table,
            mtu,
            "fast path (vxlan)",
            &fast,
            &raw,
            "raw vxlan",
        );
        if let Some((native3, raw2, odp)) = &odp_rows {
            row(&mut table, mtu, "fast path (odp)", odp, native3, "native");
            row(&mut table, mtu, "fast path (odp)", odp, raw2, "raw vxlan");
        }
        row(&mut table, mtu, "sleeve", &sleeve, &native2, "native");
        lab.down().await.unwrap();
        assert!(leftovers(&id).is_empty());
        println!("{table}");
    }
    println!("{table}");
}

/// The Open vSwitch tier's first-packet path (kernel lane): c1 sends frames to c3, each from a
/// source MAC of its own, so each is the first frame of a flow: it misses, comes up, is executed
/// and gets a flow. Reported: upcalls per new flow, and how many first packets per second the
/// router answers (new flows per second while the burst lasts), beside the kernel's lost count.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run in the kernel lane with --ignored --nocapture"]
async fn odp_first_packet_path() {
    if !netsim::caps::probe().has(netsim::caps::Feature::Openvswitch) {
        println!("no openvswitch module here: run this in the kernel lane");
        return;
    }
    const FLOWS: u64 = 2000;
    let id = unique("odp-first");
    let lab = up("topologies/three-host.toml", &id).await;
    let o = overlay(
        &lab,
        OverlayOptions {
            router_args: vec![
                "--fast-path".into(),
                "odp".into(),
                "--flow-idle-ms".into(),
                "60000".into(),
            ],
            ..OverlayOptions::default()
        },
    )
    .await;
    wait_datapath(&o, "h1", "h2", "odp", Duration::from_secs(20))
        .await
        .unwrap();
    let c3 = o.address_of("c3").unwrap();
    assert!(ping_until(&lab, "c1", c3).await);
    let c3_mac = {
        let out = node(&lab, "c3")
            .command("ip")
            .args(["-o", "link", "show", "dev", "eth0"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let hex = text
            .split("link/ether ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        let mut mac = [0u8; 6];
        for (i, b) in hex.split(':').enumerate() {
            mac[i] = u8::from_str_radix(b, 16).unwrap();
        }
        mac
    };
    let stats = |v: &serde_json::Value, k: &str| v["odp"][k].as_u64().unwrap();
    let before = o.status("h1").await.unwrap();
    let sock = node(&lab, "c1")
        .run(|| async {
            // SAFETY: if_nametoindex reads a NUL-terminated name.
            let index = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
            netsim::kernel::packet::PacketSocket::open(index).unwrap()
        })
        .await
        .unwrap();
    let start = std::time::Instant::now();
    for i in 0..FLOWS {
        let mut f = vec![0u8; netsim::kernel::packet::VNET_HDR_LEN];
        f.extend(c3_mac);
        f.extend([0x02, 0xf1, 0, 0, (i >> 8) as u8, i as u8]);
        f.extend(0x88b6u16.to_be_bytes());
        f.resize(netsim::kernel::packet::VNET_HDR_LEN + 60, 0);
        let _ = sock.send(&f);
    }
    let sent_in = start.elapsed();
    // The burst is answered when the installed count stops growing.
    let mut last = (0, std::time::Instant::now());
    let mut after = before.clone();
    while last.1.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = o.status("h1").await.unwrap();
        let n = stats(&after, "flows_installed");
        if n != last.0 {
            last = (n, std::time::Instant::now());
        }
    }
    let answered_in = last.1.duration_since(start);
    let flows = stats(&after, "flows_installed") - stats(&before, "flows_installed");
    let upcalls = stats(&after, "upcalls") - stats(&before, "upcalls");
    let lost = dpctl_lost(&lab, "h1");
    println!(
        "first-packet path: {FLOWS} first frames sent in {sent_in:?}; {flows} flows installed \
         in {answered_in:?} = {:.0} new flows/s; {:.2} upcalls per new flow; datapath lost \
         {lost} upcalls in all",
        flows as f64 / answered_in.as_secs_f64(),
        upcalls as f64 / flows.max(1) as f64
    );
    o.stop();
    lab.down().await.unwrap();
    assert!(leftovers(&id).is_empty());
}

/// The datapath's lost-upcall count, from `ovs-dpctl show` in `host`.
fn dpctl_lost(lab: &Lab, host: &str) -> String {
    let out = node(lab, host)
        .command("ovs-dpctl")
        .arg("show")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split("lost:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("?")
        .to_string()
}
