//! Lab lifecycle tests on real namespaces (run as root). Every test uses its own lab id with a
//! random suffix, so tests running in parallel (or twice at once) never share a namespace.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use ipnet::Ipv4Net;
use netsim::kernel::rtnl::Netlink;
use netsim::kernel::{netns, sysctl};
use netsim::lab::bench::{line, line_node_addr, star, star_addr};
use netsim::lab::{self, Lab, LabError, NodeHandle, Phase, UpOptions};
use netsim::model::plan::RoutePlan;
use rstest::rstest;

/// Run directory of this test binary's state files: kept apart from real labs, and in /tmp
/// so the empty directory left at the end is not litter under /run.
const RUN_DIR: &str = "/tmp/netsim-tests-lab";

/// Serialises `clean` calls against the sigkill test, which must be the one sweeping its
/// victim (any sweep would remove it: its owner is dead).
static CLEAN_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `lab::clean`, not while the sigkill test examines its victim.
async fn clean_serialised() -> lab::CleanReport {
    let _guard = CLEAN_LOCK.lock().await;
    lab::clean().expect("clean")
}

fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Set before any test reads it; tests only read it afterwards.
        std::env::set_var(lab::state::RUN_DIR_ENV, RUN_DIR);
    });
}

/// A lab id unique to this run: `prefix-XXXX`, as the lab engine makes its default ids.
fn unique(prefix: &str) -> String {
    netsim::lab::default_id(prefix)
}

fn opts(id: &str) -> UpOptions {
    UpOptions {
        name: Some(id.to_string()),
        ..Default::default()
    }
}

/// Namespaces under /run/netns belonging to lab `id`.
fn namespaces_of(id: &str) -> Vec<String> {
    netsim::testing::lab_namespaces(id)
}

fn state_file(id: &str) -> PathBuf {
    PathBuf::from(RUN_DIR).join(format!("{id}.json"))
}

/// Asserts that nothing of lab `id` is left.
fn assert_gone(id: &str) {
    assert_eq!(
        namespaces_of(id),
        Vec::<String>::new(),
        "namespaces of {id} left"
    );
    assert!(!state_file(id).exists(), "state file of {id} left");
}

/// Sends UDP datagrams from `from` to `addr` (served by `to`) until one is echoed, for up to
/// about 5 s. Returns whether an echo came back.
async fn udp_reach(from: &NodeHandle, to: &NodeHandle, addr: Ipv4Addr) -> bool {
    const PORT: u16 = 7007;
    let server = to.run(|| async {
        let sock = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).await?;
        let mut buf = [0u8; 64];
        let mut echoed = 0u32;
        loop {
            let Ok(res) =
                tokio::time::timeout(Duration::from_secs(8), sock.recv_from(&mut buf)).await
            else {
                return Ok::<_, std::io::Error>(echoed);
            };
            let (n, peer) = res?;
            if &buf[..n] == b"bye" {
                return Ok(echoed);
            }
            sock.send_to(&buf[..n], peer).await?;
            echoed += 1;
        }
    });
    let client = from.run(move || async move {
        let sock = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
        let mut buf = [0u8; 64];
        let mut ok = false;
        for _ in 0..25 {
            sock.send_to(b"ping", (addr, PORT)).await?;
            if let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await
            {
                if &buf[..n] == b"ping" {
                    ok = true;
                    break;
                }
            }
        }
        sock.send_to(b"bye", (addr, PORT)).await?;
        Ok::<_, std::io::Error>(ok)
    });
    let (server, client) = tokio::join!(server, client);
    let echoed = server.expect("server task").expect("server io");
    let ok = client.expect("client task").expect("client io");
    ok && echoed > 0
}

async fn netlink_of(node: &NodeHandle) -> Netlink {
    Netlink::open_in(&node.netns_name(), &tokio::runtime::Handle::current()).expect("netlink")
}

#[tokio::test(flavor = "multi_thread")]
async fn star_of_three_hosts_is_wired_and_goes_away() {
    setup();
    let id = unique("t-star3");
    let lab = Lab::up(star("star3", 3, 1500), opts(&id))
        .await
        .expect("up");
    assert_eq!(lab.id(), id);
    assert_eq!(lab.nodes().len(), 4);
    let info = lab.info();
    assert_eq!(info.phase, Phase::Up);
    assert!(info.owner_alive);
    assert_eq!(namespaces_of(&id).len(), 4);

    for i in 1..=3 {
        let h = lab.node(&format!("h{i}")).expect("host");
        let nl = netlink_of(&h).await;
        let links = nl.links().await.expect("links");
        let eth0 = links.iter().find(|l| l.name == "eth0").expect("eth0");
        assert!(eth0.up);
        assert_eq!(eth0.mtu, 1500);
        assert_eq!(eth0.alias.as_deref(), Some(format!("netsim:{id}").as_str()));
        let lo = links.iter().find(|l| l.name == "lo").expect("lo");
        assert!(lo.up);
        let addrs = nl.addrs().await.expect("addrs");
        let want = Ipv4Net::new(star_addr(i), 16).expect("net");
        assert!(
            addrs.iter().any(|(ix, a)| *ix == eth0.index && *a == want),
            "{addrs:?}"
        );
        let routes = nl.routes().await.expect("routes");
        assert!(
            routes
                .iter()
                .any(|r| r.dst == want.trunc() && r.oif == Some(eth0.index)),
            "{routes:?}"
        );
    }
    // The switch: every port enslaved to the bridge.
    let sw = lab.node("sw").expect("switch");
    let links = netlink_of(&sw).await.links().await.expect("links");
    let br = links.iter().find(|l| l.name == "br0").expect("br0");
    let ports: Vec<_> = links
        .iter()
        .filter(|l| l.master == Some(br.index))
        .collect();
    assert_eq!(ports.len(), 3, "{links:?}");

    let (h1, h2, h3) = (
        lab.node("h1").expect("h1"),
        lab.node("h2").expect("h2"),
        lab.node("h3").expect("h3"),
    );
    assert!(udp_reach(&h1, &h2, star_addr(2)).await);
    assert!(udp_reach(&h3, &h1, star_addr(1)).await);
    assert!(udp_reach(&h2, &h3, star_addr(3)).await);

    lab.down().await.expect("down");
    assert_gone(&id);
}

#[tokio::test(flavor = "multi_thread")]
async fn routed_line_forwards_between_subnets() {
    setup();
    let id = unique("t-line3");
    let mut plan = line("line3", 3, 1500);
    // A device route (no gateway) and a route pinned to a device with a gateway.
    let device_route: Ipv4Net = "198.18.250.0/24".parse().expect("net");
    let pinned: Ipv4Net = "198.18.251.0/24".parse().expect("net");
    plan.nodes[0].routes.push(RoutePlan {
        dst: device_route,
        via: None,
        dev: Some("eth0".into()),
    });
    plan.nodes[0].routes.push(RoutePlan {
        dst: pinned,
        via: Some(line_node_addr(1)),
        dev: Some("eth0".into()),
    });
    let lab = Lab::up(plan, opts(&id)).await.expect("up");
    let (n0, n1, n2) = (
        lab.node("n0").expect("n0"),
        lab.node("n1").expect("n1"),
        lab.node("n2").expect("n2"),
    );
    assert_eq!(
        sysctl::read_in(&n1.netns_name(), "net.ipv4.ip_forward").expect("sysctl"),
        "1"
    );
    assert_eq!(
        sysctl::read_in(&n0.netns_name(), "net.ipv4.ip_forward").expect("sysctl"),
        "0"
    );
    let nl = netlink_of(&n0).await;
    let eth0 = nl
        .links()
        .await
        .expect("links")
        .into_iter()
        .find(|l| l.name == "eth0")
        .expect("eth0");
    let routes = nl.routes().await.expect("routes");
    assert!(
        routes
            .iter()
            .any(|r| r.dst == device_route && r.via.is_none() && r.oif == Some(eth0.index)),
        "{routes:?}"
    );
    assert!(
        routes.iter().any(|r| r.dst == pinned
            && r.via == Some(line_node_addr(1))
            && r.oif == Some(eth0.index)),
        "{routes:?}"
    );
    // n0 and n2 are on different /30s: only the router joins them.
    assert!(udp_reach(&n0, &n2, line_node_addr(2)).await);
    assert!(udp_reach(&n2, &n0, line_node_addr(0)).await);
    drop(lab);
    assert_gone(&id);
}

#[tokio::test(flavor = "multi_thread")]
async fn long_line_reaches_end_to_end() {
    setup();
    let id = unique("t-line6");
    let lab = Lab::up(line("line6", 6, 1500), opts(&id))
        .await
        .expect("up");
    let (first, last) = (lab.node("n0").expect("n0"), lab.node("n5").expect("n5"));
    assert!(udp_reach(&first, &last, line_node_addr(5)).await);
    assert!(udp_reach(&last, &first, line_node_addr(0)).await);
    lab.down().await.expect("down");
    assert_gone(&id);
}

#[rstest]
#[case::small(1280)]
#[case::jumbo(9000)]
#[tokio::test(flavor = "multi_thread")]
async fn mtu_is_applied_to_both_ends_and_the_bridge(#[case] mtu: u32) {
    setup();
    let id = unique(&format!("t-mtu{mtu}"));
    let lab = Lab::up(star("mtu", 2, mtu), opts(&id)).await.expect("up");
    for node in lab.nodes() {
        let links = netlink_of(&node).await.links().await.expect("links");
        for l in links.iter().filter(|l| l.name != "lo") {
            assert_eq!(l.mtu, mtu, "{} {}", node.name(), l.name);
        }
    }
    lab.down().await.expect("down");
    assert_gone(&id);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_labs_from_one_plan_live_side_by_side() {
    setup();
    let plan = star("twin", 2, 1500);
    let a = Lab::up(plan.clone(), UpOptions::default())
        .await
        .expect("up a");
    let b = Lab::up(plan, UpOptions::default()).await.expect("up b");
    assert_ne!(a.id(), b.id());
    assert!(a.id().starts_with("twin-") && b.id().starts_with("twin-"));
    // Same addresses in both, but separate namespaces: both work.
    for lab in [&a, &b] {
        let (h1, h2) = (lab.node("h1").expect("h1"), lab.node("h2").expect("h2"));
        assert!(udp_reach(&h1, &h2, star_addr(2)).await, "lab {}", lab.id());
    }
    let ids: Vec<String> = lab::list()
        .expect("list")
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert!(ids.contains(&a.id().to_string()) && ids.contains(&b.id().to_string()));
    let (ida, idb) = (a.id().to_string(), b.id().to_string());
    a.down().await.expect("down a");
    assert_gone(&ida);
    assert_eq!(namespaces_of(&idb).len(), 3, "b must survive a's teardown");
    drop(b);
    assert_gone(&idb);
}

#[tokio::test(flavor = "multi_thread")]
async fn panic_in_a_task_tears_the_lab_down() {
    setup();
    let id = unique("t-panic");
    let task_id = id.clone();
    let joined = tokio::spawn(async move {
        let lab = Lab::up(star("panic", 2, 1500), opts(&task_id))
            .await
            .expect("up");
        assert_eq!(namespaces_of(lab.id()).len(), 3);
        panic!("deliberate panic with lab {} up", lab.id());
    })
    .await;
    assert!(joined.expect_err("the task panics").is_panic());
    assert_gone(&id);
}

#[test]
fn drop_outside_a_runtime_tears_the_lab_down() {
    setup();
    let id = unique("t-drop");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let lab = rt
        .block_on(Lab::up(star("drop", 1, 1500), opts(&id)))
        .expect("up");
    drop(rt);
    assert_eq!(namespaces_of(&id).len(), 2);
    drop(lab);
    assert_gone(&id);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_up_rolls_back_everything() {
    setup();
    let id = unique("t-fail");
    let mut plan = line("fail", 4, 1500);
    // A gateway on no connected subnet: the kernel refuses it in the last phase, after every
    // namespace and link exists.
    let last = plan.nodes.len() - 1;
    plan.nodes[last].routes.push(RoutePlan {
        dst: "198.18.200.0/24".parse().expect("net"),
        via: Some(Ipv4Addr::new(198, 18, 99, 1)),
        dev: None,
    });
    let err = Lab::up(plan, opts(&id)).await.expect_err("up must fail");
    let text = err.to_string();
    match &err {
        LabError::Kernel { lab, node, cause } => {
            assert_eq!(lab, &id);
            assert_eq!(node.as_deref(), Some("n3"));
            assert!(cause.errno.is_some(), "{text}");
            assert!(
                text.contains("RTM_NEWROUTE") && text.contains("198.18.99.1"),
                "{text}"
            );
        }
        other => panic!("unexpected error {other}"),
    }
    assert_gone(&id);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_plans_and_ids_are_refused_before_anything_is_made() {
    setup();
    let id = unique("t-bad");
    let mut dup = star("dup", 2, 1500);
    dup.nodes[2].name = "h1".into();
    let err = Lab::up(dup, opts(&id)).await.expect_err("duplicate node");
    assert!(matches!(err, LabError::Plan { .. }), "{err}");
    assert!(err.to_string().contains("h1 appears twice"), "{err}");

    let mut outside = star("outside", 1, 1500);
    outside.nodes[1].interfaces[0].addrs = vec!["10.0.0.1/24".parse().expect("net")];
    let err = Lab::up(outside, opts(&id))
        .await
        .expect_err("address outside the range");
    assert!(err.to_string().contains("outside 198.18.0.0/15"), "{err}");
    assert_gone(&id);

    for bad in ["", "UPPER", "-lead", "much-too-long-for-an-id", "a_b"] {
        let err = Lab::up(star("x", 1, 1500), opts(bad))
            .await
            .expect_err("bad id");
        assert!(matches!(err, LabError::InvalidId { .. }), "{bad}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_id_in_use_is_refused_and_left_intact() {
    setup();
    let id = unique("t-twice");
    let lab = Lab::up(star("twice", 1, 1500), opts(&id))
        .await
        .expect("up");
    let err = Lab::up(star("twice", 1, 1500), opts(&id))
        .await
        .expect_err("second up");
    assert!(matches!(err, LabError::IdInUse { .. }), "{err}");
    assert_eq!(
        namespaces_of(&id).len(),
        2,
        "the first lab must be untouched"
    );
    lab.down().await.expect("down");
    assert_gone(&id);
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_returns_the_exit_code_and_runs_in_the_node() {
    setup();
    let id = unique("t-exec");
    let lab = Lab::up(star("exec", 1, 1500), opts(&id)).await.expect("up");
    assert_eq!(
        lab::exec(Some(&id), "h1", &["sh", "-c", "exit 7"]).expect("exec"),
        7
    );
    assert_eq!(lab::exec(Some(&id), "h1", &["true"]).expect("exec"), 0);
    // Inside the node there is eth0 with the host's address; the root namespace has none.
    let h1 = lab.node("h1").expect("h1");
    let out = h1
        .command("cat")
        .arg("/proc/net/fib_trie")
        .output()
        .expect("cat");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&star_addr(1).to_string()));
    let status = h1.exec(&["sh", "-c", "exit 3"]).expect("exec");
    assert_eq!(status.code(), Some(3));
    let err = lab::exec(Some(&id), "nope", &["true"]).expect_err("unknown node");
    assert!(matches!(err, LabError::NoSuchNode { .. }), "{err}");
    let err = lab::exec(Some("t-no-such-lab"), "h1", &["true"]).expect_err("unknown lab");
    assert!(matches!(err, LabError::NoSuchLab { .. }), "{err}");
    lab.down().await.expect("down");
    assert_gone(&id);
}

#[tokio::test(flavor = "multi_thread")]
async fn spawned_processes_are_recorded_and_killed_by_down() {
    setup();
    let id = unique("t-spawn");
    let lab = Lab::up(star("spawn", 1, 1500), opts(&id))
        .await
        .expect("up");
    let mut child = lab
        .node("h1")
        .expect("h1")
        .spawn(&["sleep", "1000"])
        .expect("spawn");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_file(&id)).expect("state")).expect("json");
    let pids = state["pids"].as_array().expect("pids");
    assert!(pids.iter().any(|p| p["pid"] == child.id()), "{state}");
    lab::down(&id).expect("down by id");
    let status = child.wait().expect("wait");
    assert!(status.code().is_none(), "killed by a signal: {status:?}");
    assert_gone(&id);
    drop(lab); // Already down: dropping must not fail or touch anything.
}

/// The victim of `sigkill_during_up_then_clean_sweeps_it`: brings a lab up and blocks in the
/// middle of it until killed. Not a test on its own.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "victim process of sigkill_during_up_then_clean_sweeps_it, started by it"]
async fn victim_blocks_in_the_middle_of_up() {
    let id = std::env::var("NETSIM_TEST_VICTIM_ID").expect("run only by the sigkill test");
    let marker = std::env::var("NETSIM_TEST_VICTIM_MARKER").expect("marker path");
    let progress = std::sync::Arc::new(move |p: lab::Progress| {
        if p.phase == lab::UpPhase::Links && p.done == 3 {
            let _ = std::fs::write(&marker, b"mid-up");
            std::thread::sleep(Duration::from_secs(120));
        }
    });
    let opts = UpOptions {
        name: Some(id),
        progress: Some(progress),
        ..Default::default()
    };
    let _lab = Lab::up(star("victim", 8, 1500), opts).await;
    panic!("the victim should have been killed");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_up_then_clean_sweeps_it() {
    setup();
    // No other test sweeps while the victim's remains are being examined.
    let _sweeping = CLEAN_LOCK.lock().await;
    let survivor_id = unique("t-live");
    let survivor = Lab::up(star("live", 1, 1500), opts(&survivor_id))
        .await
        .expect("up");
    let victim_id = unique("t-victim");
    let marker = PathBuf::from(RUN_DIR).join(format!("{victim_id}.marker"));
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "victim_blocks_in_the_middle_of_up",
            "--ignored",
            "--nocapture",
        ])
        .env(lab::state::RUN_DIR_ENV, RUN_DIR)
        .env("NETSIM_TEST_VICTIM_ID", &victim_id)
        .env("NETSIM_TEST_VICTIM_MARKER", &marker)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn victim");
    let mut waited = 0;
    while !marker.exists() {
        assert!(waited < 600, "the victim never reached the middle of up");
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("the victim exited early: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let _ = std::fs::remove_file(&marker);

    // Half a lab is left: its state says creating, its owner is dead.
    assert_eq!(namespaces_of(&victim_id).len(), 9);
    let info = lab::list()
        .expect("list")
        .into_iter()
        .find(|l| l.id == victim_id)
        .expect("victim listed");
    assert_eq!(info.phase, Phase::Creating);
    assert!(!info.owner_alive);

    let report = lab::clean().expect("clean");
    assert!(report.labs.contains(&victim_id), "{report:?}");
    assert!(!report.labs.contains(&survivor_id), "{report:?}");
    assert_gone(&victim_id);
    assert_eq!(
        namespaces_of(&survivor_id).len(),
        2,
        "clean must spare live labs"
    );
    assert!(state_file(&survivor_id).exists());

    // Idempotent: a second sweep finds nothing of these labs.
    let again = lab::clean().expect("clean again");
    assert!(!again.labs.contains(&victim_id) && !again.labs.contains(&survivor_id));
    survivor.down().await.expect("down");
    assert_gone(&survivor_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn persisted_labs_survive_clean_until_down() {
    setup();
    let id = unique("t-keep");
    let lab = Lab::up(star("keep", 1, 1500), opts(&id)).await.expect("up");
    let info = lab.persist().expect("persist");
    assert!(info.persist);
    assert_eq!(info.owner_pid, None);
    let report = clean_serialised().await;
    assert!(!report.labs.contains(&id), "{report:?}");
    assert_eq!(namespaces_of(&id).len(), 2);
    lab::down(&id).expect("down");
    assert_gone(&id);
    let err = lab::down(&id).expect_err("already down");
    assert!(matches!(err, LabError::NoSuchLab { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_root_namespace_never_sees_a_lab_link() {
    setup();
    let rt = tokio::runtime::Handle::current();
    let root = Netlink::open_here("root", &rt).expect("root netlink");
    let before: Vec<String> = root
        .links()
        .await
        .expect("links")
        .into_iter()
        .map(|l| l.name)
        .collect();
    let id = unique("t-root");
    let lab = Lab::up(line("root", 4, 1500), opts(&id)).await.expect("up");
    let during = root.links().await.expect("links");
    assert!(during
        .iter()
        .all(|l| l.alias.as_deref().is_none_or(|a| !a.starts_with("netsim:"))));
    let during: Vec<String> = during.into_iter().map(|l| l.name).collect();
    assert_eq!(before, during);
    lab.down().await.expect("down");
    assert_gone(&id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_namespace_is_reported_and_not_touched() {
    setup();
    let id = unique("t-stale");
    let stale = format!("netsim-{id}-h1");
    netns::create(&stale).expect("stale namespace");
    let err = Lab::up(star("stale", 2, 1500), opts(&id))
        .await
        .expect_err("name taken");
    let text = err.to_string();
    assert!(
        text.contains("File exists") && text.contains("netsim clean"),
        "{text}"
    );
    // Rolled back: only the namespace that was there before remains.
    assert_eq!(namespaces_of(&id), vec![stale.clone()]);
    assert!(!state_file(&id).exists());
    // clean reports it as unknown and leaves it alone.
    let report = clean_serialised().await;
    assert!(report.unknown.contains(&stale), "{report:?}");
    assert!(netns::exists(&stale));
    netns::delete(&stale).expect("delete");
    assert_gone(&id);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_far_ends_of_a_big_star_reach_each_other() {
    setup();
    let id = unique("t-star50");
    let lab = Lab::up(star("star50", 50, 1500), opts(&id))
        .await
        .expect("up");
    let (h1, h50) = (lab.node("h1").expect("h1"), lab.node("h50").expect("h50"));
    assert!(udp_reach(&h1, &h50, star_addr(50)).await);
    lab.down().await.expect("down");
    assert_gone(&id);
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_up_halfway_rolls_back() {
    setup();
    let id = unique("t-cancel");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = std::sync::Mutex::new(Some(tx));
    let progress = std::sync::Arc::new(move |p: lab::Progress| {
        if p.phase == lab::UpPhase::Links && p.done >= 1 {
            if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
                let _ = tx.send(());
            }
        }
    });
    let opts = UpOptions {
        name: Some(id.clone()),
        progress: Some(progress),
        ..Default::default()
    };
    let up = Lab::up(star("cancel", 30, 1500), opts);
    tokio::select! {
        biased;
        _ = rx => {}
        res = up => panic!("up finished before it could be cancelled: {:?}", res.map(|l| l.id().to_string())),
    }
    assert_gone(&id);
}

#[tokio::test]
async fn a_current_thread_runtime_is_enough() {
    setup();
    let id = unique("t-curthr");
    let lab = Lab::up(line("curthr", 3, 1500), opts(&id))
        .await
        .expect("up");
    let (n0, n2) = (lab.node("n0").expect("n0"), lab.node("n2").expect("n2"));
    assert!(udp_reach(&n0, &n2, line_node_addr(2)).await);
    lab.down().await.expect("down");
    assert_gone(&id);
}
