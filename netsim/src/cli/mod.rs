//! The `netsim` command line: a thin layer over the library. Every verb is one library call
//! that tests can make too; this module only parses arguments, draws progress and prints.

mod output;

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
        Command::Up { file, name, json } => {
            let plan = load_plan(&file)?;
            let rt = runtime()?;
            let lab = rt.block_on(bring_up(plan, name, &absolute(&file)))?;
            let info = lab.persist()?;
            if json {
                output::print_json(&info)?;
            } else {
                println!(
                    "lab {id} is up ({nodes} nodes). Try `netsim exec --lab {id} NODE -- ip addr`; remove it with `netsim down {id}`.",
                    id = info.id,
                    nodes = info.nodes
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            file,
            name,
            keep,
            json,
        } => {
            let plan = load_plan(&file)?;
            let rt = runtime()?;
            rt.block_on(async {
                let lab = bring_up(plan, name, &absolute(&file)).await?;
                let overlay = if lab.plan().overlay.is_some() {
                    match crate::overlay_run::Overlay::start(&lab, &Default::default()).await {
                        Ok(o) => Some(o),
                        Err(e) => {
                            let _ = lab.down().await;
                            return Err(anyhow::Error::new(e).context("starting the overlay"));
                        }
                    }
                } else {
                    None
                };
                let report = verify::check(&lab).await;
                if json {
                    output::print_json(&report)?;
                } else {
                    print!("{}", report.render());
                }
                let passed = report.passed();
                if let Some(o) = overlay {
                    if keep {
                        o.leave_running();
                    } else {
                        o.stop();
                    }
                }
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
            let (node, addr) = endpoints(&lab, &from, &to)?;
            let result =
                runtime()?.block_on(node.run(move || async move { icmp::ping(addr, &opts) }))??;
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
            let (client, addr) = endpoints(&lab, &from, &to)?;
            let server = server_node(&lab, &to)?;
            let rt = runtime()?;
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
            let mut server_list = Vec::new();
            for name in &servers {
                let node = server_node(&lab, name)?;
                let addr = lab.plan().address_of(name).map_err(anyhow::Error::msg)?;
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
            let result = runtime()?.block_on(matrix::run(&servers, &clients, opts))?;
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
            let (node, addr) = endpoints(&lab, &from, &to)?;
            let found = runtime()?
                .block_on(node.run(move || async move { mtu::path_mtu(addr, max, 2) }))??;
            if json {
                output::print_json(&found)?;
            } else {
                println!("{}", output::mtu_line(&from, &to, &found));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The node named `from` and the address `to` resolves to.
fn endpoints(lab: &Lab, from: &str, to: &str) -> Result<(NodeHandle, Ipv4Addr)> {
    let node = server_node(lab, from)?;
    let addr = lab.plan().address_of(to).map_err(anyhow::Error::msg)?;
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

async fn bring_up(plan: model::Plan, name: Option<String>, file: &Path) -> Result<Lab> {
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
