//! Qdiscs installed through `netsim::kernel::tc`, read back by an independent reader: iproute2's
//! `tc qdisc show`, run inside the scratch namespace. tbf and htb run in the host lane here;
//! netem needs the kernel lane.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use netsim::caps::Feature;
use netsim::kernel::tc::{self, Netem, Tbf};
use netsim::testing::{self, ScratchNs};
use rstest::rstest;

#[derive(Debug, Clone, Copy)]
enum Qdisc {
    Tbf,
    Htb,
    Netem,
}

#[rstest]
#[case::tbf(Qdisc::Tbf, Feature::Tbf, &["tbf 1: root", "rate 1Mbit", "burst 1600b", "lat 50ms"])]
#[case::htb(Qdisc::Htb, Feature::Htb, &["htb 1: root", "r2q 10", "default 0x10"])]
#[case::netem(
    Qdisc::Netem,
    Feature::Netem,
    &["netem 1: root", "limit 10000", "delay 10ms", " 1ms", "loss 5%", "duplicate 1%", "reorder 25%", "gap 3"]
)]
fn tc_reads_back_what_we_installed(
    #[case] qdisc: Qdisc,
    #[case] feature: Feature,
    #[case] expected: &[&str],
) {
    netsim::require_features!(Feature::Netns, Feature::Veth, feature);
    let a = ScratchNs::new().expect("namespace A");
    let b = ScratchNs::new().expect("namespace B");
    let (end_a, _end_b) = testing::veth_between(
        &a,
        &b,
        "tcq",
        Ipv4Addr::new(198, 18, 79, 1),
        Ipv4Addr::new(198, 18, 79, 2),
    )
    .expect("veth between A and B");
    let ifindex = end_a.ifindex;
    a.run_async(|| async move {
        let handle = testing::rtnl().expect("rtnetlink");
        match qdisc {
            Qdisc::Tbf => {
                let tbf = Tbf {
                    rate_bytes_per_sec: 125_000,
                    burst_bytes: 1600,
                    latency: Duration::from_millis(50),
                };
                tc::replace_tbf(&handle, ifindex, &tbf).await
            }
            Qdisc::Htb => tc::replace_htb_root(&handle, ifindex, 0x10).await,
            Qdisc::Netem => {
                let netem = Netem {
                    delay: Duration::from_millis(10),
                    jitter: Duration::from_millis(1),
                    loss_percent: 5.0,
                    duplicate_percent: 1.0,
                    reorder_percent: 25.0,
                    reorder_gap: 3,
                    ..Netem::default()
                };
                tc::replace_netem(&handle, ifindex, &netem).await
            }
        }
    })
    .expect("enter A")
    .expect("install the qdisc");

    let Some(shown) = a.run(|| tc_show(&end_a.name)).expect("enter A") else {
        testing::skip_because(
            "iproute2's tc is not installed (the independent reader)",
            module_path!(),
        );
        return;
    };
    for token in expected {
        assert!(
            shown.contains(token),
            "`tc qdisc show` lacks {token:?}:\n{shown}"
        );
    }

    // Deleting restores the default (no root qdisc of ours left).
    a.run_async(|| async move {
        let handle = testing::rtnl().expect("rtnetlink");
        tc::delete_root_qdisc(&handle, ifindex).await
    })
    .expect("enter A")
    .expect("delete the qdisc");
    let after = a
        .run(|| tc_show(&end_a.name))
        .expect("enter A")
        .unwrap_or_default();
    assert!(
        !after.contains(" 1: root"),
        "still installed after delete:\n{after}"
    );
}

/// `tc qdisc show dev NAME` in the calling thread's namespace (the child inherits it).
fn tc_show(dev: &str) -> Option<String> {
    let out = Command::new("tc")
        .args(["qdisc", "show", "dev", dev])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}
