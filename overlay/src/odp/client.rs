//! A small blocking client for the `ovs_datapath` and `ovs_vport` families.
//!
//! Blocking on purpose: datapath and vport set-up happens a handful of times per router
//! lifetime, and a plain socket with a receive timeout can neither hang nor need a runtime (an
//! async caller wraps it in `spawn_blocking`). Upcalls and flow churn will get their own
//! sockets. The client acts in the network namespace of the thread that calls
//! [`OdpClient::connect`].

use std::fmt::Debug;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    DecodeError, Emitable, NetlinkMessage, NetlinkPayload, ParseableParametrized, NLM_F_ACK,
    NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

use super::flow::{
    Action, FlowAttr, FlowMessage, FlowStats, KeyAttr, PacketAttr, PacketCmd, PacketMessage,
};
use super::wire::{
    DatapathMessage, DpAttr, DpStats, OvsCmd, TunnelAttr, VportAttr, VportMessage, VportType,
    OVS_DATAPATH_FAMILY, OVS_DP_F_DISPATCH_UPCALL_PER_CPU, OVS_DP_F_UNALIGNED, OVS_FLOW_FAMILY,
    OVS_PACKET_FAMILY, OVS_VPORT_FAMILY,
};

/// How long to wait for the kernel's answer before giving up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong talking to the datapath.
#[derive(Debug, thiserror::Error)]
pub enum OdpError {
    /// The generic netlink family is not registered: the module is absent.
    #[error(
        "generic netlink family {family} is missing (kernel answered {}): load the \
         openvswitch kernel module (`netsim doctor` shows what this kernel has); without it \
         the overlay uses its kernel vxlan tier",
        errno_name(*.errno)
    )]
    FamilyMissing {
        /// The family name.
        family: &'static str,
        /// The kernel's errno.
        errno: i32,
    },
    /// The kernel refused a request.
    #[error("{request}: kernel answered {}", errno_name(*.errno))]
    Kernel {
        /// What was asked.
        request: String,
        /// The kernel's errno (positive).
        errno: i32,
    },
    /// The socket failed (or the kernel did not answer in time).
    #[error("{request}: {source}")]
    Io {
        /// What was asked.
        request: String,
        /// The error.
        source: io::Error,
    },
    /// The kernel's reply could not be parsed.
    #[error("{request}: malformed reply: {source}")]
    Decode {
        /// What was asked.
        request: String,
        /// The parse error.
        source: DecodeError,
    },
    /// The reply lacked something the request needs.
    #[error("{request}: the reply lacks {what}")]
    Incomplete {
        /// What was asked.
        request: String,
        /// What is missing.
        what: &'static str,
    },
}

impl OdpError {
    /// The kernel's errno, where the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            OdpError::Kernel { errno, .. } | OdpError::FamilyMissing { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

fn errno_name(errno: i32) -> String {
    nix::errno::Errno::from_raw(errno).to_string()
}

/// The number of CPUs the kernel may run on (configured, not just online).
fn possible_cpus() -> usize {
    // SAFETY: sysconf(3) with a constant name; it only reads system configuration.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(1)
}

/// A datapath as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datapath {
    /// Name (also the name of its internal port's device).
    pub name: String,
    /// Interface index of its internal port: how requests address it.
    pub ifindex: i32,
    /// `OVS_DP_F_*` feature bits in effect.
    pub user_features: u32,
    /// Statistics.
    pub stats: DpStats,
}

impl Datapath {
    fn from_message(msg: DatapathMessage, request: &str) -> Result<Self, OdpError> {
        let mut name = None;
        let mut user_features = 0;
        let mut stats = DpStats::default();
        for attr in msg.attrs {
            match attr {
                DpAttr::Name(n) => name = Some(n),
                DpAttr::UserFeatures(f) => user_features = f,
                DpAttr::Stats(s) => stats = s,
                _ => {}
            }
        }
        Ok(Self {
            name: name.ok_or_else(|| OdpError::Incomplete {
                request: request.to_string(),
                what: "OVS_DP_ATTR_NAME",
            })?,
            ifindex: msg.dp_ifindex,
            user_features,
            stats,
        })
    }
}

/// A flow as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Flow {
    /// What it matches.
    pub key: Vec<KeyAttr>,
    /// Which bits of the key count.
    pub mask: Vec<KeyAttr>,
    /// What it does.
    pub actions: Vec<Action>,
    /// Its counters.
    pub stats: FlowStats,
    /// When it last matched (milliseconds of the kernel's monotonic clock; `None`: never).
    pub used_ms: Option<u64>,
}

impl Flow {
    fn from_message(msg: FlowMessage) -> Self {
        let mut flow = Flow::default();
        for attr in msg.attrs {
            match attr {
                FlowAttr::Key(k) => flow.key = k,
                FlowAttr::Mask(m) => flow.mask = m,
                FlowAttr::Actions(a) => flow.actions = a,
                FlowAttr::Stats(s) => flow.stats = s,
                FlowAttr::Used(u) => flow.used_ms = Some(u),
                _ => {}
            }
        }
        flow
    }
}

/// A vport as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vport {
    /// The datapath it belongs to (its `ifindex`).
    pub dp_ifindex: i32,
    /// Port number within the datapath.
    pub port_no: u32,
    /// Type.
    pub kind: VportType,
    /// Device name.
    pub name: String,
    /// UDP destination port, for tunnel vports.
    pub dst_port: Option<u16>,
    /// Interface index of the vport's device, where the kernel reports it.
    pub ifindex: Option<u32>,
}

impl Vport {
    fn from_message(msg: VportMessage, request: &str) -> Result<Self, OdpError> {
        let incomplete = |what| OdpError::Incomplete {
            request: request.to_string(),
            what,
        };
        let (mut port_no, mut kind, mut name, mut dst_port, mut ifindex) =
            (None, None, None, None, None);
        for attr in msg.attrs {
            match attr {
                VportAttr::PortNo(p) => port_no = Some(p),
                VportAttr::Type(t) => kind = Some(t),
                VportAttr::Name(n) => name = Some(n),
                VportAttr::IfIndex(i) => ifindex = Some(i),
                VportAttr::Options(opts) => {
                    for opt in opts {
                        if let TunnelAttr::DstPort(p) = opt {
                            dst_port = Some(p);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(Self {
            dp_ifindex: msg.dp_ifindex,
            port_no: port_no.ok_or_else(|| incomplete("OVS_VPORT_ATTR_PORT_NO"))?,
            kind: kind.ok_or_else(|| incomplete("OVS_VPORT_ATTR_TYPE"))?,
            name: name.ok_or_else(|| incomplete("OVS_VPORT_ATTR_NAME"))?,
            dst_port,
            ifindex,
        })
    }
}

/// A generic netlink socket with the `ovs_datapath` and `ovs_vport` family ids resolved.
#[derive(Debug)]
pub struct OdpClient {
    socket: Socket,
    seq: u32,
    datapath_family: u16,
    vport_family: u16,
    flow_family: u16,
    packet_family: u16,
}

impl OdpClient {
    /// Open a socket in the calling thread's network namespace and resolve the families.
    ///
    /// Fails with [`OdpError::FamilyMissing`] where the openvswitch module is absent.
    pub fn connect() -> Result<Self, OdpError> {
        let io_err = |what: &str, source| OdpError::Io {
            request: format!("{what} (generic netlink socket)"),
            source,
        };
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(|e| io_err("open", e))?;
        socket.bind_auto().map_err(|e| io_err("bind", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| io_err("connect", e))?;
        set_receive_timeout(&socket, REPLY_TIMEOUT).map_err(|e| io_err("set SO_RCVTIMEO", e))?;
        let mut client = Self {
            socket,
            seq: 0,
            datapath_family: 0,
            vport_family: 0,
            flow_family: 0,
            packet_family: 0,
        };
        client.datapath_family = client.resolve_family(OVS_DATAPATH_FAMILY)?;
        client.vport_family = client.resolve_family(OVS_VPORT_FAMILY)?;
        client.flow_family = client.resolve_family(OVS_FLOW_FAMILY)?;
        client.packet_family = client.resolve_family(OVS_PACKET_FAMILY)?;
        Ok(client)
    }

    /// The id of a generic netlink family (CTRL_CMD_GETFAMILY).
    pub fn resolve_family(&mut self, family: &'static str) -> Result<u16, OdpError> {
        let request = GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(family.to_string())],
        };
        let what = format!("resolve generic netlink family {family}");
        let replies = match self.exchange(0, request, 0, &what) {
            Ok(replies) => replies,
            Err(OdpError::Kernel { errno, .. }) => {
                return Err(OdpError::FamilyMissing { family, errno })
            }
            Err(e) => return Err(e),
        };
        replies
            .iter()
            .flat_map(|r| r.nlas.iter())
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or(OdpError::Incomplete {
                request: what,
                what: "CTRL_ATTR_FAMILY_ID",
            })
    }

    /// Create a datapath called `name` (at most 15 bytes) with no upcall receiver yet.
    pub fn create_datapath(&mut self, name: &str) -> Result<Datapath, OdpError> {
        let what = format!("create datapath {name}");
        let msg = DatapathMessage {
            cmd: OvsCmd::New,
            dp_ifindex: 0,
            attrs: vec![
                DpAttr::Name(name.to_string()),
                // Required by the kernel; 0 sends misses nowhere until a handler takes over.
                DpAttr::UpcallPid(0),
                DpAttr::UserFeatures(OVS_DP_F_UNALIGNED),
            ],
        };
        let family = self.datapath_family;
        let replies = self.exchange(family, msg, NLM_F_CREATE | NLM_F_EXCL, &what)?;
        match replies.into_iter().next() {
            Some(reply) => Datapath::from_message(reply, &what),
            None => self.get_datapath(name),
        }
    }

    /// Send every miss of `dp` to the netlink port `pid`, on every CPU: per-CPU dispatch with
    /// `pid` for all CPUs. Per-vport pids (set with [`Self::set_vport_upcall_pid`]) serve
    /// while per-CPU dispatch is off; but Open vSwitch's own tools turn it on when they open a
    /// datapath (`ovs-dpctl show` does), and from then on a datapath without per-CPU pids loses
    /// every miss. Fails with `EOPNOTSUPP` on kernels without per-CPU dispatch (before 5.15),
    /// where no tool can turn it on either.
    pub fn set_upcall_pid_all_cpus(&mut self, dp: &Datapath, pid: u32) -> Result<(), OdpError> {
        let msg = DatapathMessage {
            cmd: OvsCmd::Set,
            dp_ifindex: dp.ifindex,
            attrs: vec![
                DpAttr::Name(dp.name.clone()),
                DpAttr::UserFeatures(OVS_DP_F_UNALIGNED | OVS_DP_F_DISPATCH_UPCALL_PER_CPU),
                // One entry per possible CPU: the kernel indexes by CPU (and logs a complaint
                // when it has to wrap around a shorter list).
                DpAttr::PerCpuPids(vec![pid; possible_cpus()]),
            ],
        };
        let family = self.datapath_family;
        let what = format!(
            "send the misses of datapath {} to netlink port {pid} on every CPU",
            dp.name
        );
        self.exchange(family, msg, 0, &what).map(drop)
    }

    /// Read the datapath called `name`.
    pub fn get_datapath(&mut self, name: &str) -> Result<Datapath, OdpError> {
        let what = format!("get datapath {name}");
        let msg = DatapathMessage {
            cmd: OvsCmd::Get,
            dp_ifindex: 0,
            attrs: vec![DpAttr::Name(name.to_string())],
        };
        let family = self.datapath_family;
        let reply = self
            .exchange(family, msg, 0, &what)?
            .into_iter()
            .next()
            .ok_or(OdpError::Incomplete {
                request: what.clone(),
                what: "a datapath message",
            })?;
        Datapath::from_message(reply, &what)
    }

    /// Delete the datapath called `name` (with all its vports).
    pub fn delete_datapath(&mut self, name: &str) -> Result<(), OdpError> {
        let msg = DatapathMessage {
            cmd: OvsCmd::Del,
            dp_ifindex: 0,
            attrs: vec![DpAttr::Name(name.to_string())],
        };
        let family = self.datapath_family;
        self.exchange(family, msg, 0, &format!("delete datapath {name}"))
            .map(drop)
    }

    /// Add a vxlan vport called `name` listening on UDP `port` (6784 for the overlay).
    ///
    /// The vport is flow-based: the remote and the VNI come from each packet's tunnel
    /// metadata, set by the flow's actions.
    pub fn add_vport_vxlan(
        &mut self,
        dp: &Datapath,
        name: &str,
        port: u16,
    ) -> Result<Vport, OdpError> {
        self.add_vport(
            dp,
            name,
            VportType::Vxlan,
            vec![VportAttr::Options(vec![TunnelAttr::DstPort(port)])],
        )
    }

    /// Attach the existing network device `ifname` (in the client's namespace) as a vport.
    pub fn add_vport_netdev(&mut self, dp: &Datapath, ifname: &str) -> Result<Vport, OdpError> {
        self.add_vport(dp, ifname, VportType::Netdev, Vec::new())
    }

    fn add_vport(
        &mut self,
        dp: &Datapath,
        name: &str,
        kind: VportType,
        extra: Vec<VportAttr>,
    ) -> Result<Vport, OdpError> {
        let what = format!("add {kind:?} vport {name} to datapath {}", dp.name);
        let mut attrs = vec![
            VportAttr::Name(name.to_string()),
            VportAttr::Type(kind),
            VportAttr::UpcallPids(vec![0]),
        ];
        attrs.extend(extra);
        let msg = VportMessage {
            cmd: OvsCmd::New,
            dp_ifindex: dp.ifindex,
            attrs,
        };
        let family = self.vport_family;
        let replies = self.exchange(family, msg, NLM_F_CREATE | NLM_F_EXCL, &what)?;
        match replies.into_iter().next() {
            Some(reply) => Vport::from_message(reply, &what),
            None => self.get_vport(dp, name),
        }
    }

    /// Read the vport called `name` of `dp`.
    pub fn get_vport(&mut self, dp: &Datapath, name: &str) -> Result<Vport, OdpError> {
        let what = format!("get vport {name} of datapath {}", dp.name);
        let msg = VportMessage {
            cmd: OvsCmd::Get,
            dp_ifindex: dp.ifindex,
            attrs: vec![VportAttr::Name(name.to_string())],
        };
        let family = self.vport_family;
        let reply = self
            .exchange(family, msg, 0, &what)?
            .into_iter()
            .next()
            .ok_or(OdpError::Incomplete {
                request: what.clone(),
                what: "a vport message",
            })?;
        Vport::from_message(reply, &what)
    }

    /// Every vport of `dp`, by port number.
    pub fn list_vports(&mut self, dp: &Datapath) -> Result<Vec<Vport>, OdpError> {
        let what = format!("list vports of datapath {}", dp.name);
        let msg = VportMessage {
            cmd: OvsCmd::Get,
            dp_ifindex: dp.ifindex,
            attrs: Vec::new(),
        };
        let family = self.vport_family;
        let mut vports = self
            .exchange(family, msg, NLM_F_DUMP, &what)?
            .into_iter()
            .map(|m| Vport::from_message(m, &what))
            .collect::<Result<Vec<_>, _>>()?;
        vports.sort_by_key(|v| v.port_no);
        Ok(vports)
    }

    /// Delete vport `port_no` of `dp`.
    pub fn delete_vport(&mut self, dp: &Datapath, port_no: u32) -> Result<(), OdpError> {
        let msg = VportMessage {
            cmd: OvsCmd::Del,
            dp_ifindex: dp.ifindex,
            attrs: vec![VportAttr::PortNo(port_no)],
        };
        let family = self.vport_family;
        let what = format!("delete vport {port_no} of datapath {}", dp.name);
        self.exchange(family, msg, 0, &what).map(drop)
    }

    /// Send `port_no`'s misses to the netlink port `pid` (an [`super::UpcallSocket`]'s; 0:
    /// nowhere).
    pub fn set_vport_upcall_pid(
        &mut self,
        dp: &Datapath,
        port_no: u32,
        pid: u32,
    ) -> Result<(), OdpError> {
        let msg = VportMessage {
            cmd: OvsCmd::Set,
            dp_ifindex: dp.ifindex,
            attrs: vec![VportAttr::PortNo(port_no), VportAttr::UpcallPids(vec![pid])],
        };
        let family = self.vport_family;
        let what = format!(
            "send the misses of vport {port_no} of datapath {} to netlink port {pid}",
            dp.name
        );
        self.exchange(family, msg, 0, &what).map(drop)
    }

    /// One request of the `ovs_flow` family about `dp`, with its replies.
    fn flow_request(
        &mut self,
        dp: &Datapath,
        cmd: OvsCmd,
        attrs: Vec<FlowAttr>,
        flags: u16,
        what: &str,
    ) -> Result<Vec<FlowMessage>, OdpError> {
        let msg = FlowMessage {
            cmd,
            dp_ifindex: dp.ifindex,
            attrs,
        };
        let family = self.flow_family;
        self.exchange(
            family,
            msg,
            flags,
            &format!("{what} of datapath {}", dp.name),
        )
    }

    /// Install a flow: packets whose fields under `mask` equal `key` get `actions`. An empty
    /// `mask` matches every field of `key` exactly. Fails with `EEXIST` when the same match
    /// is installed already.
    pub fn new_flow(
        &mut self,
        dp: &Datapath,
        key: Vec<KeyAttr>,
        mask: Vec<KeyAttr>,
        actions: Vec<Action>,
    ) -> Result<(), OdpError> {
        let mut attrs = vec![FlowAttr::Key(key)];
        if !mask.is_empty() {
            attrs.push(FlowAttr::Mask(mask));
        }
        attrs.push(FlowAttr::Actions(actions));
        let flags = NLM_F_CREATE | NLM_F_EXCL;
        self.flow_request(dp, OvsCmd::New, attrs, flags, "install a flow")
            .map(drop)
    }

    /// Read the flow installed for `key` (as given when it was installed).
    pub fn get_flow(&mut self, dp: &Datapath, key: Vec<KeyAttr>) -> Result<Flow, OdpError> {
        let what = "read a flow";
        self.flow_request(dp, OvsCmd::Get, vec![FlowAttr::Key(key)], 0, what)?
            .into_iter()
            .next()
            .map(Flow::from_message)
            .ok_or(OdpError::Incomplete {
                request: format!("{what} of datapath {}", dp.name),
                what: "a flow message",
            })
    }

    /// Every flow of `dp`.
    pub fn dump_flows(&mut self, dp: &Datapath) -> Result<Vec<Flow>, OdpError> {
        let replies =
            self.flow_request(dp, OvsCmd::Get, Vec::new(), NLM_F_DUMP, "list the flows")?;
        Ok(replies.into_iter().map(Flow::from_message).collect())
    }

    /// Remove the flow installed for `key`.
    pub fn delete_flow(&mut self, dp: &Datapath, key: Vec<KeyAttr>) -> Result<(), OdpError> {
        self.flow_request(
            dp,
            OvsCmd::Del,
            vec![FlowAttr::Key(key)],
            0,
            "remove a flow",
        )
        .map(drop)
    }

    /// Remove every flow of `dp`.
    pub fn flush_flows(&mut self, dp: &Datapath) -> Result<(), OdpError> {
        self.flow_request(dp, OvsCmd::Del, Vec::new(), 0, "remove every flow")
            .map(drop)
    }

    /// Run `actions` on `frame` as if it had arrived with the metadata of `key` (its in-port,
    /// its tunnel): how a packet handed up on a miss continues on its way.
    pub fn execute(
        &mut self,
        dp: &Datapath,
        frame: &[u8],
        key: Vec<KeyAttr>,
        actions: Vec<Action>,
    ) -> Result<(), OdpError> {
        let msg = PacketMessage {
            cmd: PacketCmd::Execute,
            dp_ifindex: dp.ifindex,
            attrs: vec![
                PacketAttr::Packet(frame.to_vec()),
                PacketAttr::Key(key),
                PacketAttr::Actions(actions),
            ],
        };
        let family = self.packet_family;
        let what = format!("execute a packet in datapath {}", dp.name);
        self.exchange(family, msg, 0, &what).map(drop)
    }

    /// Send one request and collect its replies up to the ACK (or, for dumps, DONE).
    fn exchange<F>(
        &mut self,
        family_id: u16,
        payload: F,
        flags: u16,
        what: &str,
    ) -> Result<Vec<F>, OdpError>
    where
        F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + Debug,
    {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let buf = encode_request(family_id, payload, flags, seq);
        let io_err = |source: io::Error| OdpError::Io {
            request: what.to_string(),
            source,
        };
        self.socket.send(&buf, 0).map_err(io_err)?;

        let mut replies = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full().map_err(|e| {
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut {
                    io_err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer from the kernel within {REPLY_TIMEOUT:?}"),
                    ))
                } else {
                    io_err(e)
                }
            })?;
            let mut offset = 0;
            while offset + 16 <= data.len() {
                let mut len_bytes = [0u8; 4];
                len_bytes.copy_from_slice(&data[offset..offset + 4]);
                let len = u32::from_ne_bytes(len_bytes) as usize;
                if len < 16 || offset + len > data.len() {
                    return Err(OdpError::Decode {
                        request: what.to_string(),
                        source: DecodeError::from(format!("netlink message length {len}")),
                    });
                }
                let reply =
                    NetlinkMessage::<GenlMessage<F>>::deserialize(&data[offset..offset + len])
                        .map_err(|source| OdpError::Decode {
                            request: what.to_string(),
                            source,
                        })?;
                offset += (len + 3) & !3;
                if reply.header.sequence_number != seq {
                    continue; // a late answer to an earlier request
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(genl) => replies.push(genl.payload),
                    NetlinkPayload::Error(e) => match e.code {
                        Some(code) => {
                            return Err(OdpError::Kernel {
                                request: what.to_string(),
                                errno: -code.get(),
                            })
                        }
                        None => return Ok(replies),
                    },
                    NetlinkPayload::Done(_) => return Ok(replies),
                    _ => {}
                }
            }
        }
    }
}

/// One request as the bytes sent to the kernel: netlink header, generic netlink header, then the
/// family's payload. `family_id` 0 keeps the payload's static id (the controller's).
pub fn encode_request<F>(family_id: u16, payload: F, flags: u16, seq: u32) -> Vec<u8>
where
    F: GenlFamily + Emitable + Debug,
{
    let mut genl = GenlMessage::from_payload(payload);
    if family_id != 0 {
        genl.set_resolved_family_id(family_id);
    }
    let mut msg = NetlinkMessage::from(genl);
    // Dumps end with NLMSG_DONE and get no ACK; everything else is ACKed.
    let ack = if flags & NLM_F_DUMP == NLM_F_DUMP {
        0
    } else {
        NLM_F_ACK
    };
    msg.header.flags = NLM_F_REQUEST | flags | ack;
    msg.header.sequence_number = seq;
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

fn set_receive_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    // SAFETY: the fd belongs to `socket`, which outlives the call; `tv` is a valid timeval
    // and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odp::test_bytes::hex;

    #[test]
    fn vxlan_vport_request_bytes() {
        // Family id 0x1d as the kernel might assign it; NEW with CREATE|EXCL|ACK|REQUEST.
        let msg = VportMessage {
            cmd: OvsCmd::New,
            dp_ifindex: 5,
            attrs: vec![
                VportAttr::Name("vx0".into()),
                VportAttr::Type(VportType::Vxlan),
                VportAttr::UpcallPids(vec![0]),
                VportAttr::Options(vec![TunnelAttr::DstPort(6784)]),
            ],
        };
        let bytes = encode_request(0x1d, msg, NLM_F_CREATE | NLM_F_EXCL, 9);
        // nlmsghdr: length 60, type 0x1d, flags 0x605, seq 9, pid 0; genlmsghdr: cmd 1,
        // version 1; ovs_header: dp_ifindex 5; then the attributes.
        insta::assert_snapshot!(hex(&bytes), @"3c000000 1d000506 09000000 00000000 01010000 05000000 08000300 76783000 08000200 04000000 08000500 00000000 0c000400 06000100 801a0000");
    }

    #[test]
    fn dumps_ask_for_no_ack() {
        let msg = VportMessage {
            cmd: OvsCmd::Get,
            dp_ifindex: 5,
            attrs: vec![],
        };
        let bytes = encode_request(0x1d, msg, NLM_F_DUMP, 1);
        let flags = u16::from_ne_bytes([bytes[6], bytes[7]]);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_DUMP);
    }
}
