//! Flows, misses and executed packets through a real kernel datapath, with vxlan on the way
//! out and in. Needs the openvswitch module: skipped where it is missing, run by the kernel
//! lane.
//!
//! Namespace A holds the datapath: a "container" veth to C as a netdev vport, and a vxlan
//! vport on UDP 6784 whose packets cross A's own underlay veth to B (not in the datapath, so
//! A's stack resolves B and sends). What B and C receive is read with packet sockets there:
//! an independent reader of what the datapath did.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use netsim::caps::Feature;
use netsim::kernel::packet::{PacketSocket, VNET_HDR_LEN};
use netsim::testing::{self, ScratchNs};
use overlay::odp::flow::{Action, KeyAttr, KeyExt, PacketCmd, PacketMessage, TunnelKeyAttr};
use overlay::odp::{OdpClient, UpcallSocket, OVS_VXLAN_PORT};

const A_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 74, 1);
const B_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 74, 2);
/// The container on C's side of the datapath.
const MAC_C: [u8; 6] = [0x02, 0, 0, 0, 0x74, 0x0c];
/// A container behind B, reached through the tunnel.
const MAC_REMOTE: [u8; 6] = [0x02, 0, 0, 0, 0x74, 0x0b];
/// A local experimental EtherType: no stack answers it, so only our frames carry it.
const ETHERTYPE: u16 = 0x88b5;
/// Source short id 1, destination short id 2 (`src | dst << 12`, as the overlay names pairs).
const VNI: u32 = 0x2001;

fn frame(dst: [u8; 6], src: [u8; 6], tag: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(dst);
    f.extend(src);
    f.extend(ETHERTYPE.to_be_bytes());
    f.extend(tag);
    f.resize(60, 0);
    f
}

/// Waits up to 5 s for a frame on `sock` that `want` accepts; returns it (vnet header off).
fn frame_within(sock: &PacketSocket, want: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 70_000];
    while Instant::now() < deadline {
        let mut fds = [libc::pollfd {
            fd: sock.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) };
        while let Ok(Some(n)) = sock.recv(&mut buf) {
            let f = &buf[VNET_HDR_LEN..n];
            if want(f) {
                return Some(f.to_vec());
            }
        }
    }
    None
}

/// Waits up to 5 s for a miss whose frame `want` accepts (the namespaces' own IPv6 chatter
/// misses too).
fn miss_within(up: &mut UpcallSocket, want: impl Fn(&[u8]) -> bool) -> Option<PacketMessage> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(m) = up
            .recv(Duration::from_millis(200))
            .expect("receive upcalls")
        {
            if m.cmd == PacketCmd::Miss && m.packet().is_some_and(&want) {
                return Some(m);
            }
        }
    }
    None
}

fn ours(tag: &'static [u8]) -> impl Fn(&[u8]) -> bool {
    move |f: &[u8]| {
        f.len() >= 14 + tag.len()
            && f[12..14] == ETHERTYPE.to_be_bytes()
            && f[14..14 + tag.len()] == *tag
    }
}

/// The inner frame of a vxlan packet to UDP 6784 with `vni`, in an Ethernet frame.
fn vxlan_inner(f: &[u8], vni: u32) -> Option<&[u8]> {
    if f.len() < 14 + 20 + 8 + 8 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let udp = &f[14 + ihl..];
    let vx = &udp[8..];
    let port = u16::from_be_bytes([udp[2], udp[3]]);
    let got = u32::from_be_bytes([0, vx[4], vx[5], vx[6]]);
    (port == OVS_VXLAN_PORT && vx[0] & 0x08 != 0 && got == vni).then_some(&vx[8..])
}

#[test]
fn misses_come_up_flows_carry_the_rest_through_vxlan_both_ways() {
    netsim::require_features!(Feature::Netns, Feature::Veth, Feature::Openvswitch);
    let a = ScratchNs::new().expect("namespace A");
    let b = ScratchNs::new().expect("namespace B");
    let c = ScratchNs::new().expect("namespace C");
    let (_u_a, u_b) =
        testing::veth_between(&a, &b, "odu", A_UNDERLAY, B_UNDERLAY).expect("underlay A-B");
    let (c_a, c_c) = testing::veth_between(
        &a,
        &c,
        "odc",
        Ipv4Addr::new(198, 18, 73, 1),
        Ipv4Addr::new(198, 18, 73, 2),
    )
    .expect("container side A-C");

    // Sockets keep the namespace they were opened in: open them there, use them here.
    let mut odp = a
        .run(OdpClient::connect)
        .expect("run in A")
        .expect("connect");
    let mut up = a
        .run(UpcallSocket::open)
        .expect("run in A")
        .expect("upcall socket");
    let (bi, ci) = (u_b.ifindex, c_c.ifindex);
    let on_b = b
        .run(move || PacketSocket::open(bi))
        .expect("run in B")
        .expect("B socket");
    let on_c = c
        .run(move || PacketSocket::open(ci))
        .expect("run in C")
        .expect("C socket");
    let b_udp = b
        .run(|| UdpSocket::bind((B_UNDERLAY, 0)))
        .expect("run in B")
        .expect("B's UDP socket");

    let dp = odp.create_datapath("ovl-flow0").expect("create datapath");
    let local = odp
        .add_vport_netdev(&dp, &c_a.name)
        .expect("container vport");
    let vx = odp
        .add_vport_vxlan(&dp, "ovl-fvx0", OVS_VXLAN_PORT)
        .expect("vxlan vport");
    for port in [local.port_no, vx.port_no] {
        odp.set_vport_upcall_pid(&dp, port, up.portid())
            .expect("send misses to the upcall socket");
    }
    let send_from_c = |tag: &[u8]| {
        let mut f = vec![0u8; VNET_HDR_LEN];
        f.extend(frame(MAC_REMOTE, MAC_C, tag));
        on_c.send(&f).expect("send from C");
    };
    let tunnel_out = vec![
        TunnelKeyAttr::Id(u64::from(VNI)),
        TunnelKeyAttr::Ipv4Dst(B_UNDERLAY),
        TunnelKeyAttr::Ttl(64),
    ];
    let egress = vec![Action::SetTunnel(tunnel_out), Action::Output(vx.port_no)];

    // 1. The first frame misses: it comes up with the port it arrived on and its addresses.
    send_from_c(b"first");
    let miss = miss_within(&mut up, ours(b"first")).expect("a miss for the first frame");
    assert_eq!(miss.key().in_port(), Some(local.port_no));
    assert_eq!(miss.key().ethernet(), Some((MAC_C, MAC_REMOTE)));

    // 2. Executed with the egress actions, it leaves A as vxlan to B with the VNI.
    let packet = miss.packet().expect("the frame").to_vec();
    odp.execute(&dp, &packet, miss.key().to_vec(), egress.clone())
        .expect("execute the missed frame");
    let seen = frame_within(&on_b, |f| vxlan_inner(f, VNI).is_some_and(ours(b"first")))
        .expect("B sees the executed frame in vxlan");
    assert_eq!(
        &vxlan_inner(&seen, VNI).expect("vxlan")[..12],
        &frame(MAC_REMOTE, MAC_C, b"")[..12]
    );

    // 3. With a flow installed, the next frame goes the same way without coming up.
    let key = vec![
        KeyAttr::InPort(local.port_no),
        KeyAttr::Ethernet {
            src: MAC_C,
            dst: MAC_REMOTE,
        },
    ];
    let mask = vec![
        KeyAttr::InPort(u32::MAX),
        KeyAttr::Ethernet {
            src: [0; 6],
            dst: [0xff; 6],
        },
    ];
    odp.new_flow(&dp, key.clone(), mask.clone(), egress.clone())
        .expect("install the egress flow");
    send_from_c(b"second");
    frame_within(&on_b, |f| vxlan_inner(f, VNI).is_some_and(ours(b"second")))
        .expect("B sees the second frame through the flow");
    assert!(
        miss_within(&mut up, ours(b"second")).is_none(),
        "the second frame came up although a flow matches it"
    );
    let flow = odp.get_flow(&dp, key.clone()).expect("read the flow back");
    assert_eq!(flow.stats.packets, 1, "{flow:?}");
    assert_eq!(flow.actions, egress);
    assert_eq!(flow.key.in_port(), Some(local.port_no));
    assert_eq!(flow.mask.ethernet(), Some(([0; 6], [0xff; 6])));

    // 4. A vxlan packet from B misses on the vxlan vport with its tunnel in the key.
    let vxlan_from_b = |tag: &[u8]| {
        // Flags (I: the VNI is valid), reserved, the 24-bit VNI, reserved.
        let v = VNI.to_be_bytes();
        let mut d = vec![0x08, 0, 0, 0, v[1], v[2], v[3], 0];
        d.extend(frame(MAC_C, MAC_REMOTE, tag));
        b_udp
            .send_to(&d, (A_UNDERLAY, OVS_VXLAN_PORT))
            .expect("send vxlan from B");
    };
    vxlan_from_b(b"inbound");
    let miss = miss_within(&mut up, ours(b"inbound")).expect("a miss for the vxlan packet");
    assert_eq!(miss.key().in_port(), Some(vx.port_no));
    let tunnel = miss.key().tunnel().expect("a tunnel key").to_vec();
    assert!(
        tunnel.contains(&TunnelKeyAttr::Id(u64::from(VNI))),
        "{tunnel:?}"
    );
    assert!(
        tunnel.contains(&TunnelKeyAttr::Ipv4Src(B_UNDERLAY)),
        "{tunnel:?}"
    );
    assert!(
        tunnel.contains(&TunnelKeyAttr::Ipv4Dst(A_UNDERLAY)),
        "{tunnel:?}"
    );

    // 5. An ingress flow (tunnel id and sender, destination MAC) delivers the next ones to C.
    let in_key = vec![
        KeyAttr::InPort(vx.port_no),
        KeyAttr::Tunnel(vec![
            TunnelKeyAttr::Id(u64::from(VNI)),
            TunnelKeyAttr::Ipv4Src(B_UNDERLAY),
            TunnelKeyAttr::Ipv4Dst(A_UNDERLAY),
            TunnelKeyAttr::Ttl(64),
        ]),
        KeyAttr::Ethernet {
            src: MAC_REMOTE,
            dst: MAC_C,
        },
    ];
    let in_mask = vec![
        KeyAttr::InPort(u32::MAX),
        KeyAttr::Tunnel(vec![
            TunnelKeyAttr::Id(u64::MAX),
            TunnelKeyAttr::Ipv4Src(Ipv4Addr::BROADCAST),
        ]),
        KeyAttr::Ethernet {
            src: [0; 6],
            dst: [0xff; 6],
        },
    ];
    odp.new_flow(&dp, in_key, in_mask, vec![Action::Output(local.port_no)])
        .expect("install the ingress flow");
    vxlan_from_b(b"delivered");
    frame_within(&on_c, ours(b"delivered")).expect("C gets the decapsulated frame");
    assert!(
        miss_within(&mut up, ours(b"delivered")).is_none(),
        "the delivered frame came up although a flow matches it"
    );

    // 6. Both flows list; flushing leaves none; the datapath goes with its vports.
    assert_eq!(odp.dump_flows(&dp).expect("dump").len(), 2);
    odp.delete_flow(&dp, key).expect("delete the egress flow");
    assert_eq!(odp.dump_flows(&dp).expect("dump").len(), 1);
    odp.flush_flows(&dp).expect("flush");
    assert!(odp.dump_flows(&dp).expect("dump").is_empty());
    odp.delete_datapath("ovl-flow0").expect("delete datapath");
}
