//! Field bug reports replayed: every topology in fixtures/ is brought up (with its overlay, if
//! it has one), its `[[expect]]` assertions must all pass, and the MTU reports also check the
//! MTU the routers chose. See fixtures/README.md for the report behind each file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use netsim::overlay_run::OverlayOptions;
use netsim::verify::{self, Verdict};
use rstest::rstest;

/// Brings the fixture up, runs its expectations, and returns each host router's overlay MTU.
async fn replay(file: &str) -> Vec<u64> {
    let lab = up(file, &unique("fx")).await;
    let overlay = if lab.plan().overlay.is_some() {
        Some(overlay(&lab, OverlayOptions::default()).await)
    } else {
        None
    };
    let report = verify::check(&lab).await;
    let failed: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .collect();
    assert!(failed.is_empty(), "{file}:\n{}", report.render());
    assert!(!report.checks.is_empty(), "{file} asserts nothing");
    let mut mtus = Vec::new();
    if let Some(o) = &overlay {
        for node in &lab.plan().nodes {
            if matches!(node.kind, netsim::model::plan::NodeKind::Host) {
                let status = o.status(&node.name).await.expect("router status");
                mtus.push(status["mtu"].as_u64().expect("an MTU in the status"));
            }
        }
    }
    if let Some(o) = overlay {
        o.stop();
    }
    lab.down().await.expect("down");
    mtus
}

#[rstest]
#[case::weave_111("fixtures/weave-111-encryption.toml")]
#[case::containerlab_1398("fixtures/containerlab-1398-impaired-link.toml")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn field_report_holds(#[case] file: &str) {
    replay(file).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weave_2634_overlay_mtu_adapts_to_a_small_underlay() {
    let mtus = replay("fixtures/weave-2634-small-underlay-mtu.toml").await;
    assert!(!mtus.is_empty());
    for mtu in mtus {
        assert!(
            (1300..1400).contains(&mtu),
            "overlay MTU {mtu} must fit a 1400-byte underlay"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weave_1853_jumbo_underlay_gives_a_jumbo_overlay_mtu() {
    let mtus = replay("fixtures/weave-1853-jumbo-underlay.toml").await;
    assert!(!mtus.is_empty());
    for mtu in mtus {
        assert!(
            (8900..9000).contains(&mtu),
            "overlay MTU {mtu} should be near 8950 on a 9000-byte underlay"
        );
    }
}

#[test]
fn every_fixture_is_replayed_here() {
    let here = include_str!("fixtures.rs");
    let dir = root().join("fixtures");
    for entry in std::fs::read_dir(&dir).expect("fixtures/") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".toml") {
            assert!(
                here.contains(&format!("fixtures/{name}")),
                "fixtures/{name} is not replayed by tests/fixtures.rs"
            );
        }
    }
}
