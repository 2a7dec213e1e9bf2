//! Checking one expectation against a running lab (and its overlay routers): reach, path MTU,
//! datapath, performance envelopes. [`crate::scenario`] runs them step by step and reports.
//!
//! What a check saw is kept twice: as stable text (`seen`: verdict material, no timings, no
//! run-time addresses) for reports and snapshots, and as figures for `--json`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::lab::{Lab, NodeHandle};
use crate::measure::icmp::{self, PingOptions};
use crate::measure::mtu::{self, Oversize};
use crate::measure::pair;
use crate::measure::perf::{PerfOptions, Test};
use crate::model::plan::{
    Above, Bound, DatapathWant, Expectation, Limit, Metric, MtuBound, NodeKind, ReachProto, Target,
};
use crate::overlay_run::Overlay;

mod secrecy;

/// Whether a check held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The assertion held.
    Pass,
    /// The assertion did not hold.
    Fail,
    /// Not checked: this machine lacks what the file needs (`[lab] needs`).
    Skip,
}

/// One checked expectation.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was asserted (stable text), e.g. `reach c1 -> c3 (overlay)`.
    pub what: String,
    /// Whether it held.
    pub verdict: Verdict,
    /// What had to be seen (stable text).
    pub expected: String,
    /// What was seen (stable text: verdict material, no raw timings).
    pub seen: String,
    /// Where to look first: the node the probe ran in, or whose router was asked.
    pub node: String,
    /// The overlay connection involved, e.g. `h1 -> h3`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The log of the router involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_log: Option<PathBuf>,
    /// Measured figures (JSON only: they vary run to run).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub figures: serde_json::Value,
}

impl Check {
    fn new(e: &Expectation, expected: impl Into<String>) -> Check {
        Check {
            what: e.describe(),
            verdict: Verdict::Fail,
            expected: expected.into(),
            seen: String::new(),
            node: e.node().to_string(),
            connection: None,
            router_log: None,
            figures: serde_json::Value::Null,
        }
    }

    fn verdict(mut self, pass: bool, seen: impl Into<String>) -> Check {
        self.verdict = if pass { Verdict::Pass } else { Verdict::Fail };
        self.seen = seen.into();
        self
    }
}

/// What a check runs against.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The lab.
    pub lab: &'a Lab,
    /// Its overlay routers, when the topology has an `[overlay]`.
    pub overlay: Option<&'a Overlay>,
}

impl Context<'_> {
    /// The host a node belongs to (a container's host, or the node itself).
    fn host_of(&self, node: &str) -> String {
        match self.lab.plan().node(node).map(|n| &n.kind) {
            Some(NodeKind::Container { host }) => host.clone(),
            _ => node.to_string(),
        }
    }

    fn node(&self, name: &str) -> Result<NodeHandle, String> {
        self.lab
            .node(name)
            .ok_or_else(|| format!("node {name} is not in the lab"))
    }

    /// The address a target resolves to now.
    async fn addr(&self, target: &Target) -> Result<Ipv4Addr, String> {
        match target {
            Target::Underlay { addr, .. } => Ok(*addr),
            Target::Overlay { container } => overlay_address(&self.node(container)?).await,
        }
    }

    /// The node that owns a target's address (where a server half runs).
    fn owner(&self, target: &Target) -> Result<NodeHandle, String> {
        match target {
            Target::Overlay { container } => self.node(container),
            Target::Underlay { to, addr } => {
                let owner = self.lab.plan().nodes.iter().find(|n| {
                    n.interfaces
                        .iter()
                        .any(|i| i.addrs.iter().any(|a| a.addr() == *addr))
                });
                match owner {
                    Some(n) => self.node(&n.name),
                    None => Err(format!(
                        "no node of the lab has {addr} ({to}): a tcp, udp or perf probe needs \
                         its server there; target a node"
                    )),
                }
            }
        }
    }

    /// Points a check at the overlay connection between the hosts of `from` and `to`.
    fn at_connection(&self, mut check: Check, from: &str, to: &str) -> Check {
        let (a, b) = (self.host_of(from), self.host_of(to));
        if a != b && self.overlay.is_some() {
            check.connection = Some(format!("{a} -> {b}"));
        }
        check.router_log = self.overlay.and_then(|o| o.log_path(&a));
        check
    }
}

/// Checks one expectation. A `stream` is started and checked by the step runner
/// ([`crate::scenario`]); asked here, it fails saying so.
pub async fn check(ctx: Context<'_>, e: &Expectation) -> Check {
    match e {
        Expectation::Reach {
            from,
            to,
            addr,
            reachable,
            proto,
            size,
            within_ms,
        } => {
            let target = Target::Underlay {
                to: to.clone(),
                addr: *addr,
            };
            let how = Probe {
                proto: *proto,
                size: *size,
            };
            reach(ctx, e, from, &target, how, *reachable, *within_ms).await
        }
        Expectation::OverlayReach {
            from,
            to,
            reachable,
            proto,
            size,
            within_ms,
        } => {
            let target = Target::Overlay {
                container: to.clone(),
            };
            let how = Probe {
                proto: *proto,
                size: *size,
            };
            let c = reach(ctx, e, from, &target, how, *reachable, *within_ms).await;
            ctx.at_connection(c, from, to)
        }
        Expectation::Mtu {
            from,
            to,
            bound,
            above,
        } => {
            let c = path_mtu(ctx, e, from, to, *bound, *above).await;
            match to {
                Target::Overlay { container } => ctx.at_connection(c, from, container),
                Target::Underlay { .. } => c,
            }
        }
        Expectation::Datapath {
            label,
            host,
            peer,
            want,
            reason,
            within_ms,
        } => {
            let mut c = datapath(ctx, e, host, peer, *want, reason.as_deref(), *within_ms).await;
            c.connection = Some(label.clone());
            c.router_log = ctx.overlay.and_then(|o| o.log_path(host));
            c
        }
        Expectation::Refused {
            label,
            host,
            peer,
            within_ms,
        } => {
            let mut c = secrecy::refused(ctx, e, host, peer, *within_ms).await;
            c.connection = Some(label.clone());
            c.router_log = ctx.overlay.and_then(|o| o.log_path(host));
            c
        }
        Expectation::NoPlaintext { from, to, host } => {
            let c = secrecy::no_plaintext(ctx, e, from, to, host).await;
            ctx.at_connection(c, from, to)
        }
        Expectation::Perf { from, to, .. } => {
            let c = perf(ctx, e).await;
            match to {
                Target::Overlay { container } => ctx.at_connection(c, from, container),
                Target::Underlay { .. } => c,
            }
        }
        Expectation::Stream { .. } => Check::new(e, "a stream that survives").verdict(
            false,
            "streams run across steps: check them with netsim::scenario",
        ),
    }
}

/// The overlay address of a container: the first IPv4 address of an interface other than
/// loopback, read inside its namespace.
pub async fn overlay_address(node: &NodeHandle) -> Result<Ipv4Addr, String> {
    let name = node.name().to_string();
    let found = node
        .run(move || async move {
            let nl =
                crate::kernel::rtnl::Netlink::open_here(&name, &tokio::runtime::Handle::current())
                    .map_err(|e| e.to_string())?;
            let addrs = nl.addrs().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(
                addrs
                    .into_iter()
                    .map(|(_, net)| net.addr())
                    .find(|a| !a.is_loopback()),
            )
        })
        .await
        .map_err(|e| e.to_string())??;
    found.ok_or_else(|| {
        format!(
            "{} has no overlay address: is the overlay running and the container attached?",
            node.name()
        )
    })
}

/// Polls `probe` until it gives `want` or `within` runs out (one try without `within`).
async fn poll<F, Fut>(within: Option<Duration>, want: bool, mut probe: F) -> (bool, String)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (bool, String)>,
{
    let deadline = Instant::now() + within.unwrap_or_default();
    loop {
        let (got, seen) = probe().await;
        if got == want || Instant::now() >= deadline {
            return (got, seen);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How a reach probe asks: the protocol, and for ICMP the echo's payload size.
#[derive(Clone, Copy)]
struct Probe {
    proto: ReachProto,
    size: Option<u32>,
}

async fn reach(
    ctx: Context<'_>,
    e: &Expectation,
    from: &str,
    target: &Target,
    probe: Probe,
    reachable: bool,
    within_ms: Option<u64>,
) -> Check {
    let how = match probe.proto {
        ReachProto::Icmp => "an echo reply",
        ReachProto::Tcp => "a TCP connection and its echo",
        ReachProto::Udp => "a UDP echo",
    };
    let expected = if reachable {
        how.to_string()
    } else {
        format!(
            "no {}",
            how.trim_start_matches("an ").trim_start_matches("a ")
        )
    };
    let check = Check::new(e, expected);
    let within = within_ms.map(Duration::from_millis);
    let (answered, seen) = poll(within, reachable, || reach_once(ctx, from, target, probe)).await;
    let seen = match (answered, reachable) {
        (true, _) => "answered".to_string(),
        (false, true) => seen,
        (false, false) => "no answer".to_string(),
    };
    check.verdict(answered == reachable, seen)
}

/// One reach probe: whether the target answered, and what was seen when it did not.
async fn reach_once(ctx: Context<'_>, from: &str, target: &Target, probe: Probe) -> (bool, String) {
    let addr = match ctx.addr(target).await {
        Ok(a) => a,
        Err(e) => return (false, e),
    };
    let client = match ctx.node(from) {
        Ok(n) => n,
        Err(e) => return (false, e),
    };
    let test = match probe.proto {
        ReachProto::Icmp => {
            let mut opts = PingOptions::default();
            if let Some(size) = probe.size {
                opts.size = size as usize;
            }
            let count = opts.count;
            return match client
                .run(move || async move { icmp::ping(addr, &opts) })
                .await
            {
                Ok(Ok(r)) if r.received > 0 => (true, String::new()),
                Ok(Ok(_)) => (false, format!("no reply to {count} echo requests")),
                Ok(Err(e)) => (false, format!("ping failed: {e}")),
                Err(e) => (false, format!("cannot run in {from}: {e}")),
            };
        }
        ReachProto::Tcp => Test::TcpLat,
        ReachProto::Udp => Test::UdpLat,
    };
    let server = match ctx.owner(target) {
        Ok(n) => n,
        Err(e) => return (false, e),
    };
    let opts = PerfOptions {
        duration: Duration::from_millis(200),
        msg_size: 64,
        io_timeout: Duration::from_secs(1),
        cpus: None,
    };
    match pair::run(&server, addr, &client, test, opts).await {
        Ok((r, _)) if r.units > 0 => (true, String::new()),
        Ok(_) => (false, "connected, but nothing came back".to_string()),
        Err(e) => (false, stable_error(&e.to_string())),
    }
}

/// An error's text without the run-time parts (ports, addresses after "at") that would make
/// reports differ from run to run.
fn stable_error(text: &str) -> String {
    text.split(" (os error")
        .next()
        .unwrap_or(text)
        .split(": ")
        .last()
        .unwrap_or(text)
        .to_string()
}

async fn path_mtu(
    ctx: Context<'_>,
    e: &Expectation,
    from: &str,
    to: &Target,
    bound: MtuBound,
    above: Option<Above>,
) -> Check {
    let expected = match above {
        Some(a) => format!("{bound}, above: {}", a.name()),
        None => bound.to_string(),
    };
    let mut check = Check::new(e, expected);
    let (addr, client) = match (ctx.addr(to).await, ctx.node(from)) {
        (Ok(a), Ok(n)) => (a, n),
        (Err(e), _) | (_, Err(e)) => return check.verdict(false, e),
    };
    let max = bound.high + 64;
    let found = client
        .run(move || async move { mtu::path_mtu(addr, max, 2) })
        .await;
    let found = match found {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return check.verdict(false, format!("no path MTU: {e}")),
        Err(e) => return check.verdict(false, format!("cannot run in {from}: {e}")),
    };
    check.figures = serde_json::to_value(found).unwrap_or_default();
    let Some(oversize) = found.oversize else {
        return check.verdict(false, format!("at least {max} (the probe's upper bound)"));
    };
    let seen_above = match above {
        Some(Above::Fragmented) => {
            let opts = PingOptions {
                count: 3,
                size: (found.mtu + 100 - 28) as usize,
                df: false,
                ..PingOptions::default()
            };
            let delivered = client
                .run(move || async move { icmp::ping(addr, &opts) })
                .await
                .ok()
                .and_then(Result::ok)
                .is_some_and(|r| r.received > 0);
            Some(if delivered {
                Above::Fragmented
            } else {
                Above::Dropped
            })
        }
        Some(_) => Some(match oversize {
            Oversize::FragNeeded { .. } => Above::FragNeeded,
            Oversize::LocalLimit => Above::LocalLimit,
            Oversize::BlackHole => Above::Dropped,
        }),
        None => None,
    };
    let seen = match seen_above {
        Some(a) => format!("{}, above: {}", found.mtu, a.name()),
        None => found.mtu.to_string(),
    };
    check.verdict(bound.holds(found.mtu) && seen_above == above, seen)
}

/// The connection to `peer` in a router's status (`router.connections[]`), if it has one.
pub fn connection<'a>(status: &'a serde_json::Value, peer: &str) -> Option<&'a serde_json::Value> {
    status["router"]["connections"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["peer"] == peer))
}

/// The datapaths a router offers, from its status: a `datapaths` list when it gives one, else
/// sleeve and, when it reports a fast path, vxlan (the only kernel tier it has today).
pub fn offered_datapaths(status: &serde_json::Value) -> Vec<String> {
    if let Some(list) = status["datapaths"].as_array() {
        return list
            .iter()
            .filter_map(|d| d.as_str().map(str::to_string))
            .collect();
    }
    let mut out = Vec::new();
    if status["fast_path"].is_object() {
        out.push("vxlan".to_string());
    }
    out.push("sleeve".to_string());
    out
}

async fn datapath(
    ctx: Context<'_>,
    e: &Expectation,
    host: &str,
    peer: &str,
    want: DatapathWant,
    reason: Option<&str>,
    within_ms: u64,
) -> Check {
    let expected = match reason {
        Some(r) => format!("{} because {r:?}", want.name()),
        None => want.name().to_string(),
    };
    let check = Check::new(e, expected);
    let Some(overlay) = ctx.overlay else {
        return check.verdict(false, "the lab runs no overlay routers");
    };
    if !overlay.is_running(host) {
        return check.verdict(false, format!("the router on {host} is not running"));
    }
    let first = match overlay.status(host).await {
        Ok(s) => s,
        Err(e) => return check.verdict(false, e.to_string()),
    };
    let offered = offered_datapaths(&first);
    if !matches!(want, DatapathWant::Fast) && !offered.iter().any(|d| d == want.name()) {
        return check.verdict(
            false,
            format!(
                "the overlay router has no {} datapath (it offers: {}); this expectation holds \
                 once that tier exists",
                want.name(),
                offered.join(", ")
            ),
        );
    }
    let deadline = Instant::now() + Duration::from_millis(within_ms);
    let mut last = format!("no connection to {peer}");
    loop {
        if let Ok(status) = overlay.status(host).await {
            if let Some(c) = connection(&status, peer) {
                let on = c["datapath"].as_str().unwrap_or("");
                let why = c["path"]["reason"].as_str().unwrap_or("");
                let reason_ok = reason.is_none_or(|r| why.contains(r));
                if want.accepts(on) && reason_ok {
                    let seen = match reason {
                        Some(r) => format!("{on} because {r:?}"),
                        None => on.to_string(),
                    };
                    return check.verdict(true, seen);
                }
                last = format!("{on} ({why})");
            }
        }
        if Instant::now() >= deadline {
            let within = crate::model::shape::format_duration(within_ms * 1_000_000);
            return check.verdict(false, format!("{last} after {within}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One figure of `metric` from `client` to `target`, in the metric's unit (bits per second,
/// nanoseconds, ppm).
async fn measure_once(
    ctx: Context<'_>,
    client: &str,
    target: &Target,
    metric: Metric,
    duration: Duration,
) -> Result<u64, String> {
    let addr = ctx.addr(target).await?;
    let client = ctx.node(client)?;
    let test = match metric {
        Metric::TcpBw => Test::TcpBw,
        Metric::TcpLat => Test::TcpLat,
        Metric::UdpBw => Test::UdpBw,
        Metric::UdpLat => Test::UdpLat,
        Metric::Loss => {
            let opts = PingOptions {
                count: 100,
                interval: Duration::from_millis(10),
                ..PingOptions::default()
            };
            let r = client
                .run(move || async move { icmp::ping(addr, &opts) })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("ping failed: {e}"))?;
            let lost = u64::from(r.sent.saturating_sub(r.received));
            return Ok(lost * 1_000_000 / u64::from(r.sent.max(1)));
        }
    };
    let server = ctx.owner(target)?;
    let mut opts = PerfOptions::for_test(test);
    opts.duration = duration;
    let (r, _) = pair::run(&server, addr, &client, test, opts)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(why) = &r.partial {
        return Err(format!("the run ended early: {why}"));
    }
    match (r.bytes_per_sec, r.latency_us) {
        (Some(bps), _) => Ok((bps * 8.0) as u64),
        (_, Some(us)) => Ok((us * 1000.0) as u64),
        _ => Err("the run gave no figure".to_string()),
    }
}

/// The median of `repeats` runs.
async fn median(
    ctx: Context<'_>,
    client: &str,
    target: &Target,
    metric: Metric,
    duration: Duration,
    repeats: u32,
) -> Result<(u64, Vec<u64>), String> {
    let mut runs = Vec::new();
    for _ in 0..repeats.max(1) {
        runs.push(measure_once(ctx, client, target, metric, duration).await?);
    }
    let mut sorted = runs.clone();
    sorted.sort_unstable();
    Ok((sorted[sorted.len() / 2], runs))
}

async fn perf(ctx: Context<'_>, e: &Expectation) -> Check {
    let Expectation::Perf {
        from,
        to,
        metric,
        bound,
        repeats,
        duration_ms,
        native,
    } = e
    else {
        return Check::new(e, "a perf expectation").verdict(false, "not a perf expectation");
    };
    let mut check = Check::new(e, bound.describe(*metric));
    let duration = Duration::from_millis(*duration_ms);
    let native_figure = match native {
        Some((client, target)) => {
            match median(ctx, client, target, *metric, duration, *repeats).await {
                Ok(n) => Some(n),
                Err(why) => {
                    return check.verdict(false, format!("native {client} -> {target}: {why}"))
                }
            }
        }
        None => None,
    };
    let (figure, runs) = match median(ctx, from, to, *metric, duration, *repeats).await {
        Ok(m) => m,
        Err(why) => return check.verdict(false, why),
    };
    check.figures = serde_json::json!({
        "metric": metric.name(),
        "median": figure,
        "runs": runs,
        "native_median": native_figure.as_ref().map(|n| n.0),
        "native_runs": native_figure.as_ref().map(|n| n.1.clone()),
        "unit": match metric {
            Metric::TcpBw | Metric::UdpBw => "bit/s",
            Metric::TcpLat | Metric::UdpLat => "ns",
            Metric::Loss => "ppm",
        },
    });
    let native = native_figure.map(|n| n.0);
    match envelope(*bound, *metric, figure, native) {
        Ok(()) => check.verdict(true, "in envelope"),
        Err(why) => check.verdict(false, why),
    }
}

/// Whether `figure` lies within `bound`; the error says which bound it broke and by what.
fn envelope(bound: Bound, metric: Metric, figure: u64, native: Option<u64>) -> Result<(), String> {
    let limit = |l: Limit| match l {
        Limit::Absolute(v) => Some(v),
        Limit::Native(pm) => native.map(|n| n.saturating_mul(u64::from(pm)) / 1000),
    };
    let native_note = native
        .map(|n| format!(" (native {})", metric.format(n)))
        .unwrap_or_default();
    if let Some(min) = bound.min.and_then(limit) {
        if figure < min {
            return Err(format!(
                "median {} is below {}{native_note}",
                metric.format(figure),
                metric.format(min)
            ));
        }
    }
    if let Some(max) = bound.max.and_then(limit) {
        if figure > max {
            return Err(format!(
                "median {} is above {}{native_note}",
                metric.format(figure),
                metric.format(max)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_relative_to_native_scales_the_native_figure() {
        let bound = Bound {
            min: Some(Limit::Native(850)),
            max: None,
        };
        assert!(envelope(bound, Metric::TcpBw, 90, Some(100)).is_ok());
        let err = envelope(bound, Metric::TcpBw, 80_000_000, Some(100_000_000));
        assert_eq!(
            err,
            Err("median 80mbit is below 85mbit (native 100mbit)".to_string())
        );
    }

    #[test]
    fn offered_datapaths_come_from_the_status() {
        let with_fast = serde_json::json!({"fast_path": {"available": false}});
        assert_eq!(offered_datapaths(&with_fast), ["vxlan", "sleeve"]);
        let listed = serde_json::json!({"datapaths": ["odp", "vxlan", "sleeve"]});
        assert_eq!(offered_datapaths(&listed), ["odp", "vxlan", "sleeve"]);
    }
}
