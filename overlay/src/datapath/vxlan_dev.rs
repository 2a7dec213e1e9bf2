//! Kernel adapter of the vxlan datapath: the vxlan device on the overlay bridge, its forwarding
//! database (where frames for a MAC, and broadcasts, are sent) and the bridge's static entries
//! that steer a remote MAC to the vxlan port or to sleeve's TAP. Plain rtnetlink requests; no
//! decisions (those are in [`super::vxlan`] and [`super::select`]).
//!
//! FDB *append* (several all-zero entries, one per peer) has no builder in the rtnetlink crate:
//! the entries are sent with [`super::steer::request`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourCacheInfo, NeighbourFlags, NeighbourMessage,
    NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_route::link::LinkAttribute;
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
    /// What [`VxlanDevice::last_used`] reads with and last found.
    usage: Arc<Usage>,
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
            usage: Arc::default(),
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
        self.netdev.quiet_ipv6(self.index, DEVICE).await;
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

    /// When the kernel last sent a frame through the device to each peer: the newest "used"
    /// stamp of the peer's FDB entries, its MACs' and its share of the flood entry (which
    /// every broadcast uses: a conversation that starts with ARP over a broken path never gets
    /// to unicast, and must quicken the heartbeats too). Links the overlay brings up make no
    /// IPv6 link-local addresses, so nothing floods on its own
    /// ([`crate::netdev::Netdev::quiet_ipv6`]).
    ///
    /// Cheap when nothing moves: the device's transmit counter is read first (heartbeats do
    /// not pass through the device, only container frames do), and the FDB is listed only
    /// when it grew.
    pub async fn last_used(&self) -> Result<HashMap<IpAddr, Instant>, String> {
        let reader = self
            .usage
            .reader
            .get_or_try_init(|| async {
                Netdev::open_here(&tokio::runtime::Handle::current()).map_err(|e| e.to_string())
            })
            .await?;
        let sent = tx_packets(reader, self.index).await?;
        {
            let seen = self.usage.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.0 == Some(sent) {
                return Ok(seen.1.clone());
            }
        }
        let mut dump = reader
            .handle()
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute();
        let mut entries = Vec::new();
        while let Some(m) = dump.try_next().await.map_err(|e| e.to_string())? {
            if m.header.ifindex == self.index {
                entries.push(m);
            }
        }
        let now = Instant::now();
        let used: HashMap<IpAddr, Instant> = newest_use(&entries, clock_ticks_per_sec())
            .into_iter()
            .map(|(ip, ago)| (ip, now.checked_sub(ago).unwrap_or(now)))
            .collect();
        *self.usage.seen.lock().unwrap_or_else(|e| e.into_inner()) = (Some(sent), used.clone());
        Ok(used)
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

/// The state of [`VxlanDevice::last_used`].
#[derive(Default)]
struct Usage {
    /// A netlink socket of its own, opened on first use: the kernel runs one dump per socket
    /// at a time and refuses a second (EBUSY), so a periodic dump must not share the socket
    /// the router's other requests (link dumps among them) use.
    reader: tokio::sync::OnceCell<Netdev>,
    /// The device's transmit counter at the last FDB listing, and what that listing found.
    seen: Mutex<(Option<u64>, HashMap<IpAddr, Instant>)>,
}

/// Frames the device `index` was given to send, sent or not (one link request, no dump).
async fn tx_packets(netdev: &Netdev, index: u32) -> Result<u64, String> {
    let mut links = netdev.handle().link().get().match_index(index).execute();
    while let Some(l) = links.try_next().await.map_err(|e| e.to_string())? {
        for a in &l.attributes {
            if let LinkAttribute::Stats64(st) = a {
                return Ok(st.tx_packets + st.tx_dropped + st.tx_errors);
            }
        }
    }
    Err(format!("no counters for {DEVICE}"))
}

/// The kernel's clock ticks per second, the unit of FDB stamps (`USER_HZ`, 100 on Linux).
fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf(3) reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100)
}

/// Per destination, how long ago the newest of `entries` was used (stamps in `hz` ticks ago).
fn newest_use(entries: &[NeighbourMessage], hz: u64) -> HashMap<IpAddr, Duration> {
    let mut newest: HashMap<IpAddr, Duration> = HashMap::new();
    for m in entries {
        let mut dst = None;
        let mut used = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                    dst = Some(IpAddr::V4(*ip));
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                    dst = Some(IpAddr::V6(*ip));
                }
                // A bridge-family dump leaves the vxlan destination as raw bytes.
                NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) => {
                    dst = match raw.len() {
                        4 => <[u8; 4]>::try_from(&raw[..]).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(&raw[..]).ok().map(IpAddr::from),
                        _ => None,
                    };
                }
                NeighbourAttribute::CacheInfo(NeighbourCacheInfo { used: u, .. }) => {
                    used = Some(Duration::from_millis(u64::from(*u) * 1000 / hz));
                }
                _ => {}
            }
        }
        if let (Some(dst), Some(ago)) = (dst, used) {
            let e = newest.entry(dst).or_insert(ago);
            *e = (*e).min(ago);
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn entry(dst: [u8; 4], used_ticks: u32) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 1]));
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                Ipv4Addr::from(dst),
            )));
        // struct nda_cacheinfo: confirmed, used, updated, refcnt (u32, host order).
        let mut raw = [0u8; 16];
        raw[4..8].copy_from_slice(&used_ticks.to_ne_bytes());
        let info = NeighbourCacheInfo::parse(&raw).unwrap_or_else(|e| panic!("{e}"));
        m.attributes.push(NeighbourAttribute::CacheInfo(info));
        m
    }

    /// As a bridge-family dump gives it: the destination as raw bytes.
    fn raw_entry(dst: Vec<u8>, used_ticks: u32) -> NeighbourMessage {
        let mut m = entry([0; 4], used_ticks);
        m.attributes[1] = NeighbourAttribute::Destination(NeighbourAddress::Other(dst));
        m
    }

    fn flood_entry(dst: [u8; 4], used_ticks: u32) -> NeighbourMessage {
        let mut m = entry(dst, used_ticks);
        m.attributes[0] = NeighbourAttribute::LinkLayerAddress(FLOOD.to_vec());
        m
    }

    #[test]
    fn each_peer_is_as_recently_used_as_its_newest_entry() {
        let got = newest_use(
            &[
                entry([198, 18, 0, 2], 3000),
                entry([198, 18, 0, 2], 150),
                entry([198, 18, 0, 3], 90_000),
                NeighbourMessage::default(),
                raw_entry(vec![198, 18, 0, 4], 20),
                flood_entry([198, 18, 0, 3], 200),
            ],
            100,
        );
        let a = |d: [u8; 4]| IpAddr::V4(Ipv4Addr::from(d));
        assert_eq!(got.len(), 3);
        assert_eq!(got[&a([198, 18, 0, 4])], Duration::from_millis(200));
        assert_eq!(got[&a([198, 18, 0, 2])], Duration::from_millis(1500));
        assert_eq!(
            got[&a([198, 18, 0, 3])],
            Duration::from_secs(2),
            "flooded lately"
        );
    }
}
