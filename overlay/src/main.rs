//! `overlay-router`: the overlay's per-host daemon.
//!
//! This is the daemon's skeleton: it validates its configuration and runs until SIGINT or
//! SIGTERM. The control plane (TCP 6783) and the datapaths arrive with their own issues.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use overlay::config::{self, Mtu, Range, RouterConfig};

/// A Weave-Net-style overlay router for one host.
#[derive(Debug, Parser)]
#[command(name = "overlay-router", version, about)]
struct Args {
    /// This router's name, unique in the overlay.
    #[arg(long)]
    name: String,
    /// A peer to connect to (repeatable), as address:port.
    #[arg(long = "peer")]
    peers: Vec<SocketAddr>,
    /// The overlay address range.
    #[arg(long, default_value = "198.19.0.0/16")]
    range: String,
    /// The overlay MTU: `auto` (underlay minus datapath overhead) or a number.
    #[arg(long, default_value = "auto")]
    mtu: String,
    /// Encrypt with this password (prefer the environment variable to the command line).
    #[arg(long, env = "OVERLAY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let args = Args::parse();
    let config = match build_config(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("overlay-router: error: {e}");
            return ExitCode::from(2);
        }
    };
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
    runtime.block_on(run(config))
}

fn build_config(args: &Args) -> Result<RouterConfig, config::ConfigError> {
    config::validate_name(&args.name)?;
    Ok(RouterConfig {
        name: args.name.clone(),
        peers: args.peers.clone(),
        range: args.range.parse::<Range>()?,
        encrypted: args.password.is_some(),
        mtu: args.mtu.parse::<Mtu>()?,
    })
}

async fn run(config: RouterConfig) -> ExitCode {
    tracing::info!(
        ?config,
        "router started (skeleton: no control plane or datapath yet)"
    );
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
    tracing::info!("router stopped");
    ExitCode::SUCCESS
}
