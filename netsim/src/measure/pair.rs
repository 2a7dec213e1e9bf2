//! Running a probe between two nodes of a lab: the server half in one namespace, the client
//! half in another, each on its node's own thread.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use thiserror::Error;

use super::perf::{self, PerfOptions, PerfResult, Server, ServerTally, Test};
use crate::lab::NodeHandle;

/// Why a measurement between two nodes could not be taken.
#[derive(Debug, Error)]
pub enum MeasureError {
    /// The server half could not bind.
    #[error("{test} server on {node} cannot bind {addr}: {cause}")]
    Bind {
        /// The test.
        test: &'static str,
        /// The server's node.
        node: String,
        /// The address it tried.
        addr: SocketAddrV4,
        /// Why.
        cause: std::io::Error,
    },
    /// A CPU to pin a half to is not one this process may run on.
    #[error("{test}: cannot pin the {half} to CPU {cpu}: {reason} (pick one of the CPUs `nproc` counts, from 0)")]
    Cpu {
        /// The test.
        test: &'static str,
        /// `server` or `client`.
        half: &'static str,
        /// The CPU asked for.
        cpu: usize,
        /// Why.
        reason: String,
    },
    /// A half failed to run.
    #[error("{test} {half} on {node} failed: {reason}")]
    Half {
        /// The test.
        test: &'static str,
        /// `server` or `client`.
        half: &'static str,
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
}

/// Measures `test` from `client` to `server` listening on `server_addr`.
pub async fn run(
    server: &NodeHandle,
    server_addr: Ipv4Addr,
    client: &NodeHandle,
    test: Test,
    opts: PerfOptions,
) -> Result<(PerfResult, ServerTally), MeasureError> {
    if let Some(cpus) = opts.cpus {
        for (half, cpu) in [("client", cpus.client), ("server", cpus.server)] {
            check_cpu(cpu).map_err(|reason| MeasureError::Cpu {
                test: test.name(),
                half,
                cpu,
                reason,
            })?;
        }
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<Result<SocketAddr, std::io::Error>>();
    let bind_addr = SocketAddrV4::new(server_addr, 0);
    // The server waits for its client for as long as the client may take to connect.
    let accept_timeout = opts.io_timeout + Duration::from_secs(1);
    let server_half = server.run(move || async move {
        let bound =
            pin(opts.cpus.map(|c| c.server)).and_then(|()| Server::bind(test, bind_addr, opts));
        match bound {
            Ok(s) => {
                let addr = s.local_addr();
                let _ = tx.send(addr);
                Some(s.serve(accept_timeout))
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                None
            }
        }
    });
    let client_half = async {
        let addr = match rx.await {
            Ok(Ok(addr)) => addr,
            Ok(Err(cause)) => {
                return Err(MeasureError::Bind {
                    test: test.name(),
                    node: server.name().to_string(),
                    addr: bind_addr,
                    cause,
                })
            }
            Err(_) => {
                return Err(half_error(test, "server", server, "ended before binding"));
            }
        };
        client
            .run(move || async move {
                pin(opts.cpus.map(|c| c.client))?;
                perf::client(test, addr, opts)
            })
            .await
            .map_err(|e| half_error(test, "client", client, e))?
            .map_err(|e| half_error(test, "client", client, e))
    };
    let (server_out, client_out) = futures::join!(server_half, client_half);
    let result = client_out?;
    let tally = match server_out {
        Ok(Some(Ok(tally))) => tally,
        Ok(Some(Err(e))) => return Err(half_error(test, "server", server, e)),
        Ok(None) => return Err(half_error(test, "server", server, "did not bind")),
        Err(e) => return Err(half_error(test, "server", server, e)),
    };
    Ok((result, tally))
}

/// Whether this process may run on `cpu`: checked before a run, so a bad CPU is reported as
/// such and not as a failure of whichever half tried first.
fn check_cpu(cpu: usize) -> Result<(), String> {
    let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map_err(|e| format!("cannot read this process's CPU affinity: {e}"))?;
    match allowed.is_set(cpu) {
        Ok(true) => Ok(()),
        Ok(false) => Err("not in this process's CPU affinity".into()),
        Err(e) => Err(format!("out of range ({e})")),
    }
}

/// Pins the calling thread to `cpu`, if one is given.
fn pin(cpu: Option<usize>) -> std::io::Result<()> {
    cpu.map_or(Ok(()), perf::pin_current_thread)
}

fn half_error(
    test: Test,
    half: &'static str,
    node: &NodeHandle,
    reason: impl std::fmt::Display,
) -> MeasureError {
    MeasureError::Half {
        test: test.name(),
        half,
        node: node.name().to_string(),
        reason: reason.to_string(),
    }
}
