//! iperf-style client/server matrices: many TCP bulk streams at once, per-client and aggregate
//! throughput. The three shapes of the Docker networking benchmark are built in:
//! one server with N clients, N servers with N clients (client i to server i mod N), and M
//! client nodes with K streams each against one server.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::Serialize;

use super::pair::MeasureError;
use super::perf::{self, PerfOptions, Test};
use crate::lab::NodeHandle;

/// One server of a matrix: a node and the address it listens on.
#[derive(Clone)]
pub struct MatrixServer {
    /// The node.
    pub node: NodeHandle,
    /// The address to listen on and that clients connect to.
    pub addr: Ipv4Addr,
}

/// One client of a matrix: a node running `streams` parallel streams to server `server`.
#[derive(Clone)]
pub struct MatrixClient {
    /// The node.
    pub node: NodeHandle,
    /// Parallel TCP streams from this node.
    pub streams: usize,
    /// Index into the servers.
    pub server: usize,
}

/// Throughput one client achieved (the sum of its streams, as the receivers counted them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientFigure {
    /// Client node.
    pub node: String,
    /// Server node.
    pub server: String,
    /// Streams it ran.
    pub streams: usize,
    /// Payload bytes per second, summed over its streams.
    pub bytes_per_sec: f64,
    /// Set when a stream ended early.
    pub partial: Option<String>,
}

/// The outcome of a matrix run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatrixResult {
    /// Per client, in the order given.
    pub clients: Vec<ClientFigure>,
    /// Sum over all clients, bytes per second.
    pub aggregate_bytes_per_sec: f64,
}

impl MatrixResult {
    /// Mean throughput per client, bytes per second.
    pub fn per_client_mean(&self) -> f64 {
        if self.clients.is_empty() {
            return 0.0;
        }
        self.aggregate_bytes_per_sec / self.clients.len() as f64
    }
}

/// One server with `clients.len()` clients, one stream each.
pub fn one_server(
    server: MatrixServer,
    clients: &[NodeHandle],
) -> (Vec<MatrixServer>, Vec<MatrixClient>) {
    let clients = clients
        .iter()
        .map(|node| MatrixClient {
            node: node.clone(),
            streams: 1,
            server: 0,
        })
        .collect();
    (vec![server], clients)
}

/// N servers and N clients; client i connects to server i mod N.
pub fn paired(
    servers: Vec<MatrixServer>,
    clients: &[NodeHandle],
) -> (Vec<MatrixServer>, Vec<MatrixClient>) {
    let n = servers.len().max(1);
    let clients = clients
        .iter()
        .enumerate()
        .map(|(i, node)| MatrixClient {
            node: node.clone(),
            streams: 1,
            server: i % n,
        })
        .collect();
    (servers, clients)
}

/// One server; every client node runs `streams` parallel streams.
pub fn streams_per_client(
    server: MatrixServer,
    clients: &[NodeHandle],
    streams: usize,
) -> (Vec<MatrixServer>, Vec<MatrixClient>) {
    let clients = clients
        .iter()
        .map(|node| MatrixClient {
            node: node.clone(),
            streams,
            server: 0,
        })
        .collect();
    (vec![server], clients)
}

/// Runs a matrix of TCP bulk streams for `opts.duration`; with `opts.cpus`, every server's
/// streams on the server CPU and every client's on the client CPU.
pub async fn run(
    servers: &[MatrixServer],
    clients: &[MatrixClient],
    opts: PerfOptions,
) -> Result<MatrixResult, MeasureError> {
    // Each server accepts exactly the streams aimed at it.
    let mut expected = vec![0usize; servers.len()];
    for c in clients {
        match expected.get_mut(c.server) {
            Some(n) => *n += c.streams,
            None => {
                return Err(MeasureError::Half {
                    test: "tcp_bw matrix",
                    half: "client",
                    node: c.node.name().to_string(),
                    reason: format!("server index {} does not exist", c.server),
                })
            }
        }
    }
    let accept_for = opts.io_timeout + opts.duration + Duration::from_secs(2);
    let msg_size = opts.msg_size;
    let mut bound = Vec::new();
    let mut server_runs = Vec::new();
    for (server, streams) in servers.iter().zip(&expected) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let streams = *streams;
        let addr = SocketAddrV4::new(server.addr, 0);
        let pin = opts.cpus.map(|c| c.server);
        server_runs.push(server.node.run(move || async move {
            // The sink threads inherit this thread's CPU affinity.
            if let Some(cpu) = pin {
                if let Err(e) = perf::pin_current_thread(cpu) {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
            let listener = match TcpListener::bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(listener.local_addr());
            serve_streams(listener, streams, accept_for, msg_size);
        }));
        bound.push(rx);
    }
    let server_task = join_all(server_runs);
    let client_task = async {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for (server, rx) in servers.iter().zip(bound) {
            match rx.await {
                Ok(Ok(addr)) => addrs.push(addr),
                Ok(Err(cause)) => {
                    return Err(MeasureError::Bind {
                        test: "tcp_bw matrix",
                        node: server.node.name().to_string(),
                        addr: SocketAddrV4::new(server.addr, 0),
                        cause,
                    })
                }
                Err(_) => {
                    return Err(MeasureError::Half {
                        test: "tcp_bw matrix",
                        half: "server",
                        node: server.node.name().to_string(),
                        reason: "ended before binding".into(),
                    })
                }
            }
        }
        let runs = clients.iter().map(|c| {
            let addr = addrs[c.server];
            let streams = c.streams.max(1);
            c.node.run(move || async move {
                // The stream threads inherit this thread's CPU affinity.
                if let Some(cpu) = opts.cpus.map(|c| c.client) {
                    if let Err(e) = perf::pin_current_thread(cpu) {
                        return (0.0, Some(format!("cannot pin to CPU {cpu}: {e}")));
                    }
                }
                client_streams(addr, streams, opts)
            })
        });
        let outcomes = join_all(runs).await;
        let mut figures = Vec::new();
        for (c, outcome) in clients.iter().zip(outcomes) {
            let (bytes_per_sec, partial) = outcome.map_err(|e| MeasureError::Half {
                test: "tcp_bw matrix",
                half: "client",
                node: c.node.name().to_string(),
                reason: e.to_string(),
            })?;
            figures.push(ClientFigure {
                node: c.node.name().to_string(),
                server: servers[c.server].node.name().to_string(),
                streams: c.streams,
                bytes_per_sec,
                partial,
            });
        }
        Ok(figures)
    };
    let (_, figures) = futures::join!(server_task, client_task);
    let clients = figures?;
    let aggregate_bytes_per_sec = clients.iter().map(|c| c.bytes_per_sec).sum();
    Ok(MatrixResult {
        clients,
        aggregate_bytes_per_sec,
    })
}

/// Accepts `streams` connections (or until `accept_for` passes) and sinks each on its own
/// thread; threads inherit the namespace of the thread that spawns them.
fn serve_streams(listener: TcpListener, streams: usize, accept_for: Duration, msg_size: usize) {
    let deadline = Instant::now() + accept_for;
    let mut sinks = Vec::new();
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while sinks.len() < streams && Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(false).is_err() {
                    continue;
                }
                let _ = stream.set_read_timeout(Some(accept_for));
                sinks.push(std::thread::spawn(move || {
                    perf::sink_stream(stream, msg_size)
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => break,
        }
    }
    for sink in sinks {
        let _ = sink.join();
    }
}

/// Runs `streams` bulk streams to `addr` at once; returns their summed receiver rate.
fn client_streams(addr: SocketAddr, streams: usize, opts: PerfOptions) -> (f64, Option<String>) {
    let handles: Vec<_> = (0..streams)
        .map(|_| std::thread::spawn(move || perf::client(Test::TcpBw, addr, opts)))
        .collect();
    let mut total = 0.0;
    let mut partial = None;
    for h in handles {
        match h.join() {
            Ok(Ok(r)) => {
                total += r.bytes_per_sec.unwrap_or(0.0);
                if let Some(p) = r.partial {
                    partial.get_or_insert(p);
                }
            }
            Ok(Err(e)) => {
                partial.get_or_insert(format!("a stream failed: {e}"));
            }
            Err(_) => {
                partial.get_or_insert("a stream's thread panicked".to_string());
            }
        }
    }
    (total, partial)
}
