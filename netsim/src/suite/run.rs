//! Running a suite: for each lab of [`super::cases::expand`], bring it up, set up the
//! datapaths (nothing for native; hand-made kernel vxlans; the overlay routers with the
//! datapath's settings), measure, take them down, and take the lab down. In a profile's lab
//! native, the raw vxlans and the fast path are up together and measured round by round
//! ([`Datapath::shares_rounds`]); the others, and every datapath of a client matrix, one after
//! another.
//!
//! A datapath that cannot be set up (no openvswitch here, a router that does not start) is a
//! row that says why, and the run goes on; only a lab that cannot come up ends the run.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cases::{
    self, LabCase, Work, RAW_VXLAN_NET, RAW_VXLAN_PORT, RAW_VXLAN_VNI, VXLAN_BRIDGE_NET,
    VXLAN_BRIDGE_PORT, VXLAN_BRIDGE_VNI,
};
use super::results::{Figures, Machine, MatrixRow, Row, SuiteResults};
use super::spec::{Datapath, Suite, TestSpec};
use crate::lab::{Lab, LabError, NodeHandle, UpOptions};
use crate::measure::icmp::{self, PingOptions};
use crate::measure::matrix::{self, MatrixServer};
use crate::measure::pair;
use crate::measure::perf::{CpuPin, PerfOptions, Test};
use crate::model;
use crate::overlay_run::{Overlay, OverlayOptions};

/// The password the encrypted sleeve runs with (the lab is private to the run).
const BENCH_PASSWORD: &str = "netsim-bench-suite";

/// How long an overlay datapath may take to settle on its tier after the routers connect.
const SETTLE: Duration = Duration::from_secs(6);

/// Hears how a run advances.
pub trait Progress: Sync {
    /// A case starts: `runs` measurement runs follow.
    fn begin(&self, case: &str, runs: usize);
    /// One measurement run finished.
    fn step(&self);
    /// The case is done; `summary` is its figure.
    fn end(&self, summary: &str);
    /// Set-up news and problems.
    fn note(&self, line: &str);
    /// `runs` measurement runs will not happen (their datapath is not available).
    fn skip(&self, runs: usize);
}

/// Settings of a run that are not part of the suite.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The router binary (default: found as `netsim run` finds it).
    pub overlay_binary: Option<PathBuf>,
    /// How long the routers may take to connect.
    pub start_timeout: Option<Duration>,
}

/// Runs `suite` (read from `file`).
pub async fn run(
    suite: &Suite,
    file: &Path,
    opts: &RunOptions,
    progress: &dyn Progress,
) -> Result<SuiteResults, LabError> {
    let started = Instant::now();
    let labs = cases::expand(suite);
    let mut results = SuiteResults {
        suite: suite.name.clone(),
        file: file.display().to_string(),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        duration_s: suite.duration.as_secs_f64(),
        repeats: suite.repeats,
        pin_cpu: suite.pin_cpu,
        machine: machine(),
        profiles: suite.profiles.clone(),
        ..SuiteResults::default()
    };
    for case in &labs {
        let plan = model::parse(&case.topology(), Path::new("<bench suite>"))
            .and_then(|t| model::plan(&t))
            .map_err(|d| LabError::Task {
                lab: case.name.clone(),
                what: d.to_string(),
            })?;
        progress.note(&format!(
            "lab {}: {} ({}), MTU {}",
            case.name,
            case.profile.name,
            case.profile.describe(),
            case.mtu
        ));
        let lab = Lab::up(plan, UpOptions::default()).await?;
        if let Some(b) = lab.shaping_backend() {
            results.machine.shaping = format!("{b:?}").to_lowercase();
        }
        let ctx = Ctx {
            lab: &lab,
            case,
            suite,
            opts,
            progress,
        };
        let mut apart = case.datapaths.clone();
        if let Work::Tests(tests) = &case.work {
            // Native, the raw vxlans and the overlay's fast path are up together and measured
            // round by round, so their ratios come from the same minutes of a shared machine.
            let together: Vec<Datapath> = apart
                .iter()
                .copied()
                .filter(|d| d.shares_rounds())
                .collect();
            if together.len() > 1 {
                apart.retain(|d| !d.shares_rounds());
                measure_together(&ctx, tests, &together, &mut results).await;
            }
        }
        for &dp in &apart {
            measure_datapath(&ctx, dp, &mut results).await;
        }
        lab.down().await?;
    }
    results.wall_s = started.elapsed().as_secs_f64();
    Ok(results)
}

/// Where a datapath's traffic goes: the server's node and address, and the client nodes.
struct Ends {
    server: NodeHandle,
    addr: Ipv4Addr,
    clients: Vec<NodeHandle>,
}

/// What has to be taken down after a datapath.
enum Active {
    Nothing,
    Vxlan(Vec<NodeHandle>),
    /// The hosts the `vxlan-bridge` devices are on.
    VxlanBridge(Vec<NodeHandle>),
    Routers(Box<Overlay>),
}

/// What every measurement of one lab needs.
struct Ctx<'a> {
    lab: &'a Lab,
    case: &'a LabCase,
    suite: &'a Suite,
    opts: &'a RunOptions,
    progress: &'a dyn Progress,
}

impl Ctx<'_> {
    /// Sets `dp` up: where its traffic goes and what carried it, or why it could not be.
    async fn set_up(&self, dp: Datapath) -> Arm {
        match setup(self.lab, self.case, dp, self.opts).await {
            Ok((ends, active, carried)) => Arm {
                dp,
                ends: Some(ends),
                active,
                carried_by: carried,
                why: None,
            },
            Err((mut active, mut why)) => {
                // Down at once: nothing half made runs beside what is measured next; the
                // routers' logs stay for a look.
                if let Active::Routers(o) = &mut active {
                    o.keep_logs();
                    if let Some(dir) = o.log_path("h0").as_deref().and_then(Path::parent) {
                        why = format!("{why} (the routers' logs are in {})", dir.display());
                    }
                }
                teardown(active).await;
                self.progress
                    .note(&format!("{} on {}: {why}", dp, self.case.name));
                Arm {
                    dp,
                    ends: None,
                    active: Active::Nothing,
                    carried_by: None,
                    why: Some(why),
                }
            }
        }
    }

    /// The options of one run of `test` lasting `duration` (default: the suite's).
    fn perf(&self, test: Test, duration: Option<Duration>) -> PerfOptions {
        PerfOptions {
            duration: duration.unwrap_or(self.suite.duration),
            cpus: self.suite.pin_cpu.map(|cpu| CpuPin {
                client: cpu,
                server: cpu,
            }),
            io_timeout: Duration::from_secs(5),
            ..PerfOptions::for_test(test)
        }
    }

    /// An empty row of test `t` on `arm`'s datapath.
    fn row(&self, arm: &Arm, t: &TestSpec) -> Row {
        Row {
            profile: self.case.profile.name.clone(),
            mtu: self.case.mtu,
            datapath: arm.dp,
            test: t.label(),
            higher_is_better: t.higher_is_better(),
            figures: Figures::default(),
            carried_by: arm.carried_by.clone(),
            unavailable: arm.why.clone(),
            rounds: false,
        }
    }

    fn label(&self, what: &str, test: &str) -> String {
        format!(
            "{} / {} / {what} / {test}",
            self.case.profile.name, self.case.mtu
        )
    }
}

/// A datapath set up for measuring (or not: `why`).
struct Arm {
    dp: Datapath,
    ends: Option<Ends>,
    active: Active,
    carried_by: Option<String>,
    why: Option<String>,
}

/// Measures `dps` (all up at once) round by round: in round `r` each datapath runs once, the
/// order turned by `r`, so slow drift in the machine's load falls on all of them alike and
/// sample `r` of one row pairs with sample `r` of another ([`Row::rounds`]).
async fn measure_together(
    ctx: &Ctx<'_>,
    tests: &[TestSpec],
    dps: &[Datapath],
    results: &mut SuiteResults,
) {
    let mut arms = Vec::new();
    for &dp in dps {
        arms.push(ctx.set_up(dp).await);
    }
    let live: Vec<usize> = (0..arms.len())
        .filter(|&i| arms[i].ends.is_some())
        .collect();
    let names: Vec<&str> = live.iter().map(|&i| arms[i].dp.name()).collect();
    let repeats = ctx.suite.repeats as usize;
    for t in tests {
        let mut rows: Vec<Row> = arms.iter().map(|a| ctx.row(a, t)).collect();
        let mut failed: Vec<Option<String>> = vec![None; arms.len()];
        if !live.is_empty() {
            ctx.progress.begin(
                &ctx.label(&names.join(", "), &t.label()),
                repeats * live.len(),
            );
        }
        for round in 0..repeats {
            for i in round_order(&live, round) {
                let Some(ends) = &arms[i].ends else { continue };
                match one(ends, t, ctx.perf(t.test, t.duration)).await {
                    Ok(v) => rows[i].figures.samples.push(v),
                    Err(e) => failed[i] = Some(e),
                }
                ctx.progress.step();
            }
        }
        let mut summaries = Vec::new();
        for &i in &live {
            let row = &mut rows[i];
            let label = ctx.label(arms[i].dp.name(), &t.label());
            if row.figures.samples.is_empty() {
                row.unavailable = failed[i].take().or(Some("no figures".into()));
            } else if let Some(e) = &failed[i] {
                ctx.progress.note(&format!("{label}: a repeat failed: {e}"));
            }
            // Paired only when every round gave a figure.
            row.rounds = row.figures.samples.len() == repeats;
            summaries.push(summary(
                arms[i].dp.name(),
                &row.figures,
                t.higher_is_better(),
            ));
        }
        if !live.is_empty() {
            ctx.progress.end(&format!(
                "{}: {}",
                ctx.label(&names.join(", "), &t.label()),
                summaries.join("; ")
            ));
        }
        for _ in live.len()..arms.len() {
            ctx.progress.skip(repeats);
        }
        results.rows.extend(rows);
    }
    for a in arms {
        teardown(a.active).await;
    }
}

/// The order of round `round` over `live`: turned by one place each round, so each datapath
/// runs first (and last) as often as the others.
fn round_order(live: &[usize], round: usize) -> impl Iterator<Item = usize> + '_ {
    let n = live.len();
    (0..n).map(move |k| live[(k + round) % n])
}

async fn measure_datapath(ctx: &Ctx<'_>, dp: Datapath, results: &mut SuiteResults) {
    let arm = ctx.set_up(dp).await;
    let (case, suite, progress) = (ctx.case, ctx.suite, ctx.progress);
    match &case.work {
        Work::Tests(tests) => {
            for t in tests {
                let label = ctx.label(dp.name(), &t.label());
                let mut row = ctx.row(&arm, t);
                if let Some(ends) = &arm.ends {
                    progress.begin(&label, suite.repeats as usize);
                    let mut last_err = None;
                    for _ in 0..suite.repeats {
                        match one(ends, t, ctx.perf(t.test, t.duration)).await {
                            Ok(v) => row.figures.samples.push(v),
                            Err(e) => last_err = Some(e),
                        }
                        progress.step();
                    }
                    if row.figures.samples.is_empty() {
                        row.unavailable = last_err.or(Some("no figures".into()));
                    } else if let Some(e) = last_err {
                        progress.note(&format!("{label}: a repeat failed: {e}"));
                    }
                    progress.end(&summary(&label, &row.figures, t.higher_is_better()));
                } else {
                    progress.skip(suite.repeats as usize);
                }
                results.rows.push(row);
            }
        }
        Work::Clients(counts) => {
            for &n in counts {
                let label = ctx.label(dp.name(), &format!("1 server, {n} clients"));
                let mut row = MatrixRow {
                    profile: case.profile.name.clone(),
                    mtu: case.mtu,
                    datapath: dp,
                    clients: n,
                    aggregate: Figures::default(),
                    per_client: Figures::default(),
                    unavailable: arm.why.clone(),
                };
                if let Some(ends) = &arm.ends {
                    progress.begin(&label, suite.repeats as usize);
                    let server = MatrixServer {
                        node: ends.server.clone(),
                        addr: ends.addr,
                    };
                    let clients = &ends.clients[..n.min(ends.clients.len())];
                    let mut last_err = None;
                    for _ in 0..suite.repeats {
                        let (servers, cl) = matrix::one_server(server.clone(), clients);
                        match matrix::run(&servers, &cl, ctx.perf(Test::TcpBw, None)).await {
                            Ok(m) => {
                                row.aggregate.samples.push(m.aggregate_bytes_per_sec);
                                row.per_client.samples.push(m.per_client_mean());
                            }
                            Err(e) => last_err = Some(e.to_string()),
                        }
                        progress.step();
                    }
                    if row.aggregate.samples.is_empty() {
                        row.unavailable = last_err.or(Some("no figures".into()));
                    }
                    progress.end(&summary(&label, &row.per_client, true));
                } else {
                    progress.skip(suite.repeats as usize);
                }
                results.matrices.push(row);
            }
        }
    }
    teardown(arm.active).await;
}

fn summary(label: &str, f: &Figures, bandwidth: bool) -> String {
    let unit = if bandwidth { "MB/s" } else { "us" };
    match (f.median(), f.range()) {
        (Some(m), Some((lo, hi))) => format!(
            "{label}: {} {unit} ({}-{})",
            super::report::figure(m, bandwidth),
            super::report::figure(lo, bandwidth),
            super::report::figure(hi, bandwidth)
        ),
        _ => format!("{label}: no figures"),
    }
}

/// One measurement: bytes per second or microseconds.
async fn one(ends: &Ends, t: &TestSpec, opts: PerfOptions) -> Result<f64, String> {
    let client = ends.clients.first().ok_or("no client")?;
    if t.test == Test::TcpBw {
        let (servers, clients) = matrix::streams_per_client(
            MatrixServer {
                node: ends.server.clone(),
                addr: ends.addr,
            },
            std::slice::from_ref(client),
            t.streams,
        );
        let m = matrix::run(&servers, &clients, opts)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(p) = m.clients.iter().find_map(|c| c.partial.clone()) {
            return Err(format!("a stream ended early: {p}"));
        }
        return Ok(m.aggregate_bytes_per_sec);
    }
    let (r, _) = pair::run(&ends.server, ends.addr, client, t.test, opts)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(p) = r.partial {
        return Err(format!("the run ended early: {p}"));
    }
    r.latency_us
        .or(r.bytes_per_sec)
        .ok_or_else(|| "the run gave no figure".to_string())
}

type SetUp = Result<(Ends, Active, Option<String>), (Active, String)>;

async fn setup(lab: &Lab, case: &LabCase, dp: Datapath, opts: &RunOptions) -> SetUp {
    let node = |name: &str| {
        lab.node(name)
            .ok_or_else(|| (Active::Nothing, format!("lab has no node {name}")))
    };
    let hosts: Vec<String> = (0..=case.clients).map(|i| format!("h{i}")).collect();
    let (ends, active, carried) = match dp {
        Datapath::Native => {
            let addr = lab
                .address_of("h0")
                .await
                .map_err(|e| (Active::Nothing, e.to_string()))?;
            let mut clients = Vec::new();
            for h in &hosts[1..] {
                clients.push(node(h)?);
            }
            (
                Ends {
                    server: node("h0")?,
                    addr,
                    clients,
                },
                Active::Nothing,
                None,
            )
        }
        Datapath::Vxlan => {
            let mut nodes = Vec::new();
            let mut underlay = Vec::new();
            for h in &hosts {
                nodes.push(node(h)?);
                underlay.push(
                    lab.address_of(h)
                        .await
                        .map_err(|e| (Active::Nothing, e.to_string()))?,
                );
            }
            let made = raw_vxlan(&nodes, &underlay, case.mtu);
            let active = Active::Vxlan(nodes.clone());
            if let Err(e) = made {
                return Err((active, e));
            }
            (
                Ends {
                    server: nodes[0].clone(),
                    addr: raw_vxlan_addr(0),
                    clients: nodes[1..].to_vec(),
                },
                active,
                None,
            )
        }
        Datapath::VxlanBridge => {
            let mut host_nodes = Vec::new();
            let mut containers = Vec::new();
            let mut underlay = Vec::new();
            for (i, h) in hosts.iter().enumerate() {
                host_nodes.push(node(h)?);
                containers.push(node(&format!("v{i}"))?);
                underlay.push(
                    lab.address_of(h)
                        .await
                        .map_err(|e| (Active::Nothing, e.to_string()))?,
                );
            }
            let made = vxlan_bridge(&host_nodes, &containers, &underlay, case.mtu);
            let active = Active::VxlanBridge(host_nodes);
            if let Err(e) = made {
                return Err((active, e));
            }
            (
                Ends {
                    server: containers[0].clone(),
                    addr: vxlan_bridge_addr(0),
                    clients: containers[1..].to_vec(),
                },
                active,
                None,
            )
        }
        _ => {
            // Only the overlay's own containers (c0, c1, ...): v0, v1, ... are vxlan-bridge's.
            let mut o = OverlayOptions {
                binary: opts.overlay_binary.clone(),
                start_timeout: opts.start_timeout,
                password: Some(None),
                no_attach: true,
                ..OverlayOptions::default()
            };
            match dp {
                Datapath::Odp => o.router_args = vec!["--fast-path".into(), "odp".into()],
                Datapath::Sleeve => o.router_args = vec!["--fast-path".into(), "off".into()],
                Datapath::SleeveEncrypted => {
                    o.router_args = vec!["--fast-path".into(), "off".into()];
                    o.password = Some(Some(BENCH_PASSWORD.into()));
                }
                _ => {}
            }
            let overlay = Overlay::start(lab, &o)
                .await
                .map_err(|e| (Active::Nothing, format!("the overlay did not start: {e}")))?;
            let overlay = Box::new(overlay);
            let mut addrs = Vec::new();
            for (i, h) in hosts.iter().enumerate() {
                match overlay.attach(lab, h, &format!("c{i}")).await {
                    Ok(a) => addrs.push(a),
                    Err(e) => {
                        let why = format!("c{i} could not be attached: {e}");
                        return Err((Active::Routers(overlay), why));
                    }
                }
            }
            // hosts[0] is h0: c0, the server.
            let addr = addrs[0];
            let carried = match settle(&overlay, dp).await {
                Ok(c) => c,
                Err(why) => return Err((Active::Routers(overlay), why)),
            };
            let mut clients = Vec::new();
            for i in 1..=case.clients {
                match lab.node(&format!("c{i}")) {
                    Some(n) => clients.push(n),
                    None => return Err((Active::Routers(overlay), format!("no node c{i}"))),
                }
            }
            let server = match lab.node("c0") {
                Some(n) => n,
                None => return Err((Active::Routers(overlay), "no node c0".into())),
            };
            (
                Ends {
                    server,
                    addr,
                    clients,
                },
                Active::Routers(overlay),
                Some(carried),
            )
        }
    };
    // The first packets resolve neighbours (and, on the overlay, may still find the fast
    // path warming up): let a few pings go before anything is timed.
    for c in &ends.clients {
        let opts = PingOptions {
            count: 3,
            timeout: Duration::from_millis(500),
            ..PingOptions::default()
        };
        let dst = ends.addr;
        let answered = c
            .run(move || async move { icmp::ping(dst, &opts) })
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|r| r.received > 0);
        if !answered {
            return Err((
                active,
                format!("{} does not reach {} over {dp}", c.name(), ends.addr),
            ));
        }
    }
    Ok((ends, active, carried))
}

/// Waits until the connection h1 -> h0 is on the tier `dp` asks for; returns the tier it is
/// on. `odp` where the routers offer no such tier is an error that says so.
async fn settle(overlay: &Overlay, dp: Datapath) -> Result<String, String> {
    let deadline = Instant::now() + SETTLE;
    if dp == Datapath::Odp {
        let st = overlay.status("h0").await.map_err(|e| e.to_string())?;
        let offered = crate::verify::offered_datapaths(&st);
        if !offered.iter().any(|d| d == "odp") {
            return Err(format!(
                "not available here: the routers offer {} (the Open vSwitch datapath needs the \
                 openvswitch kernel module; the kernel lane has it)",
                offered.join(", ")
            ));
        }
    }
    let want_fast = matches!(dp, Datapath::Fast | Datapath::Odp);
    let mut last = String::from("no connection to h0");
    loop {
        if let Ok(st) = overlay.status("h1").await {
            let conn = crate::verify::connection(&st, "h0");
            if let Some(on) = conn.and_then(|c| c["datapath"].as_str()) {
                last = on.to_string();
                let fast = on != "sleeve";
                if fast == want_fast && (dp != Datapath::Odp || on == "odp") {
                    return Ok(last);
                }
            }
        }
        if Instant::now() >= deadline {
            // Measure what there is; the report says what carried it.
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn raw_vxlan_addr(i: usize) -> Ipv4Addr {
    let [a, b, c] = RAW_VXLAN_NET;
    Ipv4Addr::new(a, b, c, (i + 1) as u8)
}

/// A kernel vxlan device `vxb` on every host, flooding to every other host, addressed from
/// [`RAW_VXLAN_NET`]. Made with iproute2: this is the baseline a user would build by hand.
fn raw_vxlan(nodes: &[NodeHandle], underlay: &[Ipv4Addr], mtu: u32) -> Result<(), String> {
    for (i, n) in nodes.iter().enumerate() {
        let (id, port, inner) = (
            RAW_VXLAN_VNI.to_string(),
            RAW_VXLAN_PORT.to_string(),
            (mtu - cases::VXLAN_OVERHEAD).to_string(),
        );
        let local = underlay[i].to_string();
        let addr = format!("{}/24", raw_vxlan_addr(i));
        let mut steps: Vec<Vec<&str>> = vec![
            vec![
                "ip", "link", "add", "vxb", "mtu", &inner, "type", "vxlan", "id", &id, "local",
                &local, "dstport", &port,
            ],
            vec!["ip", "addr", "add", &addr, "dev", "vxb"],
        ];
        let peers = others(underlay, i);
        steps.extend(flood(&peers, "vxb"));
        steps.push(vec!["ip", "link", "set", "vxb", "up"]);
        run_steps(n, &steps)?;
    }
    Ok(())
}

/// Every underlay address but host `i`'s.
fn others(underlay: &[Ipv4Addr], i: usize) -> Vec<String> {
    underlay
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, a)| a.to_string())
        .collect()
}

/// The commands that make vxlan device `dev` flood to each of `peers`.
fn flood<'a>(peers: &'a [String], dev: &'a str) -> impl Iterator<Item = Vec<&'a str>> {
    peers.iter().map(move |p| {
        vec![
            "bridge",
            "fdb",
            "append",
            "00:00:00:00:00:00",
            "dev",
            dev,
            "dst",
            p,
        ]
    })
}

fn vxlan_bridge_addr(i: usize) -> Ipv4Addr {
    let [a, b, c] = VXLAN_BRIDGE_NET;
    Ipv4Addr::new(a, b, c, (i + 1) as u8)
}

/// A container vxlan by hand: on every host a plain bridge `vbbr` with a kernel vxlan device
/// `vbvx` (flooding to every other host) and a veth `vbveth` whose other end is the container
/// `v{i}`'s `eth0`, addressed from [`VXLAN_BRIDGE_NET`]; the inner MTU on every device.
fn vxlan_bridge(
    hosts: &[NodeHandle],
    containers: &[NodeHandle],
    underlay: &[Ipv4Addr],
    mtu: u32,
) -> Result<(), String> {
    let (id, port, inner) = (
        VXLAN_BRIDGE_VNI.to_string(),
        VXLAN_BRIDGE_PORT.to_string(),
        (mtu - cases::VXLAN_OVERHEAD).to_string(),
    );
    for (i, (h, c)) in hosts.iter().zip(containers).enumerate() {
        let local = underlay[i].to_string();
        let cns = c.netns_name();
        let mut steps: Vec<Vec<&str>> = vec![
            vec!["ip", "link", "add", "vbbr", "mtu", &inner, "type", "bridge"],
            vec![
                "ip", "link", "add", "vbvx", "mtu", &inner, "type", "vxlan", "id", &id, "local",
                &local, "dstport", &port,
            ],
            vec!["ip", "link", "set", "vbvx", "master", "vbbr", "up"],
            vec![
                "ip", "link", "add", "vbveth", "mtu", &inner, "type", "veth", "peer", "name",
                "eth0", "mtu", &inner, "netns", &cns,
            ],
            vec!["ip", "link", "set", "vbveth", "master", "vbbr", "up"],
            vec!["ip", "link", "set", "vbbr", "up"],
        ];
        let peers = others(underlay, i);
        steps.extend(flood(&peers, "vbvx"));
        run_steps(h, &steps)?;
        let addr = format!("{}/24", vxlan_bridge_addr(i));
        run_steps(
            c,
            &[
                vec!["ip", "addr", "add", &addr, "dev", "eth0"],
                vec!["ip", "link", "set", "eth0", "up"],
                vec!["ip", "link", "set", "lo", "up"],
            ],
        )?;
    }
    Ok(())
}

/// Runs each command on `n`, stopping at the first that fails (with its error output).
fn run_steps(n: &NodeHandle, steps: &[Vec<&str>]) -> Result<(), String> {
    for argv in steps {
        let out = n
            .command(argv[0])
            .args(&argv[1..])
            .output()
            .map_err(|e| format!("{} on {}: {e}", argv.join(" "), n.name()))?;
        if !out.status.success() {
            return Err(format!(
                "{} on {}: {}",
                argv.join(" "),
                n.name(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

async fn teardown(active: Active) {
    match active {
        Active::Nothing => {}
        Active::Vxlan(nodes) => {
            for n in nodes {
                // Gone with the namespace anyway; removed now so the next datapath measured
                // in this lab has the hosts to itself.
                let _ = n.command("ip").args(["link", "del", "vxb"]).output();
            }
        }
        Active::VxlanBridge(hosts) => {
            for n in hosts {
                // The veth takes the container's end with it.
                for dev in ["vbveth", "vbvx", "vbbr"] {
                    let _ = n.command("ip").args(["link", "del", dev]).output();
                }
            }
        }
        Active::Routers(o) => o.stop(),
    }
}

/// This machine, for the report.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    Machine {
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib,
        kernel: crate::caps::probe().kernel.clone(),
        shaping: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each datapath runs once a round, and first in as many rounds as the others.
    #[test]
    fn rounds_turn_the_order() {
        let live = [0, 2, 3];
        let rounds: Vec<Vec<usize>> = (0..4).map(|r| round_order(&live, r).collect()).collect();
        assert_eq!(
            rounds,
            [vec![0, 2, 3], vec![2, 3, 0], vec![3, 0, 2], vec![0, 2, 3]]
        );
        assert_eq!(round_order(&[], 1).count(), 0);
    }
}
