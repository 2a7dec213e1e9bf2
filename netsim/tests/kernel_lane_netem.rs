//! netem over netlink, proven on the wire: two scratch namespaces on a veth, netem on both ends,
//! a UDP echo between them. Needs netem: skipped on kernels without it, run by the kernel lane.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netsim::caps::Feature;
use netsim::kernel::tc::{self, Netem};
use netsim::testing::{self, ScratchNs, VethEnd};

const ADDR_A: Ipv4Addr = Ipv4Addr::new(198, 18, 77, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(198, 18, 77, 2);
const ECHO_PORT: u16 = 7777;

/// Round trips of `count` probes sent every `interval` from A to B's echo.
struct Sample {
    /// Round trip of the first reply to each answered probe.
    rtts: Vec<Duration>,
    /// Every reply in arrival order (sequence number), duplicates included.
    arrivals: Vec<u64>,
    sent: usize,
}

impl Sample {
    fn duplicates(&self) -> usize {
        self.arrivals.len() - self.rtts.len()
    }
    /// Replies that arrived after a reply to a later probe.
    fn overtaken(&self) -> usize {
        let mut highest = None;
        let mut count = 0;
        for &seq in &self.arrivals {
            match highest {
                Some(h) if seq < h => count += 1,
                _ => highest = Some(seq),
            }
        }
        count
    }
    fn min(&self) -> Duration {
        self.rtts.iter().copied().min().unwrap_or(Duration::MAX)
    }
    fn lost(&self) -> usize {
        self.sent - self.rtts.len()
    }
}

/// Run an echo server in `b` while `a` sends `count` probes, `interval` apart, and collects the
/// replies until a second after the last send.
fn measure(a: &ScratchNs, b: &ScratchNs, count: usize, interval: Duration) -> Sample {
    let stop = AtomicBool::new(false);
    let ready = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        let server = scope.spawn(|| {
            b.run(|| {
                let sock = UdpSocket::bind(SocketAddr::from((ADDR_B, ECHO_PORT)))
                    .map_err(|e| format!("bind the echo server: {e}"))?;
                sock.set_read_timeout(Some(Duration::from_millis(50)))
                    .map_err(|e| e.to_string())?;
                ready.wait();
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = sock.recv_from(&mut buf) {
                        let _ = sock.send_to(&buf[..n], from);
                    }
                }
                Ok::<(), String>(())
            })
        });
        ready.wait();
        let sample = a.run(|| {
            let sock = UdpSocket::bind(SocketAddr::from((ADDR_A, 0))).expect("bind the client");
            sock.connect(SocketAddr::from((ADDR_B, ECHO_PORT)))
                .expect("connect the client");
            // Receive timeouts tick in jiffies (10 ms in the guest): keep the sender on a
            // thread of its own so a blocked receive never delays a send.
            sock.set_read_timeout(Some(Duration::from_millis(20)))
                .expect("set a read timeout");
            let sender = sock.try_clone().expect("clone the client socket");
            let sent_at = std::sync::Mutex::new(HashMap::<u64, Instant>::new());
            let done_sending = AtomicBool::new(false);
            std::thread::scope(|inner| {
                inner.spawn(|| {
                    let start = Instant::now();
                    for seq in 0..count as u64 {
                        if let Ok(mut map) = sent_at.lock() {
                            map.insert(seq, Instant::now());
                        }
                        let _ = sender.send(&seq.to_be_bytes());
                        // Pace by the clock, not by accumulated sleeps.
                        let next = start + interval * (seq as u32 + 1);
                        std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    }
                    done_sending.store(true, Ordering::Release);
                });
                let mut rtts = Vec::new();
                let mut arrivals = Vec::new();
                let mut buf = [0u8; 64];
                let mut deadline = None;
                loop {
                    if let Ok(8) = sock.recv(&mut buf) {
                        let now = Instant::now();
                        let mut b8 = [0u8; 8];
                        b8.copy_from_slice(&buf[..8]);
                        let seq = u64::from_be_bytes(b8);
                        arrivals.push(seq);
                        let first = sent_at.lock().ok().and_then(|mut map| map.remove(&seq));
                        if let Some(t) = first {
                            rtts.push(now - t);
                        }
                    }
                    // Wait a second past the last send: duplicates may still be on their way.
                    if deadline.is_none() && done_sending.load(Ordering::Acquire) {
                        deadline = Some(Instant::now() + Duration::from_secs(1));
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                }
                Sample {
                    rtts,
                    arrivals,
                    sent: count,
                }
            })
        });
        stop.store(true, Ordering::Relaxed);
        let served = server.join().expect("echo thread");
        served.expect("enter B").expect("echo server");
        sample.expect("enter A")
    })
}

fn set_netem(ns: &ScratchNs, end: &VethEnd, netem: &Netem) {
    let ifindex = end.ifindex;
    ns.run_async(|| async move {
        let handle = testing::rtnl().expect("rtnetlink");
        tc::replace_netem(&handle, ifindex, netem).await
    })
    .expect("enter namespace")
    .expect("install netem");
}

fn clear_qdisc(ns: &ScratchNs, end: &VethEnd) {
    let ifindex = end.ifindex;
    ns.run_async(|| async move {
        let handle = testing::rtnl().expect("rtnetlink");
        tc::delete_root_qdisc(&handle, ifindex).await
    })
    .expect("enter namespace")
    .expect("delete netem");
}

#[test]
fn netem_delay_and_loss_show_on_the_wire() {
    netsim::require_features!(Feature::Netns, Feature::Veth, Feature::Netem);
    let a = ScratchNs::new().expect("namespace A");
    let b = ScratchNs::new().expect("namespace B");
    let (end_a, end_b) =
        testing::veth_between(&a, &b, "nmv", ADDR_A, ADDR_B).expect("veth between A and B");

    // Without netem the round trip is far below the delay we will add: the baseline.
    let baseline = measure(&a, &b, 20, Duration::from_millis(5));
    assert!(
        baseline.rtts.len() >= 15,
        "baseline lost {} of 20",
        baseline.lost()
    );
    assert!(
        baseline.min() < Duration::from_millis(8),
        "baseline {:?}",
        baseline.min()
    );

    // 10 ms each way, 5 % loss on A's egress only.
    set_netem(
        &a,
        &end_a,
        &Netem {
            delay: Duration::from_millis(10),
            loss_percent: 5.0,
            ..Netem::default()
        },
    );
    set_netem(
        &b,
        &end_b,
        &Netem {
            delay: Duration::from_millis(10),
            ..Netem::default()
        },
    );
    let shaped = measure(&a, &b, 300, Duration::from_millis(2));
    let min = shaped.min();
    eprintln!(
        "netem 10 ms + 10 ms, 5 % loss one way: min rtt {min:?}, lost {} of {}",
        shaped.lost(),
        shaped.sent
    );
    // netem never delivers early; a slow guest (UML ticks at 100 Hz) may deliver late.
    assert!(
        min >= Duration::from_millis(19) && min <= Duration::from_millis(26),
        "minimum round trip {min:?}, configured 20 ms"
    );
    // Binomial(300, 5 %): mean 15; both bounds are more than 3 standard deviations away.
    assert!(
        (3..=40).contains(&shaped.lost()),
        "lost {} of 300 with 5 % loss configured",
        shaped.lost()
    );

    // Deleting the qdiscs restores the unshaped link.
    clear_qdisc(&a, &end_a);
    clear_qdisc(&b, &end_b);
    let after = measure(&a, &b, 20, Duration::from_millis(5));
    assert!(
        after.rtts.len() >= 15,
        "after delete lost {} of 20",
        after.lost()
    );
    assert!(
        after.min() < Duration::from_millis(8),
        "after delete {:?}",
        after.min()
    );
}

#[test]
fn netem_duplication_and_reordering_show_on_the_wire() {
    netsim::require_features!(Feature::Netns, Feature::Veth, Feature::Netem);
    let a = ScratchNs::new().expect("namespace A");
    let b = ScratchNs::new().expect("namespace B");
    let (end_a, _end_b) =
        testing::veth_between(&a, &b, "nmd", ADDR_A, ADDR_B).expect("veth between A and B");

    // Half of A's packets duplicated.
    set_netem(
        &a,
        &end_a,
        &Netem {
            duplicate_percent: 50.0,
            ..Netem::default()
        },
    );
    let duplicated = measure(&a, &b, 200, Duration::from_millis(2));
    eprintln!(
        "duplicate 50 %: {} replies to {} probes",
        duplicated.arrivals.len(),
        duplicated.sent
    );
    // Binomial(200, 50 %): mean 100, standard deviation about 7.
    assert!(
        (50..=150).contains(&duplicated.duplicates()),
        "{} duplicates of 200 with 50 % configured",
        duplicated.duplicates()
    );

    // 10 ms delay with half the packets sent at once: those overtake the delayed ones.
    set_netem(
        &a,
        &end_a,
        &Netem {
            delay: Duration::from_millis(10),
            reorder_percent: 50.0,
            ..Netem::default()
        },
    );
    let reordered = measure(&a, &b, 200, Duration::from_millis(2));
    let fast = reordered
        .rtts
        .iter()
        .filter(|r| **r < Duration::from_millis(8))
        .count();
    eprintln!(
        "reorder 50 % over 10 ms: {} overtaken, {fast} undelayed of {}",
        reordered.overtaken(),
        reordered.rtts.len()
    );
    assert!(
        reordered.overtaken() >= 20,
        "only {} overtaken",
        reordered.overtaken()
    );
    // About half (measured 86 to 105 of 200 in the guest, where a busy receiver can push an
    // undelayed reply past 8 ms); the bounds only catch "none" and "all".
    assert!(
        (40..=160).contains(&fast),
        "{fast} of 200 undelayed with 50 % reordering"
    );
}

#[test]
fn netem_refuses_nonsense_before_asking_the_kernel() {
    // Pure validation: runs everywhere.
    let netem = Netem {
        loss_percent: 150.0,
        ..Netem::default()
    };
    let err = netem.options().expect_err("150 % loss accepted");
    assert_eq!(
        err.to_string(),
        "invalid netem parameters: loss must be 0 to 100 %, got 150"
    );
}
