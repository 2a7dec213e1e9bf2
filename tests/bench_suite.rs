//! `netsim bench --suite` end to end: a small suite run through the library on this kernel,
//! its tables, plots and a comparison of the run with itself.
//!
//! What it proves: every datapath is measured (or, for the Open vSwitch datapath on a kernel
//! without openvswitch, is a row that says why), native, the raw vxlans and the fast path
//! round by round beside each other; the overlay's default datapath is carried by
//! a kernel tier; a cloud profile with delay (the emulated backend's delay line on this host,
//! netem in the kernel lane) carries kernel vxlan at the link's rate (it once crossed at a few
//! KB/s: the delay line dropped tunnelled GSO frames).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use netsim::caps::Feature;
use netsim::suite::spec::Datapath;
use netsim::suite::{compare, plot, report, run, spec};

const SUITE: &str = r#"
[suite]
name = "ci"
duration = "500ms"
repeats = 2
datapaths = ["native", "vxlan", "vxlan-bridge", "fast", "odp", "sleeve", "sleeve-encrypted"]

[[profile]]
name = "veth"

[[profile]]
name = "azure-a2"
link = "azure-a2"

[[test]]
kind = "tcp_bw"

[[test]]
kind = "tcp_lat"
duration = "300ms"

[[matrix]]
profile = "azure-a2"
clients = [1, 2]
datapaths = ["native", "fast"]
"#;

struct Quiet;

impl run::Progress for Quiet {
    fn begin(&self, _: &str, _: usize) {}
    fn step(&self) {}
    fn end(&self, line: &str) {
        eprintln!("{line}");
    }
    fn note(&self, line: &str) {
        eprintln!("{line}");
    }
    fn skip(&self, _: usize) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suite_measures_every_datapath_and_reads_against_native() {
    let suite = spec::parse(SUITE, Path::new("ci.toml")).expect("suite");
    let opts = run::RunOptions {
        overlay_binary: Some(common::router_binary()),
        start_timeout: None,
    };
    let results = run::run(&suite, Path::new("ci.toml"), &opts, &Quiet)
        .await
        .expect("suite run");
    println!("{}", report::markdown(&results));

    let has_ovs = netsim::caps::probe().has(Feature::Openvswitch);
    // 2 profiles x 7 datapaths x 2 tests.
    assert_eq!(results.rows.len(), 28);
    for row in &results.rows {
        if row.datapath == Datapath::Odp && !has_ovs {
            let why = row.unavailable.as_deref().unwrap_or("");
            assert!(why.contains("openvswitch"), "{row:?}");
            continue;
        }
        assert!(row.unavailable.is_none(), "{row:?}");
        assert_eq!(row.figures.samples.len(), 2, "{row:?}");
        // Native, both raw vxlans and the fast path were measured round by round.
        assert_eq!(row.rounds, row.datapath.shares_rounds(), "{row:?}");
        assert!(row.figures.samples.iter().all(|&v| v > 0.0), "{row:?}");
        if row.datapath == Datapath::Fast {
            let want = if has_ovs { "odp" } else { "vxlan" };
            assert_eq!(row.carried_by.as_deref(), Some(want), "{row:?}");
        }
    }
    // On the rate-limited link every datapath fills most of the link: the link is the
    // bottleneck, not the encapsulation (vxlan adds 50 bytes to each 1500).
    for dp in [
        Datapath::Vxlan,
        Datapath::VxlanBridge,
        Datapath::Fast,
        Datapath::Sleeve,
    ] {
        let share = report::share_of_native(&results, "azure-a2", 1500, dp).expect("share");
        assert!(share > 0.8, "{dp} keeps {share:.2} of native on azure-a2");
    }
    // One server, two clients: each gets about half.
    assert_eq!(results.matrices.len(), 4);
    for m in &results.matrices {
        assert!(m.unavailable.is_none(), "{m:?}");
        let (agg, per) = (
            m.aggregate.median().unwrap(),
            m.per_client.median().unwrap(),
        );
        assert!((per * m.clients as f64 - agg).abs() < agg * 0.01, "{m:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    let files = plot::write_all(&results, dir.path()).expect("plots");
    assert_eq!(files.len(), 8, "{files:?}");

    // A run compared with itself has no regressions; halving one figure makes one.
    let same = compare::compare(&results, &results, 0.05);
    assert!(same
        .iter()
        .all(|c| c.verdict != compare::Verdict::Regression));
    let mut worse = results.clone();
    let row = worse
        .rows
        .iter_mut()
        .find(|r| r.datapath == Datapath::Native && r.test == "tcp_bw")
        .unwrap();
    for v in &mut row.figures.samples {
        *v /= 2.0;
    }
    let changes = compare::compare(&results, &worse, 0.05);
    let regressed: Vec<_> = changes
        .iter()
        .filter(|c| c.verdict == compare::Verdict::Regression)
        .collect();
    assert_eq!(regressed.len(), 1, "{changes:?}");
}
