//! `netsim::uml` and `--kernel uml`: booting a User-Mode-Linux guest from the host lane.
//!
//! Each test boots a guest of its own (about 3 s). They skip with a reason where Debian's
//! linux.uml is not installed, and do not run in the kernel lane (`host_lane_only!`): that lane
//! is already a guest, and guests do not nest.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use netsim::caps::{Capabilities, Feature};
use netsim::uml::{self, GuestCommand, GuestExit, GuestOptions, UmlError};

const NETSIM: &str = env!("CARGO_BIN_EXE_netsim");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Guest options, or None (after a skip record) where no guest can boot here.
fn guest_or_skip() -> Option<GuestOptions> {
    let opts = GuestOptions {
        // Generous: only catches hangs (two cores, tests in parallel).
        timeout: Duration::from_secs(300),
        ..GuestOptions::default()
    };
    match uml::preflight(&opts) {
        Ok(()) => Some(opts),
        Err(e) => {
            netsim::testing::skip_because(&format!("no guest can boot here: {e}"), module_path!());
            None
        }
    }
}

/// Run `argv` in a guest with stdout and stderr captured.
fn run_captured(argv: &[&str], opts: &GuestOptions) -> (GuestExit, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut cmd = GuestCommand::new(argv.iter().copied());
    cmd.cwd = Some(workspace());
    cmd.stdout = Some(fs::File::create(&out_path).expect("stdout file"));
    cmd.stderr = Some(fs::File::create(&err_path).expect("stderr file"));
    let exit = match uml::run(cmd, opts) {
        Ok(exit) => exit,
        Err(e) => panic!("guest run of {argv:?} failed: {e}"),
    };
    let out = fs::read_to_string(&out_path).expect("read stdout");
    let err = fs::read_to_string(&err_path).expect("read stderr");
    assert_nothing_left(&exit);
    (exit, out, err)
}

/// The guest's processes and share directory are gone.
fn assert_nothing_left(exit: &GuestExit) {
    assert!(
        !exit.share.exists(),
        "share directory {} left behind",
        exit.share.display()
    );
    let mut left = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let pgrp: Option<i32> = rest.split_whitespace().nth(2).and_then(|f| f.parse().ok());
        if pgrp == Some(exit.pgid) {
            left.push(entry.file_name());
        }
    }
    assert!(
        left.is_empty(),
        "guest processes of group {} left: {left:?}",
        exit.pgid
    );
}

#[test]
fn three_host_runs_in_a_guest_with_the_hosts_report() {
    netsim::host_lane_only!();
    let Some(opts) = guest_or_skip() else { return };
    let file = workspace().join("topologies/three-host.toml");
    let file = file.to_str().expect("utf-8 path");
    let (exit, out, err) = run_captured(&[NETSIM, "run", file], &opts);
    assert_eq!(exit.code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(exit.ready_after.is_some(), "the guest never reported ready");
    insta::assert_snapshot!(out);

    // The same report as on the host kernel, where this host can run the lab.
    netsim::require_features!(Feature::Netns, Feature::Veth, Feature::Bridge);
    let host = Command::new(NETSIM)
        .args(["run", file])
        .output()
        .expect("run netsim on the host");
    assert_eq!(host.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&host.stdout), out);
}

#[test]
fn doctor_in_the_guest_has_netem_and_openvswitch() {
    netsim::host_lane_only!();
    let Some(opts) = guest_or_skip() else { return };
    let (exit, out, err) = run_captured(&[NETSIM, "doctor", "--json"], &opts);
    assert_eq!(exit.code, 0, "stderr:\n{err}");
    let caps: Capabilities = match serde_json::from_str(&out) {
        Ok(caps) => caps,
        Err(e) => panic!("doctor --json in the guest printed no capabilities ({e}):\n{out}"),
    };
    assert_eq!(caps.lane, "kernel");
    for feature in [
        Feature::Netns,
        Feature::Veth,
        Feature::Netem,
        Feature::Openvswitch,
    ] {
        assert!(
            caps.has(feature),
            "{feature} missing in the guest: {:?}",
            caps.status(feature)
        );
    }
}

#[test]
fn cli_carries_a_failing_expectations_exit_code_back() {
    netsim::host_lane_only!();
    let Some(_) = guest_or_skip() else { return };
    // The topology lies under /tmp, which the guest covers with its own: the CLI shares it.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("split.toml");
    fs::write(
        &file,
        r#"
[lab]
name = "split"

[[switch]]
name = "sw1"
subnet = "198.18.61.0/24"

[[switch]]
name = "sw2"
subnet = "198.18.62.0/24"

[[host]]
name = "h1"
switches = ["sw1"]

[[host]]
name = "h2"
switches = ["sw2"]

[[expect]]
kind = "reach"
from = "h1"
to = "h2"
"#,
    )
    .expect("write topology");
    let out = Command::new(NETSIM)
        .args(["run", "--kernel", "uml"])
        .arg(&file)
        .env("NETSIM_UML_TIMEOUT", "300")
        .output()
        .expect("run netsim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.starts_with("split: 2 checks in 2 steps, 1 passed, 1 failed\n"),
        "{stdout}"
    );
    assert!(stdout.contains("    FAIL  reach h1 -> h2"), "{stdout}");
    // No lab of it on the host: its namespaces lived and died in the guest.
    let netns: Vec<_> = fs::read_dir("/run/netns")
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !netns.iter().any(|n| n.to_string_lossy().contains("split")),
        "{netns:?}"
    );
}

#[test]
fn a_commands_exit_code_and_streams_come_back_apart() {
    netsim::host_lane_only!();
    let Some(opts) = guest_or_skip() else { return };
    let (exit, out, err) = run_captured(
        &[
            "/bin/sh",
            "-c",
            "echo out; echo err >&2; echo $NETSIM_LANE; exit 7",
        ],
        &opts,
    );
    assert_eq!(exit.code, 7);
    assert_eq!(out, "out\nkernel\n");
    assert_eq!(err, "err\n");
}

#[test]
fn a_timeout_stops_the_guest_and_says_so() {
    netsim::host_lane_only!();
    let Some(mut opts) = guest_or_skip() else {
        return;
    };
    opts.timeout = Duration::from_secs(1);
    let err = match uml::run(GuestCommand::new(["/bin/sleep", "600"]), &opts) {
        Ok(exit) => panic!("a 1 s guest running sleep 600 returned {exit:?}"),
        Err(e) => e,
    };
    let UmlError::Timeout { secs, share, .. } = &err else {
        panic!("expected a timeout, got: {err}");
    };
    assert_eq!(*secs, 1);
    assert!(err.to_string().contains("NETSIM_UML_TIMEOUT"), "{err}");
    assert!(!share.exists(), "share directory {} left", share.display());
}

#[test]
fn a_guest_that_never_boots_is_reported_with_its_log() {
    netsim::host_lane_only!();
    if uml::preflight(&GuestOptions::default()).is_err() {
        // Needs modprobe like any guest; the kernel itself is stood in for below.
        netsim::testing::skip_because("no modprobe here", module_path!());
        return;
    }
    // A "kernel" that prints a line and exits at once, as a kernel that cannot boot does.
    let dir = tempfile::tempdir().expect("temp dir");
    let fake = dir.path().join("linux.uml");
    fs::write(
        &fake,
        "#!/bin/sh\necho 'Kernel panic - not syncing: no init found'\n",
    )
    .expect("write fake kernel");
    fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod fake kernel");
    let opts = GuestOptions {
        kernel: fake,
        ..GuestOptions::default()
    };
    let err = match uml::run(GuestCommand::new(["/bin/true"]), &opts) {
        Ok(exit) => panic!("a kernel that cannot boot ran the command: {exit:?}"),
        Err(e) => e,
    };
    let UmlError::Boot { stage, share, .. } = &err else {
        panic!("expected a boot failure, got: {err}");
    };
    assert_eq!(*stage, "it did not finish booting");
    assert!(!share.exists(), "share directory {} left", share.display());
    let text = err.to_string();
    assert!(
        text.contains("---- boot.log ----\nKernel panic - not syncing: no init found\n"),
        "{text}"
    );
}

#[test]
fn a_missing_kernel_says_which_package_to_install() {
    netsim::host_lane_only!();
    let opts = GuestOptions {
        kernel: PathBuf::from("/nonexistent/linux.uml"),
        ..GuestOptions::default()
    };
    let err = match uml::run(GuestCommand::new(["/bin/true"]), &opts) {
        Ok(exit) => panic!("no kernel, yet the guest ran: {exit:?}"),
        Err(e) => e,
    };
    insta::assert_snapshot!(err.to_string());
}

#[test]
fn run_keep_in_a_guest_is_refused_with_the_way_forward() {
    let out = Command::new(NETSIM)
        .args([
            "run",
            "--kernel",
            "uml",
            "--keep",
            "topologies/three-host.toml",
        ])
        .current_dir(workspace())
        .output()
        .expect("run netsim");
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stderr));
}
