//! Bring-up/teardown benchmark, run by hand (it takes a while and prints figures):
//! `cargo test --release -p netsim --test lab_bench -- --ignored --nocapture`

use netsim::lab::bench::{self, Shape};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run by hand in release mode"]
async fn bench_star_and_line() {
    std::env::set_var(netsim::lab::state::RUN_DIR_ENV, "/run/netsim-tests-bench");
    let sizes: Vec<usize> = std::env::var("NETSIM_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 500]);
    for shape in [Shape::Star, Shape::Line] {
        for &hosts in &sizes {
            let r = bench::run(shape, hosts).await.expect("bench");
            println!(
                "{:<5} hosts={:<4} nodes={:<4} links={:<4} up={:>7.3}s ({:>7.1} hosts/s) down={:>7.3}s ({:>7.1} hosts/s) peak_rss={} KiB",
                r.shape.to_string(), r.hosts, r.nodes, r.links, r.up_secs, r.up_hosts_per_sec,
                r.down_secs, r.down_hosts_per_sec, r.peak_rss_kib
            );
            assert_eq!(r.hosts, hosts);
            assert!(r.up_secs > 0.0 && r.down_secs > 0.0);
        }
    }
    // Only this test uses this run directory: the last lab to go down removed it.
    assert!(
        !std::path::Path::new("/run/netsim-tests-bench").exists(),
        "the run directory was left behind"
    );
}
