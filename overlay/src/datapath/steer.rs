//! The overlay bridge's side of a kernel fast path: the bridge port frames to the fast path
//! leave by (the vxlan device, or the veth into the Open vSwitch datapath) and sleeve's TAP,
//! both isolated and not learning, and the static entries that steer each remote MAC to one
//! of them. Plain rtnetlink requests; no decisions.
//!
//! The rtnetlink crate has no builder for bridge entries that are static rather than local
//! (nor for FDB *append*, which [`super::vxlan_dev`] needs), so [`request`] sends the crate's
//! own message types with the flags wanted.

use futures::StreamExt;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::neighbour::{
    NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::LinkBridgePort;

use crate::netdev::Netdev;

/// Sends one rtnetlink request with `flags` (besides REQUEST and ACK) and waits for its ack.
pub async fn request(
    netdev: &Netdev,
    msg: RouteNetlinkMessage,
    flags: u16,
) -> Result<(), rtnetlink::Error> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut handle = netdev.handle().clone();
    let mut response = handle.request(req)?;
    while let Some(message) = response.next().await {
        if let NetlinkPayload::Error(err) = message.payload {
            return Err(rtnetlink::Error::NetlinkError(err));
        }
    }
    Ok(())
}

/// The two bridge ports remote MACs are steered between.
#[derive(Clone)]
pub struct BridgeSteer {
    netdev: Netdev,
    /// The fast path's port (interface index).
    pub fast_port: u32,
    /// Sleeve's TAP (interface index).
    pub tap: u32,
}

impl BridgeSteer {
    /// Steering between `fast_port` and `tap`.
    pub fn new(netdev: &Netdev, fast_port: u32, tap: u32) -> Self {
        BridgeSteer {
            netdev: netdev.clone(),
            fast_port,
            tap,
        }
    }

    /// Makes both ports isolated and not learning. Isolated: a frame from one peer is never
    /// relayed to another (neither through the other datapath nor back). No learning: remote
    /// MACs are static entries the router points at the datapath of their peer's connection.
    /// `fast_name` names the fast port in errors.
    pub async fn isolate(&self, fast_name: &str) -> Result<(), String> {
        for (index, what) in [(self.fast_port, fast_name), (self.tap, crate::netdev::TAP)] {
            self.netdev
                .handle()
                .link()
                .set_port(
                    LinkBridgePort::new(index)
                        .isolated(true)
                        .learning(false)
                        .build(),
                )
                .execute()
                .await
                .map_err(|e| format!("cannot set bridge port flags of {what}: {e}"))?;
        }
        Ok(())
    }

    /// Gives the TAP back its default flags (the fast port is going away).
    pub async fn release_tap(&self) {
        let _ = self
            .netdev
            .handle()
            .link()
            .set_port(
                LinkBridgePort::new(self.tap)
                    .isolated(false)
                    .learning(true)
                    .build(),
            )
            .execute()
            .await;
    }

    /// Points the bridge's entry for remote `mac` at the fast port (`fast`) or at the TAP.
    pub async fn steer(&self, mac: [u8; 6], fast: bool) -> Result<(), rtnetlink::Error> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = if fast { self.fast_port } else { self.tap };
        // Static (NOARP), not permanent: a permanent entry would mean "this host's own MAC".
        m.header.state = NeighbourState::Noarp;
        m.header.flags = NeighbourFlags::Controller;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        request(
            &self.netdev,
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
    }

    /// Removes the bridge's entry for remote `mac` (its frames are flooded again).
    pub async fn unsteer(&self, mac: [u8; 6]) {
        for port in [self.fast_port, self.tap] {
            let mut m = NeighbourMessage::default();
            m.header.family = AddressFamily::Bridge;
            m.header.ifindex = port;
            m.header.flags = NeighbourFlags::Controller;
            m.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
            let _ = request(&self.netdev, RouteNetlinkMessage::DelNeighbour(m), 0).await;
        }
    }
}
