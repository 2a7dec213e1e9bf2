//! A Graphviz (DOT) picture of a plan: switches as boxes, routers as diamonds, hosts as
//! ellipses with their containers grouped around them; edges carry interface names, addresses
//! and the MTU when it is not the default.

use std::fmt::Write as _;

use super::plan::{NodeKind, NodePlan, Plan, DEFAULT_MTU};

/// Renders `plan` as an undirected Graphviz graph (`dot -Tsvg` draws it).
pub fn to_dot(plan: &Plan) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_dot(plan, &mut out);
    out
}

fn write_dot(plan: &Plan, out: &mut String) -> std::fmt::Result {
    writeln!(out, "graph {} {{", quote(&plan.name))?;
    writeln!(
        out,
        "  graph [fontname=\"monospace\", label={}];",
        quote(&plan.name)
    )?;
    writeln!(out, "  node [fontname=\"monospace\"];")?;
    writeln!(out, "  edge [fontname=\"monospace\", fontsize=10];")?;
    for node in &plan.nodes {
        match &node.kind {
            NodeKind::Switch => {
                let bridge = node.bridge.as_ref().map_or(String::new(), |b| {
                    let mtu = if b.mtu == DEFAULT_MTU {
                        String::new()
                    } else {
                        format!(" mtu {}", b.mtu)
                    };
                    format!("\n{}{mtu}", b.name)
                });
                writeln!(
                    out,
                    "  {} [shape=box, label={}];",
                    quote(&node.name),
                    quote(&format!("{}{bridge}", node.name))
                )?;
            }
            NodeKind::Router => {
                writeln!(out, "  {} [shape=diamond];", quote(&node.name))?;
            }
            NodeKind::Host => {
                let containers: Vec<&NodePlan> = plan
                    .nodes
                    .iter()
                    .filter(
                        |c| matches!(&c.kind, NodeKind::Container { host } if *host == node.name),
                    )
                    .collect();
                if containers.is_empty() {
                    writeln!(out, "  {} [shape=ellipse];", quote(&node.name))?;
                } else {
                    writeln!(
                        out,
                        "  subgraph {} {{",
                        quote(&format!("cluster_{}", node.name))
                    )?;
                    writeln!(out, "    label={};", quote(&node.name))?;
                    writeln!(out, "    style=dashed;")?;
                    writeln!(out, "    {} [shape=ellipse];", quote(&node.name))?;
                    for c in containers {
                        writeln!(out, "    {} [shape=ellipse, style=dotted];", quote(&c.name))?;
                    }
                    writeln!(out, "  }}")?;
                }
            }
            // Drawn inside their host's cluster.
            NodeKind::Container { .. } => {}
        }
    }
    for link in &plan.links {
        let end_label = |node: &str, iface: &str| {
            let addrs = plan
                .node(node)
                .and_then(|n| n.interfaces.iter().find(|i| i.name == iface))
                .map(|i| i.addrs.iter().map(|a| format!("\n{a}")).collect::<String>())
                .unwrap_or_default();
            format!("{iface}{addrs}")
        };
        let mtu = if link.mtu == DEFAULT_MTU {
            String::new()
        } else {
            format!(", label={}", quote(&format!("mtu {}", link.mtu)))
        };
        writeln!(
            out,
            "  {} -- {} [taillabel={}, headlabel={}{mtu}];",
            quote(&link.a.node),
            quote(&link.b.node),
            quote(&end_label(&link.a.node, &link.a.iface)),
            quote(&end_label(&link.b.node, &link.b.iface)),
        )?;
    }
    writeln!(out, "}}")
}

/// A DOT string literal (names are plain, but labels carry newlines).
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}
