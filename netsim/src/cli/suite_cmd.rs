//! `netsim bench --suite FILE`, `netsim bench compare OLD NEW` and `netsim bench render
//! RESULTS`: a thin layer over [`crate::suite`] (progress bars, files, exit codes).

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::output;
use crate::suite::{cases, compare, page, plot, report, results::SuiteResults, run, spec};

/// What `netsim bench --suite` was asked.
#[derive(Debug)]
pub(super) struct SuiteArgs {
    pub(super) file: PathBuf,
    pub(super) out: Option<PathBuf>,
    pub(super) page: Option<PathBuf>,
    pub(super) json: bool,
    pub(super) dry_run: bool,
    pub(super) overlay_timeout: Option<u64>,
}

/// Progress as bars on a terminal (one for the case running, one for the whole run with the
/// time left), as lines otherwise.
struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    case: Mutex<Option<ProgressBar>>,
    plain: bool,
}

impl Bars {
    fn new(runs: usize) -> Self {
        let plain = !std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if plain {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        });
        let total = multi.add(ProgressBar::new(runs as u64));
        total.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} [{bar:40}] {pos}/{len} runs, {elapsed} so far, about {eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        total.set_prefix("suite");
        Self {
            multi,
            total,
            case: Mutex::new(None),
            plain,
        }
    }

    fn line(&self, text: &str) {
        if self.plain {
            eprintln!("bench --suite: {text}");
        } else {
            let _ = self.multi.println(text);
        }
    }
}

impl run::Progress for Bars {
    fn begin(&self, case: &str, runs: usize) {
        let bar = self
            .multi
            .insert_before(&self.total, ProgressBar::new(runs as u64));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix("case");
        bar.set_message(case.to_string());
        if let Ok(mut c) = self.case.lock() {
            *c = Some(bar);
        }
    }

    fn step(&self) {
        if let Ok(c) = self.case.lock() {
            if let Some(bar) = c.as_ref() {
                bar.inc(1);
            }
        }
        self.total.inc(1);
    }

    fn end(&self, summary: &str) {
        if let Ok(mut c) = self.case.lock() {
            if let Some(bar) = c.take() {
                bar.finish_and_clear();
            }
        }
        self.line(summary);
    }

    fn note(&self, line: &str) {
        self.line(line);
    }

    fn skip(&self, runs: usize) {
        self.total.inc(runs as u64);
    }
}

/// `netsim bench --suite FILE [--out DIR] [--page FILE] [--json] [--dry-run]`.
pub(super) fn run_suite(args: SuiteArgs) -> Result<ExitCode> {
    let suite = match spec::load(&args.file) {
        Ok(s) => s,
        Err(d) => {
            eprintln!("{d}");
            return Ok(ExitCode::from(2));
        }
    };
    let labs = cases::expand(&suite);
    if args.dry_run {
        print!("{}", cases::render(&suite, &labs));
        return Ok(ExitCode::SUCCESS);
    }
    let runs: usize = labs.iter().map(|l| l.runs(suite.repeats)).sum();
    eprintln!("{}", cases::render(&suite, &labs).trim_end());
    let out_dir = args.out.clone();
    if let Some(dir) = &out_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the output directory {}", dir.display()))?;
    }
    let bars = Bars::new(runs);
    let opts = run::RunOptions {
        overlay_binary: None,
        start_timeout: args.overlay_timeout.map(Duration::from_secs),
    };
    let rt = super::runtime()?;
    let results = rt.block_on(async {
        tokio::select! {
            r = run::run(&suite, &args.file, &opts, &bars) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    bars.total.finish_and_clear();
    let Some(results) = results else {
        bail!("interrupted: the labs and routers of the case running were taken down");
    };
    let results = results.context("benchmark suite")?;
    let out = out_dir.as_deref().map(|d| (d, Json::Write));
    write_outputs(&results, out, args.page.as_deref(), "bench --suite")?;
    if args.json {
        output::print_json(&results)?;
    } else {
        print!("{}", report::markdown(&results));
        println!(
            "Targets:\n\n{}",
            report::render_targets(&report::targets(&results))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `netsim bench render RESULTS [--out DIR] [--page FILE]`: the tables, plots and results page
/// of a stored run, written again (after the report or the page changed) without measuring.
pub(super) fn run_render(
    results_path: &Path,
    out: Option<PathBuf>,
    page: Option<PathBuf>,
) -> Result<ExitCode> {
    let results = match read_results(results_path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    // Next to the results by default; results.json itself is left as it is.
    let dir = out.unwrap_or_else(|| {
        results_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    });
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the output directory {}", dir.display()))?;
    write_outputs(
        &results,
        Some((&dir, Json::Keep)),
        page.as_deref(),
        "bench render",
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Whether [`write_outputs`] writes results.json.
#[derive(Clone, Copy, PartialEq)]
enum Json {
    /// A run's figures, new.
    Write,
    /// A re-render: the stored figures stay as they are (floats would not round-trip to the
    /// byte).
    Keep,
}

/// Writes a run's files: into the directory of `out` results.json (see [`Json`]), results.md
/// and the plots; the results page to `page`. `who` prefixes the lines saying what was
/// written.
fn write_outputs(
    results: &SuiteResults,
    out: Option<(&Path, Json)>,
    page: Option<&Path>,
    who: &str,
) -> Result<()> {
    let mut plots = Vec::new();
    let out_dir = out.map(|(d, _)| d);
    if let Some((dir, json)) = out {
        let write_json = json == Json::Write;
        let json_path = dir.join("results.json");
        if write_json {
            let text = serde_json::to_string_pretty(results)? + "\n";
            std::fs::write(&json_path, text)
                .with_context(|| format!("cannot write {}", json_path.display()))?;
        }
        let md = dir.join("results.md");
        std::fs::write(&md, report::markdown(results))
            .with_context(|| format!("cannot write {}", md.display()))?;
        match plot::write_all(results, dir) {
            Ok(files) => plots = files,
            Err(e) => eprintln!("{who}: no plots: {e}"),
        }
        let json_note = if write_json {
            format!("{} (JSON), ", json_path.display())
        } else {
            String::new()
        };
        eprintln!(
            "{who}: wrote {json_note}{} (tables) and {} plot files in {}",
            md.display(),
            plots.len(),
            dir.display()
        );
    }
    if let Some(page_path) = page {
        let rel = relative_plots(page_path, &plots);
        // How to take the run again, whoever wrote the page.
        let command = format!(
            "netsim bench --suite {} --out {} --page {}",
            results.file,
            out_dir.map_or_else(|| "DIR".into(), |d| d.display().to_string()),
            page_path.display()
        );
        std::fs::write(page_path, page::render(results, &rel, &command))
            .with_context(|| format!("cannot write {}", page_path.display()))?;
        eprintln!("{who}: wrote the results page {}", page_path.display());
    }
    Ok(())
}

/// The plot files as the page links them: relative to the page's directory when under it.
fn relative_plots(page: &Path, plots: &[PathBuf]) -> Vec<String> {
    let base = page.parent().unwrap_or(Path::new(""));
    plots
        .iter()
        .map(|p| p.strip_prefix(base).unwrap_or(p).display().to_string())
        .collect()
}

fn read_results(path: &Path) -> Result<SuiteResults> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not the results.json of `netsim bench --suite ... --out DIR`",
            path.display()
        )
    })
}

/// `netsim bench compare OLD NEW`: exit 0 without regressions, 1 with, 2 when a file cannot
/// be read.
pub(super) fn run_compare(old: &Path, new: &Path, min_change: f64, json: bool) -> Result<ExitCode> {
    let (old, new) = match (read_results(old), read_results(new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    if !(0.0..100.0).contains(&min_change) {
        bail!("--min-change {min_change}: give a percentage from 0 to 100");
    }
    let changes = compare::compare(&old, &new, min_change / 100.0);
    if json {
        output::print_json(&changes)?;
    } else {
        print!("{}", compare::render(&changes));
    }
    let regressed = changes
        .iter()
        .any(|c| c.verdict == compare::Verdict::Regression);
    Ok(if regressed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
