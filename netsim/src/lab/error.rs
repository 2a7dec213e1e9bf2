//! Errors of the lab lifecycle: each names the lab, the node where there is one, and what to do.
//!
//! A message is complete in itself: the underlying error (`cause`) is part of its text and is
//! not also returned from `source()`, so a chain printer (the CLI's `{:#}`) says it once.

use std::path::PathBuf;

use crate::kernel::KernelError;

/// Formats an optional node for messages.
fn at_node(node: &Option<String>) -> String {
    match node {
        Some(node) => format!(", node {node}"),
        None => String::new(),
    }
}

/// Why a lab operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The requested lab id is not acceptable.
    #[error("invalid lab id {id:?}: {reason} (ids are 1 to 20 of [a-z0-9-], starting with a letter or digit)")]
    InvalidId {
        /// The id asked for.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another lab already uses this id.
    #[error("lab {id} already exists (state file {}): pick another name, or `netsim down {id}`", path.display())]
    IdInUse {
        /// The id asked for.
        id: String,
        /// Its state file.
        path: PathBuf,
    },
    /// The plan cannot be applied as it is.
    #[error("lab {lab}: the plan cannot be applied: {reason}")]
    Plan {
        /// The lab id.
        lab: String,
        /// What is wrong.
        reason: String,
    },
    /// A kernel request failed.
    #[error("lab {lab}{}: {cause}", at_node(node))]
    Kernel {
        /// The lab id.
        lab: String,
        /// The node concerned, if any.
        node: Option<String>,
        /// The failed request.
        cause: Box<KernelError>,
    },
    /// Reading or writing a state file failed.
    #[error("lab {lab}: state file {}: {cause}", path.display())]
    State {
        /// The lab id.
        lab: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// A state file could not be parsed.
    #[error("state file {} is corrupt: {cause} (check `ls /run/netns`, then remove the file)", path.display())]
    StateCorrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        cause: serde_json::Error,
    },
    /// No lab has this id.
    #[error("no lab named {id} (labs up: {})", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    NoSuchLab {
        /// The id asked for.
        id: String,
        /// The labs that exist.
        known: Vec<String>,
    },
    /// The lab has no such node.
    #[error("lab {lab} has no node {node} (nodes: {})", known.join(", "))]
    NoSuchNode {
        /// The lab id.
        lab: String,
        /// The node asked for.
        node: String,
        /// The lab's nodes.
        known: Vec<String>,
    },
    /// The lab exists but is not (fully) up.
    #[error("lab {id} is not up ({phase}): wait for `netsim up` to finish, or remove it with `netsim down {id}`")]
    NotUp {
        /// The lab id.
        id: String,
        /// Its phase, or why it cannot be attached.
        phase: String,
    },
    /// No lab is up, and none was named.
    #[error("no lab is up: start one with `netsim up FILE`")]
    NoLab,
    /// Several labs are up, and none was named.
    #[error("{} labs are up ({}): say which one", labs.len(), labs.join(", "))]
    Ambiguous {
        /// The labs that are up.
        labs: Vec<String>,
    },
    /// Starting or running a process in a node failed.
    #[error("lab {lab}, node {node}: {what}: {cause}")]
    Process {
        /// The lab id.
        lab: String,
        /// The node.
        node: String,
        /// What was being done.
        what: String,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// A worker thread or task failed.
    #[error("lab {lab}: {what}")]
    Task {
        /// The lab id.
        lab: String,
        /// What happened.
        what: String,
    },
    /// A link asks for an impairment no available backend can give.
    #[error(
        "lab {lab}, link {link}: {property} cannot be given by the {backend} backend: {reason}"
    )]
    Unsupported {
        /// The lab id.
        lab: String,
        /// The link, `a -- b`.
        link: String,
        /// The property asked for (e.g. `delay 10ms`).
        property: String,
        /// The backend the lab uses.
        backend: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// The plan needs a user-space program this machine lacks (found before anything is made).
    #[error(
        "lab {lab}: {needed_for} needs `{}`, which is not installed or not on PATH: {}",
        tool.command(),
        tool.install()
    )]
    MissingTool {
        /// The lab id.
        lab: String,
        /// What in the plan needs it.
        needed_for: String,
        /// The tool.
        tool: crate::tools::Tool,
    },
    /// A runtime request names something the lab does not have, or makes no sense.
    #[error("lab {lab}: {what}")]
    Request {
        /// The lab id.
        lab: String,
        /// What is wrong, and how to ask instead.
        what: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    #[test]
    fn messages_name_the_lab_and_what_to_do() {
        let cases = [
            LabError::InvalidId {
                id: "Bad_Id".into(),
                reason: "only lowercase letters, digits and '-' are allowed".into(),
            },
            LabError::IdInUse {
                id: "lab1".into(),
                path: "/run/netsim/lab1.json".into(),
            },
            LabError::Plan {
                lab: "lab1".into(),
                reason: "node h1 appears twice".into(),
            },
            LabError::Kernel {
                lab: "lab1".into(),
                node: Some("h1".into()),
                cause: Box::new(KernelError::sys(
                    "netsim-lab1-h1",
                    Some("eth0 198.18.0.1/16"),
                    "RTM_NEWADDR",
                    Errno::EEXIST,
                )),
            },
            LabError::NoSuchLab {
                id: "lab9".into(),
                known: vec!["lab1".into(), "lab2".into()],
            },
            LabError::NoSuchNode {
                lab: "lab1".into(),
                node: "h9".into(),
                known: vec!["sw".into(), "h1".into()],
            },
            LabError::NoLab,
            LabError::Ambiguous {
                labs: vec!["lab1".into(), "lab2".into()],
            },
        ];
        let text: Vec<String> = cases.iter().map(ToString::to_string).collect();
        insta::assert_snapshot!(text.join("\n"));
    }
}
