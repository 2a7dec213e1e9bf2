//! The fast path against what it is built from, side by side in one lab per MTU: tcp_bw (one
//! stream and eight) and udp_lat between two hosts natively, between two containers over a raw
//! kernel vxlan + bridge wired by hand (the physical limit of this datapath), between two
//! containers over the overlay's fast path, and over sleeve. Each figure is the median of
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

const ROUNDS: usize = 5;
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
        let o = overlay(&lab, no_attach(&[])).await;
        o.attach(&lab, "h1", "c1").await.unwrap();
        let c3 = o.attach(&lab, "h2", "c3").await.unwrap();
        wait_datapath(&o, "h1", "h2", "vxlan", Duration::from_secs(20))
            .await
            .unwrap();
        assert!(ping_until(&lab, "c1", c3).await);
        let (mut native, mut raw, mut fast) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            // The order turns from round to round, so no path always runs first or last.
            for k in 0..3 {
                match (round + k) % 3 {
                    0 => native.push(measure(&lab, "h2", H2, "h1").await),
                    1 => raw.push(measure(&lab, "c4", RAW_C4, "c2").await),
                    _ => fast.push(measure(&lab, "c3", c3, "c1").await),
                }
            }
        }
        assert_eq!(
            conn_status(&o, "h1", "h2").await.unwrap()["datapath"],
            "vxlan"
        );
        o.stop();
        let o = overlay(&lab, no_attach(&["--fast-path", "off"])).await;
        o.attach(&lab, "h1", "c1").await.unwrap();
        let c3 = o.attach(&lab, "h2", "c3").await.unwrap();
        assert!(ping_until(&lab, "c1", c3).await);
        let (mut native2, mut sleeve) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            if round % 2 == 0 {
                native2.push(measure(&lab, "h2", H2, "h1").await);
                sleeve.push(measure(&lab, "c3", c3, "c1").await);
            } else {
                sleeve.push(measure(&lab, "c3", c3, "c1").await);
                native2.push(measure(&lab, "h2", H2, "h1").await);
            }
        }
        o.stop();
        row(&mut table, mtu, "native", &native, &native, "native");
        row(
            &mut table,
            mtu,
            "raw vxlan + bridge",
            &raw,
            &native,
            "native",
        );
        row(&mut table, mtu, "fast path", &fast, &native, "native");
        row(&mut table, mtu, "fast path", &fast, &raw, "raw vxlan");
        row(&mut table, mtu, "sleeve", &sleeve, &native2, "native");
        lab.down().await.unwrap();
        assert!(leftovers(&id).is_empty());
        println!("{table}");
    }
    println!("{table}");
}
