//! Checking and resolving `[[expect]]` and `[[step]]` tables: every node they name exists and
//! has the right kind, targets have addresses, bounds parse, step names are unique and the
//! steps a stream runs `until` come later.

use std::ops::Range;

use toml::Spanned;

use super::super::expectation::{
    Above, Bound, DatapathWant, Expectation, Limit, Metric, MtuBound, ReachProto, Target,
};
use super::super::plan::{LinkPlan, NodeKind, NodePlan};
use super::super::shape;
use super::super::step::{DropRule, ImpairPlan, StepAction, StepPlan};
use super::super::step_types::{Expect, ExpectKind, ExpectMtu, Impair, ImpairKind};
use super::{closest, Kind, Planner};

/// How long a `datapath` expectation waits by default: the router's first promotion to the
/// fast path takes a few heartbeats, and a loaded machine needs more.
const DATAPATH_WITHIN_MS: u64 = 20_000;
/// Runs of a `perf` expectation by default; the median counts.
const PERF_REPEATS: u32 = 3;
/// Length of one `perf` run by default.
const PERF_DURATION_MS: u64 = 2_000;

impl Planner<'_> {
    /// `[lab] needs`: kernel features by the names `netsim doctor` prints.
    pub(super) fn needs(&mut self) -> Vec<String> {
        let Some(list) = self.topo.lab.as_ref().and_then(|l| l.needs.as_ref()) else {
            return Vec::new();
        };
        let names: Vec<&str> = crate::caps::Feature::ALL.iter().map(|f| f.name()).collect();
        let mut out = Vec::new();
        for need in list {
            if names.contains(&need.get_ref().as_str()) {
                out.push(need.get_ref().clone());
            } else {
                let help = match closest(need.get_ref(), names.iter().copied()) {
                    Some(c) => format!("did you mean {c:?}? Features: {}", names.join(", ")),
                    None => format!("use one of: {}", names.join(", ")),
                };
                self.r.error(
                    need.span(),
                    format!("{:?} is not a kernel feature netsim knows", need.get_ref()),
                    help,
                );
            }
        }
        out
    }

    /// The top-level `[[expect]]` tables, resolved.
    pub(super) fn expects(&mut self, plans: &[NodePlan]) -> Vec<Expectation> {
        let topo = self.topo;
        let last = topo.step.last().map(|s| s.get_ref().name.get_ref().clone());
        let mut out = Vec::new();
        for e in &topo.expect {
            out.extend(self.expectation(e, plans, last.as_deref().unwrap_or("")));
        }
        out
    }

    /// The `[[step]]` tables, resolved.
    pub(super) fn steps(&mut self, plans: &[NodePlan], links: &[LinkPlan]) -> Vec<StepPlan> {
        let topo = self.topo;
        let names: Vec<&Spanned<String>> = topo.step.iter().map(|s| &s.get_ref().name).collect();
        let mut out = Vec::new();
        for (i, step) in topo.step.iter().enumerate() {
            let s = step.get_ref();
            let name = s.name.get_ref().trim();
            if name.is_empty() {
                self.r.error(
                    s.name.span(),
                    "a step needs a name",
                    "name it in a few words, e.g. name = \"block the fast path on h2\"",
                );
            }
            if let Some(first) = names[..i].iter().find(|n| n.get_ref().trim() == name) {
                let line = self.r.line_of(first.span().start);
                self.r.error(
                    s.name.span(),
                    format!("a second step is named {name:?} (the first is on line {line})"),
                    "step names are unique: a report says which step failed by its name",
                );
            }
            let action = match (&s.impair, &s.heal) {
                (Some(_), Some(heal)) => {
                    self.r.error(
                        heal.span(),
                        "a step either impairs or heals, not both",
                        "split it into two [[step]] tables",
                    );
                    StepAction::Check
                }
                (Some(impair), None) => match self.impair(impair, plans, links) {
                    Some(fault) => StepAction::Impair { fault },
                    None => StepAction::Check,
                },
                (None, Some(heal)) => {
                    if heal.get_ref() != "all" {
                        self.r.error(
                            heal.span(),
                            format!("heal = {:?} is not known", heal.get_ref()),
                            "write heal = \"all\": it undoes every impairment of the earlier \
                             steps",
                        );
                    }
                    StepAction::Heal
                }
                (None, None) => StepAction::Check,
            };
            let later: Vec<&str> = names[i..].iter().map(|n| n.get_ref().as_str()).collect();
            let last = later.last().copied().unwrap_or(name);
            let mut expects = Vec::new();
            for e in &s.expect {
                if let Some(until) = &e.get_ref().until {
                    if !later.contains(&until.get_ref().as_str()) {
                        self.unknown_step(until, &later);
                    }
                }
                expects.extend(self.expectation(e, plans, last));
            }
            out.push(StepPlan {
                name: name.to_string(),
                action,
                expects,
            });
        }
        if topo.step.is_empty() {
            for e in &topo.expect {
                if let Some(until) = &e.get_ref().until {
                    self.unknown_step(until, &[]);
                }
            }
        }
        out
    }

    fn unknown_step(&mut self, until: &Spanned<String>, later: &[&str]) {
        let help = if later.is_empty() {
            "there are no [[step]] tables after this one; leave `until` out to check the \
             stream at the end"
                .to_string()
        } else {
            match closest(until.get_ref(), later.iter().copied()) {
                Some(c) => format!("did you mean {c:?}? Steps from here: {}", later.join(", ")),
                None => format!("name this step or a later one: {}", later.join(", ")),
            }
        };
        self.r.error(
            until.span(),
            format!(
                "until = {:?} names no step at or after this one",
                until.get_ref()
            ),
            help,
        );
    }

    /// One `[[expect]]` table: one expectation, or several for a `group` or `pairs`.
    fn expectation(
        &mut self,
        e: &Spanned<Expect>,
        plans: &[NodePlan],
        last_step: &str,
    ) -> Vec<Expectation> {
        let at = e.span().start..e.span().start + 1;
        let x = e.get_ref();
        self.unused_keys(x, &at);
        match x.kind {
            ExpectKind::Reach => self.reach(x, plans, &at),
            ExpectKind::Mtu => self.mtu_expect(x, plans, &at).into_iter().collect(),
            ExpectKind::Datapath => self.datapath(x, &at).into_iter().collect(),
            ExpectKind::Refused => self.refused(x, &at).into_iter().collect(),
            ExpectKind::NoPlaintext => self.no_plaintext(x, &at).into_iter().collect(),
            ExpectKind::Perf => self.perf(x, plans, &at).into_iter().collect(),
            ExpectKind::Stream => {
                let Some((from, to)) = self.ends(x, plans, &at, "stream") else {
                    return Vec::new();
                };
                let until = x
                    .until
                    .as_ref()
                    .map_or(last_step.to_string(), |u| u.get_ref().clone());
                vec![Expectation::Stream { from, to, until }]
            }
        }
    }

    /// Keys that mean nothing for the table's kind are mistakes, not options.
    fn unused_keys(&mut self, x: &Expect, at: &Range<usize>) {
        let kind = match x.kind {
            ExpectKind::NoPlaintext => "no_plaintext".to_string(),
            k => format!("{k:?}").to_lowercase(),
        };
        let allowed: &[&str] = match x.kind {
            ExpectKind::Reach => &[
                "from",
                "to",
                "group",
                "pairs",
                "reachable",
                "over",
                "proto",
                "within",
            ],
            ExpectKind::Mtu => &["from", "to", "over", "mtu", "above"],
            ExpectKind::Datapath => &["from", "to", "datapath", "reason", "within"],
            ExpectKind::Perf => &[
                "from", "to", "over", "test", "min", "max", "repeats", "duration",
            ],
            ExpectKind::Stream => &["from", "to", "over", "until"],
            ExpectKind::Refused => &["from", "to", "within"],
            ExpectKind::NoPlaintext => &["from", "to"],
        };
        let present: [(&str, Option<Range<usize>>); 16] = [
            ("from", x.from.as_ref().map(Spanned::span)),
            ("to", x.to.as_ref().map(Spanned::span)),
            (
                "group",
                x.group.as_ref().and_then(|g| g.first()).map(Spanned::span),
            ),
            (
                "pairs",
                x.pairs.as_ref().and_then(|g| g.first()).map(Spanned::span),
            ),
            ("reachable", x.reachable.map(|_| at.clone())),
            ("over", x.over.as_ref().map(Spanned::span)),
            ("proto", x.proto.as_ref().map(Spanned::span)),
            ("mtu", x.mtu.as_ref().map(Spanned::span)),
            ("above", x.above.as_ref().map(Spanned::span)),
            ("datapath", x.datapath.as_ref().map(Spanned::span)),
            ("reason", x.reason.as_ref().map(Spanned::span)),
            ("within", x.within.as_ref().map(Spanned::span)),
            ("test", x.test.as_ref().map(Spanned::span)),
            ("min", x.min.as_ref().map(Spanned::span)),
            ("max", x.max.as_ref().map(Spanned::span)),
            ("until", x.until.as_ref().map(Spanned::span)),
        ];
        let extra = [
            ("repeats", x.repeats.as_ref().map(Spanned::span)),
            ("duration", x.duration.as_ref().map(Spanned::span)),
        ];
        for (key, span) in present.into_iter().chain(extra) {
            if let Some(span) = span {
                if !allowed.contains(&key) {
                    self.r.error(
                        span,
                        format!("`{key}` means nothing in a {kind} expectation"),
                        format!(
                            "remove it; a {kind} expectation takes: {}",
                            allowed.join(", ")
                        ),
                    );
                }
            }
        }
    }

    fn missing(&mut self, at: &Range<usize>, kind: &str, key: &str, example: &str) {
        self.r.error(
            at.clone(),
            format!("this {kind} expectation has no `{key}`"),
            format!("add it, e.g. {key} = {example}"),
        );
    }

    fn within_ms(&mut self, x: &Expect) -> Option<u64> {
        let w = x.within.as_ref()?;
        self.duration_ms(w)
    }

    fn duration_ms(&mut self, w: &Spanned<String>) -> Option<u64> {
        match shape::parse_duration(w.get_ref()) {
            Ok(ns) => Some(ns / 1_000_000),
            Err(problem) => {
                self.r.error(
                    w.span(),
                    problem,
                    "a duration: a number and ms or s, e.g. \"5s\"",
                );
                None
            }
        }
    }

    /// A `from` node that can run a probe (not a switch).
    fn probe_node(&mut self, from: &Spanned<String>) -> Option<String> {
        let i = self.node_ref(from, "expect from")?;
        if self.nodes[i].kind == Kind::Switch {
            self.r.error(
                from.span(),
                format!(
                    "expect from {:?}: a switch has no address to probe from",
                    from.get_ref()
                ),
                "probe from a host, router or container",
            );
            return None;
        }
        Some(from.get_ref().clone())
    }

    /// Whether `to` names a container whose address the overlay gives.
    fn is_overlay_target(&self, to: &str, plans: &[NodePlan]) -> bool {
        self.topo.overlay.is_some()
            && self
                .nodes
                .iter()
                .position(|n| n.name == to.trim())
                .is_some_and(|i| matches!(plans[i].kind, NodeKind::Container { .. }))
    }

    /// Resolves a target, checking it against `over` when the file sets it.
    fn resolve(
        &mut self,
        to: &Spanned<String>,
        over: Option<&Spanned<String>>,
        plans: &[NodePlan],
    ) -> Option<Target> {
        let overlay = self.is_overlay_target(to.get_ref(), plans);
        if let Some(over) = over {
            let want_overlay = match over.get_ref().as_str() {
                "overlay" => true,
                "underlay" => false,
                other => {
                    self.r.error(
                        over.span(),
                        format!("over = {other:?} is not known"),
                        "write over = \"overlay\" (a container target) or \"underlay\" (a host \
                         or router)",
                    );
                    return None;
                }
            };
            if want_overlay != overlay {
                let help = if want_overlay {
                    "the overlay carries containers: target a container of a host (and give \
                     the topology an [overlay] section)"
                } else {
                    "a container is only reachable over the overlay: target its host, or write \
                     over = \"overlay\""
                };
                self.r.error(
                    to.span(),
                    format!(
                        "{:?} is not reached over the {}",
                        to.get_ref(),
                        over.get_ref()
                    ),
                    help,
                );
                return None;
            }
        }
        if overlay {
            return Some(Target::Overlay {
                container: to.get_ref().trim().to_string(),
            });
        }
        let addr = self.target(to, plans)?;
        Some(Target::Underlay {
            to: to.get_ref().clone(),
            addr,
        })
    }

    /// `from` and a resolved `to`, both required.
    fn ends(
        &mut self,
        x: &Expect,
        plans: &[NodePlan],
        at: &Range<usize>,
        kind: &str,
    ) -> Option<(String, Target)> {
        let (Some(from), Some(to)) = (&x.from, &x.to) else {
            if x.from.is_none() {
                self.missing(at, kind, "from", "\"c1\"");
            }
            if x.to.is_none() {
                self.missing(at, kind, "to", "\"c2\"");
            }
            return None;
        };
        let from = self.probe_node(from);
        let to = self.resolve(to, x.over.as_ref(), plans);
        Some((from?, to?))
    }

    fn reach(&mut self, x: &Expect, plans: &[NodePlan], at: &Range<usize>) -> Vec<Expectation> {
        let proto = match &x.proto {
            None => ReachProto::Icmp,
            Some(p) => match p.get_ref().as_str() {
                "icmp" => ReachProto::Icmp,
                "tcp" => ReachProto::Tcp,
                "udp" => ReachProto::Udp,
                other => {
                    self.r.error(
                        p.span(),
                        format!("proto = {other:?} is not known"),
                        "use icmp (echo), tcp (a connection) or udp (a datagram and its echo)",
                    );
                    return Vec::new();
                }
            },
        };
        let size = match &x.size {
            None => None,
            Some(n) if proto != ReachProto::Icmp => {
                self.r.error(
                    n.span(),
                    "size is the payload of an ICMP echo",
                    "drop size, or use proto = \"icmp\"",
                );
                return Vec::new();
            }
            Some(n) => match u32::try_from(*n.get_ref()).ok().filter(|v| *v <= 65507) {
                Some(v) => Some(v),
                None => {
                    self.r.error(
                        n.span(),
                        format!("an echo payload of {} bytes cannot be sent", n.get_ref()),
                        "use 0 to 65507 bytes, e.g. size = 10000",
                    );
                    return Vec::new();
                }
            },
        };
        let within_ms = self.within_ms(x);
        let reachable = x.reachable.unwrap_or(true);
        let mut pairs: Vec<(Spanned<String>, Spanned<String>)> = Vec::new();
        let forms = [
            x.from.is_some() || x.to.is_some(),
            x.group.is_some(),
            x.pairs.is_some(),
        ];
        if forms.iter().filter(|f| **f).count() > 1 {
            self.r.error(
                at.clone(),
                "a reach expectation names its pairs once: `from` and `to`, or `group`, or \
                 `pairs`",
                "keep one of them; write another [[expect]] for the rest",
            );
            return Vec::new();
        }
        if let Some(group) = &x.group {
            if group.len() < 2 {
                let span = group.first().map_or(at.clone(), Spanned::span);
                self.r.error(
                    span,
                    "a group needs at least two nodes",
                    "list every node that must reach every other, e.g. group = [\"c1\", \"c2\", \"c3\"]",
                );
            }
            for a in group {
                for b in group {
                    if a.get_ref() != b.get_ref() {
                        pairs.push((a.clone(), b.clone()));
                    }
                }
            }
        } else if let Some(list) = &x.pairs {
            for pair in list {
                match pair.get_ref().as_slice() {
                    [a, b] => pairs.push((a.clone(), b.clone())),
                    _ => self.r.error(
                        pair.span(),
                        format!("a pair has two nodes, this one {}", pair.get_ref().len()),
                        "write each pair as [\"from\", \"to\"]",
                    ),
                }
            }
        } else {
            match (&x.from, &x.to) {
                (Some(a), Some(b)) => pairs.push((a.clone(), b.clone())),
                _ => {
                    self.r.error(
                        at.clone(),
                        "this reach expectation names no pair",
                        "add from = \"h1\" and to = \"h2\", or group = [\"c1\", \"c2\", \"c3\"], \
                         or pairs = [[\"c1\", \"c2\"]]",
                    );
                    return Vec::new();
                }
            }
        }
        let mut out = Vec::new();
        for (from, to) in pairs {
            let from_ok = self.probe_node(&from);
            let target = self.resolve(&to, x.over.as_ref(), plans);
            let (Some(from), Some(target)) = (from_ok, target) else {
                continue;
            };
            out.push(match target {
                Target::Overlay { container } => Expectation::OverlayReach {
                    from,
                    to: container,
                    reachable,
                    proto,
                    size,
                    within_ms,
                },
                Target::Underlay { to, addr } => Expectation::Reach {
                    from,
                    to,
                    addr,
                    reachable,
                    proto,
                    size,
                    within_ms,
                },
            });
        }
        out
    }

    fn mtu_expect(
        &mut self,
        x: &Expect,
        plans: &[NodePlan],
        at: &Range<usize>,
    ) -> Option<Expectation> {
        let ends = self.ends(x, plans, at, "mtu");
        let Some(mtu) = &x.mtu else {
            self.missing(at, "mtu", "mtu", "1450 or \"1400..1450\"");
            return None;
        };
        let bound = self.mtu_bound(mtu)?;
        let above = match &x.above {
            None => None,
            Some(a) => match Above::ALL.iter().find(|(n, _)| n == a.get_ref()) {
                Some((_, v)) => Some(*v),
                None => {
                    let names: Vec<&str> = Above::ALL.iter().map(|(n, _)| *n).collect();
                    self.r.error(
                        a.span(),
                        format!("above = {:?} is not a behaviour netsim names", a.get_ref()),
                        format!("use one of: {}", names.join(", ")),
                    );
                    return None;
                }
            },
        };
        let (from, to) = ends?;
        Some(Expectation::Mtu {
            from,
            to,
            bound,
            above,
        })
    }

    fn mtu_bound(&mut self, mtu: &Spanned<ExpectMtu>) -> Option<MtuBound> {
        let help = "an MTU from 68 to 65535, or a range like \"1400..1450\" (both included)";
        let ok = |v: i64| u32::try_from(v).ok().filter(|v| (68..=65535).contains(v));
        let bound = match mtu.get_ref() {
            ExpectMtu::Bytes(v) => ok(*v).map(|v| MtuBound { low: v, high: v }),
            ExpectMtu::Range(text) => text.split_once("..").and_then(|(a, b)| {
                let low = ok(a.trim().parse().ok()?)?;
                let high = ok(b.trim().parse().ok()?)?;
                (low <= high).then_some(MtuBound { low, high })
            }),
        };
        if bound.is_none() {
            self.r.error(
                mtu.span(),
                "this expected MTU is not one netsim can check",
                help,
            );
        }
        bound
    }

    /// The host a node stands for in a datapath expectation: a host itself, or a container's
    /// host.
    fn host_of(&mut self, name: &Spanned<String>) -> Option<String> {
        let i = self.node_ref(name, "datapath end")?;
        match &self.nodes[i].kind {
            Kind::Host => Some(self.nodes[i].name.clone()),
            Kind::Container(host) => Some(host.clone()),
            other => {
                self.r.error(
                    name.span(),
                    format!(
                        "{:?} is a {}: it runs no overlay router",
                        name.get_ref(),
                        other.word()
                    ),
                    "name two hosts (or two containers on different hosts): the connection \
                     between their routers is checked",
                );
                None
            }
        }
    }

    /// The two hosts of a connection expectation (`from` and `to`: hosts, or containers
    /// standing for theirs) and its label; `None` after reporting what is wrong.
    fn connection(
        &mut self,
        x: &Expect,
        at: &Range<usize>,
        kind: &str,
    ) -> Option<(String, String, String)> {
        if self.topo.overlay.is_none() {
            self.r.error(
                at.clone(),
                format!("a {kind} expectation needs an overlay, and this topology has none"),
                "add an [overlay] section (e.g. range = \"198.19.0.0/16\")",
            );
            return None;
        }
        if x.from.is_none() {
            self.missing(at, kind, "from", "\"h1\"");
        }
        if x.to.is_none() {
            self.missing(at, kind, "to", "\"h2\"");
        }
        let host = x.from.as_ref().and_then(|f| self.host_of(f));
        let peer = x.to.as_ref().and_then(|t| self.host_of(t));
        let (from, to) = (x.from.as_ref()?, x.to.as_ref()?);
        let (host, peer) = (host?, peer?);
        if host == peer {
            self.r.error(
                to.span(),
                format!(
                    "{:?} and {:?} are on the same host {host}",
                    from.get_ref(),
                    to.get_ref()
                ),
                "a connection joins two hosts: name nodes on different hosts",
            );
            return None;
        }
        let label = if *from.get_ref() == host && *to.get_ref() == peer {
            format!("{host} -> {peer}")
        } else {
            format!("{} -> {} ({host} -> {peer})", from.get_ref(), to.get_ref())
        };
        Some((label, host, peer))
    }

    fn datapath(&mut self, x: &Expect, at: &Range<usize>) -> Option<Expectation> {
        let ends = self.connection(x, at, "datapath");
        let want = match &x.datapath {
            None => {
                self.missing(at, "datapath", "datapath", "\"fast\"");
                None
            }
            Some(d) => match DatapathWant::ALL.iter().find(|(n, _)| n == d.get_ref()) {
                Some((_, w)) => Some(*w),
                None => {
                    let names: Vec<&str> = DatapathWant::ALL.iter().map(|(n, _)| *n).collect();
                    let help = match closest(d.get_ref(), names.iter().copied()) {
                        Some(c) => format!("did you mean {c:?}? Datapaths: {}", names.join(", ")),
                        None => format!(
                            "use one of: {} (fast: any kernel fast path)",
                            names.join(", ")
                        ),
                    };
                    self.r.error(
                        d.span(),
                        format!("datapath {:?} is not one the overlay has", d.get_ref()),
                        help,
                    );
                    None
                }
            },
        };
        let within_ms = self.within_ms(x).unwrap_or(DATAPATH_WITHIN_MS);
        let ((label, host, peer), want) = (ends?, want?);
        Some(Expectation::Datapath {
            label,
            host,
            peer,
            want,
            reason: x.reason.as_ref().map(|r| r.get_ref().clone()),
            within_ms,
        })
    }

    fn refused(&mut self, x: &Expect, at: &Range<usize>) -> Option<Expectation> {
        let ends = self.connection(x, at, "refused");
        let within_ms = self.within_ms(x).unwrap_or(DATAPATH_WITHIN_MS);
        let (label, host, peer) = ends?;
        let password = |h: &str| {
            let o = self.topo.overlay.as_ref()?;
            match o
                .host_passwords
                .as_ref()
                .and_then(|m| m.get_ref().get(h).map(|p| p.get_ref().clone()))
            {
                Some(p) => (!p.is_empty()).then_some(p),
                None => o.password.as_ref().map(|p| p.get_ref().clone()),
            }
        };
        if password(&host) == password(&peer) {
            self.r.error(
                at.clone(),
                format!("{host} and {peer} run with the same password: nothing is refused"),
                format!(
                    "give one of them another in [overlay], e.g. host_passwords = {{ {peer} = \
                     \"not the password\" }}"
                ),
            );
            return None;
        }
        Some(Expectation::Refused {
            label,
            host,
            peer,
            within_ms,
        })
    }

    fn no_plaintext(&mut self, x: &Expect, at: &Range<usize>) -> Option<Expectation> {
        self.connection(x, at, "no_plaintext")?;
        let (from, to) = (x.from.as_ref()?, x.to.as_ref()?);
        let mut container = |n: &Spanned<String>| {
            let i = self.node_ref(n, "no_plaintext end")?;
            match &self.nodes[i].kind {
                Kind::Container(host) => Some(host.clone()),
                other => {
                    let word = other.word();
                    self.r.error(
                        n.span(),
                        format!("{:?} is a {word}, not a container", n.get_ref()),
                        "name two containers on different hosts: the payload one sends the \
                         other is looked for on the underlay",
                    );
                    None
                }
            }
        };
        let sender = container(from);
        let host = container(to)?;
        sender?;
        Some(Expectation::NoPlaintext {
            from: from.get_ref().clone(),
            to: to.get_ref().clone(),
            host,
        })
    }

    fn perf(&mut self, x: &Expect, plans: &[NodePlan], at: &Range<usize>) -> Option<Expectation> {
        let ends = self.ends(x, plans, at, "perf");
        let Some(test) = &x.test else {
            self.missing(at, "perf", "test", "\"tcp_bw\"");
            return None;
        };
        let Some((_, metric)) = Metric::ALL.iter().find(|(n, _)| n == test.get_ref()) else {
            let names: Vec<&str> = Metric::ALL.iter().map(|(n, _)| *n).collect();
            self.r.error(
                test.span(),
                format!("test {:?} is not one netsim measures", test.get_ref()),
                format!("use one of: {}", names.join(", ")),
            );
            return None;
        };
        let metric = *metric;
        if x.min.is_none() && x.max.is_none() {
            self.r.error(
                test.span(),
                "this perf expectation has no bound",
                "add min = \"...\" and/or max = \"...\", e.g. min = \"0.85x native\"",
            );
        }
        let min = x.min.as_ref().and_then(|m| self.limit(m, metric));
        let max = x.max.as_ref().and_then(|m| self.limit(m, metric));
        let repeats = x.repeats.as_ref().map_or(PERF_REPEATS, |r| *r.get_ref());
        if !(1..=20).contains(&repeats) {
            if let Some(r) = &x.repeats {
                self.r.error(
                    r.span(),
                    "repeats must be from 1 to 20",
                    "the median of 3 is the default",
                );
            }
        }
        let duration_ms = match &x.duration {
            Some(d) => self.duration_ms(d)?,
            None => PERF_DURATION_MS,
        };
        let bound = Bound { min, max };
        let (from, to) = ends?;
        let native = if bound.needs_native() {
            Some(self.native_of(x, &from, &to, plans)?)
        } else {
            None
        };
        Some(Expectation::Perf {
            from,
            to,
            metric,
            bound,
            repeats,
            duration_ms,
            native,
        })
    }

    /// Where the native figure of a container pair is taken: between their hosts, over the
    /// underlay.
    fn native_of(
        &mut self,
        x: &Expect,
        from: &str,
        to: &Target,
        plans: &[NodePlan],
    ) -> Option<(String, Target)> {
        let span = x
            .min
            .as_ref()
            .or(x.max.as_ref())
            .map_or(0..0, Spanned::span);
        let host = |name: &str| {
            plans
                .iter()
                .find(|p| p.name == name)
                .map(|p| match &p.kind {
                    NodeKind::Container { host } => host.clone(),
                    _ => p.name.clone(),
                })
        };
        let (Target::Overlay { container }, Some(client)) = (to, host(from)) else {
            self.r.error(
                span,
                "a bound relative to native needs an overlay pair",
                "the native figure is taken between the hosts of two containers: measure from \
                 a container to a container, or write an absolute bound like \"100mbit\"",
            );
            return None;
        };
        let server = host(container)?;
        let addr = plans
            .iter()
            .find(|p| p.name == server)
            .and_then(|p| p.interfaces.iter().find_map(|i| i.addrs.first()))
            .map(|a| a.addr())?;
        Some((client, Target::Underlay { to: server, addr }))
    }

    fn limit(&mut self, text: &Spanned<String>, metric: Metric) -> Option<Limit> {
        let t = text.get_ref().trim();
        if let Some(factor) = t
            .strip_suffix("native")
            .map(|f| f.trim().trim_end_matches(['x', '*', '×']).trim())
        {
            return match factor.parse::<f64>() {
                Ok(f) if f > 0.0 && f <= 1000.0 => Some(Limit::Native((f * 1000.0).round() as u32)),
                _ => {
                    self.r.error(
                        text.span(),
                        format!("{t:?} is not a share of native"),
                        "write a factor and `x native`, e.g. \"0.85x native\"",
                    );
                    None
                }
            };
        }
        let parsed = match metric {
            Metric::TcpBw | Metric::UdpBw => shape::parse_rate(t),
            Metric::TcpLat | Metric::UdpLat => shape::parse_duration(t),
            Metric::Loss => shape::parse_percent(t).map(u64::from),
        };
        match parsed {
            Ok(v) => Some(Limit::Absolute(v)),
            Err(problem) => {
                let example = match metric {
                    Metric::TcpBw | Metric::UdpBw => "\"100mbit\"",
                    Metric::TcpLat | Metric::UdpLat => "\"2ms\"",
                    Metric::Loss => "\"1%\"",
                };
                self.r.error(
                    text.span(),
                    format!("bad bound for {}: {problem}", metric.name()),
                    format!("write e.g. {example}, or a share of native like \"0.85x native\""),
                );
                None
            }
        }
    }

    fn impair(
        &mut self,
        impair: &Spanned<Impair>,
        plans: &[NodePlan],
        links: &[LinkPlan],
    ) -> Option<ImpairPlan> {
        let at = impair.span().start..impair.span().start + 1;
        let i = impair.get_ref();
        // The kind as the file writes it (`DropUdpOver` is `drop_udp_over`).
        let kind = format!("{:?}", i.kind)
            .chars()
            .fold(String::new(), |mut k, c| {
                if c.is_ascii_uppercase() && !k.is_empty() {
                    k.push('_');
                }
                k.push(c.to_ascii_lowercase());
                k
            });
        let need = |r: &mut Self, key: &str, present: bool, example: &str| {
            if !present {
                r.r.error(
                    at.clone(),
                    format!("impair kind = \"{kind}\" needs `{key}`"),
                    format!("add {key} = {example}"),
                );
            }
            present
        };
        match i.kind {
            ImpairKind::Shape | ImpairKind::Cut => {
                if !need(self, "link", i.link.is_some(), "[\"h1\", \"sw1\"]") {
                    return None;
                }
                let (x, y) = self.impair_link(i.link.as_ref()?, links)?;
                if i.kind == ImpairKind::Cut {
                    return Some(ImpairPlan::Cut { x, y });
                }
                if !need(
                    self,
                    "shape",
                    i.shape.is_some(),
                    "{ delay = \"10ms\", loss = \"1%\" }",
                ) {
                    return None;
                }
                let changes = self.shape_changes(i.shape.as_ref()?)?;
                Some(ImpairPlan::Shape { x, y, changes })
            }
            ImpairKind::Partition => {
                let ok = need(self, "left", i.left.is_some(), "[\"h1\"]")
                    & need(self, "right", i.right.is_some(), "[\"h2\", \"h3\"]");
                if !ok {
                    return None;
                }
                let side = |r: &mut Self, list: &[Spanned<String>]| {
                    let names: Vec<String> = list
                        .iter()
                        .filter(|n| r.node_ref(n, "partition node").is_some())
                        .map(|n| n.get_ref().clone())
                        .collect();
                    (names.len() == list.len() && !list.is_empty()).then_some(names)
                };
                let left = side(self, i.left.as_deref()?);
                let right = side(self, i.right.as_deref()?);
                let (left, right) = (left?, right?);
                if let Some(both) = left.iter().find(|n| right.contains(n)) {
                    self.r.error(
                        at,
                        format!("node {both} is on both sides of the partition"),
                        "put each node on one side",
                    );
                    return None;
                }
                Some(ImpairPlan::Partition { left, right })
            }
            ImpairKind::Block => {
                let ok = need(self, "node", i.node.is_some(), "\"h2\"")
                    & need(self, "proto", i.proto.is_some(), "\"udp\"")
                    & need(self, "port", i.port.is_some(), "6784");
                if !ok {
                    return None;
                }
                let node = i.node.as_ref()?;
                self.node_ref(node, "block node")?;
                let proto = i.proto.as_ref()?;
                if !["tcp", "udp"].contains(&proto.get_ref().as_str()) {
                    self.r.error(
                        proto.span(),
                        format!("proto {:?} cannot be blocked", proto.get_ref()),
                        "use tcp or udp",
                    );
                    return None;
                }
                let port = i.port.as_ref()?;
                let Some(p) = u16::try_from(*port.get_ref()).ok().filter(|p| *p > 0) else {
                    self.r.error(
                        port.span(),
                        "a port is from 1 to 65535",
                        "e.g. port = 6784 (the fast path's)",
                    );
                    return None;
                };
                Some(ImpairPlan::Block {
                    node: node.get_ref().clone(),
                    proto: proto.get_ref().clone(),
                    port: p,
                })
            }
            ImpairKind::DropFragNeeded | ImpairKind::DropUdpOver => {
                let udp = i.kind == ImpairKind::DropUdpOver;
                let ok = need(self, "node", i.node.is_some(), "\"sw1\"")
                    & (!udp || need(self, "bytes", i.bytes.is_some(), "700"));
                if !ok {
                    return None;
                }
                let node = i.node.as_ref()?;
                self.node_ref(node, "drop node")?;
                let rule = match &i.bytes {
                    Some(b) if udp => {
                        let Some(bytes) = u16::try_from(*b.get_ref()).ok().filter(|n| *n >= 28)
                        else {
                            self.r.error(
                                b.span(),
                                "bytes is an IP packet length from 28 to 65535",
                                "e.g. bytes = 700 (weave's fragmentation test)",
                            );
                            return None;
                        };
                        DropRule::UdpOver { bytes }
                    }
                    _ => DropRule::FragNeeded,
                };
                Some(ImpairPlan::Drop {
                    node: node.get_ref().clone(),
                    rule,
                })
            }
            ImpairKind::Kill | ImpairKind::Restart => {
                if !need(self, "node", i.node.is_some(), "\"h2\"") {
                    return None;
                }
                let node = i.node.as_ref()?;
                let n = self.node_ref(node, "router node")?;
                if self.topo.overlay.is_none() || self.nodes[n].kind != Kind::Host {
                    self.r.error(
                        node.span(),
                        format!("{:?} runs no overlay router", node.get_ref()),
                        "routers run on hosts of a topology with an [overlay] section: name a host",
                    );
                    return None;
                }
                let node = node.get_ref().clone();
                let _ = plans;
                Some(if i.kind == ImpairKind::Kill {
                    ImpairPlan::Kill { node }
                } else {
                    ImpairPlan::Restart { node }
                })
            }
        }
    }

    /// The two ends of an existing link.
    fn impair_link(
        &mut self,
        link: &Spanned<Vec<Spanned<String>>>,
        links: &[LinkPlan],
    ) -> Option<(String, String)> {
        let [x, y] = link.get_ref().as_slice() else {
            self.r.error(
                link.span(),
                format!("a link has two ends, this one {}", link.get_ref().len()),
                "write link = [\"h1\", \"sw1\"]",
            );
            return None;
        };
        let (xi, yi) = (self.node_ref(x, "link end"), self.node_ref(y, "link end"));
        xi?;
        yi?;
        let (x, y) = (x.get_ref().clone(), y.get_ref().clone());
        let found = links
            .iter()
            .any(|l| (l.a.node == x && l.b.node == y) || (l.a.node == y && l.b.node == x));
        if !found {
            let of_x: Vec<String> = links
                .iter()
                .filter_map(|l| {
                    if l.a.node == x {
                        Some(l.b.node.clone())
                    } else if l.b.node == x {
                        Some(l.a.node.clone())
                    } else {
                        None
                    }
                })
                .collect();
            self.r.error(
                link.span(),
                format!("there is no link between {x} and {y}"),
                if of_x.is_empty() {
                    format!("{x} has no links")
                } else {
                    format!("{x} is linked to: {}", of_x.join(", "))
                },
            );
            return None;
        }
        Some((x, y))
    }

    /// A step's `shape` table as checked (key, value) pairs.
    fn shape_changes(
        &mut self,
        spec: &super::super::topology::ShapeSpec,
    ) -> Option<Vec<(String, String)>> {
        let keys: [(&str, Option<&Spanned<String>>); 9] = [
            ("rate", spec.rate.as_ref()),
            ("delay", spec.delay.as_ref()),
            ("jitter", spec.jitter.as_ref()),
            ("distribution", spec.distribution.as_ref()),
            ("loss", spec.loss.as_ref()),
            ("loss_correlation", spec.loss_correlation.as_ref()),
            ("reorder", spec.reorder.as_ref()),
            ("duplicate", spec.duplicate.as_ref()),
            ("corrupt", spec.corrupt.as_ref()),
        ];
        let mut out = Vec::new();
        let mut ok = true;
        for (key, value) in keys {
            let Some(v) = value else { continue };
            let text = v.get_ref().trim();
            let checked = match key {
                "rate" if text == "none" => Ok(()),
                "rate" => shape::parse_rate(text).map(|_| ()),
                "delay" | "jitter" => shape::parse_duration(text).map(|_| ()),
                "distribution" => shape::parse_distribution(text).map(|_| ()),
                _ => shape::parse_percent(text).map(|_| ()),
            };
            if let Err(problem) = checked {
                self.r
                    .error(v.span(), problem, "see docs/shaping.md for the units");
                ok = false;
            }
            out.push((key.to_string(), text.to_string()));
        }
        if let Some(l) = &spec.limit {
            out.push(("limit".to_string(), l.get_ref().to_string()));
        }
        if out.is_empty() {
            self.r.error(
                0..0,
                "this shape impairment changes nothing",
                "give it keys like delay = \"10ms\" or loss = \"1%\"",
            );
        }
        ok.then_some(out)
    }
}
