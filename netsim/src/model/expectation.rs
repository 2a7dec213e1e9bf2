//! What an assertion asserts, resolved: the nodes it names exist, its target has an address
//! (or is a container whose overlay address is read when the check runs), its bounds are
//! numbers. [`crate::verify`] checks them against a running lab.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// One declarative assertion from a topology's `[[expect]]` (or `[[step.expect]]`) table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Expectation {
    /// `from` can (or, with `reachable = false`, cannot) reach `addr`.
    Reach {
        /// Node the probe runs in.
        from: String,
        /// The target as written (a node name, `node:iface`, or an address).
        to: String,
        /// The resolved target address.
        addr: Ipv4Addr,
        /// Whether the target must answer (`true`) or must not (`false`).
        reachable: bool,
        /// How: ICMP echo (the default), a TCP connection or a UDP exchange.
        #[serde(default, skip_serializing_if = "ReachProto::is_icmp")]
        proto: ReachProto,
        /// ICMP echo payload in bytes when not the default 56 (above the path MTU the echo
        /// leaves in fragments).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u32>,
        /// Poll until it holds, for at most this long (milliseconds); `None`: check once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        within_ms: Option<u64>,
    },
    /// `from` can (or cannot) reach container `to` over the overlay: the target's address is
    /// the one the overlay gave it, read from the container when the check runs.
    OverlayReach {
        /// Node the probe runs in.
        from: String,
        /// The target container.
        to: String,
        /// Whether the target must answer (`true`) or must not (`false`).
        reachable: bool,
        /// How: ICMP echo (the default), a TCP connection or a UDP exchange.
        #[serde(default, skip_serializing_if = "ReachProto::is_icmp")]
        proto: ReachProto,
        /// ICMP echo payload in bytes when not the default 56 (above the path MTU the echo
        /// leaves in fragments).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u32>,
        /// Poll until it holds, for at most this long (milliseconds); `None`: check once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        within_ms: Option<u64>,
    },
    /// The path MTU from `from` to `to` lies in `bound`; one byte more meets `above`.
    Mtu {
        /// Node the probes leave from.
        from: String,
        /// The target.
        to: Target,
        /// The path MTU expected.
        bound: MtuBound,
        /// What must happen just above it, if asserted.
        above: Option<Above>,
    },
    /// The overlay connection from host `host` to host `peer` is on `want`.
    Datapath {
        /// The connection as written (`h1 -> h2`, or `c1 -> c3 (h1 -> h3)` for containers).
        label: String,
        /// The host whose router is asked.
        host: String,
        /// The peer host.
        peer: String,
        /// The datapath expected.
        want: DatapathWant,
        /// Text the router's reason must contain.
        reason: Option<String>,
        /// How long it may take to get there (milliseconds).
        within_ms: u64,
    },
    /// Host `host`'s router refuses the connection of host `peer` (another password, or
    /// none): it counts a refusal naming the peer's address and holds no connection to it.
    Refused {
        /// The pair as written (`h1 -> h3`, or `c1 -> c5 (h1 -> h3)` for containers).
        label: String,
        /// The host whose router is asked.
        host: String,
        /// The refused host.
        peer: String,
        /// How long it may take (milliseconds).
        within_ms: u64,
    },
    /// Datagrams from container `from` to container `to` cross the underlay interfaces of
    /// `to`'s host (`host`) as overlay traffic, and their payload never shows there in clear.
    NoPlaintext {
        /// The sending container.
        from: String,
        /// The receiving container.
        to: String,
        /// The host of `to`, whose underlay interfaces are captured.
        host: String,
    },
    /// A throughput, latency or loss figure from `from` to `to` within bounds.
    Perf {
        /// Client node.
        from: String,
        /// Server.
        to: Target,
        /// What is measured.
        metric: Metric,
        /// The bounds.
        bound: Bound,
        /// Runs; the median counts.
        repeats: u32,
        /// Length of one run (milliseconds).
        duration_ms: u64,
        /// Where the native figure is taken (client host, server host underlay address), when
        /// a bound is relative to it.
        native: Option<(String, Target)>,
    },
    /// A paced TCP stream from `from` to `to`, started where it is declared and checked after
    /// step `until`.
    Stream {
        /// Client node.
        from: String,
        /// Server.
        to: Target,
        /// The step after which the stream stops and is checked.
        until: String,
    },
}

/// The name `value` has in a table of `(name, value)` pairs.
fn name_in<T: PartialEq + Copy>(all: &[(&'static str, T)], value: T) -> &'static str {
    all.iter()
        .find(|(_, v)| *v == value)
        .map_or("?", |(n, _)| n)
}

/// How a reach probe talks to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReachProto {
    /// ICMP echo.
    #[default]
    Icmp,
    /// A TCP connection, one message echoed.
    Tcp,
    /// A UDP datagram, echoed.
    Udp,
}

impl ReachProto {
    /// Whether this is ICMP (the default, left out of plans).
    pub fn is_icmp(&self) -> bool {
        *self == ReachProto::Icmp
    }

    /// The name used in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            ReachProto::Icmp => "icmp",
            ReachProto::Tcp => "tcp",
            ReachProto::Udp => "udp",
        }
    }
}

/// A probe target: an underlay address planned from the file, or a container whose overlay
/// address is read when the check runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "over", rename_all = "snake_case")]
pub enum Target {
    /// A node, `node:iface` or an address, resolved.
    Underlay {
        /// As written.
        to: String,
        /// The address.
        addr: Ipv4Addr,
    },
    /// A container, reached at its overlay address.
    Overlay {
        /// The container.
        container: String,
    },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Underlay { to, addr } if *to == addr.to_string() => write!(f, "{addr}"),
            Target::Underlay { to, addr } => write!(f, "{to} ({addr})"),
            Target::Overlay { container } => write!(f, "{container} (overlay)"),
        }
    }
}

/// An expected path MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MtuBound {
    /// Smallest acceptable.
    pub low: u32,
    /// Largest acceptable.
    pub high: u32,
}

impl MtuBound {
    /// Whether `mtu` is acceptable.
    pub fn holds(&self, mtu: u32) -> bool {
        (self.low..=self.high).contains(&mtu)
    }
}

impl fmt::Display for MtuBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}..{}", self.low, self.high)
        }
    }
}

/// What happens to a packet one byte above the path MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Above {
    /// A router on the path answers with ICMP "fragmentation needed".
    FragNeeded,
    /// The sender's own interface refuses it.
    LocalLimit,
    /// It vanishes (a black hole).
    Dropped,
    /// Without DF it is fragmented and delivered.
    Fragmented,
}

impl Above {
    /// Every behaviour, by the name files use.
    pub const ALL: [(&'static str, Above); 4] = [
        ("frag_needed", Above::FragNeeded),
        ("local_limit", Above::LocalLimit),
        ("dropped", Above::Dropped),
        ("fragmented", Above::Fragmented),
    ];

    /// The name files and reports use.
    pub fn name(self) -> &'static str {
        name_in(&Above::ALL, self)
    }
}

/// The datapath a connection must be on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatapathWant {
    /// Any kernel fast path (a tier other than sleeve).
    Fast,
    /// The userspace sleeve.
    Sleeve,
    /// The kernel vxlan device tier.
    Vxlan,
    /// The Open vSwitch kernel datapath tier.
    Odp,
}

impl DatapathWant {
    /// Every datapath, by the name files use.
    pub const ALL: [(&'static str, DatapathWant); 4] = [
        ("fast", DatapathWant::Fast),
        ("sleeve", DatapathWant::Sleeve),
        ("vxlan", DatapathWant::Vxlan),
        ("odp", DatapathWant::Odp),
    ];

    /// The name files and reports use.
    pub fn name(self) -> &'static str {
        name_in(&DatapathWant::ALL, self)
    }

    /// Whether a connection on `datapath` (as the router names it) satisfies this.
    pub fn accepts(self, datapath: &str) -> bool {
        match self {
            DatapathWant::Fast => datapath != "sleeve" && !datapath.is_empty(),
            other => other.name() == datapath,
        }
    }
}

/// What a `perf` expectation measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// TCP throughput, bits per second.
    TcpBw,
    /// TCP one-way latency, nanoseconds.
    TcpLat,
    /// UDP throughput, bits per second.
    UdpBw,
    /// UDP one-way latency, nanoseconds.
    UdpLat,
    /// Share of ICMP echoes unanswered, ppm.
    Loss,
}

impl Metric {
    /// Every metric, by the name files use.
    pub const ALL: [(&'static str, Metric); 5] = [
        ("tcp_bw", Metric::TcpBw),
        ("tcp_lat", Metric::TcpLat),
        ("udp_bw", Metric::UdpBw),
        ("udp_lat", Metric::UdpLat),
        ("loss", Metric::Loss),
    ];

    /// The name files and reports use.
    pub fn name(self) -> &'static str {
        name_in(&Metric::ALL, self)
    }

    /// Renders a figure of this metric with its unit.
    pub fn format(self, value: u64) -> String {
        match self {
            Metric::TcpBw | Metric::UdpBw => super::shape::format_rate(value),
            Metric::TcpLat | Metric::UdpLat => super::shape::format_duration(value),
            Metric::Loss => super::shape::format_ppm(u32::try_from(value).unwrap_or(u32::MAX)),
        }
    }
}

/// One bound of a `perf` expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// In the metric's unit (bits per second, nanoseconds, ppm).
    Absolute(u64),
    /// A share of the native figure, in thousandths (850: 0.85x native).
    Native(u32),
}

/// The bounds of a `perf` expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bound {
    /// The figure must be at least this.
    pub min: Option<Limit>,
    /// The figure must be at most this.
    pub max: Option<Limit>,
}

impl Bound {
    /// Whether either bound is relative to the native figure.
    pub fn needs_native(&self) -> bool {
        [self.min, self.max]
            .iter()
            .any(|l| matches!(l, Some(Limit::Native(_))))
    }

    /// The bounds as text, e.g. `>= 0.85x native, <= 2ms`.
    pub fn describe(&self, metric: Metric) -> String {
        let one = |op: &str, l: Limit| match l {
            Limit::Absolute(v) => format!("{op} {}", metric.format(v)),
            Limit::Native(pm) => format!("{op} {}x native", f64::from(pm) / 1000.0),
        };
        let mut parts = Vec::new();
        if let Some(l) = self.min {
            parts.push(one(">=", l));
        }
        if let Some(l) = self.max {
            parts.push(one("<=", l));
        }
        parts.join(", ")
    }
}

impl Expectation {
    /// What the expectation asserts, as stable text for reports (no run-time addresses or
    /// figures).
    pub fn describe(&self) -> String {
        let proto = |p: &ReachProto, size: &Option<u32>| match size {
            Some(n) => format!(" [{}, {n} bytes]", p.name()),
            None if p.is_icmp() => String::new(),
            None => format!(" [{}]", p.name()),
        };
        match self {
            Expectation::Reach {
                from,
                to,
                addr,
                reachable,
                proto: p,
                size,
                ..
            } => {
                let verb = if *reachable { "reach" } else { "no reach" };
                let target = Target::Underlay {
                    to: to.clone(),
                    addr: *addr,
                };
                format!("{verb} {from} -> {target}{}", proto(p, size))
            }
            Expectation::OverlayReach {
                from,
                to,
                reachable,
                proto: p,
                size,
                ..
            } => {
                let verb = if *reachable { "reach" } else { "no reach" };
                format!("{verb} {from} -> {to} (overlay){}", proto(p, size))
            }
            Expectation::Mtu {
                from,
                to,
                bound,
                above,
            } => {
                let above = above
                    .map(|a| format!(", above: {}", a.name()))
                    .unwrap_or_default();
                format!("mtu {from} -> {to} = {bound}{above}")
            }
            Expectation::Datapath {
                label,
                want,
                reason,
                within_ms,
                ..
            } => {
                let reason = reason
                    .as_ref()
                    .map(|r| format!(" because {r:?}"))
                    .unwrap_or_default();
                format!(
                    "datapath {label} on {}{reason} within {}",
                    want.name(),
                    super::shape::format_duration(within_ms * 1_000_000)
                )
            }
            Expectation::Refused {
                label, within_ms, ..
            } => format!(
                "refused {label} within {}",
                super::shape::format_duration(within_ms * 1_000_000)
            ),
            Expectation::NoPlaintext { from, to, host } => {
                format!("no plaintext {from} -> {to} (overlay) on the underlay of {host}")
            }
            Expectation::Perf {
                from,
                to,
                metric,
                bound,
                repeats,
                ..
            } => format!(
                "perf {} {from} -> {to} {} (median of {repeats})",
                metric.name(),
                bound.describe(*metric)
            ),
            Expectation::Stream { from, to, until } => {
                format!("stream {from} -> {to} survives until {until:?}")
            }
        }
    }

    /// The node a failure points at first (where the probe runs, or the router asked).
    pub fn node(&self) -> &str {
        match self {
            Expectation::Reach { from, .. }
            | Expectation::OverlayReach { from, .. }
            | Expectation::Mtu { from, .. }
            | Expectation::Perf { from, .. }
            | Expectation::Stream { from, .. }
            | Expectation::NoPlaintext { from, .. } => from,
            Expectation::Datapath { host, .. } | Expectation::Refused { host, .. } => host,
        }
    }
}
