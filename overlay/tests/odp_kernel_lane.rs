//! The ODP client against a real kernel datapath, inside a scratch namespace. Needs the
//! openvswitch module: skipped where it is missing, run by the kernel lane.

use std::net::Ipv4Addr;
use std::process::Command;

use netsim::caps::{self, Feature};
use netsim::testing::{self, ScratchNs};
use overlay::odp::{OdpClient, OdpError, VportType, OVS_VXLAN_PORT};

#[test]
fn datapath_and_vports_round_trip_through_the_kernel() {
    netsim::require_features!(Feature::Netns, Feature::Veth, Feature::Openvswitch);
    let a = ScratchNs::new().expect("namespace A");
    let b = ScratchNs::new().expect("namespace B");
    let (end_a, _end_b) = testing::veth_between(
        &a,
        &b,
        "odv",
        Ipv4Addr::new(198, 18, 78, 1),
        Ipv4Addr::new(198, 18, 78, 2),
    )
    .expect("veth between A and B");

    a.run(|| {
        let mut odp = OdpClient::connect().expect("connect to the ovs families");
        let dp = odp.create_datapath("ovl-test0").expect("create datapath");
        assert_eq!(dp.name, "ovl-test0");
        assert!(dp.ifindex > 0, "datapath ifindex {}", dp.ifindex);

        let read = odp
            .get_datapath("ovl-test0")
            .expect("read the datapath back");
        assert_eq!(read.name, dp.name);
        assert_eq!(read.ifindex, dp.ifindex);

        let vx = odp
            .add_vport_vxlan(&dp, "ovl-vx0", OVS_VXLAN_PORT)
            .expect("add a vxlan vport");
        assert_eq!(vx.kind, VportType::Vxlan);
        assert_eq!(vx.name, "ovl-vx0");
        assert_eq!(vx.dst_port, Some(OVS_VXLAN_PORT));
        assert_eq!(vx.dp_ifindex, dp.ifindex);

        // Independent of our parser: the kernel's own socket table shows the vport listening.
        let udp = std::fs::read_to_string("/proc/thread-self/net/udp").expect("read udp table");
        let port_hex = format!(":{OVS_VXLAN_PORT:04X} ");
        assert!(
            udp.lines().skip(1).any(|l| l
                .split_whitespace()
                .nth(1)
                .is_some_and(|local| format!("{local} ").contains(&port_hex))),
            "no UDP socket on port {OVS_VXLAN_PORT} in /proc/net/udp:\n{udp}"
        );

        let nd = odp
            .add_vport_netdev(&dp, &end_a.name)
            .expect("attach the veth as a netdev vport");
        assert_eq!(nd.kind, VportType::Netdev);

        let read_vx = odp
            .get_vport(&dp, "ovl-vx0")
            .expect("read the vxlan vport back");
        assert_eq!(read_vx, vx);

        // Port 0 is the datapath's internal port, named after it.
        let listed: Vec<(u32, VportType, String, Option<u16>)> = odp
            .list_vports(&dp)
            .expect("list vports")
            .into_iter()
            .map(|v| (v.port_no, v.kind, v.name, v.dst_port))
            .collect();
        assert_eq!(
            listed,
            vec![
                (0, VportType::Internal, "ovl-test0".to_string(), None),
                (
                    vx.port_no,
                    VportType::Vxlan,
                    "ovl-vx0".to_string(),
                    Some(OVS_VXLAN_PORT)
                ),
                (nd.port_no, VportType::Netdev, end_a.name.clone(), None),
            ]
        );

        cross_check_with_ovs_dpctl(&["ovl-test0", "ovl-vx0", &end_a.name]);

        odp.delete_vport(&dp, vx.port_no)
            .expect("delete the vxlan vport");
        let after: Vec<u32> = odp
            .list_vports(&dp)
            .expect("list vports")
            .iter()
            .map(|v| v.port_no)
            .collect();
        assert_eq!(after, vec![0, nd.port_no]);

        odp.delete_datapath("ovl-test0").expect("delete datapath");
        let gone = odp
            .get_datapath("ovl-test0")
            .expect_err("datapath still there");
        assert_eq!(gone.errno(), Some(libc::ENODEV), "{gone}");
    })
    .expect("run in namespace A");
}

#[test]
fn a_second_datapath_of_the_same_name_is_refused() {
    netsim::require_features!(Feature::Netns, Feature::Openvswitch);
    let ns = ScratchNs::new().expect("namespace");
    ns.run(|| {
        let mut odp = OdpClient::connect().expect("connect");
        odp.create_datapath("ovl-dup0").expect("first datapath");
        let err = odp
            .create_datapath("ovl-dup0")
            .expect_err("duplicate accepted");
        assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
        odp.delete_datapath("ovl-dup0").expect("delete");
    })
    .expect("run in namespace");
}

#[test]
fn connecting_reflects_what_the_probe_found() {
    netsim::require_features!(Feature::Netns);
    let ns = ScratchNs::new().expect("namespace");
    let connected = ns.run(OdpClient::connect).expect("run in namespace");
    if caps::probe().has(Feature::Openvswitch) {
        assert!(connected.is_ok(), "{:?}", connected.err());
    } else {
        match connected {
            Err(err @ OdpError::FamilyMissing { .. }) => {
                let text = err.to_string();
                assert!(text.contains("ovs_datapath"), "{text}");
                assert!(text.contains("kernel vxlan tier"), "{text}");
            }
            other => panic!("expected FamilyMissing, got {other:?}"),
        }
    }
}

/// Debian's ovs-dpctl, where installed, reads the datapath independently of our code.
fn cross_check_with_ovs_dpctl(names: &[&str]) {
    let Ok(out) = Command::new("ovs-dpctl").arg("show").output() else {
        eprintln!("ovs-dpctl not installed: no independent cross-check");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ovs-dpctl show failed: {text}");
    eprintln!("ovs-dpctl show:\n{text}");
    for name in names {
        assert!(text.contains(name), "ovs-dpctl show lacks {name}:\n{text}");
    }
}
