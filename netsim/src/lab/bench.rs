//! Bring-up and teardown benchmark, and the plan shapes it (and the tests) use.

use std::net::Ipv4Addr;
use std::time::Instant;

use ipnet::Ipv4Net;
use serde::Serialize;

use super::{Lab, LabError, UpOptions};
use crate::kernel::netns;
use crate::model::plan::{
    BridgePlan, Endpoint, IfacePlan, LinkPlan, NodeKind, NodePlan, Plan, RoutePlan,
};

/// The shape of a benchmark lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// N hosts on one switch, one /16.
    Star,
    /// N nodes in a chain, a /30 per link; the inner nodes are routers.
    Line,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Shape::Star => "star",
            Shape::Line => "line",
        })
    }
}

impl std::str::FromStr for Shape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "star" => Ok(Shape::Star),
            "line" => Ok(Shape::Line),
            other => Err(format!("unknown shape {other:?} (star or line)")),
        }
    }
}

/// 198.18.0.0 + `offset`.
fn underlay(offset: usize) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    Ipv4Addr::from(base.saturating_add(u32::try_from(offset).unwrap_or(u32::MAX)))
}

/// A host-like node with no interfaces yet.
fn node(name: String, kind: NodeKind) -> NodePlan {
    let forwarding = kind == NodeKind::Router;
    NodePlan {
        name,
        kind,
        interfaces: Vec::new(),
        routes: Vec::new(),
        forwarding,
        bridge: None,
    }
}

fn iface(name: &str, mtu: u32, addrs: Vec<Ipv4Net>, peer: Endpoint, port: bool) -> IfacePlan {
    IfacePlan {
        name: name.to_string(),
        mtu,
        addrs,
        peer,
        bridge_port: port,
    }
}

fn ep(node: &str, iface: &str) -> Endpoint {
    Endpoint {
        node: node.to_string(),
        iface: iface.to_string(),
    }
}

/// A star: switch `sw` (bridge `br0`) and hosts `h1..=hN`, host `hI` at 198.18.0.0+I/16 on
/// `eth0`, every link of MTU `mtu`. Supports up to 65533 hosts.
pub fn star(name: &str, hosts: usize, mtu: u32) -> Plan {
    let mut sw = node("sw".into(), NodeKind::Switch);
    sw.bridge = Some(BridgePlan {
        name: "br0".into(),
        mtu,
    });
    let mut nodes = Vec::with_capacity(hosts + 1);
    let mut links = Vec::with_capacity(hosts);
    let mut host_nodes = Vec::with_capacity(hosts);
    for i in 1..=hosts {
        let h = format!("h{i}");
        let port = format!("p{i}");
        let addr = Ipv4Net::new(underlay(i), 16).unwrap_or_default();
        let mut host = node(h.clone(), NodeKind::Host);
        host.interfaces
            .push(iface("eth0", mtu, vec![addr], ep("sw", &port), false));
        sw.interfaces
            .push(iface(&port, mtu, Vec::new(), ep(&h, "eth0"), true));
        links.push(LinkPlan {
            a: ep("sw", &port),
            b: ep(&h, "eth0"),
            mtu,
            shape: None,
        });
        host_nodes.push(host);
    }
    nodes.push(sw);
    nodes.extend(host_nodes);
    Plan {
        name: name.to_string(),
        nodes,
        links,
        overlay: None,
        expects: Vec::new(),
        steps: Vec::new(),
        needs: Vec::new(),
        seed: 0,
    }
}

/// Splits the address range `[start, end)` into the fewest aligned prefixes.
fn cover(start: u32, end: u32) -> Vec<Ipv4Net> {
    let mut out = Vec::new();
    let mut at = u64::from(start);
    let end = u64::from(end);
    while at < end {
        let mut size = if at == 0 {
            1u64 << 32
        } else {
            1u64 << at.trailing_zeros()
        };
        while at + size > end {
            size >>= 1;
        }
        let prefix = 32 - size.trailing_zeros() as u8;
        if let Ok(net) = Ipv4Net::new(Ipv4Addr::from(at as u32), prefix) {
            out.push(net);
        }
        at += size;
    }
    out
}

/// The address of node `side` (0: left end, 1: right end) of link `l` in a [`line`].
fn line_addr(l: usize, side: usize) -> Ipv4Addr {
    underlay(4 * l + 1 + side)
}

/// A line: nodes `n0..n{N-1}`, `n0` and the last being hosts and the others routers
/// (forwarding on). Link `l` joins `n{l}` (`eth1`, or `eth0` for `n0`) to `n{l+1}` (`eth0`) on
/// 198.18.0.0+4l/30. Every node can reach every other: a default route towards the right
/// and aggregate routes towards the left. Supports up to 16384 nodes.
pub fn line(name: &str, count: usize, mtu: u32) -> Plan {
    let name_of = |i: usize| format!("n{i}");
    let right_if = |i: usize| if i == 0 { "eth0" } else { "eth1" };
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        let kind = if i == 0 || i + 1 == count {
            NodeKind::Host
        } else {
            NodeKind::Router
        };
        let mut n = node(name_of(i), kind);
        if i > 0 {
            let addr = Ipv4Net::new(line_addr(i - 1, 1), 30).unwrap_or_default();
            n.interfaces.push(iface(
                "eth0",
                mtu,
                vec![addr],
                ep(&name_of(i - 1), right_if(i - 1)),
                false,
            ));
        }
        if i + 1 < count {
            let addr = Ipv4Net::new(line_addr(i, 0), 30).unwrap_or_default();
            n.interfaces.push(iface(
                right_if(i),
                mtu,
                vec![addr],
                ep(&name_of(i + 1), "eth0"),
                false,
            ));
            n.routes.push(RoutePlan {
                dst: Ipv4Net::default(),
                via: Some(line_addr(i, 1)),
                dev: None,
            });
            // Links 0..i-1 lie to the left; link i-1 is connected already.
            if i >= 2 {
                let start = u32::from(underlay(0));
                let end = u32::from(underlay(4 * (i - 1)));
                for dst in cover(start, end) {
                    n.routes.push(RoutePlan {
                        dst,
                        via: Some(line_addr(i - 1, 0)),
                        dev: None,
                    });
                }
            }
        } else if i > 0 {
            n.routes.push(RoutePlan {
                dst: Ipv4Net::default(),
                via: Some(line_addr(i - 1, 0)),
                dev: None,
            });
        }
        nodes.push(n);
    }
    let links = (0..count.saturating_sub(1))
        .map(|l| LinkPlan {
            a: ep(&name_of(l), right_if(l)),
            b: ep(&name_of(l + 1), "eth0"),
            mtu,
            shape: None,
        })
        .collect();
    Plan {
        name: name.to_string(),
        nodes,
        links,
        overlay: None,
        expects: Vec::new(),
        steps: Vec::new(),
        needs: Vec::new(),
        seed: 0,
    }
}

/// The address of host `i` (1-based) of a [`star`].
pub fn star_addr(i: usize) -> Ipv4Addr {
    underlay(i)
}

/// The address of node `i` of a [`line()`] on its left link (or, for `n0`, its only link).
pub fn line_node_addr(i: usize) -> Ipv4Addr {
    if i == 0 {
        line_addr(0, 0)
    } else {
        line_addr(i - 1, 1)
    }
}

/// Figures of one benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchResult {
    /// The shape.
    pub shape: Shape,
    /// Hosts asked for.
    pub hosts: usize,
    /// Nodes (namespaces) made, switches and routers included.
    pub nodes: usize,
    /// Links (veth pairs) made.
    pub links: usize,
    /// Seconds from the call of `Lab::up` to its return.
    pub up_secs: f64,
    /// Seconds from the call of `Lab::down` until every namespace is gone from /run/netns.
    /// (The kernel frees a namespace's devices asynchronously after that.)
    pub down_secs: f64,
    /// Hosts per second, up.
    pub up_hosts_per_sec: f64,
    /// Hosts per second, down.
    pub down_hosts_per_sec: f64,
    /// Peak resident memory of this process (VmHWM), in KiB.
    pub peak_rss_kib: u64,
}

/// VmHWM of this process, in KiB.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| crate::kernel::process::status_number(&s, "VmHWM:"))
        .unwrap_or(0)
}

/// Builds a lab of `shape` with `hosts` hosts, times its bring-up and teardown.
pub async fn run(shape: Shape, hosts: usize) -> Result<BenchResult, LabError> {
    let plan = match shape {
        Shape::Star => star("bench", hosts, 1500),
        Shape::Line => line("bench", hosts, 1500),
    };
    let (nodes, links) = (plan.nodes.len(), plan.links.len());
    let started = Instant::now();
    let lab = Lab::up(plan, UpOptions::default()).await?;
    let up_secs = started.elapsed().as_secs_f64();
    let names: Vec<String> = lab.nodes().iter().map(|n| n.netns_name()).collect();
    let started = Instant::now();
    lab.down().await?;
    while names.iter().any(|n| netns::exists(n)) {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let down_secs = started.elapsed().as_secs_f64();
    let rate = |secs: f64| if secs > 0.0 { hosts as f64 / secs } else { 0.0 };
    Ok(BenchResult {
        shape,
        hosts,
        nodes,
        links,
        up_secs,
        down_secs,
        up_hosts_per_sec: rate(up_secs),
        down_hosts_per_sec: rate(down_secs),
        peak_rss_kib: peak_rss_kib(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cover_splits_into_aligned_prefixes() {
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
        let nets: Vec<String> = cover(base, base + 12)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["198.18.0.0/29", "198.18.0.8/30"]);
        assert!(cover(base, base).is_empty());
    }

    #[test]
    fn line_routes_reach_every_link() {
        let plan = line("t", 5, 1500);
        let n3 = plan
            .node("n3")
            .map(|n| n.routes.clone())
            .unwrap_or_default();
        let dsts: Vec<String> = n3.iter().map(|r| r.dst.to_string()).collect();
        // Default to the right; links 0 and 1 to the left (link 2 is connected).
        assert_eq!(dsts, ["0.0.0.0/0", "198.18.0.0/29"]);
        assert_eq!(plan.links.len(), 4);
        assert_eq!(line_node_addr(3), Ipv4Addr::new(198, 18, 0, 10));
    }
}
