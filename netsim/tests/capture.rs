//! Packet capture inside nodes of a real lab (run as root): frames captured during a step,
//! asserted on in Rust, and written to pcap and pcapng files that Debian's tshark reads back.

use std::path::{Path, PathBuf};
use std::process::Command;

use netsim::capture::{self, Capture, CaptureOptions};
use netsim::measure::icmp::{self, PingOptions};
use netsim::{Lab, UpOptions};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

async fn routed_line(prefix: &str) -> Lab {
    let plan = netsim::model::load_plan(&root().join("topologies/routed-line.toml"))
        .unwrap_or_else(|d| panic!("{d}"));
    let opts = UpOptions {
        name: Some(netsim::lab::default_id(prefix)),
        ..UpOptions::default()
    };
    Lab::up(plan, opts).await.expect("lab comes up")
}

/// `count` pings from `from` to `to`'s first address; all answered.
async fn ping(lab: &Lab, from: &str, to: &str, count: u16) {
    let dst = lab.address_of(to).await.expect("address");
    let opts = PingOptions {
        count,
        interval: std::time::Duration::from_millis(20),
        ..PingOptions::default()
    };
    let result = lab
        .node(from)
        .expect("node")
        .run(move || async move { icmp::ping(dst, &opts) })
        .await
        .expect("run")
        .expect("ping");
    assert_eq!(result.received, count, "{result:?}");
}

/// tshark's fields of every frame of `file`, one line each (`None` when tshark is missing:
/// the caller skips the read-back and says so).
fn tshark(file: &Path, extra: &[&str], fields: &[&str]) -> Option<Vec<String>> {
    if netsim::tools::find_program("tshark").is_none() {
        netsim::testing::skip_because(
            "tshark is not installed (Debian's tshark package; ci/setup installs it)",
            module_path!(),
        );
        return None;
    }
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file).args(extra).args(["-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark runs");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ping_captured_during_a_step_reads_back_as_icmp() {
    let lab = routed_line("cap-ping").await;
    let h1 = lab.node("h1").expect("h1");
    let opts = CaptureOptions {
        filter: Some("icmp".into()),
        ..CaptureOptions::default()
    };
    let cap = Capture::start(&h1, &opts).await.expect("capture starts");
    assert_eq!(cap.interfaces(), ["eth0"]);
    ping(&lab, "h1", "h2", 3).await;
    let frames = cap.stop().expect("capture stops");

    // Every frame of the step, and only what the filter lets through.
    let lines: Vec<String> = frames.iter().map(|f| f.summary()).collect();
    assert_eq!(frames.len(), 6, "{lines:#?}");
    let requests = lines.iter().filter(|l| l.contains("ICMP echo request"));
    let replies = lines.iter().filter(|l| l.contains("ICMP echo reply"));
    assert_eq!((requests.count(), replies.count()), (3, 3), "{lines:#?}");
    assert!(
        lines.iter().all(|l| l.starts_with("eth0 198.18.1.")),
        "{lines:#?}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("ping.pcap");
    capture::file::write_file(&file, &["eth0".into()], &frames).expect("write pcap");
    if let Some(protocols) = tshark(&file, &[], &["frame.protocols"]) {
        assert_eq!(protocols.len(), 6, "{protocols:?}");
        assert!(
            protocols.iter().all(|p| p == "eth:ethertype:ip:icmp:data"),
            "{protocols:?}"
        );
    }
    lab.down().await.expect("down");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_router_captured_on_both_interfaces_into_one_pcapng() {
    let lab = routed_line("cap-r1").await;
    let r1 = lab.node("r1").expect("r1");
    let opts = CaptureOptions {
        ifaces: vec!["eth0".into(), "eth1".into()],
        filter: Some("icmp".into()),
        ..CaptureOptions::default()
    };
    let cap = Capture::start(&r1, &opts).await.expect("capture starts");
    ping(&lab, "h1", "h3", 2).await;
    let ifaces = cap.interfaces().to_vec();
    let frames = cap.stop().expect("capture stops");
    // Each request and reply crosses both of r1's interfaces.
    assert_eq!(frames.len(), 8, "{frames:#?}");
    for iface in ["eth0", "eth1"] {
        assert_eq!(frames.iter().filter(|f| f.iface == iface).count(), 4);
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("r1.pcapng");
    capture::file::write_file(&file, &ifaces, &frames).expect("write pcapng");
    if let Some(rows) = tshark(&file, &[], &["frame.interface_name", "icmp.type"]) {
        let mut rows = rows;
        rows.sort();
        let want = ["eth0\t0", "eth0\t0", "eth0\t8", "eth0\t8"]
            .iter()
            .chain(["eth1\t0", "eth1\t0", "eth1\t8", "eth1\t8"].iter())
            .map(|s| s.to_string())
            .collect::<Vec<_>>();
        assert_eq!(rows, want);
    }
    lab.down().await.expect("down");
}

#[tokio::test(flavor = "multi_thread")]
async fn count_ends_a_capture_and_a_missing_interface_is_named() {
    let lab = routed_line("cap-cnt").await;
    let h3 = lab.node("h3").expect("h3");
    let opts = CaptureOptions {
        filter: Some("icmp[icmptype] == icmp-echo".into()),
        count: Some(2),
        ..CaptureOptions::default()
    };
    let mut cap = Capture::start(&h3, &opts).await.expect("capture starts");
    ping(&lab, "h1", "h3", 3).await;
    let mut taken = Vec::new();
    loop {
        match cap
            .next(std::time::Duration::from_millis(100))
            .expect("next")
        {
            capture::Next::Frame(f) => taken.push(f.summary()),
            capture::Next::Idle => {}
            capture::Next::Done => break,
        }
    }
    assert_eq!(taken.len(), 2, "{taken:#?}");
    assert!(
        taken.iter().all(|l| l.contains("echo request")),
        "{taken:#?}"
    );

    let bad = CaptureOptions {
        ifaces: vec!["eth9".into()],
        ..CaptureOptions::default()
    };
    let err = Capture::start(&h3, &bad)
        .await
        .expect_err("no eth9")
        .to_string();
    assert!(
        err.contains("node h3 has no interface eth9 (its interfaces: lo, eth0)"),
        "{err}"
    );
    lab.down().await.expect("down");
}
