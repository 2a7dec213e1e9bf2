//! `netsim up --kernel uml`: a lab kept in a background User-Mode-Linux guest, reached by
//! `ls`, `exec`, `down` and `clean` from the host.
//!
//! Driven through the `netsim` binary with `NETSIM_RUN_DIR` pointing at a directory of the
//! test's own, so the host records of these labs never mix with anyone else's. Skips where
//! linux.uml is missing; does not run in the kernel lane (`host_lane_only!`: no nested guests).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use netsim::uml::{self, labs, GuestOptions};

const NETSIM: &str = env!("CARGO_BIN_EXE_netsim");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn can_boot() -> bool {
    match uml::preflight(&GuestOptions::default()) {
        Ok(()) => true,
        Err(e) => {
            netsim::testing::skip_because(&format!("no guest can boot here: {e}"), module_path!());
            false
        }
    }
}

struct Env {
    run_dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            run_dir: tempfile::tempdir().expect("temp run dir"),
        }
    }

    fn netsim(&self, args: &[&str]) -> Output {
        Command::new(NETSIM)
            .args(args)
            .current_dir(workspace())
            .env("NETSIM_RUN_DIR", self.run_dir.path())
            .env("NETSIM_UML_TIMEOUT", "300")
            .output()
            .expect("run netsim")
    }

    /// The host record of guest lab `id`, from `ls --json`.
    fn listed(&self, id: &str) -> Option<serde_json::Value> {
        let out = self.netsim(&["ls", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let all: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).expect("ls --json prints a list");
        all.into_iter().find(|l| l["id"] == id)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A lab id unique to this run: `prefix-XXXX`, as the lab engine makes its default ids.
fn unique(prefix: &str) -> String {
    netsim::lab::default_id(prefix)
}

/// Wait (bounded, only to catch hangs) until no process is left in group `pgid`.
fn assert_group_gone(pgid: i32) {
    let until = Instant::now() + Duration::from_secs(30);
    while !labs::group_members(pgid).is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        labs::group_members(pgid),
        Vec::<u32>::new(),
        "guest processes left"
    );
}

#[test]
fn up_exec_down_in_a_background_guest() {
    netsim::host_lane_only!();
    if !can_boot() {
        return;
    }
    let env = Env::new();
    let id = unique("umlup");
    let up = env.netsim(&[
        "up",
        "--kernel",
        "uml",
        "topologies/three-host.toml",
        "--name",
        &id,
    ]);
    assert_eq!(up.status.code(), Some(0), "{}", text(&up.stderr));
    assert!(
        text(&up.stdout).contains(&format!("lab {id} is up in a User-Mode-Linux guest")),
        "{}",
        text(&up.stdout)
    );

    let rec = env.listed(&id).expect("ls shows the guest lab");
    assert_eq!(rec["kernel"], "uml");
    assert_eq!(rec["alive"], true);
    let pgid = rec["pid"].as_i64().expect("pid") as i32;
    let share = PathBuf::from(rec["share"].as_str().expect("share"));
    let table = text(&env.netsim(&["ls"]).stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id) && l.contains(" uml ")),
        "{table}"
    );

    // Runs in the node inside the guest: h1's underlay address, from the guest's namespace.
    let addr = env.netsim(&[
        "exec", "--lab", &id, "h1", "--", "ip", "-4", "-o", "addr", "show", "eth0",
    ]);
    assert_eq!(addr.status.code(), Some(0), "{}", text(&addr.stderr));
    assert!(
        text(&addr.stdout).contains("198.18.1.1/24"),
        "{}",
        text(&addr.stdout)
    );
    // Exit code and stderr come back apart from stdout.
    let code = env.netsim(&[
        "exec",
        "--lab",
        &id,
        "h2",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(code.status.code(), Some(7));
    assert_eq!(text(&code.stdout), "out\n");
    assert_eq!(text(&code.stderr), "err\n");
    // h1 reaches h3 over the lab's switch inside the guest.
    let ping = env.netsim(&[
        "exec",
        "--lab",
        &id,
        "h1",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "5",
        "198.18.1.3",
    ]);
    assert_eq!(ping.status.code(), Some(0), "{}", text(&ping.stdout));
    // Ctrl-C on the host's exec reaches the command inside the guest.
    let mut long = Command::new(NETSIM)
        .args(["exec", "--lab", &id, "h3", "--", "sh", "-c"])
        .arg("echo started; sleep 100; echo never")
        .current_dir(workspace())
        .env("NETSIM_RUN_DIR", env.run_dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start a long exec");
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(long.stdout.as_mut().expect("piped stdout")),
        &mut first,
    )
    .expect("read the first line");
    assert_eq!(first, "started\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(long.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("interrupt our exec");
    let status = long.wait().expect("wait for exec");
    assert_eq!(status.code(), Some(130));
    let left = env.netsim(&[
        "exec",
        "--lab",
        &id,
        "h3",
        "--",
        "sh",
        "-c",
        "ps -eo args | grep -c '^[s]leep 100'",
    ]);
    assert_eq!(
        text(&left.stdout),
        "0\n",
        "the interrupted command lives on"
    );
    // An unknown node is the guest's netsim error, exit code 1.
    let bad = env.netsim(&["exec", "--lab", &id, "nosuch", "--", "true"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("has no node nosuch"));

    let down = env.netsim(&["down", &id]);
    assert_eq!(down.status.code(), Some(0), "{}", text(&down.stderr));
    assert!(env.listed(&id).is_none(), "ls still shows {id}");
    assert!(!share.exists(), "share directory {} left", share.display());
    assert_group_gone(pgid);
}

#[test]
fn clean_removes_a_guest_lab_whose_guest_died() {
    netsim::host_lane_only!();
    if !can_boot() {
        return;
    }
    let env = Env::new();
    let id = unique("umlcl");
    let up = env.netsim(&[
        "up",
        "--kernel",
        "uml",
        "topologies/two-host.toml",
        "--name",
        &id,
    ]);
    assert_eq!(up.status.code(), Some(0), "{}", text(&up.stderr));
    let rec = env.listed(&id).expect("ls shows the guest lab");
    let pgid = rec["pid"].as_i64().expect("pid") as i32;
    let share = PathBuf::from(rec["share"].as_str().expect("share"));

    // A running guest is not clean's business.
    let clean = env.netsim(&["clean"]);
    assert_eq!(clean.status.code(), Some(0));
    assert!(
        env.listed(&id).is_some(),
        "clean removed a running guest lab"
    );

    // The guest dies (as in a crash): this test started it, and kills its group by id.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the guest's group");
    assert_group_gone(pgid);
    assert_eq!(env.listed(&id).expect("still recorded")["alive"], false);
    let exec = env.netsim(&["exec", "--lab", &id, "h1", "--", "true"]);
    assert_eq!(exec.status.code(), Some(1));
    assert!(
        text(&exec.stderr).contains("netsim clean"),
        "{}",
        text(&exec.stderr)
    );

    let clean = env.netsim(&["clean"]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean.stderr));
    assert!(
        text(&clean.stdout).contains(&format!("removed guest lab {id}")),
        "{}",
        text(&clean.stdout)
    );
    assert!(env.listed(&id).is_none());
    assert!(!share.exists(), "share directory {} left", share.display());
}

#[test]
fn an_id_in_use_is_refused_before_a_guest_boots() {
    netsim::host_lane_only!();
    if !can_boot() {
        return;
    }
    let env = Env::new();
    let id = unique("umlid");
    std::fs::create_dir_all(env.run_dir.path().join("uml")).expect("records dir");
    std::fs::write(env.run_dir.path().join(format!("{id}.json")), "{}").expect("fake record");
    let up = env.netsim(&[
        "up",
        "--kernel",
        "uml",
        "topologies/two-host.toml",
        "--name",
        &id,
    ]);
    assert_eq!(up.status.code(), Some(1));
    assert!(
        text(&up.stderr).contains("the id is in use"),
        "{}",
        text(&up.stderr)
    );
}
