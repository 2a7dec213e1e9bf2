//! Kernel capability probe, shared by `netsim doctor` and the test helpers.
//!
//! Each feature is probed by trying it, inside a throw-away network namespace so the root
//! namespace is never touched: create a veth, a bridge and a vxlan device; install tbf, htb and
//! netem on the namespace's `lo`; resolve the Open vSwitch generic netlink families (which also
//! makes the kernel autoload the module where it can); list nftables tables; create a TAP
//! device; open an AF_PACKET socket. The result is computed once per process ([`probe`]).

use std::fmt;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::time::Duration;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_sys::{protocols, Socket, SocketAddr};
use serde::{Deserialize, Serialize};

use crate::kernel::tc;

/// A kernel feature netsim can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// Network namespaces (CLONE_NEWNET).
    Netns,
    /// Virtual ethernet pairs.
    Veth,
    /// Linux bridges.
    Bridge,
    /// Kernel vxlan devices.
    Vxlan,
    /// The token bucket filter qdisc.
    Tbf,
    /// The hierarchical token bucket qdisc.
    Htb,
    /// The network emulator qdisc (delay, jitter, loss).
    Netem,
    /// The Open vSwitch kernel datapath (generic netlink families ovs_*).
    Openvswitch,
    /// nftables over netlink.
    Nftables,
    /// TUN/TAP devices (/dev/net/tun).
    Tun,
    /// AF_PACKET sockets.
    AfPacket,
}

impl Feature {
    /// Every feature, in a stable order.
    pub const ALL: [Feature; 11] = [
        Feature::Netns,
        Feature::Veth,
        Feature::Bridge,
        Feature::Vxlan,
        Feature::Tbf,
        Feature::Htb,
        Feature::Netem,
        Feature::Openvswitch,
        Feature::Nftables,
        Feature::Tun,
        Feature::AfPacket,
    ];

    /// Short stable name (as in `doctor --json` and skip records).
    pub fn name(self) -> &'static str {
        match self {
            Feature::Netns => "netns",
            Feature::Veth => "veth",
            Feature::Bridge => "bridge",
            Feature::Vxlan => "vxlan",
            Feature::Tbf => "tbf",
            Feature::Htb => "htb",
            Feature::Netem => "netem",
            Feature::Openvswitch => "openvswitch",
            Feature::Nftables => "nftables",
            Feature::Tun => "tun",
            Feature::AfPacket => "af-packet",
        }
    }

    /// What the feature is.
    pub fn description(self) -> &'static str {
        match self {
            Feature::Netns => "network namespaces: every virtual host is one",
            Feature::Veth => "virtual ethernet pairs: the links between hosts",
            Feature::Bridge => "Linux bridges: switches, and the overlay's container bridge",
            Feature::Vxlan => "kernel vxlan devices: the overlay's vxlan datapath tier",
            Feature::Tbf => "token bucket filter qdisc: link rate limits",
            Feature::Htb => "hierarchical token bucket qdisc: link rate limits with classes",
            Feature::Netem => "network emulator qdisc: link delay, jitter, loss, reordering",
            Feature::Openvswitch => "Open vSwitch kernel datapath: the overlay's fast datapath",
            Feature::Nftables => "nftables: port blocking, loss emulation, NAT",
            Feature::Tun => "TUN/TAP devices: the overlay's userspace (sleeve) datapath",
            Feature::AfPacket => "AF_PACKET sockets: frame capture for sleeve and measurements",
        }
    }

    /// What the feature's absence means for users of netsim.
    pub fn if_missing(self) -> &'static str {
        match self {
            Feature::Netns => "netsim cannot build labs at all (run as root on Linux)",
            Feature::Veth => "netsim cannot link hosts: labs cannot be built",
            Feature::Bridge => "switches and container bridges cannot be built",
            Feature::Vxlan => "the overlay falls back from the vxlan tier to sleeve",
            Feature::Tbf => "link rates use htb where present, else stay unshaped and reported",
            Feature::Htb => "link rates use tbf where present",
            Feature::Netem => "link delay/jitter/loss use the emulated backend",
            Feature::Openvswitch => {
                "the overlay's fast datapath falls back to the kernel vxlan tier"
            }
            Feature::Nftables => {
                "port blocking and loss emulation are unavailable; tests needing them skip"
            }
            Feature::Tun => "the sleeve datapath captures with AF_PACKET instead of a TAP device",
            Feature::AfPacket => "sleeve capture and some measurements are unavailable",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a feature works here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason", rename_all = "kebab-case")]
pub enum Status {
    /// The probe used it successfully.
    Present,
    /// The probe failed, for this reason.
    Missing(String),
}

impl Status {
    /// Whether the feature is present.
    pub fn is_present(&self) -> bool {
        matches!(self, Status::Present)
    }
}

/// One probed feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureStatus {
    /// The feature.
    pub feature: Feature,
    /// Its status.
    #[serde(flatten)]
    pub status: Status,
}

/// What this kernel can do, feature by feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// `kernel` in the kernel lane (from `NETSIM_LANE`), else `host`.
    pub lane: String,
    /// Every feature in [`Feature::ALL`] order.
    pub features: Vec<FeatureStatus>,
}

impl Capabilities {
    /// The status of `feature`.
    pub fn status(&self, feature: Feature) -> &Status {
        static NOT_PROBED: OnceLock<Status> = OnceLock::new();
        self.features
            .iter()
            .find(|f| f.feature == feature)
            .map(|f| &f.status)
            .unwrap_or_else(|| NOT_PROBED.get_or_init(|| Status::Missing("not probed".into())))
    }

    /// Whether `feature` is present.
    pub fn has(&self, feature: Feature) -> bool {
        self.status(feature).is_present()
    }

    /// The missing features with their reasons.
    pub fn missing(&self) -> impl Iterator<Item = (Feature, &str)> {
        self.features.iter().filter_map(|f| match &f.status {
            Status::Present => None,
            Status::Missing(reason) => Some((f.feature, reason.as_str())),
        })
    }

    /// A human-readable report, one line per feature, for `netsim doctor`.
    pub fn report(&self) -> String {
        let mut out = format!("kernel {} ({} lane)\n", self.kernel, self.lane);
        for f in &self.features {
            match &f.status {
                Status::Present => out.push_str(&format!(
                    "  ok       {:<12} {}\n",
                    f.feature.name(),
                    f.feature.description()
                )),
                Status::Missing(reason) => out.push_str(&format!(
                    "  MISSING  {:<12} {}\n           why: {reason}\n           so:  {}\n",
                    f.feature.name(),
                    f.feature.description(),
                    f.feature.if_missing()
                )),
            }
        }
        out
    }
}

/// The capabilities of this kernel, probed once per process.
pub fn probe() -> &'static Capabilities {
    static CAPS: OnceLock<Capabilities> = OnceLock::new();
    CAPS.get_or_init(probe_uncached)
}

/// Probe afresh (the probe takes tens of milliseconds; prefer [`probe`]).
pub fn probe_uncached() -> Capabilities {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let lane = if crate::testing::in_kernel_lane() {
        "kernel"
    } else {
        "host"
    }
    .to_string();
    // Namespace membership is per thread: probe on a thread of our own.
    let results = std::thread::Builder::new()
        .name("netsim-caps-probe".into())
        .spawn(probe_in_scratch_ns)
        .map_err(|e| format!("cannot start the probe thread: {e}"))
        .and_then(|t| {
            t.join()
                .map_err(|_| "the probe thread panicked".to_string())
        });
    let features = match results {
        Ok(features) => features,
        Err(reason) => Feature::ALL
            .iter()
            .map(|&feature| FeatureStatus {
                feature,
                status: Status::Missing(reason.clone()),
            })
            .collect(),
    };
    Capabilities {
        kernel,
        lane,
        features,
    }
}

type Probed = Result<(), String>;

fn probe_in_scratch_ns() -> Vec<FeatureStatus> {
    let mut results: Vec<(Feature, Probed)> = Vec::new();
    match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        Ok(()) => results.push((Feature::Netns, Ok(()))),
        Err(e) => {
            let reason = format!("unshare(CLONE_NEWNET): {e} (netsim needs root)");
            return Feature::ALL
                .iter()
                .map(|&feature| FeatureStatus {
                    feature,
                    status: Status::Missing(if feature == Feature::Netns {
                        reason.clone()
                    } else {
                        format!("not probed: no scratch namespace ({reason})")
                    }),
                })
                .collect();
        }
    }
    // From here on this thread is alone in a fresh namespace; it dies with the thread.
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => results.extend(rt.block_on(probe_rtnetlink())),
        Err(e) => {
            let reason = format!("cannot start a tokio runtime for rtnetlink: {e}");
            for f in [
                Feature::Veth,
                Feature::Bridge,
                Feature::Vxlan,
                Feature::Tbf,
                Feature::Htb,
                Feature::Netem,
            ] {
                results.push((f, Err(reason.clone())));
            }
        }
    }
    results.push((Feature::Openvswitch, probe_openvswitch()));
    results.push((Feature::Nftables, probe_nftables()));
    results.push((Feature::Tun, probe_tun()));
    results.push((Feature::AfPacket, probe_af_packet()));
    Feature::ALL
        .iter()
        .map(|&feature| {
            let status = match results.iter().find(|(f, _)| *f == feature) {
                Some((_, Ok(()))) => Status::Present,
                Some((_, Err(reason))) => Status::Missing(reason.clone()),
                None => Status::Missing("not probed".into()),
            };
            FeatureStatus { feature, status }
        })
        .collect()
}

const STEP_TIMEOUT: Duration = Duration::from_secs(10);

async fn step<F>(what: &str, fut: F) -> Probed
where
    F: std::future::Future<Output = Result<(), String>>,
{
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(result) => result,
        Err(_) => Err(format!("{what}: no answer within {STEP_TIMEOUT:?}")),
    }
}

fn describe(err: &rtnetlink::Error) -> String {
    match err {
        rtnetlink::Error::NetlinkError(e) => {
            let code = -e.raw_code();
            format!("kernel answered {}", nix::errno::Errno::from_raw(code))
        }
        other => other.to_string(),
    }
}

async fn probe_rtnetlink() -> Vec<(Feature, Probed)> {
    use rtnetlink::{LinkBridge, LinkUnspec, LinkVeth, LinkVxlan};
    let links = [Feature::Veth, Feature::Bridge, Feature::Vxlan];
    let qdiscs = [Feature::Tbf, Feature::Htb, Feature::Netem];
    let (conn, handle, _) = match rtnetlink::new_connection() {
        Ok(c) => c,
        Err(e) => {
            let reason = format!("cannot open an rtnetlink socket: {e}");
            return links
                .iter()
                .chain(qdiscs.iter())
                .map(|&f| (f, Err(reason.clone())))
                .collect();
        }
    };
    let conn_task = tokio::spawn(conn);
    let mut out = Vec::new();

    let veth = step("create a veth pair", async {
        handle
            .link()
            .add(LinkVeth::new("probe-v0", "probe-v1").build())
            .execute()
            .await
            .map_err(|e| format!("create a veth pair: {}", describe(&e)))
    })
    .await;
    out.push((Feature::Veth, veth));

    let bridge = step("create a bridge", async {
        handle
            .link()
            .add(LinkBridge::new("probe-br0").build())
            .execute()
            .await
            .map_err(|e| format!("create a bridge: {}", describe(&e)))
    })
    .await;
    out.push((Feature::Bridge, bridge));

    let vxlan = step("create a vxlan device", async {
        handle
            .link()
            .add(LinkVxlan::new("probe-vx0", 42).port(6784).build())
            .execute()
            .await
            .map_err(|e| format!("create a vxlan device: {}", describe(&e)))
    })
    .await;
    out.push((Feature::Vxlan, vxlan));

    // qdiscs go on the namespace's own lo (ifindex 1 in a new namespace), brought up first.
    let lo_up = step("bring lo up", async {
        handle
            .link()
            .set(LinkUnspec::new_with_index(1).up().build())
            .execute()
            .await
            .map_err(|e| format!("bring lo up: {}", describe(&e)))
    })
    .await;
    let tbf = tc::Tbf {
        rate_bytes_per_sec: 125_000,
        burst_bytes: 16_000,
        latency: Duration::from_millis(50),
    };
    let netem = tc::Netem {
        delay: Duration::from_millis(1),
        ..tc::Netem::default()
    };
    for feature in qdiscs {
        let result = match &lo_up {
            Err(e) => Err(format!("not probed: {e}")),
            Ok(()) => {
                step("install a qdisc", async {
                    let installed = match feature {
                        Feature::Tbf => tc::replace_tbf(&handle, 1, &tbf).await,
                        Feature::Htb => tc::replace_htb_root(&handle, 1, 0x10).await,
                        _ => tc::replace_netem(&handle, 1, &netem).await,
                    };
                    installed.map_err(|e| match e {
                        tc::TcError::Netlink { cause, .. } => {
                            format!("install a {} qdisc: {}", feature.name(), describe(&cause))
                        }
                        other => other.to_string(),
                    })?;
                    // Leave lo as it was for the next qdisc; failure here is harmless.
                    let _ = tc::delete_root_qdisc(&handle, 1).await;
                    Ok(())
                })
                .await
            }
        };
        out.push((feature, result));
    }
    conn_task.abort();
    out
}

/// Open a netlink socket of `protocol`, connected to the kernel, with a receive timeout so a
/// silent kernel cannot hang the probe.
fn netlink_socket(protocol: isize) -> Result<Socket, String> {
    let mut socket = Socket::new(protocol).map_err(|e| format!("open a netlink socket: {e}"))?;
    socket
        .bind_auto()
        .map_err(|e| format!("bind a netlink socket: {e}"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| format!("connect a netlink socket: {e}"))?;
    let tv = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    // SAFETY: the fd is a live socket owned by `socket`; `tv` is a valid timeval for the
    // duration of the call and its size is passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!(
            "set a receive timeout: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(socket)
}

/// Resolve one generic netlink family by name (CTRL_CMD_GETFAMILY).
pub fn resolve_genl_family(name: &str) -> Result<u16, String> {
    let socket = netlink_socket(protocols::NETLINK_GENERIC)?;
    let mut msg = NetlinkMessage::from(GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_string())],
    }));
    msg.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    msg.header.sequence_number = 1;
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    socket
        .send(&buf, 0)
        .map_err(|e| format!("send CTRL_CMD_GETFAMILY {name}: {e}"))?;
    let mut family = None;
    loop {
        let (data, _) = socket
            .recv_from_full()
            .map_err(|e| format!("receive CTRL_CMD_GETFAMILY {name}: {e}"))?;
        let mut offset = 0;
        while offset < data.len() {
            let reply = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(&data[offset..])
                .map_err(|e| format!("parse CTRL_CMD_GETFAMILY {name} reply: {e}"))?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::InnerMessage(genl) => {
                    family = genl.payload.nlas.iter().find_map(|a| match a {
                        GenlCtrlAttrs::FamilyId(id) => Some(*id),
                        _ => None,
                    });
                }
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    let errno = nix::errno::Errno::from_raw(-e.raw_code());
                    return Err(format!(
                        "no generic netlink family {name} (kernel answered {errno})"
                    ));
                }
                // The ACK (error code 0) ends the exchange.
                NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => {
                    return family.ok_or_else(|| {
                        format!("generic netlink family {name}: reply without an id")
                    });
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += (len + 3) & !3;
        }
    }
}

fn probe_openvswitch() -> Probed {
    for family in ["ovs_datapath", "ovs_vport", "ovs_flow", "ovs_packet"] {
        resolve_genl_family(family)
            .map_err(|e| format!("{e}; the openvswitch module is absent or cannot be loaded"))?;
    }
    Ok(())
}

/// List nftables tables (NFT_MSG_GETTABLE dump) in the scratch namespace.
///
/// Built by hand: the message is a 16-byte netlink header plus a 4-byte `nfgenmsg`, and the
/// crates that speak nftables pull in libnftnl or far more than one probe needs.
fn probe_nftables() -> Probed {
    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    const NFT_MSG_GETTABLE: u16 = 1;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    let socket = netlink_socket(protocols::NETLINK_NETFILTER)?;
    let mut req = Vec::with_capacity(20);
    req.extend_from_slice(&20u32.to_ne_bytes());
    req.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE).to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
                                                // nfgenmsg { family: NFPROTO_UNSPEC, version: NFNETLINK_V0, res_id: 0 (big endian) }.
    req.extend_from_slice(&[0, 0, 0, 0]);
    socket
        .send(&req, 0)
        .map_err(|e| format!("send NFT_MSG_GETTABLE: {e}"))?;
    loop {
        let (data, _) = socket
            .recv_from_full()
            .map_err(|e| format!("receive NFT_MSG_GETTABLE: {e}"))?;
        let mut offset = 0;
        while offset + 16 <= data.len() {
            let word = |at: usize| {
                let mut b = [0u8; 4];
                b.copy_from_slice(&data[offset + at..offset + at + 4]);
                b
            };
            let len = u32::from_ne_bytes(word(0)) as usize;
            let kind = u16::from_ne_bytes([data[offset + 4], data[offset + 5]]);
            match kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    if data.len() < offset + 20 {
                        return Err("truncated netlink error to NFT_MSG_GETTABLE".into());
                    }
                    let code = i32::from_ne_bytes(word(16));
                    if code == 0 {
                        return Ok(());
                    }
                    let errno = nix::errno::Errno::from_raw(-code);
                    return Err(format!("list nftables tables: kernel answered {errno}"));
                }
                _ => {}
            }
            if len < 16 {
                return Err(format!("malformed netlink message of length {len}"));
            }
            offset += (len + 3) & !3;
        }
    }
}

/// Create a TAP device (it vanishes when the descriptor closes).
fn probe_tun() -> Probed {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| format!("open /dev/net/tun: {e}"))?;
    // struct ifreq: 16-byte name, then a union whose first member is the short flags.
    let mut ifr = [0u8; 40];
    let name = b"probe-tap0";
    ifr[..name.len()].copy_from_slice(name);
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as u16;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq; `ifr` is a 40-byte buffer (the size
    // of struct ifreq on Linux) that outlives the call, and the fd is open.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, ifr.as_mut_ptr()) };
    if rc != 0 {
        return Err(format!(
            "create a TAP device (TUNSETIFF): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn probe_af_packet() -> Probed {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};
    socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    )
    .map(drop)
    .map_err(|e| format!("open an AF_PACKET socket: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_kebab_case() {
        let mut names: Vec<&str> = Feature::ALL.iter().map(|f| f.name()).collect();
        for (feature, name) in Feature::ALL.iter().zip(&names) {
            let json = serde_json::to_string(feature).unwrap_or_default();
            assert_eq!(json, format!("\"{name}\""));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Feature::ALL.len());
    }

    #[test]
    fn report_and_json_shapes() {
        let caps = Capabilities {
            kernel: "6.1.0".into(),
            lane: "host".into(),
            features: vec![
                FeatureStatus {
                    feature: Feature::Veth,
                    status: Status::Present,
                },
                FeatureStatus {
                    feature: Feature::Netem,
                    status: Status::Missing("install a netem qdisc: kernel answered ENOENT".into()),
                },
            ],
        };
        insta::assert_snapshot!(caps.report());
        insta::assert_snapshot!(serde_json::to_string_pretty(&caps).unwrap_or_default());
        assert!(caps.has(Feature::Veth));
        assert!(!caps.has(Feature::Netem));
        assert!(
            !caps.has(Feature::Tun),
            "an unprobed feature counts as missing"
        );
        assert_eq!(caps.missing().count(), 1);
    }
}
