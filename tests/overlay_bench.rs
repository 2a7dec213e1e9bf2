//! Sleeve (the fast path turned off) against the native underlay, side by side in one run: tcp_bw and udp_lat between
//! containers on two hosts (two-host.toml) over sleeve (plain and encrypted), and between the
//! same hosts directly; unshaped, then with both hosts' underlay interfaces shaped to 1 Gbit/s
//! (tbf); each sleeve row is the median of three native/sleeve pairs run back to back, with
//! the range. Ignored by default (it measures, it does not assert figures: the machine is shared);
//! run it with a release router:
//!
//! ```text
//! cargo build --release -p overlay --bin overlay-router
//! NETSIM_OVERLAY_BIN=target/release/overlay-router \
//!   cargo test --release --test overlay_bench -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use netsim::kernel::tc::{self, Tbf};
use netsim::lab::Lab;
use netsim::measure::pair;
use netsim::measure::perf::{PerfOptions, Test};
use netsim::overlay_run::OverlayOptions;

const TOPOLOGY: &str = "topologies/two-host.toml";
/// Native/sleeve pairs measured per row.
const ROUNDS: usize = 3;

async fn shape(lab: &Lab, host: &str, rate_bits: Option<u64>) {
    node(lab, host)
        .run(move || async move {
            let (conn, handle, _) = rtnetlink::new_connection().unwrap();
            tokio::spawn(conn);
            let name = std::ffi::CString::new("eth0").unwrap();
            // SAFETY: if_nametoindex reads a NUL-terminated name.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert!(index > 0);
            match rate_bits {
                Some(bits) => tc::replace_tbf(
                    &handle,
                    index,
                    &Tbf {
                        rate_bytes_per_sec: bits / 8,
                        burst_bytes: 256 * 1024,
                        latency: Duration::from_millis(20),
                    },
                )
                .await
                .unwrap(),
                None => tc::delete_root_qdisc(&handle, index).await.unwrap(),
            }
        })
        .await
        .unwrap();
}

async fn measure(lab: &Lab, server: &str, addr: Ipv4Addr, client: &str) -> (f64, f64) {
    let s = node(lab, server);
    let c = node(lab, client);
    let mut bw = PerfOptions::for_test(Test::TcpBw);
    bw.duration = Duration::from_secs(3);
    let (r, _) = pair::run(&s, addr, &c, Test::TcpBw, bw).await.unwrap();
    let mbit = r.bytes_per_sec.unwrap_or(0.0) * 8.0 / 1e6;
    let lat = PerfOptions::for_test(Test::UdpLat);
    let (r, _) = pair::run(&s, addr, &c, Test::UdpLat, lat).await.unwrap();
    (mbit, r.latency_us.unwrap_or(0.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run with --ignored --nocapture and a release router"]
async fn sleeve_vs_native() {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| shaping | path | tcp_bw Mbit/s | % of native, median (range) of {ROUNDS} | udp_lat us |\n|---|---|---|---|---|"
    );
    for (label, password) in [("sleeve", None), ("sleeve encrypted", Some("bench secret"))] {
        let id = unique("ovl-bench");
        let lab = up(TOPOLOGY, &id).await;
        let o = overlay(
            &lab,
            OverlayOptions {
                password: Some(password.map(str::to_string)),
                router_args: vec!["--fast-path".into(), "off".into()],
                ..OverlayOptions::default()
            },
        )
        .await;
        let c2 = o.address_of("c2").unwrap();
        assert!(ping_until(&lab, "c1", c2).await);
        let h2 = Ipv4Addr::new(198, 18, 1, 2);
        for rate in [None, Some(1_000_000_000u64)] {
            if let Some(bits) = rate {
                shape(&lab, "h1", Some(bits)).await;
                shape(&lab, "h2", Some(bits)).await;
            }
            let shaping = if rate.is_some() {
                "1 Gbit/s"
            } else {
                "unshaped"
            };
            // Native and sleeve alternate, ROUNDS times: each ratio is of two runs back to
            // back, and the median ratio is reported with the range.
            let mut rows = Vec::new();
            for _ in 0..ROUNDS {
                let (nbw, nlat) = measure(&lab, "h2", h2, "h1").await;
                let (sbw, slat) = measure(&lab, "c2", c2, "c1").await;
                rows.push((nbw, nlat, sbw, slat, 100.0 * sbw / nbw.max(1.0)));
            }
            rows.sort_by(|a, b| a.4.total_cmp(&b.4));
            let (nbw, nlat, sbw, slat, ratio) = rows[rows.len() / 2];
            let (lo, hi) = (rows[0].4, rows[rows.len() - 1].4);
            if password.is_none() {
                let _ = writeln!(table, "| {shaping} | native | {nbw:.0} | 100 | {nlat:.0} |");
            }
            let _ = writeln!(
                table,
                "| {shaping} | {label} (native {nbw:.0}) | {sbw:.0} | {ratio:.0} ({lo:.0}-{hi:.0}) | {slat:.0} |"
            );
            if rate.is_some() {
                shape(&lab, "h1", None).await;
                shape(&lab, "h2", None).await;
            }
        }
        o.stop();
        lab.down().await.unwrap();
        assert!(leftovers(&id).is_empty());
    }
    println!("{table}");
}
