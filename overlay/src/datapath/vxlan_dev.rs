//! Kernel adapter of the vxlan datapath: the vxlan device on the overlay bridge, its forwarding
//! database (where frames for a MAC, and broadcasts, are sent) and the bridge's static entries
//! that steer a remote MAC to the vxlan port or to sleeve's TAP. Plain rtnetlink requests; no
//! decisions (those are in [`super::vxlan`] and [`super::select`]).
//!
//! FDB *append* (several all-zero entries, one per peer) has no builder in the rtnetlink crate:
//! the entries are sent with [`super::steer::request`].

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::LinkVxlan;

use super::steer::{request, BridgeSteer};
use crate::netdev::Netdev;

/// Name of the vxlan device on the overlay bridge.
pub const DEVICE: &str = "ovlvx";
/// The VNI of the kernel vxlan tier. Short ids start at 1, so VNI 0 never names a pair of peers
/// in the Open vSwitch tier's `src | dst << 12` encoding.
pub const VNI: u32 = 0;
/// The all-zero MAC: the FDB entry for broadcast and unknown unicast.
pub const FLOOD: [u8; 6] = [0; 6];

/// Why the vxlan device could not be made, in words for status and the log.
pub fn unavailable_reason(port: u16, e: &rtnetlink::Error) -> String {
    let errno = match e {
        rtnetlink::Error::NetlinkError(m) => -m.raw_code(),
        _ => 0,
    };
    match errno {
        libc::EADDRINUSE => format!("UDP {port} is already in use by another socket on this host"),
        libc::EOPNOTSUPP | libc::ENODEV => {
            "the kernel has no vxlan support (module vxlan missing)".to_string()
        }
        libc::EPERM | libc::EACCES => {
            "no permission to create a vxlan device (CAP_NET_ADMIN needed)".to_string()
        }
        _ => format!("the kernel refused the vxlan device: {e}"),
    }
}

/// The vxlan device of one router.
#[derive(Clone)]
pub struct VxlanDevice {
    netdev: Netdev,
    /// Its interface index.
    pub index: u32,
    /// The bridge entries steering remote MACs to it or to sleeve's TAP.
    pub steer: BridgeSteer,
}

impl std::fmt::Debug for VxlanDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VxlanDevice")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl VxlanDevice {
    /// Creates the device (replacing one a killed router left), enslaves it to `bridge`, makes
    /// it and sleeve's TAP (`tap`) isolated ports that do not learn, and brings it up. On any
    /// failure nothing is left behind and the reason says what to do.
    pub async fn create(
        netdev: &Netdev,
        bridge: u32,
        tap: u32,
        port: u16,
        mtu: u32,
    ) -> Result<Self, String> {
        if let Ok(Some(old)) = netdev.link(DEVICE).await {
            tracing::info!("replacing the vxlan device {DEVICE} a previous run left");
            netdev
                .delete(old.index, DEVICE)
                .await
                .map_err(|e| e.to_string())?;
        }
        let msg = LinkVxlan::new(DEVICE, VNI)
            .port(port)
            .learning(false)
            .mtu(mtu)
            .build();
        netdev
            .handle()
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| unavailable_reason(port, &e))?;
        let index = match netdev.link(DEVICE).await {
            Ok(Some(l)) => l.index,
            _ => return Err(format!("the vxlan device {DEVICE} vanished after creation")),
        };
        let dev = VxlanDevice {
            netdev: netdev.clone(),
            index,
            steer: BridgeSteer::new(netdev, index, tap),
        };
        if let Err(e) = dev.finish(bridge, port, mtu).await {
            let _ = netdev.delete(index, DEVICE).await;
            return Err(e);
        }
        Ok(dev)
    }

    async fn finish(&self, bridge: u32, port: u16, mtu: u32) -> Result<(), String> {
        let h = self.netdev.handle();
        // Up last: that is when the kernel binds UDP `port`, and says if it is taken.
        h.link()
            .set(
                rtnetlink::LinkUnspec::new_with_index(self.index)
                    .controller(bridge)
                    .mtu(mtu)
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| format!("cannot put {DEVICE} on the overlay bridge: {e}"))?;
        self.steer.isolate(DEVICE).await?;
        h.link()
            .set(
                rtnetlink::LinkUnspec::new_with_index(self.index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| unavailable_reason(port, &e))
    }

    /// Removes the device (its FDB goes with it) and gives the TAP back its default flags.
    pub async fn remove(&self) {
        let _ = self.netdev.delete(self.index, DEVICE).await;
        self.steer.release_tap().await;
    }

    async fn send(&self, msg: RouteNetlinkMessage, flags: u16) -> Result<(), rtnetlink::Error> {
        request(&self.netdev, msg, flags).await
    }

    fn vxlan_entry(&self, mac: [u8; 6], dst: IpAddr) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = self.index;
        m.header.state = NeighbourState::Permanent;
        m.header.flags = NeighbourFlags::Own;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        m.attributes
            .push(NeighbourAttribute::Destination(match dst {
                IpAddr::V4(a) => NeighbourAddress::Inet(a),
                IpAddr::V6(a) => NeighbourAddress::Inet6(a),
            }));
        m
    }

    /// Sends frames for `mac` (or, for [`FLOOD`], one copy of every broadcast and unknown
    /// unicast) to the peer at `dst`. Flood entries are appended: one per peer.
    pub async fn add_remote(&self, mac: [u8; 6], dst: IpAddr) -> Result<(), rtnetlink::Error> {
        let flags = if mac == FLOOD {
            NLM_F_CREATE | NLM_F_APPEND
        } else {
            NLM_F_CREATE | NLM_F_REPLACE
        };
        match self
            .send(
                RouteNetlinkMessage::NewNeighbour(self.vxlan_entry(mac, dst)),
                flags,
            )
            .await
        {
            // Appending an entry that is there already: nothing to do.
            Err(rtnetlink::Error::NetlinkError(m)) if -m.raw_code() == libc::EEXIST => Ok(()),
            other => other,
        }
    }

    /// Stops sending frames for `mac` (or the floods) to `dst`.
    pub async fn remove_remote(&self, mac: [u8; 6], dst: IpAddr) -> Result<(), rtnetlink::Error> {
        match self
            .send(
                RouteNetlinkMessage::DelNeighbour(self.vxlan_entry(mac, dst)),
                0,
            )
            .await
        {
            Err(rtnetlink::Error::NetlinkError(m)) if -m.raw_code() == libc::ENOENT => Ok(()),
            other => other,
        }
    }
}
