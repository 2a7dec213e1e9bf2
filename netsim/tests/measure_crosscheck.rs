//! The built-in probes agree with Debian's iperf3 and qperf within 10%: on a rate-limited link
//! (run everywhere) and on an unshaped one (a benchmark run by hand, see below).
//!
//! Measurements run strictly one after another. Each side is measured three times,
//! alternating, and the best of each is compared, which keeps a single unlucky scheduling
//! slice from deciding the verdict.

use std::time::Duration;

use netsim::lab::bench::{star, star_addr};
use netsim::lab::NodeHandle;
use netsim::measure::external::{self, QperfFigure, Tool};
use netsim::measure::pair;
use netsim::measure::perf::{PerfOptions, Test};
use netsim::testing;
use netsim::{Lab, UpOptions};

const DURATION: Duration = Duration::from_secs(2);

/// The built-in `tcp_bw` writing `msg_size`-byte messages (the peer tool's own write size).
async fn builtin_tcp_bw(server: &NodeHandle, client: &NodeHandle, msg_size: usize) -> f64 {
    let opts = PerfOptions {
        duration: DURATION,
        msg_size,
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

/// iperf3 writes 128 KiB at a time, qperf 64 KiB: each is compared with the built-in probe
/// writing the same size.
const IPERF3_WRITE: usize = 128 * 1024;
const QPERF_WRITE: usize = 64 * 1024;

/// Best of three alternating runs of each pair: ((built-in, iperf3), (built-in, qperf)).
async fn side_by_side(server: &NodeHandle, client: &NodeHandle) -> ((f64, f64), (f64, f64)) {
    let mut best = ((0.0f64, 0.0f64), (0.0f64, 0.0f64));
    for _ in 0..3 {
        best.0 .0 = best
            .0
             .0
            .max(builtin_tcp_bw(server, client, IPERF3_WRITE).await);
        best.0 .1 = best.0 .1.max(iperf3_tcp_bw(server, client).await);
        best.1 .0 = best
            .1
             .0
            .max(builtin_tcp_bw(server, client, QPERF_WRITE).await);
        best.1 .1 = best.1 .1.max(qperf_tcp_bw(server, client).await);
    }
    best
}

/// Measures side by side and asserts agreement within 10% (and with `limit` if given).
async fn compare(what: &str, server: &NodeHandle, client: &NodeHandle, limit: Option<f64>) {
    let ((ours, iperf3), (ours_q, qperf)) = side_by_side(server, client).await;
    eprintln!(
        "{what}: built-in {:.1} vs iperf3 {:.1} MB/s; built-in {:.1} vs qperf {:.1} MB/s",
        ours / 1e6,
        iperf3 / 1e6,
        ours_q / 1e6,
        qperf / 1e6
    );
    assert!(
        within(ours, iperf3, 0.10),
        "{what}: built-in {ours:.0} vs iperf3 {iperf3:.0} B/s"
    );
    assert!(
        within(ours_q, qperf, 0.10),
        "{what}: built-in {ours_q:.0} vs qperf {qperf:.0} B/s"
    );
    if let Some(limit) = limit {
        assert!(
            within(ours, limit, 0.10),
            "{what}: built-in {ours:.0} vs the {limit:.0} B/s limit"
        );
    }
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

/// A two-host lab for one cross-check, or `None` (with the skip reported) when a tool is missing.
async fn lab_with_tools(tag: &str) -> Option<Lab> {
    for tool in [Tool::Iperf3, Tool::Qperf] {
        if external::available(tool).is_none() {
            testing::skip_because(
                &format!("needs {} (ci/setup installs it)", tool.program()),
                module_path!(),
            );
            return None;
        }
    }
    let lab = Lab::up(
        star("xcheck", 2, 1500),
        UpOptions {
            name: Some(format!("xc{tag}-{}", std::process::id() % 100_000)),
            ..UpOptions::default()
        },
    )
    .await
    .expect("lab up");
    Some(lab)
}

#[tokio::test(flavor = "multi_thread")]
async fn builtin_tcp_bw_agrees_with_iperf3_and_qperf_on_a_rate_limited_link() {
    let Some(lab) = lab_with_tools("r").await else {
        return;
    };
    let (client, server) = (lab.node("h1").expect("h1"), lab.node("h2").expect("h2"));
    // 200 Mbit/s on the client's egress: all three must see the limit, and agree.
    let rate = 25_000_000u64;
    shape_egress(&client, rate).await;
    compare("200 Mbit/s", &server, &client, Some(rate as f64)).await;
    lab.down().await.expect("down");
}

/// On an unshaped veth every tool is CPU-bound: each measures its own efficiency and the
/// machine's scheduling noise, which on a shared 2-core box exceeds 10% from run to run. Run
/// by hand on a quiet machine; the figures are in docs/benchmarks.md.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: unshaped figures are CPU-bound; run with --ignored --nocapture on a quiet machine"]
async fn builtin_tcp_bw_agrees_with_iperf3_and_qperf_unshaped() {
    let Some(lab) = lab_with_tools("u").await else {
        return;
    };
    let (client, server) = (lab.node("h1").expect("h1"), lab.node("h2").expect("h2"));
    compare("unshaped", &server, &client, None).await;
    lab.down().await.expect("down");
}
