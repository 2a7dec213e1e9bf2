//! The overlay scale benchmark (`netsim bench --overlay --hosts 10,30,100`): N hosts on one
//! switch with one container each and a router per host, all in one full mesh. For each N it
//! measures the time to bring the lab up; the time the overlay takes to converge (every router
//! ready and connected to every other, the containers attached, and the container on the
//! first host reaching the one on the last); the CPU all routers use together while idle over
//! a window right after that; the memory and threads of each router; and the time to tear
//! everything down. Across the Ns it fits how convergence time grows (the exponent of N, by
//! least squares on a log-log scale).
//!
//! Targets (issue "Overlay at scale"): 100 routers converge in under 10 s, idle under 20 % of
//! one core in total, under 20 MiB per router, convergence growing at most about as N².

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::icmp::{self, PingOptions};
use crate::kernel::process;
use crate::lab::{Lab, LabError, UpOptions};
use crate::model;
use crate::overlay_run::{Overlay, OverlayError, OverlayOptions};

/// Convergence under this many seconds at 100 routers.
pub const TARGET_CONVERGE_S_AT_100: f64 = 10.0;
/// Idle CPU of the whole mesh under this share of one core, in percent.
pub const TARGET_IDLE_CPU_PERCENT: f64 = 20.0;
/// Resident memory per router under this many MiB.
pub const TARGET_RSS_MIB: f64 = 20.0;
/// Convergence time growing at most about as N to this power.
pub const TARGET_EXPONENT: f64 = 2.0;

/// What to run.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// How long to sample idle CPU after convergence.
    pub idle_window: Duration,
    /// How the overlay runs (its start limit, extra router arguments).
    pub overlay: OverlayOptions,
}

impl Default for ScaleOptions {
    fn default() -> Self {
        ScaleOptions {
            idle_window: Duration::from_secs(10),
            overlay: OverlayOptions {
                // A large mesh on a loaded machine may need longer than the usual 60 s; the
                // figure says how long it took either way.
                start_timeout: Some(Duration::from_secs(600)),
                ..OverlayOptions::default()
            },
        }
    }
}

/// The figures for one mesh size.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    /// Hosts, routers and containers (one each per host).
    pub hosts: usize,
    /// Seconds to bring the lab (namespaces, links, addresses) up.
    pub lab_up_s: f64,
    /// Seconds from starting the routers until all were ready.
    pub ready_s: f64,
    /// Seconds from starting the routers until every container was attached (all routers
    /// connected to all others before that).
    pub connected_s: f64,
    /// Seconds from starting the routers until the first container reached the last.
    pub converge_s: f64,
    /// Seconds to stop every router and take the lab down.
    pub teardown_s: f64,
    /// CPU of all routers together over the idle window, in percent of one core.
    pub idle_cpu_percent: f64,
    /// The idle window, in seconds.
    pub idle_window_s: f64,
    /// CPU of all routers together over a second window of the same length right after the
    /// first, in percent of one core: the mesh settled (connections at their idle heartbeat
    /// pace, the control plane's last rounds done).
    pub settled_cpu_percent: f64,
    /// Mean resident memory per router, in MiB (after the idle window), shared pages (the
    /// binary's code, libraries) counted in full for each.
    pub rss_mib_mean: f64,
    /// Mean private memory per router (anonymous resident pages: heap, stacks), in MiB: what
    /// each further router costs.
    pub private_mib_mean: f64,
    /// The largest router's private memory, in MiB.
    pub private_mib_max: f64,
    /// Mean threads per router.
    pub threads_mean: f64,
    /// Times a connection fell back from the fast path to sleeve, all routers together, from
    /// start to the end of the idle windows (each side of a connection counts its own; the
    /// mesh's links are healthy, so every one is a false alarm).
    pub fallbacks: u64,
}

/// A whole run: the rows and the fitted growth exponent.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// One row per mesh size.
    pub rows: Vec<ScaleRow>,
    /// Convergence time grows as N to this power (None with fewer than two sizes).
    pub converge_exponent: Option<f64>,
}

/// The benchmark's topology: `n` hosts on one switch, one container each, an overlay.
pub fn topology(n: usize) -> String {
    let mut t = format!(
        "[lab]\nname = \"scale{n}\"\n\n[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.0.0/20\"\n\n"
    );
    for i in 1..=n {
        let _ = writeln!(
            t,
            "[[host]]\nname = \"h{i}\"\nswitches = [\"sw1\"]\ncontainers = [\"c{i}\"]\n"
        );
    }
    t.push_str("[overlay]\nrange = \"198.19.0.0/16\"\nmtu = \"auto\"\n");
    t
}

fn task(lab: &str, what: impl std::fmt::Display) -> OverlayError {
    OverlayError::Lab(LabError::Task {
        lab: lab.to_string(),
        what: what.to_string(),
    })
}

/// Runs the benchmark for a mesh of `n` hosts; `say` hears progress.
pub async fn run_one(
    n: usize,
    opts: &ScaleOptions,
    say: &dyn Fn(&str),
) -> Result<ScaleRow, OverlayError> {
    if n < 2 {
        return Err(task("-", "a mesh needs at least 2 hosts"));
    }
    let name = format!("scale{n}");
    let src = topology(n);
    let plan = model::parse(&src, Path::new("<overlay scale benchmark>"))
        .and_then(|t| model::plan(&t))
        .map_err(|d| task(&name, d))?;
    let t0 = Instant::now();
    let lab = Lab::up(plan, UpOptions::default()).await?;
    let lab_up_s = t0.elapsed().as_secs_f64();
    say(&format!(
        "{n} hosts: lab up in {lab_up_s:.2} s; starting {n} routers"
    ));
    let result = measure(&lab, n, opts, say).await;
    let t1 = Instant::now();
    let (mut row, overlay) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = lab.down().await;
            return Err(e);
        }
    };
    overlay.stop();
    lab.down().await?;
    row.teardown_s = t1.elapsed().as_secs_f64();
    row.lab_up_s = lab_up_s;
    Ok(row)
}

async fn measure(
    lab: &Lab,
    n: usize,
    opts: &ScaleOptions,
    say: &dyn Fn(&str),
) -> Result<(ScaleRow, Overlay), OverlayError> {
    let t0 = Instant::now();
    let overlay = Overlay::start(lab, &opts.overlay).await?;
    let connected_s = t0.elapsed().as_secs_f64();
    let (first, last) = ("c1".to_string(), format!("c{n}"));
    let dst = overlay
        .address_of(&last)
        .ok_or_else(|| task(lab.id(), format!("{last} has no overlay address")))?;
    reach(
        lab,
        &first,
        dst,
        t0 + opts
            .overlay
            .start_timeout
            .unwrap_or(Duration::from_secs(60)),
    )
    .await?;
    let converge_s = t0.elapsed().as_secs_f64();
    say(&format!(
        "{n} hosts: converged in {converge_s:.2} s; sampling idle CPU for twice {} s",
        opts.idle_window.as_secs()
    ));
    let pids: Vec<u32> = overlay.router_pids().into_values().collect();
    let (idle_cpu_percent, window) = cpu_over(&pids, opts.idle_window).await;
    let (settled_cpu_percent, _) = cpu_over(&pids, opts.idle_window).await;
    let mems: Vec<Memory> = pids.iter().filter_map(|&p| memory(p)).collect();
    let count = mems.len().max(1) as f64;
    let fallbacks = crate::overlay_run::router_statuses(lab.id())
        .await
        .values()
        .filter_map(|s| s.as_ref().ok())
        .map(fallbacks_in)
        .sum();
    let row = ScaleRow {
        hosts: n,
        lab_up_s: 0.0,
        ready_s: overlay.ready_after().map_or(0.0, |d| d.as_secs_f64()),
        connected_s,
        converge_s,
        teardown_s: 0.0,
        idle_cpu_percent,
        idle_window_s: window,
        settled_cpu_percent,
        rss_mib_mean: mems.iter().map(|m| m.rss_mib).sum::<f64>() / count,
        private_mib_mean: mems.iter().map(|m| m.private_mib).sum::<f64>() / count,
        private_mib_max: mems.iter().map(|m| m.private_mib).fold(0.0, f64::max),
        threads_mean: mems.iter().map(|m| m.threads).sum::<f64>() / count,
        fallbacks,
    };
    Ok((row, overlay))
}

/// Fallbacks from the fast path to sleeve counted on a router's connections (its status).
pub fn fallbacks_in(status: &serde_json::Value) -> u64 {
    status["router"]["connections"]
        .as_array()
        .map_or(0, |conns| {
            conns
                .iter()
                .filter_map(|c| c["path"]["fallbacks"].as_u64())
                .sum()
        })
}

/// CPU of the processes `pids` together over `window` from now, in percent of one core, and
/// the window's length in seconds as it turned out.
async fn cpu_over(pids: &[u32], window: Duration) -> (f64, f64) {
    let before = cpu_ticks(pids);
    let w0 = Instant::now();
    tokio::time::sleep(window).await;
    let secs = w0.elapsed().as_secs_f64();
    let ticks = cpu_ticks(pids).saturating_sub(before) as f64;
    (100.0 * ticks / clock_ticks_per_sec() / secs, secs)
}

/// Pings `dst` from `from` until an answer comes, or `deadline`.
async fn reach(
    lab: &Lab,
    from: &str,
    dst: Ipv4Addr,
    deadline: Instant,
) -> Result<(), OverlayError> {
    let node = lab
        .node(from)
        .ok_or_else(|| task(lab.id(), format!("no node {from}")))?;
    let opts = PingOptions {
        count: 1,
        timeout: Duration::from_millis(200),
        ..PingOptions::default()
    };
    loop {
        let opts = opts.clone();
        let answered = node
            .run(move || async move { icmp::ping(dst, &opts) })
            .await
            .map_err(|e| task(lab.id(), e))?
            .is_ok_and(|r| r.received > 0);
        if answered {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(task(
                lab.id(),
                format!("{from} never reached {dst} over the overlay"),
            ));
        }
    }
}

/// A new network namespace made within this, or within [`QUICK_FACTOR`] times the quickest
/// probe (a slow kernel such as the User-Mode-Linux guest's is never under 50 ms), means the
/// kernel is not busy tearing down old ones.
const QUICK_NETNS: Duration = Duration::from_millis(50);
/// See [`QUICK_NETNS`].
const QUICK_FACTOR: u32 = 4;
/// Quick probes in a row that count as settled, [`PROBE_GAP`] apart.
const QUICK_PROBES: usize = 5;
/// Between two probes.
const PROBE_GAP: Duration = Duration::from_millis(300);
/// How long [`settle`] waits at most.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// Waits until the kernel has finished tearing down earlier labs, for at most
/// [`SETTLE_LIMIT`]. It frees a lab's namespaces in the background after `down` returns, a
/// second or more after 100 hosts, and meanwhile making a namespace waits for it: a 10-host
/// lab came up in 1.4 s instead of 0.1 and converged slower. The signal is that wait itself:
/// [`QUICK_PROBES`] throwaway namespaces in a row each made quickly ([`QUICK_NETNS`]; the
/// teardown starts a moment after `down`, so one quick probe is not enough). Says how long it
/// waited when it did, or that it gave up.
async fn settle(say: &dyn Fn(&str)) {
    let started = Instant::now();
    let mut probes: Vec<Duration> = Vec::new();
    while started.elapsed() < SETTLE_LIMIT {
        let Some(took) = tokio::task::spawn_blocking(netns_probe)
            .await
            .ok()
            .flatten()
        else {
            return; // cannot probe (not root?): nothing to wait for that we could see
        };
        probes.push(took);
        if settled(&probes) {
            let slowest = probes.iter().max().copied().unwrap_or_default();
            if slowest >= QUICK_NETNS {
                say(&format!(
                    "waited {:.1} s for the kernel to finish tearing down the last lab (a new \
                     namespace took up to {:.2} s meanwhile)",
                    started.elapsed().as_secs_f64(),
                    slowest.as_secs_f64()
                ));
            }
            return;
        }
        tokio::time::sleep(PROBE_GAP).await;
    }
    say(&format!(
        "the kernel still makes namespaces slowly after {} s: measuring anyway",
        SETTLE_LIMIT.as_secs()
    ));
}

/// Whether the last [`QUICK_PROBES`] of `probes` (namespace creation times, in order) were all
/// quick: within [`QUICK_NETNS`] or [`QUICK_FACTOR`] times the quickest of all.
fn settled(probes: &[Duration]) -> bool {
    let Some(quickest) = probes.iter().min() else {
        return false;
    };
    let limit = QUICK_NETNS.max(quickest.saturating_mul(QUICK_FACTOR));
    probes.len() >= QUICK_PROBES
        && probes[probes.len() - QUICK_PROBES..]
            .iter()
            .all(|&p| p < limit)
}

/// How long the kernel takes to make a network namespace: made by a thread of its own, which
/// exits with it (so no other thread ever runs in it, and it is freed at once).
fn netns_probe() -> Option<Duration> {
    std::thread::spawn(|| {
        let t = Instant::now();
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        Some(t.elapsed())
    })
    .join()
    .ok()
    .flatten()
}

/// User plus system CPU time of `pids` together, in clock ticks.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| process::cpu_ticks(p)).sum()
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf reads a constant of the running system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// A process's memory and threads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Memory {
    /// Resident, MiB.
    pub rss_mib: f64,
    /// Anonymous resident (private), MiB.
    pub private_mib: f64,
    /// Threads.
    pub threads: f64,
}

fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_memory(&status)
}

/// VmRSS and RssAnon (in MiB) and Threads from a `/proc/PID/status` text.
pub fn status_memory(status: &str) -> Option<Memory> {
    let field = |name: &str| process::status_number(status, name).map(|v| v as f64);
    Some(Memory {
        rss_mib: field("VmRSS:")? / 1024.0,
        private_mib: field("RssAnon:")? / 1024.0,
        threads: field("Threads:")?,
    })
}

/// The exponent `k` of `y ≈ c·xᵏ` fitted by least squares on `(ln x, ln y)`; `None` with
/// fewer than two distinct positive `x`.
pub fn fit_exponent(points: &[(f64, f64)]) -> Option<f64> {
    let logs: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    let n = logs.len() as f64;
    if logs.len() < 2 {
        return None;
    }
    let mx = logs.iter().map(|p| p.0).sum::<f64>() / n;
    let my = logs.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = logs.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = logs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Runs every size in `hosts` in turn.
pub async fn run(
    hosts: &[usize],
    opts: &ScaleOptions,
    say: &dyn Fn(&str),
) -> Result<ScaleReport, OverlayError> {
    let mut rows = Vec::new();
    for &n in hosts {
        settle(say).await;
        rows.push(run_one(n, opts, say).await?);
    }
    let points: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.hosts as f64, r.converge_s))
        .collect();
    Ok(ScaleReport {
        converge_exponent: fit_exponent(&points),
        rows,
    })
}

/// The report as a Markdown table, the fitted exponent and the targets met or missed.
pub fn render(report: &ScaleReport) -> String {
    let mut out = String::from(
        "Overlay scale: N hosts on one switch, one container each, a router per host in a full mesh.\n\n\
         | hosts | lab up | routers ready | all connected, attached | first reaches last | teardown | idle CPU, all routers | settled, the next window | private memory per router (mean / max) | resident, shared included | threads per router | fell back to sleeve |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &report.rows {
        let _ = writeln!(
            out,
            "| {} | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.1} % of a core over {:.0} s | {:.1} % | {:.1} / {:.1} MiB | {:.1} MiB | {:.1} | {} |",
            r.hosts,
            r.lab_up_s,
            r.ready_s,
            r.connected_s,
            r.converge_s,
            r.teardown_s,
            r.idle_cpu_percent,
            r.idle_window_s,
            r.settled_cpu_percent,
            r.private_mib_mean,
            r.private_mib_max,
            r.rss_mib_mean,
            r.threads_mean,
            r.fallbacks
        );
    }
    out.push('\n');
    match report.converge_exponent {
        Some(k) => {
            let _ = writeln!(
                out,
                "Convergence time grows as N^{k:.2} (least squares on log-log, {} sizes).",
                report.rows.len()
            );
        }
        None => out.push_str("Growth exponent: needs two sizes or more.\n"),
    }
    out.push_str("\nTargets:\n");
    for line in targets(report) {
        let _ = writeln!(out, "- {line}");
    }
    out
}

/// One line per target: met or missed, with the figure.
pub fn targets(report: &ScaleReport) -> Vec<String> {
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let mut lines = Vec::new();
    if let Some(r) = report.rows.iter().find(|r| r.hosts >= 100) {
        lines.push(format!(
            "{} routers converge in under {TARGET_CONVERGE_S_AT_100} s: {} ({:.2} s)",
            r.hosts,
            verdict(r.converge_s < TARGET_CONVERGE_S_AT_100),
            r.converge_s
        ));
    }
    if let Some(r) = report.rows.iter().max_by_key(|r| r.hosts) {
        lines.push(format!(
            "idle mesh of {} under {TARGET_IDLE_CPU_PERCENT} % of one core over the {:.0} s after convergence: {} ({:.1} %)",
            r.hosts,
            r.idle_window_s,
            verdict(r.idle_cpu_percent < TARGET_IDLE_CPU_PERCENT),
            r.idle_cpu_percent
        ));
        lines.push(format!(
            "idle mesh of {} under {TARGET_IDLE_CPU_PERCENT} % of one core once settled (the next {:.0} s): {} ({:.1} %)",
            r.hosts,
            r.idle_window_s,
            verdict(r.settled_cpu_percent < TARGET_IDLE_CPU_PERCENT),
            r.settled_cpu_percent
        ));
        lines.push(format!(
            "under {TARGET_RSS_MIB} MiB of private memory per router at {}: {} ({:.1} MiB mean, {:.1} max; {:.1} MiB resident with shared code)",
            r.hosts,
            verdict(r.private_mib_max < TARGET_RSS_MIB),
            r.private_mib_mean,
            r.private_mib_max,
            r.rss_mib_mean
        ));
    }
    if let Some(r) = report.rows.iter().max_by_key(|r| r.hosts) {
        lines.push(format!(
            "no healthy connection of the {} pushed to sleeve while the mesh came up and idled: {} ({} fallbacks)",
            r.hosts,
            verdict(r.fallbacks == 0),
            r.fallbacks
        ));
    }
    if let Some(k) = report.converge_exponent {
        lines.push(format!(
            "convergence growing at most about as N^{TARGET_EXPONENT}: {} (N^{k:.2})",
            verdict(k <= TARGET_EXPONENT + 0.2)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::process::stat_cpu_ticks;

    #[test]
    fn the_topology_plans_with_one_container_per_host() {
        let src = topology(3);
        let plan = model::parse(&src, Path::new("t.toml"))
            .and_then(|t| model::plan(&t))
            .map_err(|d| d.to_string());
        let plan = match plan {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        assert!(plan.overlay.is_some());
        assert!(plan.node("c3").is_some() && plan.node("h3").is_some());
        assert!(plan.node("h4").is_none());
    }

    #[test]
    fn exponents_fit_powers_exactly() {
        let square: Vec<(f64, f64)> = [10.0, 30.0, 100.0]
            .iter()
            .map(|&n| (n, 0.01 * n * n))
            .collect();
        let k = fit_exponent(&square).unwrap_or(0.0);
        assert!((k - 2.0).abs() < 1e-9, "{k}");
        let linear = [(10.0, 1.0), (100.0, 10.0)];
        assert!((fit_exponent(&linear).unwrap_or(0.0) - 1.0).abs() < 1e-9);
        assert_eq!(fit_exponent(&[(10.0, 1.0)]), None);
        assert_eq!(fit_exponent(&[(10.0, 1.0), (10.0, 2.0)]), None);
    }

    #[test]
    fn proc_files_read_back() {
        let stat = "4242 (overlay (x) r) S 1 4242 4242 0 -1 4194560 900 0 0 0 17 5 0 0 20 0 7 0 1";
        assert_eq!(stat_cpu_ticks(stat), Some(22));
        assert_eq!(stat_cpu_ticks("garbage"), None);
        let status =
            "Name:\toverlay-router\nVmRSS:\t   20480 kB\nRssAnon:\t    5120 kB\nThreads:\t7\n";
        let m = Memory {
            rss_mib: 20.0,
            private_mib: 5.0,
            threads: 7.0,
        };
        assert_eq!(status_memory(status), Some(m));
    }

    /// Five quick namespaces in a row, quick against 50 ms or four times the quickest seen.
    #[rstest::rstest]
    #[case::idle(&[3, 3, 4, 3, 3], true)]
    #[case::too_few(&[3, 3, 3, 3], false)]
    #[case::teardown_behind(&[13, 1606, 3, 3, 3, 3], false)]
    #[case::teardown_done(&[13, 1606, 3, 3, 3, 3, 4], true)]
    #[case::slow_kernel(&[120, 110, 130, 115, 125], true)]
    #[case::contended_throughout(&[1600, 1500, 1600, 1400, 1500, 3], false)]
    fn settled_after_quick_probes(#[case] ms: &[u64], #[case] want: bool) {
        let probes: Vec<Duration> = ms.iter().map(|&m| Duration::from_millis(m)).collect();
        assert_eq!(settled(&probes), want);
    }

    #[test]
    fn the_report_renders_with_targets() {
        let row = |hosts: usize, converge_s: f64, cpu: f64, rss: f64| ScaleRow {
            hosts,
            lab_up_s: 0.1,
            ready_s: 0.2,
            connected_s: converge_s - 0.1,
            converge_s,
            teardown_s: 0.3,
            idle_cpu_percent: cpu,
            idle_window_s: 10.0,
            settled_cpu_percent: cpu / 2.0,
            rss_mib_mean: rss + 8.0,
            private_mib_mean: rss,
            private_mib_max: rss + 1.0,
            threads_mean: 6.0,
            fallbacks: if hosts < 100 { 0 } else { 3 },
        };
        let rows = vec![row(10, 0.5, 1.0, 10.0), row(100, 12.0, 25.0, 18.0)];
        let points: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (r.hosts as f64, r.converge_s))
            .collect();
        let report = ScaleReport {
            converge_exponent: fit_exponent(&points),
            rows,
        };
        insta::assert_snapshot!(render(&report));
    }
}
