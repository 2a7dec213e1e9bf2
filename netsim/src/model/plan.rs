//! The resolved plan of a lab: every namespace, interface, address, MTU and route, with every
//! name already fitted to the kernel's limits. This is the contract between the pure model
//! (which produces it from a topology file) and the lifecycle engine (which applies it through
//! the kernel adapters). Nothing here touches the kernel.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// Default MTU of a link when the topology does not set one.
pub const DEFAULT_MTU: u32 = 1500;

/// Smallest MTU a link may have (IPv4's minimum datagram size).
pub const MIN_MTU: u32 = 68;

/// Largest MTU a link may have (what veth and bridge accept).
pub const MAX_MTU: u32 = 65535;

/// A lab ready to be applied: the output of `model::plan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The topology's name (`[lab] name`, or the file's stem).
    pub name: String,
    /// Every node, each one network namespace, in a stable order: switches, routers, hosts,
    /// then containers (each group in file order).
    pub nodes: Vec<NodePlan>,
    /// Every veth pair joining two nodes.
    pub links: Vec<LinkPlan>,
    /// The overlay section, reserved for the overlay issue; carried through unchanged.
    pub overlay: Option<OverlayPlan>,
    /// Declarative assertions (`[[expect]]`) checked after `up`, in file order.
    pub expects: Vec<Expectation>,
    /// Named steps (`[[step]]`) run after the `[[expect]]` checks, in file order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepPlan>,
    /// Seed of every random choice shaping makes (loss, jitter, reordering...), so runs
    /// repeat: `[lab] seed`, default 0.
    #[serde(default)]
    pub seed: u64,
    /// Kernel features the file needs (`[lab] needs`, names as `netsim doctor` prints them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
}

pub use super::expectation::{
    Above, Bound, DatapathWant, Expectation, Limit, Metric, MtuBound, ReachProto, Target,
};
pub use super::step::{ImpairPlan, StepAction, StepPlan};

/// What a node is; it decides how the engine sets it up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeKind {
    /// An end host: where an overlay router will run.
    Host,
    /// A host that forwards IPv4 between its interfaces.
    Router,
    /// A Linux bridge in a namespace of its own; its ports are the node's interfaces.
    Switch,
    /// A container namespace belonging to a host; the overlay attaches it later.
    Container {
        /// The host this container runs on.
        host: String,
    },
}

/// One node: one network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    /// The node's name, unique in the lab (the namespace name is derived from it and the lab id).
    pub name: String,
    /// What the node is.
    pub kind: NodeKind,
    /// Interfaces in creation order (every one is one end of a [`LinkPlan`]).
    pub interfaces: Vec<IfacePlan>,
    /// Routes to install once addresses are up, in order.
    pub routes: Vec<RoutePlan>,
    /// Whether `net.ipv4.ip_forward` is set (routers: yes).
    pub forwarding: bool,
    /// For switches: the bridge every interface of this node is a port of.
    pub bridge: Option<BridgePlan>,
}

/// The Linux bridge inside a switch node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgePlan {
    /// The bridge device's name inside the switch namespace.
    pub name: String,
    /// The bridge's MTU (the smallest MTU of its ports).
    pub mtu: u32,
}

/// One interface of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfacePlan {
    /// Name inside the node's namespace, at most [`IFNAME_MAX`] bytes.
    pub name: String,
    /// MTU of the interface.
    pub mtu: u32,
    /// IPv4 addresses with their prefix (empty for switch ports).
    pub addrs: Vec<Ipv4Net>,
    /// The peer's node and interface, for reports and graphs.
    pub peer: Endpoint,
    /// Whether this interface is a port of the node's bridge.
    pub bridge_port: bool,
}

/// One end of a link: a node and an interface on it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// Node name.
    pub node: String,
    /// Interface name inside that node.
    pub iface: String,
}

/// A veth pair between two nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPlan {
    /// The `a` end (the first-named node in the topology file).
    pub a: Endpoint,
    /// The `b` end.
    pub b: Endpoint,
    /// MTU of both ends.
    pub mtu: u32,
    /// How the link is impaired, per direction; `None` for a plain veth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<LinkShape>,
}

/// The impairment of a link, one [`Shape`] per direction.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LinkShape {
    /// The named profile the shape started from, if any (e.g. `azure-d2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Traffic sent by the `a` end to the `b` end.
    pub a_to_b: Shape,
    /// Traffic sent by the `b` end to the `a` end.
    pub b_to_a: Shape,
}

/// How a delay varies around its mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// Uniform within delay ± jitter.
    #[default]
    Uniform,
    /// Normal with standard deviation `jitter`.
    Normal,
    /// Pareto (heavy tail) scaled by `jitter`.
    Pareto,
}

impl Distribution {
    /// The name used in topology files and plans.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Normal => "normal",
            Distribution::Pareto => "pareto",
        }
    }
}

/// One direction of a link's impairment. Probabilities are in parts per million
/// (10 000 ppm = 1 %), so plans compare exactly.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Shape {
    /// Rate limit in bits per second (`None`: unlimited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_bps: Option<u64>,
    /// Added one-way delay, nanoseconds.
    pub delay_ns: u64,
    /// Variation of the delay, nanoseconds.
    pub jitter_ns: u64,
    /// How the delay varies.
    pub distribution: Distribution,
    /// Random loss, ppm.
    pub loss_ppm: u32,
    /// Correlation of each loss decision with the previous one, ppm.
    pub loss_correlation_ppm: u32,
    /// Share of packets sent at once instead of delayed (reordering them), ppm.
    pub reorder_ppm: u32,
    /// Share of packets duplicated, ppm.
    pub duplicate_ppm: u32,
    /// Share of packets with one bit flipped, ppm.
    pub corrupt_ppm: u32,
    /// Queue limit in packets (`None`: the backend's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl Shape {
    /// Whether this direction is impaired at all.
    pub fn is_clear(&self) -> bool {
        *self == Shape::default()
    }

    /// Whether anything beyond a rate limit and random loss is asked for: delay, jitter,
    /// reordering, duplication, corruption or correlated loss.
    pub fn needs_delay_line(&self) -> bool {
        self.delay_ns > 0
            || self.jitter_ns > 0
            || self.reorder_ppm > 0
            || self.duplicate_ppm > 0
            || self.corrupt_ppm > 0
            || self.loss_correlation_ppm > 0
    }
}

/// A static route in a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutePlan {
    /// Destination (0.0.0.0/0 for a default route).
    pub dst: Ipv4Net,
    /// Gateway, if any.
    pub via: Option<Ipv4Addr>,
    /// Output interface, if pinned.
    pub dev: Option<String>,
}

/// The overlay section (reserved: validated and carried, applied by the overlay issue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayPlan {
    /// The overlay address range (inside 198.19.0.0/16).
    pub range: Ipv4Net,
    /// Whether a password is set (the password itself is never rendered).
    pub encrypted: bool,
    /// Overlay MTU if fixed, `None` for automatic detection.
    pub mtu: Option<u32>,
    /// The password itself, handed to the routers; never serialized nor rendered.
    #[serde(skip)]
    pub password: Option<String>,
    /// Hosts whose router runs with another password (`None`: without one). Only the host
    /// names are serialized (as `other_password`) and rendered, never the passwords.
    #[serde(
        default,
        rename = "other_password",
        skip_deserializing,
        skip_serializing_if = "std::collections::BTreeMap::is_empty",
        serialize_with = "host_names_only"
    )]
    pub host_passwords: std::collections::BTreeMap<String, Option<String>>,
}

fn host_names_only<S: serde::Serializer>(
    passwords: &std::collections::BTreeMap<String, Option<String>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(passwords.keys())
}

impl Plan {
    /// Looks up a node by name.
    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Resolves a probe target written as `node`, `node:iface` or an IPv4 address to an
    /// address: a node's first address, or the interface's first address. The error says what
    /// exists instead.
    pub fn address_of(&self, target: &str) -> Result<Ipv4Addr, String> {
        if let Ok(addr) = target.parse::<Ipv4Addr>() {
            return Ok(addr);
        }
        let (name, iface) = match target.split_once(':') {
            Some((n, i)) => (n, Some(i)),
            None => (target, None),
        };
        let Some(node) = self.node(name) else {
            let known: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            return Err(format!(
                "no node {name:?} in lab {}; its nodes are: {}",
                self.name,
                known.join(", ")
            ));
        };
        let found = match iface {
            Some(iface) => {
                let Some(ifp) = node.interfaces.iter().find(|i| i.name == iface) else {
                    let names: Vec<&str> =
                        node.interfaces.iter().map(|i| i.name.as_str()).collect();
                    return Err(format!(
                        "{name} has no interface {iface:?}; its interfaces are: {}",
                        names.join(", ")
                    ));
                };
                ifp.addrs.first()
            }
            None => node.interfaces.iter().find_map(|i| i.addrs.first()),
        };
        found
            .map(|a| a.addr())
            .ok_or_else(|| format!("{target} has no address to probe; target a host or a router"))
    }
}
