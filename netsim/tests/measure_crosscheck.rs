//! The built-in probes agree with Debian's iperf3 and qperf within 10%, on an unshaped link
//! and on a rate-limited one.
//!
//! One test per binary run, measurements strictly one after another: throughput figures taken
//! while other tests load the machine would compare noise. Each side is measured three
//! times, alternating, and the best of each is compared, which keeps a single unlucky scheduling slice
//! from deciding the verdict.

use std::time::Duration;

use netsim::lab::bench::{star, star_addr};
use netsim::lab::NodeHandle;
use netsim::measure::external::{self, QperfFigure, Tool};
use netsim::measure::pair;
use netsim::measure::perf::{PerfOptions, Test};
use netsim::testing;
use netsim::{Lab, UpOptions};

const DURATION: Duration = Duration::from_secs(2);

async fn builtin_tcp_bw(server: &NodeHandle, client: &NodeHandle) -> f64 {
    let opts = PerfOptions {
        duration: DURATION,
        ..PerfOptions::for_test(Test::TcpBw)
    };
    let (result, _) = pair::run(server, star_addr(2), client, Test::TcpBw, opts)
        .await
        .expect("built-in tcp_bw runs");
    assert_eq!(result.partial, None);
    result.bytes_per_sec.expect("a bandwidth figure")
}

async fn iperf3_tcp_bw(server: &NodeHandle, client: &NodeHandle) -> f64 {
    external::iperf3_tcp_bw(server, star_addr(2), client, DURATION)
        .await
        .expect("iperf3 runs")
}

async fn qperf_tcp_bw(server: &NodeHandle, client: &NodeHandle) -> f64 {
    match external::qperf(server, star_addr(2), client, Test::TcpBw, DURATION)
        .await
        .expect("qperf runs")
    {
        QperfFigure::Bandwidth(bw) => bw,
        other => panic!("qperf gave {other:?} for tcp_bw"),
    }
}

/// Best of three alternating runs of each: (built-in, iperf3, qperf).
async fn side_by_side(server: &NodeHandle, client: &NodeHandle) -> (f64, f64, f64) {
    let mut best = (0.0f64, 0.0f64, 0.0f64);
    for _ in 0..3 {
        best.0 = best.0.max(builtin_tcp_bw(server, client).await);
        best.1 = best.1.max(iperf3_tcp_bw(server, client).await);
        best.2 = best.2.max(qperf_tcp_bw(server, client).await);
    }
    best
}

fn within(a: f64, b: f64, share: f64) -> bool {
    (a - b).abs() <= share * a.max(b)
}

async fn shape_egress(node: &NodeHandle, rate_bytes_per_sec: u64) {
    node.run(move || async move {
        let handle = testing::rtnl()?;
        let index = testing::link_index(&handle, "eth0").await?;
        let tbf = netsim::kernel::tc::Tbf {
            rate_bytes_per_sec,
            burst_bytes: 64 * 1024,
            latency: Duration::from_millis(50),
        };
        netsim::kernel::tc::replace_tbf(&handle, index, &tbf)
            .await
            .map_err(std::io::Error::other)
    })
    .await
    .expect("runs in the node")
    .expect("tbf installed");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "WIP: unshaped figures vary more than 10% while the machine is loaded; see ci/test"]
async fn builtin_tcp_bw_agrees_with_iperf3_and_qperf() {
    for tool in [Tool::Iperf3, Tool::Qperf] {
        if external::available(tool).is_none() {
            testing::skip_because(
                &format!("needs {} (ci/setup installs it)", tool.program()),
                module_path!(),
            );
            return;
        }
    }
    let lab = Lab::up(
        star("xcheck", 2, 1500),
        UpOptions {
            name: Some(format!("xc-{}", std::process::id() % 100_000)),
            ..UpOptions::default()
        },
    )
    .await
    .expect("lab up");
    let (client, server) = (lab.node("h1").expect("h1"), lab.node("h2").expect("h2"));

    let (ours, iperf3, qperf) = side_by_side(&server, &client).await;
    eprintln!(
        "unshaped: built-in {:.0} MB/s, iperf3 {:.0} MB/s, qperf {:.0} MB/s",
        ours / 1e6,
        iperf3 / 1e6,
        qperf / 1e6
    );
    assert!(
        within(ours, iperf3, 0.10),
        "unshaped: built-in {ours:.0} vs iperf3 {iperf3:.0} B/s"
    );
    assert!(
        within(ours, qperf, 0.10),
        "unshaped: built-in {ours:.0} vs qperf {qperf:.0} B/s"
    );

    // 200 Mbit/s on the client's egress: all three must see the limit.
    let rate = 25_000_000u64;
    shape_egress(&client, rate).await;
    let (ours, iperf3, qperf) = side_by_side(&server, &client).await;
    eprintln!(
        "200 Mbit/s: built-in {:.1} MB/s, iperf3 {:.1} MB/s, qperf {:.1} MB/s",
        ours / 1e6,
        iperf3 / 1e6,
        qperf / 1e6
    );
    assert!(
        within(ours, iperf3, 0.10),
        "shaped: built-in {ours:.0} vs iperf3 {iperf3:.0} B/s"
    );
    assert!(
        within(ours, qperf, 0.10),
        "shaped: built-in {ours:.0} vs qperf {qperf:.0} B/s"
    );
    assert!(
        within(ours, rate as f64, 0.10),
        "shaped: built-in {ours:.0} vs the {rate} B/s limit"
    );
    lab.down().await.expect("down");
}
