//! From a parsed [`Topology`] to a [`Plan`]: check what the file means (names, references,
//! subnets, addresses, MTUs) and resolve everything the engine needs, deterministically.
//!
//! Order of work, and the conventions the docs promise:
//! - nodes: switches, routers, hosts, then containers (each group in file order);
//! - links: in the order they appear in the file, whether written as `[[link]]` or as an entry
//!   of a node's `switches` list; a host or router numbers its interfaces `eth0`, `eth1`, ...
//!   in that order, a switch names its ports `<peer>-<peer iface>`;
//! - addresses: explicit ones are reserved first; then, per subnet, routers take the lowest free
//!   addresses and hosts the next ones, each in link order.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::Path;

use ipnet::Ipv4Net;
use toml::Spanned;

mod expects;

use super::alloc::{Pool, Refused};
use super::diag::{closest, Diagnostics, Reporter};
use super::names::{self, BRIDGE_NAME, LAB_NAME_MAX, NODE_NAME_MAX};
use super::plan::{
    BridgePlan, Endpoint, IfacePlan, LinkPlan, NodeKind, NodePlan, OverlayPlan, Plan, RoutePlan,
    DEFAULT_MTU, MAX_MTU, MIN_MTU,
};
use super::plan::{LinkShape, Shape};
use super::shape;
use super::topology::{self as topo_types, OverlayMtu, Topology};

/// Where lab underlay addresses must lie.
pub const UNDERLAY: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 16);
/// Where the overlay range must lie.
pub const OVERLAY: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(198, 19, 0, 0), 16);
/// The whole range the project confines itself to (RFC 2544's benchmarking range).
pub const BENCHMARK: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15);

const RFC2544: &str = "netsim only uses 198.18.0.0/15, the range RFC 2544 reserves for \
                       network benchmarking (underlay in 198.18.0.0/16, overlay in \
                       198.19.0.0/16), so a lab can never clash with real networks";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Switch,
    Router,
    Host,
    Container(String),
}

impl Kind {
    fn word(&self) -> &'static str {
        match self {
            Kind::Switch => "switch",
            Kind::Router => "router",
            Kind::Host => "host",
            Kind::Container(_) => "container",
        }
    }
}

#[derive(Debug)]
struct Node {
    name: String,
    kind: Kind,
    span: Range<usize>,
    /// For switches: the subnet and default MTU.
    subnet: Option<Ipv4Net>,
    mtu: Option<u32>,
}

/// What a link says about one end's address.
#[derive(Debug, Clone)]
enum AddrSpec {
    /// Plan it from the subnet (or leave the interface unaddressed when there is none).
    Auto,
    /// An explicit address, with its prefix length if one was written.
    Explicit(Ipv4Addr, Option<u8>, Range<usize>),
}

#[derive(Debug)]
struct End {
    node: usize,
    addr: AddrSpec,
    iface: String,
    planned: Option<Ipv4Net>,
}

#[derive(Debug)]
struct LinkDecl {
    /// Where in the file the link is declared: links are ordered by this.
    pos: usize,
    span: Range<usize>,
    ends: [End; 2],
    /// The subnet of a link between two nodes.
    subnet: Option<(Ipv4Net, Range<usize>)>,
    mtu: Option<u32>,
    /// Shaping of a `[[link]]` that asks for it.
    shape: Option<LinkShape>,
}

impl LinkDecl {
    fn switch_end(&self, nodes: &[Node]) -> Option<usize> {
        self.ends
            .iter()
            .position(|e| nodes[e.node].kind == Kind::Switch)
    }
}

struct Planner<'t> {
    topo: &'t Topology,
    r: Reporter<'t>,
    nodes: Vec<Node>,
    by_name: BTreeMap<String, usize>,
    /// Every node's addresses once planned (for resolving next hops by node name).
    planned_addrs: Vec<Vec<Ipv4Net>>,
    /// Nodes one of whose links was already reported as wrong: a missing address on them is a
    /// consequence, not a second problem, so it is not reported again.
    broken: BTreeSet<usize>,
}

/// Checks a topology and resolves it into a [`Plan`].
pub(crate) fn plan(topo: &Topology) -> Result<Plan, Diagnostics> {
    let mut p = Planner {
        topo,
        r: topo.reporter(),
        nodes: Vec::new(),
        by_name: BTreeMap::new(),
        planned_addrs: Vec::new(),
        broken: BTreeSet::new(),
    };
    let name = p.lab_name();
    p.collect_nodes();
    let mut links = p.collect_links();
    p.check_overlaps(&links);
    p.name_interfaces(&mut links);
    p.plan_addresses(&mut links);
    let mut nodes = p.build_nodes(&links);
    p.plan_routes(&mut nodes);
    let overlay = p.overlay();
    let link_plans: Vec<LinkPlan> = links
        .iter()
        .map(|l| LinkPlan {
            a: Endpoint {
                node: p.nodes[l.ends[0].node].name.clone(),
                iface: l.ends[0].iface.clone(),
            },
            b: Endpoint {
                node: p.nodes[l.ends[1].node].name.clone(),
                iface: l.ends[1].iface.clone(),
            },
            mtu: p.link_mtu(l),
            shape: l.shape.clone(),
        })
        .collect();
    let expects = p.expects(&nodes);
    let steps = p.steps(&nodes, &link_plans);
    let seed = topo.lab.as_ref().and_then(|l| l.seed).unwrap_or(0);
    let needs = p.needs();
    p.r.finish()?;
    Ok(Plan {
        name,
        nodes,
        links: link_plans,
        overlay,
        expects,
        steps,
        seed,
        needs,
    })
}

fn stem(file: &Path) -> String {
    file.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl<'t> Planner<'t> {
    fn lab_name(&mut self) -> String {
        if let Some(name) = self.topo.lab.as_ref().and_then(|l| l.name.as_ref()) {
            if let Some(problem) = names::name_problem(name.get_ref(), LAB_NAME_MAX) {
                self.r.error(
                    name.span(),
                    format!("lab name {:?} {problem}", name.get_ref()),
                    format!(
                        "use lowercase letters, digits and -, at most {LAB_NAME_MAX} characters, \
                         e.g. {:?}",
                        names::sanitize(name.get_ref(), LAB_NAME_MAX)
                    ),
                );
            }
            return name.get_ref().clone();
        }
        names::sanitize(&stem(&self.topo.file), LAB_NAME_MAX)
    }

    fn add_node(&mut self, name: &Spanned<String>, kind: Kind) -> usize {
        let text = name.get_ref();
        if let Some(problem) = names::name_problem(text, NODE_NAME_MAX) {
            self.r.error(
                name.span(),
                format!("{} name {text:?} {problem}", kind.word()),
                format!(
                    "node names are a lowercase letter, then lowercase letters, digits or -, \
                     at most {NODE_NAME_MAX} characters (interface names derive from them and \
                     the kernel allows 15), e.g. {:?}",
                    names::sanitize(text, NODE_NAME_MAX)
                ),
            );
        }
        let index = self.nodes.len();
        if let Some(&first) = self.by_name.get(text) {
            let first_line = self.r.line_of(self.nodes[first].span.start);
            let first_kind = self.nodes[first].kind.word();
            self.r.error(
                name.span(),
                format!("duplicate node name {text:?}: a {first_kind} on line {first_line} already has it"),
                "node names are unique across switches, routers, hosts and containers; rename \
                 one of them",
            );
        } else {
            self.by_name.insert(text.clone(), index);
        }
        self.nodes.push(Node {
            name: text.clone(),
            kind,
            span: name.span(),
            subnet: None,
            mtu: None,
        });
        index
    }

    fn collect_nodes(&mut self) {
        let topo = self.topo;
        for sw in &topo.switch {
            let sw = sw.get_ref();
            let i = self.add_node(&sw.name, Kind::Switch);
            self.nodes[i].subnet = sw
                .subnet
                .as_ref()
                .and_then(|s| self.subnet(s, UNDERLAY, "subnet"));
            self.nodes[i].mtu = sw.mtu.as_ref().and_then(|m| self.mtu(m));
        }
        for router in &topo.router {
            self.add_node(&router.get_ref().name, Kind::Router);
        }
        for host in &topo.host {
            self.add_node(&host.get_ref().name, Kind::Host);
        }
        for host in &topo.host {
            let host = host.get_ref();
            for c in &host.containers {
                self.add_node(c, Kind::Container(host.name.get_ref().clone()));
            }
        }
    }

    /// The shaping a `[[link]]` asks for (profile, then `shape`, then per-direction
    /// overrides), and the MTU its profile implies.
    fn link_shape(&mut self, link: &topo_types::Link) -> (Option<LinkShape>, Option<u32>) {
        let mut base = Shape::default();
        let mut profile_name = None;
        let mut profile_mtu = None;
        if let Some(name) = &link.profile {
            match shape::profile_named(name.get_ref()) {
                Some(p) => {
                    base.rate_bps = Some(p.rate_bps);
                    base.delay_ns = p.delay_ns;
                    profile_name = Some(p.name.to_string());
                    profile_mtu = p.mtu;
                }
                None => {
                    let names: Vec<&str> = shape::PROFILES.iter().map(|p| p.name).collect();
                    let help = match closest(name.get_ref(), names.iter().copied()) {
                        Some(c) => format!("did you mean `{c}`? Profiles: {}", names.join(", ")),
                        None => format!("use one of: {}", names.join(", ")),
                    };
                    self.r.error(
                        name.span(),
                        format!("unknown link profile {:?}", name.get_ref()),
                        help,
                    );
                }
            }
        }
        let Some(spec) = &link.shape else {
            if profile_name.is_none() {
                return (None, profile_mtu);
            }
            let shape = LinkShape {
                profile: profile_name,
                a_to_b: base.clone(),
                b_to_a: base,
            };
            return (Some(shape), profile_mtu);
        };
        let both = ShapeKeys::of_link(spec);
        self.apply_shape_keys(&mut base, &both);
        let mut a_to_b = base.clone();
        let mut b_to_a = base;
        if let Some(o) = &spec.a_to_b {
            self.apply_shape_keys(&mut a_to_b, &ShapeKeys::of_spec(o));
        }
        if let Some(o) = &spec.b_to_a {
            self.apply_shape_keys(&mut b_to_a, &ShapeKeys::of_spec(o));
        }
        let mut reported = Vec::new();
        for (dir, over) in [(&a_to_b, &spec.a_to_b), (&b_to_a, &spec.b_to_a)] {
            let Err(problem) = dir.check() else { continue };
            // Point at the key that makes the combination impossible, in the override first.
            let pick = |k: &ShapeKeys<'_>| {
                k.reorder
                    .clone()
                    .or(k.loss_correlation.clone())
                    .or(k.distribution.clone())
                    .or(k.limit_span.clone())
                    .or(k.any.clone())
            };
            let at = over
                .as_ref()
                .and_then(|o| pick(&ShapeKeys::of_spec(o)))
                .or_else(|| pick(&both));
            let Some(span) = at else { continue };
            if reported.contains(&span) {
                continue;
            }
            reported.push(span.clone());
            self.r.error(
                span,
                format!("impossible link shape: {problem}"),
                "reorder needs a delay, loss_correlation needs a loss, a distribution needs a \
                 jitter, and limit is at least 1 (see docs/shaping.md)",
            );
        }
        let shape = LinkShape {
            profile: profile_name,
            a_to_b,
            b_to_a,
        };
        (Some(shape), profile_mtu)
    }

    fn apply_shape_keys(&mut self, into: &mut Shape, keys: &ShapeKeys<'_>) {
        let mut parse = |v: Option<&Spanned<String>>,
                         f: fn(&str) -> Result<u64, String>,
                         help: &str|
         -> Option<u64> {
            let v = v?;
            match f(v.get_ref()) {
                Ok(x) => Some(x),
                Err(problem) => {
                    self.r.error(v.span(), problem, help.to_string());
                    None
                }
            }
        };
        let pct = |t: &str| shape::parse_percent(t).map(u64::from);
        const PCT: &str = "a percentage from 0% to 100%, e.g. \"1%\" or \"0.5%\"";
        const TIME: &str = "a duration: a number and ns, us, ms or s, e.g. \"10ms\"";
        if let Some(r) = parse(
            keys.rate,
            shape::parse_rate,
            "a rate: a number and bit, kbit, \
            mbit or gbit (powers of 1000), e.g. \"100mbit\"",
        ) {
            into.rate_bps = Some(r);
        }
        if let Some(d) = parse(keys.delay, shape::parse_duration, TIME) {
            into.delay_ns = d;
        }
        if let Some(d) = parse(keys.jitter, shape::parse_duration, TIME) {
            into.jitter_ns = d;
        }
        let to32 = |x: u64| u32::try_from(x).unwrap_or(u32::MAX);
        if let Some(x) = parse(keys.loss, pct, PCT) {
            into.loss_ppm = to32(x);
        }
        if let Some(x) = parse(keys.loss_correlation_v, pct, PCT) {
            into.loss_correlation_ppm = to32(x);
        }
        if let Some(x) = parse(keys.reorder_v, pct, PCT) {
            into.reorder_ppm = to32(x);
        }
        if let Some(x) = parse(keys.duplicate, pct, PCT) {
            into.duplicate_ppm = to32(x);
        }
        if let Some(x) = parse(keys.corrupt, pct, PCT) {
            into.corrupt_ppm = to32(x);
        }
        if let Some(d) = keys.distribution_v {
            match shape::parse_distribution(d.get_ref()) {
                Ok(d) => into.distribution = d,
                Err(problem) => {
                    self.r
                        .error(d.span(), problem, "use uniform, normal or pareto");
                }
            }
        }
        if let Some(l) = keys.limit {
            into.limit = Some(*l.get_ref());
        }
    }

    fn mtu(&mut self, mtu: &Spanned<u32>) -> Option<u32> {
        let v = *mtu.get_ref();
        if (MIN_MTU..=MAX_MTU).contains(&v) {
            Some(v)
        } else {
            self.r.error(
                mtu.span(),
                format!("MTU {v} is out of range"),
                format!(
                    "an MTU is between {MIN_MTU} (the IPv4 minimum) and {MAX_MTU}; the default \
                     is {DEFAULT_MTU}, jumbo frames are 9000"
                ),
            );
            None
        }
    }

    /// Parses a subnet that must lie inside `within`.
    fn subnet(&mut self, s: &Spanned<String>, within: Ipv4Net, what: &str) -> Option<Ipv4Net> {
        let text = s.get_ref().trim();
        let example = if within == OVERLAY {
            "198.19.0.0/16"
        } else {
            "198.18.1.0/24"
        };
        let net: Ipv4Net = match text.parse() {
            Ok(net) => net,
            Err(_) => {
                let help = if text.parse::<Ipv4Addr>().is_ok() {
                    format!("add the prefix length, e.g. \"{text}/24\"")
                } else {
                    format!("write an IPv4 subnet as address/length, e.g. \"{example}\"")
                };
                self.r.error(
                    s.span(),
                    format!("{what} {text:?} is not an IPv4 subnet"),
                    help,
                );
                return None;
            }
        };
        if net != net.trunc() {
            self.r.error(
                s.span(),
                format!("{what} {net} has host bits set"),
                format!(
                    "a subnet names its first address: did you mean \"{}\"?",
                    net.trunc()
                ),
            );
            return None;
        }
        if !within.contains(&net) {
            let help = if within == UNDERLAY && OVERLAY.contains(&net) {
                format!(
                    "{OVERLAY} is the overlay's range (see [overlay]); the underlay uses \
                     {UNDERLAY}, e.g. \"{example}\""
                )
            } else {
                format!("{RFC2544}; pick one like \"{example}\"")
            };
            self.r
                .error(s.span(), format!("{what} {net} is outside {within}"), help);
            return None;
        }
        Some(net)
    }

    /// Looks up a node by name, reporting a missing one with a suggestion.
    pub(super) fn node_ref(&mut self, name: &Spanned<String>, role: &str) -> Option<usize> {
        let text = name.get_ref();
        if let Some(&i) = self.by_name.get(text.as_str()) {
            return Some(i);
        }
        let section = if role == "switch" { "switch" } else { "host" };
        let help = self.missing_node_help(text, section);
        self.r
            .error(name.span(), format!("{role} {text:?} is not a node"), help);
        None
    }

    /// How to fix a reference to a node that does not exist.
    fn missing_node_help(&self, text: &str, section: &str) -> String {
        let declare = format!("declare it (e.g. [[{section}]] name = {text:?})");
        if self.nodes.is_empty() {
            return declare;
        }
        let mut known: Vec<&str> = self
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .take(12)
            .collect();
        if self.nodes.len() > known.len() {
            known.push("...");
        }
        // Short names like h1/h4 are all one edit apart: only suggest for longer ones.
        let guess = if text.len() >= 4 {
            closest(text, self.by_name.keys().map(String::as_str))
        } else {
            None
        };
        match guess {
            Some(g) => format!("did you mean {g:?}? Nodes: {}", known.join(", ")),
            None => format!("{declare} or use one of: {}", known.join(", ")),
        }
    }

    fn addr_spec(&mut self, s: &Spanned<String>) -> Option<AddrSpec> {
        let text = s.get_ref().trim();
        if text == "auto" {
            return Some(AddrSpec::Auto);
        }
        let parsed = if let Ok(net) = text.parse::<Ipv4Net>() {
            Some((net.addr(), Some(net.prefix_len())))
        } else {
            text.parse::<Ipv4Addr>().ok().map(|a| (a, None))
        };
        let Some((addr, prefix)) = parsed else {
            self.r.error(
                s.span(),
                format!("address {text:?} is not an IPv4 address"),
                "write \"198.18.1.10/24\", \"198.18.1.10\" (length from the subnet) or \"auto\"",
            );
            return None;
        };
        if !UNDERLAY.contains(&addr) {
            self.r.error(
                s.span(),
                format!("address {addr} is outside {UNDERLAY}"),
                format!("{RFC2544}; use an address like 198.18.1.10"),
            );
            return None;
        }
        Some(AddrSpec::Explicit(addr, prefix, s.span()))
    }

    fn collect_links(&mut self) -> Vec<LinkDecl> {
        let topo = self.topo;
        let mut links = Vec::new();
        for link in &topo.link {
            let span = link.span();
            let link = link.get_ref();
            let eps = link.endpoints.get_ref();
            if eps.len() != 2 {
                self.r.error(
                    link.endpoints.span(),
                    format!("a link has two endpoints, this one lists {}", eps.len()),
                    "write endpoints = [\"h1\", \"sw1\"]; to put more nodes on one segment, link \
                     each of them to a switch",
                );
                continue;
            }
            let a = self.node_ref(&eps[0], "link endpoint");
            let b = self.node_ref(&eps[1], "link endpoint");
            let mut mtu = link.mtu.as_ref().and_then(|m| self.mtu(m));
            let (shape, profile_mtu) = self.link_shape(link);
            if link.mtu.is_none() {
                mtu = mtu.or(profile_mtu);
            }
            let (Some(a), Some(b)) = (a, b) else {
                self.broken.extend(a.into_iter().chain(b));
                continue;
            };
            if !self.endpoints_ok(a, b, &eps[0], &eps[1]) {
                self.broken.extend([a, b]);
                continue;
            }
            let switches = [a, b]
                .iter()
                .filter(|&&n| self.nodes[n].kind == Kind::Switch)
                .count();
            let subnet = match &link.subnet {
                Some(s) if switches > 0 => {
                    self.r.error(
                        s.span(),
                        "a link to a switch takes its subnet from the switch",
                        "remove `subnet` here and set `subnet` on the [[switch]]",
                    );
                    None
                }
                Some(s) => self.subnet(s, UNDERLAY, "subnet").map(|n| (n, s.span())),
                None => None,
            };
            let want = 2 - switches;
            let mut specs = vec![AddrSpec::Auto; 2];
            if let Some(addrs) = &link.addresses {
                if addrs.get_ref().len() != want {
                    self.r.error(
                        addrs.span(),
                        format!(
                            "this link needs {want} address{} (one per end that is not a switch), \
                             found {}",
                            if want == 1 { "" } else { "es" },
                            addrs.get_ref().len()
                        ),
                        "list them in the order of `endpoints`, e.g. addresses = \
                         [\"198.18.1.10/24\"]; use \"auto\" to plan one from the subnet",
                    );
                } else {
                    let mut given = addrs.get_ref().iter();
                    for (slot, node) in [a, b].into_iter().enumerate() {
                        if self.nodes[node].kind == Kind::Switch {
                            continue;
                        }
                        if let Some(s) = given.next() {
                            let spec = self.addr_spec(s);
                            if matches!(spec, Some(AddrSpec::Auto)) {
                                let has_subnet = match [a, b]
                                    .into_iter()
                                    .find(|&n| self.nodes[n].kind == Kind::Switch)
                                {
                                    Some(sw) => self.nodes[sw].subnet.is_some(),
                                    None => link.subnet.is_some(),
                                };
                                if !has_subnet {
                                    self.r.error(
                                        s.span(),
                                        "\"auto\" needs a subnet to plan the address from",
                                        "give the link (or its switch) a `subnet`, or write the \
                                         address out, e.g. \"198.18.9.2/30\"",
                                    );
                                }
                            }
                            if let Some(spec) = spec {
                                specs[slot] = spec;
                            }
                        }
                    }
                }
            } else if switches == 0 && link.subnet.is_none() {
                self.r.error(
                    link.endpoints.span(),
                    format!(
                        "link {} -- {} has neither `subnet` nor `addresses`",
                        self.nodes[a].name, self.nodes[b].name
                    ),
                    "add subnet = \"198.18.9.0/30\" to plan both addresses, or list them: \
                     addresses = [\"198.18.9.1/30\", \"198.18.9.2/30\"]",
                );
            }
            // Two explicit addresses on one subnet define the link's subnet, so it is checked
            // for overlaps and its network and broadcast addresses are refused like any other.
            let mut subnet = subnet;
            if let (
                None,
                [AddrSpec::Explicit(x, Some(px), _), AddrSpec::Explicit(y, Some(py), _)],
            ) = (&subnet, specs.as_slice())
            {
                let (nx, ny) = (Ipv4Net::new(*x, *px), Ipv4Net::new(*y, *py));
                if let (Ok(nx), Ok(ny), Some(addrs)) = (nx, ny, &link.addresses) {
                    if nx.trunc() == ny.trunc() {
                        subnet = Some((nx.trunc(), addrs.span()));
                    }
                }
            }
            let [sa, sb]: [AddrSpec; 2] = match specs.try_into() {
                Ok(pair) => pair,
                Err(_) => continue,
            };
            links.push(LinkDecl {
                pos: span.start,
                span: eps[0].span().start..eps[1].span().end,
                ends: [
                    End {
                        node: a,
                        addr: sa,
                        iface: String::new(),
                        planned: None,
                    },
                    End {
                        node: b,
                        addr: sb,
                        iface: String::new(),
                        planned: None,
                    },
                ],
                subnet,
                mtu,
                shape,
            });
        }
        // The `switches = [...]` shorthand on hosts and routers.
        let owners = topo
            .router
            .iter()
            .map(|r| (&r.get_ref().name, &r.get_ref().switches))
            .chain(
                topo.host
                    .iter()
                    .map(|h| (&h.get_ref().name, &h.get_ref().switches)),
            );
        for (owner, switches) in owners {
            let Some(&a) = self.by_name.get(owner.get_ref().as_str()) else {
                continue;
            };
            for sw in switches {
                let Some(b) = self.node_ref(sw, "switch") else {
                    self.broken.insert(a);
                    continue;
                };
                if self.nodes[b].kind != Kind::Switch {
                    self.broken.insert(a);
                    self.r.error(
                        sw.span(),
                        format!(
                            "{:?} is a {}, not a switch",
                            sw.get_ref(),
                            self.nodes[b].kind.word()
                        ),
                        format!(
                            "`switches` only lists switches; to link two nodes directly write \
                             [[link]] endpoints = [{:?}, {:?}] with a `subnet`",
                            owner.get_ref(),
                            sw.get_ref()
                        ),
                    );
                    continue;
                }
                links.push(LinkDecl {
                    pos: sw.span().start,
                    span: sw.span(),
                    ends: [
                        End {
                            node: a,
                            addr: AddrSpec::Auto,
                            iface: String::new(),
                            planned: None,
                        },
                        End {
                            node: b,
                            addr: AddrSpec::Auto,
                            iface: String::new(),
                            planned: None,
                        },
                    ],
                    subnet: None,
                    mtu: None,
                    shape: None,
                });
            }
        }
        links.sort_by_key(|l| l.pos);
        links
    }

    fn endpoints_ok(
        &mut self,
        a: usize,
        b: usize,
        a_name: &Spanned<String>,
        b_name: &Spanned<String>,
    ) -> bool {
        for (n, written) in [(a, a_name), (b, b_name)] {
            if let Kind::Container(host) = &self.nodes[n].kind {
                let (name, host) = (self.nodes[n].name.clone(), host.clone());
                self.r.error(
                    written.span(),
                    format!("link endpoint {name:?} is a container"),
                    format!(
                        "containers get their interfaces from the overlay on their host; link \
                         the host {host:?} instead"
                    ),
                );
                return false;
            }
        }
        if a == b {
            self.r.error(
                b_name.span(),
                format!("link from {:?} to itself", self.nodes[a].name),
                "a link joins two different nodes",
            );
            return false;
        }
        if self.nodes[a].kind == Kind::Switch && self.nodes[b].kind == Kind::Switch {
            self.r.error(
                b_name.span(),
                format!(
                    "link between two switches ({} and {})",
                    self.nodes[a].name, self.nodes[b].name
                ),
                "a switch is one L2 segment with one subnet; put the nodes on one switch, or \
                 join the two switches through a [[router]]",
            );
            return false;
        }
        true
    }

    fn check_overlaps(&mut self, links: &[LinkDecl]) {
        let mut subnets: Vec<(Ipv4Net, Range<usize>, String)> = Vec::new();
        for (node, sw) in self
            .nodes
            .iter()
            .filter(|n| n.kind == Kind::Switch)
            .zip(&self.topo.switch)
        {
            if let (Some(net), Some(s)) = (node.subnet, &sw.get_ref().subnet) {
                subnets.push((net, s.span(), format!("switch {}", node.name)));
            }
        }
        for l in links {
            if let Some((net, span)) = &l.subnet {
                let desc = format!(
                    "link {} -- {}",
                    self.nodes[l.ends[0].node].name, self.nodes[l.ends[1].node].name
                );
                subnets.push((*net, span.clone(), desc));
            }
        }
        subnets.sort_by_key(|s| s.1.start);
        for j in 0..subnets.len() {
            if let Some(i) = (0..j).find(|&i| {
                subnets[i].0.contains(&subnets[j].0) || subnets[j].0.contains(&subnets[i].0)
            }) {
                let line = self.r.line_of(subnets[i].1.start);
                self.r.error(
                    subnets[j].1.clone(),
                    format!(
                        "subnet {} of {} overlaps subnet {} of {} (line {line})",
                        subnets[j].0, subnets[j].2, subnets[i].0, subnets[i].2
                    ),
                    "every switch and point-to-point link needs a subnet of its own; pick one \
                     that does not overlap, e.g. the next /24",
                );
            }
        }
    }

    fn name_interfaces(&mut self, links: &mut [LinkDecl]) {
        let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
        let mut ports: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for l in links.iter_mut() {
            for e in l.ends.iter_mut() {
                if self.nodes[e.node].kind != Kind::Switch {
                    let n = counts.entry(e.node).or_default();
                    e.iface = names::eth(*n);
                    *n += 1;
                }
            }
            if let Some(s) = l.switch_end(&self.nodes) {
                let peer = &l.ends[1 - s];
                let taken = ports.entry(l.ends[s].node).or_default();
                let name = names::port_name(&self.nodes[peer.node].name, &peer.iface, taken);
                taken.push(name.clone());
                l.ends[s].iface = name;
            }
        }
    }

    fn link_mtu(&self, l: &LinkDecl) -> u32 {
        l.mtu
            .or_else(|| {
                l.switch_end(&self.nodes)
                    .and_then(|s| self.nodes[l.ends[s].node].mtu)
            })
            .unwrap_or(DEFAULT_MTU)
    }

    fn plan_addresses(&mut self, links: &mut [LinkDecl]) {
        // A segment is a switch (by node index) or a point-to-point link (by link index).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        enum Segment {
            Switch(usize),
            Link(usize),
        }
        let mut pools: BTreeMap<Segment, (Ipv4Net, Pool)> = BTreeMap::new();
        let mut owners: BTreeMap<Ipv4Addr, (String, usize)> = BTreeMap::new();
        let segment_of = |l: &LinkDecl, li: usize, nodes: &[Node]| match l.switch_end(nodes) {
            Some(s) => (
                Segment::Switch(l.ends[s].node),
                nodes[l.ends[s].node].subnet,
            ),
            None => (Segment::Link(li), l.subnet.as_ref().map(|(n, _)| *n)),
        };
        // Explicit addresses first, so planning goes around them.
        for (li, l) in links.iter_mut().enumerate() {
            let (seg, subnet) = segment_of(l, li, &self.nodes);
            let mut explicit_nets = Vec::new();
            for e in l.ends.iter_mut() {
                let AddrSpec::Explicit(addr, prefix, span) = &e.addr else {
                    continue;
                };
                let node = self.nodes[e.node].name.clone();
                let net = match (subnet, prefix) {
                    (Some(net), prefix) => {
                        if !net.contains(addr) {
                            self.r.error(
                                span.clone(),
                                format!("address {addr} is outside subnet {net} of this link"),
                                format!(
                                    "use an address inside {net}, or \"auto\" to have one planned"
                                ),
                            );
                            continue;
                        }
                        if let Some(p) = prefix.filter(|p| *p != net.prefix_len()) {
                            self.r.error(
                                span.clone(),
                                format!(
                                    "address {addr}/{p} has a different length than subnet {net}"
                                ),
                                format!("write \"{addr}/{}\" or just \"{addr}\"", net.prefix_len()),
                            );
                            continue;
                        }
                        let pool = pools.entry(seg).or_insert_with(|| (net, Pool::new(net)));
                        match pool.1.reserve(*addr) {
                            Ok(()) => {}
                            Err(Refused::NotUsable) => {
                                self.r.error(
                                    span.clone(),
                                    format!(
                                        "address {addr} is the network or broadcast address of {net}"
                                    ),
                                    format!(
                                        "usable addresses of {net} run from {} to {}",
                                        Ipv4Addr::from(u32::from(net.network()) + 1),
                                        Ipv4Addr::from(u32::from(net.broadcast()).saturating_sub(1))
                                    ),
                                );
                                continue;
                            }
                            Err(Refused::Outside) | Err(Refused::Taken) => {}
                        }
                        net
                    }
                    (None, Some(p)) => match Ipv4Net::new(*addr, *p) {
                        Ok(net) => net,
                        Err(_) => continue,
                    },
                    (None, None) => {
                        self.r.error(
                            span.clone(),
                            format!("address {addr} has no prefix length and no subnet to take it from"),
                            format!("write \"{addr}/24\" (or the length you mean), or give the link or switch a `subnet`"),
                        );
                        continue;
                    }
                };
                if let Some((other, pos)) = owners.get(addr) {
                    let line = self.r.line_of(*pos);
                    self.r.error(
                        span.clone(),
                        format!("address {addr} is already used by {other} (line {line})"),
                        "every interface needs an address of its own",
                    );
                    continue;
                }
                owners.insert(*addr, (node, span.start));
                e.planned = Ipv4Net::new(*addr, net.prefix_len()).ok();
                explicit_nets.push(net.trunc());
            }
            if subnet.is_none() && explicit_nets.len() == 2 && explicit_nets[0] != explicit_nets[1]
            {
                self.r.error(
                    l.span.clone(),
                    format!(
                        "the two addresses of this link are on different subnets ({} and {})",
                        explicit_nets[0], explicit_nets[1]
                    ),
                    "both ends of a point-to-point link share one subnet; fix one address",
                );
            }
        }
        // Then planned addresses: per segment, routers first, then hosts, in link order.
        let mut wanted: Vec<(Segment, u8, usize, usize, usize)> = Vec::new();
        for (li, l) in links.iter().enumerate() {
            let (seg, subnet) = segment_of(l, li, &self.nodes);
            let Some(net) = subnet else { continue };
            pools.entry(seg).or_insert_with(|| (net, Pool::new(net)));
            for (ei, e) in l.ends.iter().enumerate() {
                let kind = &self.nodes[e.node].kind;
                if matches!(e.addr, AddrSpec::Auto) && *kind != Kind::Switch {
                    let rank = u8::from(*kind != Kind::Router);
                    wanted.push((seg, rank, l.pos, li, ei));
                }
            }
        }
        wanted.sort();
        for (seg, _, _, li, ei) in wanted {
            let Some((net, pool)) = pools.get_mut(&seg) else {
                continue;
            };
            let node = self.nodes[links[li].ends[ei].node].name.clone();
            match pool.next() {
                Some(addr) => {
                    links[li].ends[ei].planned = Ipv4Net::new(addr, net.prefix_len()).ok();
                }
                None => {
                    let owner = match seg {
                        Segment::Switch(n) => format!("switch {}", self.nodes[n].name),
                        Segment::Link(_) => "this link".to_string(),
                    };
                    self.r.error(
                        links[li].span.clone(),
                        format!("subnet {net} of {owner} has no address left for {node}"),
                        format!(
                            "its {} usable addresses are all taken; use a larger subnet (e.g. a \
                             /24), or fewer interfaces on it",
                            pool.usable()
                        ),
                    );
                }
            }
        }
    }

    fn build_nodes(&mut self, links: &[LinkDecl]) -> Vec<NodePlan> {
        let mut plans: Vec<NodePlan> = self
            .nodes
            .iter()
            .map(|n| NodePlan {
                name: n.name.clone(),
                kind: match &n.kind {
                    Kind::Switch => NodeKind::Switch,
                    Kind::Router => NodeKind::Router,
                    Kind::Host => NodeKind::Host,
                    Kind::Container(host) => NodeKind::Container { host: host.clone() },
                },
                interfaces: Vec::new(),
                routes: Vec::new(),
                forwarding: n.kind == Kind::Router,
                bridge: None,
            })
            .collect();
        for l in links {
            let mtu = self.link_mtu(l);
            for (i, e) in l.ends.iter().enumerate() {
                let peer = &l.ends[1 - i];
                let is_switch = self.nodes[e.node].kind == Kind::Switch;
                plans[e.node].interfaces.push(IfacePlan {
                    name: e.iface.clone(),
                    mtu,
                    addrs: e.planned.into_iter().collect(),
                    peer: Endpoint {
                        node: self.nodes[peer.node].name.clone(),
                        iface: peer.iface.clone(),
                    },
                    bridge_port: is_switch,
                });
            }
        }
        for (plan, node) in plans.iter_mut().zip(&self.nodes) {
            if node.kind == Kind::Switch {
                let mtu = plan
                    .interfaces
                    .iter()
                    .map(|i| i.mtu)
                    .min()
                    .or(node.mtu)
                    .unwrap_or(DEFAULT_MTU);
                plan.bridge = Some(BridgePlan {
                    name: BRIDGE_NAME.to_string(),
                    mtu,
                });
            }
        }
        plans
    }

    /// Resolves a next hop (address or node name) for node `me`.
    fn next_hop(&mut self, me: &NodePlan, via: &Spanned<String>, what: &str) -> Option<Ipv4Addr> {
        let text = via.get_ref().trim();
        let me_index = self.by_name.get(&me.name).copied().unwrap_or(usize::MAX);
        let mine: Vec<Ipv4Net> = me.interfaces.iter().flat_map(|i| i.addrs.clone()).collect();
        let nets = || {
            let list: Vec<String> = mine.iter().map(|n| n.trunc().to_string()).collect();
            if list.is_empty() {
                "it has no addresses".to_string()
            } else {
                format!("its subnets: {}", list.join(", "))
            }
        };
        if let Ok(addr) = text.parse::<Ipv4Addr>() {
            if !UNDERLAY.contains(&addr) {
                self.r.error(
                    via.span(),
                    format!("{what} {addr} is outside {UNDERLAY}"),
                    format!("{RFC2544}; name an address on one of {}'s subnets", me.name),
                );
                return None;
            }
            if mine.iter().any(|n| n.addr() == addr) {
                self.r.error(
                    via.span(),
                    format!("{what} {addr} is {}'s own address", me.name),
                    "name the address of the next hop, e.g. the router on this subnet",
                );
                return None;
            }
            if !mine.iter().any(|n| n.contains(&addr)) {
                if self.broken.contains(&me_index) {
                    return None;
                }
                self.r.error(
                    via.span(),
                    format!("{what} {addr} is not on any subnet of {}", me.name),
                    format!(
                        "a next hop must be directly reachable ({}); name an address on one of \
                         them, or the router by name",
                        nets()
                    ),
                );
                return None;
            }
            return Some(addr);
        }
        let Some(&target) = self.by_name.get(text) else {
            let known: Vec<&str> = self
                .nodes
                .iter()
                .map(|n| n.name.as_str())
                .take(12)
                .collect();
            let help = format!(
                "write an address like \"198.18.1.1\", or the name of a node that shares a \
                 subnet with {} (nodes: {})",
                me.name,
                known.join(", ")
            );
            self.r.error(
                via.span(),
                format!("{what} {text:?} is neither an IPv4 address nor a node"),
                help,
            );
            return None;
        };
        if self.nodes[target].name == me.name {
            self.r.error(
                via.span(),
                format!("{what} of {} is {} itself", me.name, me.name),
                "name the next hop, e.g. the router on this subnet",
            );
            return None;
        }
        let theirs = self.planned_addrs.get(target).cloned().unwrap_or_default();
        let shared = mine.iter().find_map(|m| {
            theirs
                .iter()
                .find(|t| t.trunc() == m.trunc())
                .map(|t| t.addr())
        });
        if shared.is_none() && !self.broken.contains(&target) && !self.broken.contains(&me_index) {
            self.r.error(
                via.span(),
                format!("{what} {text:?} shares no subnet with {}", me.name),
                format!(
                    "a next hop must be directly reachable ({}); link both to one switch, or \
                     name a node that is",
                    nets()
                ),
            );
        }
        shared
    }

    fn plan_routes(&mut self, plans: &mut [NodePlan]) {
        self.planned_addrs = plans
            .iter()
            .map(|p| p.interfaces.iter().flat_map(|i| i.addrs.clone()).collect())
            .collect();
        let topo = self.topo;
        let decls = topo
            .router
            .iter()
            .map(|r| (&r.get_ref().name, &r.get_ref().gateway, &r.get_ref().routes))
            .chain(
                topo.host
                    .iter()
                    .map(|h| (&h.get_ref().name, &h.get_ref().gateway, &h.get_ref().routes)),
            );
        for (name, gateway, routes) in decls {
            let Some(&i) = self.by_name.get(name.get_ref().as_str()) else {
                continue;
            };
            if plans[i].name != *name.get_ref() || matches!(plans[i].kind, NodeKind::Switch) {
                continue;
            }
            let me = plans[i].clone();
            let mut out: Vec<(RoutePlan, Range<usize>)> = Vec::new();
            if let Some(gw) = gateway {
                if let Some(via) = self.next_hop(&me, gw, "gateway") {
                    out.push((
                        RoutePlan {
                            dst: Ipv4Net::default(),
                            via: Some(via),
                            dev: None,
                        },
                        gw.span(),
                    ));
                }
            }
            for route in routes {
                let route = route.get_ref();
                let dst_text = route.dst.get_ref().trim();
                let dst = if dst_text == "default" || dst_text == "0.0.0.0/0" {
                    Some(Ipv4Net::default())
                } else {
                    self.subnet(&route.dst, BENCHMARK, "route destination")
                };
                let via = self.next_hop(&me, &route.via, "route via");
                let Some(dst) = dst else { continue };
                if let Some((_, first)) = out.iter().find(|(r, _)| r.dst == dst) {
                    let line = self.r.line_of(first.start);
                    self.r.error(
                        route.dst.span(),
                        format!(
                            "{} has a second route to {} (the first is on line {line})",
                            me.name,
                            if dst.prefix_len() == 0 {
                                "default".to_string()
                            } else {
                                dst.to_string()
                            }
                        ),
                        "keep one route per destination (`gateway` is the route to default)",
                    );
                    continue;
                }
                if let Some(via) = via {
                    out.push((
                        RoutePlan {
                            dst,
                            via: Some(via),
                            dev: None,
                        },
                        route.dst.span(),
                    ));
                }
            }
            plans[i].routes = out.into_iter().map(|(r, _)| r).collect();
        }
    }

    fn overlay(&mut self) -> Option<OverlayPlan> {
        let o = self.topo.overlay.as_ref()?;
        let range = self.subnet(&o.range, OVERLAY, "overlay range");
        if let Some(p) = &o.password {
            if p.get_ref().is_empty() {
                self.r.error(
                    p.span(),
                    "the overlay password is empty",
                    "set a password to encrypt the overlay, or remove the key for an \
                     unencrypted one",
                );
            }
        }
        let mtu = match o.mtu.as_ref().map(|m| (*m.get_ref(), m.span())) {
            None | Some((OverlayMtu::Auto, _)) => None,
            Some((OverlayMtu::Bytes(v), span)) => {
                let fits = u32::try_from(v)
                    .ok()
                    .filter(|v| (MIN_MTU..=MAX_MTU).contains(v));
                if fits.is_none() {
                    self.r.error(
                        span,
                        format!("overlay MTU {v} is out of range"),
                        format!(
                            "use \"auto\" (detected from the underlay) or a number from \
                             {MIN_MTU} to {MAX_MTU}"
                        ),
                    );
                }
                fits
            }
        };
        let mut host_passwords = std::collections::BTreeMap::new();
        if let Some(map) = &o.host_passwords {
            for (host, password) in map.get_ref() {
                let known = self
                    .by_name
                    .get(host.as_str())
                    .map(|&i| &self.nodes[i].kind);
                match known {
                    Some(Kind::Host) => {}
                    Some(other) => {
                        let word = other.word();
                        self.r.error(
                            map.span(),
                            format!("host_passwords names {host:?}, a {word}"),
                            "only hosts run overlay routers: name a host",
                        );
                        continue;
                    }
                    None => {
                        let help = self.missing_node_help(host, "host");
                        self.r.error(
                            map.span(),
                            format!("host_passwords names {host:?}, which is not a node"),
                            help,
                        );
                        continue;
                    }
                }
                let p = password.get_ref();
                host_passwords.insert(host.clone(), (!p.is_empty()).then(|| p.clone()));
            }
        }
        Some(OverlayPlan {
            range: range?,
            encrypted: o.password.is_some(),
            mtu,
            password: o.password.as_ref().map(|p| p.get_ref().clone()),
            host_passwords,
        })
    }

    /// Resolves an expect target: `node`, `node:iface` or an address.
    pub(super) fn target(&mut self, to: &Spanned<String>, plans: &[NodePlan]) -> Option<Ipv4Addr> {
        let text = to.get_ref().trim();
        if let Ok(addr) = text.parse::<Ipv4Addr>() {
            if !BENCHMARK.contains(&addr) {
                self.r.error(
                    to.span(),
                    format!("expect target {addr} is outside {BENCHMARK}"),
                    format!("{RFC2544}; probe an address of the lab"),
                );
                return None;
            }
            return Some(addr);
        }
        let (node, iface) = match text.split_once(':') {
            Some((n, i)) => (n, Some(i)),
            None => (text, None),
        };
        let name = Spanned::new(to.span(), node.to_string());
        let i = self.node_ref(&name, "expect target")?;
        let plan = &plans[i];
        let found = match iface {
            Some(iface) => {
                let Some(ifp) = plan.interfaces.iter().find(|p| p.name == iface) else {
                    let names: Vec<&str> =
                        plan.interfaces.iter().map(|p| p.name.as_str()).collect();
                    self.r.error(
                        to.span(),
                        format!("{node} has no interface {iface:?}"),
                        if names.is_empty() {
                            format!("{node} has no interfaces; target another node")
                        } else {
                            format!("its interfaces are: {}", names.join(", "))
                        },
                    );
                    return None;
                };
                ifp.addrs.first().map(|a| a.addr())
            }
            None => plan
                .interfaces
                .iter()
                .find_map(|p| p.addrs.first())
                .map(|a| a.addr()),
        };
        if found.is_none() && !self.broken.contains(&i) {
            let help = match &plan.kind {
                NodeKind::Container { .. } => {
                    "containers get overlay addresses later; target a host, a router or an address"
                }
                NodeKind::Switch => {
                    "a switch has no address; target a host, a router or an address"
                }
                _ => "give it an address (a switch with a `subnet`, or `addresses` on its link)",
            };
            self.r.error(
                to.span(),
                format!("expect target {text:?} has no address"),
                help,
            );
        }
        found
    }
}

/// The keys of a `shape` table or of one of its per-direction overrides, with where they are.
struct ShapeKeys<'a> {
    rate: Option<&'a Spanned<String>>,
    delay: Option<&'a Spanned<String>>,
    jitter: Option<&'a Spanned<String>>,
    distribution_v: Option<&'a Spanned<String>>,
    loss: Option<&'a Spanned<String>>,
    loss_correlation_v: Option<&'a Spanned<String>>,
    reorder_v: Option<&'a Spanned<String>>,
    duplicate: Option<&'a Spanned<String>>,
    corrupt: Option<&'a Spanned<String>>,
    limit: Option<&'a Spanned<u32>>,
    /// Spans of the keys a failed combination check points at.
    reorder: Option<Range<usize>>,
    loss_correlation: Option<Range<usize>>,
    distribution: Option<Range<usize>>,
    limit_span: Option<Range<usize>>,
    any: Option<Range<usize>>,
}

macro_rules! shape_keys {
    ($s:expr) => {{
        let s = $s;
        let any = [
            &s.rate,
            &s.delay,
            &s.jitter,
            &s.distribution,
            &s.loss,
            &s.loss_correlation,
            &s.reorder,
            &s.duplicate,
            &s.corrupt,
        ]
        .into_iter()
        .flatten()
        .map(|v| v.span())
        .next();
        ShapeKeys {
            rate: s.rate.as_ref(),
            delay: s.delay.as_ref(),
            jitter: s.jitter.as_ref(),
            distribution_v: s.distribution.as_ref(),
            loss: s.loss.as_ref(),
            loss_correlation_v: s.loss_correlation.as_ref(),
            reorder_v: s.reorder.as_ref(),
            duplicate: s.duplicate.as_ref(),
            corrupt: s.corrupt.as_ref(),
            limit: s.limit.as_ref(),
            reorder: s.reorder.as_ref().map(|v| v.span()),
            loss_correlation: s.loss_correlation.as_ref().map(|v| v.span()),
            distribution: s.distribution.as_ref().map(|v| v.span()),
            limit_span: s.limit.as_ref().map(|v| v.span()),
            any,
        }
    }};
}

impl<'a> ShapeKeys<'a> {
    fn of_link(s: &'a topo_types::LinkShape) -> Self {
        shape_keys!(s)
    }

    fn of_spec(s: &'a topo_types::ShapeSpec) -> Self {
        shape_keys!(s)
    }
}
