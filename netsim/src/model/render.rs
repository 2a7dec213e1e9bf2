//! [`Plan::render`]: the resolved plan as stable, human-readable text (what `netsim plan`
//! prints and what snapshot tests hold).

use std::fmt::Write as _;

use super::plan::{Expectation, IfacePlan, NodeKind, Plan, ReachProto, RoutePlan};

impl Plan {
    /// Renders the plan: nodes (kind, bridge, interfaces, routes), links, the overlay (never
    /// its password) and the expectations. The same plan always renders the same text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "lab {}", self.name)?;
        if self.seed != 0 {
            writeln!(out, "seed {}", self.seed)?;
        }
        writeln!(out)?;
        writeln!(out, "nodes:")?;
        for node in &self.nodes {
            let kind = match &node.kind {
                NodeKind::Host => "host".to_string(),
                NodeKind::Router => "router".to_string(),
                NodeKind::Switch => "switch".to_string(),
                NodeKind::Container { host } => format!("container on {host}"),
            };
            let fwd = if node.forwarding { ", forwarding" } else { "" };
            writeln!(out, "  {} ({kind}{fwd})", node.name)?;
            if let Some(br) = &node.bridge {
                writeln!(out, "    bridge {} mtu {}", br.name, br.mtu)?;
            }
            let width = node
                .interfaces
                .iter()
                .map(|i| i.name.len())
                .max()
                .unwrap_or(0);
            for iface in &node.interfaces {
                writeln!(out, "    {}", iface_line(iface, width))?;
            }
            for route in &node.routes {
                writeln!(out, "    {}", route_line(route))?;
            }
        }
        writeln!(out)?;
        writeln!(out, "links:")?;
        if self.links.is_empty() {
            writeln!(out, "  (none)")?;
        }
        for link in &self.links {
            writeln!(
                out,
                "  {}:{} -- {}:{} mtu {}",
                link.a.node, link.a.iface, link.b.node, link.b.iface, link.mtu
            )?;
            if let Some(shape) = &link.shape {
                if let Some(profile) = &shape.profile {
                    writeln!(out, "    profile {profile}")?;
                }
                writeln!(
                    out,
                    "    {} -> {}: {}",
                    link.a.node,
                    link.b.node,
                    shape.a_to_b.describe()
                )?;
                writeln!(
                    out,
                    "    {} -> {}: {}",
                    link.b.node,
                    link.a.node,
                    shape.b_to_a.describe()
                )?;
            }
        }
        writeln!(out)?;
        match &self.overlay {
            Some(o) => {
                let mtu = o.mtu.map_or("auto".to_string(), |m| m.to_string());
                let enc = if o.encrypted {
                    "encrypted"
                } else {
                    "unencrypted"
                };
                let others = if o.host_passwords.is_empty() {
                    String::new()
                } else {
                    let hosts: Vec<&str> = o.host_passwords.keys().map(String::as_str).collect();
                    format!(", another password on {}", hosts.join(", "))
                };
                writeln!(out, "overlay: range {}, mtu {mtu}, {enc}{others}", o.range)?;
            }
            None => writeln!(out, "overlay: none")?,
        }
        writeln!(out)?;
        writeln!(out, "expects:")?;
        if self.expects.is_empty() {
            writeln!(out, "  (none)")?;
        }
        for e in &self.expects {
            writeln!(out, "  {}", expect_line(e))?;
        }
        for step in &self.steps {
            writeln!(out)?;
            writeln!(out, "step {:?}: {}", step.name, step.action.describe())?;
            for e in &step.expects {
                writeln!(out, "  {}", expect_line(e))?;
            }
        }
        Ok(())
    }
}

/// One expectation in a rendered plan (reach keeps its "h1 reaches h2 (addr)" wording).
fn expect_line(e: &Expectation) -> String {
    let verb = |reachable: bool| {
        if reachable {
            "reaches"
        } else {
            "does not reach"
        }
    };
    let how = |proto: &ReachProto, size: &Option<u32>| match size {
        Some(n) => format!(" by {} with {n} bytes", proto.name()),
        None if proto.is_icmp() => String::new(),
        None => format!(" by {}", proto.name()),
    };
    match e {
        Expectation::Reach {
            from,
            to,
            addr,
            reachable,
            proto,
            size,
            ..
        } => {
            if to == &addr.to_string() {
                format!("{from} {} {addr}{}", verb(*reachable), how(proto, size))
            } else {
                format!(
                    "{from} {} {to} ({addr}){}",
                    verb(*reachable),
                    how(proto, size)
                )
            }
        }
        Expectation::OverlayReach {
            from,
            to,
            reachable,
            proto,
            size,
            ..
        } => format!(
            "{from} {} {to} (overlay address){}",
            verb(*reachable),
            how(proto, size)
        ),
        other => other.describe(),
    }
}

fn iface_line(iface: &IfacePlan, width: usize) -> String {
    let addrs = if iface.addrs.is_empty() {
        if iface.bridge_port {
            "port".to_string()
        } else {
            "no address".to_string()
        }
    } else {
        iface
            .addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{:width$}  mtu {:<5}  {addrs:<18}  peer {}:{}",
        iface.name, iface.mtu, iface.peer.node, iface.peer.iface
    )
}

fn route_line(route: &RoutePlan) -> String {
    let dst = if route.dst.prefix_len() == 0 {
        "default".to_string()
    } else {
        route.dst.to_string()
    };
    let mut line = format!("route {dst}");
    if let Some(via) = route.via {
        line.push_str(&format!(" via {via}"));
    }
    if let Some(dev) = &route.dev {
        line.push_str(&format!(" dev {dev}"));
    }
    line
}
