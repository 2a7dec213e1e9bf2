//! The outcome of a test run: steps and their checks. It renders to stable text for people
//! and snapshots (verdicts, envelopes, datapaths, MTUs; no timings, no random ids except a
//! failure's router log path), to JSON with the figures, and to JUnit XML for CI.

use std::fmt::Write as _;

use serde::Serialize;

use crate::verify::{Check, Verdict};

/// One step's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The step's name (`up` and `expect` for the implicit first steps).
    pub name: String,
    /// What it did, in a few words.
    pub action: String,
    /// Its checks, in file order (a failed action is a check too).
    pub checks: Vec<Check>,
}

/// The outcome of one topology file.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The file, as given.
    pub file: String,
    /// The topology's name.
    pub topology: String,
    /// The lab's id (JSON only: it has a random suffix).
    pub lab: String,
    /// The backend that shaped the lab's links, when any link is shaped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shaping: Option<String>,
    /// Every step, in order.
    pub steps: Vec<StepReport>,
}

impl Report {
    /// Every check of every step.
    pub fn checks(&self) -> impl Iterator<Item = (&StepReport, &Check)> {
        self.steps
            .iter()
            .flat_map(|s| s.checks.iter().map(move |c| (s, c)))
    }

    /// How many checks failed.
    pub fn failures(&self) -> usize {
        self.checks()
            .filter(|(_, c)| c.verdict == Verdict::Fail)
            .count()
    }

    /// How many checks were skipped.
    pub fn skips(&self) -> usize {
        self.checks()
            .filter(|(_, c)| c.verdict == Verdict::Skip)
            .count()
    }

    /// Whether no check failed (skipped ones do not count).
    pub fn passed(&self) -> bool {
        self.failures() == 0
    }

    /// Stable text for people and snapshots.
    pub fn render(&self) -> String {
        let total = self.checks().count();
        let failed = self.failures();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} checks in {} steps, {} passed, {} failed{}",
            self.topology,
            total,
            self.steps.len(),
            total - failed - self.skips(),
            failed,
            match self.skips() {
                0 => String::new(),
                n => format!(", {n} skipped"),
            }
        );
        if let Some(backend) = &self.shaping {
            let _ = writeln!(out, "  links shaped by the {backend} backend");
        }
        for step in &self.steps {
            let _ = writeln!(out, "  step {:?}: {}", step.name, step.action);
            for c in &step.checks {
                match c.verdict {
                    Verdict::Pass => {
                        let _ = writeln!(out, "    PASS  {}: {}", c.what, c.seen);
                    }
                    Verdict::Skip => {
                        let _ = writeln!(out, "    SKIP  {}: {}", c.what, c.seen);
                    }
                    Verdict::Fail => {
                        let _ = writeln!(out, "    FAIL  {}", c.what);
                        for line in failure_lines(c) {
                            let _ = writeln!(out, "          {line}");
                        }
                    }
                }
            }
        }
        out
    }
}

/// What a failure says: expected, seen, and where to look.
pub fn failure_lines(c: &Check) -> Vec<String> {
    let mut look = vec![format!("node {}", c.node)];
    if let Some(conn) = &c.connection {
        look.push(format!("connection {conn}"));
    }
    if let Some(log) = &c.router_log {
        look.push(format!("router log {}", log.display()));
    }
    vec![
        format!("expected: {}", c.expected),
        format!("seen:     {}", c.seen),
        format!("look at:  {}", look.join(", ")),
    ]
}

/// The table people see after several files: one line a file.
pub fn summary_table(reports: &[Report]) -> String {
    let width = reports
        .iter()
        .map(|r| r.file.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<width$}  {:>6}  {:>6}  {:>6}  result\n",
        "file", "checks", "passed", "failed"
    );
    for r in reports {
        let total = r.checks().count();
        let failed = r.failures();
        let result = match (failed, r.skips()) {
            (0, 0) => "ok",
            (0, _) => "skipped",
            _ => "FAILED",
        };
        let _ = writeln!(
            out,
            "{:<width$}  {total:>6}  {:>6}  {failed:>6}  {result}",
            r.file,
            total - failed - r.skips(),
        );
    }
    out
}

fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: a test suite a file, a test case an expectation (class name: topology and
/// step), failures with expected, seen and where to look.
pub fn junit(reports: &[Report]) -> String {
    let tests: usize = reports.iter().map(|r| r.checks().count()).sum();
    let failures: usize = reports.iter().map(Report::failures).sum();
    let skipped: usize = reports.iter().map(Report::skips).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"netsim test\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\">"
    );
    for r in reports {
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" file=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">",
            xml(&r.topology),
            xml(&r.file),
            r.checks().count(),
            r.failures(),
            r.skips()
        );
        for (step, c) in r.checks() {
            let _ = write!(
                out,
                "    <testcase classname=\"{}.{}\" name=\"{}\" file=\"{}\"",
                xml(&r.topology),
                xml(&step.name),
                xml(&c.what),
                xml(&r.file)
            );
            if c.verdict == Verdict::Pass {
                out.push_str("/>\n");
                continue;
            }
            if c.verdict == Verdict::Skip {
                let _ = writeln!(
                    out,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    xml(&c.seen)
                );
                continue;
            }
            let lines = failure_lines(c);
            let message = format!(
                "step {:?}: expected {}, seen {}",
                step.name, c.expected, c.seen
            );
            let _ = writeln!(
                out,
                ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                xml(&message),
                xml(&lines.join("\n"))
            );
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(what: &str, pass: bool) -> Check {
        Check {
            what: what.to_string(),
            verdict: if pass { Verdict::Pass } else { Verdict::Fail },
            expected: "sleeve".into(),
            seen: if pass {
                "sleeve".into()
            } else {
                "vxlan (heartbeats on UDP 6784 answered both ways) after 5s".into()
            },
            node: "h1".into(),
            connection: Some("h1 -> h2".into()),
            router_log: (!pass).then(|| "/run/netsim/LAB-overlay/h1.log".into()),
            figures: serde_json::Value::Null,
        }
    }

    fn report() -> Report {
        Report {
            file: "fixtures/field/x/topology.toml".into(),
            topology: "x".into(),
            lab: "x-1234".into(),
            shaping: None,
            steps: vec![
                StepReport {
                    name: "up".into(),
                    action: "bring the lab and its overlay up".into(),
                    checks: vec![check("lab up", true)],
                },
                StepReport {
                    name: "block <6784> & wait".into(),
                    action: "block h2 udp 6784".into(),
                    checks: vec![check("datapath h1 -> h2 on sleeve within 5s", false)],
                },
            ],
        }
    }

    #[test]
    fn a_report_renders_verdicts_and_where_to_look() {
        insta::assert_snapshot!(report().render());
    }

    #[test]
    fn junit_has_a_case_per_expectation_and_escapes_text() {
        insta::assert_snapshot!(junit(&[report()]));
    }

    #[test]
    fn the_summary_table_has_a_line_per_file() {
        insta::assert_snapshot!(summary_table(&[report()]));
    }
}
