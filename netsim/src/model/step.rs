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
            ImpairPlan::Kill { node } => format!("kill the router on {node}"),
            ImpairPlan::Restart { node } => format!("restart the router on {node}"),
        }
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
