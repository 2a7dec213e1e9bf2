//! Named steps, resolved: what each does to the running lab and what must hold after it.

use serde::{Deserialize, Serialize};

use super::expectation::Expectation;

/// One `[[step]]`: an action, then the expectations that must hold after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepPlan {
    /// The step's name, unique among the steps.
    pub name: String,
    /// What the step does before its checks.
    pub action: StepAction,
    /// What must hold after it, in file order.
    pub expects: Vec<Expectation>,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum StepAction {
    /// Nothing: only its expectations.
    Check,
    /// Put in a fault.
    Impair {
        /// The fault.
        fault: ImpairPlan,
    },
    /// Undo every fault of the earlier steps.
    Heal,
}

/// A fault a step puts in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImpairPlan {
    /// Change the impairment of the link between `x` and `y`, both directions: each
    /// `(key, value)` as a link's `shape` writes it, already checked.
    Shape {
        /// One end.
        x: String,
        /// The other end.
        y: String,
        /// The properties to change.
        changes: Vec<(String, String)>,
    },
    /// Cut the link between `x` and `y`.
    Cut {
        /// One end.
        x: String,
        /// The other end.
        y: String,
    },
    /// Partition `left` from `right`.
    Partition {
        /// One side.
        left: Vec<String>,
        /// The other side.
        right: Vec<String>,
    },
    /// Block `proto` (`tcp` or `udp`) traffic to and from `port` in `node`.
    Block {
        /// The node.
        node: String,
        /// `tcp` or `udp`.
        proto: String,
        /// The port.
        port: u16,
    },
    /// Drop packets matching `rule` as they enter `node`, on every interface: a middlebox on
    /// the underlay that filters more than ports.
    Drop {
        /// The node (a host, a router, or a switch: then on every port).
        node: String,
        /// What is dropped.
        rule: DropRule,
    },
    /// Kill `node`'s overlay router (SIGKILL).
    Kill {
        /// The host.
        node: String,
    },
    /// Kill `node`'s overlay router and start it again.
    Restart {
        /// The host.
        node: String,
    },
}

impl ImpairPlan {
    /// The fault in a few words, for reports.
    pub fn describe(&self) -> String {
        match self {
            ImpairPlan::Shape { x, y, changes } => {
                let kv: Vec<String> = changes.iter().map(|(k, v)| format!("{k} {v}")).collect();
                format!("shape {x} -- {y}: {}", kv.join(" "))
            }
            ImpairPlan::Cut { x, y } => format!("cut {x} -- {y}"),
            ImpairPlan::Partition { left, right } => {
                format!("partition {} | {}", left.join(","), right.join(","))
            }
            ImpairPlan::Block { node, proto, port } => format!("block {node} {proto} {port}"),
            ImpairPlan::Drop { node, rule } => format!("drop {rule} entering {node}"),
            ImpairPlan::Kill { node } => format!("kill the router on {node}"),
            ImpairPlan::Restart { node } => format!("restart the router on {node}"),
        }
    }
}

/// Packets a [`ImpairPlan::Drop`] fault drops, matched one by one as they arrive (IP fragments
/// each on their own, before any reassembly), as a filter on the wire would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum DropRule {
    /// ICMP "destination unreachable: fragmentation needed" (type 3, code 4): with it gone,
    /// path MTU discovery that waits for it never learns a smaller path (a PMTU black hole).
    FragNeeded,
    /// UDP packets (and fragments of UDP datagrams) whose IP length is above `bytes`.
    UdpOver {
        /// The largest IP packet that still passes.
        bytes: u16,
    },
}

impl std::fmt::Display for DropRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropRule::FragNeeded => f.write_str("ICMP frag-needed"),
            DropRule::UdpOver { bytes } => write!(f, "UDP over {bytes} bytes"),
        }
    }
}

impl DropRule {
    /// Parses the command line's form: `frag-needed`, or `udp-over:BYTES`.
    pub fn parse(text: &str) -> Result<DropRule, String> {
        let text = text.trim();
        if text == "frag-needed" {
            return Ok(DropRule::FragNeeded);
        }
        if let Some(n) = text.strip_prefix("udp-over:") {
            return n
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|b| *b >= 28)
                .map(|bytes| DropRule::UdpOver { bytes })
                .ok_or_else(|| {
                    format!("{n:?} is not an IP length from 28 to 65535: e.g. udp-over:700")
                });
        }
        Err(format!(
            "cannot drop {text:?}: say frag-needed or udp-over:BYTES (e.g. udp-over:700)"
        ))
    }
}

impl StepAction {
    /// The action in a few words, for reports.
    pub fn describe(&self) -> String {
        match self {
            StepAction::Check => "check".to_string(),
            StepAction::Impair { fault } => fault.describe(),
            StepAction::Heal => "heal everything".to_string(),
        }
    }
}
