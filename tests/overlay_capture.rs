//! Capturing overlay traffic with netsim: container pings between two hosts cross the underlay
//! as vxlan on the fast path's UDP 6784, seen from inside a host's namespace and read back by
//! Debian's tshark.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use netsim::capture::{self, Capture, CaptureOptions};
use netsim::measure::icmp::PingOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_pings_cross_the_underlay_as_vxlan_on_6784() {
    let id = unique("ovl-cap");
    let lab = up("topologies/two-host.toml", &id).await;
    let o = overlay(&lab, vxlan_tier()).await;
    for (h, peer) in [("h1", "h2"), ("h2", "h1")] {
        wait_datapath(&o, h, peer, "vxlan", Duration::from_secs(20))
            .await
            .unwrap();
    }
    let c2 = o.address_of("c2").expect("c2 attached");

    let h1 = node(&lab, "h1");
    let opts = CaptureOptions {
        ifaces: vec!["eth0".into()],
        filter: Some("udp port 6784".into()),
        ..CaptureOptions::default()
    };
    let cap = Capture::start(&h1, &opts).await.expect("capture starts");
    let pings = PingOptions {
        count: 3,
        interval: Duration::from_millis(20),
        ..PingOptions::default()
    };
    let result = ping(&lab, "c1", c2, pings).await;
    assert_eq!(result.received, 3, "{result:?}");
    let frames = cap.stop().expect("capture stops");

    // The pings, each inside vxlan (heartbeats share the port and are left aside).
    let lines: Vec<String> = frames.iter().map(|f| f.summary()).collect();
    let echo: Vec<&String> = lines.iter().filter(|l| l.contains("ICMP echo")).collect();
    assert_eq!(echo.len(), 6, "{lines:#?}");
    assert!(
        echo.iter()
            .all(|l| l.contains(".6784: VXLAN vni ") && l.contains("198.19.")),
        "{lines:#?}"
    );

    // tshark decodes the same frames as vxlan carrying ICMP (told that 6784 is vxlan: its
    // default is IANA's 4789).
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("vxlan.pcap");
    capture::file::write_file(&file, &["eth0".into()], &frames).expect("write pcap");
    if netsim::tools::find_program("tshark").is_none() {
        netsim::testing::skip_because(
            "tshark is not installed (Debian's tshark package; ci/setup installs it)",
            module_path!(),
        );
    } else {
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&file)
            .args([
                "-d",
                "udp.port==6784,vxlan",
                "-T",
                "fields",
                "-e",
                "frame.protocols",
            ])
            .output()
            .expect("tshark runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let protocols = String::from_utf8_lossy(&out.stdout);
        let icmp = protocols
            .lines()
            .filter(|p| *p == "eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:icmp:data")
            .count();
        assert_eq!(icmp, 6, "{protocols}");
    }
    drop(o);
    lab.down().await.expect("down");
}
