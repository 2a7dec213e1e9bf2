//! Link shaping and runtime faults on real namespaces. Emulated-backend tests run wherever the
//! kernel has tbf, nftables and AF_PACKET (this host); netem tests need netem (the kernel
//! lane). Bounds are generous: the machine is shared and UML is slow; they catch a shaping
//! that is absent or wildly off, not a few percent.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use netsim::caps::Feature;
use netsim::kernel::netns;
use netsim::kernel::rtnl::Netlink;
use netsim::lab::faults::{ProcAction, ShapeUpdate};
use netsim::lab::shaping::{Backend, Proto};
use netsim::lab::{self, Lab, LabError, NodeHandle, UpOptions};
use netsim::measure::icmp::{self, PingOptions, PingResult};
use netsim::measure::pair;
use netsim::measure::perf::{PerfOptions, Test};
use netsim::model;

const RUN_DIR: &str = "/run/netsim-tests-shaping";
const H1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const H2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);

fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var(lab::state::RUN_DIR_ENV, RUN_DIR);
        // The delay line runs as `netsim delay-line`: point at the binary cargo built.
        std::env::set_var("NETSIM_BIN", env!("CARGO_BIN_EXE_netsim"));
    });
}

/// A lab id unique to this run: `prefix-XXXX`, as the lab engine makes its default ids.
fn unique(prefix: &str) -> String {
    netsim::lab::default_id(prefix)
}

/// Two hosts on one link, `h1` = 198.18.1.1, `h2` = 198.18.1.2, with `link_extra` added to
/// the [[link]] table (e.g. `shape = { delay = "10ms" }`).
fn pair_plan(link_extra: &str) -> model::Plan {
    let src = format!(
        "[lab]\nname = \"pair\"\nseed = 7\n[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n\
         [[link]]\nendpoints = [\"h1\", \"h2\"]\nsubnet = \"198.18.1.0/30\"\n{link_extra}\n"
    );
    let topo = model::parse(&src, Path::new("pair.toml")).unwrap_or_else(|d| panic!("{d}"));
    model::plan(&topo).unwrap_or_else(|d| panic!("{d}"))
}

async fn up(prefix: &str, plan: model::Plan, backend: Backend) -> Lab {
    setup();
    let opts = UpOptions {
        name: Some(unique(prefix)),
        backend: Some(backend),
        ..Default::default()
    };
    Lab::up(plan, opts)
        .await
        .unwrap_or_else(|e| panic!("up: {e}"))
}

fn node(lab: &Lab, name: &str) -> NodeHandle {
    lab.node(name).unwrap_or_else(|| panic!("no node {name}"))
}

async fn ping_from(lab: &Lab, from: &str, dst: Ipv4Addr, opts: PingOptions) -> PingResult {
    node(lab, from)
        .run(move || async move { icmp::ping(dst, &opts) })
        .await
        .unwrap_or_else(|e| panic!("run: {e}"))
        .unwrap_or_else(|e| panic!("ping: {e}"))
}

async fn reaches(lab: &Lab, from: &str, dst: Ipv4Addr) -> bool {
    let opts = PingOptions {
        count: 3,
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        ..Default::default()
    };
    // A drop in the sender's own output hook fails the send itself (EPERM): not reached.
    match node(lab, from)
        .run(move || async move { icmp::ping(dst, &opts) })
        .await
        .unwrap_or_else(|e| panic!("run: {e}"))
    {
        Ok(r) => r.received > 0,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => false,
        Err(e) => panic!("ping: {e}"),
    }
}

/// Takes the lab down and checks nothing of it is left: namespaces (the wire ones too),
/// delay-line processes, the state file.
async fn down_and_check(lab: Lab) {
    let id = lab.id().to_string();
    let status = lab.status().unwrap_or_else(|e| panic!("status: {e}"));
    let pids: Vec<u32> = status
        .links
        .iter()
        .filter_map(|l| l.wire.as_ref().and_then(|w| w.pid.as_ref()).map(|p| p.pid))
        .chain(status.processes.iter().map(|p| p.pid))
        .collect();
    lab.down().await.unwrap_or_else(|e| panic!("down: {e}"));
    let left = netsim::testing::lab_namespaces(&id);
    assert!(left.is_empty(), "namespaces left: {left:?}");
    // Killed processes may linger as zombies until reaped; give the reaper a moment.
    for pid in pids {
        let mut gone = false;
        for _ in 0..100 {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if state.is_empty() || state.contains(") Z") {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone, "process {pid} of lab {id} still runs");
    }
    assert!(!Path::new(RUN_DIR).join(format!("{id}.json")).exists());
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

// ---------------------------------------------------------------- emulated backend (host)

#[tokio::test(flavor = "multi_thread")]
async fn emulated_delay_gives_the_round_trip() {
    netsim::require_features!(Feature::AfPacket, Feature::Nftables, Feature::Tbf);
    let lab = up(
        "em-delay",
        pair_plan("shape = { delay = \"10ms\" }"),
        Backend::Emulated,
    )
    .await;
    let opts = PingOptions {
        count: 20,
        interval: Duration::from_millis(20),
        ..Default::default()
    };
    let r = ping_from(&lab, "h1", H2, opts).await;
    let min = r.min_rtt().unwrap_or_default();
    eprintln!(
        "emulated 10 ms each way: min rtt {min:?}, median {} us",
        median(&mut r.rtt_us.clone())
    );
    // No loss was asked for; a slow guest may still miss a reply's deadline now and then.
    assert!(
        r.received + 2 >= r.sent,
        "{} of {} lost",
        r.sent - r.received,
        r.sent
    );
    assert!(
        min >= Duration::from_millis(20),
        "min rtt {min:?} below 2 x 10 ms"
    );
    assert!(
        min < Duration::from_millis(30),
        "min rtt {min:?} far above 2 x 10 ms"
    );
    down_and_check(lab).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn emulated_loss_is_dropped_at_the_receiver() {
    netsim::require_features!(Feature::Nftables);
    // 20 % one way only: random loss needs no delay line; nftables drops it at h2's ingress.
    let lab = up(
        "em-loss",
        pair_plan("shape = { a_to_b = { loss = \"20%\" } }"),
        Backend::Emulated,
    )
    .await;
    let opts = PingOptions {
        count: 400,
        interval: Duration::from_millis(2),
        timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let r = ping_from(&lab, "h1", H2, opts).await;
    let loss = r.loss();
    eprintln!(
        "emulated 20 % loss one way: {} of {} lost",
        r.sent - r.received,
        r.sent
    );
    // 400 trials at 20 %: one standard deviation is 0.02; the window is five of them.
    assert!((0.10..=0.30).contains(&loss), "loss {loss} not near 0.20");
    // The other direction is clean: h2's requests are lost only on the way back (20 %).
    assert!(lab
        .status()
        .map(|s| s.links[0].wire.is_none())
        .unwrap_or(false));
    down_and_check(lab).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn emulated_rate_limits_throughput() {
    netsim::require_features!(Feature::Tbf);
    let lab = up(
        "em-rate",
        pair_plan("shape = { rate = \"20mbit\" }"),
        Backend::Emulated,
    )
    .await;
    let (r, _) = pair::run(
        &node(&lab, "h2"),
        H2,
        &node(&lab, "h1"),
        Test::TcpBw,
        PerfOptions::for_test(Test::TcpBw),
    )
    .await
    .unwrap_or_else(|e| panic!("tcp_bw: {e}"));
    let mbit = r.bytes_per_sec.unwrap_or(0.0) * 8.0 / 1e6;
    eprintln!("emulated rate 20 mbit: measured {mbit:.2} Mbit/s");
    assert!(
        (14.0..=21.0).contains(&mbit),
        "{mbit:.2} Mbit/s is not about 20"
    );
    down_and_check(lab).await;
}

/// Sends `n` numbered UDP datagrams from h1 to h2 and returns (received, duplicates,
/// out of order).
async fn udp_sequence(lab: &Lab, n: u32, port: u16) -> (u32, u32, u32) {
    let server_node = node(lab, "h2");
    let (bound, is_bound) = tokio::sync::oneshot::channel::<()>();
    let server = server_node.run(move || async move {
        let sock = UdpSocket::bind((H2, port))?;
        sock.set_read_timeout(Some(Duration::from_millis(1500)))?;
        let _ = bound.send(());
        let mut seen = std::collections::HashSet::new();
        let (mut received, mut dup, mut ooo, mut last) = (0u32, 0u32, 0u32, 0u32);
        let mut buf = [0u8; 64];
        while let Ok(len) = sock.recv(&mut buf) {
            if len < 4 {
                continue;
            }
            let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            received += 1;
            if !seen.insert(seq) {
                dup += 1;
            } else if seq < last {
                ooo += 1;
            }
            last = last.max(seq);
        }
        Ok::<_, std::io::Error>((received, dup, ooo))
    });
    let client_node = node(lab, "h1");
    let client = client_node.run(move || async move {
        // Sends once the server's socket exists (a dropped sender: it failed, and says so).
        let _ = is_bound.await;
        let sock = UdpSocket::bind((H1, 0))?;
        for seq in 0..n {
            sock.send_to(&seq.to_be_bytes(), (H2, port))?;
            std::thread::sleep(Duration::from_micros(500));
        }
        Ok::<_, std::io::Error>(())
    });
    let (s, c) = futures::join!(server, client);
    c.unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    s.unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn emulated_reordering_and_duplication_are_observed() {
    netsim::require_features!(Feature::AfPacket);
    let lab = up(
        "em-reord",
        pair_plan("shape = { delay = \"5ms\", reorder = \"30%\", duplicate = \"10%\" }"),
        Backend::Emulated,
    )
    .await;
    let (received, dup, ooo) = udp_sequence(&lab, 400, 7100).await;
    eprintln!(
        "reorder 30 %, duplicate 10 %: {received} received, {dup} duplicates, {ooo} out of order"
    );
    assert!(dup >= 10, "only {dup} duplicates of 400 at 10 %");
    assert!(ooo >= 20, "only {ooo} reordered of 400 at 30 %");
    down_and_check(lab).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gso_sized_frames_cross_the_delay_line_intact() {
    netsim::require_features!(Feature::AfPacket);
    let lab = up(
        "em-gso",
        pair_plan("shape = { delay = \"1ms\" }"),
        Backend::Emulated,
    )
    .await;
    // 4 MiB of patterned bytes in 64 KiB writes: TCP hands the veth GSO frames of up to 64 KiB,
    // which must reach h2 whole and unchanged.
    const TOTAL: usize = 4 << 20;
    let pattern = |i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    let server_node = node(&lab, "h2");
    let (bound, is_bound) = tokio::sync::oneshot::channel::<()>();
    let server = server_node.run(move || async move {
        let l = TcpListener::bind((H2, 7200))?;
        let _ = bound.send(());
        // Bounded: a client that failed must not leave the server waiting forever.
        let mut s = netsim::measure::perf::accept_within(&l, Duration::from_secs(20))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut got = Vec::with_capacity(TOTAL);
        s.read_to_end(&mut got)?;
        Ok::<_, std::io::Error>(got)
    });
    let client_node = node(&lab, "h1");
    let client = client_node.run(move || async move {
        if is_bound.await.is_err() {
            return Err(std::io::Error::other("the server failed before listening"));
        }
        let mut s = TcpStream::connect(SocketAddrV4::new(H2, 7200))?;
        let data: Vec<u8> = (0..TOTAL).map(pattern).collect();
        for chunk in data.chunks(64 << 10) {
            s.write_all(chunk)?;
        }
        Ok::<_, std::io::Error>(())
    });
    let (got, sent) = futures::join!(server, client);
    sent.unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("client: {e}"));
    let got = got
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("server: {e}"));
    assert_eq!(got.len(), TOTAL);
    assert!(
        got.iter().enumerate().all(|(i, b)| *b == pattern(i)),
        "data corrupted"
    );
    // And frames larger than the MTU did cross: the wire's interfaces saw GSO frames.
    down_and_check(lab).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_change_is_applied_and_recorded() {
    netsim::require_features!(Feature::AfPacket);
    let lab = up("em-set", pair_plan("shape = {}"), Backend::Emulated).await;
    let before = ping_from(&lab, "h1", H2, PingOptions::default()).await;
    assert!(before.min_rtt().unwrap_or_default() < Duration::from_millis(10));
    let mut update = ShapeUpdate::default();
    update
        .set("delay", "15ms")
        .unwrap_or_else(|e| panic!("{e}"));
    let shape = lab
        .set_link("h1", "h2", &update, false)
        .await
        .unwrap_or_else(|e| panic!("set_link: {e}"));
    assert_eq!(shape.a_to_b.describe(), "delay 15ms");
    let after = ping_from(&lab, "h1", H2, PingOptions::default()).await;
    let min = after.min_rtt().unwrap_or_default();
    assert!(
        min >= Duration::from_millis(30),
        "min rtt {min:?} after setting 15 ms"
    );
    // Another process sees the change through the state file.
    let status = lab::faults::status(lab.id()).unwrap_or_else(|e| panic!("{e}"));
    insta::assert_snapshot!(status.render().replace(lab.id(), "LAB"));
    down_and_check(lab).await;
}

// ---------------------------------------------------------------- faults (any kernel)

async fn config_of(lab: &Lab, name: &str) -> (Vec<(u32, ipnet::Ipv4Net)>, Vec<String>) {
    let n = node(lab, name);
    n.run(|| async {
        let ns = "test";
        let nl = Netlink::open_here(ns, &tokio::runtime::Handle::current())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut addrs = nl.addrs().await.unwrap_or_default();
        addrs.sort();
        let mut routes: Vec<String> = nl
            .routes()
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| format!("{r:?}"))
            .collect();
        routes.sort();
        (addrs, routes)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn cut_and_heal_keep_addresses_routes_and_shaping() {
    netsim::require_features!(Feature::Nftables);
    let lab = up(
        "cut",
        pair_plan("shape = { rate = \"50mbit\" }"),
        Backend::choose(netsim::caps::probe()),
    )
    .await;
    assert!(reaches(&lab, "h1", H2).await);
    let config = (config_of(&lab, "h1").await, config_of(&lab, "h2").await);
    lab.cut("h1", "h2")
        .await
        .unwrap_or_else(|e| panic!("cut: {e}"));
    assert!(!reaches(&lab, "h1", H2).await, "a cut link carried a ping");
    assert!(!reaches(&lab, "h2", H1).await, "a cut link carried a ping");
    assert_eq!(lab.info().faults, vec!["cut h1 -- h2".to_string()]);
    lab.heal_link("h2", "h1")
        .await
        .unwrap_or_else(|e| panic!("heal: {e}"));
    assert!(
        reaches(&lab, "h1", H2).await,
        "a healed link carries no ping"
    );
    assert_eq!(
        (config_of(&lab, "h1").await, config_of(&lab, "h2").await),
        config,
        "addresses or routes changed across cut and heal"
    );
    let status = lab.status().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        status.links[0].shape.as_ref().map(|s| s.a_to_b.describe()),
        Some("rate 50mbit".to_string())
    );
    assert!(lab.info().faults.is_empty());
    down_and_check(lab).await;
}

fn star_plan() -> model::Plan {
    let src = "[lab]\nname = \"star\"\n[[switch]]\nname = \"sw\"\nsubnet = \"198.18.5.0/24\"\n\
               [[host]]\nname = \"h1\"\nswitches = [\"sw\"]\n[[host]]\nname = \"h2\"\nswitches = [\"sw\"]\n\
               [[host]]\nname = \"h3\"\nswitches = [\"sw\"]\n";
    let topo = model::parse(src, Path::new("star.toml")).unwrap_or_else(|d| panic!("{d}"));
    model::plan(&topo).unwrap_or_else(|d| panic!("{d}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn partition_separates_and_heal_rejoins() {
    netsim::require_features!(Feature::Nftables);
    let lab = up("part", star_plan(), Backend::choose(netsim::caps::probe())).await;
    let addr = |n: u8| Ipv4Addr::new(198, 18, 5, n);
    assert!(reaches(&lab, "h1", addr(2)).await);
    lab.partition(&["h1"], &["h2"])
        .await
        .unwrap_or_else(|e| panic!("partition: {e}"));
    assert!(
        !reaches(&lab, "h1", addr(2)).await,
        "h1 reaches h2 across a partition"
    );
    assert!(
        !reaches(&lab, "h2", addr(1)).await,
        "h2 reaches h1 across a partition"
    );
    assert!(reaches(&lab, "h1", addr(3)).await, "h3 is on neither side");
    assert!(reaches(&lab, "h2", addr(3)).await, "h3 is on neither side");
    lab.heal().await.unwrap_or_else(|e| panic!("heal: {e}"));
    assert!(
        reaches(&lab, "h1", addr(2)).await,
        "heal did not rejoin h1 and h2"
    );
    let err = lab.partition(&["h1"], &["h9"]).await;
    assert!(matches!(err, Err(LabError::NoSuchNode { .. })), "{err:?}");
    down_and_check(lab).await;
}

/// Whether a UDP datagram from h1 to h2:`port` arrives.
async fn udp_arrives(lab: &Lab, port: u16) -> bool {
    let server_node = node(lab, "h2");
    let (bound, is_bound) = tokio::sync::oneshot::channel::<()>();
    let server = server_node.run(move || async move {
        let sock = UdpSocket::bind((H2, port)).ok()?;
        sock.set_read_timeout(Some(Duration::from_millis(800)))
            .ok()?;
        let _ = bound.send(());
        let mut buf = [0u8; 16];
        sock.recv(&mut buf).ok()
    });
    let client_node = node(lab, "h1");
    let client = client_node.run(move || async move {
        let _ = is_bound.await;
        if let Ok(sock) = UdpSocket::bind((H1, 0)) {
            for _ in 0..3 {
                let _ = sock.send_to(b"hello", (H2, port));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    let (got, _) = futures::join!(server, client);
    matches!(got, Ok(Some(_)))
}

/// Whether a TCP connection from h1 to h2:`port` is accepted.
async fn tcp_connects(lab: &Lab, port: u16) -> bool {
    let server_node = node(lab, "h2");
    let (bound, is_bound) = tokio::sync::oneshot::channel::<()>();
    let server = server_node.run(move || async move {
        let l = TcpListener::bind((H2, port)).ok()?;
        l.set_nonblocking(true).ok()?;
        let _ = bound.send(());
        for _ in 0..200 {
            if l.accept().is_ok() {
                return Some(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    });
    let client_node = node(lab, "h1");
    let client = client_node.run(move || async move {
        let _ = is_bound.await;
        TcpStream::connect_timeout(
            &SocketAddrV4::new(H2, port).into(),
            Duration::from_millis(800),
        )
        .is_ok()
    });
    let (s, c) = futures::join!(server, client);
    matches!(s, Ok(Some(()))) && matches!(c, Ok(true))
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_udp_6784_blocks_only_that() {
    netsim::require_features!(Feature::Nftables);
    let lab = up(
        "block",
        pair_plan(""),
        Backend::choose(netsim::caps::probe()),
    )
    .await;
    assert!(udp_arrives(&lab, 6784).await);
    lab.block("h2", Proto::Udp, 6784)
        .await
        .unwrap_or_else(|e| panic!("block: {e}"));
    assert!(!udp_arrives(&lab, 6784).await, "UDP 6784 passed a block");
    assert!(udp_arrives(&lab, 6785).await, "UDP 6785 was blocked too");
    assert!(tcp_connects(&lab, 6784).await, "TCP 6784 was blocked too");
    assert!(reaches(&lab, "h1", H2).await, "ICMP was blocked too");
    assert_eq!(lab.info().faults, vec!["block h2 udp 6784".to_string()]);
    lab.unblock("h2", Proto::Udp, 6784)
        .await
        .unwrap_or_else(|e| panic!("unblock: {e}"));
    assert!(
        udp_arrives(&lab, 6784).await,
        "UDP 6784 still blocked after unblock"
    );
    down_and_check(lab).await;
}

/// How a client on h1 sends its UDP datagrams to h2.
#[derive(Debug, Clone, Copy)]
enum UdpSend {
    /// Three datagrams of this many payload bytes.
    Each(usize),
    /// One send of `total` bytes the kernel cuts into `segment`-byte datagrams (UDP GSO).
    Segmented { total: usize, segment: u16 },
}

/// The payload sizes of the datagrams h2:`port` receives from h1 sending `how`.
async fn udp_sizes_arriving(lab: &Lab, port: u16, how: UdpSend) -> Vec<usize> {
    let server_node = node(lab, "h2");
    let (bound, is_bound) = tokio::sync::oneshot::channel::<()>();
    let server = server_node.run(move || async move {
        let mut sizes = Vec::new();
        let Ok(sock) = UdpSocket::bind((H2, port)) else {
            return sizes;
        };
        let _ = sock.set_read_timeout(Some(Duration::from_millis(600)));
        let _ = bound.send(());
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = sock.recv(&mut buf) {
            sizes.push(n);
        }
        sizes
    });
    let client_node = node(lab, "h1");
    let client = client_node.run(move || async move {
        let _ = is_bound.await;
        let sock = UdpSocket::bind((H1, 0)).expect("bind on h1");
        match how {
            UdpSend::Each(size) => {
                for _ in 0..3 {
                    sock.send_to(&vec![7u8; size], (H2, port)).expect("send");
                }
            }
            UdpSend::Segmented { total, segment } => {
                use std::os::fd::AsRawFd;
                const UDP_SEGMENT: libc::c_int = 103;
                let segment = libc::c_int::from(segment);
                // SAFETY: setsockopt with an int value of the right size on a socket we own.
                let rc = unsafe {
                    libc::setsockopt(
                        sock.as_raw_fd(),
                        libc::SOL_UDP,
                        UDP_SEGMENT,
                        (&segment as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                assert_eq!(rc, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
                sock.send_to(&vec![7u8; total], (H2, port)).expect("send");
            }
        }
    });
    let (sizes, _) = futures::join!(server, client);
    sizes.unwrap_or_else(|e| panic!("run: {e}"))
}

/// Weave's 105_frag: an underlay losing UDP packets above 700 bytes. The filter sees the
/// frames a wire would carry: a GSO send leaves h1 cut into datagrams, each of which passes.
#[tokio::test(flavor = "multi_thread")]
async fn udp_over_a_length_is_dropped_frame_by_frame() {
    netsim::require_features!(Feature::Nftables);
    let lab = up(
        "udpover",
        pair_plan(""),
        Backend::choose(netsim::caps::probe()),
    )
    .await;
    let rule = netsim::model::step::DropRule::UdpOver { bytes: 700 };
    assert_eq!(
        udp_sizes_arriving(&lab, 7105, UdpSend::Each(1000)).await,
        vec![1000; 3],
        "nothing dropped yet"
    );
    let gso = UdpSend::Segmented {
        total: 3000,
        segment: 600,
    };
    match lab.drop_packets("h2", rule).await {
        Ok(()) => {}
        // The kernel lane's guest has nftables without the netdev and inet families, and tc
        // cannot match an IP length range: there the filter must be refused, saying so.
        Err(e) if netsim::testing::in_kernel_lane() => {
            let msg = e.to_string();
            assert!(
                msg.contains("needs nftables with the netdev or inet family"),
                "{msg}"
            );
            down_and_check(lab).await;
            return;
        }
        Err(e) => panic!("drop: {e}"),
    }
    assert_eq!(
        udp_sizes_arriving(&lab, 7105, UdpSend::Each(1000)).await,
        Vec::<usize>::new(),
        "1028-byte packets passed a 700-byte filter"
    );
    assert_eq!(
        udp_sizes_arriving(&lab, 7105, UdpSend::Each(600)).await,
        vec![600; 3],
        "628-byte packets were dropped by a 700-byte filter"
    );
    assert_eq!(
        udp_sizes_arriving(&lab, 7105, gso).await,
        vec![600; 5],
        "a GSO send crossed as one super-packet instead of five frames"
    );
    assert_eq!(
        lab.info().faults,
        vec!["drop UDP over 700 bytes entering h2".to_string()]
    );
    lab.undrop_packets("h2", rule)
        .await
        .unwrap_or_else(|e| panic!("undrop: {e}"));
    assert_eq!(
        udp_sizes_arriving(&lab, 7105, UdpSend::Each(1000)).await,
        vec![1000; 3],
        "still dropped after the filter was lifted"
    );
    down_and_check(lab).await;
}

fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_stop_continue_restart_and_die() {
    setup();
    let lab = up(
        "proc",
        pair_plan(""),
        Backend::choose(netsim::caps::probe()),
    )
    .await;
    let mut child = node(&lab, "h1")
        .spawn(&["sleep", "600"])
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let pid = child.id();
    lab.proc_action("h1", pid, ProcAction::Stop)
        .await
        .unwrap_or_else(|e| panic!("stop: {e}"));
    // Signals are delivered asynchronously: wait for the state to show.
    for _ in 0..100 {
        if proc_state(pid) == Some('T') {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(proc_state(pid), Some('T'));
    assert_eq!(lab.info().faults, vec![format!("stopped pid {pid}")]);
    lab.proc_action("h1", pid, ProcAction::Cont)
        .await
        .unwrap_or_else(|e| panic!("cont: {e}"));
    for _ in 0..100 {
        if proc_state(pid) != Some('T') {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_ne!(proc_state(pid), Some('T'));
    let new = lab
        .proc_action("h1", pid, ProcAction::Restart)
        .await
        .unwrap_or_else(|e| panic!("restart: {e}"))
        .unwrap_or_else(|| panic!("restart gave no pid"));
    let _ = child.wait();
    assert_ne!(new, pid);
    assert!(
        proc_state(new).is_some_and(|s| s != 'Z'),
        "restarted process not running"
    );
    // It runs in h1's namespace.
    let ns_of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    let h1_ns = std::fs::metadata(netns::path(&node(&lab, "h1").netns_name()))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap_or(0);
    assert_eq!(
        ns_of(new).map(|p| p.display().to_string()),
        Some(format!("net:[{h1_ns}]"))
    );
    lab.proc_action("h1", new, ProcAction::Kill)
        .await
        .unwrap_or_else(|e| panic!("kill: {e}"));
    let mut gone = false;
    for _ in 0..100 {
        if proc_state(new).is_none_or(|s| s == 'Z') {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone, "killed process still runs");
    let err = lab.proc_action("h1", 1, ProcAction::Kill).await;
    assert!(matches!(err, Err(LabError::Request { .. })), "{err:?}");
    down_and_check(lab).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_impossible_shape_is_an_error_naming_link_property_and_backend() {
    setup();
    let opts = UpOptions {
        name: Some(unique("unsup")),
        backend: Some(Backend::Netem),
        ..Default::default()
    };
    let plan =
        pair_plan("shape = { delay = \"5ms\", jitter = \"1ms\", distribution = \"normal\" }");
    let err = Lab::up(plan, opts).await.map(|l| l.id().to_string());
    let msg = match err {
        Err(e @ LabError::Unsupported { .. }) => e.to_string(),
        other => panic!("expected Unsupported, got {other:?}"),
    };
    assert!(msg.contains("h1 -- h2"), "{msg}");
    assert!(msg.contains("netem"), "{msg}");
    // On the emulated backend, a delay on a link that has no delay line is refused too.
    let lab = up("unsup2", pair_plan(""), Backend::Emulated).await;
    let mut update = ShapeUpdate::default();
    update.set("delay", "5ms").unwrap_or_else(|e| panic!("{e}"));
    let err = lab.set_link("h1", "h2", &update, false).await;
    let msg = err
        .map(|_| ())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("h1 -- h2") && msg.contains("delay 5ms") && msg.contains("emulated"),
        "{msg}"
    );
    down_and_check(lab).await;
}

// ---------------------------------------------------------------- netem backend (kernel lane)

#[tokio::test(flavor = "multi_thread")]
async fn netem_backend_delays_loses_and_limits() {
    netsim::require_features!(Feature::Netem, Feature::Tbf);
    let lab = up(
        "netem",
        pair_plan("shape = { delay = \"10ms\", rate = \"20mbit\", b_to_a = { loss = \"20%\" } }"),
        Backend::Netem,
    )
    .await;
    // 400 pings: at 20 % loss one standard deviation is 0.02, and the window below is five.
    let opts = PingOptions {
        count: 400,
        interval: Duration::from_millis(5),
        timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let r = ping_from(&lab, "h1", H2, opts).await;
    let min = r.min_rtt().unwrap_or_default();
    eprintln!(
        "netem 10 ms each way, 20 % loss back: min rtt {min:?}, loss {}",
        r.loss()
    );
    assert!(
        min >= Duration::from_millis(20) && min < Duration::from_millis(40),
        "{min:?}"
    );
    assert!((0.1..=0.3).contains(&r.loss()), "loss {}", r.loss());
    let (bw, _) = pair::run(
        &node(&lab, "h2"),
        H2,
        &node(&lab, "h1"),
        Test::TcpBw,
        PerfOptions::for_test(Test::TcpBw),
    )
    .await
    .unwrap_or_else(|e| panic!("tcp_bw: {e}"));
    let mbit = bw.bytes_per_sec.unwrap_or(0.0) * 8.0 / 1e6;
    eprintln!("netem rate 20 mbit: measured {mbit:.2} Mbit/s");
    assert!(mbit > 2.0 && mbit <= 21.0, "{mbit:.2} Mbit/s");
    assert_eq!(lab.backend(), Some(Backend::Netem));
    down_and_check(lab).await;
}

// ---------------------------------------------------------------- the CLI, across invocations

/// Runs `netsim ARGS` with this binary's run directory; returns (success, stdout + stderr).
fn cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_netsim"))
        .args(args)
        .env(lab::state::RUN_DIR_ENV, RUN_DIR)
        .env("NETSIM_BIN", env!("CARGO_BIN_EXE_netsim"))
        .output()
        .unwrap_or_else(|e| panic!("netsim {args:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn cli_changes_survive_as_state_across_invocations() {
    netsim::require_features!(Feature::Nftables, Feature::AfPacket, Feature::Tbf);
    setup();
    let id = unique("cli");
    let topo = concat!(env!("CARGO_MANIFEST_DIR"), "/../topologies/shaped-wan.toml");
    let (ok, out) = cli(&["up", topo, "--name", &id]);
    assert!(ok, "{out}");
    let steps: &[&[&str]] = &[
        &[
            "link", "set", &id, "r1", "r2", "--delay", "5ms", "--jitter", "0ms",
        ],
        &["link", "cut", &id, "h1", "r1"],
        &["block", &id, "r2", "udp", "6784"],
        &["partition", &id, "h1", "h2"],
    ];
    for step in steps {
        let (ok, out) = cli(step);
        assert!(ok, "netsim {step:?}: {out}");
    }
    let (ok, ls) = cli(&["ls"]);
    assert!(ok, "{ls}");
    assert!(
        ls.contains(&id) && (ls.contains("emulated") || ls.contains("netem")),
        "{ls}"
    );
    assert!(ls.contains("cut h1 -- r1"), "{ls}");
    let (ok, status) = cli(&["status", &id]);
    assert!(ok, "{status}");
    assert!(
        status.contains("r1 -> r2: rate 100mbit delay 5ms loss 0.1%"),
        "{status}"
    );
    assert!(status.contains("blocked: r2 udp 6784"), "{status}");
    assert!(status.contains("partition: h1 | h2"), "{status}");
    let (ok, out) = cli(&["heal", &id]);
    assert!(ok, "{out}");
    let (_, status) = cli(&["status", &id]);
    assert!(
        !status.contains("CUT") && !status.contains("partition:"),
        "{status}"
    );
    assert!(
        status.contains("blocked: r2 udp 6784"),
        "heal must leave blocks: {status}"
    );
    let (ok, out) = cli(&["link", "set", &id, "h1", "h9", "--delay", "1ms"]);
    assert!(!ok && out.contains("no link joins h1 and h9"), "{out}");
    let (ok, out) = cli(&["down", &id]);
    assert!(ok, "{out}");
    let left = netsim::testing::lab_namespaces(&id);
    assert!(left.is_empty(), "namespaces left: {left:?}");
}
