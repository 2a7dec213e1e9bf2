//! `ovs_flow` and `ovs_packet` messages: flow keys and masks (`OVS_KEY_ATTR_*`, tunnel keys
//! `OVS_TUNNEL_KEY_ATTR_*`), actions (`OVS_ACTION_ATTR_*`), flows (`OVS_FLOW_ATTR_*`) and
//! packets handed up or executed (`OVS_PACKET_ATTR_*`). Numbers and layouts follow
//! `include/uapi/linux/openvswitch.h`.
//!
//! Only what the overlay reads or writes has a variant; anything else the kernel sends (the
//! conntrack and IP parts of an upcall's key, say) is kept verbatim as `Other`, so a message
//! parses whatever the kernel adds.

use std::net::Ipv4Addr;

use netlink_packet_core::{
    parse_u16_be, parse_u32, parse_u64, parse_u8, DecodeError, DefaultNla, Emitable, ErrorContext,
    Nla, NlaBuffer, Parseable,
};

use super::wire::{parse_nlas, OvsCmd};
use super::wire::{OVS_FLOW_FAMILY, OVS_PACKET_FAMILY};

/// `OVS_FLOW_VERSION`.
pub const OVS_FLOW_VERSION: u8 = 1;
/// `OVS_PACKET_VERSION`.
pub const OVS_PACKET_VERSION: u8 = 1;

const OVS_KEY_ATTR_PRIORITY: u16 = 2;
const OVS_KEY_ATTR_IN_PORT: u16 = 3;
const OVS_KEY_ATTR_ETHERNET: u16 = 4;
const OVS_KEY_ATTR_ETHERTYPE: u16 = 6;
const OVS_KEY_ATTR_SKB_MARK: u16 = 15;
const OVS_KEY_ATTR_TUNNEL: u16 = 16;
const OVS_KEY_ATTR_DP_HASH: u16 = 19;
const OVS_KEY_ATTR_RECIRC_ID: u16 = 20;

const OVS_TUNNEL_KEY_ATTR_ID: u16 = 0;
const OVS_TUNNEL_KEY_ATTR_IPV4_SRC: u16 = 1;
const OVS_TUNNEL_KEY_ATTR_IPV4_DST: u16 = 2;
const OVS_TUNNEL_KEY_ATTR_TOS: u16 = 3;
const OVS_TUNNEL_KEY_ATTR_TTL: u16 = 4;
const OVS_TUNNEL_KEY_ATTR_DONT_FRAGMENT: u16 = 5;
const OVS_TUNNEL_KEY_ATTR_CSUM: u16 = 6;
const OVS_TUNNEL_KEY_ATTR_TP_SRC: u16 = 9;
const OVS_TUNNEL_KEY_ATTR_TP_DST: u16 = 10;

const OVS_ACTION_ATTR_OUTPUT: u16 = 1;
const OVS_ACTION_ATTR_USERSPACE: u16 = 2;
const OVS_ACTION_ATTR_SET: u16 = 3;

const OVS_USERSPACE_ATTR_PID: u16 = 1;

const OVS_FLOW_ATTR_KEY: u16 = 1;
const OVS_FLOW_ATTR_ACTIONS: u16 = 2;
const OVS_FLOW_ATTR_STATS: u16 = 3;
const OVS_FLOW_ATTR_TCP_FLAGS: u16 = 4;
const OVS_FLOW_ATTR_USED: u16 = 5;
const OVS_FLOW_ATTR_CLEAR: u16 = 6;
const OVS_FLOW_ATTR_MASK: u16 = 7;

const OVS_PACKET_ATTR_PACKET: u16 = 1;
const OVS_PACKET_ATTR_KEY: u16 = 2;
const OVS_PACKET_ATTR_ACTIONS: u16 = 3;
const OVS_PACKET_ATTR_USERDATA: u16 = 4;
const OVS_PACKET_ATTR_MRU: u16 = 9;
const OVS_PACKET_ATTR_LEN: u16 = 10;

fn fixed<const N: usize>(v: &[u8], what: &'static str) -> Result<[u8; N], DecodeError> {
    v.get(..N)
        .filter(|_| v.len() == N)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| DecodeError::from(format!("{what}: {} bytes, not {N}", v.len())))
}

fn parse_ipv4(v: &[u8], what: &'static str) -> Result<Ipv4Addr, DecodeError> {
    Ok(Ipv4Addr::from(fixed::<4>(v, what)?))
}

fn parse_be64(v: &[u8], what: &'static str) -> Result<u64, DecodeError> {
    Ok(u64::from_be_bytes(fixed::<8>(v, what)?))
}

fn no_value(v: &[u8], what: &'static str) -> Result<(), DecodeError> {
    if v.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::from(format!(
            "{what}: a flag carries no value, got {} bytes",
            v.len()
        )))
    }
}

/// One field of a tunnel key (`OVS_TUNNEL_KEY_ATTR_*`), in a flow key or a set action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelKeyAttr {
    /// Tunnel id: the VNI for vxlan (`ID`, big-endian 64 bits).
    Id(u64),
    /// Outer source address.
    Ipv4Src(Ipv4Addr),
    /// Outer destination address.
    Ipv4Dst(Ipv4Addr),
    /// Outer TOS.
    Tos(u8),
    /// Outer TTL (the kernel insists on one in a key and in a set action).
    Ttl(u8),
    /// Outer DF bit set (a flag).
    DontFragment,
    /// Outer UDP checksum wanted (a flag).
    Csum,
    /// Outer UDP source port.
    TpSrc(u16),
    /// Outer UDP destination port.
    TpDst(u16),
    /// Any other field, kept verbatim.
    Other(DefaultNla),
}

impl Nla for TunnelKeyAttr {
    fn value_len(&self) -> usize {
        match self {
            TunnelKeyAttr::Id(_) => 8,
            TunnelKeyAttr::Ipv4Src(_) | TunnelKeyAttr::Ipv4Dst(_) => 4,
            TunnelKeyAttr::Tos(_) | TunnelKeyAttr::Ttl(_) => 1,
            TunnelKeyAttr::DontFragment | TunnelKeyAttr::Csum => 0,
            TunnelKeyAttr::TpSrc(_) | TunnelKeyAttr::TpDst(_) => 2,
            TunnelKeyAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            TunnelKeyAttr::Id(_) => OVS_TUNNEL_KEY_ATTR_ID,
            TunnelKeyAttr::Ipv4Src(_) => OVS_TUNNEL_KEY_ATTR_IPV4_SRC,
            TunnelKeyAttr::Ipv4Dst(_) => OVS_TUNNEL_KEY_ATTR_IPV4_DST,
            TunnelKeyAttr::Tos(_) => OVS_TUNNEL_KEY_ATTR_TOS,
            TunnelKeyAttr::Ttl(_) => OVS_TUNNEL_KEY_ATTR_TTL,
            TunnelKeyAttr::DontFragment => OVS_TUNNEL_KEY_ATTR_DONT_FRAGMENT,
            TunnelKeyAttr::Csum => OVS_TUNNEL_KEY_ATTR_CSUM,
            TunnelKeyAttr::TpSrc(_) => OVS_TUNNEL_KEY_ATTR_TP_SRC,
            TunnelKeyAttr::TpDst(_) => OVS_TUNNEL_KEY_ATTR_TP_DST,
            TunnelKeyAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            TunnelKeyAttr::Id(id) => buffer[..8].copy_from_slice(&id.to_be_bytes()),
            TunnelKeyAttr::Ipv4Src(a) | TunnelKeyAttr::Ipv4Dst(a) => {
                buffer[..4].copy_from_slice(&a.octets())
            }
            TunnelKeyAttr::Tos(v) | TunnelKeyAttr::Ttl(v) => buffer[0] = *v,
            TunnelKeyAttr::DontFragment | TunnelKeyAttr::Csum => {}
            TunnelKeyAttr::TpSrc(p) | TunnelKeyAttr::TpDst(p) => {
                buffer[..2].copy_from_slice(&p.to_be_bytes())
            }
            TunnelKeyAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for TunnelKeyAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            OVS_TUNNEL_KEY_ATTR_ID => TunnelKeyAttr::Id(parse_be64(v, "OVS_TUNNEL_KEY_ATTR_ID")?),
            OVS_TUNNEL_KEY_ATTR_IPV4_SRC => {
                TunnelKeyAttr::Ipv4Src(parse_ipv4(v, "OVS_TUNNEL_KEY_ATTR_IPV4_SRC")?)
            }
            OVS_TUNNEL_KEY_ATTR_IPV4_DST => {
                TunnelKeyAttr::Ipv4Dst(parse_ipv4(v, "OVS_TUNNEL_KEY_ATTR_IPV4_DST")?)
            }
            OVS_TUNNEL_KEY_ATTR_TOS => {
                TunnelKeyAttr::Tos(parse_u8(v).context("OVS_TUNNEL_KEY_ATTR_TOS")?)
            }
            OVS_TUNNEL_KEY_ATTR_TTL => {
                TunnelKeyAttr::Ttl(parse_u8(v).context("OVS_TUNNEL_KEY_ATTR_TTL")?)
            }
            OVS_TUNNEL_KEY_ATTR_DONT_FRAGMENT => {
                no_value(v, "OVS_TUNNEL_KEY_ATTR_DONT_FRAGMENT")?;
                TunnelKeyAttr::DontFragment
            }
            OVS_TUNNEL_KEY_ATTR_CSUM => {
                no_value(v, "OVS_TUNNEL_KEY_ATTR_CSUM")?;
                TunnelKeyAttr::Csum
            }
            OVS_TUNNEL_KEY_ATTR_TP_SRC => {
                TunnelKeyAttr::TpSrc(parse_u16_be(v).context("OVS_TUNNEL_KEY_ATTR_TP_SRC")?)
            }
            OVS_TUNNEL_KEY_ATTR_TP_DST => {
                TunnelKeyAttr::TpDst(parse_u16_be(v).context("OVS_TUNNEL_KEY_ATTR_TP_DST")?)
            }
            _ => TunnelKeyAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// One field of a flow key or mask (`OVS_KEY_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAttr {
    /// Packet priority.
    Priority(u32),
    /// The vport the packet came in on.
    InPort(u32),
    /// Ethernet source and destination (`struct ovs_key_ethernet`: source first).
    Ethernet {
        /// Source MAC.
        src: [u8; 6],
        /// Destination MAC.
        dst: [u8; 6],
    },
    /// Ethernet type (left out of a key: an 802.2 frame; left out of a mask: any type).
    EtherType(u16),
    /// Socket buffer mark.
    SkbMark(u32),
    /// The tunnel the packet arrived through.
    Tunnel(Vec<TunnelKeyAttr>),
    /// Datapath hash.
    DpHash(u32),
    /// Recirculation id.
    RecircId(u32),
    /// Any other field (IP, transport, conntrack, ...), kept verbatim.
    Other(DefaultNla),
}

impl Nla for KeyAttr {
    fn value_len(&self) -> usize {
        match self {
            KeyAttr::Priority(_)
            | KeyAttr::InPort(_)
            | KeyAttr::SkbMark(_)
            | KeyAttr::DpHash(_)
            | KeyAttr::RecircId(_) => 4,
            KeyAttr::Ethernet { .. } => 12,
            KeyAttr::EtherType(_) => 2,
            KeyAttr::Tunnel(t) => t.as_slice().buffer_len(),
            KeyAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            KeyAttr::Priority(_) => OVS_KEY_ATTR_PRIORITY,
            KeyAttr::InPort(_) => OVS_KEY_ATTR_IN_PORT,
            KeyAttr::Ethernet { .. } => OVS_KEY_ATTR_ETHERNET,
            KeyAttr::EtherType(_) => OVS_KEY_ATTR_ETHERTYPE,
            KeyAttr::SkbMark(_) => OVS_KEY_ATTR_SKB_MARK,
            KeyAttr::Tunnel(_) => OVS_KEY_ATTR_TUNNEL,
            KeyAttr::DpHash(_) => OVS_KEY_ATTR_DP_HASH,
            KeyAttr::RecircId(_) => OVS_KEY_ATTR_RECIRC_ID,
            KeyAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            KeyAttr::Priority(v)
            | KeyAttr::InPort(v)
            | KeyAttr::SkbMark(v)
            | KeyAttr::DpHash(v)
            | KeyAttr::RecircId(v) => buffer[..4].copy_from_slice(&v.to_ne_bytes()),
            KeyAttr::Ethernet { src, dst } => {
                buffer[..6].copy_from_slice(src);
                buffer[6..12].copy_from_slice(dst);
            }
            KeyAttr::EtherType(t) => buffer[..2].copy_from_slice(&t.to_be_bytes()),
            KeyAttr::Tunnel(t) => t.as_slice().emit(buffer),
            KeyAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for KeyAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            OVS_KEY_ATTR_PRIORITY => {
                KeyAttr::Priority(parse_u32(v).context("OVS_KEY_ATTR_PRIORITY")?)
            }
            OVS_KEY_ATTR_IN_PORT => KeyAttr::InPort(parse_u32(v).context("OVS_KEY_ATTR_IN_PORT")?),
            OVS_KEY_ATTR_ETHERNET => {
                let b = fixed::<12>(v, "OVS_KEY_ATTR_ETHERNET")?;
                let mut src = [0u8; 6];
                let mut dst = [0u8; 6];
                src.copy_from_slice(&b[..6]);
                dst.copy_from_slice(&b[6..]);
                KeyAttr::Ethernet { src, dst }
            }
            OVS_KEY_ATTR_ETHERTYPE => {
                KeyAttr::EtherType(parse_u16_be(v).context("OVS_KEY_ATTR_ETHERTYPE")?)
            }
            OVS_KEY_ATTR_SKB_MARK => {
                KeyAttr::SkbMark(parse_u32(v).context("OVS_KEY_ATTR_SKB_MARK")?)
            }
            OVS_KEY_ATTR_TUNNEL => {
                KeyAttr::Tunnel(parse_nlas::<TunnelKeyAttr>(v).context("OVS_KEY_ATTR_TUNNEL")?)
            }
            OVS_KEY_ATTR_DP_HASH => KeyAttr::DpHash(parse_u32(v).context("OVS_KEY_ATTR_DP_HASH")?),
            OVS_KEY_ATTR_RECIRC_ID => {
                KeyAttr::RecircId(parse_u32(v).context("OVS_KEY_ATTR_RECIRC_ID")?)
            }
            _ => KeyAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// One action (`OVS_ACTION_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the packet out of this vport.
    Output(u32),
    /// Hand the packet to the netlink port `pid` (an `OVS_PACKET_CMD_ACTION` upcall).
    Userspace {
        /// Netlink port id.
        pid: u32,
    },
    /// Set the tunnel the packet leaves through (a set action holding a tunnel key).
    SetTunnel(Vec<TunnelKeyAttr>),
    /// Any other action, kept verbatim.
    Other(DefaultNla),
}

/// `OVS_USERSPACE_ATTR_PID` inside a userspace action.
struct UserspacePid(u32);

impl Nla for UserspacePid {
    fn value_len(&self) -> usize {
        4
    }
    fn kind(&self) -> u16 {
        OVS_USERSPACE_ATTR_PID
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        buffer[..4].copy_from_slice(&self.0.to_ne_bytes());
    }
}

/// The tunnel key of a set action: its one nested key attribute, emitted from a borrow.
struct TunnelKeyRef<'a>(&'a [TunnelKeyAttr]);

impl Nla for TunnelKeyRef<'_> {
    fn value_len(&self) -> usize {
        self.0.buffer_len()
    }
    fn kind(&self) -> u16 {
        OVS_KEY_ATTR_TUNNEL
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        self.0.emit(buffer)
    }
}

impl Nla for Action {
    fn value_len(&self) -> usize {
        match self {
            Action::Output(_) => 4,
            Action::Userspace { pid } => [UserspacePid(*pid)].as_slice().buffer_len(),
            Action::SetTunnel(t) => [TunnelKeyRef(t)].as_slice().buffer_len(),
            Action::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Action::Output(_) => OVS_ACTION_ATTR_OUTPUT,
            Action::Userspace { .. } => OVS_ACTION_ATTR_USERSPACE,
            Action::SetTunnel(_) => OVS_ACTION_ATTR_SET,
            Action::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Action::Output(port) => buffer[..4].copy_from_slice(&port.to_ne_bytes()),
            Action::Userspace { pid } => [UserspacePid(*pid)].as_slice().emit(buffer),
            Action::SetTunnel(t) => [TunnelKeyRef(t)].as_slice().emit(buffer),
            Action::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for Action {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            OVS_ACTION_ATTR_OUTPUT => {
                Action::Output(parse_u32(v).context("OVS_ACTION_ATTR_OUTPUT")?)
            }
            OVS_ACTION_ATTR_SET => {
                // A set action holds exactly one key attribute; only a tunnel is ours.
                match parse_nlas::<KeyAttr>(v)
                    .context("OVS_ACTION_ATTR_SET")?
                    .as_slice()
                {
                    [KeyAttr::Tunnel(t)] => Action::SetTunnel(t.clone()),
                    _ => Action::Other(DefaultNla::parse(buf)?),
                }
            }
            OVS_ACTION_ATTR_USERSPACE => {
                let pid = netlink_packet_core::NlasIterator::new(v)
                    .filter_map(Result::ok)
                    .find(|n| n.kind() == OVS_USERSPACE_ATTR_PID)
                    .map(|n| parse_u32(n.value()))
                    .transpose()
                    .context("OVS_USERSPACE_ATTR_PID")?;
                match pid {
                    Some(pid) if v.len() == 8 => Action::Userspace { pid },
                    _ => Action::Other(DefaultNla::parse(buf)?),
                }
            }
            _ => Action::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// A flow's counters (`struct ovs_flow_stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowStats {
    /// Packets that matched.
    pub packets: u64,
    /// Bytes of them.
    pub bytes: u64,
}

/// A flow attribute (`OVS_FLOW_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowAttr {
    /// What the flow matches (the fields its mask selects).
    Key(Vec<KeyAttr>),
    /// Which bits of the key count (absent: every field given in the key, exactly).
    Mask(Vec<KeyAttr>),
    /// What happens to a matching packet (empty: dropped).
    Actions(Vec<Action>),
    /// Counters (read only).
    Stats(FlowStats),
    /// TCP flags seen (read only).
    TcpFlags(u8),
    /// When it last matched, in milliseconds of the kernel's monotonic clock (read only).
    Used(u64),
    /// Reset the counters (a flag, on `Set`).
    Clear,
    /// Any other attribute, kept verbatim.
    Other(DefaultNla),
}

impl Nla for FlowAttr {
    fn value_len(&self) -> usize {
        match self {
            FlowAttr::Key(k) | FlowAttr::Mask(k) => k.as_slice().buffer_len(),
            FlowAttr::Actions(a) => a.as_slice().buffer_len(),
            FlowAttr::Stats(_) => 16,
            FlowAttr::TcpFlags(_) => 1,
            FlowAttr::Used(_) => 8,
            FlowAttr::Clear => 0,
            FlowAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            FlowAttr::Key(_) => OVS_FLOW_ATTR_KEY,
            FlowAttr::Mask(_) => OVS_FLOW_ATTR_MASK,
            FlowAttr::Actions(_) => OVS_FLOW_ATTR_ACTIONS,
            FlowAttr::Stats(_) => OVS_FLOW_ATTR_STATS,
            FlowAttr::TcpFlags(_) => OVS_FLOW_ATTR_TCP_FLAGS,
            FlowAttr::Used(_) => OVS_FLOW_ATTR_USED,
            FlowAttr::Clear => OVS_FLOW_ATTR_CLEAR,
            FlowAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            FlowAttr::Key(k) | FlowAttr::Mask(k) => k.as_slice().emit(buffer),
            FlowAttr::Actions(a) => a.as_slice().emit(buffer),
            FlowAttr::Stats(s) => {
                buffer[..8].copy_from_slice(&s.packets.to_ne_bytes());
                buffer[8..16].copy_from_slice(&s.bytes.to_ne_bytes());
            }
            FlowAttr::TcpFlags(f) => buffer[0] = *f,
            FlowAttr::Used(ms) => buffer[..8].copy_from_slice(&ms.to_ne_bytes()),
            FlowAttr::Clear => {}
            FlowAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for FlowAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            OVS_FLOW_ATTR_KEY => FlowAttr::Key(parse_nlas(v).context("OVS_FLOW_ATTR_KEY")?),
            OVS_FLOW_ATTR_MASK => FlowAttr::Mask(parse_nlas(v).context("OVS_FLOW_ATTR_MASK")?),
            OVS_FLOW_ATTR_ACTIONS => {
                FlowAttr::Actions(parse_nlas(v).context("OVS_FLOW_ATTR_ACTIONS")?)
            }
            OVS_FLOW_ATTR_STATS => {
                let b = fixed::<16>(v, "OVS_FLOW_ATTR_STATS")?;
                FlowAttr::Stats(FlowStats {
                    packets: parse_u64(&b[..8]).context("n_packets")?,
                    bytes: parse_u64(&b[8..]).context("n_bytes")?,
                })
            }
            OVS_FLOW_ATTR_TCP_FLAGS => {
                FlowAttr::TcpFlags(parse_u8(v).context("OVS_FLOW_ATTR_TCP_FLAGS")?)
            }
            OVS_FLOW_ATTR_USED => FlowAttr::Used(parse_u64(v).context("OVS_FLOW_ATTR_USED")?),
            OVS_FLOW_ATTR_CLEAR => {
                no_value(v, "OVS_FLOW_ATTR_CLEAR")?;
                FlowAttr::Clear
            }
            _ => FlowAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

super::wire::ovs_message!(
    /// A message of the `ovs_flow` family (`OVS_FLOW_CMD_*`: the datapath's command numbers).
    FlowMessage,
    OvsCmd,
    FlowAttr,
    OVS_FLOW_FAMILY,
    OVS_FLOW_VERSION,
    "ovs_flow attributes"
);

/// `OVS_PACKET_CMD_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketCmd {
    /// A packet that matched no flow, handed up (kernel to user).
    Miss,
    /// A packet handed up by a userspace action (kernel to user).
    Action,
    /// Run actions on a packet (user to kernel).
    Execute,
    /// A number this code does not know.
    Other(u8),
}

impl From<PacketCmd> for u8 {
    fn from(cmd: PacketCmd) -> u8 {
        match cmd {
            PacketCmd::Miss => 1,
            PacketCmd::Action => 2,
            PacketCmd::Execute => 3,
            PacketCmd::Other(n) => n,
        }
    }
}

impl From<u8> for PacketCmd {
    fn from(n: u8) -> Self {
        match n {
            1 => PacketCmd::Miss,
            2 => PacketCmd::Action,
            3 => PacketCmd::Execute,
            n => PacketCmd::Other(n),
        }
    }
}

/// A packet attribute (`OVS_PACKET_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacketAttr {
    /// The frame, from its Ethernet header on.
    Packet(Vec<u8>),
    /// Its flow key (metadata such as the in-port, then what the kernel read of the frame).
    Key(Vec<KeyAttr>),
    /// Actions to execute.
    Actions(Vec<Action>),
    /// Data a userspace action attached.
    Userdata(Vec<u8>),
    /// Largest fragment received, when the kernel reassembled the packet.
    Mru(u16),
    /// The packet's original length, when the kernel truncated what it handed up.
    Len(u32),
    /// Any other attribute, kept verbatim.
    Other(DefaultNla),
}

impl Nla for PacketAttr {
    fn value_len(&self) -> usize {
        match self {
            PacketAttr::Packet(p) | PacketAttr::Userdata(p) => p.len(),
            PacketAttr::Key(k) => k.as_slice().buffer_len(),
            PacketAttr::Actions(a) => a.as_slice().buffer_len(),
            PacketAttr::Mru(_) => 2,
            PacketAttr::Len(_) => 4,
            PacketAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            PacketAttr::Packet(_) => OVS_PACKET_ATTR_PACKET,
            PacketAttr::Key(_) => OVS_PACKET_ATTR_KEY,
            PacketAttr::Actions(_) => OVS_PACKET_ATTR_ACTIONS,
            PacketAttr::Userdata(_) => OVS_PACKET_ATTR_USERDATA,
            PacketAttr::Mru(_) => OVS_PACKET_ATTR_MRU,
            PacketAttr::Len(_) => OVS_PACKET_ATTR_LEN,
            PacketAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            PacketAttr::Packet(p) | PacketAttr::Userdata(p) => buffer[..p.len()].copy_from_slice(p),
            PacketAttr::Key(k) => k.as_slice().emit(buffer),
            PacketAttr::Actions(a) => a.as_slice().emit(buffer),
            PacketAttr::Mru(m) => buffer[..2].copy_from_slice(&m.to_ne_bytes()),
            PacketAttr::Len(l) => buffer[..4].copy_from_slice(&l.to_ne_bytes()),
            PacketAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for PacketAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            OVS_PACKET_ATTR_PACKET => PacketAttr::Packet(v.to_vec()),
            OVS_PACKET_ATTR_USERDATA => PacketAttr::Userdata(v.to_vec()),
            OVS_PACKET_ATTR_KEY => PacketAttr::Key(parse_nlas(v).context("OVS_PACKET_ATTR_KEY")?),
            OVS_PACKET_ATTR_ACTIONS => {
                PacketAttr::Actions(parse_nlas(v).context("OVS_PACKET_ATTR_ACTIONS")?)
            }
            OVS_PACKET_ATTR_MRU => {
                PacketAttr::Mru(netlink_packet_core::parse_u16(v).context("OVS_PACKET_ATTR_MRU")?)
            }
            OVS_PACKET_ATTR_LEN => PacketAttr::Len(parse_u32(v).context("OVS_PACKET_ATTR_LEN")?),
            _ => PacketAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

super::wire::ovs_message!(
    /// A message of the `ovs_packet` family: an upcall from the kernel, or a packet to execute.
    PacketMessage,
    PacketCmd,
    PacketAttr,
    OVS_PACKET_FAMILY,
    OVS_PACKET_VERSION,
    "ovs_packet attributes"
);

impl PacketMessage {
    /// The frame carried.
    pub fn packet(&self) -> Option<&[u8]> {
        self.attrs.iter().find_map(|a| match a {
            PacketAttr::Packet(p) => Some(p.as_slice()),
            _ => None,
        })
    }

    /// The flow key carried.
    pub fn key(&self) -> &[KeyAttr] {
        self.attrs
            .iter()
            .find_map(|a| match a {
                PacketAttr::Key(k) => Some(k.as_slice()),
                _ => None,
            })
            .unwrap_or(&[])
    }
}

/// Helpers over a key.
pub trait KeyExt {
    /// The in-port, if the key has one.
    fn in_port(&self) -> Option<u32>;
    /// Ethernet source and destination.
    fn ethernet(&self) -> Option<([u8; 6], [u8; 6])>;
    /// The tunnel key's fields.
    fn tunnel(&self) -> Option<&[TunnelKeyAttr]>;
}

impl KeyExt for [KeyAttr] {
    fn in_port(&self) -> Option<u32> {
        self.iter().find_map(|a| match a {
            KeyAttr::InPort(p) => Some(*p),
            _ => None,
        })
    }

    fn ethernet(&self) -> Option<([u8; 6], [u8; 6])> {
        self.iter().find_map(|a| match a {
            KeyAttr::Ethernet { src, dst } => Some((*src, *dst)),
            _ => None,
        })
    }

    fn tunnel(&self) -> Option<&[TunnelKeyAttr]> {
        self.iter().find_map(|a| match a {
            KeyAttr::Tunnel(t) => Some(t.as_slice()),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odp::test_bytes::{emit, hex};
    use netlink_packet_core::ParseableParametrized;
    use netlink_packet_generic::GenlHeader;

    fn genl(cmd: u8, version: u8) -> GenlHeader {
        GenlHeader { cmd, version }
    }

    /// The overlay's egress flow: from the bridge port to one peer's container MAC, out
    /// through vxlan with the peer's address and the VNI naming both ends.
    fn egress_flow() -> FlowMessage {
        FlowMessage {
            cmd: OvsCmd::New,
            dp_ifindex: 7,
            attrs: vec![
                FlowAttr::Key(vec![
                    KeyAttr::InPort(1),
                    KeyAttr::Ethernet {
                        src: [2, 0, 0, 0, 0, 1],
                        dst: [2, 0, 0, 0, 0, 2],
                    },
                ]),
                FlowAttr::Mask(vec![
                    KeyAttr::InPort(u32::MAX),
                    KeyAttr::Ethernet {
                        src: [0; 6],
                        dst: [0xff; 6],
                    },
                ]),
                FlowAttr::Actions(vec![
                    Action::SetTunnel(vec![
                        TunnelKeyAttr::Id(0x2001),
                        TunnelKeyAttr::Ipv4Dst(Ipv4Addr::new(198, 18, 0, 2)),
                        TunnelKeyAttr::Ttl(64),
                    ]),
                    Action::Output(2),
                ]),
            ],
        }
    }

    #[test]
    fn an_egress_flow_emits_the_uapi_layout() {
        insta::assert_snapshot!(hex(&emit(&egress_flow())));
    }

    #[test]
    fn an_egress_flow_parses_back() {
        let msg = egress_flow();
        let back =
            FlowMessage::parse_with_param(&emit(&msg), genl(1, OVS_FLOW_VERSION)).expect("parses");
        assert_eq!(back, msg);
    }

    #[test]
    fn a_miss_keeps_what_it_does_not_know() {
        let msg = PacketMessage {
            cmd: PacketCmd::Miss,
            dp_ifindex: 7,
            attrs: vec![
                PacketAttr::Packet(vec![0xff; 60]),
                PacketAttr::Key(vec![
                    KeyAttr::RecircId(0),
                    KeyAttr::DpHash(0),
                    KeyAttr::Priority(0),
                    KeyAttr::InPort(3),
                    KeyAttr::SkbMark(0),
                    KeyAttr::Tunnel(vec![
                        TunnelKeyAttr::Id(0x2001),
                        TunnelKeyAttr::Ipv4Src(Ipv4Addr::new(198, 18, 0, 2)),
                        TunnelKeyAttr::Ipv4Dst(Ipv4Addr::new(198, 18, 0, 1)),
                        TunnelKeyAttr::Ttl(64),
                        TunnelKeyAttr::DontFragment,
                        TunnelKeyAttr::TpSrc(40000),
                        TunnelKeyAttr::TpDst(6784),
                    ]),
                    KeyAttr::Ethernet {
                        src: [2, 0, 0, 0, 0, 2],
                        dst: [2, 0, 0, 0, 0, 1],
                    },
                    KeyAttr::EtherType(0x0800),
                    // OVS_KEY_ATTR_IPV4: an attribute the overlay does not read.
                    KeyAttr::Other(DefaultNla::new(
                        7,
                        vec![198, 19, 0, 2, 198, 19, 0, 1, 1, 0, 64, 0],
                    )),
                ]),
                PacketAttr::Mru(1500),
            ],
        };
        let back = PacketMessage::parse_with_param(&emit(&msg), genl(1, OVS_PACKET_VERSION))
            .expect("parses");
        assert_eq!(back.key().in_port(), Some(3));
        assert_eq!(back.key().tunnel().map(<[_]>::len), Some(7));
        assert_eq!(back, msg);
    }

    #[test]
    fn malformed_fields_are_errors_naming_them() {
        // OVS_KEY_ATTR_ETHERNET of 11 bytes inside a flow key.
        let mut bad = emit(&FlowMessage {
            cmd: OvsCmd::New,
            dp_ifindex: 1,
            attrs: vec![FlowAttr::Key(vec![KeyAttr::Other(DefaultNla::new(
                OVS_KEY_ATTR_ETHERNET,
                vec![0; 11],
            ))])],
        });
        let err = FlowMessage::parse_with_param(&bad, genl(1, OVS_FLOW_VERSION))
            .expect_err("11-byte Ethernet key accepted");
        assert!(
            format!("{err:?}").contains("OVS_KEY_ATTR_ETHERNET"),
            "{err:?}"
        );
        bad.truncate(2);
        assert!(FlowMessage::parse_with_param(&bad, genl(1, OVS_FLOW_VERSION)).is_err());
    }
}
