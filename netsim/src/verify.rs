//! Checking a running lab against its topology's `[[expect]]` assertions, and the report.
//!
//! The report renders to stable text (verdicts, not raw timings) so it can be snapshot-tested;
//! the measured figures are kept for `--json`.

use std::fmt::Write as _;

use std::net::Ipv4Addr;

use futures::future::join_all;
use serde::Serialize;

use crate::lab::Lab;
use crate::measure::icmp::{self, PingOptions};
use crate::model::plan::Expectation;

/// Whether a check held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The assertion held.
    Pass,
    /// The assertion did not hold.
    Fail,
}

/// One checked assertion.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was asserted, e.g. `reach h1 -> h2 (198.18.1.2)`.
    pub what: String,
    /// Whether it held.
    pub verdict: Verdict,
    /// Why it failed (stable text), when it failed.
    pub reason: Option<String>,
    /// Smallest round trip measured, in microseconds (JSON only; varies run to run).
    pub min_rtt_us: Option<u64>,
    /// The address probed (JSON only: overlay addresses are assigned at run time).
    pub addr: Option<Ipv4Addr>,
}

/// The outcome of checking a lab.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The topology's name.
    pub topology: String,
    /// Every check, in the file's order.
    pub checks: Vec<Check>,
    /// The backend that shaped the lab's links, when any link is shaped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shaping: Option<String>,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.verdict == Verdict::Pass)
    }

    /// Stable text for people and snapshots: verdicts, no timings.
    pub fn render(&self) -> String {
        let failed = self
            .checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .count();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} checks, {} passed, {} failed",
            self.topology,
            self.checks.len(),
            self.checks.len() - failed,
            failed
        );
        if let Some(backend) = &self.shaping {
            let _ = writeln!(out, "  links shaped by the {backend} backend");
        }
        for check in &self.checks {
            let verdict = match check.verdict {
                Verdict::Pass => "PASS",
                Verdict::Fail => "FAIL",
            };
            match &check.reason {
                Some(reason) => {
                    let _ = writeln!(out, "  {verdict}  {}: {reason}", check.what);
                }
                None => {
                    let _ = writeln!(out, "  {verdict}  {}", check.what);
                }
            }
        }
        out
    }
}

/// Checks every expectation of the lab's plan, concurrently.
pub async fn check(lab: &Lab) -> Report {
    let checks = lab.plan().expects.iter().map(|e| check_one(lab, e));
    let shaped = lab.plan().links.iter().any(|l| l.shape.is_some());
    Report {
        topology: lab.plan().name.clone(),
        checks: join_all(checks).await,
        shaping: lab
            .backend()
            .filter(|_| shaped)
            .map(|b| b.name().to_string()),
    }
}

async fn check_one(lab: &Lab, expectation: &Expectation) -> Check {
    match expectation {
        Expectation::Reach {
            from,
            to,
            addr,
            reachable,
        } => {
            let what = if *reachable {
                format!("reach {from} -> {to} ({addr})")
            } else {
                format!("no reach {from} -> {to} ({addr})")
            };
            ping_check(lab, what, from, *addr, *reachable).await
        }
        Expectation::OverlayReach {
            from,
            to,
            reachable,
        } => {
            let verb = if *reachable { "reach" } else { "no reach" };
            let Some(target) = lab.node(to) else {
                return fail(
                    format!("{verb} {from} -> {to} (overlay)"),
                    format!("node {to} is not in the lab"),
                );
            };
            let addr = match overlay_address(&target).await {
                Ok(a) => a,
                Err(e) => return fail(format!("{verb} {from} -> {to} (overlay)"), e),
            };
            // The overlay address is the router's choice and varies run to run: the text says
            // "overlay" so reports stay stable, and JSON carries the address.
            ping_check(
                lab,
                format!("{verb} {from} -> {to} (overlay)"),
                from,
                addr,
                *reachable,
            )
            .await
        }
    }
}

/// The overlay address of a container: the first IPv4 address of an interface other than
/// loopback, read inside its namespace.
pub async fn overlay_address(node: &crate::lab::NodeHandle) -> Result<Ipv4Addr, String> {
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

async fn ping_check(lab: &Lab, what: String, from: &str, addr: Ipv4Addr, reachable: bool) -> Check {
    let Some(node) = lab.node(from) else {
        return fail(what, format!("node {from} is not in the lab"));
    };
    let opts = PingOptions::default();
    let count = opts.count;
    let outcome = node
        .run(move || async move { icmp::ping(addr, &opts) })
        .await;
    let result = match outcome {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => return fail(what, format!("ping failed: {e}")),
        Err(e) => return fail(what, format!("cannot run in {from}: {e}")),
    };
    let min_rtt_us = result.min_rtt().map(|d| d.as_micros() as u64);
    let answered = result.received > 0;
    let (verdict, reason) = match (answered, reachable) {
        (true, true) | (false, false) => (Verdict::Pass, None),
        (false, true) => (
            Verdict::Fail,
            Some(format!("no reply to {count} echo requests")),
        ),
        (true, false) => (
            Verdict::Fail,
            Some("answered, but must be unreachable".to_string()),
        ),
    };
    Check {
        what,
        verdict,
        reason,
        min_rtt_us,
        addr: Some(addr),
    }
}

fn fail(what: String, reason: String) -> Check {
    Check {
        what,
        verdict: Verdict::Fail,
        reason: Some(reason),
        min_rtt_us: None,
        addr: None,
    }
}
