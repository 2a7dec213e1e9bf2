//! How the command line prints an error: the context it was reached through, then the error,
//! each said once.
//!
//! netsim's error types carry their whole message in `Display` (the underlying I/O, netlink or
//! parse error included) and do not also return it from `source()`, so printing the chain
//! (`{:#}`) repeats nothing. The table test below holds every error type the CLI can print to
//! that.

/// The line `netsim` prints for `err` (before exiting non-zero).
pub(crate) fn render(err: &anyhow::Error) -> String {
    format!("netsim: error: {err:#}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::num::NonZeroI32;

    use nix::errno::Errno;

    use super::render;
    use crate::capture::CaptureError;
    use crate::kernel::tc::TcError;
    use crate::kernel::KernelError;
    use crate::lab::LabError;
    use crate::measure::external::ExternalError;
    use crate::measure::pair::MeasureError;
    use crate::model::{Diagnostic, Diagnostics};
    use crate::overlay_run::OverlayError;
    use crate::uml::UmlError;

    // Each `*_variant` function matches without a wildcard: a new variant does not compile
    // until it is named here, next to the table that must then show it.

    fn lab_variant(e: &LabError) -> &'static str {
        match e {
            LabError::InvalidId { .. } => "InvalidId",
            LabError::IdInUse { .. } => "IdInUse",
            LabError::Plan { .. } => "Plan",
            LabError::Kernel { .. } => "Kernel",
            LabError::State { .. } => "State",
            LabError::StateCorrupt { .. } => "StateCorrupt",
            LabError::NoSuchLab { .. } => "NoSuchLab",
            LabError::NoSuchNode { .. } => "NoSuchNode",
            LabError::NotUp { .. } => "NotUp",
            LabError::NoLab => "NoLab",
            LabError::Ambiguous { .. } => "Ambiguous",
            LabError::Process { .. } => "Process",
            LabError::Task { .. } => "Task",
            LabError::Unsupported { .. } => "Unsupported",
            LabError::MissingTool { .. } => "MissingTool",
            LabError::Request { .. } => "Request",
        }
    }
    const LAB_VARIANTS: &[&str] = &[
        "InvalidId",
        "IdInUse",
        "Plan",
        "Kernel",
        "State",
        "StateCorrupt",
        "NoSuchLab",
        "NoSuchNode",
        "NotUp",
        "NoLab",
        "Ambiguous",
        "Process",
        "Task",
        "Unsupported",
        "MissingTool",
        "Request",
    ];

    fn overlay_variant(e: &OverlayError) -> &'static str {
        match e {
            OverlayError::NoBinary(_) => "NoBinary",
            OverlayError::NoOverlay(_) => "NoOverlay",
            OverlayError::Lab(_) => "Lab",
            OverlayError::NoRouter { .. } => "NoRouter",
            OverlayError::Router { .. } => "Router",
            OverlayError::NotConverged { .. } => "NotConverged",
        }
    }
    const OVERLAY_VARIANTS: &[&str] = &[
        "NoBinary",
        "NoOverlay",
        "Lab",
        "NoRouter",
        "Router",
        "NotConverged",
    ];

    fn uml_variant(e: &UmlError) -> &'static str {
        match e {
            UmlError::KernelMissing { .. } => "KernelMissing",
            UmlError::ModprobeMissing => "ModprobeMissing",
            UmlError::Nested => "Nested",
            UmlError::Setting { .. } => "Setting",
            UmlError::Unshareable { .. } => "Unshareable",
            UmlError::Io { .. } => "Io",
            UmlError::Boot { .. } => "Boot",
            UmlError::Timeout { .. } => "Timeout",
            UmlError::GuestLab { .. } => "GuestLab",
            UmlError::Interrupted { .. } => "Interrupted",
        }
    }
    const UML_VARIANTS: &[&str] = &[
        "KernelMissing",
        "ModprobeMissing",
        "Nested",
        "Setting",
        "Unshareable",
        "Io",
        "Boot",
        "Timeout",
        "GuestLab",
        "Interrupted",
    ];

    fn measure_variant(e: &MeasureError) -> &'static str {
        match e {
            MeasureError::Bind { .. } => "Bind",
            MeasureError::Cpu { .. } => "Cpu",
            MeasureError::Half { .. } => "Half",
        }
    }
    const MEASURE_VARIANTS: &[&str] = &["Bind", "Cpu", "Half"];

    fn tc_variant(e: &TcError) -> &'static str {
        match e {
            TcError::Invalid { .. } => "Invalid",
            TcError::Netlink { .. } => "Netlink",
        }
    }
    const TC_VARIANTS: &[&str] = &["Invalid", "Netlink"];

    fn external_variant(e: &ExternalError) -> &'static str {
        match e {
            ExternalError::Missing(_) => "Missing",
            ExternalError::Run { .. } => "Run",
        }
    }
    const EXTERNAL_VARIANTS: &[&str] = &["Missing", "Run"];

    fn capture_variant(e: &CaptureError) -> &'static str {
        match e {
            CaptureError::Filter { .. } => "Filter",
            CaptureError::NoSuchInterface { .. } => "NoSuchInterface",
            CaptureError::Interface { .. } => "Interface",
            CaptureError::File { .. } => "File",
            CaptureError::Lab(_) => "Lab",
        }
    }
    const CAPTURE_VARIANTS: &[&str] = &["Filter", "NoSuchInterface", "Interface", "File", "Lab"];

    fn io(errno: i32) -> std::io::Error {
        std::io::Error::from_raw_os_error(errno)
    }

    fn netlink(errno: i32) -> rtnetlink::Error {
        let mut msg = netlink_packet_core::ErrorMessage::default();
        msg.code = NonZeroI32::new(-errno);
        rtnetlink::Error::NetlinkError(msg)
    }

    fn kernel(lab: &str, node: Option<&str>, e: KernelError) -> LabError {
        LabError::Kernel {
            lab: lab.into(),
            node: node.map(str::to_string),
            cause: Box::new(e),
        }
    }

    /// A qdisc error as the shaping code reports it: inside a kernel error of its node.
    fn tc_in_lab(e: TcError) -> LabError {
        kernel(
            "lab1",
            Some("r1"),
            KernelError {
                netns: "netsim-lab1-r1".into(),
                target: None,
                op: "tc".into(),
                errno: None,
                detail: Some(e.to_string()),
                tool: None,
            },
        )
    }

    fn lab_errors() -> Vec<LabError> {
        vec![
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
                reason: "address 8.8.8.8/24 lies outside 198.18.0.0/15".into(),
            },
            kernel(
                "lab1",
                Some("h1"),
                KernelError::sys(
                    "netsim-lab1-h1",
                    Some("eth0 198.18.0.1/16"),
                    "RTM_NEWADDR",
                    Errno::EEXIST,
                ),
            ),
            kernel(
                "lab1",
                Some("h1"),
                KernelError::tool(
                    "netsim-lab1-h1",
                    &crate::tools::NFT,
                    "run `nft -f -`",
                    &io(libc::ENOENT),
                ),
            ),
            kernel(
                "lab1",
                Some("h1"),
                KernelError {
                    netns: "netsim-lab1-h1".into(),
                    target: None,
                    op: "load an nftables rule set with `nft -f -`".into(),
                    errno: None,
                    detail: Some(
                        "exit status: 1: Error: Could not process rule: No such file or directory"
                            .into(),
                    ),
                    tool: Some(&crate::tools::NFT),
                },
            ),
            kernel(
                "lab1",
                None,
                KernelError::io(
                    "netsim-lab1-h1",
                    Some("/run/netns/netsim-lab1-h1"),
                    "open netns",
                    &io(libc::ENOENT),
                ),
            ),
            LabError::State {
                lab: "lab1".into(),
                path: "/run/netsim/lab1.json".into(),
                cause: io(libc::EACCES),
            },
            LabError::StateCorrupt {
                path: "/run/netsim/lab1.json".into(),
                cause: serde_json::from_str::<serde_json::Value>("{").expect_err("not JSON"),
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
            LabError::NotUp {
                id: "lab1".into(),
                phase: "creating".into(),
            },
            LabError::NoLab,
            LabError::Ambiguous {
                labs: vec!["lab1".into(), "lab2".into()],
            },
            LabError::Process {
                lab: "lab1".into(),
                node: "h1".into(),
                what: "exec nosuchbinary".into(),
                cause: io(libc::ENOENT),
            },
            LabError::Task {
                lab: "lab1".into(),
                what: "the task run in node h1 panicked".into(),
            },
            LabError::Unsupported {
                lab: "lab1".into(),
                link: "r1 -- r2".into(),
                property: "loss".into(),
                backend: "emulated".into(),
                reason: "the kernel has no nftables (netdev ingress hook)".into(),
            },
            LabError::MissingTool {
                lab: "lab1".into(),
                needed_for: "random loss on the emulated backend (link r1 -- r2)".into(),
                tool: crate::tools::NFT,
            },
            LabError::Request {
                lab: "lab1".into(),
                what: "no link joins h1 and h3; the links are: h1 -- sw1, h2 -- sw1".into(),
            },
        ]
    }

    fn tc_errors() -> Vec<TcError> {
        vec![
            TcError::Invalid {
                kind: "netem",
                reason: "loss 120 % is not within 0 to 100".into(),
            },
            TcError::Netlink {
                op: "replace",
                kind: "netem",
                ifindex: 10,
                cause: netlink(libc::ENOENT),
            },
            TcError::Netlink {
                op: "add",
                kind: "flower filter",
                ifindex: 10,
                cause: netlink(libc::EOPNOTSUPP),
            },
            TcError::Netlink {
                op: "delete",
                kind: "root",
                ifindex: 10,
                cause: netlink(libc::ENOENT),
            },
        ]
    }

    fn overlay_errors() -> Vec<OverlayError> {
        vec![
            OverlayError::NoBinary("/work/target/debug/netsim".into()),
            OverlayError::NoOverlay("lab1".into()),
            OverlayError::Lab(LabError::Process {
                lab: "lab1".into(),
                node: "h1".into(),
                what: "spawn \"/work/target/debug/overlay-router\"".into(),
                cause: io(libc::EACCES),
            }),
            OverlayError::NoRouter {
                lab: "lab1".into(),
                node: "c1".into(),
                socket: "/run/netsim/lab1-overlay/c1.sock".into(),
                why: "routers run on hosts only (this lab's: h1, h2, h3)".into(),
            },
            OverlayError::Router {
                lab: "lab1".into(),
                host: "h2".into(),
                what: "1 of 2 peers connected after 60 s".into(),
            },
            OverlayError::NotConverged {
                lab: "lab1".into(),
                what: "2 routers not connected to all their peers".into(),
                after_s: 60,
                routers: vec![
                    "  h23: 37 of 39 peers connected, missing h1, h5; log: /run/netsim/lab1-overlay/h23.log".into(),
                    "  h24: 38 of 39 peers connected, missing h23; log: /run/netsim/lab1-overlay/h24.log".into(),
                ],
            },
        ]
    }

    fn uml_errors() -> Vec<UmlError> {
        vec![
            UmlError::KernelMissing {
                path: "/usr/bin/linux.uml".into(),
            },
            UmlError::ModprobeMissing,
            UmlError::Nested,
            UmlError::Setting {
                var: "NETSIM_UML_MEM",
                value: "lots".into(),
                why: "a size such as 1024M or 2G",
            },
            UmlError::Unshareable {
                path: "/proc/self".into(),
                why: "the guest has its own /proc",
            },
            UmlError::Io {
                what: "create the share directory /tmp/netsim-uml.1".into(),
                cause: io(libc::ENOSPC),
            },
            UmlError::Boot {
                stage: "did not finish booting",
                share: "/tmp/netsim-uml.1".into(),
                log_tail: "Kernel panic - not syncing: VFS: Unable to mount root fs".into(),
            },
            UmlError::Timeout {
                secs: 900,
                stage: "the command did not finish",
                share: "/tmp/netsim-uml.1".into(),
                log_tail: "modprobe: netem loaded".into(),
            },
            UmlError::GuestLab {
                id: "lab1".into(),
                what: "the guest did not report the lab up within 300 s".into(),
            },
            UmlError::Interrupted { signal: 2 },
        ]
    }

    fn measure_errors() -> Vec<MeasureError> {
        vec![
            MeasureError::Bind {
                test: "tcp_bw",
                node: "h3".into(),
                addr: "198.18.1.3:19765".parse().expect("address"),
                cause: io(libc::EADDRINUSE),
            },
            MeasureError::Cpu {
                test: "tcp_bw",
                half: "server",
                cpu: 7,
                reason: "CPU 7 is not in this process's affinity mask".into(),
            },
            MeasureError::Half {
                test: "udp_lat",
                half: "client",
                node: "h1".into(),
                reason: "no answer within 5 s".into(),
            },
        ]
    }

    fn external_errors() -> Vec<ExternalError> {
        vec![
            ExternalError::Missing("qperf"),
            ExternalError::Run {
                tool: "iperf3",
                node: "h1".into(),
                what: "exited with status 1: unable to connect to server".into(),
            },
        ]
    }

    fn capture_errors() -> Vec<CaptureError> {
        vec![
            crate::capture::check_filter("udp prot 6784").expect_err("a typo"),
            CaptureError::NoSuchInterface {
                lab: "lab1".into(),
                node: "h1".into(),
                iface: "eth9".into(),
                known: vec!["lo".into(), "eth0".into()],
            },
            CaptureError::Interface {
                lab: "lab1".into(),
                node: "h1".into(),
                iface: "eth0".into(),
                why: "You don't have permission to perform this capture on that device \
                      (socket: Operation not permitted)"
                    .into(),
            },
            CaptureError::File {
                path: "/nonexistent/ping.pcap".into(),
                why: "No such file or directory (os error 2)".into(),
            },
            CaptureError::Lab(LabError::NoSuchLab {
                id: "lab9".into(),
                known: vec![],
            }),
        ]
    }

    fn diagnostics() -> Diagnostics {
        Diagnostics(vec![Diagnostic::whole_file(
            "topologies/missing.toml".as_ref(),
            "cannot read the file: No such file or directory (os error 2)",
            "check the path",
        )])
    }

    /// Every error the CLI can print, as it reaches `main`: some behind the context the CLI
    /// adds on the way.
    fn table() -> Vec<(String, anyhow::Error)> {
        let mut out: Vec<(String, anyhow::Error)> = Vec::new();
        for e in lab_errors() {
            let name = format!("LabError::{}", lab_variant(&e));
            let err = if lab_variant(&e) == "Kernel" {
                anyhow::Error::new(e).context("bringing up topologies/shaped-wan.toml")
            } else {
                anyhow::Error::new(e)
            };
            out.push((name, err));
        }
        for e in tc_errors() {
            out.push((format!("TcError::{}", tc_variant(&e)), tc_in_lab(e).into()));
        }
        for e in overlay_errors() {
            let name = format!("OverlayError::{}", overlay_variant(&e));
            out.push((name, anyhow::Error::new(e).context("starting the overlay")));
        }
        for e in uml_errors() {
            out.push((format!("UmlError::{}", uml_variant(&e)), e.into()));
        }
        for e in measure_errors() {
            out.push((format!("MeasureError::{}", measure_variant(&e)), e.into()));
        }
        for e in capture_errors() {
            out.push((format!("CaptureError::{}", capture_variant(&e)), e.into()));
        }
        for e in external_errors() {
            out.push((format!("ExternalError::{}", external_variant(&e)), e.into()));
        }
        // `load_plan` in the CLI turns diagnostics into a message of their own.
        out.push(("Diagnostics".into(), anyhow::anyhow!("{}", diagnostics())));
        out
    }

    /// The clauses of a message: the parts between `": "`, and the parenthesised remarks.
    fn clauses(text: &str) -> Vec<String> {
        text.split(": ")
            .flat_map(|part| part.split(" ("))
            .map(|c| c.trim_matches(|ch: char| ch == ')' || ch.is_whitespace()))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_variant_of_every_error_type_is_in_the_table() {
        let names: BTreeSet<String> = table().into_iter().map(|(name, _)| name).collect();
        for (ty, variants) in [
            ("LabError", LAB_VARIANTS),
            ("TcError", TC_VARIANTS),
            ("OverlayError", OVERLAY_VARIANTS),
            ("UmlError", UML_VARIANTS),
            ("MeasureError", MEASURE_VARIANTS),
            ("ExternalError", EXTERNAL_VARIANTS),
            ("CaptureError", CAPTURE_VARIANTS),
        ] {
            for v in variants {
                let name = format!("{ty}::{v}");
                assert!(names.contains(&name), "{name} is not in the table");
            }
        }
    }

    #[test]
    fn no_cli_error_message_repeats_a_clause() {
        let mut shown = String::new();
        for (name, err) in table() {
            let text = render(&err);
            // A clause of a few words said twice is a cause shown twice; short ones ("error",
            // a number) may recur on their own.
            for clause in clauses(&text).iter().filter(|c| c.len() >= 12) {
                assert_eq!(
                    text.matches(clause.as_str()).count(),
                    1,
                    "{name}: {clause:?} appears more than once in:\n{text}"
                );
            }
            assert!(
                text.matches("hint:").count() <= 1,
                "{name}: more than one hint in:\n{text}"
            );
            shown.push_str(&format!("{name}\n  {}\n", text.replace('\n', "\n  ")));
        }
        insta::assert_snapshot!(shown);
    }

    #[test]
    fn a_missing_program_is_not_a_vanished_object() {
        let err = KernelError::tool(
            "netsim-lab1-h1",
            &crate::tools::NFT,
            "run `nft -f -`",
            &io(libc::ENOENT),
        );
        let text = err.to_string();
        assert!(text.contains("nftables package"), "{text}");
        assert!(!text.contains("gone"), "{text}");
        let vanished = KernelError::io("netsim-lab1-h1", None, "open netns", &io(libc::ENOENT));
        assert!(vanished.to_string().contains("gone"), "{vanished}");
    }
}
