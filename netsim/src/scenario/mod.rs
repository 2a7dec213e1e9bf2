//! Running a topology file as a test: bring the lab and its overlay up, check its `[[expect]]`
//! tables, run its `[[step]]`s in order (impair or heal, then check), and tear everything down,
//! also when something fails. `netsim test` and `netsim run` are this, and so is
//! tests/fixtures.rs.
//!
//! The run never stops at a failed check: every step runs, so one report says everything that
//! went wrong and in which step. A lab or overlay that does not come up is a failed `up` step.

mod impair;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::lab::{shaping, Lab, UpOptions};
use crate::measure::stream::Stream;
use crate::model::plan::{Expectation, StepAction, Target};
use crate::model::Plan;
use crate::overlay_run::{Overlay, OverlayOptions};
use crate::verify::{self, Check, Context, Verdict};

pub use report::{junit, summary_table, Report, StepReport};

/// A line of progress, for people watching a run.
pub type ProgressLine = Arc<dyn Fn(&str) + Send + Sync>;

/// How to run a test.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Lab id (default: the topology's name and a random suffix, so labs never collide).
    pub name: Option<String>,
    /// Link shaping backend (default: chosen from the kernel's features).
    pub backend: Option<shaping::Backend>,
    /// How the overlay routers run (binary, extra router arguments).
    pub overlay: OverlayOptions,
    /// Leave the lab (and its routers) up afterwards.
    pub keep: bool,
    /// Called with a line as each step starts.
    pub progress: Option<ProgressLine>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("name", &self.name)
            .field("backend", &self.backend)
            .field("overlay", &self.overlay)
            .field("keep", &self.keep)
            .finish()
    }
}

/// Runs the plan loaded from `file` as a test. Never fails: whatever goes wrong is a failed
/// check in the report.
pub async fn run(plan: Plan, file: &Path, opts: &RunOptions) -> Report {
    let say = |line: String| {
        if let Some(p) = &opts.progress {
            p(&line);
        }
    };
    let mut report = Report {
        file: file.display().to_string(),
        topology: plan.name.clone(),
        lab: String::new(),
        shaping: None,
        steps: Vec::new(),
    };
    let missing: Vec<&str> = plan
        .needs
        .iter()
        .filter(|n| {
            !crate::caps::Feature::ALL
                .iter()
                .any(|f| f.name() == n.as_str() && crate::caps::probe().has(*f))
        })
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let why = format!(
            "this kernel has no {} (the file's [lab] needs); run it where it has: the kernel \
             lane, or `netsim run --kernel uml FILE`",
            missing.join(", ")
        );
        say(format!("{}: skipped: {why}", plan.name));
        let mut check = up_check(false, why, None);
        check.verdict = Verdict::Skip;
        report.steps.push(StepReport {
            name: "up".into(),
            action: "bring the lab and its overlay routers up".into(),
            checks: vec![check],
        });
        return report;
    }
    let total = 1 + usize::from(!plan.expects.is_empty()) + plan.steps.len();
    say(format!("{}: step 1/{total} \"up\"", plan.name));
    let (lab, mut overlay, up) = bring_up(plan, file, opts).await;
    report.steps.push(up);
    let Some(lab) = lab else {
        return report;
    };
    report.lab = lab.id().to_string();
    report.shaping = lab.shaping_backend().map(|b| b.name().to_string());
    if let Some(b) = &report.shaping {
        say(format!("lab {}: link shaping backend {b}", lab.id()));
    }
    let plan = lab.plan().clone();
    let mut faults = impair::Faults::default();
    let mut streams: Vec<(String, Check, Result<Stream, String>)> = Vec::new();
    let mut n = 1;
    if !plan.expects.is_empty() {
        n += 1;
        say(format!("{}: step {n}/{total} \"expect\"", plan.name));
        let ctx = Context {
            lab: &lab,
            overlay: overlay.as_ref(),
        };
        let checks = check_all(ctx, &plan.expects, &mut streams).await;
        let mut step = StepReport {
            name: "expect".into(),
            action: "check".into(),
            checks,
        };
        if plan.steps.is_empty() {
            finish_streams(&mut streams, None, &mut step).await;
        }
        report.steps.push(step);
    }
    for (i, s) in plan.steps.iter().enumerate() {
        n += 1;
        say(format!(
            "{}: step {n}/{total} {:?}: {}",
            plan.name,
            s.name,
            s.action.describe()
        ));
        let mut step = StepReport {
            name: s.name.clone(),
            action: s.action.describe(),
            checks: Vec::new(),
        };
        let done = match &s.action {
            StepAction::Check => Ok(()),
            StepAction::Impair { fault } => faults.apply(&lab, overlay.as_mut(), fault).await,
            StepAction::Heal => faults.heal_all(&lab, overlay.as_mut()).await,
        };
        if let Err(why) = done {
            step.checks.push(action_failed(&s.action.describe(), why));
        }
        let ctx = Context {
            lab: &lab,
            overlay: overlay.as_ref(),
        };
        step.checks
            .extend(check_all(ctx, &s.expects, &mut streams).await);
        let last = i + 1 == plan.steps.len();
        finish_streams(&mut streams, (!last).then_some(s.name.as_str()), &mut step).await;
        report.steps.push(step);
    }
    say(format!(
        "{}: {} checks, {} failed; tearing down",
        plan.name,
        report.checks().count(),
        report.failures()
    ));
    let failed = report.failures() > 0;
    tear_down(lab, overlay, opts.keep, failed).await;
    report
}

/// Brings the lab and its overlay up; the `up` step says how that went.
async fn bring_up(
    plan: Plan,
    file: &Path,
    opts: &RunOptions,
) -> (Option<Lab>, Option<Overlay>, StepReport) {
    let mut step = StepReport {
        name: "up".into(),
        action: "bring the lab and its overlay routers up".into(),
        checks: Vec::new(),
    };
    let nodes = plan.nodes.len();
    let hosts = plan
        .nodes
        .iter()
        .filter(|n| n.kind == crate::model::plan::NodeKind::Host)
        .count();
    let with_overlay = plan.overlay.is_some();
    let up = Lab::up(
        plan,
        UpOptions {
            name: opts.name.clone(),
            file: Some(file.to_path_buf()),
            backend: opts.backend,
            ..UpOptions::default()
        },
    )
    .await;
    let lab = match up {
        Ok(lab) => lab,
        Err(e) => {
            step.checks.push(up_check(false, e.to_string(), None));
            return (None, None, step);
        }
    };
    let overlay = if with_overlay {
        match Overlay::start(&lab, &opts.overlay).await {
            Ok(o) => Some(o),
            Err(e) => {
                let log = crate::overlay_run::log_dir(lab.id());
                step.checks.push(up_check(false, e.to_string(), Some(log)));
                let _ = lab.down().await;
                return (None, None, step);
            }
        }
    } else {
        None
    };
    let seen = if with_overlay {
        format!("{nodes} nodes, {hosts} overlay routers connected")
    } else {
        format!("{nodes} nodes")
    };
    step.checks.push(up_check(true, seen, None));
    (Some(lab), overlay, step)
}

fn up_check(ok: bool, seen: String, log: Option<PathBuf>) -> Check {
    Check {
        what: "lab up".into(),
        verdict: if ok { Verdict::Pass } else { Verdict::Fail },
        expected: "every node up, every overlay router connected to every other".into(),
        seen,
        node: "-".into(),
        connection: None,
        router_log: log,
        figures: serde_json::Value::Null,
    }
}

fn action_failed(what: &str, why: String) -> Check {
    Check {
        what: what.to_string(),
        verdict: Verdict::Fail,
        expected: "done".into(),
        seen: why,
        node: "-".into(),
        connection: None,
        router_log: None,
        figures: serde_json::Value::Null,
    }
}

/// Checks expectations one after the other, in file order (an `mtu` after a `datapath` sees
/// the datapath the file waited for); streams start and run on until their step.
async fn check_all(
    ctx: Context<'_>,
    expects: &[Expectation],
    streams: &mut Vec<(String, Check, Result<Stream, String>)>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    for e in expects {
        match e {
            Expectation::Stream { from, to, until } => {
                let started = start_stream(ctx, from, to).await;
                let check = stream_check(ctx, e, from, to);
                streams.push((until.clone(), check, started));
            }
            _ => checks.push(verify::check(ctx, e).await),
        }
    }
    checks
}

async fn start_stream(ctx: Context<'_>, from: &str, to: &Target) -> Result<Stream, String> {
    let client = ctx
        .lab
        .node(from)
        .ok_or_else(|| format!("node {from} is not in the lab"))?;
    let (server, addr) = match to {
        Target::Overlay { container } => {
            let node = ctx
                .lab
                .node(container)
                .ok_or_else(|| format!("node {container} is not in the lab"))?;
            let addr = verify::overlay_address(&node).await?;
            (node, addr)
        }
        Target::Underlay { to, addr } => {
            let name = to.split(':').next().unwrap_or(to);
            let node = ctx
                .lab
                .node(name)
                .ok_or_else(|| format!("{to} is not a node: a stream needs a server node"))?;
            (node, *addr)
        }
    };
    Stream::start(&client, &server, addr).await
}

/// The check a stream ends in, before its outcome is known.
fn stream_check(ctx: Context<'_>, e: &Expectation, from: &str, to: &Target) -> Check {
    let (a, b) = match to {
        Target::Overlay { container } => (host_of(ctx, from), host_of(ctx, container)),
        Target::Underlay { .. } => (from.to_string(), from.to_string()),
    };
    Check {
        what: e.describe(),
        verdict: Verdict::Fail,
        expected: "every byte delivered in order, no reset".into(),
        seen: String::new(),
        node: from.to_string(),
        connection: (a != b).then(|| format!("{a} -> {b}")),
        router_log: ctx.overlay.and_then(|o| o.log_path(&a)),
        figures: serde_json::Value::Null,
    }
}

fn host_of(ctx: Context<'_>, node: &str) -> String {
    match ctx.lab.plan().node(node).map(|n| &n.kind) {
        Some(crate::model::plan::NodeKind::Container { host }) => host.clone(),
        _ => node.to_string(),
    }
}

/// Stops and checks the streams that run until `step` (every one left when `None`).
async fn finish_streams(
    streams: &mut Vec<(String, Check, Result<Stream, String>)>,
    step: Option<&str>,
    into: &mut StepReport,
) {
    let (now, later): (Vec<_>, Vec<_>) = std::mem::take(streams)
        .into_iter()
        .partition(|(until, _, _)| step.is_none_or(|s| s == until));
    *streams = later;
    for (_, mut check, started) in now {
        let outcome = match started {
            Ok(stream) => stream.stop().await,
            Err(e) => Err(format!("did not start: {e}")),
        };
        match outcome {
            Ok(o) => {
                check.verdict = Verdict::Pass;
                check.seen = "survived".into();
                check.figures = serde_json::to_value(o).unwrap_or_default();
            }
            Err(e) => check.seen = e,
        }
        into.checks.push(check);
    }
}

/// Takes the lab down (unless `keep`); the routers' logs stay when a check `failed`, since
/// the report points at them.
async fn tear_down(lab: Lab, overlay: Option<Overlay>, keep: bool, failed: bool) {
    if keep {
        if let Some(o) = overlay {
            o.leave_running();
        }
        match lab.persist() {
            Ok(info) => eprintln!(
                "lab {} left up; remove it with `netsim down {}`",
                info.id, info.id
            ),
            Err(e) => eprintln!("cannot keep the lab: {e}"),
        }
        return;
    }
    if let Some(mut o) = overlay {
        if failed {
            o.keep_logs();
            eprintln!(
                "the routers' logs stay in {} (remove them with `netsim clean --logs`)",
                crate::overlay_run::log_dir(lab.id()).display()
            );
        }
        o.stop();
    }
    if let Err(e) = lab.down().await {
        tracing::warn!("teardown: {e}");
    }
}
