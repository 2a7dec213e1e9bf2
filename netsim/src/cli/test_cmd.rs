//! `netsim test FILE...` and the host form of `netsim run FILE`: each file run as a test by
//! [`crate::scenario::run`], reports printed, JUnit written; Ctrl-C (or SIGTERM) drops the runs
//! in flight, which tears their labs and routers down.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use futures::StreamExt;

use super::output;
use crate::scenario::{self, Report, RunOptions, StepReport};
use crate::verify::{Check, Verdict};

/// What `netsim test` was asked.
#[derive(Debug)]
pub(super) struct TestArgs {
    pub(super) files: Vec<PathBuf>,
    pub(super) json: bool,
    pub(super) junit: Option<PathBuf>,
    pub(super) jobs: usize,
    pub(super) opts: RunOptions,
}

/// A report for a file that could not be planned: one failed `load` check with the
/// diagnostics.
fn unloadable(file: &Path, why: String) -> Report {
    Report {
        file: file.display().to_string(),
        topology: file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        lab: String::new(),
        shaping: None,
        steps: vec![StepReport {
            name: "load".into(),
            action: "read and plan the topology".into(),
            checks: vec![Check {
                what: "topology is valid".into(),
                verdict: Verdict::Fail,
                expected: "a valid topology".into(),
                seen: why,
                node: "-".into(),
                connection: None,
                router_log: None,
                figures: serde_json::Value::Null,
            }],
        }],
    }
}

async fn run_one(file: PathBuf, opts: RunOptions, index: usize, count: usize) -> Report {
    let plan = match crate::model::load_plan(&file) {
        Ok(plan) => plan,
        Err(d) => return unloadable(&file, d.to_string()),
    };
    let mut opts = opts;
    let tag = if count > 1 {
        format!("[{}/{count}] ", index + 1)
    } else {
        String::new()
    };
    opts.progress = Some(Arc::new(move |line: &str| eprintln!("{tag}{line}")));
    let absolute = std::path::absolute(&file).unwrap_or_else(|_| file.clone());
    let mut report = scenario::run(plan, &absolute, &opts).await;
    report.file = file.display().to_string();
    report
}

/// Runs every file (up to `jobs` at once), prints the reports, writes JUnit; exit code 1 when
/// any check failed, 130 when interrupted.
pub(super) fn run(args: TestArgs) -> Result<ExitCode> {
    let rt = super::runtime()?;
    let count = args.files.len();
    let jobs = args.jobs.max(1);
    let json = args.json;
    let all = async {
        futures::stream::iter(args.files.iter().cloned().enumerate())
            .map(|(i, f)| run_one(f, args.opts.clone(), i, count))
            .buffered(jobs)
            .inspect(|r: &Report| {
                if !json {
                    print!("{}", r.render());
                }
            })
            .collect::<Vec<Report>>()
            .await
    };
    let reports = rt.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            reports = all => Some(reports),
            _ = tokio::signal::ctrl_c() => None,
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => None,
        }
    });
    let Some(reports) = reports else {
        eprintln!("interrupted: the labs in flight were torn down");
        return Ok(ExitCode::from(130));
    };
    if json {
        output::print_json(&reports)?;
    } else if reports.len() > 1 {
        println!();
        print!("{}", scenario::summary_table(&reports));
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, scenario::junit(&reports))
            .with_context(|| format!("cannot write the JUnit report to {}", path.display()))?;
        eprintln!("JUnit report written to {}", path.display());
    }
    Ok(if reports.iter().all(Report::passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
