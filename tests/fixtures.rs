//! Field bug reports replayed: every fixtures/field/<name>/topology.toml runs through the same
//! library runner as `netsim test` (up, `[[expect]]`, `[[step]]`s, report, down) and must pass;
//! its report is a snapshot. Three of them also run with a router option that breaks what they
//! guard, and must go red naming the step, what was expected and seen, and where to look. See
//! fixtures/README.md for the report behind each.
//!
//! Fixtures run one at a time: their perf envelopes compare against native figures taken in
//! the same run, and two labs measuring at once on a small machine would skew both.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::*;
use netsim::overlay_run::OverlayOptions;
use netsim::scenario::{self, Report, RunOptions};
use rstest::rstest;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn fixture(name: &str) -> PathBuf {
    root()
        .join("fixtures/field")
        .join(name)
        .join("topology.toml")
}

/// Runs `file` (its plan changed by `edit`) with extra router arguments.
async fn replay_with(
    file: PathBuf,
    router_args: &[&str],
    edit: impl FnOnce(&mut netsim::Plan),
) -> Report {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut plan = netsim::model::load_plan(&file).unwrap_or_else(|d| panic!("{d}"));
    edit(&mut plan);
    let opts = RunOptions {
        overlay: OverlayOptions {
            binary: plan.overlay.is_some().then(router_binary),
            router_args: router_args.iter().map(|a| a.to_string()).collect(),
            ..OverlayOptions::default()
        },
        ..RunOptions::default()
    };
    let report = scenario::run(plan, &file, &opts).await;
    assert!(
        report.lab.is_empty() || leftovers(&report.lab).is_empty(),
        "lab {} left namespaces behind",
        report.lab
    );
    report
}

async fn replay(name: &str, router_args: &[&str]) -> Report {
    replay_with(fixture(name), router_args, |_| {}).await
}

/// The report as a snapshot holds it: the lab id and the shaping backend (netem in the kernel
/// lane, emulated on the host) are the only parts that differ from run to run or lane to lane.
fn stable(report: &Report) -> String {
    let text = report.render();
    let text = if report.lab.is_empty() {
        text
    } else {
        text.replace(&report.lab, "LAB")
    };
    let text = text
        .replace("the netem backend", "the BACKEND backend")
        .replace("the emulated backend", "the BACKEND backend");
    // `datapath = "fast"` passes on whichever kernel tier the lane has (odp where the
    // openvswitch module is, vxlan where not): the report names it, the snapshot does not.
    text.lines()
        .map(|l| match l.rsplit_once(": ") {
            Some((head, "odp" | "vxlan")) if head.contains(" on fast within ") => {
                format!("{head}: KERNEL_TIER")
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + if text.ends_with('\n') { "\n" } else { "" }
}

#[rstest]
#[case::weave_1853("weave-1853-jumbo-underlay")]
#[case::weave_2634("weave-2634-small-underlay-mtu")]
#[case::weave_111("weave-111-encryption")]
#[case::containerlab_1398("containerlab-1398-impaired-link")]
#[case::weave_000("weave-000-firewall-blocks-fast-path")]
#[case::weave_1737("weave-1737-stuck-on-sleeve")]
#[case::weave_1599("weave-1599-no-openvswitch")]
#[case::azure_d2("azure-d2-sleeve-fast-native")]
#[case::seed_003("seed-003-one-server-many-clients")]
#[case::mininet_1139("mininet-1139-link-down-up-keeps-shape")]
#[case::containerlab_2600("containerlab-2600-runtime-impairment")]
#[case::mininet_1174("mininet-1174-router-restart-after-crash")]
#[case::pmtu_black_hole("pmtu-black-hole")]
#[case::weave_105("weave-105-udp-over-700-dropped")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn field_report_holds(#[case] name: &str) {
    netsim::require_features!(netsim::caps::Feature::Netns);
    // A fixture that needs a kernel feature (`[lab] needs`) is a skip where it is missing, as
    // every test that needs one is: it runs in the kernel lane.
    let plan = netsim::model::load_plan(&fixture(name)).unwrap_or_else(|d| panic!("{d}"));
    let needs: Vec<_> = netsim::caps::Feature::ALL
        .into_iter()
        .filter(|f| plan.needs.iter().any(|n| n == f.name()))
        .collect();
    if netsim::testing::skip_unless(&needs, module_path!()) {
        return;
    }
    let filters = plan.steps.iter().any(|s| {
        matches!(
            &s.action,
            netsim::model::step::StepAction::Impair {
                fault: netsim::model::step::ImpairPlan::Drop { .. }
            }
        )
    });
    let report = replay(name, &[]).await;
    if filters && netsim::testing::in_kernel_lane() {
        // The guest's nftables has neither the netdev nor the inet family, and tc cannot match
        // these packets: the fault step fails, saying so and where to run it instead.
        let text = report.render();
        assert!(!report.passed(), "{text}");
        assert!(
            text.contains("needs nftables with the netdev or inet family"),
            "{text}"
        );
        return;
    }
    assert!(report.passed(), "{}", report.render());
    insta::assert_snapshot!(format!("field-{name}"), stable(&report));
}

/// The failed checks of a report, each with its step.
fn failures(report: &Report) -> Vec<String> {
    report
        .checks()
        .filter(|(_, c)| c.verdict == netsim::verify::Verdict::Fail)
        .map(|(s, c)| {
            format!(
                "step {:?}: {}\n{}",
                s.name,
                c.what,
                scenario::report::failure_lines(c).join("\n")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weave_1737_goes_red_when_the_router_never_recovers() {
    netsim::require_features!(netsim::caps::Feature::Netns, netsim::caps::Feature::Vxlan);
    let report = replay("weave-1737-stuck-on-sleeve", &["--recover-ms", "600000"]).await;
    let failed = failures(&report);
    let text = failed.join("\n\n");
    assert!(!report.passed(), "{}", report.render());
    assert!(
        text.contains("step \"back on the fast path\": datapath h1 -> h2 on fast within 60s")
            && text.contains("expected: fast")
            && text.contains("seen:     sleeve (")
            && text.contains("connection h1 -> h2")
            && text.contains("router log ")
            && text.contains("h1.log"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weave_000_goes_red_when_the_router_never_falls_back() {
    netsim::require_features!(
        netsim::caps::Feature::Netns,
        netsim::caps::Feature::Vxlan,
        netsim::caps::Feature::Nftables
    );
    let report = replay(
        "weave-000-firewall-blocks-fast-path",
        &["--fallback-ms", "600000"],
    )
    .await;
    let text = failures(&report).join("\n\n");
    assert!(
        text.contains("step \"firewall drops UDP 6784 on h2\": datapath h1 -> h2 on sleeve")
            && text.contains("expected: sleeve because \"unanswered\"")
            && (text.contains("seen:     vxlan (") || text.contains("seen:     odp (")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weave_1853_goes_red_with_a_fixed_small_mtu() {
    netsim::require_features!(netsim::caps::Feature::Netns);
    let report = replay_with(fixture("weave-1853-jumbo-underlay"), &[], |plan| {
        if let Some(o) = plan.overlay.as_mut() {
            o.mtu = Some(1400);
        }
    })
    .await;
    let text = failures(&report).join("\n\n");
    assert_eq!(report.failures(), 1, "{}", report.render());
    assert!(
        text.contains("mtu c1 -> c2 (overlay) = 8900..8950, above: local_limit")
            && text.contains("seen:     1400, above: local_limit")
            && text.contains("connection h1 -> h2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weave_111_goes_red_without_encryption() {
    netsim::require_features!(netsim::caps::Feature::Netns);
    let report = replay_with(fixture("weave-111-encryption"), &[], |plan| {
        if let Some(o) = plan.overlay.as_mut() {
            o.password = None;
            o.encrypted = false;
            o.host_passwords.clear();
        }
    })
    .await;
    let text = failures(&report).join("\n\n");
    assert!(!report.passed(), "{}", report.render());
    assert!(
        text.contains("no plaintext c1 -> c2 (overlay) on the underlay of h2")
            && text.contains("expected: overlay datagrams on the underlay, never the payload")
            && text.contains("seen:     the payload crossed the underlay of h2 in clear")
            && text.contains("refused h1 -> h4 within 20s")
            && text.contains("seen:     h1 holds a connection to h4 after 20s")
            && text.contains("connection h1 -> h4"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_datapath_the_overlay_does_not_have_fails_saying_so() {
    netsim::require_features!(netsim::caps::Feature::Netns);
    // The kernel tier a lane lacks: odp where the openvswitch module is missing, vxlan where
    // the router has the Open vSwitch tier (a host has one kernel tier).
    let (want, offers) = if netsim::caps::probe().has(netsim::caps::Feature::Openvswitch) {
        ("vxlan", "odp, sleeve")
    } else {
        ("odp", "vxlan, sleeve")
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tier.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[[switch]]
name = "sw1"
subnet = "198.18.77.0/24"
[[host]]
name = "h1"
switches = ["sw1"]
[[host]]
name = "h2"
switches = ["sw1"]
[overlay]
range = "198.19.0.0/16"
[[expect]]
kind = "datapath"
from = "h1"
to = "h2"
datapath = "{want}"
"#
        ),
    )
    .unwrap();
    let report = replay_with(file, &[], |_| {}).await;
    let text = failures(&report).join("\n\n");
    assert!(
        text.contains(&format!(
            "the overlay router has no {want} datapath (it offers: {offers})"
        )),
        "{text}"
    );
}

#[test]
fn every_fixture_is_replayed_and_documented() {
    let here = include_str!("fixtures.rs");
    let dir = root().join("fixtures/field");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures/field/") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        count += 1;
        assert!(
            here.contains(&format!("(\"{name}\")")),
            "fixtures/field/{name} is not replayed by tests/fixtures.rs"
        );
        for file in ["topology.toml", "README.md"] {
            assert!(
                path.join(file).is_file(),
                "fixtures/field/{name}/{file} is missing"
            );
        }
        let index = std::fs::read_to_string(root().join("fixtures/README.md")).unwrap();
        assert!(
            index.contains(&format!("[{name}](field/{name}/README.md)")),
            "fixtures/README.md does not list {name}"
        );
    }
    assert!(count >= 10, "{count} fixtures");
}
