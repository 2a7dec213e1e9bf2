//! rtnetlink in one namespace: links, bridges, addresses and routes.
//!
//! A netlink socket talks to the namespace it was created in, for its whole life. So a
//! [`Netlink`] is opened on a thread that is inside the target namespace, while that thread
//! has entered the caller's tokio runtime, and its connection task is spawned on that runtime;
//! from then on it is used from ordinary async code on any thread.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteScope};
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

use super::error::{KernelError, Result};
use super::netns;

/// A veth pair to create from the namespace of a [`Netlink`], its peer going straight into
/// another namespace.
#[derive(Debug, Clone)]
pub struct VethSpec {
    /// Name of the local end.
    pub name: String,
    /// Interface index of the local end (must be free in this namespace).
    pub index: u32,
    /// Name of the peer end (in the peer's namespace).
    pub peer_name: String,
    /// Interface index of the peer end (must be free in the peer's namespace).
    pub peer_index: u32,
    /// MTU of both ends.
    pub mtu: u32,
}

/// Settings applied to an existing interface in one `RTM_NEWLINK` (set) request.
#[derive(Debug, Clone, Default)]
pub struct LinkSettings {
    /// Bring the interface up.
    pub up: bool,
    /// Interface alias (`IFLA_IFALIAS`), used as an ownership tag.
    pub alias: Option<String>,
    /// Index of the bridge to enslave the interface to.
    pub master: Option<u32>,
    /// New MTU.
    pub mtu: Option<u32>,
}

/// One interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// Operationally up (`IFF_RUNNING`): the kernel's link watcher has seen the carrier, so a
    /// bridge port forwards and routes through it are used.
    pub running: bool,
    /// Alias, if set.
    pub alias: Option<String>,
    /// Index of the bridge this interface is a port of.
    pub master: Option<u32>,
}

/// One IPv4 route of the main table as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteState {
    /// Destination prefix.
    pub dst: Ipv4Net,
    /// Gateway, if any.
    pub via: Option<Ipv4Addr>,
    /// Output interface index, if any.
    pub oif: Option<u32>,
}

/// An rtnetlink connection bound to one network namespace.
#[derive(Clone)]
pub struct Netlink {
    netns: String,
    handle: rtnetlink::Handle,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink")
            .field("netns", &self.netns)
            .finish()
    }
}

impl Netlink {
    /// Opens a connection in the namespace the calling thread is in, driven by runtime `rt`.
    /// `netns` only names the namespace in errors.
    pub fn open_here(netns: &str, rt: &tokio::runtime::Handle) -> Result<Self> {
        // The socket is registered with the reactor of the runtime entered here.
        let _guard = rt.enter();
        let (connection, handle, unsolicited) = rtnetlink::new_connection()
            .map_err(|e| KernelError::io(netns, None, "open rtnetlink socket", &e))?;
        // No multicast groups are joined: dropping the receiver lets the task end with the
        // last handle.
        drop(unsolicited);
        rt.spawn(connection);
        Ok(Self {
            netns: netns.to_string(),
            handle,
        })
    }

    /// Opens a connection inside the named namespace `netns`.
    pub fn open_in(netns: &str, rt: &tokio::runtime::Handle) -> Result<Self> {
        let name = netns.to_string();
        let rt = rt.clone();
        netns::run_in(netns, move || Self::open_here(&name, &rt))?
    }

    /// The underlying rtnetlink handle (for requests this module does not wrap, e.g. qdiscs).
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// The namespace this connection talks to.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Creates a veth pair: the local end here, the peer directly in the namespace behind
    /// `peer_ns` (`IFLA_NET_NS_FD` inside the peer message), so no other namespace ever sees
    /// it. Both ends start down.
    pub async fn add_veth(&self, spec: &VethSpec, peer_ns: BorrowedFd<'_>) -> Result<()> {
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(spec.peer_name.clone())
            .index(spec.peer_index)
            .mtu(spec.mtu)
            .setns_by_fd(peer_ns.as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(spec.name.clone())
            .index(spec.index)
            .mtu(spec.mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.handle.link().add(msg).execute().await.map_err(|e| {
            KernelError::netlink(
                &self.netns,
                Some(&format!("{} (peer {})", spec.name, spec.peer_name)),
                "RTM_NEWLINK veth",
                &e,
            )
        })
    }

    /// Creates a Linux bridge, up, with the given index and MTU.
    pub async fn add_bridge(&self, name: &str, index: u32, mtu: u32) -> Result<()> {
        let msg = LinkBridge::new(name).index(index).mtu(mtu).build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| KernelError::netlink(&self.netns, Some(name), "RTM_NEWLINK bridge", &e))
    }

    /// Applies `settings` to interface `index` (`name` is for errors).
    pub async fn set_link(&self, index: u32, name: &str, settings: &LinkSettings) -> Result<()> {
        let mut builder = LinkUnspec::new_with_index(index);
        if settings.up {
            builder = builder.up();
        }
        if let Some(alias) = &settings.alias {
            builder = builder.alias(alias.clone());
        }
        if let Some(master) = settings.master {
            builder = builder.controller(master);
        }
        if let Some(mtu) = settings.mtu {
            builder = builder.mtu(mtu);
        }
        self.handle
            .link()
            .set(builder.build())
            .execute()
            .await
            .map_err(|e| KernelError::netlink(&self.netns, Some(name), "RTM_NEWLINK set", &e))
    }

    /// Adds IPv4 address `addr` to interface `index` (`name` is for errors).
    pub async fn add_addr(&self, index: u32, name: &str, addr: Ipv4Net) -> Result<()> {
        self.handle
            .address()
            .add(index, IpAddr::V4(addr.addr()), addr.prefix_len())
            .execute()
            .await
            .map_err(|e| {
                KernelError::netlink(
                    &self.netns,
                    Some(&format!("{name} {addr}")),
                    "RTM_NEWADDR",
                    &e,
                )
            })
    }

    /// Adds an IPv4 route to `dst`, through gateway `via` and/or out of interface `oif`.
    pub async fn add_route(
        &self,
        dst: Ipv4Net,
        via: Option<Ipv4Addr>,
        oif: Option<u32>,
    ) -> Result<()> {
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len());
        match via {
            Some(gw) => builder = builder.gateway(gw),
            // Directly connected, as `ip route add DST dev DEV` makes it.
            None => builder = builder.scope(RouteScope::Link),
        }
        if let Some(index) = oif {
            builder = builder.output_interface(index);
        }
        self.handle
            .route()
            .add(builder.build())
            .execute()
            .await
            .map_err(|e| {
                let what = match via {
                    Some(gw) => format!("{dst} via {gw}"),
                    None => dst.to_string(),
                };
                KernelError::netlink(&self.netns, Some(&what), "RTM_NEWROUTE", &e)
            })
    }

    /// Lists every interface of the namespace.
    pub async fn links(&self) -> Result<Vec<LinkState>> {
        let mut stream = self.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| KernelError::netlink(&self.netns, None, "RTM_GETLINK dump", &e))?
        {
            let mut link = LinkState {
                index: msg.header.index,
                name: String::new(),
                mtu: 0,
                up: msg.header.flags.contains(LinkFlags::Up),
                running: msg.header.flags.contains(LinkFlags::Running),
                alias: None,
                master: None,
            };
            for attr in msg.attributes {
                match attr {
                    LinkAttribute::IfName(name) => link.name = name,
                    LinkAttribute::Mtu(mtu) => link.mtu = mtu,
                    LinkAttribute::IfAlias(alias) => link.alias = Some(alias),
                    LinkAttribute::Controller(master) => link.master = Some(master),
                    _ => {}
                }
            }
            out.push(link);
        }
        Ok(out)
    }

    /// Lists every IPv4 address of the namespace as (interface index, address/prefix).
    pub async fn addrs(&self) -> Result<Vec<(u32, Ipv4Net)>> {
        let mut stream = self.handle.address().get().execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| KernelError::netlink(&self.netns, None, "RTM_GETADDR dump", &e))?
        {
            for attr in &msg.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = attr {
                    if let Ok(net) = Ipv4Net::new(*ip, msg.header.prefix_len) {
                        out.push((msg.header.index, net));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Lists the IPv4 routes of the main table.
    pub async fn routes(&self) -> Result<Vec<RouteState>> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut stream = self.handle.route().get(query).execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| KernelError::netlink(&self.netns, None, "RTM_GETROUTE dump", &e))?
        {
            let mut table = u32::from(msg.header.table);
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut via = None;
            let mut oif = None;
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
                    RouteAttribute::Gateway(RouteAddress::Inet(a)) => via = Some(*a),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
                continue;
            }
            if let Ok(dst) = Ipv4Net::new(dst, msg.header.destination_prefix_length) {
                out.push(RouteState { dst, via, oif });
            }
        }
        Ok(out)
    }
}
