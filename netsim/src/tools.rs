//! The user-space programs netsim runs besides itself, the Debian package each comes from, and
//! whether this machine has them: `netsim doctor` reports them, `Lab::up` refuses a plan that
//! needs a missing one before it makes anything, and error hints name the package.
//!
//! netsim speaks rtnetlink itself (links, addresses, routes, qdiscs and tc filters), so neither
//! `ip` nor `tc` is needed. nftables rule sets go through the `nft` program (see
//! [`crate::kernel::nft`] for why).

use std::path::{Path, PathBuf};

use serde::Serialize;

/// A user-space program netsim may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tool {
    /// The program's name, as looked up on `PATH`.
    pub program: &'static str,
    /// The Debian package that installs it.
    pub package: &'static str,
    /// What netsim runs it for.
    pub purpose: &'static str,
    /// What its absence means.
    pub if_missing: &'static str,
}

/// `nft`: loads the nftables rule sets of emulated random loss and of runtime faults (cuts,
/// partitions, port blocks), as `nft -f -` inside a node.
pub const NFT: Tool = Tool {
    program: "nft",
    package: "nftables",
    purpose: "nftables rule sets: loss on the emulated backend, link cuts, partitions, port blocks",
    if_missing: "labs whose links lose packets on the emulated backend are refused before \
                 anything is made; runtime faults fail",
};

/// `iperf3`: the independent cross-check of the built-in throughput probes.
pub const IPERF3: Tool = Tool {
    program: "iperf3",
    package: "iperf3",
    purpose: "cross-check of the built-in throughput probes (measurement tests)",
    if_missing: "the iperf3 cross-checks are skipped",
};

/// `qperf`: the independent cross-check of the built-in qperf-style probes.
pub const QPERF: Tool = Tool {
    program: "qperf",
    package: "qperf",
    purpose: "cross-check of the built-in qperf-style probes (measurement tests)",
    if_missing: "the qperf cross-checks are skipped",
};

/// Every tool, in a stable order.
pub const ALL: [Tool; 3] = [NFT, IPERF3, QPERF];

impl Tool {
    /// The program netsim runs for this tool: the name, or an override from the environment
    /// (`NETSIM_NFT` for `nft`).
    pub fn command(&self) -> String {
        if self.program == NFT.program {
            crate::kernel::nft::program()
        } else {
            self.program.to_string()
        }
    }

    /// Where the program is: an explicit path as it is, a bare name searched on `PATH`.
    pub fn find(&self) -> Option<PathBuf> {
        find_program(&self.command())
    }

    /// Whether the program can be found.
    pub fn present(&self) -> bool {
        self.find().is_some()
    }

    /// The hint for this tool's program when it could not be started because it is not there.
    pub fn missing_hint(&self) -> String {
        format!(
            "`{}` is not installed or not on PATH: {}",
            self.command(),
            self.install()
        )
    }

    /// How to install it (`apt-get install nftables`, or `ci/setup --install`).
    pub fn install(&self) -> String {
        format!(
            "install Debian's {} package (`apt-get install {}`, or `ci/setup --install`)",
            self.package, self.package
        )
    }
}

/// The tool whose program is `program` (a name, or a path ending in it).
pub fn by_program(program: &str) -> Option<Tool> {
    let name = Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(program);
    ALL.into_iter().find(|t| t.program == name)
}

/// Where `program` is: a path containing `/` as it is (if it is a file), a bare name in the
/// directories of `PATH`, as `execvp` looks it up.
pub fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Whether one tool is here, for `netsim doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolStatus {
    /// The tool.
    #[serde(flatten)]
    pub tool: Tool,
    /// The program netsim runs (the name, or its override from the environment).
    pub command: String,
    /// Where it was found; `None` when it is missing.
    pub path: Option<PathBuf>,
}

/// Every tool in [`ALL`], looked up now.
pub fn check() -> Vec<ToolStatus> {
    ALL.iter()
        .map(|t| ToolStatus {
            tool: *t,
            command: t.command(),
            path: t.find(),
        })
        .collect()
}

/// The tools part of `netsim doctor`: one line per tool, and for a missing one what its
/// absence means and how to install it.
pub fn report(tools: &[ToolStatus]) -> String {
    let mut out =
        String::from("user-space tools (ip and tc are not needed: netsim speaks rtnetlink)\n");
    for t in tools {
        match &t.path {
            Some(path) => out.push_str(&format!(
                "  ok       {:<14} {} ({})\n",
                t.tool.program,
                t.tool.purpose,
                path.display()
            )),
            None => out.push_str(&format!(
                "  MISSING  {:<14} {}\n           why: `{}` is not on PATH\n           so:  {}\n           fix: {}\n",
                t.tool.program,
                t.tool.purpose,
                t.command,
                t.tool.if_missing,
                t.tool.install()
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_by_name_or_path() {
        assert_eq!(by_program("/usr/sbin/nft"), Some(NFT));
        assert_eq!(by_program("qperf"), Some(QPERF));
        assert_eq!(by_program("nosuchprogram"), None);
        assert!(find_program("/nonexistent/nft").is_none());
    }

    #[test]
    fn the_doctor_report_says_what_a_missing_tool_costs_and_how_to_install_it() {
        let tools = vec![
            ToolStatus {
                tool: NFT,
                command: "nft".into(),
                path: Some("/usr/sbin/nft".into()),
            },
            ToolStatus {
                tool: QPERF,
                command: "qperf".into(),
                path: None,
            },
        ];
        insta::assert_snapshot!(report(&tools));
    }

    #[test]
    fn the_hint_names_the_package() {
        let hint = QPERF.missing_hint();
        assert!(hint.starts_with("`qperf` is not installed"), "{hint}");
        assert!(hint.contains("qperf package"), "{hint}");
    }
}
