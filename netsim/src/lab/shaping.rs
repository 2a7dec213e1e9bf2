//! Link shaping and fault injection in a running lab: which backend shapes links, the runtime
//! state of every link (kept in the lab's state file so any process sees it), and how that
//! state becomes qdiscs, nftables rule sets and delay-line processes.
//!
//! Two backends, chosen per lab (see docs/shaping.md):
//! - `netem`: netem (delay, jitter, loss, reordering, duplication, corruption) with a tbf child
//!   (rate) as the root qdisc of the sending interface.
//! - `emulated`, for kernels without netem: tbf on the sending interface for the rate;
//!   random loss dropped by nftables at the receiving interface's ingress (a drop at the
//!   sender's egress would be reported back to the sender's stack, which is not loss); delay,
//!   jitter, reordering, duplication, corruption and correlated loss in netsim's delay line,
//!   a process in a hidden "wire" namespace the link passes through.
//!
//! Cuts, partitions and port blocks are nftables rules in the nodes concerned, regenerated as a
//! whole from the state each time, so healing restores exactly the configuration before: a cut
//! link keeps its addresses, routes and shaping because none of them is touched.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::error::LabError;
use super::state::ProcRecord;
use crate::caps::{Capabilities, Feature};
use crate::delay_line::DelayLineConfig;
use crate::kernel::rtnl::Netlink;
use crate::kernel::{nft, tc, KernelError};
use crate::model::plan::{Endpoint, LinkShape, Plan, Shape};
use crate::model::step::DropRule;
use crate::tools::{self, Tool};

/// Environment variable forcing a backend (`netem` or `emulated`) for labs brought up without
/// an explicit choice.
pub const BACKEND_ENV: &str = "NETSIM_SHAPING_BACKEND";

/// Index of the wire namespace's interface facing the link's `a` end.
pub const WIRE_A_INDEX: u32 = 10;
/// Index of the wire namespace's interface facing the link's `b` end.
pub const WIRE_B_INDEX: u32 = 11;

/// How a lab shapes its links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The kernel's netem qdisc with a tbf child.
    Netem,
    /// tbf, nftables and netsim's delay line (for kernels without netem).
    Emulated,
}

impl Backend {
    /// The name shown in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Netem => "netem",
            Backend::Emulated => "emulated",
        }
    }

    /// Parses a backend name.
    pub fn parse(text: &str) -> Option<Backend> {
        match text {
            "netem" => Some(Backend::Netem),
            "emulated" => Some(Backend::Emulated),
            _ => None,
        }
    }

    /// The backend a lab gets: `NETSIM_SHAPING_BACKEND` if set, else netem where the kernel
    /// has it, else emulated.
    pub fn choose(caps: &Capabilities) -> Backend {
        if let Some(b) = std::env::var(BACKEND_ENV)
            .ok()
            .and_then(|v| Backend::parse(&v))
        {
            return b;
        }
        if caps.has(Feature::Netem) {
            Backend::Netem
        } else {
            Backend::Emulated
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A transport protocol for [`Block`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The protocol's name (`tcp`, `udp`).
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// Parses `tcp` or `udp`.
    pub fn parse(text: &str) -> Option<Proto> {
        match text.to_ascii_lowercase().as_str() {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            _ => None,
        }
    }
}

/// Traffic of one protocol and port dropped in and out of one node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Block {
    /// The node.
    pub node: String,
    /// The protocol.
    pub proto: Proto,
    /// The port (source or destination).
    pub port: u16,
}

/// Packets of one kind dropped as they enter one node (see [`DropRule`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Filter {
    /// The node.
    pub node: String,
    /// What is dropped.
    pub rule: DropRule,
}

/// A [`DropRule`] as an nftables rule, matched at a node's ingress: fragments one by one, as
/// they arrive. (The netdev, bridge and inet families all take these payload matches; nft
/// adds the `meta protocol ip` dependency itself.)
pub fn drop_rule_nft(rule: DropRule) -> String {
    match rule {
        DropRule::FragNeeded => "icmp type destination-unreachable icmp code 4 drop".to_string(),
        DropRule::UdpOver { bytes } => format!("ip protocol udp ip length > {bytes} drop"),
    }
}

/// Two sets of nodes that cannot reach each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// One side.
    pub left: Vec<String>,
    /// The other side.
    pub right: Vec<String>,
}

/// The hidden namespace a shaped link passes through on the emulated backend, and its delay
/// line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wire {
    /// Namespace name.
    pub ns: String,
    /// The delay-line process, once started.
    pub pid: Option<ProcRecord>,
}

/// A link as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRuntime {
    /// The `a` end.
    pub a: Endpoint,
    /// The `b` end.
    pub b: Endpoint,
    /// Interface index of the `a` end in its node.
    pub a_index: u32,
    /// Interface index of the `b` end in its node.
    pub b_index: u32,
    /// MTU of the link.
    pub mtu: u32,
    /// The impairment now in force (`None`: none).
    pub shape: Option<LinkShape>,
    /// Whether the link is cut.
    pub cut: bool,
    /// The wire namespace, on the emulated backend for links declared with a shape.
    pub wire: Option<Wire>,
}

impl LinkRuntime {
    /// `a -- b`, for messages.
    pub fn label(&self) -> String {
        format!("{} -- {}", self.a.node, self.b.node)
    }
}

/// Everything about a lab's links and faults that the state file keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    /// The shaping backend.
    pub backend: Backend,
    /// Seed of the random choices.
    pub seed: u64,
    /// Every link, in plan order.
    pub links: Vec<LinkRuntime>,
    /// Every node's addresses (for partitions).
    pub addrs: BTreeMap<String, Vec<Ipv4Addr>>,
    /// Partitions in force.
    pub partitions: Vec<Partition>,
    /// Port blocks in force.
    pub blocks: Vec<Block>,
    /// Packet filters in force.
    #[serde(default)]
    pub drops: Vec<Filter>,
    /// Nodes that hold a netsim nftables rule set (so clearing one removes it).
    pub nft_nodes: Vec<String>,
    /// Switch nodes (their interfaces are bridge ports: ingress drops there use the bridge
    /// family when the netdev family is missing).
    #[serde(default)]
    pub switches: Vec<String>,
}

/// Whether a link declared with `shape` passes through a delay line on the emulated backend:
/// when a direction needs one, or when the shape is empty (`shape = {}`: a link kept ready to
/// be impaired at run time). Rate and random loss alone stay on the kernel's fast path.
pub fn wants_wire(shape: &LinkShape) -> bool {
    shape.a_to_b.needs_delay_line()
        || shape.b_to_a.needs_delay_line()
        || (shape.a_to_b.is_clear() && shape.b_to_a.is_clear() && shape.profile.is_none())
}

/// The namespace of the wire of link number `i` of lab `id` (`_` cannot start a node name, so
/// it never clashes with a node's).
pub fn wire_ns_name(id: &str, i: usize) -> String {
    format!("{}{id}-_w{i}", super::NETNS_PREFIX)
}

impl NetState {
    /// The initial state of a lab made from `plan`: links as planned, wires for shaped links
    /// on the emulated backend.
    pub(crate) fn from_plan(id: &str, plan: &Plan, backend: Backend) -> NetState {
        let index_of = |ep: &Endpoint| {
            plan.node(&ep.node)
                .and_then(|n| n.interfaces.iter().position(|i| i.name == ep.iface))
                .map(super::apply::iface_index)
                .unwrap_or(0)
        };
        let links = plan
            .links
            .iter()
            .enumerate()
            .map(|(i, l)| LinkRuntime {
                a: l.a.clone(),
                b: l.b.clone(),
                a_index: index_of(&l.a),
                b_index: index_of(&l.b),
                mtu: l.mtu,
                shape: l.shape.clone(),
                cut: false,
                wire: (backend == Backend::Emulated && l.shape.as_ref().is_some_and(wants_wire))
                    .then(|| Wire {
                        ns: wire_ns_name(id, i),
                        pid: None,
                    }),
            })
            .collect();
        let addrs = plan
            .nodes
            .iter()
            .map(|n| {
                let a = n
                    .interfaces
                    .iter()
                    .flat_map(|i| i.addrs.iter().map(|a| a.addr()))
                    .collect();
                (n.name.clone(), a)
            })
            .collect();
        NetState {
            backend,
            seed: plan.seed,
            links,
            addrs,
            partitions: Vec::new(),
            blocks: Vec::new(),
            drops: Vec::new(),
            nft_nodes: Vec::new(),
            switches: plan
                .nodes
                .iter()
                .filter(|n| n.bridge.is_some())
                .map(|n| n.name.clone())
                .collect(),
        }
    }

    /// The link between nodes `x` and `y` (either order), with whether `x` is its `a` end.
    pub fn find_link(&self, lab: &str, x: &str, y: &str) -> Result<(usize, bool), LabError> {
        let mut found = self.links.iter().enumerate().filter_map(|(i, l)| {
            if l.a.node == x && l.b.node == y {
                Some((i, true))
            } else if l.a.node == y && l.b.node == x {
                Some((i, false))
            } else {
                None
            }
        });
        let first = found.next();
        if found.next().is_some() {
            return Err(LabError::Request {
                lab: lab.to_string(),
                what: format!("nodes {x} and {y} are joined by more than one link"),
            });
        }
        first.ok_or_else(|| {
            let known: Vec<String> = self.links.iter().map(LinkRuntime::label).collect();
            LabError::Request {
                lab: lab.to_string(),
                what: format!(
                    "no link joins {x} and {y}; the links are: {}",
                    known.join(", ")
                ),
            }
        })
    }
}

fn unsupported(
    lab: &str,
    link: &LinkRuntime,
    property: &str,
    backend: Backend,
    reason: &str,
) -> LabError {
    LabError::Unsupported {
        lab: lab.to_string(),
        link: link.label(),
        property: property.to_string(),
        backend: backend.name().to_string(),
        reason: reason.to_string(),
    }
}

/// Checks that `backend` can give every property of `shape` on `link`; the error names the
/// link, the property and the backend.
pub fn check_shape(
    lab: &str,
    link: &LinkRuntime,
    shape: &LinkShape,
    backend: Backend,
    caps: &Capabilities,
) -> Result<(), LabError> {
    for dir in [&shape.a_to_b, &shape.b_to_a] {
        if dir.rate_bps.is_some() && !caps.has(Feature::Tbf) {
            return Err(unsupported(
                lab,
                link,
                "rate",
                backend,
                "the kernel has no tbf qdisc (see `netsim doctor`)",
            ));
        }
        match backend {
            Backend::Netem => {
                if !caps.has(Feature::Netem) {
                    return Err(unsupported(
                        lab,
                        link,
                        "any impairment",
                        backend,
                        "the kernel has no netem qdisc; use the emulated backend",
                    ));
                }
                if dir.distribution != crate::model::plan::Distribution::Uniform {
                    return Err(unsupported(
                        lab,
                        link,
                        &format!("distribution {}", dir.distribution.name()),
                        backend,
                        "netsim does not load netem distribution tables yet; use uniform \
                         jitter, or the emulated backend (NETSIM_SHAPING_BACKEND=emulated)",
                    ));
                }
            }
            Backend::Emulated => {
                if dir.loss_ppm > 0 && dir.loss_correlation_ppm == 0 && !caps.has(Feature::Nftables)
                {
                    return Err(unsupported(
                        lab,
                        link,
                        "loss",
                        backend,
                        "the kernel has no nftables (netdev ingress hook)",
                    ));
                }
                if dir.needs_delay_line() {
                    let what = dir_properties(dir);
                    if link.wire.is_none() {
                        return Err(unsupported(
                            lab,
                            link,
                            &what,
                            backend,
                            "only links declared with a delay (or another delay-line property) \
                             or with an empty `shape = {}` pass through a delay line; declare \
                             this [[link]] so to change it at run time",
                        ));
                    }
                    if !caps.has(Feature::AfPacket) {
                        return Err(unsupported(
                            lab,
                            link,
                            &what,
                            backend,
                            "the delay line needs AF_PACKET sockets, which this kernel lacks",
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The delay-line properties of a shape, for messages (`delay 10ms jitter 1ms uniform`).
fn dir_properties(dir: &Shape) -> String {
    let only = Shape {
        rate_bps: None,
        loss_ppm: if dir.loss_correlation_ppm > 0 {
            dir.loss_ppm
        } else {
            0
        },
        limit: None,
        ..dir.clone()
    };
    only.describe()
}

/// The netem qdisc for one direction.
fn netem_of(dir: &Shape) -> tc::Netem {
    let pct = |ppm: u32| f64::from(ppm) / 10_000.0;
    tc::Netem {
        delay: std::time::Duration::from_nanos(dir.delay_ns),
        jitter: std::time::Duration::from_nanos(dir.jitter_ns),
        loss_percent: pct(dir.loss_ppm),
        loss_correlation_percent: pct(dir.loss_correlation_ppm),
        reorder_percent: pct(dir.reorder_ppm),
        reorder_gap: 0,
        duplicate_percent: pct(dir.duplicate_ppm),
        corrupt_percent: pct(dir.corrupt_ppm),
        limit: dir.limit.unwrap_or(tc::DEFAULT_NETEM_LIMIT),
    }
}

/// How long tbf may queue: enough for a bandwidth-delay product at modest delays without
/// growing a bufferbloat of seconds.
const TBF_LATENCY: std::time::Duration = std::time::Duration::from_millis(50);

/// Installs (or removes) the qdiscs of one direction: `dir` shapes what `sender` sends from
/// interface `index` of namespace `ns`.
async fn apply_qdisc(
    lab: &str,
    backend: Backend,
    ns: &str,
    node: &str,
    index: u32,
    mtu: u32,
    dir: &Shape,
) -> Result<(), LabError> {
    let kerr = |cause: KernelError| LabError::Kernel {
        lab: lab.to_string(),
        node: Some(node.to_string()),
        cause: Box::new(cause),
    };
    let rt = tokio::runtime::Handle::current();
    let nl = Netlink::open_in(ns, &rt).map_err(kerr)?;
    let handle = nl.handle();
    let tc_err = |e: tc::TcError| {
        kerr(KernelError {
            netns: ns.to_string(),
            target: None,
            op: "tc".into(),
            errno: None,
            detail: Some(e.to_string()),
            tool: None,
        })
    };
    let tbf = dir.rate_bps.map(|r| tc::Tbf::for_rate(r, mtu, TBF_LATENCY));
    let netem_needed = backend == Backend::Netem
        && (dir.needs_delay_line() || dir.loss_ppm > 0 || dir.limit.is_some());
    if netem_needed {
        tc::replace_netem_tbf(handle, index, &netem_of(dir), tbf.as_ref())
            .await
            .map_err(tc_err)?;
    } else if let Some(tbf) = &tbf {
        let _ = tc::delete_root_qdisc(handle, index).await;
        tc::replace_tbf(handle, index, tbf).await.map_err(tc_err)?;
    } else {
        // Nothing to shape: back to the default qdisc (there may be none of ours to delete).
        let _ = tc::delete_root_qdisc(handle, index).await;
    }
    Ok(())
}

/// Applies the qdiscs of link `i` (both directions) as the state says.
pub(crate) async fn apply_link_qdiscs(
    lab: &str,
    net: &NetState,
    i: usize,
    ns_of: &(dyn Fn(&str) -> String + Sync),
) -> Result<(), LabError> {
    let link = &net.links[i];
    let clear = Shape::default();
    let (ab, ba) = match &link.shape {
        Some(s) => (&s.a_to_b, &s.b_to_a),
        None => (&clear, &clear),
    };
    apply_qdisc(
        lab,
        net.backend,
        &ns_of(&link.a.node),
        &link.a.node,
        link.a_index,
        link.mtu,
        ab,
    )
    .await?;
    apply_qdisc(
        lab,
        net.backend,
        &ns_of(&link.b.node),
        &link.b.node,
        link.b_index,
        link.mtu,
        ba,
    )
    .await
}

/// Whether nftables drops this direction's random loss (at the receiver's ingress), rather
/// than the qdisc or the delay line.
fn nft_loss(backend: Backend, dir: &Shape) -> u32 {
    if backend == Backend::Emulated && dir.loss_correlation_ppm == 0 {
        dir.loss_ppm
    } else {
        0
    }
}

/// Whether every fault rule goes to tc filters (`NETSIM_FAULT_FILTERS=tc`, to test the tc form
/// on kernels that have both), so `nft` is never run.
fn force_tc_filters() -> bool {
    std::env::var("NETSIM_FAULT_FILTERS").is_ok_and(|v| v == "tc")
}

/// The user-space tools bringing up a lab with links `net` runs, each with what in the plan
/// needs it: `nft` for random loss on the emulated backend. (Runtime faults need `nft` too;
/// `netsim doctor` says so.)
pub fn tools_needed(net: &NetState) -> Vec<(Tool, String)> {
    if force_tc_filters() {
        return Vec::new();
    }
    let lossy: Vec<String> = net
        .links
        .iter()
        .filter(|l| {
            l.shape.as_ref().is_some_and(|s| {
                nft_loss(net.backend, &s.a_to_b) > 0 || nft_loss(net.backend, &s.b_to_a) > 0
            })
        })
        .map(LinkRuntime::label)
        .collect();
    if lossy.is_empty() {
        return Vec::new();
    }
    let links = if lossy.len() == 1 { "link" } else { "links" };
    vec![(
        tools::NFT,
        format!(
            "random loss on the emulated backend ({links} {})",
            lossy.join(", ")
        ),
    )]
}

/// The nftables rule set of `node`: ingress drops (cuts, emulated loss) per interface, then
/// packet filters ([`Filter`]), then partitions and port blocks. Empty when the node needs none. Ingress drops go to netdev
/// ingress hooks when `netdev`, else (kernels built without the netdev family, like the kernel
/// lane's) to the prerouting hook of the inet family, and of the bridge family on switches,
/// matched by input interface: still at the receiving side, before routing or bridging.
pub fn ruleset(node: &str, net: &NetState, netdev: bool) -> String {
    let filters: Vec<String> = net
        .drops
        .iter()
        .filter(|f| f.node == node)
        .map(|f| drop_rule_nft(f.rule))
        .collect();
    let mut ingress: Vec<(String, Vec<String>)> = Vec::new();
    for link in &net.links {
        for (me, them_to_me) in [
            (&link.a, link.shape.as_ref().map(|s| &s.b_to_a)),
            (&link.b, link.shape.as_ref().map(|s| &s.a_to_b)),
        ] {
            if me.node != node {
                continue;
            }
            let mut rules = Vec::new();
            if link.cut {
                rules.push("drop".to_string());
            } else if let Some(dir) = them_to_me {
                let loss = nft_loss(net.backend, dir);
                if loss > 0 {
                    rules.push(format!("numgen random mod 1000000 < {loss} drop"));
                }
            }
            if !link.cut {
                rules.extend(filters.iter().cloned());
            }
            if !rules.is_empty() {
                ingress.push((me.iface.clone(), rules));
            }
        }
    }
    let mut peers: Vec<Ipv4Addr> = Vec::new();
    for p in &net.partitions {
        let other = if p.left.iter().any(|n| n == node) {
            &p.right
        } else if p.right.iter().any(|n| n == node) {
            &p.left
        } else {
            continue;
        };
        for n in other {
            peers.extend(net.addrs.get(n).into_iter().flatten());
        }
    }
    peers.sort();
    peers.dedup();
    let blocks: Vec<&Block> = net.blocks.iter().filter(|b| b.node == node).collect();
    if ingress.is_empty() && peers.is_empty() && blocks.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    if !ingress.is_empty() && netdev {
        let _ = writeln!(out, "table netdev netsim {{");
        for (iface, rules) in &ingress {
            let _ = writeln!(out, "  chain in-{iface} {{");
            let _ = writeln!(
                out,
                "    type filter hook ingress device \"{iface}\" priority 0; policy accept;"
            );
            for r in rules {
                let _ = writeln!(out, "    {r}");
            }
            let _ = writeln!(out, "  }}");
        }
        let _ = writeln!(out, "}}");
    } else if !ingress.is_empty() {
        let family = if net.switches.iter().any(|n| n == node) {
            "bridge"
        } else {
            "inet"
        };
        let _ = writeln!(out, "table {family} netsim-ingress {{");
        let _ = writeln!(out, "  chain prerouting {{");
        let _ = writeln!(
            out,
            "    type filter hook prerouting priority -300; policy accept;"
        );
        for (iface, rules) in &ingress {
            for r in rules {
                let _ = writeln!(out, "    iifname \"{iface}\" {r}");
            }
        }
        let _ = writeln!(out, "  }}");
        let _ = writeln!(out, "}}");
    }
    if !peers.is_empty() || !blocks.is_empty() {
        let set = peers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(out, "table inet netsim {{");
        for (chain, hook) in [
            ("input", "input"),
            ("output", "output"),
            ("forward", "forward"),
        ] {
            let _ = writeln!(out, "  chain {chain} {{");
            let _ = writeln!(
                out,
                "    type filter hook {hook} priority 0; policy accept;"
            );
            if !peers.is_empty() {
                let _ = writeln!(out, "    ip saddr {{ {set} }} drop");
                let _ = writeln!(out, "    ip daddr {{ {set} }} drop");
            }
            for b in &blocks {
                let _ = writeln!(out, "    {} dport {} drop", b.proto.name(), b.port);
                let _ = writeln!(out, "    {} sport {} drop", b.proto.name(), b.port);
            }
            let _ = writeln!(out, "  }}");
        }
        let _ = writeln!(out, "}}");
    }
    out
}

/// Whether this kernel's nftables lacks the netdev family (learnt on the first failure).
static NO_NETDEV: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Whether this kernel's nftables lacks the inet family too (learnt on the first failure):
/// then faults use tc filters instead.
static NO_INET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn not_supported(e: &KernelError) -> bool {
    e.detail
        .as_deref()
        .is_some_and(|d| d.contains("Operation not supported"))
}

/// Loads `node`'s fault rules (replacing netsim's earlier ones there), or removes them when
/// the node needs none any more. Updates `net.nft_nodes`.
///
/// nftables first (netdev ingress hooks, else inet/bridge prerouting); on kernels whose
/// nftables has neither the netdev nor the inet family (the kernel lane's User-Mode-Linux
/// 6.1 is built without them), the same rules become tc filters on a clsact qdisc of each of
/// the node's interfaces: matchall with a gact drop (always, or at random for loss) on
/// ingress, flower matches for partitions and port blocks on ingress and egress.
pub(crate) async fn apply_nft(
    lab: &str,
    net: &mut NetState,
    node: &str,
    ns: &str,
) -> Result<(), LabError> {
    use std::sync::atomic::Ordering;
    let had = net.nft_nodes.iter().any(|n| n == node);
    let kerr = |cause: KernelError| LabError::Kernel {
        lab: lab.to_string(),
        node: Some(node.to_string()),
        cause: Box::new(cause),
    };
    let mut netdev = !NO_NETDEV.load(Ordering::Relaxed);
    let rules_empty = ruleset(node, net, netdev).is_empty();
    if rules_empty && !had {
        return Ok(());
    }
    let force_tc = force_tc_filters();
    while !force_tc && !NO_INET.load(Ordering::Relaxed) {
        let rules = ruleset(node, net, netdev);
        // Creating then deleting each table clears what an earlier run loaded, in the same
        // transaction as the new rules.
        let mut script = String::new();
        let family = if net.switches.iter().any(|n| n == node) {
            "bridge"
        } else {
            "inet"
        };
        let tables = if netdev {
            vec!["netdev netsim".to_string(), "inet netsim".to_string()]
        } else {
            vec![
                format!("{family} netsim-ingress"),
                "inet netsim".to_string(),
            ]
        };
        for t in &tables {
            let _ = writeln!(script, "table {t}\ndelete table {t}");
        }
        script.push_str(&rules);
        match nft::apply_in(ns, &script) {
            Ok(()) => {
                mark(net, node, rules.is_empty());
                return Ok(());
            }
            Err(e) if netdev && not_supported(&e) => {
                NO_NETDEV.store(true, Ordering::Relaxed);
                netdev = false;
            }
            Err(e) if !netdev && not_supported(&e) => NO_INET.store(true, Ordering::Relaxed),
            Err(e) => return Err(kerr(e)),
        }
    }
    apply_tc_faults(lab, net, node, ns).await?;
    mark(net, node, rules_empty);
    Ok(())
}

fn mark(net: &mut NetState, node: &str, empty: bool) {
    let had = net.nft_nodes.iter().any(|n| n == node);
    if empty {
        net.nft_nodes.retain(|n| n != node);
    } else if !had {
        net.nft_nodes.push(node.to_string());
    }
}

/// The tc form of [`ruleset`] (see [`apply_nft`]).
async fn apply_tc_faults(lab: &str, net: &NetState, node: &str, ns: &str) -> Result<(), LabError> {
    let kerr = |cause: KernelError| LabError::Kernel {
        lab: lab.to_string(),
        node: Some(node.to_string()),
        cause: Box::new(cause),
    };
    // tc's flower classifier matches neither an IP length range nor, in the kernel lane's
    // build, ICMP codes: packet filters need nftables.
    if let Some(f) = net.drops.iter().find(|f| f.node == node) {
        return Err(LabError::Request {
            lab: lab.to_string(),
            what: format!(
                "dropping {} entering {node} needs nftables with the netdev or inet family, \
                 and this kernel has neither (as in the kernel lane's User-Mode-Linux guest): \
                 run it on a kernel whose nftables has them",
                f.rule
            ),
        });
    }
    // The tc error names the interface index already.
    let tc_err = |e: tc::TcError| {
        kerr(KernelError {
            netns: ns.to_string(),
            target: None,
            op: "tc filter".into(),
            errno: None,
            detail: Some(e.to_string()),
            tool: None,
        })
    };
    let rt = tokio::runtime::Handle::current();
    let nl = Netlink::open_in(ns, &rt).map_err(kerr)?;
    let handle = nl.handle();
    let mut peers: Vec<Ipv4Addr> = Vec::new();
    for p in &net.partitions {
        let other = if p.left.iter().any(|n| n == node) {
            &p.right
        } else if p.right.iter().any(|n| n == node) {
            &p.left
        } else {
            continue;
        };
        for n in other {
            peers.extend(net.addrs.get(n).into_iter().flatten());
        }
    }
    peers.sort();
    peers.dedup();
    let blocks: Vec<&Block> = net.blocks.iter().filter(|b| b.node == node).collect();
    for link in &net.links {
        for (me, index, incoming) in [
            (
                &link.a,
                link.a_index,
                link.shape.as_ref().map(|s| &s.b_to_a),
            ),
            (
                &link.b,
                link.b_index,
                link.shape.as_ref().map(|s| &s.a_to_b),
            ),
        ] {
            if me.node != node {
                continue;
            }
            tc::delete_clsact(handle, index).await;
            // (ingress, match, probability out of 10 000)
            let mut filters: Vec<(bool, Option<tc::FlowerMatch>, Option<u16>)> = Vec::new();
            if link.cut {
                filters.push((true, None, None));
            } else if let Some(dir) = incoming {
                let loss = nft_loss(net.backend, dir);
                if loss > 0 {
                    // gact drops one packet in N: the nearest N (so 1 %, 10 %, 20 %, 25 %,
                    // 50 % are exact; 30 % becomes one in 3).
                    let one_in = (1_000_000.0 / f64::from(loss)).round();
                    let one_in = u16::try_from(one_in as u64).unwrap_or(u16::MAX);
                    filters.push((true, None, Some(one_in)));
                }
            }
            for peer in &peers {
                let src = tc::FlowerMatch {
                    src: Some(*peer),
                    ..Default::default()
                };
                let dst = tc::FlowerMatch {
                    dst: Some(*peer),
                    ..Default::default()
                };
                filters.push((true, Some(src), None));
                filters.push((false, Some(dst), None));
            }
            for b in &blocks {
                let proto = match b.proto {
                    Proto::Tcp => 6,
                    Proto::Udp => 17,
                };
                for ingress in [true, false] {
                    for (sport, dport) in [(None, Some(b.port)), (Some(b.port), None)] {
                        let m = tc::FlowerMatch {
                            ip_proto: Some(proto),
                            sport,
                            dport,
                            ..Default::default()
                        };
                        filters.push((ingress, Some(m), None));
                    }
                }
            }
            if filters.is_empty() {
                continue;
            }
            tc::replace_clsact(handle, index).await.map_err(tc_err)?;
            for (i, (ingress, m, prob)) in filters.iter().enumerate() {
                let prio = u16::try_from(i + 1).unwrap_or(u16::MAX);
                tc::add_drop_filter(handle, index, *ingress, prio, m.as_ref(), *prob)
                    .await
                    .map_err(tc_err)?;
            }
        }
    }
    Ok(())
}

/// The delay-line configuration of link `link` (rate and nftables' loss left out).
pub fn delay_line_config(net: &NetState, link: &LinkRuntime) -> DelayLineConfig {
    let part = |dir: Option<&Shape>| {
        let mut s = dir.cloned().unwrap_or_default();
        s.rate_bps = None;
        if nft_loss(net.backend, &s) > 0 {
            s.loss_ppm = 0;
        }
        s
    };
    DelayLineConfig {
        a_ifindex: WIRE_A_INDEX,
        b_ifindex: WIRE_B_INDEX,
        a_to_b: part(link.shape.as_ref().map(|s| &s.a_to_b)),
        b_to_a: part(link.shape.as_ref().map(|s| &s.b_to_a)),
        seed: net.seed,
    }
}

/// The program that runs delay lines: `NETSIM_BIN`, else this executable if it is `netsim`,
/// else a `netsim` next to it or one directory up (a test binary in target/*/deps).
pub fn netsim_program() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("NETSIM_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    if exe.file_name().is_some_and(|n| n == "netsim") {
        return exe;
    }
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("netsim");
        if candidate.is_file() {
            return candidate;
        }
    }
    "netsim".into()
}

/// Starts the delay line of `link` in its wire namespace; returns its record.
pub(crate) fn spawn_delay_line(
    lab: &str,
    net: &NetState,
    link: &LinkRuntime,
) -> Result<Option<ProcRecord>, LabError> {
    let Some(wire) = &link.wire else {
        return Ok(None);
    };
    let cfg = delay_line_config(net, link);
    let json = serde_json::to_string(&cfg).map_err(|e| LabError::Task {
        lab: lab.to_string(),
        what: format!("encode the delay-line configuration: {e}"),
    })?;
    let program = netsim_program();
    let mut cmd = super::command_in(&crate::kernel::netns::path(&wire.ns), program.as_os_str());
    // No stdio is inherited: a caller that reads our output (a shell pipe, a test harness)
    // must not wait for the delay line, which lives as long as the lab. Its stdout is a pipe
    // to us that carries one line, once it carries frames (read below, then closed).
    cmd.args(["delay-line", "--config", &json])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let child = cmd.spawn().map_err(|cause| LabError::Process {
        lab: lab.to_string(),
        node: wire.ns.clone(),
        what: format!(
            "start the delay line of link {} ({} delay-line; set NETSIM_BIN to the netsim binary)",
            link.label(),
            program.display()
        ),
        cause,
    })?;
    let pid = child.id();
    let mut child = child;
    let ready = child
        .stdout
        .take()
        .map(|out| wait_ready(out, DELAY_LINE_READY_WAIT));
    // `down`/`clean` kill it by PID; a thread reaps it when that happens, for as long as this
    // process lives (a CLI process exits first and leaves it to init).
    std::thread::spawn(move || child.wait());
    match ready {
        Some(Readiness::Exited) => {
            return Err(LabError::Task {
                lab: lab.to_string(),
                what: format!(
                    "the delay line of link {} (pid {pid}) exited before carrying a frame; run \
                     `{} delay-line --config '{json}'` in namespace {} to see why",
                    link.label(),
                    program.display(),
                    wire.ns
                ),
            })
        }
        Some(Readiness::Late) => tracing::warn!(
            "the delay line of link {} (pid {pid}) did not report ready within {:?}; going on",
            link.label(),
            DELAY_LINE_READY_WAIT
        ),
        Some(Readiness::Ready) | None => {}
    }
    Ok(
        crate::kernel::process::start_time(pid).map(|start| ProcRecord {
            pid,
            start,
            node: Some(wire.ns.clone()),
            argv: Vec::new(),
            stopped: false,
        }),
    )
}

/// How long a starting delay line may take to open its sockets before the lab goes on without
/// its word (a slow guest takes milliseconds; this is far above that).
const DELAY_LINE_READY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a starting delay line said.
enum Readiness {
    /// It printed its ready line.
    Ready,
    /// Its stdout closed first: it exited.
    Exited,
    /// Nothing within the wait.
    Late,
}

/// Waits up to `wait` for the delay line's ready line on `out` (on a thread of its own, which
/// closes the pipe when it has read the line).
fn wait_ready(out: std::process::ChildStdout, wait: std::time::Duration) -> Readiness {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut line = String::new();
        let read = std::io::BufReader::new(out).read_line(&mut line);
        let said_ready = matches!(read, Ok(n) if n > 0) && line.trim() == crate::delay_line::READY;
        let _ = tx.send(said_ready);
    });
    match rx.recv_timeout(wait) {
        Ok(true) => Readiness::Ready,
        Ok(false) => Readiness::Exited,
        Err(_) => Readiness::Late,
    }
}

/// Stops the delay line of `link`, if it runs.
pub(crate) fn kill_delay_line(link: &mut LinkRuntime) {
    if let Some(wire) = &mut link.wire {
        if let Some(p) = wire.pid.take() {
            crate::kernel::process::kill_if_same(p.pid, p.start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NetState {
        let src = "[[switch]]\nname = \"sw\"\nsubnet = \"198.18.5.0/24\"\n\
                   [[host]]\nname = \"h1\"\nswitches = [\"sw\"]\n[[host]]\nname = \"h2\"\n\
                   [[link]]\nendpoints = [\"h1\", \"h2\"]\nsubnet = \"198.18.1.0/30\"\n\
                   shape = { a_to_b = { loss = \"1%\" } }\n";
        let topo = crate::model::parse(src, std::path::Path::new("t.toml"));
        let plan = topo.and_then(|t| crate::model::plan(&t));
        let plan = plan.unwrap_or_else(|d| panic!("{d}"));
        let mut net = NetState::from_plan("t", &plan, Backend::Emulated);
        net.links[0].cut = true;
        net.partitions.push(Partition {
            left: vec!["h2".into()],
            right: vec!["h1".into()],
        });
        net.blocks.push(Block {
            node: "h2".into(),
            proto: Proto::Udp,
            port: 6784,
        });
        net
    }

    #[test]
    fn rulesets_for_cut_loss_partition_and_block() {
        let net = net();
        let text = format!(
            "# h1, netdev\n{}# h2, netdev\n{}# h2, no netdev\n{}# sw, no netdev\n{}",
            ruleset("h1", &net, true),
            ruleset("h2", &net, true),
            ruleset("h2", &net, false),
            ruleset("sw", &net, false),
        );
        insta::assert_snapshot!(text);
    }

    #[rstest::rstest]
    #[case::emulated_random_loss(Backend::Emulated, "1%", None, true)]
    #[case::emulated_correlated_loss_in_the_delay_line(Backend::Emulated, "1%", Some("25%"), false)]
    #[case::netem_loss(Backend::Netem, "1%", None, false)]
    #[case::no_loss(Backend::Emulated, "0%", None, false)]
    fn nft_is_needed_for_random_loss_on_the_emulated_backend(
        #[case] backend: Backend,
        #[case] loss: &str,
        #[case] correlation: Option<&str>,
        #[case] needs_nft: bool,
    ) {
        let corr = correlation
            .map(|c| format!(", loss_correlation = \"{c}\""))
            .unwrap_or_default();
        let src = format!(
            "[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n[[link]]\n\
             endpoints = [\"h1\", \"h2\"]\nsubnet = \"198.18.1.0/30\"\n\
             shape = {{ loss = \"{loss}\"{corr} }}\n"
        );
        let topo = crate::model::parse(&src, std::path::Path::new("t.toml"));
        let plan = topo.and_then(|t| crate::model::plan(&t));
        let plan = plan.unwrap_or_else(|d| panic!("{d}"));
        let needed = tools_needed(&NetState::from_plan("t", &plan, backend));
        if needs_nft {
            assert_eq!(needed.len(), 1, "{needed:?}");
            assert_eq!(needed[0].0, tools::NFT);
            assert!(needed[0].1.contains("link h1 -- h2"), "{needed:?}");
        } else {
            assert!(needed.is_empty(), "{needed:?}");
        }
    }

    #[test]
    fn packet_filters_drop_at_every_ingress_of_their_node() {
        let mut net = net();
        net.links[0].cut = false;
        net.partitions.clear();
        net.blocks.clear();
        net.drops = vec![
            Filter {
                node: "sw".into(),
                rule: DropRule::FragNeeded,
            },
            Filter {
                node: "sw".into(),
                rule: DropRule::UdpOver { bytes: 700 },
            },
        ];
        let text = format!(
            "# sw, netdev\n{}# sw, no netdev\n{}",
            ruleset("sw", &net, true),
            ruleset("sw", &net, false),
        );
        insta::assert_snapshot!(text);
        assert_eq!(ruleset("h1", &net, true), "", "filters stay on their node");
    }

    #[test]
    fn a_node_without_faults_gets_no_rules() {
        let mut net = net();
        net.links[0].cut = false;
        net.partitions.clear();
        net.blocks.clear();
        assert_eq!(ruleset("h1", &net, true), "");
        assert!(ruleset("h2", &net, true).contains("numgen random mod 1000000 < 10000 drop"));
        assert_eq!(ruleset("sw", &net, true), "");
    }
}
