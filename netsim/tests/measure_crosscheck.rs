//! The built-in `tcp_bw` agrees with Debian's iperf3 and qperf within 10%, on a rate-limited
//! link and on an unshaped one.
//!
//! How the two are compared, so that the verdict is about the probes and not about the
//! machine:
//! - Same settings: every run writes and reads 64 KiB messages (qperf's default; iperf3 is
//!   given `-l 64K`), for the same time, with the kernel's default socket buffers and Nagle's
//!   algorithm on, and every figure is what the receiver counted.
//! - Same CPU: on the unshaped link every tool is CPU-bound. Both halves of every run (built-in
//!   thread or tool process) are pinned to CPU 0: on one CPU there is no placement luck (which
//!   CPU each half lands on, whose cache the data is in), which otherwise moves a figure by up
//!   to a factor of two from one run to the next. It is also the kernel lane's situation.
//! - Rounds: one built-in run, one iperf3 run and one qperf run, strictly one at a time, in an
//!   order that turns from round to round; each tool's figure is paired with its round's
//!   built-in figure, so that no single unlucky run decides the verdict. Every round is
//!   printed, and listed in the failure message.
//! - The statistic fits the noise. Below a rate limit, noise only subtracts (no run can beat
//!   the limit; a busy machine or a slow process start loses time), so the best run of each
//!   side is compared. Unshaped, a run can be luckier or unluckier than the next, so the median
//!   of the per-round ratios is compared.

use std::time::Duration;

use netsim::lab::bench::{star, star_addr};
use netsim::lab::NodeHandle;
use netsim::measure::external::{self, QperfFigure, Tool};
use netsim::measure::pair;
use netsim::measure::perf::{CpuPin, PerfOptions, Test};
use netsim::testing;
use netsim::{Lab, UpOptions};

/// Every run writes and reads 64 KiB at a time: qperf's and the built-in's default, given to
/// iperf3 with `-l` (its own default is 128 KiB).
const MESSAGE: usize = 64 * 1024;

/// The two tests measure one after the other: run side by side, each would be the other's
/// noise.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How one cross-check runs.
#[derive(Clone, Copy)]
struct Plan {
    rounds: usize,
    duration: Duration,
    cpus: Option<CpuPin>,
    statistic: Statistic,
}

/// What is compared.
#[derive(Clone, Copy, Debug)]
enum Statistic {
    /// The best built-in figure over the best of the tool's.
    Best,
    /// The median of the per-round ratios.
    MedianRatio,
}

impl Statistic {
    /// The built-in / tool ratio over `rounds`.
    fn ratio(self, rounds: &[Round]) -> f64 {
        match self {
            Statistic::Best => {
                let best = |f: fn(&Round) -> f64| rounds.iter().map(f).fold(0.0, f64::max);
                best(|r| r.builtin) / best(|r| r.tool)
            }
            Statistic::MedianRatio => median(rounds.iter().map(Round::ratio).collect()),
        }
    }

    /// The built-in's figure over `rounds` (for the comparison with a configured limit).
    fn builtin(self, rounds: &[Round]) -> f64 {
        let figures = rounds.iter().map(|r| r.builtin);
        match self {
            Statistic::Best => figures.fold(0.0, f64::max),
            Statistic::MedianRatio => median(figures.collect()),
        }
    }
}

impl Plan {
    fn opts(&self, msg_size: usize) -> PerfOptions {
        PerfOptions {
            duration: self.duration,
            msg_size,
            cpus: self.cpus,
            ..PerfOptions::for_test(Test::TcpBw)
        }
    }
}

/// The built-in `tcp_bw` with `opts`.
async fn builtin_tcp_bw(server: &NodeHandle, client: &NodeHandle, opts: PerfOptions) -> f64 {
    let (result, _) = pair::run(server, star_addr(2), client, Test::TcpBw, opts)
        .await
        .expect("built-in tcp_bw runs");
    assert_eq!(result.partial, None);
    result.bytes_per_sec.expect("a bandwidth figure")
}

async fn tool_tcp_bw(
    tool: Tool,
    server: &NodeHandle,
    client: &NodeHandle,
    opts: PerfOptions,
) -> f64 {
    match tool {
        Tool::Iperf3 => external::iperf3_tcp_bw(server, star_addr(2), client, &opts)
            .await
            .expect("iperf3 runs"),
        Tool::Qperf => match external::qperf(server, star_addr(2), client, Test::TcpBw, &opts)
            .await
            .expect("qperf runs")
        {
            QperfFigure::Bandwidth(bw) => bw,
            other => panic!("qperf gave {other:?} for tcp_bw"),
        },
    }
}

/// One round's pair of figures, in bytes per second.
#[derive(Debug, Clone, Copy)]
struct Round {
    builtin: f64,
    tool: f64,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.builtin / self.tool
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The per-round ratios' minimum, 10th percentile, median, 90th percentile and maximum.
fn spread(rounds: &[Round]) -> String {
    let mut ratios: Vec<f64> = rounds.iter().map(Round::ratio).collect();
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    match ratios.len() {
        0 => "-".to_string(),
        _ => format!(
            "min/p10/p50/p90/max {:.2}/{:.2}/{:.2}/{:.2}/{:.2}",
            at(0.0),
            at(0.1),
            at(0.5),
            at(0.9),
            at(1.0)
        ),
    }
}

fn describe(rounds: &[Round]) -> String {
    rounds
        .iter()
        .map(|r| {
            format!(
                "{:.1}/{:.1} MB/s = {:.3}",
                r.builtin / 1e6,
                r.tool / 1e6,
                r.ratio()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One run of each kind per round, in an order that turns from round to round (every one of
/// the six orders in turn), so that a drift of the machine over the rounds and the position in
/// a round favour no side: (vs iperf3, vs qperf), each pairing a round's built-in figure with
/// the tool's.
async fn measure(plan: Plan, server: &NodeHandle, client: &NodeHandle) -> (Vec<Round>, Vec<Round>) {
    const ORDERS: [[Option<Tool>; 3]; 6] = {
        let (b, i, q) = (None, Some(Tool::Iperf3), Some(Tool::Qperf));
        [
            [b, i, q],
            [i, q, b],
            [q, b, i],
            [b, q, i],
            [q, i, b],
            [i, b, q],
        ]
    };
    let mut iperf3 = Vec::new();
    let mut qperf = Vec::new();
    for round in 0..plan.rounds {
        let opts = plan.opts(MESSAGE);
        let (mut builtin, mut by_iperf3, mut by_qperf) = (0.0, 0.0, 0.0);
        for run in ORDERS[round % ORDERS.len()] {
            match run {
                None => builtin = builtin_tcp_bw(server, client, opts).await,
                Some(tool) => {
                    let figure = tool_tcp_bw(tool, server, client, opts).await;
                    match tool {
                        Tool::Iperf3 => by_iperf3 = figure,
                        Tool::Qperf => by_qperf = figure,
                    }
                }
            }
        }
        iperf3.push(Round {
            builtin,
            tool: by_iperf3,
        });
        qperf.push(Round {
            builtin,
            tool: by_qperf,
        });
    }
    (iperf3, qperf)
}

/// Whether `ratio` (built-in / tool) is within `share` of agreement: the smaller figure is at
/// most `share` below the larger.
fn agrees(ratio: f64, share: f64) -> bool {
    ratio >= 1.0 - share && 1.0 / ratio >= 1.0 - share
}

/// Measures and asserts agreement within 10% (and with `limit`, in bytes per second, if given).
async fn compare(
    what: &str,
    plan: Plan,
    server: &NodeHandle,
    client: &NodeHandle,
    limit: Option<f64>,
) {
    let (iperf3, qperf) = measure(plan, server, client).await;
    let mut failures = Vec::new();
    for (tool, rounds) in [("iperf3", &iperf3), ("qperf", &qperf)] {
        let ratio = plan.statistic.ratio(rounds);
        let line = format!(
            "{what}: built-in/{tool} ratio {ratio:.3} ({:?}) over {} rounds, per round {} \
             (built-in/{tool}): {}",
            plan.statistic,
            rounds.len(),
            spread(rounds),
            describe(rounds)
        );
        eprintln!("{line}");
        if !agrees(ratio, 0.10) {
            failures.push(line);
        }
    }
    if let Some(limit) = limit {
        let all: Vec<Round> = iperf3.iter().chain(&qperf).copied().collect();
        let ours = plan.statistic.builtin(&all);
        if !agrees(ours / limit, 0.10) {
            failures.push(format!(
                "{what}: built-in {ours:.0} B/s ({:?}) vs the {limit:.0} B/s limit",
                plan.statistic
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "not within 10%:\n{}",
        failures.join("\n")
    );
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
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(lab) = lab_with_tools("r").await else {
        return;
    };
    let (client, server) = (lab.node("h1").expect("h1"), lab.node("h2").expect("h2"));
    // A limit on the client's egress: all three must see it, and agree. Far below what one CPU
    // can push, so no pinning is needed. In the kernel lane the limit is 50 Mbit/s: on the
    // guest's one slow CPU, iperf3's receiver falls behind at 200 Mbit/s (its per-interval
    // counts stall, then catch up) and stops counting when the sender says the time is up,
    // with megabytes still unread in its socket. Measured there, it counted 0.86-0.92 of
    // what the link carried at 200 Mbit/s, 0.85-1.00 at 100 Mbit/s and 1.00 at 50 Mbit/s
    // (docs/benchmarks.md).
    let (rate, what) = if testing::in_kernel_lane() {
        (6_250_000u64, "50 Mbit/s")
    } else {
        (25_000_000u64, "200 Mbit/s")
    };
    shape_egress(&client, rate).await;
    let plan = Plan {
        rounds: 3,
        duration: Duration::from_secs(2),
        cpus: None,
        statistic: Statistic::Best,
    };
    compare(what, plan, &server, &client, Some(rate as f64)).await;
    lab.down().await.expect("down");
}

/// On an unshaped veth every run is CPU-bound, and on this kind of shared machine one run of
/// the same tool differs from the next by up to 15% either way (docs/benchmarks.md): the
/// verdict is the median over many short paired rounds. With nine rounds the median still
/// moved between 0.88 and 1.10 over ten runs of the test; with 49 it moved by under 0.03
/// (vs iperf3 0.957 to 0.959, vs qperf 0.961 to 0.984 in three runs). About 2.5 minutes.
#[tokio::test(flavor = "multi_thread")]
async fn builtin_tcp_bw_agrees_with_iperf3_and_qperf_unshaped() {
    if testing::in_kernel_lane() {
        // Measured (docs/benchmarks.md): in User-Mode Linux every clock read and select() is a
        // trap into the guest kernel, and iperf3 makes both per message, so it runs at a third
        // to a half of the built-in's and qperf's rate there; and one run differs from the
        // next by up to a factor of two. Neither is about the built-in probe.
        // ci/kernel-lane-test leaves it out by name; run there by hand, it fails rather than
        // pass without measuring.
        panic!(
            "{} measures the host: unshaped figures in a User-Mode-Linux guest measure each \
             tool's system-call count, not the link (see docs/benchmarks.md); run it in the \
             host lane",
            testing::current_test_name(module_path!())
        );
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(lab) = lab_with_tools("u").await else {
        return;
    };
    let (client, server) = (lab.node("h1").expect("h1"), lab.node("h2").expect("h2"));
    let plan = Plan {
        rounds: 45,
        duration: Duration::from_secs(1),
        cpus: Some(CpuPin {
            client: 0,
            server: 0,
        }),
        statistic: Statistic::MedianRatio,
    };
    compare("unshaped", plan, &server, &client, None).await;
    lab.down().await.expect("down");
}
