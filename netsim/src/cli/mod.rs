//! The `netsim` command line: a thin layer over the library. Every verb is one library call
//! that tests can make too; this module only parses arguments, draws progress and prints.

mod output;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::lab::{self, Lab, Progress, UpOptions};
use crate::{caps, model, verify};

/// netsim: bring up virtual networks of Linux namespaces from a TOML topology and test them.
#[derive(Debug, Parser)]
#[command(name = "netsim", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bring up a lab, check its [[expect]] assertions, print the report and tear it down.
    Run {
        /// Topology file.
        file: PathBuf,
        /// Lab id (default: the topology's name and a random suffix).
        #[arg(long)]
        name: Option<String>,
        /// Leave the lab up afterwards (remove it with `netsim down ID`).
        #[arg(long)]
        keep: bool,
        /// Link shaping backend: netem or emulated (default: netem where the kernel has it).
        #[arg(long)]
        backend: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Bring up a lab and leave it running (owned by nobody; remove it with `netsim down`).
    Up {
        /// Topology file.
        file: PathBuf,
        /// Lab id (default: the topology's name and a random suffix).
        #[arg(long)]
        name: Option<String>,
        /// Link shaping backend: netem or emulated (default: netem where the kernel has it).
        #[arg(long)]
        backend: Option<String>,
        /// Print the lab's details as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Tear down a lab: exactly its namespaces, links and processes.
    Down {
        /// Lab id, as `netsim ls` shows it.
        id: String,
    },
    /// List the labs on this machine.
    Ls {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a node's namespace; exits with the command's exit code.
    Exec {
        /// Lab id (may be left out when exactly one lab is up).
        #[arg(long)]
        lab: Option<String>,
        /// Node name.
        node: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Validate a topology file and show the resolved plan.
    Check {
        /// Topology file.
        file: PathBuf,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a topology as a Graphviz DOT graph (`netsim graph F | dot -Tsvg > lab.svg`).
    Graph {
        /// Topology file.
        file: PathBuf,
    },
    /// Print the JSON schema of the topology format (for editors).
    Schema,
    /// Remove labs whose owner process is gone (crashed or killed), and nothing else.
    Clean {
        /// Print what was removed as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show which kernel features this machine has and what each missing one means.
    Doctor {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a lab's links (shape now, cut or not), partitions, port blocks and processes,
    /// and its shaping backend.
    Status {
        /// Lab id.
        id: String,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change, cut or heal one link of a running lab.
    Link {
        #[command(subcommand)]
        cmd: Box<LinkCmd>,
    },
    /// Partition nodes from other nodes: `netsim partition LAB h1,h2 h3,h4`.
    Partition {
        /// Lab id.
        lab: String,
        /// One side: node names, comma-separated.
        left: String,
        /// The other side: node names, comma-separated.
        right: String,
    },
    /// Heal every partition and cut link of a lab.
    Heal {
        /// Lab id.
        lab: String,
    },
    /// Drop a protocol's traffic to and from a port in and out of a node: `netsim block LAB h1
    /// udp 6784`.
    Block {
        /// Lab id.
        lab: String,
        /// Node name.
        node: String,
        /// `tcp` or `udp`.
        proto: String,
        /// Port.
        port: u16,
    },
    /// Lift a `netsim block`.
    Unblock {
        /// Lab id.
        lab: String,
        /// Node name.
        node: String,
        /// `tcp` or `udp`.
        proto: String,
        /// Port.
        port: u16,
    },
    /// Stop (SIGSTOP), continue, kill or restart a process netsim started in a node.
    Proc {
        /// What to do.
        #[arg(value_enum)]
        action: ProcVerb,
        /// Lab id.
        lab: String,
        /// Node name.
        node: String,
        /// Process id (as `netsim status LAB` lists).
        pid: u32,
    },
    /// (internal) Run a link's delay line in the current namespace.
    #[command(hide = true)]
    DelayLine {
        /// The configuration, as JSON.
        #[arg(long)]
        config: String,
    },
    /// Measure how closely link shaping matches its configuration (rate, delay, loss) on
    /// each backend, and print a table.
    BenchShaping {
        /// Backends to measure (default: the one this kernel would use, plus emulated).
        #[arg(long, value_delimiter = ',')]
        backend: Vec<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure bring-up and teardown speed of generated star and line topologies.
    Bench {
        /// Shapes to measure.
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BenchShape::Star, BenchShape::Line])]
        shape: Vec<BenchShape>,
        /// Host counts to measure.
        #[arg(long, value_delimiter = ',', default_values_t = [10usize, 100, 500])]
        hosts: Vec<usize>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum LinkCmd {
    /// Change a link's impairment: `netsim link set LAB A B --delay 10ms --loss 1%`.
    Set {
        /// Lab id.
        lab: String,
        /// One end (node name).
        x: String,
        /// The other end.
        y: String,
        /// Only the direction from X to Y (default: both).
        #[arg(long)]
        oneway: bool,
        /// Start from an unimpaired link.
        #[arg(long)]
        clear: bool,
        /// Rate, e.g. 100mbit (`none` removes the limit).
        #[arg(long)]
        rate: Option<String>,
        /// Delay, e.g. 10ms.
        #[arg(long)]
        delay: Option<String>,
        /// Jitter, e.g. 1ms.
        #[arg(long)]
        jitter: Option<String>,
        /// uniform, normal or pareto.
        #[arg(long)]
        distribution: Option<String>,
        /// Loss, e.g. 1%.
        #[arg(long)]
        loss: Option<String>,
        /// Loss correlation, e.g. 25%.
        #[arg(long)]
        loss_correlation: Option<String>,
        /// Reordering, e.g. 25%.
        #[arg(long)]
        reorder: Option<String>,
        /// Duplication, e.g. 1%.
        #[arg(long)]
        duplicate: Option<String>,
        /// Corruption, e.g. 0.1%.
        #[arg(long)]
        corrupt: Option<String>,
        /// Queue limit in packets (`default` for the backend's).
        #[arg(long)]
        limit: Option<String>,
    },
    /// Cut a link: nothing passes, its configuration stays.
    Cut {
        /// Lab id.
        lab: String,
        /// One end.
        x: String,
        /// The other end.
        y: String,
    },
    /// Heal a cut link.
    Heal {
        /// Lab id.
        lab: String,
        /// One end.
        x: String,
        /// The other end.
        y: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProcVerb {
    Stop,
    Cont,
    Kill,
    Restart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BenchShape {
    Star,
    Line,
}

/// Entry point of the `netsim` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("netsim: error: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check { file, json } => {
            let plan = load_plan(&file)?;
            if json {
                output::print_json(&plan)?;
            } else {
                print!("{}", plan.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph { file } => {
            let plan = load_plan(&file)?;
            print!("{}", model::graph::to_dot(&plan));
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            output::print_json(&model::json_schema())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor { json } => {
            let caps = caps::probe();
            if json {
                output::print_json(caps)?;
            } else {
                print!("{}", caps.report());
                let backend = lab::shaping::Backend::choose(caps);
                println!(
                    "\nlink shaping backend: {backend} ({})",
                    match backend {
                        lab::shaping::Backend::Netem => "netem with tbf; see docs/shaping.md",
                        lab::shaping::Backend::Emulated =>
                            "tbf for rate, nftables for loss, netsim's delay line for delay, \
                             jitter, reordering, duplication, corruption; see docs/shaping.md",
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls { json } => {
            let labs = lab::list()?;
            if json {
                output::print_json(&labs)?;
            } else {
                print!("{}", output::labs_table(&labs));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Clean { json } => {
            let report = lab::clean()?;
            if json {
                output::print_json(&report)?;
            } else {
                print!("{}", output::clean_text(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Down { id } => {
            lab::down(&id)?;
            eprintln!("lab {id} is down");
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec { lab, node, cmd } => {
            let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
            let code = lab::exec(lab.as_deref(), &node, &argv)?;
            Ok(exit_code(code))
        }
        Command::Up {
            file,
            name,
            backend,
            json,
        } => {
            let plan = load_plan(&file)?;
            let backend = parse_backend(backend.as_deref())?;
            let rt = runtime()?;
            let lab = rt.block_on(bring_up(plan, name, backend, &absolute(&file)))?;
            let info = lab.persist()?;
            if json {
                output::print_json(&info)?;
            } else {
                println!(
                    "lab {id} is up ({nodes} nodes, link shaping: {backend}). Try `netsim exec --lab {id} NODE -- ip addr`, `netsim status {id}`; remove it with `netsim down {id}`.",
                    id = info.id,
                    nodes = info.nodes,
                    backend = info.backend.map_or("none", |b| b.name()),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            file,
            name,
            keep,
            backend,
            json,
        } => {
            let plan = load_plan(&file)?;
            let backend = parse_backend(backend.as_deref())?;
            let rt = runtime()?;
            rt.block_on(async {
                let lab = bring_up(plan, name, backend, &absolute(&file)).await?;
                if let Some(b) = lab.backend() {
                    eprintln!("lab {}: link shaping backend {b}", lab.id());
                }
                let report = verify::check(&lab).await;
                if json {
                    output::print_json(&report)?;
                } else {
                    print!("{}", report.render());
                }
                let passed = report.passed();
                if keep {
                    let info = lab.persist()?;
                    eprintln!(
                        "lab {} left up; remove it with `netsim down {}`",
                        info.id, info.id
                    );
                } else {
                    lab.down().await?;
                }
                Ok::<_, anyhow::Error>(if passed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            })
        }
        Command::Bench { shape, hosts, json } => run_bench(&shape, &hosts, json),
        Command::Status { id, json } => {
            let status = lab::faults::status(&id)?;
            if json {
                output::print_json(&status)?;
            } else {
                print!("{}", status.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Link { cmd } => run_link(*cmd),
        Command::BenchShaping { backend, json } => {
            let mut backends = Vec::new();
            for b in &backend {
                match lab::shaping::Backend::parse(b) {
                    Some(b) => backends.push(b),
                    None => bail!("unknown backend {b:?}: use netem or emulated"),
                }
            }
            if backends.is_empty() {
                backends.push(lab::shaping::Backend::choose(caps::probe()));
                if !backends.contains(&lab::shaping::Backend::Emulated) {
                    backends.push(lab::shaping::Backend::Emulated);
                }
            }
            let rt = runtime()?;
            let mut rows = Vec::new();
            for b in backends {
                rows.extend(rt.block_on(crate::measure::shaping_bench::run(b))?);
            }
            if json {
                output::print_json(&rows)?;
            } else {
                print!("{}", crate::measure::shaping_bench::render(&rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Partition { lab, left, right } => {
            let split = |s: &str| -> Vec<String> {
                s.split(',')
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect()
            };
            runtime()?.block_on(lab::faults::partition(&lab, &split(&left), &split(&right)))?;
            eprintln!("{left} partitioned from {right}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Heal { lab } => {
            runtime()?.block_on(lab::faults::heal(&lab))?;
            eprintln!("lab {lab}: partitions and cut links healed");
            Ok(ExitCode::SUCCESS)
        }
        Command::Block {
            lab,
            node,
            proto,
            port,
        } => block(&lab, &node, &proto, port, true),
        Command::Unblock {
            lab,
            node,
            proto,
            port,
        } => block(&lab, &node, &proto, port, false),
        Command::Proc {
            action,
            lab,
            node,
            pid,
        } => {
            let action = match action {
                ProcVerb::Stop => lab::faults::ProcAction::Stop,
                ProcVerb::Cont => lab::faults::ProcAction::Cont,
                ProcVerb::Kill => lab::faults::ProcAction::Kill,
                ProcVerb::Restart => lab::faults::ProcAction::Restart,
            };
            let new = runtime()?.block_on(lab::faults::proc_action(&lab, &node, pid, action))?;
            if let Some(new) = new {
                println!("{new}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::DelayLine { config } => {
            let cfg: crate::delay_line::DelayLineConfig =
                serde_json::from_str(&config).context("bad delay-line configuration")?;
            match crate::delay_line::run(&cfg, &|| false) {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(e) => bail!("delay line: {e}"),
            }
        }
    }
}

fn block(lab: &str, node: &str, proto: &str, port: u16, blocked: bool) -> Result<ExitCode> {
    let Some(p) = lab::shaping::Proto::parse(proto) else {
        bail!("unknown protocol {proto:?}: use tcp or udp");
    };
    runtime()?.block_on(lab::faults::block(lab, node, p, port, blocked))?;
    Ok(ExitCode::SUCCESS)
}

fn run_link(cmd: LinkCmd) -> Result<ExitCode> {
    let rt = runtime()?;
    match cmd {
        LinkCmd::Set {
            lab,
            x,
            y,
            oneway,
            clear,
            rate,
            delay,
            jitter,
            distribution,
            loss,
            loss_correlation,
            reorder,
            duplicate,
            corrupt,
            limit,
        } => {
            let mut update = lab::faults::ShapeUpdate {
                clear,
                ..Default::default()
            };
            for (key, value) in [
                ("rate", rate),
                ("delay", delay),
                ("jitter", jitter),
                ("distribution", distribution),
                ("loss", loss),
                ("loss_correlation", loss_correlation),
                ("reorder", reorder),
                ("duplicate", duplicate),
                ("corrupt", corrupt),
                ("limit", limit),
            ] {
                if let Some(v) = value {
                    if let Err(e) = update.set(key, &v) {
                        bail!("--{}: {e}", key.replace('_', "-"));
                    }
                }
            }
            let shape = rt.block_on(lab::faults::set_link(&lab, &x, &y, &update, oneway))?;
            println!("{x} -> {y}: {}", if_a(&lab, &x, &y, &shape, true));
            println!("{y} -> {x}: {}", if_a(&lab, &x, &y, &shape, false));
        }
        LinkCmd::Cut { lab, x, y } => {
            rt.block_on(lab::faults::cut_link(&lab, &x, &y, true))?;
            eprintln!("link {x} -- {y} cut");
        }
        LinkCmd::Heal { lab, x, y } => {
            rt.block_on(lab::faults::cut_link(&lab, &x, &y, false))?;
            eprintln!("link {x} -- {y} healed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The description of direction `x -> y` (`forward`) or `y -> x` of a link's shape.
fn if_a(lab: &str, x: &str, y: &str, shape: &model::plan::LinkShape, forward: bool) -> String {
    let x_is_a = lab::faults::status(lab)
        .ok()
        .and_then(|s| {
            s.links
                .iter()
                .find(|l| (l.a.node == x && l.b.node == y) || (l.a.node == y && l.b.node == x))
                .map(|l| l.a.node == x)
        })
        .unwrap_or(true);
    if x_is_a == forward {
        shape.a_to_b.describe()
    } else {
        shape.b_to_a.describe()
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// The file's absolute path, recorded in the lab's state so `netsim ls` shows it anywhere.
fn absolute(file: &Path) -> PathBuf {
    std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf())
}

fn load_plan(file: &Path) -> Result<model::Plan> {
    match model::load_plan(file) {
        Ok(plan) => Ok(plan),
        Err(diagnostics) => bail!("{diagnostics}"),
    }
}

fn parse_backend(text: Option<&str>) -> Result<Option<lab::shaping::Backend>> {
    match text {
        None => Ok(None),
        Some(t) => match lab::shaping::Backend::parse(t) {
            Some(b) => Ok(Some(b)),
            None => bail!("unknown shaping backend {t:?}: use netem or emulated"),
        },
    }
}

async fn bring_up(
    plan: model::Plan,
    name: Option<String>,
    backend: Option<lab::shaping::Backend>,
    file: &Path,
) -> Result<Lab> {
    let bar = progress_bar();
    let progress = bar.clone().map(|bar| {
        Arc::new(move |p: Progress| {
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
            bar.set_message(format!("{:?}", p.phase).to_lowercase());
        }) as Arc<dyn Fn(Progress) + Send + Sync>
    });
    let opts = UpOptions {
        name,
        progress,
        file: Some(file.to_path_buf()),
        backend,
        ..UpOptions::default()
    };
    let result = Lab::up(plan, opts).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result.with_context(|| format!("bringing up {}", file.display()))
}

/// A progress bar on stderr when it is a terminal; nothing when a script reads the output.
fn progress_bar() -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(0);
    let style =
        ProgressStyle::with_template("{spinner} {msg:<12} [{bar:30}] {pos}/{len} {elapsed}")
            .ok()?
            .progress_chars("=> ");
    bar.set_style(style);
    Some(bar)
}

fn run_bench(shapes: &[BenchShape], hosts: &[usize], json: bool) -> Result<ExitCode> {
    let rt = runtime()?;
    let mut results = Vec::new();
    for shape in shapes {
        for &n in hosts {
            let shape = match shape {
                BenchShape::Star => lab::bench::Shape::Star,
                BenchShape::Line => lab::bench::Shape::Line,
            };
            eprintln!("bench: {shape:?} of {n} hosts ...");
            let result = rt.block_on(lab::bench::run(shape, n))?;
            if !json {
                println!("{}", output::bench_line(&result));
            }
            results.push(result);
        }
    }
    if json {
        output::print_json(&results)?;
    }
    Ok(ExitCode::SUCCESS)
}
