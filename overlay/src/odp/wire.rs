//! `ovs_datapath` and `ovs_vport` messages: a family header (`struct ovs_header`) after the
//! generic netlink header, then attributes. Numbers follow `include/uapi/linux/openvswitch.h`.

use netlink_packet_core::{
    parse_i32, parse_string, parse_u16, parse_u32, DecodeError, DefaultNla, Emitable, ErrorContext,
    Nla, NlaBuffer, NlasIterator, Parseable,
};

/// The UDP port the overlay's vxlan vport listens on (Weave's, so field reports map 1:1).
pub const OVS_VXLAN_PORT: u16 = 6784;

/// Generic netlink family of datapath commands.
pub const OVS_DATAPATH_FAMILY: &str = "ovs_datapath";
/// Generic netlink family of vport commands.
pub const OVS_VPORT_FAMILY: &str = "ovs_vport";
/// Generic netlink family of flow commands.
pub const OVS_FLOW_FAMILY: &str = "ovs_flow";
/// Generic netlink family of packet (upcall and execute) commands.
pub const OVS_PACKET_FAMILY: &str = "ovs_packet";
/// `OVS_DATAPATH_VERSION`.
pub const OVS_DATAPATH_VERSION: u8 = 2;
/// `OVS_VPORT_VERSION`.
pub const OVS_VPORT_VERSION: u8 = 1;

/// Size of `struct ovs_header` (one `int dp_ifindex`).
pub const OVS_HEADER_LEN: usize = 4;

const OVS_DP_ATTR_NAME: u16 = 1;
const OVS_DP_ATTR_UPCALL_PID: u16 = 2;
const OVS_DP_ATTR_STATS: u16 = 3;
const OVS_DP_ATTR_USER_FEATURES: u16 = 5;
const OVS_DP_ATTR_MASKS_CACHE_SIZE: u16 = 7;
const OVS_DP_ATTR_PER_CPU_PIDS: u16 = 8;
const OVS_DP_ATTR_IFINDEX: u16 = 9;

const OVS_VPORT_ATTR_PORT_NO: u16 = 1;
const OVS_VPORT_ATTR_TYPE: u16 = 2;
const OVS_VPORT_ATTR_NAME: u16 = 3;
const OVS_VPORT_ATTR_OPTIONS: u16 = 4;
const OVS_VPORT_ATTR_UPCALL_PID: u16 = 5;
const OVS_VPORT_ATTR_IFINDEX: u16 = 8;
const OVS_VPORT_ATTR_NETNSID: u16 = 9;

const OVS_TUNNEL_ATTR_DST_PORT: u16 = 1;

/// Datapath feature: the kernel may hand up unaligned packets (`OVS_DP_F_UNALIGNED`).
pub const OVS_DP_F_UNALIGNED: u32 = 1 << 0;
/// Datapath feature: each vport carries its own upcall port ids (`OVS_DP_F_VPORT_PIDS`).
pub const OVS_DP_F_VPORT_PIDS: u32 = 1 << 1;
/// Datapath feature: misses go to the upcall port ids of the CPU they happen on
/// (`OVS_DP_ATTR_PER_CPU_PIDS`, indexed modulo their number) instead of the vport's
/// (`OVS_DP_F_DISPATCH_UPCALL_PER_CPU`).
pub const OVS_DP_F_DISPATCH_UPCALL_PER_CPU: u32 = 1 << 3;

/// Commands shared by both families (`OVS_DP_CMD_*`, `OVS_VPORT_CMD_*`: same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OvsCmd {
    /// Create.
    New,
    /// Delete.
    Del,
    /// Read (or dump).
    Get,
    /// Change.
    Set,
    /// A number this code does not know.
    Other(u8),
}

impl From<OvsCmd> for u8 {
    fn from(cmd: OvsCmd) -> u8 {
        match cmd {
            OvsCmd::New => 1,
            OvsCmd::Del => 2,
            OvsCmd::Get => 3,
            OvsCmd::Set => 4,
            OvsCmd::Other(n) => n,
        }
    }
}

impl From<u8> for OvsCmd {
    fn from(n: u8) -> Self {
        match n {
            1 => OvsCmd::New,
            2 => OvsCmd::Del,
            3 => OvsCmd::Get,
            4 => OvsCmd::Set,
            n => OvsCmd::Other(n),
        }
    }
}

/// Datapath statistics (`struct ovs_dp_stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DpStats {
    /// Packets that matched a flow.
    pub hit: u64,
    /// Packets that matched no flow (sent up).
    pub missed: u64,
    /// Packets lost on the way up.
    pub lost: u64,
    /// Flows installed.
    pub flows: u64,
}

/// A datapath attribute (`OVS_DP_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DpAttr {
    /// Datapath name (its internal port's device name).
    Name(String),
    /// Netlink port id that receives upcalls (0: none).
    UpcallPid(u32),
    /// Statistics (read only).
    Stats(DpStats),
    /// `OVS_DP_F_*` feature bits.
    UserFeatures(u32),
    /// Size of the masks cache.
    MasksCacheSize(u32),
    /// Upcall port ids per CPU (CPU `n` uses entry `n` modulo their number).
    PerCpuPids(Vec<u32>),
    /// Interface index of the datapath's internal port.
    IfIndex(u32),
    /// Any other attribute, kept verbatim.
    Other(DefaultNla),
}

impl Nla for DpAttr {
    fn value_len(&self) -> usize {
        match self {
            DpAttr::Name(s) => s.len() + 1,
            DpAttr::Stats(_) => 32,
            DpAttr::PerCpuPids(p) => 4 * p.len(),
            DpAttr::UpcallPid(_)
            | DpAttr::UserFeatures(_)
            | DpAttr::MasksCacheSize(_)
            | DpAttr::IfIndex(_) => 4,
            DpAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            DpAttr::Name(_) => OVS_DP_ATTR_NAME,
            DpAttr::UpcallPid(_) => OVS_DP_ATTR_UPCALL_PID,
            DpAttr::Stats(_) => OVS_DP_ATTR_STATS,
            DpAttr::UserFeatures(_) => OVS_DP_ATTR_USER_FEATURES,
            DpAttr::MasksCacheSize(_) => OVS_DP_ATTR_MASKS_CACHE_SIZE,
            DpAttr::PerCpuPids(_) => OVS_DP_ATTR_PER_CPU_PIDS,
            DpAttr::IfIndex(_) => OVS_DP_ATTR_IFINDEX,
            DpAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            DpAttr::Name(s) => emit_str(buffer, s),
            DpAttr::Stats(s) => {
                for (i, v) in [s.hit, s.missed, s.lost, s.flows].iter().enumerate() {
                    buffer[i * 8..i * 8 + 8].copy_from_slice(&v.to_ne_bytes());
                }
            }
            DpAttr::PerCpuPids(p) => {
                for (i, v) in p.iter().enumerate() {
                    buffer[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
                }
            }
            DpAttr::UpcallPid(v)
            | DpAttr::UserFeatures(v)
            | DpAttr::MasksCacheSize(v)
            | DpAttr::IfIndex(v) => buffer[..4].copy_from_slice(&v.to_ne_bytes()),
            DpAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DpAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            OVS_DP_ATTR_NAME => DpAttr::Name(parse_string(v).context("OVS_DP_ATTR_NAME")?),
            OVS_DP_ATTR_UPCALL_PID => {
                DpAttr::UpcallPid(parse_u32(v).context("OVS_DP_ATTR_UPCALL_PID")?)
            }
            OVS_DP_ATTR_STATS => {
                if v.len() < 32 {
                    return Err(DecodeError::buffer_too_small(v.len(), 32));
                }
                let word = |i: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&v[i * 8..i * 8 + 8]);
                    u64::from_ne_bytes(b)
                };
                DpAttr::Stats(DpStats {
                    hit: word(0),
                    missed: word(1),
                    lost: word(2),
                    flows: word(3),
                })
            }
            OVS_DP_ATTR_USER_FEATURES => {
                DpAttr::UserFeatures(parse_u32(v).context("OVS_DP_ATTR_USER_FEATURES")?)
            }
            OVS_DP_ATTR_MASKS_CACHE_SIZE => {
                DpAttr::MasksCacheSize(parse_u32(v).context("OVS_DP_ATTR_MASKS_CACHE_SIZE")?)
            }
            OVS_DP_ATTR_PER_CPU_PIDS => DpAttr::PerCpuPids(
                v.chunks(4)
                    .map(|w| parse_u32(w).context("OVS_DP_ATTR_PER_CPU_PIDS"))
                    .collect::<Result<_, _>>()?,
            ),
            OVS_DP_ATTR_IFINDEX => DpAttr::IfIndex(parse_u32(v).context("OVS_DP_ATTR_IFINDEX")?),
            _ => DpAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// The kind of a vport (`enum ovs_vport_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VportType {
    /// An existing network device attached to the datapath.
    Netdev,
    /// The datapath's own internal device.
    Internal,
    /// A GRE tunnel.
    Gre,
    /// A VXLAN tunnel (flow-based: remote and key come from each packet's tunnel metadata).
    Vxlan,
    /// A Geneve tunnel.
    Geneve,
    /// A number this code does not know.
    Other(u32),
}

impl From<VportType> for u32 {
    fn from(t: VportType) -> u32 {
        match t {
            VportType::Netdev => 1,
            VportType::Internal => 2,
            VportType::Gre => 3,
            VportType::Vxlan => 4,
            VportType::Geneve => 5,
            VportType::Other(n) => n,
        }
    }
}

impl From<u32> for VportType {
    fn from(n: u32) -> Self {
        match n {
            1 => VportType::Netdev,
            2 => VportType::Internal,
            3 => VportType::Gre,
            4 => VportType::Vxlan,
            5 => VportType::Geneve,
            n => VportType::Other(n),
        }
    }
}

/// A tunnel vport option (`OVS_TUNNEL_ATTR_*`, nested in `OVS_VPORT_ATTR_OPTIONS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelAttr {
    /// UDP destination port, in host byte order (the kernel converts it).
    DstPort(u16),
    /// Any other option, kept verbatim.
    Other(DefaultNla),
}

impl Nla for TunnelAttr {
    fn value_len(&self) -> usize {
        match self {
            TunnelAttr::DstPort(_) => 2,
            TunnelAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            TunnelAttr::DstPort(_) => OVS_TUNNEL_ATTR_DST_PORT,
            TunnelAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            TunnelAttr::DstPort(p) => buffer[..2].copy_from_slice(&p.to_ne_bytes()),
            TunnelAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for TunnelAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        Ok(match buf.kind() {
            OVS_TUNNEL_ATTR_DST_PORT => {
                TunnelAttr::DstPort(parse_u16(buf.value()).context("OVS_TUNNEL_ATTR_DST_PORT")?)
            }
            _ => TunnelAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// A vport attribute (`OVS_VPORT_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VportAttr {
    /// Port number in the datapath (0 is the datapath's internal port).
    PortNo(u32),
    /// Vport type.
    Type(VportType),
    /// Device name.
    Name(String),
    /// Type-specific options (tunnel options for tunnel vports).
    Options(Vec<TunnelAttr>),
    /// Netlink port ids that receive this vport's upcalls (0: none).
    UpcallPids(Vec<u32>),
    /// Interface index of the vport's device (read only).
    IfIndex(u32),
    /// Network namespace id of the device, relative to the reader (read only).
    NetnsId(i32),
    /// Any other attribute (e.g. statistics), kept verbatim.
    Other(DefaultNla),
}

impl Nla for VportAttr {
    fn value_len(&self) -> usize {
        match self {
            VportAttr::PortNo(_) | VportAttr::Type(_) | VportAttr::IfIndex(_) => 4,
            VportAttr::NetnsId(_) => 4,
            VportAttr::Name(s) => s.len() + 1,
            VportAttr::Options(opts) => opts.as_slice().buffer_len(),
            VportAttr::UpcallPids(pids) => pids.len() * 4,
            VportAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            VportAttr::PortNo(_) => OVS_VPORT_ATTR_PORT_NO,
            VportAttr::Type(_) => OVS_VPORT_ATTR_TYPE,
            VportAttr::Name(_) => OVS_VPORT_ATTR_NAME,
            VportAttr::Options(_) => OVS_VPORT_ATTR_OPTIONS,
            VportAttr::UpcallPids(_) => OVS_VPORT_ATTR_UPCALL_PID,
            VportAttr::IfIndex(_) => OVS_VPORT_ATTR_IFINDEX,
            VportAttr::NetnsId(_) => OVS_VPORT_ATTR_NETNSID,
            VportAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            VportAttr::PortNo(v) | VportAttr::IfIndex(v) => {
                buffer[..4].copy_from_slice(&v.to_ne_bytes())
            }
            VportAttr::Type(t) => buffer[..4].copy_from_slice(&u32::from(*t).to_ne_bytes()),
            VportAttr::NetnsId(v) => buffer[..4].copy_from_slice(&v.to_ne_bytes()),
            VportAttr::Name(s) => emit_str(buffer, s),
            VportAttr::Options(opts) => opts.as_slice().emit(buffer),
            VportAttr::UpcallPids(pids) => {
                for (i, pid) in pids.iter().enumerate() {
                    buffer[i * 4..i * 4 + 4].copy_from_slice(&pid.to_ne_bytes());
                }
            }
            VportAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for VportAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            OVS_VPORT_ATTR_PORT_NO => {
                VportAttr::PortNo(parse_u32(v).context("OVS_VPORT_ATTR_PORT_NO")?)
            }
            OVS_VPORT_ATTR_TYPE => {
                VportAttr::Type(parse_u32(v).context("OVS_VPORT_ATTR_TYPE")?.into())
            }
            OVS_VPORT_ATTR_NAME => VportAttr::Name(parse_string(v).context("OVS_VPORT_ATTR_NAME")?),
            OVS_VPORT_ATTR_OPTIONS => {
                VportAttr::Options(parse_nlas::<TunnelAttr>(v).context("OVS_VPORT_ATTR_OPTIONS")?)
            }
            OVS_VPORT_ATTR_UPCALL_PID => {
                if !v.len().is_multiple_of(4) {
                    return Err(DecodeError::from(format!(
                        "OVS_VPORT_ATTR_UPCALL_PID of {} bytes is not a u32 array",
                        v.len()
                    )));
                }
                VportAttr::UpcallPids(
                    v.chunks_exact(4)
                        .map(parse_u32)
                        .collect::<Result<_, _>>()
                        .context("OVS_VPORT_ATTR_UPCALL_PID")?,
                )
            }
            OVS_VPORT_ATTR_IFINDEX => {
                VportAttr::IfIndex(parse_u32(v).context("OVS_VPORT_ATTR_IFINDEX")?)
            }
            OVS_VPORT_ATTR_NETNSID => {
                VportAttr::NetnsId(parse_i32(v).context("OVS_VPORT_ATTR_NETNSID")?)
            }
            _ => VportAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

fn emit_str(buffer: &mut [u8], s: &str) {
    buffer[..s.len()].copy_from_slice(s.as_bytes());
    buffer[s.len()] = 0;
}

pub(crate) fn parse_nlas<A>(buf: &[u8]) -> Result<Vec<A>, DecodeError>
where
    A: for<'b> Parseable<NlaBuffer<&'b [u8]>>,
{
    NlasIterator::new(buf)
        .map(|nla| nla.and_then(|nla| A::parse(&nla)))
        .collect()
}

pub(crate) fn parse_ovs_header(buf: &[u8]) -> Result<i32, DecodeError> {
    if buf.len() < OVS_HEADER_LEN {
        return Err(DecodeError::buffer_too_small(buf.len(), OVS_HEADER_LEN));
    }
    parse_i32(&buf[..OVS_HEADER_LEN]).context("struct ovs_header")
}

/// Defines a message of one `ovs_*` family: `struct ovs_header` (the datapath's ifindex), then
/// attributes; the generic netlink command and the family's version around it. The four
/// families share this layout and differ only in their names, commands and attributes.
macro_rules! ovs_message {
    ($(#[$doc:meta])* $name:ident, $cmd:ty, $attr:ty, $family:expr, $version:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// Command.
            pub cmd: $cmd,
            /// `ovs_header.dp_ifindex`: the datapath addressed (0 to address a datapath by
            /// name).
            pub dp_ifindex: i32,
            /// Attributes.
            pub attrs: Vec<$attr>,
        }

        impl netlink_packet_generic::GenlFamily for $name {
            fn family_name() -> &'static str {
                $family
            }

            fn command(&self) -> u8 {
                self.cmd.into()
            }

            fn version(&self) -> u8 {
                $version
            }
        }

        impl netlink_packet_core::Emitable for $name {
            fn buffer_len(&self) -> usize {
                $crate::odp::wire::OVS_HEADER_LEN + self.attrs.as_slice().buffer_len()
            }

            fn emit(&self, buffer: &mut [u8]) {
                let at = $crate::odp::wire::OVS_HEADER_LEN;
                buffer[..at].copy_from_slice(&self.dp_ifindex.to_ne_bytes());
                self.attrs.as_slice().emit(&mut buffer[at..]);
            }
        }

        impl netlink_packet_core::ParseableParametrized<[u8], netlink_packet_generic::GenlHeader>
            for $name
        {
            fn parse_with_param(
                buf: &[u8],
                header: netlink_packet_generic::GenlHeader,
            ) -> Result<Self, netlink_packet_core::DecodeError> {
                use netlink_packet_core::ErrorContext;
                Ok(Self {
                    cmd: header.cmd.into(),
                    dp_ifindex: $crate::odp::wire::parse_ovs_header(buf)?,
                    attrs: $crate::odp::wire::parse_nlas::<$attr>(
                        &buf[$crate::odp::wire::OVS_HEADER_LEN..],
                    )
                    .context($what)?,
                })
            }
        }
    };
}
pub(crate) use ovs_message;

ovs_message!(
    /// A message of the `ovs_datapath` family.
    DatapathMessage,
    OvsCmd,
    DpAttr,
    OVS_DATAPATH_FAMILY,
    OVS_DATAPATH_VERSION,
    "ovs_datapath attributes"
);

ovs_message!(
    /// A message of the `ovs_vport` family.
    VportMessage,
    OvsCmd,
    VportAttr,
    OVS_VPORT_FAMILY,
    OVS_VPORT_VERSION,
    "ovs_vport attributes"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odp::test_bytes::{emit, hex};
    use netlink_packet_core::ParseableParametrized;
    use netlink_packet_generic::GenlHeader;

    fn genl(cmd: OvsCmd, version: u8) -> GenlHeader {
        GenlHeader {
            cmd: cmd.into(),
            version,
        }
    }

    // ovs_header { dp_ifindex: 0 }, NAME "ovl0", UPCALL_PID 0, USER_FEATURES UNALIGNED.
    const DP_NEW: [u8; 32] = [
        0x00, 0x00, 0x00, 0x00, // dp_ifindex
        0x09, 0x00, 0x01, 0x00, b'o', b'v', b'l', b'0', 0x00, 0x00, 0x00, 0x00, // NAME
        0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, // UPCALL_PID
        0x08, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00, // USER_FEATURES
    ];

    fn dp_new() -> DatapathMessage {
        DatapathMessage {
            cmd: OvsCmd::New,
            dp_ifindex: 0,
            attrs: vec![
                DpAttr::Name("ovl0".into()),
                DpAttr::UpcallPid(0),
                DpAttr::UserFeatures(OVS_DP_F_UNALIGNED),
            ],
        }
    }

    #[test]
    fn datapath_new_emits_the_uapi_layout() {
        assert_eq!(emit(&dp_new()), DP_NEW);
    }

    #[test]
    fn datapath_new_parses_back() {
        let parsed =
            DatapathMessage::parse_with_param(&DP_NEW[..], genl(OvsCmd::New, OVS_DATAPATH_VERSION));
        assert_eq!(parsed.map_err(|e| e.to_string()), Ok(dp_new()));
    }

    #[test]
    fn per_cpu_dispatch_emits_the_uapi_layout_and_parses_back() {
        let set = DatapathMessage {
            cmd: OvsCmd::Set,
            dp_ifindex: 5,
            attrs: vec![
                DpAttr::UserFeatures(OVS_DP_F_UNALIGNED | OVS_DP_F_DISPATCH_UPCALL_PER_CPU),
                DpAttr::PerCpuPids(vec![0x1234, 0x5678]),
            ],
        };
        let bytes = emit(&set);
        assert_eq!(
            bytes,
            [
                0x05, 0x00, 0x00, 0x00, // dp_ifindex
                0x08, 0x00, 0x05, 0x00, 0x09, 0x00, 0x00, 0x00, // USER_FEATURES
                0x0c, 0x00, 0x08, 0x00, 0x34, 0x12, 0x00, 0x00, 0x78, 0x56, 0x00,
                0x00, // PER_CPU_PIDS
            ]
        );
        let parsed =
            DatapathMessage::parse_with_param(&bytes[..], genl(OvsCmd::Set, OVS_DATAPATH_VERSION));
        assert_eq!(parsed.map_err(|e| e.to_string()), Ok(set));
    }

    fn vxlan_vport() -> VportMessage {
        VportMessage {
            cmd: OvsCmd::New,
            dp_ifindex: 7,
            attrs: vec![
                VportAttr::Name("vxlan-6784".into()),
                VportAttr::Type(VportType::Vxlan),
                VportAttr::UpcallPids(vec![0]),
                VportAttr::Options(vec![TunnelAttr::DstPort(OVS_VXLAN_PORT)]),
            ],
        }
    }

    #[test]
    fn vxlan_vport_encoding() {
        // Little-endian machines: dst port 6784 = 0x1a80 in host order.
        insta::assert_snapshot!(hex(&emit(&vxlan_vport())), @"07000000 0f000300 76786c61 6e2d3637 38340000 08000200 04000000 08000500 00000000 0c000400 06000100 801a0000");
    }

    #[test]
    fn vport_round_trip() {
        let msg = vxlan_vport();
        let bytes = emit(&msg);
        let parsed = VportMessage::parse_with_param(&bytes, genl(OvsCmd::New, OVS_VPORT_VERSION));
        assert_eq!(parsed.map_err(|e| e.to_string()), Ok(msg));
    }

    #[test]
    fn kernel_reply_with_unknown_attributes_keeps_them() {
        // A GET reply: PORT_NO 2, TYPE netdev, NAME "eth0", STATS (unknown here: kept raw).
        let mut bytes = vec![0x03, 0x00, 0x00, 0x00];
        bytes.extend_from_slice(&[0x08, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00]);
        bytes.extend_from_slice(&[0x08, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00]);
        bytes.extend_from_slice(&[0x09, 0x00, 0x03, 0x00, b'e', b't', b'h', b'0', 0, 0, 0, 0]);
        bytes.extend_from_slice(&[0x0c, 0x00, 0x06, 0x00, 1, 2, 3, 4, 5, 6, 7, 8]);
        let parsed = VportMessage::parse_with_param(&bytes, genl(OvsCmd::New, 1));
        let Ok(parsed) = parsed else {
            panic!("parse failed: {parsed:?}");
        };
        assert_eq!(parsed.dp_ifindex, 3);
        assert_eq!(
            parsed.attrs,
            vec![
                VportAttr::PortNo(2),
                VportAttr::Type(VportType::Netdev),
                VportAttr::Name("eth0".into()),
                VportAttr::Other(DefaultNla::new(6, vec![1, 2, 3, 4, 5, 6, 7, 8])),
            ]
        );
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        for len in 0..DP_NEW.len() {
            // Any prefix either parses (attribute boundary) or errors; none may panic.
            let _ = DatapathMessage::parse_with_param(&DP_NEW[..len], genl(OvsCmd::Get, 2));
        }
        assert!(DatapathMessage::parse_with_param(&[0, 0], genl(OvsCmd::Get, 2)).is_err());
    }

    #[test]
    fn commands_and_types_round_trip_through_numbers() {
        for n in 0..=8u8 {
            assert_eq!(u8::from(OvsCmd::from(n)), n);
        }
        for n in 0..=8u32 {
            assert_eq!(u32::from(VportType::from(n)), n);
        }
    }
}
