//! The `netsim` command line: a thin layer over the library. Every verb is one library call
//! that tests can make too; this module only parses arguments, draws progress and prints.

mod errors;
mod output;
mod suite_cmd;
mod test_cmd;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::lab::{self, Lab, NodeHandle, Progress, UpOptions};
use crate::measure::{icmp, matrix, mtu, pair, perf};
use crate::{caps, capture, model, uml};

/// netsim: bring up virtual networks of Linux namespaces from a TOML topology and test them.
#[derive(Debug, Parser)]
#[command(name = "netsim", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run topology files as tests: for each, bring the lab up, check its [[expect]] tables,
    /// run its [[step]]s, report and tear it down (also on failure and Ctrl-C). Exits 1 when
    /// any check fails.
    Test {
        /// Topology files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the reports as JSON (with the measured figures).
        #[arg(long)]
        json: bool,
        /// Also write a JUnit XML report here (a test case per expectation).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Run up to N files at once (each in a lab of its own).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Link shaping backend: netem or emulated (default: netem where the kernel has it).
        #[arg(long)]
        backend: Option<String>,
        /// How long the overlay's routers may take to be ready and connected to all their
        /// peers, in seconds (default 60); the error names every router still missing peers.
        #[arg(long, value_name = "SECS")]
        overlay_timeout: Option<u64>,
        /// An extra `overlay-router run` argument for every router, repeatable
        /// (`--router-arg=--fallback-ms --router-arg=60000`).
        #[arg(long = "router-arg", allow_hyphen_values = true)]
        router_args: Vec<String>,
        /// Kernel to run under: `host`, or `uml` for the whole run inside a fresh
        /// User-Mode-Linux guest (netem, openvswitch: for files with `[lab] needs`).
        #[arg(long, value_enum, default_value_t = KernelChoice::Host)]
        kernel: KernelChoice,
    },
    /// Bring up a lab, check its [[expect]] tables and [[step]]s, print the report and tear it
    /// down: `netsim test` for one file, with --keep.
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
        /// How long the overlay's routers may take to be ready and connected to all their
        /// peers, in seconds (default 60); the error names every router still missing peers.
        #[arg(long, value_name = "SECS")]
        overlay_timeout: Option<u64>,
        /// Kernel to run under: `host`, or `uml` for the whole job inside a fresh
        /// User-Mode-Linux guest (for hosts without openvswitch or netem).
        #[arg(long, value_enum, default_value_t = KernelChoice::Host)]
        kernel: KernelChoice,
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
        /// How long the overlay's routers may take to be ready and connected to all their
        /// peers, in seconds (default 60); the error names every router still missing peers.
        #[arg(long, value_name = "SECS")]
        overlay_timeout: Option<u64>,
        /// Kernel to run under: `host`, or `uml` for a lab kept in a background
        /// User-Mode-Linux guest (`ls`, `exec --lab`, `down` and `clean` find it by id).
        #[arg(long, value_enum, default_value_t = KernelChoice::Host)]
        kernel: KernelChoice,
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
        /// Also remove the overlay router logs kept from failed runs of labs that are gone.
        #[arg(long)]
        logs: bool,
    },
    /// Show which kernel features and user-space tools this machine has, what each missing
    /// one means and how to get it.
    Doctor {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// Kernel to probe: `host`, or `uml` for a User-Mode-Linux guest's.
        #[arg(long, value_enum, default_value_t = KernelChoice::Host)]
        kernel: KernelChoice,
    },
    /// ICMP echo from node A to B (a node, `node:iface` or an address).
    Ping {
        /// Lab id.
        lab: String,
        /// Node the pings leave from.
        from: String,
        /// Target: node, `node:iface` or address.
        to: String,
        /// Echo requests to send.
        #[arg(long, short = 'c', default_value_t = 5)]
        count: u16,
        /// Time between requests, e.g. `200ms`.
        #[arg(long, short = 'i', default_value = "200ms", value_parser = parse_duration)]
        interval: Duration,
        /// ICMP payload bytes.
        #[arg(long, short = 's', default_value_t = 56)]
        size: usize,
        /// Set Don't Fragment.
        #[arg(long)]
        df: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// qperf-style measurements from client node A to server node B.
    Perf {
        /// Lab id.
        lab: String,
        /// Client node.
        from: String,
        /// Server: node, `node:iface` or one of its addresses.
        to: String,
        /// Tests to run, comma separated: tcp_bw, tcp_lat, udp_bw, udp_lat.
        #[arg(long, value_delimiter = ',', default_value = "tcp_bw,tcp_lat")]
        test: Vec<String>,
        /// How long each test runs, e.g. `5s`.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        duration: Duration,
        /// Message size in bytes (default: qperf's for each test).
        #[arg(long)]
        msg_size: Option<usize>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// iperf-style matrix: many TCP streams at once, per-client and aggregate throughput.
    Matrix {
        /// Lab id.
        lab: String,
        /// Server nodes, comma separated; with several, client i uses server i mod N.
        #[arg(long, value_delimiter = ',', required = true)]
        servers: Vec<String>,
        /// Client nodes, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        clients: Vec<String>,
        /// Parallel streams per client.
        #[arg(long, default_value_t = 1)]
        streams: usize,
        /// How long the streams run, e.g. `5s`.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        duration: Duration,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Path MTU from A to B: the largest DF packet that passes, and what happens to a bigger one.
    Mtu {
        /// Lab id.
        lab: String,
        /// Node the probes leave from.
        from: String,
        /// Target: node, `node:iface` or address.
        to: String,
        /// Largest packet size to try.
        #[arg(long, default_value_t = 9000)]
        max: u32,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The agent inside a guest lab's User-Mode-Linux guest (started by `up --kernel uml`).
    #[command(hide = true)]
    UmlAgent {
        /// Lab id.
        #[arg(long)]
        id: String,
        /// The share directory as the guest sees it.
        #[arg(long)]
        share: PathBuf,
        /// Topology file.
        file: PathBuf,
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
    /// Run an overlay router client verb against a node's router: `netsim overlay LAB h1 --
    /// status --json`, `netsim overlay LAB h1 -- peers add 198.18.1.9`.
    Overlay {
        /// Lab id.
        lab: String,
        /// The host whose router to ask.
        node: String,
        /// The router verb and its arguments, after `--` (see `overlay-router --help`).
        #[arg(last = true, required = true)]
        verb: Vec<String>,
    },
    /// Capture packets inside a node: one line each, or a pcap file with `-w` (pcapng if the
    /// name ends in .pcapng). Runs until --count, --duration or Ctrl-C.
    Capture {
        /// Lab id.
        lab: String,
        /// NODE (every interface but lo), NODE:IFACE, or NODE:IFACE,IFACE.
        target: String,
        /// Write the frames to this file instead of printing them.
        #[arg(short = 'w', long = "write")]
        file: Option<PathBuf>,
        /// A filter in libpcap's language, as tcpdump takes it (`icmp`, `udp port 6784`).
        #[arg(long)]
        filter: Option<String>,
        /// Stop after this many frames.
        #[arg(long, short = 'c')]
        count: Option<usize>,
        /// Stop after this long, e.g. `10s`.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
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
    /// Drop packets of a kind as they enter a node, on every interface (a switch: every
    /// port): `netsim drop LAB sw1 frag-needed` (a PMTU black hole), `netsim drop LAB sw1
    /// udp-over:700` (UDP packets and fragments longer than 700 bytes).
    Drop {
        /// Lab id.
        lab: String,
        /// Node name.
        node: String,
        /// `frag-needed` or `udp-over:BYTES`.
        what: String,
        /// Lift the filter instead.
        #[arg(long)]
        lift: bool,
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
    /// Measure bring-up and teardown speed of generated star and line topologies; with
    /// --overlay, how a full mesh of overlay routers converges, idles and stops as it grows;
    /// with --suite FILE, a benchmark suite (datapaths against native per link profile, as
    /// tables, JSON and plots; docs/bench-suite.md); `bench compare OLD NEW` compares two
    /// suite runs.
    Bench {
        #[command(subcommand)]
        action: Option<BenchAction>,
        /// Run the benchmark suite in FILE (see docs/bench-suite.md).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["overlay", "shape"])]
        suite: Option<PathBuf>,
        /// With --suite: write results.json, results.md and the plots (SVG, PNG) into DIR.
        #[arg(long, value_name = "DIR", requires = "suite")]
        out: Option<PathBuf>,
        /// With --suite: write a results page (machine, targets, tables, plots) to FILE.
        #[arg(long, value_name = "FILE", requires = "suite")]
        page: Option<PathBuf>,
        /// With --suite: print the labs and cases the suite runs, and the time it will take.
        #[arg(long, requires = "suite")]
        dry_run: bool,
        /// Shapes to measure.
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BenchShape::Star, BenchShape::Line])]
        shape: Vec<BenchShape>,
        /// Host counts to measure (default 10,100,500; with --overlay 10,30,100).
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<usize>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// Measure the overlay instead: N hosts on one switch, one container each, a router
        /// per host; time to converge and tear down, idle CPU, memory per router, and the
        /// growth exponent (a Markdown table).
        #[arg(long)]
        overlay: bool,
        /// With --overlay: seconds of idle CPU sampling after convergence (twice: right after, then settled).
        #[arg(long, default_value_t = 10, value_name = "SECS")]
        idle_secs: u64,
        /// With --overlay: how long the routers may take to converge, in seconds.
        #[arg(long, default_value_t = 600, value_name = "SECS")]
        overlay_timeout: u64,
    },
}

/// `netsim bench` verbs.
#[derive(Debug, Subcommand)]
enum BenchAction {
    /// Compare two suite runs (`results.json` of `bench --suite --out`): cases that got worse
    /// beyond the noise of their repeats; exit code 1 when any did, 2 when a file is unreadable.
    Compare {
        /// The earlier run's results.json.
        old: PathBuf,
        /// The later run's results.json.
        new: PathBuf,
        /// The smallest change in percent that counts, even when the repeats spread less.
        #[arg(long, default_value_t = 5.0, value_name = "PERCENT")]
        min_change: f64,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a suite run's tables, plots and results page again from its `results.json`,
    /// without measuring (after the report or the page changed): `netsim bench render
    /// docs/bench-results/results.json --page docs/bench-results.md`. Exit code 2 when the
    /// file is unreadable.
    Render {
        /// The run's results.json (of `bench --suite --out DIR`).
        results: PathBuf,
        /// Where results.md and the plots go (default: the directory of RESULTS).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Write the results page to FILE as well.
        #[arg(long, value_name = "FILE")]
        page: Option<PathBuf>,
    },
}

/// Which kernel a verb runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KernelChoice {
    /// The kernel this machine boots.
    Host,
    /// A fresh User-Mode-Linux guest (Debian's user-mode-linux package), see `netsim::uml`.
    Uml,
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
            eprintln!("{}", errors::render(&err));
            // Interrupted while a guest ran: exit as a shell reports the signal.
            match err.downcast_ref::<uml::UmlError>() {
                Some(uml::UmlError::Interrupted { signal }) => {
                    ExitCode::from(u8::try_from(128 + signal).unwrap_or(1))
                }
                _ => ExitCode::from(1),
            }
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

/// Run this netsim binary with `args` inside a fresh User-Mode-Linux guest; its output reaches
/// ours unchanged and its exit code becomes ours.
fn in_guest(args: Vec<OsString>, mut writable: Vec<PathBuf>) -> Result<ExitCode> {
    let (exe, exe_dir) = uml::guest_visible_exe()?;
    writable.extend(exe_dir);
    let opts = guest_options(writable)?;
    let mut argv = vec![exe.into_os_string()];
    argv.extend(args);
    let exit = uml::run(uml::GuestCommand::new(argv), &opts)?;
    Ok(exit_code(exit.code))
}

/// Guest options from the environment, with progress on a terminal (or with
/// `NETSIM_UML_PROGRESS=1`) and signals stopping the guest; checked before anything boots.
fn guest_options(writable: Vec<PathBuf>) -> Result<uml::GuestOptions> {
    let mut opts = uml::GuestOptions::from_env()?;
    opts.progress = std::io::stderr().is_terminal()
        || std::env::var("NETSIM_UML_PROGRESS").is_ok_and(|v| v == "1");
    opts.handle_signals = true;
    opts.writable.extend(writable);
    uml::preflight(&opts)?;
    Ok(opts)
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
        Command::Doctor {
            json,
            kernel: KernelChoice::Uml,
        } => {
            let mut args: Vec<OsString> = vec!["doctor".into()];
            if json {
                args.push("--json".into());
            }
            in_guest(args, Vec::new())
        }
        Command::Doctor { json, .. } => {
            let caps = caps::probe();
            let tools = crate::tools::check();
            let router = crate::overlay_run::find_binary();
            if json {
                let mut v = serde_json::to_value(caps)?;
                v["tools"] = serde_json::to_value(&tools)?;
                v["overlay_router"] = serde_json::to_value(router.as_ref().ok())?;
                output::print_json(&v)?;
            } else {
                print!("{}", caps.report());
                println!();
                print!("{}", crate::tools::report(&tools));
                match &router {
                    Ok(path) => println!(
                        "  ok       {:<14} the overlay router of topologies with [overlay] ({})",
                        crate::overlay_run::BIN_NAME,
                        path.display()
                    ),
                    Err(e) => println!(
                        "  MISSING  {:<14} the overlay router of topologies with [overlay]\n           why: {e}",
                        crate::overlay_run::BIN_NAME
                    ),
                }
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
            let guests = uml::labs::list();
            if json {
                let mut all: Vec<serde_json::Value> = Vec::new();
                for l in &labs {
                    let mut v = serde_json::to_value(l)?;
                    v["kernel"] = "host".into();
                    all.push(v);
                }
                for g in &guests {
                    let mut v = serde_json::to_value(g)?;
                    v["kernel"] = "uml".into();
                    v["alive"] = g.alive().into();
                    all.push(v);
                }
                output::print_json(&all)?;
            } else {
                print!("{}", output::labs_table(&labs, &guests));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Clean { json, logs } => {
            let report = lab::clean()?;
            let guests = uml::labs::clean();
            let logs = if logs {
                crate::overlay_run::clean_logs()
            } else {
                Vec::new()
            };
            if json {
                let mut v = serde_json::to_value(&report)?;
                v["guest_labs"] = serde_json::to_value(&guests)?;
                v["router_logs"] = serde_json::to_value(&logs)?;
                output::print_json(&v)?;
            } else {
                for id in &guests {
                    println!("removed guest lab {id} (its User-Mode-Linux guest had died)");
                }
                for id in &logs {
                    println!("removed the router logs kept from lab {id}");
                }
                if guests.is_empty() || !report.labs.is_empty() {
                    print!("{}", output::clean_text(&report));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Down { id } => {
            if uml::labs::find(&id).is_some() {
                uml::labs::down(&id)?;
            } else {
                lab::down(&id)?;
                // The logs of routers `netsim up` left running go with their lab.
                let _ = std::fs::remove_dir_all(crate::overlay_run::log_dir(&id));
            }
            eprintln!("lab {id} is down");
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec { lab, node, cmd } => {
            let guest = match &lab {
                Some(id) => uml::labs::find(id),
                // With no id: the only guest lab, when no lab runs on the host.
                None => match (lab::list()?.is_empty(), uml::labs::list().as_slice()) {
                    (true, [only]) => Some(only.clone()),
                    _ => None,
                },
            };
            if let Some(rec) = guest {
                let code = uml::labs::exec(&rec.id, &node, &cmd)?;
                return Ok(exit_code(code));
            }
            let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
            let code = lab::exec(lab.as_deref(), &node, &argv)?;
            Ok(exit_code(code))
        }
        Command::Up {
            file,
            name,
            json,
            kernel: KernelChoice::Uml,
            ..
        } => {
            let plan = load_plan(&file)?;
            let opts = guest_options(Vec::new())?;
            let rec = uml::labs::up(&absolute(&file), &plan, name.as_deref(), &opts)?;
            if json {
                output::print_json(&rec)?;
            } else {
                println!(
                    "lab {id} is up in a User-Mode-Linux guest (pid {pid}, {nodes} nodes). Try `netsim exec --lab {id} NODE -- ip addr`; remove it with `netsim down {id}`.",
                    id = rec.id,
                    pid = rec.pid,
                    nodes = rec.nodes
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::UmlAgent { id, share, file } => {
            let plan = load_plan(&file)?;
            uml::labs::agent(plan, &id, &file, &share)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Up {
            file,
            name,
            backend,
            json,
            overlay_timeout,
            ..
        } => {
            let plan = load_plan(&file)?;
            let backend = parse_backend(backend.as_deref())?;
            needs_router(&plan)?;
            let rt = runtime()?;
            let lab = rt.block_on(bring_up(plan, name, backend, &absolute(&file)))?;
            if lab.plan().overlay.is_some() {
                // The routers outlive this command: `netsim down` kills them with the lab.
                match rt.block_on(crate::overlay_run::Overlay::start(
                    &lab,
                    &overlay_options(Vec::new(), overlay_timeout),
                )) {
                    Ok(overlay) => overlay.leave_running(),
                    Err(e) => {
                        let _ = rt.block_on(lab.down());
                        return Err(anyhow::Error::new(e).context("starting the overlay"));
                    }
                }
            }
            let shaping = lab
                .shaping_backend()
                .map(|b| format!(", link shaping: {b}"))
                .unwrap_or_default();
            let info = lab.persist()?;
            if json {
                output::print_json(&info)?;
            } else {
                println!(
                    "lab {id} is up ({nodes} nodes{shaping}). Try `netsim exec --lab {id} NODE -- ip addr`, `netsim status {id}`; remove it with `netsim down {id}`.",
                    id = info.id,
                    nodes = info.nodes,
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
            overlay_timeout,
            kernel: KernelChoice::Uml,
        } => {
            if keep {
                bail!(
                    "--keep cannot go with --kernel uml: the guest, and the lab in it, stop \
                     when the run ends; keep a lab in a guest with `netsim up --kernel uml FILE`"
                );
            }
            let file = absolute(&file);
            let mut args: Vec<OsString> = vec!["run".into(), file.clone().into()];
            if let Some(backend) = backend {
                args.extend(["--backend".into(), backend.into()]);
            }
            if let Some(name) = name {
                args.extend(["--name".into(), name.into()]);
            }
            if json {
                args.push("--json".into());
            }
            if let Some(secs) = overlay_timeout {
                args.extend(["--overlay-timeout".into(), secs.to_string().into()]);
            }
            // The guest sees the host's files read-only at the same paths, except under its
            // own /tmp and /run: share the topology's directory there.
            let mut writable = Vec::new();
            if uml::hidden_in_guest(&file) {
                if let Some(dir) = file.parent() {
                    writable.push(dir.to_path_buf());
                }
            }
            in_guest(args, writable)
        }
        Command::Run {
            file,
            name,
            keep,
            backend,
            json,
            overlay_timeout,
            ..
        } => {
            let opts = crate::scenario::RunOptions {
                name,
                keep,
                backend: parse_backend(backend.as_deref())?,
                overlay: overlay_options(Vec::new(), overlay_timeout),
                ..Default::default()
            };
            // A bad file is refused before anything is made.
            let plan = load_plan(&file)?;
            needs_router(&plan)?;
            test_cmd::run(test_cmd::TestArgs {
                files: vec![file],
                json,
                junit: None,
                jobs: 1,
                opts,
            })
        }
        Command::Test {
            files,
            json,
            junit,
            jobs,
            backend,
            router_args,
            overlay_timeout,
            kernel: KernelChoice::Uml,
        } => {
            let mut args: Vec<OsString> = vec!["test".into()];
            // The guest sees the host's files read-only at the same paths, except under its
            // own /tmp and /run: share what it must read there, and where the JUnit goes.
            let mut writable = Vec::new();
            for file in &files {
                let file = absolute(file);
                if uml::hidden_in_guest(&file) {
                    writable.extend(file.parent().map(Path::to_path_buf));
                }
                args.push(file.into());
            }
            if let Some(path) = &junit {
                let path = absolute(path);
                writable.extend(path.parent().map(Path::to_path_buf));
                args.extend(["--junit".into(), path.into()]);
            }
            if json {
                args.push("--json".into());
            }
            if let Some(backend) = backend {
                args.extend(["--backend".into(), backend.into()]);
            }
            args.extend(["--jobs".into(), jobs.to_string().into()]);
            for a in router_args {
                args.push(format!("--router-arg={a}").into());
            }
            if let Some(secs) = overlay_timeout {
                args.extend(["--overlay-timeout".into(), secs.to_string().into()]);
            }
            writable.sort();
            writable.dedup();
            in_guest(args, writable)
        }
        Command::Test {
            files,
            json,
            junit,
            jobs,
            backend,
            router_args,
            overlay_timeout,
            ..
        } => {
            let opts = crate::scenario::RunOptions {
                backend: parse_backend(backend.as_deref())?,
                overlay: overlay_options(router_args, overlay_timeout),
                ..Default::default()
            };
            test_cmd::run(test_cmd::TestArgs {
                files,
                json,
                junit,
                jobs,
                opts,
            })
        }
        Command::Bench {
            action:
                Some(BenchAction::Compare {
                    old,
                    new,
                    min_change,
                    json,
                }),
            ..
        } => suite_cmd::run_compare(&old, &new, min_change, json),
        Command::Bench {
            action: Some(BenchAction::Render { results, out, page }),
            ..
        } => suite_cmd::run_render(&results, out, page),
        Command::Bench {
            suite: Some(file),
            out,
            page,
            dry_run,
            json,
            ..
        } => suite_cmd::run_suite(suite_cmd::SuiteArgs {
            file,
            out,
            page,
            json,
            dry_run,
            overlay_timeout: None,
        }),
        Command::Bench {
            overlay: true,
            hosts,
            json,
            idle_secs,
            overlay_timeout,
            ..
        } => run_overlay_bench(hosts, json, idle_secs, overlay_timeout),
        Command::Bench {
            shape, hosts, json, ..
        } => {
            let hosts = if hosts.is_empty() {
                vec![10, 100, 500]
            } else {
                hosts
            };
            run_bench(&shape, &hosts, json)
        }
        Command::Ping {
            lab,
            from,
            to,
            count,
            interval,
            size,
            df,
            json,
        } => {
            let opts = icmp::PingOptions {
                count,
                interval,
                size,
                df,
                ..icmp::PingOptions::default()
            };
            let lab = Lab::attach(&lab)?;
            let rt = runtime()?;
            let (node, addr) = endpoints(&rt, &lab, &from, &to)?;
            let result =
                rt.block_on(node.run(move || async move { icmp::ping(addr, &opts) }))??;
            if json {
                output::print_json(&result)?;
            } else {
                print!("{}", output::ping_text(&from, &to, addr, &result));
            }
            Ok(if result.received > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Perf {
            lab,
            from,
            to,
            test,
            duration,
            msg_size,
            json,
        } => {
            let tests = test
                .iter()
                .map(|name| {
                    perf::Test::from_name(name).with_context(|| {
                        format!("unknown test {name:?}: use tcp_bw, tcp_lat, udp_bw or udp_lat")
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let lab = Lab::attach(&lab)?;
            let rt = runtime()?;
            let (client, addr) = endpoints(&rt, &lab, &from, &to)?;
            let server = server_node(&lab, &to)?;
            let mut results = Vec::new();
            for t in tests {
                let opts = perf::PerfOptions {
                    duration,
                    msg_size: msg_size.unwrap_or(t.default_msg_size()),
                    ..perf::PerfOptions::for_test(t)
                };
                eprintln!(
                    "perf: {} from {from} to {to} for {duration:?} ...",
                    t.name()
                );
                let (result, _) = rt.block_on(pair::run(&server, addr, &client, t, opts))?;
                if !json {
                    println!("{}", output::perf_line(&result));
                }
                results.push(result);
            }
            if json {
                output::print_json(&results)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Matrix {
            lab,
            servers,
            clients,
            streams,
            duration,
            json,
        } => {
            let lab = Lab::attach(&lab)?;
            let rt = runtime()?;
            let mut server_list = Vec::new();
            for name in &servers {
                let node = server_node(&lab, name)?;
                let addr = rt.block_on(lab.address_of(name))?;
                server_list.push(matrix::MatrixServer { node, addr });
            }
            let client_nodes = clients
                .iter()
                .map(|name| server_node(&lab, name))
                .collect::<Result<Vec<_>>>()?;
            let (servers, clients) = if server_list.len() > 1 {
                matrix::paired(server_list, &client_nodes)
            } else {
                let Some(server) = server_list.pop() else {
                    bail!("name at least one server with --servers");
                };
                matrix::streams_per_client(server, &client_nodes, streams)
            };
            let opts = perf::PerfOptions {
                duration,
                ..perf::PerfOptions::for_test(perf::Test::TcpBw)
            };
            eprintln!("matrix: {} clients for {duration:?} ...", clients.len());
            let result = rt.block_on(matrix::run(&servers, &clients, opts))?;
            if json {
                output::print_json(&result)?;
            } else {
                print!("{}", output::matrix_text(&result));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Mtu {
            lab,
            from,
            to,
            max,
            json,
        } => {
            let lab = Lab::attach(&lab)?;
            let rt = runtime()?;
            let (node, addr) = endpoints(&rt, &lab, &from, &to)?;
            let found =
                rt.block_on(node.run(move || async move { mtu::path_mtu(addr, max, 2) }))??;
            if json {
                output::print_json(&found)?;
            } else {
                println!("{}", output::mtu_line(&from, &to, &found));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { id, json } => {
            let status = lab::faults::status(&id)?;
            let routers = runtime()?.block_on(crate::overlay_run::router_statuses(&id));
            if json {
                let mut v = serde_json::to_value(&status)?;
                v["overlay"] = serde_json::to_value(&routers)?;
                output::print_json(&v)?;
            } else {
                print!("{}", status.render());
                print!("{}", crate::overlay_run::render_routers(&routers));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Overlay { lab, node, verb } => {
            Ok(exit_code(crate::overlay_run::client(&lab, &node, &verb)?))
        }
        Command::Capture {
            lab,
            target,
            file,
            filter,
            count,
            duration,
        } => {
            let (node, ifaces) = capture::parse_target(&target);
            let opts = capture::CaptureOptions {
                ifaces,
                filter,
                count,
                duration,
            };
            run_capture(&lab, &node, &opts, file.as_deref())
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
        Command::Drop {
            lab,
            node,
            what,
            lift,
        } => {
            let rule =
                crate::model::step::DropRule::parse(&what).map_err(|e| anyhow::anyhow!(e))?;
            runtime()?.block_on(lab::faults::filter(&lab, &node, rule, !lift))?;
            Ok(ExitCode::SUCCESS)
        }
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
            // One line on stdout once both sockets are open: the lab waits for it
            // (`lab::shaping::spawn_delay_line`). Nothing else is written there.
            let mut ready = || {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", crate::delay_line::READY);
                let _ = out.flush();
            };
            match crate::delay_line::run(&cfg, &|| false, &mut ready) {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(e) => bail!("delay line: {e}"),
            }
        }
    }
}

/// `netsim capture`: frames to a file or to stdout, one line each, until the count, the
/// duration, or SIGINT/SIGTERM (the file is complete then too).
fn run_capture(
    lab: &str,
    node: &str,
    opts: &capture::CaptureOptions,
    file: Option<&Path>,
) -> Result<ExitCode> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let lab = Lab::attach(lab)?;
    let handle = server_node(&lab, node)?;
    let rt = runtime()?;
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    rt.spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        flag.store(true, Ordering::Relaxed);
    });
    let mut cap = rt.block_on(capture::Capture::start(&handle, opts))?;
    let mut out = match file {
        Some(path) => Some(capture::file::CaptureFile::create(path, cap.interfaces())?),
        None => None,
    };
    // Scripts wait for this line (on stderr) before they make the traffic to capture.
    eprintln!(
        "capturing on {node}: {}{}",
        cap.interfaces().join(", "),
        opts.filter
            .as_ref()
            .map(|f| format!(" (filter {f:?})"))
            .unwrap_or_default()
    );
    let started = cap.started();
    let mut frames = 0usize;
    let mut take = |frame: capture::Frame| -> Result<()> {
        frames += 1;
        match &mut out {
            Some(f) => f.write(&frame)?,
            None => println!(
                "{:.6} {}",
                frame.time.saturating_sub(started).as_secs_f64(),
                frame.summary()
            ),
        }
        Ok(())
    };
    loop {
        if interrupted.load(Ordering::Relaxed) {
            for frame in cap.stop()? {
                take(frame)?;
            }
            break;
        }
        match cap.next(Duration::from_millis(100))? {
            capture::Next::Frame(frame) => take(frame)?,
            capture::Next::Idle => {}
            capture::Next::Done => break,
        }
    }
    if let Some(f) = out {
        f.finish()?;
    }
    eprintln!("{frames} frames captured");
    Ok(ExitCode::SUCCESS)
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

/// The node named `from` and the address `to` resolves to.
fn endpoints(
    rt: &tokio::runtime::Runtime,
    lab: &Lab,
    from: &str,
    to: &str,
) -> Result<(NodeHandle, Ipv4Addr)> {
    let node = server_node(lab, from)?;
    let addr = rt.block_on(lab.address_of(to))?;
    Ok((node, addr))
}

/// The node named by `target` (`node` or `node:iface`).
fn server_node(lab: &Lab, target: &str) -> Result<NodeHandle> {
    let name = target.split(':').next().unwrap_or(target);
    lab.node(name).with_context(|| {
        let known: Vec<&str> = lab.plan().nodes.iter().map(|n| n.name.as_str()).collect();
        format!(
            "no node {name:?} in lab {}; its nodes are: {}",
            lab.id(),
            known.join(", ")
        )
    })
}

/// Parses durations like `200ms`, `2s`, `1.5s`, `1m`.
fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write e.g. 200ms, 2s or 1m"))?;
    let secs = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" | "" => value,
        "m" => value * 60.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use us, ms, s or m"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is out of range"))
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

/// Refuses a plan with an `[overlay]` section before anything is made when the router binary
/// is missing (instead of after the lab is up).
fn needs_router(plan: &model::Plan) -> Result<()> {
    if plan.overlay.is_some() {
        crate::overlay_run::find_binary().context("the topology has an [overlay] section")?;
    }
    Ok(())
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

/// The overlay options the `up`, `run` and `test` flags set.
fn overlay_options(
    router_args: Vec<String>,
    timeout_secs: Option<u64>,
) -> crate::overlay_run::OverlayOptions {
    crate::overlay_run::OverlayOptions {
        router_args,
        start_timeout: timeout_secs.map(std::time::Duration::from_secs),
        ..Default::default()
    }
}

fn run_overlay_bench(
    hosts: Vec<usize>,
    json: bool,
    idle_secs: u64,
    timeout_secs: u64,
) -> Result<ExitCode> {
    use crate::measure::overlay_scale;
    let hosts = if hosts.is_empty() {
        vec![10, 30, 100]
    } else {
        hosts
    };
    if let Some(n) = hosts.iter().find(|&&n| n < 2) {
        bail!("--hosts {n}: a mesh needs at least 2 hosts");
    }
    let opts = overlay_scale::ScaleOptions {
        idle_window: std::time::Duration::from_secs(idle_secs),
        overlay: overlay_options(Vec::new(), Some(timeout_secs)),
    };
    let rt = runtime()?;
    let say = |line: &str| eprintln!("bench --overlay: {line}");
    let report = rt
        .block_on(overlay_scale::run(&hosts, &opts, &say))
        .context("overlay scale benchmark")?;
    if json {
        output::print_json(&report)?;
    } else {
        print!("{}", overlay_scale::render(&report));
    }
    Ok(ExitCode::SUCCESS)
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
