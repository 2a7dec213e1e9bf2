//! A paced TCP stream that runs in the background across steps of a test: 4 KiB of a known
//! pattern every 10 ms from a client node to a server node until it is told to stop. What
//! matters is that it survives: no reset, no timeout, every byte in place; the longest stall
//! the server saw is kept for reports that want it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::lab::NodeHandle;

/// How long either end waits for the other before the stream counts as broken.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// Bytes a write carries, and the pause between writes.
const CHUNK: usize = 4096;
const PACE: Duration = Duration::from_millis(10);

/// What the stream saw, once stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StreamOutcome {
    /// Bytes the server read, all in the order sent.
    pub bytes: u64,
    /// The longest wait of the server for the next bytes, in milliseconds.
    pub longest_stall_ms: u64,
}

/// A stream running in the background; [`Stream::stop`] ends it and says how it went.
#[derive(Debug)]
pub struct Stream {
    stop: StopOnDrop,
    server: tokio::task::JoinHandle<Result<StreamOutcome, String>>,
    client: tokio::task::JoinHandle<Result<u64, String>>,
}

/// Tells the client to stop when dropped, so a stream abandoned (a test interrupted) ends too.
#[derive(Debug)]
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The byte at offset `i` of the stream.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 9)) as u8
}

impl Stream {
    /// Starts a server in `server` listening on `addr` and a client in `client` connecting to
    /// it; returns once the connection is up (or why it is not).
    pub async fn start(
        client: &NodeHandle,
        server: &NodeHandle,
        addr: Ipv4Addr,
    ) -> Result<Stream, String> {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<SocketAddr, String>>();
        let server_node = server.clone();
        let server = tokio::spawn(async move {
            server_node
                .run(move || async move {
                    let listener = TcpListener::bind((addr, 0)).map_err(|e| e.to_string());
                    let bound = listener
                        .as_ref()
                        .map_err(Clone::clone)
                        .and_then(|l| l.local_addr().map_err(|e| e.to_string()));
                    let _ = tx.send(bound);
                    serve(&listener?)
                })
                .await
                .map_err(|e| e.to_string())?
        });
        let at = rx
            .await
            .map_err(|_| "the stream's server ended before listening".to_string())??;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let client_node = client.clone();
        let client = tokio::spawn(async move {
            client_node
                .run(move || async move { send(at, &flag) })
                .await
                .map_err(|e| e.to_string())?
        });
        Ok(Stream {
            stop: StopOnDrop(stop),
            server,
            client,
        })
    }

    /// Stops the stream and checks it: every byte sent arrived in order, nothing broke.
    pub async fn stop(self) -> Result<StreamOutcome, String> {
        self.stop.0.store(true, Ordering::Relaxed);
        let sent = self
            .client
            .await
            .map_err(|e| format!("the stream's client task failed: {e}"))?;
        let got = self
            .server
            .await
            .map_err(|e| format!("the stream's server task failed: {e}"))?;
        let sent = sent.map_err(|e| format!("client: {e}"))?;
        let got = got.map_err(|e| format!("server: {e}"))?;
        if got.bytes != sent {
            return Err(format!("the server read {} of {sent} bytes", got.bytes));
        }
        Ok(got)
    }
}

fn accept(listener: &TcpListener) -> Result<TcpStream, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + STALL_LIMIT;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
}

fn serve(listener: &TcpListener) -> Result<StreamOutcome, String> {
    let mut s = accept(listener)?;
    s.set_read_timeout(Some(STALL_LIMIT)).ok();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    let mut last = Instant::now();
    let mut longest = Duration::ZERO;
    loop {
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("read at byte {got}: {e}"))?;
        if n == 0 {
            return Ok(StreamOutcome {
                bytes: got,
                longest_stall_ms: u64::try_from(longest.as_millis()).unwrap_or(u64::MAX),
            });
        }
        longest = longest.max(last.elapsed());
        last = Instant::now();
        if let Some(k) = buf[..n]
            .iter()
            .enumerate()
            .position(|(k, b)| *b != pattern(got + k as u64))
        {
            return Err(format!("byte {} out of place", got + k as u64));
        }
        got += n as u64;
    }
}

fn send(at: SocketAddr, stop: &AtomicBool) -> Result<u64, String> {
    let mut s = TcpStream::connect_timeout(&at, Duration::from_secs(10))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_write_timeout(Some(STALL_LIMIT)).ok();
    let mut sent = 0u64;
    let mut buf = vec![0u8; CHUNK];
    while !stop.load(Ordering::Relaxed) {
        for (k, b) in buf.iter_mut().enumerate() {
            *b = pattern(sent + k as u64);
        }
        s.write_all(&buf)
            .map_err(|e| format!("write at byte {sent}: {e}"))?;
        sent += buf.len() as u64;
        std::thread::sleep(PACE);
    }
    Ok(sent)
}
