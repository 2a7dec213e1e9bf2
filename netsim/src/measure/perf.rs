//! qperf-style throughput and latency probes: `tcp_bw`, `tcp_lat`, `udp_bw`, `udp_lat`.
//!
//! Each test has a server half and a client half that run on plain blocking sockets in the
//! calling thread's namespace; [`crate::lab::NodeHandle::run`] puts each half in its node. Every
//! socket operation has a timeout, so a peer that never answers or a link cut mid-run ends the
//! test within a bounded time with an error or a partial result, never a hang.
//!
//! Meanings follow qperf: `*_bw` is the payload rate the receiver saw; `*_lat` is half the mean
//! round trip of one message bounced back and forth.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Which measurement to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// TCP bulk throughput.
    TcpBw,
    /// TCP request/response latency.
    TcpLat,
    /// UDP bulk throughput.
    UdpBw,
    /// UDP request/response latency.
    UdpLat,
}

impl Test {
    /// qperf's name of the test.
    pub fn name(self) -> &'static str {
        match self {
            Test::TcpBw => "tcp_bw",
            Test::TcpLat => "tcp_lat",
            Test::UdpBw => "udp_bw",
            Test::UdpLat => "udp_lat",
        }
    }

    /// Parses qperf's name of a test.
    pub fn from_name(name: &str) -> Option<Test> {
        [Test::TcpBw, Test::TcpLat, Test::UdpBw, Test::UdpLat]
            .into_iter()
            .find(|t| t.name() == name)
    }

    /// The message size qperf uses by default for this test.
    pub fn default_msg_size(self) -> usize {
        match self {
            Test::TcpBw | Test::UdpBw => 64 * 1024,
            Test::TcpLat | Test::UdpLat => 1,
        }
    }
}

/// Settings of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerfOptions {
    /// How long the client sends.
    pub duration: Duration,
    /// Message size in bytes (UDP payloads are capped at 65507).
    pub msg_size: usize,
    /// How long any single socket operation may block before the run is cut short.
    pub io_timeout: Duration,
    /// The CPUs the two halves run on, or `None` to leave placement to the scheduler.
    #[serde(default)]
    pub cpus: Option<CpuPin>,
}

/// Where the two halves of a run are pinned: each half's thread (or an external tool's
/// process) may run only on its CPU. Pinning every tool the same way makes CPU-bound figures
/// comparable from one tool to the next: without it the scheduler places each run's two
/// halves afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuPin {
    /// The client's CPU (the sender in `tcp_bw` and `udp_bw`), numbered from 0.
    pub client: usize,
    /// The server's CPU (the receiver in `tcp_bw` and `udp_bw`), numbered from 0.
    pub server: usize,
}

/// Restricts the calling thread to `cpu` (numbered from 0).
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)
        .map_err(|e| io::Error::other(format!("CPU {cpu} is out of range: {e}")))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(|e| io::Error::other(format!("cannot pin the thread to CPU {cpu}: {e}")))
}

impl PerfOptions {
    /// qperf-like defaults for `test`: two seconds, its default message size.
    pub fn for_test(test: Test) -> Self {
        PerfOptions {
            duration: Duration::from_secs(2),
            msg_size: test.default_msg_size(),
            io_timeout: Duration::from_secs(2),
            cpus: None,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerfResult {
    /// The test.
    pub test: Test,
    /// Payload bytes the receiver saw (bandwidth tests) or messages bounced (latency tests).
    pub units: u64,
    /// Time the measurement covered.
    pub elapsed: Duration,
    /// Bandwidth tests: receiver payload rate in bytes per second.
    pub bytes_per_sec: Option<f64>,
    /// Latency tests: half the mean round trip, in microseconds.
    pub latency_us: Option<f64>,
    /// UDP bandwidth: datagrams sent by the client and received by the server.
    pub datagrams: Option<(u64, u64)>,
    /// Set when the run ended early (peer gone, link cut); the figures cover the part that ran.
    pub partial: Option<String>,
}

/// The largest UDP payload over IPv4.
const UDP_MAX: usize = 65507;

/// A server half, bound and ready; `serve` blocks until its one client is done.
pub enum Server {
    /// TCP tests.
    Tcp(TcpListener, Test, PerfOptions),
    /// UDP tests.
    Udp(UdpSocket, Test, PerfOptions),
}

impl Server {
    /// Binds the server half of `test` on `addr` (port 0 picks a free port).
    pub fn bind(test: Test, addr: SocketAddrV4, opts: PerfOptions) -> io::Result<Server> {
        match test {
            Test::TcpBw | Test::TcpLat => Ok(Server::Tcp(TcpListener::bind(addr)?, test, opts)),
            Test::UdpBw | Test::UdpLat => {
                let socket = UdpSocket::bind(addr)?;
                Ok(Server::Udp(socket, test, opts))
            }
        }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Server::Tcp(l, _, _) => l.local_addr(),
            Server::Udp(s, _, _) => s.local_addr(),
        }
    }

    /// Serves one client and returns what the server side measured. Waits at most
    /// `accept_timeout` for the client to show up.
    pub fn serve(self, accept_timeout: Duration) -> io::Result<ServerTally> {
        match self {
            Server::Tcp(listener, test, opts) => {
                let stream = accept_within(&listener, accept_timeout)?;
                stream.set_read_timeout(Some(opts.io_timeout))?;
                stream.set_write_timeout(Some(opts.io_timeout))?;
                match test {
                    Test::TcpBw => sink_stream(stream, opts.msg_size),
                    _ => tcp_echo(stream, opts.msg_size),
                }
            }
            Server::Udp(socket, test, opts) => {
                socket.set_read_timeout(Some(accept_timeout))?;
                match test {
                    Test::UdpBw => udp_sink(&socket, opts),
                    _ => udp_echo(&socket, opts),
                }
            }
        }
    }
}

/// What the server half counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerTally {
    /// Payload bytes received.
    pub bytes: u64,
    /// Messages or datagrams received.
    pub messages: u64,
    /// From the first to the last byte received.
    pub active: Duration,
}

/// Accepts one connection on `listener`, or fails with `TimedOut` after `timeout`: a client
/// that never comes must not leave the server waiting forever. The stream is blocking, with
/// Nagle off.
pub fn accept_within(listener: &TcpListener, timeout: Duration) -> io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no client connected to the server in time",
                    ));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The server side of one `tcp_bw` stream: counts what arrives until the client closes, then
/// tells the client the count (the receiver's figure is the one reported). Reads at most
/// `msg_size` bytes at a time, as qperf's and iperf3's receivers do: on an unshaped link the
/// receiver's system-call rate is part of what is measured.
///
/// The clock is read at the first byte and at the end, not per read: where reading it is a
/// system call (User-Mode Linux has no fast clock), a read per message would cost as much as
/// the data. The end is the client's close; a read that timed out ended `read_timeout` after
/// the last byte, so that wait is not counted.
pub fn sink_stream(mut stream: TcpStream, msg_size: usize) -> io::Result<ServerTally> {
    let mut buf = vec![0u8; msg_size.max(1)];
    let mut tally = ServerTally::default();
    let mut first: Option<Instant> = None;
    let idle = stream.read_timeout().ok().flatten().unwrap_or_default();
    let mut waited = Duration::ZERO;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if first.is_none() {
                    first = Some(Instant::now());
                }
                tally.bytes += n as u64;
                tally.messages += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A cut link: report what arrived.
            Err(e) => {
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) {
                    waited = idle;
                }
                break;
            }
        }
    }
    if let Some(first) = first {
        tally.active = first.elapsed().saturating_sub(waited);
    }
    // Tell the client how much arrived and over how long, so it reports the receiver's figure.
    let mut report = [0u8; 16];
    report[..8].copy_from_slice(&tally.bytes.to_be_bytes());
    report[8..].copy_from_slice(&(tally.active.as_nanos() as u64).to_be_bytes());
    let _ = stream.write_all(&report);
    Ok(tally)
}

/// A flag that turns true once `duration` has passed, set by a timer thread: the send loops
/// test it instead of reading the clock per message (see [`sink_stream`] for why).
fn deadline_flag(duration: Duration) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let setter = flag.clone();
    let spawned = std::thread::Builder::new()
        .name("perf-timer".into())
        .spawn(move || {
            std::thread::sleep(duration);
            setter.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    if spawned.is_err() {
        // No thread to time the run: stop at once rather than never.
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    flag
}

fn tcp_echo(mut stream: TcpStream, msg_size: usize) -> io::Result<ServerTally> {
    let mut buf = vec![0u8; msg_size.max(1)];
    let mut tally = ServerTally::default();
    while stream.read_exact(&mut buf).is_ok() {
        if stream.write_all(&buf).is_err() {
            break;
        }
        tally.messages += 1;
        tally.bytes += buf.len() as u64;
    }
    Ok(tally)
}

/// A UDP bandwidth run ends with a short "done" datagram; its payload is the count of datagrams
/// the client sent, so the server can answer with what it received.
const UDP_DONE: &[u8] = b"netsim-udp-bw-done";

/// The receive loop both UDP servers share. The caller set the wait for the first datagram;
/// after it, each wait is `opts.io_timeout` (set once, not per datagram: this is the hot path).
/// `handle` sees every datagram and says whether the run is over. A peer that goes silent
/// before any datagram is an error; after some, the tally so far is the result.
fn udp_serve(
    socket: &UdpSocket,
    opts: PerfOptions,
    mut handle: impl FnMut(&[u8], SocketAddr, &mut ServerTally) -> io::Result<bool>,
) -> io::Result<ServerTally> {
    let mut buf = vec![0u8; UDP_MAX];
    let mut tally = ServerTally::default();
    let mut started = false;
    loop {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if tally.messages == 0 => return Err(e),
            // The client went away without saying it was done: report what arrived.
            Err(_) => return Ok(tally),
        };
        if !started {
            socket.set_read_timeout(Some(opts.io_timeout))?;
            started = true;
        }
        if handle(&buf[..n], from, &mut tally)? {
            return Ok(tally);
        }
    }
}

fn udp_sink(socket: &UdpSocket, opts: PerfOptions) -> io::Result<ServerTally> {
    let mut first: Option<Instant> = None;
    udp_serve(socket, opts, |datagram, from, tally| {
        if datagram.starts_with(UDP_DONE) {
            let mut answer = [0u8; 16];
            answer[..8].copy_from_slice(&tally.messages.to_be_bytes());
            answer[8..].copy_from_slice(&tally.bytes.to_be_bytes());
            // The answer may be lost too: answer this "done" and, for a short while, every
            // repeat of it the client sends.
            let _ = socket.send_to(&answer, from);
            let linger = (opts.io_timeout / 4).min(Duration::from_millis(300));
            socket.set_read_timeout(Some(linger.max(Duration::from_millis(10))))?;
            let mut again = [0u8; 64];
            let until = Instant::now() + opts.io_timeout;
            while Instant::now() < until {
                let Ok((n, peer)) = socket.recv_from(&mut again) else {
                    break;
                };
                if peer == from && again[..n].starts_with(UDP_DONE) {
                    let _ = socket.send_to(&answer, from);
                }
            }
            return Ok(true);
        }
        let now = Instant::now();
        let start = *first.get_or_insert(now);
        tally.bytes += datagram.len() as u64;
        tally.messages += 1;
        tally.active = now - start;
        Ok(false)
    })
}

fn udp_echo(socket: &UdpSocket, opts: PerfOptions) -> io::Result<ServerTally> {
    udp_serve(socket, opts, |datagram, from, tally| {
        if datagram.starts_with(UDP_DONE) {
            return Ok(true);
        }
        socket.send_to(datagram, from)?;
        tally.messages += 1;
        tally.bytes += datagram.len() as u64;
        Ok(false)
    })
}

/// Runs the client half of `test` against a server at `server`.
pub fn client(test: Test, server: SocketAddr, opts: PerfOptions) -> io::Result<PerfResult> {
    match test {
        Test::TcpBw => tcp_bw_client(server, opts),
        Test::TcpLat => tcp_lat_client(server, opts),
        Test::UdpBw => udp_bw_client(server, opts),
        Test::UdpLat => udp_lat_client(server, opts),
    }
}

fn connect(server: SocketAddr, opts: PerfOptions) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&server, opts.io_timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(opts.io_timeout))?;
    stream.set_write_timeout(Some(opts.io_timeout))?;
    Ok(stream)
}

fn tcp_bw_client(server: SocketAddr, opts: PerfOptions) -> io::Result<PerfResult> {
    let mut stream = connect(server, opts)?;
    // Bulk data wants Nagle's algorithm, as qperf and iperf3 leave it: with it off, the tail of
    // every message that is not a whole number of segments leaves as a small packet of its own.
    stream.set_nodelay(false)?;
    let msg = vec![0x5au8; opts.msg_size.max(1)];
    let start = Instant::now();
    let done = deadline_flag(opts.duration);
    let mut partial = None;
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        if let Err(e) = stream.write_all(&msg) {
            partial = Some(format!("sending stopped after {:?}: {e}", start.elapsed()));
            break;
        }
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    // The receiver's count over the receiver's time (first to last byte) is the figure: what
    // the sender queued may not have arrived.
    let mut report = [0u8; 16];
    let (received, active) = match stream.read_exact(&mut report) {
        Ok(()) => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&report[..8]);
            let mut nanos = [0u8; 8];
            nanos.copy_from_slice(&report[8..]);
            (
                u64::from_be_bytes(bytes),
                Duration::from_nanos(u64::from_be_bytes(nanos)),
            )
        }
        Err(e) => {
            partial.get_or_insert(format!("the server did not report its count: {e}"));
            (0, Duration::ZERO)
        }
    };
    let elapsed = if active.is_zero() {
        start.elapsed()
    } else {
        active
    };
    Ok(PerfResult {
        test: Test::TcpBw,
        units: received,
        elapsed,
        bytes_per_sec: Some(received as f64 / elapsed.as_secs_f64().max(1e-9)),
        latency_us: None,
        datagrams: None,
        partial,
    })
}

fn tcp_lat_client(server: SocketAddr, opts: PerfOptions) -> io::Result<PerfResult> {
    let mut stream = connect(server, opts)?;
    let mut msg = vec![0x5au8; opts.msg_size.max(1)];
    let start = Instant::now();
    let mut rounds = 0u64;
    let mut partial = None;
    while start.elapsed() < opts.duration {
        if let Err(e) = stream
            .write_all(&msg)
            .and_then(|()| stream.read_exact(&mut msg))
        {
            partial = Some(format!("stopped after {rounds} round trips: {e}"));
            break;
        }
        rounds += 1;
    }
    let elapsed = start.elapsed();
    Ok(latency_result(Test::TcpLat, rounds, elapsed, partial))
}

fn latency_result(
    test: Test,
    rounds: u64,
    elapsed: Duration,
    partial: Option<String>,
) -> PerfResult {
    let latency_us = (rounds > 0).then(|| elapsed.as_secs_f64() * 1e6 / rounds as f64 / 2.0);
    PerfResult {
        test,
        units: rounds,
        elapsed,
        bytes_per_sec: None,
        latency_us,
        datagrams: None,
        partial,
    }
}

fn udp_client_socket(server: SocketAddr, opts: PerfOptions) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    socket.connect(server)?;
    socket.set_read_timeout(Some(opts.io_timeout))?;
    socket.set_write_timeout(Some(opts.io_timeout))?;
    Ok(socket)
}

fn udp_bw_client(server: SocketAddr, opts: PerfOptions) -> io::Result<PerfResult> {
    let socket = udp_client_socket(server, opts)?;
    let msg = vec![0x5au8; opts.msg_size.clamp(1, UDP_MAX)];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < opts.duration {
        match socket.send(&msg) {
            Ok(_) => sent += 1,
            // A full socket buffer or an ICMP error from an earlier datagram: keep going.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => std::thread::sleep(Duration::from_micros(50)),
        }
    }
    let elapsed = start.elapsed();
    let mut answer = [0u8; 16];
    let mut partial = None;
    let mut received = (0u64, 0u64);
    let mut got = false;
    // Ask often within one io_timeout: the server stops waiting io_timeout after the last
    // datagram it saw, and the first "done" may be dropped by a receive buffer the flood
    // filled, so a retry an io_timeout later could find nobody listening.
    let retry = (opts.io_timeout / 20).max(Duration::from_millis(10));
    socket.set_read_timeout(Some(retry))?;
    let asking = Instant::now();
    while asking.elapsed() < opts.io_timeout {
        let _ = socket.send(UDP_DONE);
        if let Ok(16) = socket.recv(&mut answer) {
            let mut a = [0u8; 8];
            a.copy_from_slice(&answer[..8]);
            let mut b = [0u8; 8];
            b.copy_from_slice(&answer[8..]);
            received = (u64::from_be_bytes(a), u64::from_be_bytes(b));
            got = true;
            break;
        }
    }
    if !got {
        partial = Some("the server did not report what it received".to_string());
    }
    Ok(PerfResult {
        test: Test::UdpBw,
        units: received.1,
        elapsed,
        bytes_per_sec: Some(received.1 as f64 / elapsed.as_secs_f64().max(1e-9)),
        latency_us: None,
        datagrams: Some((sent, received.0)),
        partial,
    })
}

fn udp_lat_client(server: SocketAddr, opts: PerfOptions) -> io::Result<PerfResult> {
    let socket = udp_client_socket(server, opts)?;
    let msg = vec![0x5au8; opts.msg_size.clamp(1, UDP_MAX)];
    let mut buf = vec![0u8; UDP_MAX];
    let start = Instant::now();
    let mut rounds = 0u64;
    let mut partial = None;
    while start.elapsed() < opts.duration {
        if let Err(e) = socket.send(&msg).and_then(|_| socket.recv(&mut buf)) {
            partial = Some(format!("stopped after {rounds} round trips: {e}"));
            break;
        }
        rounds += 1;
    }
    let elapsed = start.elapsed();
    let _ = socket.send(UDP_DONE);
    Ok(latency_result(Test::UdpLat, rounds, elapsed, partial))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn loopback_run(test: Test) -> PerfResult {
        let opts = PerfOptions {
            duration: Duration::from_millis(200),
            ..PerfOptions::for_test(test)
        };
        let server = Server::bind(test, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), opts)
            .expect("bind on loopback");
        let addr = server.local_addr().expect("bound address");
        let handle = std::thread::spawn(move || server.serve(Duration::from_secs(5)));
        let result = client(test, addr, opts).expect("client runs");
        let tally = handle.join().expect("server thread").expect("server ran");
        if test == Test::TcpBw {
            assert_eq!(
                tally.bytes, result.units,
                "client reports the receiver's count"
            );
        }
        result
    }

    #[rstest]
    #[case(Test::TcpBw)]
    #[case(Test::UdpBw)]
    fn bandwidth_tests_move_data(#[case] test: Test) {
        let r = loopback_run(test);
        assert!(r.units > 0, "{r:?}");
        assert!(r.bytes_per_sec.unwrap_or(0.0) > 0.0);
        assert_eq!(r.partial, None);
    }

    #[rstest]
    #[case(Test::TcpLat)]
    #[case(Test::UdpLat)]
    fn latency_tests_bounce_messages(#[case] test: Test) {
        let r = loopback_run(test);
        assert!(r.units > 10, "{r:?}");
        assert!(r.latency_us.unwrap_or(0.0) > 0.0);
    }

    #[test]
    fn pinned_halves_run_on_their_cpu() {
        let opts = PerfOptions {
            duration: Duration::from_millis(200),
            cpus: Some(CpuPin {
                client: 0,
                server: 0,
            }),
            ..PerfOptions::for_test(Test::TcpBw)
        };
        let server = Server::bind(Test::TcpBw, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), opts)
            .expect("bind on loopback");
        let addr = server.local_addr().expect("bound address");
        let handle = std::thread::spawn(move || {
            pin_current_thread(0)?;
            let mask = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
                .map_err(io::Error::other)?;
            server.serve(Duration::from_secs(5)).map(|t| (t, mask))
        });
        pin_current_thread(0).expect("CPU 0 exists");
        let result = client(Test::TcpBw, addr, opts).expect("client runs");
        let (tally, mask) = handle.join().expect("server thread").expect("server ran");
        assert_eq!(tally.bytes, result.units);
        assert!(mask.is_set(0).unwrap_or(false));
        assert!(!mask.is_set(1).unwrap_or(true), "only CPU 0 is allowed");
        assert!(pin_current_thread(100_000).is_err(), "no such CPU");
    }

    #[test]
    fn a_server_nobody_talks_to_gives_up() {
        let opts = PerfOptions::for_test(Test::UdpLat);
        let server = Server::bind(
            Test::UdpLat,
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            opts,
        )
        .expect("bind");
        assert!(server.serve(Duration::from_millis(100)).is_err());
    }

    #[test]
    fn a_client_without_server_fails_fast() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        assert!(client(Test::TcpBw, addr, PerfOptions::for_test(Test::TcpBw)).is_err());
    }

    /// The flood can fill the server's receive buffer so the first "done" is dropped; the
    /// server then waits only so long for another. A client that asked again only after a
    /// whole io_timeout found it gone (seen in the kernel lane).
    #[test]
    fn a_lost_done_is_asked_again_before_the_server_gives_up() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = server.local_addr().expect("addr");
        let opts = PerfOptions {
            duration: Duration::from_millis(50),
            msg_size: 1000,
            ..PerfOptions::for_test(Test::UdpBw)
        };
        let fake = std::thread::spawn(move || {
            let mut buf = vec![0u8; UDP_MAX];
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut dones = 0;
            let mut datagrams = 0u64;
            loop {
                let (n, from) = server.recv_from(&mut buf).expect("client talks");
                if !buf[..n].starts_with(UDP_DONE) {
                    datagrams += 1;
                    continue;
                }
                dones += 1;
                if dones == 1 {
                    // Play the dropped one, and from now on wait half as long as the client.
                    server
                        .set_read_timeout(Some(opts.io_timeout / 2))
                        .expect("timeout");
                    continue;
                }
                let mut answer = [0u8; 16];
                answer[..8].copy_from_slice(&datagrams.to_be_bytes());
                answer[8..].copy_from_slice(&(datagrams * 1000).to_be_bytes());
                server.send_to(&answer, from).expect("answer");
                return datagrams;
            }
        });
        let result = client(Test::UdpBw, addr, opts).expect("client runs");
        let datagrams = fake.join().expect("fake server saw a second done");
        assert_eq!(result.partial, None, "{result:?}");
        assert_eq!(result.datagrams.map(|d| d.1), Some(datagrams));
    }

    #[rstest]
    #[case("tcp_bw", Some(Test::TcpBw))]
    #[case("udp_lat", Some(Test::UdpLat))]
    #[case("rc_bw", None)]
    fn names_round_trip(#[case] name: &str, #[case] test: Option<Test>) {
        assert_eq!(Test::from_name(name), test);
        if let Some(t) = test {
            assert_eq!(t.name(), name);
        }
    }
}
