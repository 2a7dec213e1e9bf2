//! The router's network devices, through rtnetlink: the overlay bridge in the host namespace,
//! the TAP port sleeve captures on, and a veth per attached container.
//!
//! A netlink socket talks to the namespace it was created in for its whole life, so a
//! [`Netdev`] for a container's namespace is opened on a short-lived thread that entered that
//! namespace; its connection task then runs on the router's runtime.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkFlags,
};
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec};

/// Name of the overlay bridge in the host namespace.
pub const BRIDGE: &str = "ovl0";
/// Name of sleeve's TAP port on the bridge.
pub const TAP: &str = "ovltap";
/// Prefix of every device the router owns in the host namespace (excluded from the underlay).
pub const OWNED_PREFIX: &str = "ovl";
/// Name of the container side of an attachment.
pub const CONTAINER_IFACE: &str = "eth0";

/// A device operation that failed, with the request and the object it was about.
#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    /// A netlink request was refused.
    #[error("netlink {request} for {object}: {source} (is the router running as root, in the host namespace?)")]
    Netlink {
        /// The request (e.g. `RTM_NEWLINK veth`).
        request: &'static str,
        /// What it was about (device name, address).
        object: String,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A device the router expected is missing.
    #[error("device {0} not found in the namespace")]
    Missing(String),
}

type Result<T> = std::result::Result<T, NetdevError>;

fn nl(
    request: &'static str,
    object: impl Into<String>,
) -> impl FnOnce(rtnetlink::Error) -> NetdevError {
    let object = object.into();
    move |source| NetdevError::Netlink {
        request,
        object,
        source,
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetdevError {
    let what = what.into();
    move |source| NetdevError::Io { what, source }
}

/// One interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// Loopback.
    pub loopback: bool,
    /// Hardware address, when it has one.
    pub mac: Option<[u8; 6]>,
}

/// An rtnetlink connection bound to one namespace.
#[derive(Clone)]
pub struct Netdev {
    handle: rtnetlink::Handle,
}

impl std::fmt::Debug for Netdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Netdev { .. }")
    }
}

impl Netdev {
    /// Opens a connection in the calling thread's namespace, driven by runtime `rt`.
    pub fn open_here(rt: &tokio::runtime::Handle) -> Result<Self> {
        let _guard = rt.enter();
        let (connection, handle, unsolicited) =
            rtnetlink::new_connection().map_err(io("open rtnetlink socket"))?;
        drop(unsolicited);
        rt.spawn(connection);
        Ok(Self { handle })
    }

    /// Opens a connection inside the namespace bound at `netns` (a path, or a name under
    /// /run/netns).
    pub fn open_in(netns: &Path, rt: &tokio::runtime::Handle) -> Result<Self> {
        let fd = open_netns(netns)?;
        let rt = rt.clone();
        let what = format!("enter namespace {}", netns.display());
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| io(what)(std::io::Error::from(e)))?;
                Self::open_here(&rt)
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NetdevError::Io {
                    what: "netlink opener thread".into(),
                    source: std::io::Error::other("panicked"),
                })
            })
        })
    }

    /// The rtnetlink handle, for requests this module has no helper for (the vxlan datapath's
    /// device and FDB).
    pub(crate) fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// Every interface of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>> {
        let mut stream = self.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(nl("RTM_GETLINK dump", "all links"))?
        {
            let mut link = Link {
                index: msg.header.index,
                name: String::new(),
                mtu: 0,
                up: msg.header.flags.contains(LinkFlags::Up),
                loopback: msg.header.flags.contains(LinkFlags::Loopback),
                mac: None,
            };
            for attr in msg.attributes {
                match attr {
                    LinkAttribute::IfName(n) => link.name = n,
                    LinkAttribute::Mtu(m) => link.mtu = m,
                    LinkAttribute::Address(a) if a.len() == 6 => {
                        let mut mac = [0u8; 6];
                        mac.copy_from_slice(&a);
                        link.mac = Some(mac);
                    }
                    _ => {}
                }
            }
            out.push(link);
        }
        Ok(out)
    }

    /// The interface called `name`, if any.
    pub async fn link(&self, name: &str) -> Result<Option<Link>> {
        Ok(self.links().await?.into_iter().find(|l| l.name == name))
    }

    /// The smallest MTU of the namespace's up, non-loopback interfaces that the router does
    /// not own: the underlay MTU sleeve's automatic MTU starts from (1500 when there is none).
    pub async fn underlay_mtu(&self) -> Result<u32> {
        Ok(self
            .links()
            .await?
            .iter()
            .filter(|l| l.up && !l.loopback && !l.name.starts_with(OWNED_PREFIX))
            .map(|l| l.mtu)
            .min()
            .unwrap_or(1500))
    }

    /// Creates the overlay bridge (or reuses the one a previous run left), sets its MTU and
    /// brings it up; returns its index.
    pub async fn ensure_bridge(&self, name: &str, mtu: u32) -> Result<u32> {
        if self.link(name).await?.is_none() {
            let msg = LinkBridge::new(name).mtu(mtu).build();
            self.handle
                .link()
                .add(msg)
                .execute()
                .await
                .map_err(nl("RTM_NEWLINK bridge", name))?;
        }
        let link = self
            .link(name)
            .await?
            .ok_or_else(|| NetdevError::Missing(name.into()))?;
        // A bridge makes a link-local address even in address generation mode "none" (when
        // its ports change its MAC): IPv6 is turned off on it instead. The router runs in the
        // bridge's namespace, so /proc/sys/net is that namespace's.
        let knob = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
        if let Err(e) = std::fs::write(&knob, "1") {
            tracing::debug!("{knob}: {e} (IPv6 left on)");
        }
        self.set(link.index, name, true, None, Some(mtu)).await?;
        Ok(link.index)
    }

    /// Sets a link up, its controller (bridge) and MTU. A link brought up gets no IPv6
    /// link-local address first ([`Netdev::quiet_ipv6`]), loopback aside.
    pub async fn set(
        &self,
        index: u32,
        name: &str,
        up: bool,
        master: Option<u32>,
        mtu: Option<u32>,
    ) -> Result<()> {
        if up && name != "lo" {
            self.quiet_ipv6(index, name).await;
        }
        let mut b = LinkUnspec::new_with_index(index);
        if up {
            b = b.up();
        }
        if let Some(m) = master {
            b = b.controller(m);
        }
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        self.handle
            .link()
            .set(b.build())
            .execute()
            .await
            .map_err(nl("RTM_NEWLINK set", name))
    }

    /// Keeps a link from making an IPv6 link-local address (address generation mode "none"),
    /// so it sends no router solicitations or MLD reports. The overlay is IPv4; those
    /// multicasts, from every container and device every few seconds after it comes up, would
    /// be flooded to every peer and count as traffic on every fast-path connection (keeping all
    /// heartbeats brisk: [`crate::datapath::pace`]). Container runtimes do the same for
    /// networks without IPv6. Best effort: a kernel without IPv6, or a link whose MTU is below
    /// IPv6's 1280, refuses it and has no IPv6 anyway.
    pub async fn quiet_ipv6(&self, index: u32, name: &str) {
        let msg = LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]))
            .build();
        if let Err(e) = self.handle.link().set(msg).execute().await {
            tracing::debug!("{name}: IPv6 address generation left on: {e}");
        }
    }

    /// Deletes a link (for a veth, both ends).
    pub async fn delete(&self, index: u32, name: &str) -> Result<()> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(nl("RTM_DELLINK", name))
    }

    /// Deletes the link called `name` if there is one; `true` when there was.
    pub async fn delete_named(&self, name: &str) -> Result<bool> {
        match self.link(name).await? {
            Some(l) => self.delete(l.index, name).await.map(|()| true),
            None => Ok(false),
        }
    }

    /// Adds an IPv4 address.
    pub async fn add_addr(&self, index: u32, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        self.handle
            .address()
            .add(index, IpAddr::V4(addr), prefix)
            .execute()
            .await
            .map_err(nl("RTM_NEWADDR", format!("{name} {addr}/{prefix}")))
    }

    /// Creates a veth pair, `name` here and `peer_name` directly in the namespace behind
    /// `peer_ns`.
    pub async fn add_veth(
        &self,
        name: &str,
        peer_name: &str,
        mtu: u32,
        peer_ns: &OwnedFd,
    ) -> Result<()> {
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name.to_string())
            .mtu(mtu)
            .append_extra_attribute(LinkAttribute::GsoMaxSize(GSO_MAX_SIZE))
            .setns_by_fd(peer_ns.as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(name.to_string())
            .mtu(mtu)
            .append_extra_attribute(LinkAttribute::GsoMaxSize(GSO_MAX_SIZE))
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(nl("RTM_NEWLINK veth", format!("{name} (peer {peer_name})")))
    }
}

/// Where a namespace argument points: a path as given, or a name under /run/netns.
pub fn netns_path(netns: &str) -> PathBuf {
    if netns.contains('/') {
        PathBuf::from(netns)
    } else {
        Path::new("/run/netns").join(netns)
    }
}

/// Opens a namespace file.
pub fn open_netns(path: &Path) -> Result<OwnedFd> {
    std::fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(io(format!("open namespace {}", path.display())))
}

/// The host-side veth name of a container's attachment: stable for the namespace, at most 15
/// bytes.
pub fn host_veth_name(netns: &str) -> String {
    format!("ovlv{:08x}", fnv32(netns.as_bytes()))
}

/// FNV-1a, 32 bits: a short stable tag (not a security boundary).
pub fn fnv32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A TAP device: frames the bridge sends to it are read here, frames written here enter the
/// bridge. Closing the descriptor removes the device.
#[derive(Debug)]
pub struct Tap {
    /// The character device descriptor.
    pub fd: OwnedFd,
    /// The device name.
    pub name: String,
}

// TUNSETIFF = _IOW('T', 202, int); the flags are from linux/if_tun.h.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
// TUNSETOFFLOAD = _IOW('T', 208, unsigned int) and its TUN_F_* bits.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO6: libc::c_ulong = 0x04;
const TUN_F_TSO_ECN: libc::c_ulong = 0x08;

/// Largest GSO packet the container veths may build: the kernel's default (64 KiB). Its bursts
/// (at most 65535 bytes with their Ethernet and virtio headers: TCP leaves room for its
/// largest header) fit sleeve's 16-bit frame length, and sleeve cuts them into one-datagram
/// pieces. An earlier 60,000 (when sleeve sent a burst as one UDP datagram) cost the fast
/// path about a tenth of its throughput: vxlan then carries more, smaller bursts (measured:
/// 15.0 against 16.9 Gbit/s on one stream at MTU 8950).
pub const GSO_MAX_SIZE: u32 = 65_536;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates TAP device `name`: no packet-info header; every frame read or written starts with a
/// 10-byte `virtio_net_hdr`, and checksum and TCP segmentation offloads are on, so TCP bursts of
/// up to [`GSO_MAX_SIZE`] arrive as one frame.
pub fn create_tap(name: &str) -> Result<Tap> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(NetdevError::Io {
            what: format!("TAP name {name}"),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    let path = c"/dev/net/tun";
    // SAFETY: open(2) with a valid NUL-terminated path; the result is checked.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(io("open /dev/net/tun")(std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a descriptor we just opened and own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq; IfReq has its layout (16-byte name,
    // then a 24-byte union whose first member is the short flags) and lives for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io(format!("TUNSETIFF {name}"))(
            std::io::Error::last_os_error(),
        ));
    }
    let offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
    // SAFETY: TUNSETOFFLOAD takes the offload bits as the ioctl's integer argument.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, offloads) };
    if rc < 0 {
        return Err(io(format!("TUNSETOFFLOAD {name}"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(Tap {
        fd,
        name: name.to_string(),
    })
}

/// Attaches the container namespace at `netns`: a veth from it into the bridge, `eth0` inside
/// with `addr/prefix` and `mtu`, both ends and the container's loopback up. Returns the host
/// end's name and the container's MAC.
pub async fn attach(
    host: &Netdev,
    bridge: u32,
    netns: &str,
    addr: Ipv4Addr,
    prefix: u8,
    mtu: u32,
    rt: &tokio::runtime::Handle,
) -> Result<(String, Option<[u8; 6]>)> {
    let path = netns_path(netns);
    let ns_fd = open_netns(&path)?;
    let name = host_veth_name(netns);
    if let Some(old) = host.link(&name).await? {
        // A stale attachment of the same namespace (e.g. a half-done earlier attach).
        host.delete(old.index, &name).await?;
    }
    host.add_veth(&name, CONTAINER_IFACE, mtu, &ns_fd).await?;
    let local = host
        .link(&name)
        .await?
        .ok_or_else(|| NetdevError::Missing(name.clone()))?;
    host.set(local.index, &name, true, Some(bridge), None)
        .await?;
    let inner = Netdev::open_in(&path, rt)?;
    let links = inner.links().await?;
    let eth = links
        .iter()
        .find(|l| l.name == CONTAINER_IFACE)
        .ok_or_else(|| NetdevError::Missing(format!("{CONTAINER_IFACE} in {netns}")))?;
    inner
        .add_addr(eth.index, CONTAINER_IFACE, addr, prefix)
        .await?;
    inner
        .set(eth.index, CONTAINER_IFACE, true, None, None)
        .await?;
    if let Some(lo) = links.iter().find(|l| l.loopback) {
        inner.set(lo.index, &lo.name, true, None, None).await?;
    }
    Ok((name, eth.mac))
}

/// The MAC of `eth0` in the container namespace `netns`, if it is attached (`None` when the
/// namespace or its `eth0` is gone).
pub async fn container_mac(netns: &str, rt: &tokio::runtime::Handle) -> Result<Option<[u8; 6]>> {
    let path = netns_path(netns);
    if !path.exists() {
        return Ok(None);
    }
    let inner = Netdev::open_in(&path, rt)?;
    Ok(inner.link(CONTAINER_IFACE).await?.and_then(|l| l.mac))
}

/// Removes a container's attachment (deleting the host end deletes the pair).
pub async fn detach(host: &Netdev, netns: &str) -> Result<bool> {
    let name = host_veth_name(netns);
    match host.link(&name).await? {
        Some(l) => {
            host.delete(l.index, &name).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_the_kernel_limit() {
        let n = host_veth_name("/run/netns/netsim-abcdef-a-very-long-container-name");
        assert!(n.len() <= 15, "{n}");
        assert_eq!(
            n,
            host_veth_name("/run/netns/netsim-abcdef-a-very-long-container-name")
        );
        assert_ne!(n, host_veth_name("other"));
    }

    #[test]
    fn netns_arguments() {
        assert_eq!(netns_path("c1"), PathBuf::from("/run/netns/c1"));
        assert_eq!(
            netns_path("/proc/1/ns/net"),
            PathBuf::from("/proc/1/ns/net")
        );
    }
}
