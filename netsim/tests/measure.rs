//! The built-in probes between nodes of a real lab: ping, qperf-style tests, matrices and path
//! MTU, and their behaviour on bad input (no such peer, no bind, nobody answering).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use netsim::lab::bench::{star, star_addr};
use netsim::measure::icmp::{self, PingOptions};
use netsim::measure::matrix;
use netsim::measure::mtu::{self, Oversize};
use netsim::measure::pair;
use netsim::measure::perf::{CpuPin, PerfOptions, Test};
use netsim::model::{self, Plan};
use netsim::{Lab, UpOptions};
use rstest::rstest;

/// A lab id unique to this run: `prefix-XXXX`, as the lab engine makes its default ids.
fn unique(prefix: &str) -> String {
    netsim::lab::default_id(prefix)
}

async fn lab_of(plan: Plan, prefix: &str) -> Lab {
    let opts = UpOptions {
        name: Some(unique(prefix)),
        ..UpOptions::default()
    };
    Lab::up(plan, opts).await.expect("lab comes up")
}

fn short(test: Test) -> PerfOptions {
    PerfOptions {
        duration: Duration::from_millis(300),
        ..PerfOptions::for_test(test)
    }
}

#[rstest]
#[case(Test::TcpBw)]
#[case(Test::TcpLat)]
#[case(Test::UdpBw)]
#[case(Test::UdpLat)]
#[tokio::test(flavor = "multi_thread")]
async fn qperf_tests_run_between_two_hosts(#[case] test: Test) {
    let lab = lab_of(star("m", 2, 1500), "mq").await;
    let (h1, h2) = (lab.node("h1").expect("h1"), lab.node("h2").expect("h2"));
    let (result, tally) = pair::run(&h2, star_addr(2), &h1, test, short(test))
        .await
        .expect("measurement runs");
    assert_eq!(result.partial, None);
    assert!(result.units > 0, "{result:?}");
    assert!(tally.messages > 0, "{tally:?}");
    match test {
        Test::TcpBw | Test::UdpBw => assert!(result.bytes_per_sec.unwrap_or(0.0) > 1e6),
        Test::TcpLat | Test::UdpLat => assert!(result.latency_us.unwrap_or(0.0) > 0.0),
    }
    lab.down().await.expect("down");
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_measures_round_trips_and_loss() {
    let lab = lab_of(star("m", 2, 1500), "mp").await;
    let h1 = lab.node("h1").expect("h1");
    let to = star_addr(2);
    let result = h1
        .run(move || async move { icmp::ping(to, &PingOptions::default()) })
        .await
        .expect("runs")
        .expect("pings");
    assert_eq!((result.sent, result.received), (3, 3));
    assert!(result.min_rtt().is_some());
    assert_eq!(result.loss(), 0.0);

    // An address nobody has: every request is lost, and the run ends within its timeouts.
    let nobody = Ipv4Addr::new(198, 18, 250, 250);
    let opts = PingOptions {
        count: 2,
        timeout: Duration::from_millis(200),
        ..PingOptions::default()
    };
    let started = Instant::now();
    let result = h1
        .run(move || async move { icmp::ping(nobody, &opts) })
        .await
        .expect("runs")
        .expect("pings");
    assert_eq!(result.received, 0);
    assert_eq!(result.loss(), 1.0);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded in time"
    );
    lab.down().await.expect("down");
}

#[tokio::test(flavor = "multi_thread")]
async fn pinned_halves_measure_and_a_missing_cpu_is_a_clear_error() {
    let lab = lab_of(star("m", 2, 1500), "mp").await;
    let (h1, h2) = (lab.node("h1").expect("h1"), lab.node("h2").expect("h2"));
    let pinned = |client, server| PerfOptions {
        cpus: Some(CpuPin { client, server }),
        ..short(Test::TcpBw)
    };
    let (result, tally) = pair::run(&h2, star_addr(2), &h1, Test::TcpBw, pinned(0, 0))
        .await
        .expect("both halves on CPU 0");
    assert_eq!(result.partial, None);
    assert!(
        result.units > 0 && result.units == tally.bytes,
        "{result:?}"
    );
    let err = pair::run(&h2, star_addr(2), &h1, Test::TcpBw, pinned(0, 100_000))
        .await
        .expect_err("no CPU 100000");
    let text = err.to_string();
    assert!(
        text.contains("server") && text.contains("CPU 100000"),
        "{text}"
    );
    lab.down().await.expect("down");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_cannot_bind_is_a_clear_error() {
    let lab = lab_of(star("m", 2, 1500), "mb").await;
    let (h1, h2) = (lab.node("h1").expect("h1"), lab.node("h2").expect("h2"));
    // h2 does not own h1's address, so it cannot listen on it.
    let err = pair::run(&h2, star_addr(1), &h1, Test::TcpBw, short(Test::TcpBw))
        .await
        .expect_err("cannot bind");
    let text = err.to_string();
    assert!(
        text.contains("cannot bind") && text.contains("h2"),
        "{text}"
    );
    lab.down().await.expect("down");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_never_answers_ends_in_bounded_time() {
    let lab = lab_of(star("m", 2, 1500), "mn").await;
    let h1 = lab.node("h1").expect("h1");
    let opts = PerfOptions {
        io_timeout: Duration::from_millis(500),
        ..short(Test::UdpLat)
    };
    let nobody = "198.18.250.250:5001".parse().expect("address");
    let started = Instant::now();
    let outcome = h1
        .run(move || async move { netsim::measure::perf::client(Test::UdpLat, nobody, opts) })
        .await
        .expect("runs");
    // Either an error or a result marked partial with no round trips: never a hang.
    match outcome {
        Ok(r) => {
            assert_eq!(r.units, 0);
            assert!(r.partial.is_some(), "{r:?}");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    lab.down().await.expect("down");
}

#[tokio::test(flavor = "multi_thread")]
async fn matrices_report_per_client_and_aggregate_figures() {
    let lab = lab_of(star("m", 5, 1500), "mm").await;
    let node = |i: usize| lab.node(&format!("h{i}")).expect("host");
    let server = matrix::MatrixServer {
        node: node(1),
        addr: star_addr(1),
    };
    let clients = [node(2), node(3), node(4)];
    let opts = short(Test::TcpBw);

    let (servers, cs) = matrix::one_server(server.clone(), &clients);
    let one = matrix::run(&servers, &cs, opts).await.expect("1 x N");
    assert_eq!(one.clients.len(), 3);
    assert!(one
        .clients
        .iter()
        .all(|c| c.bytes_per_sec > 0.0 && c.partial.is_none()));
    let sum: f64 = one.clients.iter().map(|c| c.bytes_per_sec).sum();
    assert!((sum - one.aggregate_bytes_per_sec).abs() < 1.0);

    let servers = vec![
        server.clone(),
        matrix::MatrixServer {
            node: node(5),
            addr: star_addr(5),
        },
    ];
    let (servers, cs) = matrix::paired(servers, &clients);
    let paired = matrix::run(&servers, &cs, opts).await.expect("N x N");
    let targets: Vec<&str> = paired.clients.iter().map(|c| c.server.as_str()).collect();
    assert_eq!(
        targets,
        ["h1", "h5", "h1"],
        "client i goes to server i mod n"
    );

    let (servers, cs) = matrix::streams_per_client(server, &clients[..2], 3);
    let multi = matrix::run(&servers, &cs, opts).await.expect("M x K");
    assert!(multi
        .clients
        .iter()
        .all(|c| c.streams == 3 && c.bytes_per_sec > 0.0));
    lab.down().await.expect("down");
}

#[tokio::test(flavor = "multi_thread")]
async fn path_mtu_finds_the_bottleneck_and_how_it_answers() {
    // h1 -- r1 -- h2 with a 1400-byte link behind the router: the router answers oversized DF
    // packets with "fragmentation needed".
    let src = r#"
        [[router]]
        name = "r1"
        [[host]]
        name = "h1"
        gateway = "r1"
        [[host]]
        name = "h2"
        gateway = "r1"
        [[link]]
        endpoints = ["h1", "r1"]
        subnet = "198.18.1.0/24"
        [[link]]
        endpoints = ["r1", "h2"]
        subnet = "198.18.2.0/24"
        mtu = 1400
    "#;
    let topology = model::parse(src, "pmtu.toml".as_ref()).expect("parses");
    let plan = model::plan(&topology).expect("plans");
    let lab = lab_of(plan, "mt").await;
    let h1 = lab.node("h1").expect("h1");
    let h2_addr = lab
        .plan()
        .node("h2")
        .and_then(|n| n.interfaces.first())
        .and_then(|i| i.addrs.first())
        .map(|a| a.addr())
        .expect("h2 has an address");
    let found = h1
        .run(move || async move { mtu::path_mtu(h2_addr, 1500, 2) })
        .await
        .expect("runs")
        .expect("measures");
    assert_eq!(found.mtu, 1400);
    assert_eq!(found.oversize, Some(Oversize::FragNeeded { mtu: 1400 }));

    // Towards the router itself the limit is h1's own 1500-byte interface.
    let r1_addr = lab
        .plan()
        .node("r1")
        .and_then(|n| n.interfaces.first())
        .and_then(|i| i.addrs.first())
        .map(|a| a.addr())
        .expect("r1 has an address");
    let local = h1
        .run(move || async move { mtu::path_mtu(r1_addr, 9000, 2) })
        .await
        .expect("runs")
        .expect("measures");
    assert_eq!(local.mtu, 1500);
    assert_eq!(local.oversize, Some(Oversize::LocalLimit));
    lab.down().await.expect("down");
}

#[rstest]
#[case(Test::TcpBw)]
#[case(Test::TcpLat)]
#[case(Test::UdpBw)]
#[case(Test::UdpLat)]
#[tokio::test(flavor = "multi_thread")]
async fn a_link_cut_mid_run_gives_a_partial_result_in_bounded_time(#[case] test: Test) {
    let lab = lab_of(star("m", 2, 1500), "mc").await;
    let (h1, h2) = (lab.node("h1").expect("h1"), lab.node("h2").expect("h2"));
    // Ten seconds, though the cut comes at 0.7 s and the run should end about `io_timeout`
    // after it: in the one-CPU guest the cut (nftables rules in both nodes, the state file
    // written) competes for the CPU with a CPU-bound tcp_bw, and once took effect only after
    // a 3-s run had ended cleanly.
    let opts = PerfOptions {
        duration: Duration::from_secs(10),
        io_timeout: Duration::from_millis(800),
        ..PerfOptions::for_test(test)
    };
    let started = Instant::now();
    let measuring = async {
        let outcome = pair::run(&h2, star_addr(2), &h1, test, opts).await;
        (outcome, Instant::now())
    };
    let cutting = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        lab.cut("h1", "sw").await.expect("cut the link");
        Instant::now()
    };
    let ((outcome, ended), cut) = futures::join!(measuring, cutting);
    assert!(
        cut < ended,
        "{}: the cut took effect {:?} after the start, only after the run had ended ({:?}): \
         nothing to judge",
        test.name(),
        cut - started,
        ended - started
    );
    // Either an error naming what failed, or figures marked partial: never a hang, and never
    // a clean-looking result.
    match outcome {
        Ok((result, _)) => assert!(
            result.partial.is_some(),
            "{}: a cut link must mark the result partial: {result:?}",
            test.name()
        ),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    // Bounded: udp_bw sends on for its whole duration (the sender cannot tell a cut link from
    // a full queue), then waits a bounded time for the server's count.
    assert!(
        started.elapsed() < opts.duration + Duration::from_secs(15),
        "{} ended only after {:?}",
        test.name(),
        started.elapsed()
    );
    lab.down().await.expect("down");
}
