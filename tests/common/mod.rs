//! Helpers of the overlay end-to-end tests: labs with the overlay running, probes run inside
//! nodes (ICMP, TCP echo, UDP send) and an AF_PACKET capture.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netsim::lab::{Lab, NodeHandle, UpOptions};
use netsim::measure::icmp::{self, PingOptions, PingResult};
use netsim::overlay_run::{Overlay, OverlayOptions};

/// A lab id unique to this run: `prefix-XXXX`, as the lab engine makes its default ids.
pub fn unique(prefix: &str) -> String {
    netsim::lab::default_id(prefix)
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The router binary: `$NETSIM_OVERLAY_BIN`, or target/<profile>/overlay-router, built once
/// with cargo when missing (the root package cannot name another package's binary).
pub fn router_binary() -> PathBuf {
    if let Ok(p) = netsim::overlay_run::find_binary() {
        return p;
    }
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "overlay", "--bin", "overlay-router"])
            .current_dir(root())
            .status()
            .expect("run cargo");
        assert!(status.success(), "building overlay-router failed");
    });
    netsim::overlay_run::find_binary().expect("overlay-router after building it")
}

/// Brings up `topology` (a path under the root) as lab `id`.
pub async fn up(topology: &str, id: &str) -> Lab {
    let plan = netsim::model::load_plan(&root().join(topology)).expect("plan");
    Lab::up(
        plan,
        UpOptions {
            name: Some(id.to_string()),
            ..UpOptions::default()
        },
    )
    .await
    .expect("lab up")
}

/// Starts the overlay with `opts` (the binary filled in).
pub async fn overlay(lab: &Lab, mut opts: OverlayOptions) -> Overlay {
    opts.binary = Some(router_binary());
    Overlay::start(lab, &opts).await.expect("overlay start")
}

/// The kernel vxlan tier forced (`--fast-path vxlan`), for tests of that tier: where the
/// openvswitch module exists (the kernel lane) the default would pick the Open vSwitch tier.
pub fn vxlan_tier() -> OverlayOptions {
    OverlayOptions {
        router_args: vec!["--fast-path".into(), "vxlan".into()],
        ..OverlayOptions::default()
    }
}

/// The node called `name`.
pub fn node(lab: &Lab, name: &str) -> NodeHandle {
    lab.node(name).expect("node")
}

/// Pings `dst` from `from`.
pub async fn ping(lab: &Lab, from: &str, dst: Ipv4Addr, opts: PingOptions) -> PingResult {
    node(lab, from)
        .run(move || async move { icmp::ping(dst, &opts) })
        .await
        .expect("run")
        .expect("ping")
}

/// Pings until a reply comes (bounded at 20 s: the overlay may still be learning).
pub async fn ping_until(lab: &Lab, from: &str, dst: Ipv4Addr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let r = ping(lab, from, dst, PingOptions::default()).await;
        if r.received > 0 {
            return true;
        }
    }
    false
}

/// Accepts one connection on `l`, or fails after 15 s: a client that never arrives must not
/// hang the test.
fn accept_within(l: &TcpListener) -> Result<TcpStream, String> {
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let s = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    Ok(s)
}

/// A TCP connection from `from` to a listener in `to` at `addr`: `serve` runs on the
/// accepted end (inside `to`), `talk` on the connecting end (inside `from`); both results are
/// returned. A client that never arrives, or a listener that cannot bind, ends in an error.
async fn tcp_pair<A, B>(
    lab: &Lab,
    from: &str,
    to: &str,
    addr: Ipv4Addr,
    serve: impl FnOnce(TcpStream) -> Result<A, String> + Send + 'static,
    talk: impl FnOnce(TcpStream) -> Result<B, String> + Send + 'static,
) -> Result<(A, B), String>
where
    A: Send + 'static,
    B: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel::<Result<SocketAddr, String>>();
    let server_node = node(lab, to);
    let server = server_node.run(move || async move {
        let l = TcpListener::bind((addr, 0)).map_err(|e| e.to_string());
        let _ = tx.send(
            l.as_ref()
                .map_err(Clone::clone)
                .and_then(|l| l.local_addr().map_err(|e| e.to_string())),
        );
        serve(accept_within(&l?)?)
    });
    let client = async {
        let sa = rx.await.map_err(|e| e.to_string())??;
        node(lab, from)
            .run(move || async move {
                let s = TcpStream::connect_timeout(&sa, Duration::from_secs(10))
                    .map_err(|e| format!("connect {sa}: {e}"))?;
                talk(s)
            })
            .await
            .map_err(|e| e.to_string())?
    };
    let (s, c) = futures::join!(server, client);
    let c = c?;
    Ok((s.map_err(|e| e.to_string())??, c))
}

/// Connects from `from` to a TCP echo server in `to` at `addr` and checks the echo.
pub async fn tcp_echo(lab: &Lab, from: &str, to: &str, addr: Ipv4Addr) -> Result<(), String> {
    let serve = |mut s: TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut buf = [0u8; 4096];
        let n = std::io::Read::read(&mut s, &mut buf).map_err(|e| e.to_string())?;
        std::io::Write::write_all(&mut s, &buf[..n]).map_err(|e| e.to_string())
    };
    let talk = |mut s: TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let msg = b"overlay tcp echo";
        std::io::Write::write_all(&mut s, msg).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < msg.len() {
            let n = std::io::Read::read(&mut s, &mut buf[got..]).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            got += n;
        }
        if &buf[..got] == msg {
            Ok(())
        } else {
            Err(format!("echo mismatch: {:?}", &buf[..got]))
        }
    };
    tcp_pair(lab, from, to, addr, serve, talk).await.map(|_| ())
}

/// The byte at offset `i` of the stream [`tcp_bulk`] sends.
fn bulk_byte(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 9)) as u8
}

/// FNV-1a's starting value.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes`, continuing from `h`.
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Sends `total` bytes of a known pattern over TCP from `from` to a server in `to` at `addr`
/// in 256 KiB writes (big enough for the kernel to hand over whole 64 KiB bursts) and checks
/// the server read exactly those bytes.
pub async fn tcp_bulk(
    lab: &Lab,
    from: &str,
    to: &str,
    addr: Ipv4Addr,
    total: u64,
) -> Result<(), String> {
    let serve = |mut s: TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(20))).ok();
        let mut buf = vec![0u8; 1 << 18];
        let (mut got, mut h) = (0u64, FNV_OFFSET);
        loop {
            let n = std::io::Read::read(&mut s, &mut buf).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Ok((got, h));
            }
            h = fnv1a(h, &buf[..n]);
            got += n as u64;
        }
    };
    let talk = move |mut s: TcpStream| {
        s.set_write_timeout(Some(Duration::from_secs(20))).ok();
        let mut buf = vec![0u8; 1 << 18];
        let (mut sent, mut h) = (0u64, FNV_OFFSET);
        while sent < total {
            let n = (total - sent).min(buf.len() as u64) as usize;
            for (k, b) in buf[..n].iter_mut().enumerate() {
                *b = bulk_byte(sent + k as u64);
            }
            std::io::Write::write_all(&mut s, &buf[..n])
                .map_err(|e| format!("write at {sent}: {e}"))?;
            h = fnv1a(h, &buf[..n]);
            sent += n as u64;
        }
        Ok(h)
    };
    let ((got, got_hash), sent_hash) = tcp_pair(lab, from, to, addr, serve, talk).await?;
    if got != total {
        return Err(format!("the server read {got} of {total} bytes"));
    }
    if got_hash != sent_hash {
        return Err(format!(
            "the server read {total} bytes but not the ones sent (digest {got_hash:x} != {sent_hash:x})"
        ));
    }
    Ok(())
}

/// What a paced TCP stream saw.
#[derive(Debug, Clone, Copy)]
pub struct Paced {
    /// Bytes the server read, all in the order sent.
    pub bytes: u64,
    /// The longest time the server waited for the next bytes.
    pub longest_stall: Duration,
}

/// Keeps one TCP connection from `from` to a server in `to` at `addr` busy for `duration`:
/// 4 KiB every 10 ms of a known pattern. Fails on a reset, a timeout (30 s without data) or a
/// byte out of place; otherwise returns how much crossed and the longest stall the server saw.
pub async fn tcp_paced(
    lab: &Lab,
    from: &str,
    to: &str,
    addr: Ipv4Addr,
    duration: Duration,
) -> Result<Paced, String> {
    let serve = |mut s: TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0u64;
        let mut last = Instant::now();
        let mut longest = Duration::ZERO;
        loop {
            let n =
                std::io::Read::read(&mut s, &mut buf).map_err(|e| format!("read at {got}: {e}"))?;
            if n == 0 {
                return Ok(Paced {
                    bytes: got,
                    longest_stall: longest,
                });
            }
            longest = longest.max(last.elapsed());
            last = Instant::now();
            for (k, b) in buf[..n].iter().enumerate() {
                if *b != bulk_byte(got + k as u64) {
                    return Err(format!("byte {} out of place", got + k as u64));
                }
            }
            got += n as u64;
        }
    };
    let talk = move |mut s: TcpStream| {
        s.set_write_timeout(Some(Duration::from_secs(30))).ok();
        let end = Instant::now() + duration;
        let mut sent = 0u64;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < end {
            for (k, b) in buf.iter_mut().enumerate() {
                *b = bulk_byte(sent + k as u64);
            }
            std::io::Write::write_all(&mut s, &buf).map_err(|e| format!("write at {sent}: {e}"))?;
            sent += buf.len() as u64;
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(sent)
    };
    let (paced, sent) = tcp_pair(lab, from, to, addr, serve, talk).await?;
    if paced.bytes != sent {
        return Err(format!("the server read {} of {sent} bytes", paced.bytes));
    }
    Ok(paced)
}

/// Waits until `host`'s connection to `peer` is on `datapath`; returns how long that took.
pub async fn wait_datapath(
    o: &Overlay,
    host: &str,
    peer: &str,
    datapath: &str,
    limit: Duration,
) -> Result<Duration, String> {
    wait_conn(o, host, peer, limit, |c| c["datapath"] == datapath)
        .await
        .map_err(|last| {
            format!("{host} -> {peer} not on {datapath} after {limit:?}; last seen: {last}")
        })
}

/// Waits until `host`'s connection to `peer` shows `value` in its fast-path status field
/// `field` (e.g. `pace`); returns how long that took.
pub async fn wait_path_field(
    o: &Overlay,
    host: &str,
    peer: &str,
    field: &str,
    value: &str,
    limit: Duration,
) -> Result<Duration, String> {
    wait_conn(o, host, peer, limit, |c| c["path"][field] == value)
        .await
        .map_err(|last| {
            format!("{host} -> {peer}: {field} not {value} after {limit:?}; last seen: {last}")
        })
}

/// Polls `host`'s status of its connection to `peer` until `done` holds (how long that took)
/// or `limit` passes (the connection's fast-path state last seen).
async fn wait_conn(
    o: &Overlay,
    host: &str,
    peer: &str,
    limit: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Result<Duration, serde_json::Value> {
    let start = Instant::now();
    let mut last = serde_json::Value::Null;
    while start.elapsed() < limit {
        if let Some(c) = conn_status(o, host, peer).await {
            if done(&c) {
                return Ok(start.elapsed());
            }
            last = c["path"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last)
}

/// Bytes a device in `node_name`'s namespace received and sent (`/proc/net/dev` read from a
/// thread inside the namespace; sysfs would show the root namespace's devices). Bytes, not
/// packets: with segmentation offloads a packet may be one 64 KiB burst or one frame.
pub async fn dev_bytes(lab: &Lab, node_name: &str, dev: &str) -> (u64, u64) {
    let dev = dev.to_string();
    let text = node(lab, node_name)
        .run(|| async { std::fs::read_to_string("/proc/thread-self/net/dev") })
        .await
        .expect("run in node")
        .expect("read /proc/thread-self/net/dev");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{dev}:")))
        .unwrap_or_else(|| panic!("no {dev} in {node_name}: {text}"));
    let f: Vec<u64> = line
        .split_once(':')
        .map(|x| x.1)
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    (f[0], f[8])
}

/// Sends one UDP datagram carrying `marker` from `from` to the overlay's broadcast address
/// (198.19.255.255: the containers have no route for 255.255.255.255, so this is an Ethernet
/// broadcast on the bridge) and counts, in each of `others`, the frames that carry it.
pub async fn broadcast_copies(
    lab: &Lab,
    from: &str,
    others: &[&'static str],
    marker: &[u8],
) -> Vec<(&'static str, usize)> {
    let mut caps = Vec::new();
    for c in others {
        caps.push((*c, Capture::open(&node(lab, c)).await));
    }
    udp_send(
        lab,
        from,
        Ipv4Addr::new(198, 19, 255, 255),
        9998,
        marker.to_vec(),
        1,
    )
    .await;
    let marker = marker.to_vec();
    tokio::task::spawn_blocking(move || {
        caps.into_iter()
            .map(|(c, cap)| {
                let frames = cap.drain(Duration::from_millis(800));
                (c, frames.iter().filter(|f| contains(f, &marker)).count())
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("capture thread")
}

/// Sends `count` UDP datagrams carrying `payload` from `from` to `dst:port`
/// (broadcast allowed).
pub async fn udp_send(
    lab: &Lab,
    from: &str,
    dst: Ipv4Addr,
    port: u16,
    payload: Vec<u8>,
    count: usize,
) {
    node(lab, from)
        .run(move || async move {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
            s.set_broadcast(true).expect("broadcast");
            for _ in 0..count {
                let _ = s.send_to(&payload, (dst, port));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .expect("run");
}

/// An AF_PACKET capture of every frame on every interface of a node's namespace.
pub struct Capture {
    fd: std::os::fd::OwnedFd,
}

impl Capture {
    /// Opens the capture inside `node` (the socket stays bound to that namespace), on every
    /// interface.
    pub async fn open(node: &NodeHandle) -> Capture {
        Self::open_on(node, None).await
    }

    /// Opens the capture inside `node`, on interface `iface` only when given.
    pub async fn open_on(node: &NodeHandle, iface: Option<&str>) -> Capture {
        let iface = iface.map(|i| std::ffi::CString::new(i).expect("name"));
        let fd = node
            .run(move || async move {
                // SAFETY: socket(2) for a raw packet socket; checked below.
                let raw = unsafe {
                    libc::socket(
                        libc::AF_PACKET,
                        libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        i32::from((libc::ETH_P_ALL as u16).to_be()),
                    )
                };
                assert!(
                    raw >= 0,
                    "AF_PACKET socket: {}",
                    std::io::Error::last_os_error()
                );
                // SAFETY: `raw` is a fresh descriptor we own.
                let fd =
                    unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
                if let Some(name) = iface {
                    // SAFETY: if_nametoindex reads a NUL-terminated name; bind(2) gets a
                    // zeroed sockaddr_ll with family, protocol and index set, and its size.
                    unsafe {
                        let index = libc::if_nametoindex(name.as_ptr());
                        assert!(index > 0, "no interface {name:?}");
                        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                        sll.sll_family = libc::AF_PACKET as u16;
                        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
                        sll.sll_ifindex = index as i32;
                        let rc = libc::bind(
                            std::os::fd::AsRawFd::as_raw_fd(&fd),
                            (&sll as *const libc::sockaddr_ll).cast(),
                            std::mem::size_of::<libc::sockaddr_ll>() as u32,
                        );
                        assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
                    }
                }
                fd
            })
            .await
            .expect("run");
        Capture { fd }
    }

    /// Every frame captured within `window` (outgoing and incoming, with link-layer headers).
    pub fn drain(&self, window: Duration) -> Vec<Vec<u8>> {
        use std::os::fd::AsRawFd;
        let mut out = Vec::new();
        let deadline = Instant::now() + window;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            // SAFETY: recv(2) into a live buffer of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                out.push(buf[..n as usize].to_vec());
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        out
    }
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The UDP payload of an Ethernet/IPv4/UDP frame (unfragmented) with its addresses and ports.
pub fn udp_of(frame: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u16, u16, &[u8])> {
    if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if ip[9] != 17 || frag & 0x3fff != 0 || ip.len() < ihl + 8 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let udp = &ip[ihl..total];
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    Some((src, dst, sport, dport, &udp[8..]))
}

/// The status of the connection from `host`'s router to `peer`.
pub async fn conn_status(o: &Overlay, host: &str, peer: &str) -> Option<serde_json::Value> {
    let st = o.status(host).await.ok()?;
    st["router"]["connections"]
        .as_array()?
        .iter()
        .find(|c| c["peer"] == peer)
        .cloned()
}

/// Waits (bounded) until `f` holds.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Namespaces of lab `id` still present.
pub fn leftovers(id: &str) -> Vec<String> {
    netsim::testing::lab_namespaces(id)
}
