//! `overlay-router`: the overlay's per-host daemon (`run`) and its client verbs, which talk to
//! a running daemon's API socket.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use overlay::api::{self, PeerOp, Request};
use overlay::config::{self, Mtu, Range};
use overlay::daemon::{Daemon, FastPathMode, FastPathOptions, Options};
use overlay::datapath::select::Timing;

/// A Weave-Net-style overlay router for one host.
#[derive(Debug, Parser)]
#[command(name = "overlay-router", version, about)]
struct Cli {
    /// The API socket (default /run/overlay/<name>.sock).
    #[arg(long, global = true)]
    api: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the router in this namespace until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Show the router's status.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The router's name (to find its default API socket).
        #[arg(long)]
        name: Option<String>,
    },
    /// Attach a container namespace (a name under /run/netns, or a path).
    Attach {
        /// The namespace.
        netns: String,
        /// A specific overlay address.
        addr: Option<std::net::Ipv4Addr>,
        /// The router's name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Detach a container namespace.
    Detach {
        /// The namespace.
        netns: String,
        /// The router's name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Add or remove a peer.
    Peers {
        /// `add` or `remove`.
        op: String,
        /// The peer's underlay address.
        addr: IpAddr,
        /// With `remove`: remove the peer even if it is still connected (its containers get
        /// new addresses; duplicates are possible until they do).
        #[arg(long)]
        force: bool,
        /// The router's name.
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// This router's name, unique in the overlay.
    #[arg(long)]
    name: String,
    /// Control-plane listen address (the sleeve UDP port is the same).
    #[arg(long, default_value = "0.0.0.0:6783")]
    listen: SocketAddr,
    /// A peer to connect to (repeatable): an address, optionally with :port (ignored).
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// The overlay address range.
    #[arg(long, default_value = "198.19.0.0/16")]
    range: String,
    /// The overlay MTU: `auto` (underlay minus datapath overhead) or a number.
    #[arg(long, default_value = "auto")]
    mtu: String,
    /// Encrypt with this password (set it through the environment, not the command line).
    #[arg(long, env = "OVERLAY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Where the router keeps state (address holdings).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The kernel fast path: `auto` (the Open vSwitch datapath where the module is, else kernel
    /// vxlan, else sleeve), `odp` or `vxlan` (that tier or sleeve), or `off` (sleeve only).
    #[arg(long, default_value = "auto", value_parser = ["auto", "odp", "vxlan", "off"])]
    fast_path: String,
    /// Milliseconds an Open vSwitch flow may stay unused before it is removed.
    #[arg(long, default_value_t = 10_000)]
    flow_idle_ms: u64,
    /// UDP port of the vxlan fast path.
    #[arg(long, default_value_t = overlay::VXLAN_PORT)]
    fast_path_port: u16,
    /// Fast-path heartbeat interval, in milliseconds.
    #[arg(long, default_value_t = 500)]
    heartbeat_ms: u64,
    /// A connection whose fast-path heartbeats go unanswered this long falls back to sleeve
    /// (milliseconds).
    #[arg(long, default_value_t = 1500)]
    fallback_ms: u64,
    /// A connection that fell back returns to the fast path once its heartbeats have been
    /// answered without a break this long (milliseconds).
    #[arg(long, default_value_t = 5000)]
    recover_ms: u64,
    /// Fast-path heartbeat interval on a connection both sides saw healthy and without frames
    /// for this long, in milliseconds (a block there is noticed within three of them, or
    /// within --fallback-ms of frames flowing again); at most --heartbeat-ms: no pacing.
    #[arg(long, default_value_t = 5000)]
    heartbeat_idle_ms: u64,
    /// A connection healthy on the fast path and without frames for this long goes to the idle
    /// heartbeat pace (milliseconds).
    #[arg(long, default_value_t = 2000)]
    idle_after_ms: u64,
}

fn parse_peer(s: &str) -> Result<IpAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a.ip());
    }
    s.parse::<IpAddr>()
        .map_err(|_| format!("peer {s:?} is not an address (write 198.18.1.2 or 198.18.1.2:6783)"))
}

fn options(args: &RunArgs, api: Option<PathBuf>) -> Result<Options, String> {
    config::validate_name(&args.name).map_err(|e| e.to_string())?;
    let peers = args
        .peers
        .iter()
        .map(|p| parse_peer(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Options {
        name: args.name.clone(),
        listen: args.listen,
        peers,
        range: args.range.parse::<Range>().map_err(|e| e.to_string())?,
        password: args.password.clone().filter(|p| !p.is_empty()),
        mtu: args.mtu.parse::<Mtu>().map_err(|e| e.to_string())?,
        api: api.unwrap_or_else(|| api::default_path(&args.name)),
        state_dir: args.state_dir.clone(),
        fast_path: fast_path_options(args)?,
    })
}

fn fast_path_options(args: &RunArgs) -> Result<FastPathOptions, String> {
    let ms = std::time::Duration::from_millis;
    if args.heartbeat_ms == 0 || args.fallback_ms < 2 * args.heartbeat_ms {
        return Err(format!(
            "--fallback-ms {} must be at least two heartbeat intervals (--heartbeat-ms {}), or a \
             single late heartbeat would move connections to sleeve",
            args.fallback_ms, args.heartbeat_ms
        ));
    }
    Ok(FastPathOptions {
        mode: match args.fast_path.as_str() {
            "odp" => FastPathMode::Odp,
            "vxlan" => FastPathMode::Vxlan,
            "off" => FastPathMode::Off,
            _ => FastPathMode::Auto,
        },
        flow_idle: ms(args.flow_idle_ms.max(100)),
        port: args.fast_path_port,
        timing: Timing {
            interval: ms(args.heartbeat_ms),
            fallback_after: ms(args.fallback_ms),
            recover_after: ms(args.recover_ms),
            idle_interval: ms(args.heartbeat_idle_ms),
            idle_after: ms(args.idle_after_ms),
        },
    })
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let cli = Cli::parse();
    let api_for = |name: &Option<String>| -> Result<PathBuf, String> {
        match (&cli.api, name) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(n)) => Ok(api::default_path(n)),
            (None, None) => Err("say which router: --api PATH or --name NAME".into()),
        }
    };
    let client = |name: &Option<String>, req: Request| -> Result<serde_json::Value, String> {
        let path = api_for(name)?;
        api::call_blocking(&path, &req).map_err(|e| e.to_string())
    };
    let result = match &cli.cmd {
        Cmd::Run(args) => return run(args, cli.api.clone()),
        Cmd::Status { json, name } => client(name, Request::Status).map(|v| {
            if *json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", api::render_status(&v));
            }
        }),
        Cmd::Attach { netns, addr, name } => client(
            name,
            Request::Attach {
                netns: netns.clone(),
                addr: *addr,
            },
        )
        .map(|v| println!("{}", v["addr"].as_str().unwrap_or("?"))),
        Cmd::Detach { netns, name } => client(
            name,
            Request::Detach {
                netns: netns.clone(),
            },
        )
        .map(|_| ()),
        Cmd::Peers {
            op,
            addr,
            force,
            name,
        } => {
            let op = match op.as_str() {
                "add" => Ok(PeerOp::Add),
                "remove" => Ok(PeerOp::Remove),
                other => Err(format!("peers {other:?}: use `add` or `remove`")),
            };
            op.and_then(|op| {
                client(
                    name,
                    Request::Peers {
                        op,
                        addr: *addr,
                        force: *force,
                    },
                )
            })
            .map(|v| print!("{}", api::render_peers_answer(&v)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("overlay-router: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &RunArgs, api: Option<PathBuf>) -> ExitCode {
    let opts = match options(args, api) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("overlay-router: error: {e}");
            return ExitCode::from(2);
        }
    };
    // One thread: the control plane is I/O, and at a hundred routers on two cores a second
    // worker per router only added work-stealing wake-ups (routers were ready in 3-5 s
    // instead of 1). The datapaths' busy parts have threads of their own.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("overlay-router: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let api_path = opts.api.clone();
        let daemon = match Daemon::start(opts).await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("overlay-router: error: {e:#}");
                return ExitCode::from(1);
            }
        };
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("overlay-router: error: cannot watch SIGTERM: {e}");
                    return ExitCode::from(1);
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = std::fs::remove_file(&api_path);
        daemon.shutdown().await;
        drop(daemon);
        tracing::info!("router stopped");
        ExitCode::SUCCESS
    })
}
