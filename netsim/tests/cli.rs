//! The `netsim` binary end to end, as a person or a script uses it: two labs of the same
//! topology side by side, `ls --json`, `exec` exit codes, `down`, `run`, `check` errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// State files of this test binary live apart from real labs.
const RUN_DIR: &str = "/run/netsim-tests-cli";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn netsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netsim"))
        .args(args)
        .current_dir(root())
        .env("NETSIM_RUN_DIR", RUN_DIR)
        .output()
        .expect("netsim runs")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn suffix() -> String {
    format!("{:04x}", std::process::id() & 0xffff)
}

#[test]
fn two_labs_of_one_topology_run_side_by_side_and_go_away() {
    let ids = [format!("cli-a-{}", suffix()), format!("cli-b-{}", suffix())];
    // Both `up`s at the same moment, as two people would start them.
    let children: Vec<_> = ids
        .iter()
        .map(|id| {
            Command::new(env!("CARGO_BIN_EXE_netsim"))
                .args(["up", "topologies/three-host.toml", "--name", id, "--json"])
                .current_dir(root())
                .env("NETSIM_RUN_DIR", RUN_DIR)
                .output()
        })
        .collect();
    for (id, child) in ids.iter().zip(children) {
        let out = child.expect("netsim up runs");
        assert!(out.status.success(), "up {id}: {}", text(&out.stderr));
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(info["id"], id.as_str());
        assert_eq!(info["phase"], "up");
    }

    let ls = netsim(&["ls", "--json"]);
    let labs: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("ls --json");
    for id in &ids {
        let lab = labs
            .as_array()
            .and_then(|a| a.iter().find(|l| l["id"] == id.as_str()))
            .unwrap_or_else(|| panic!("{id} listed in {labs}"));
        assert_eq!(lab["persist"], true);
        assert_eq!(lab["nodes"], 10);
    }

    // exec runs in the node and carries the exit code back, in both labs.
    for id in &ids {
        let ok = netsim(&["exec", "--lab", id, "h1", "--", "sh", "-c", "exit 0"]);
        assert!(ok.status.success(), "{}", text(&ok.stderr));
        let seven = netsim(&["exec", "--lab", id, "h2", "--", "sh", "-c", "exit 7"]);
        assert_eq!(seven.status.code(), Some(7));
        let ping = netsim(&["ping", id, "h1", "h3", "-c", "2", "-i", "10ms"]);
        assert!(ping.status.success(), "{}", text(&ping.stderr));
        assert!(
            text(&ping.stdout).contains("2 received"),
            "{}",
            text(&ping.stdout)
        );
    }
    // Without --lab, two labs up is ambiguous: a clear error naming both.
    let ambiguous = netsim(&["exec", "h1", "--", "true"]);
    assert!(!ambiguous.status.success());
    let err = text(&ambiguous.stderr);
    assert!(ids.iter().all(|id| err.contains(id.as_str())), "{err}");

    for id in &ids {
        let down = netsim(&["down", id]);
        assert!(down.status.success(), "{}", text(&down.stderr));
        let left = netsim::testing::lab_namespaces(id);
        assert!(left.is_empty(), "left behind: {left:?}");
        assert!(!Path::new(RUN_DIR).join(format!("{id}.json")).exists());
    }
}

#[test]
fn run_brings_up_checks_reports_and_tears_down() {
    let id = format!("cli-run-{}", suffix());
    let out = netsim(&["run", "topologies/three-host.toml", "--name", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    insta::assert_snapshot!(text(&out.stdout), @r#"
    three-host: 13 checks in 2 steps, 13 passed, 0 failed
      step "up": bring the lab and its overlay routers up
        PASS  lab up: 10 nodes, 3 overlay routers connected
      step "expect": check
        PASS  reach h1 -> h2 (198.18.1.2): answered
        PASS  reach h1 -> h3 (198.18.1.3): answered
        PASS  reach h2 -> h1 (198.18.1.1): answered
        PASS  reach h2 -> h3 (198.18.1.3): answered
        PASS  reach h3 -> h1 (198.18.1.1): answered
        PASS  reach h3 -> h2 (198.18.1.2): answered
        PASS  reach c1 -> c3 (overlay): answered
        PASS  reach c1 -> c6 (overlay): answered
        PASS  reach c4 -> c2 (overlay): answered
        PASS  reach c5 -> c4 (overlay): answered
        PASS  reach c6 -> c1 (overlay): answered
        PASS  reach c2 -> c1 (overlay): answered
    "#);
    assert!(!Path::new(RUN_DIR).join(format!("{id}.json")).exists());
}

#[test]
fn a_failing_expectation_fails_the_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("unreachable.toml");
    std::fs::write(
        &file,
        r#"
[[switch]]
name = "sw1"
subnet = "198.18.7.0/24"
[[host]]
name = "h1"
switches = ["sw1"]
[[expect]]
kind = "reach"
from = "h1"
to = "198.18.7.200"
"#,
    )
    .expect("write topology");
    let id = format!("cli-fail-{}", suffix());
    let out = netsim(&["run", file.to_str().expect("utf-8 path"), "--name", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("FAIL  reach h1 -> 198.18.7.200"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn test_runs_several_files_reports_each_and_writes_junit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[host]]\nname = \"h1\"\nmtu = 1\n").expect("write topology");
    let junit = dir.path().join("junit.xml");
    let out = netsim(&[
        "test",
        "fixtures/field/mininet-1139-link-down-up-keeps-shape/topology.toml",
        bad.to_str().expect("utf-8 path"),
        "--junit",
        junit.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("mininet-1139: 5 checks in 4 steps, 5 passed, 0 failed")
            && stdout.contains("step \"link h1 -- r1 cut\": cut h1 -- r1")
            && stdout.contains("FAIL  topology is valid"),
        "{stdout}"
    );
    // Progress goes to stderr, step by step.
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("[1/2] mininet-1139: step 3/4 \"link h1 -- r1 cut\""),
        "{stderr}"
    );
    let xml = std::fs::read_to_string(&junit).expect("JUnit written");
    assert!(
        xml.contains("<testsuites name=\"netsim test\" tests=\"6\" failures=\"1\" skipped=\"0\">")
            && xml.contains(
                "classname=\"mininet-1139.link healed\" name=\"reach h1 -&gt; h2 (198.18.40.2)\""
            )
            && xml.contains("<failure message=\"step &quot;load&quot;: expected a valid topology"),
        "{xml}"
    );
}

#[test]
fn ctrl_c_during_a_test_tears_its_lab_down() {
    use std::io::BufRead;
    let name = format!("sigint-{}", suffix());
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("slow.toml");
    // The second step waits up to a minute for an answer that never comes.
    std::fs::write(
        &file,
        format!(
            "[lab]\nname = \"{name}\"\n[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.8.0/24\"\n\
             [[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\n[[expect]]\nkind = \"reach\"\n\
             from = \"h1\"\nto = \"198.18.8.200\"\nwithin = \"60s\"\n"
        ),
    )
    .expect("write topology");
    let mut child = Command::new(env!("CARGO_BIN_EXE_netsim"))
        .args(["test", file.to_str().expect("utf-8 path")])
        .current_dir(root())
        .env("NETSIM_RUN_DIR", RUN_DIR)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("netsim test starts");
    // Read stderr to its end (a closed pipe would make netsim's progress lines fail), telling
    // when the slow step has started.
    let stderr = child.stderr.take().expect("stderr");
    let (started, wait) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("step 2/2 \"expect\"") {
                let _ = started.send(());
            }
            all.push(line);
        }
        all.join("\n")
    });
    wait.recv().expect("the slow step starts");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let out = child.wait_with_output().expect("netsim test ends");
    let said = reader.join().expect("stderr reader");
    assert_eq!(out.status.code(), Some(130), "{said}");
    assert!(
        said.contains("interrupted: the labs in flight were torn down"),
        "{said}"
    );
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("netsim-{name}")))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let ls = netsim(&["ls", "--json"]);
    assert!(!text(&ls.stdout).contains(&name), "{}", text(&ls.stdout));
}

#[test]
fn check_names_the_file_line_and_column_of_a_mistake() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[host]]\nname = \"h1\"\n\n[[link]]\nendpoints = [\"h1\", \"h9\"]\n",
    )
    .expect("write topology");
    let out = netsim(&["check", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("bad.toml:5:"), "{err}");
    assert!(err.contains("h9"), "{err}");
}

#[test]
fn check_graph_schema_and_doctor_print_for_scripts() {
    let check = netsim(&["check", "topologies/routed-line.toml", "--json"]);
    assert!(check.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&check.stdout).expect("plan JSON");
    assert_eq!(plan["name"], "routed-line");

    let graph = netsim(&["graph", "topologies/three-host.toml"]);
    assert!(
        text(&graph.stdout).contains("graph"),
        "{}",
        text(&graph.stdout)
    );

    let schema = netsim(&["schema"]);
    let schema: serde_json::Value = serde_json::from_slice(&schema.stdout).expect("schema");
    assert!(schema["properties"].is_object(), "{schema}");

    let doctor = netsim(&["doctor", "--json"]);
    let caps: serde_json::Value = serde_json::from_slice(&doctor.stdout).expect("doctor JSON");
    let features = caps["features"].as_array().expect("features");
    assert!(features
        .iter()
        .any(|f| f["feature"] == "netns" && f["state"] == "present"));
}

#[test]
fn the_shaping_backend_is_named_only_where_a_link_is_shaped() {
    // No link of two-host.toml is shaped: run and up say nothing of shaping.
    let id = format!("cli-quiet-{}", suffix());
    let out = netsim(&["run", "topologies/two-host.toml", "--name", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains("shaping"), "{all}");

    let up = netsim(&["up", "topologies/two-host.toml", "--name", &id]);
    let said = text(&up.stdout);
    let down = netsim(&["down", &id]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert!(
        said.contains(&format!("lab {id} is up (4 nodes)")),
        "{said}"
    );

    // shaped-wan.toml shapes two links: run names the backend.
    let id = format!("cli-shaped-{}", suffix());
    let out = netsim(&[
        "run",
        "topologies/shaped-wan.toml",
        "--name",
        &id,
        "--backend",
        "emulated",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("lab {id}: link shaping backend emulated")),
        "{err}"
    );
    assert!(
        text(&out.stdout).contains("links shaped by the emulated backend"),
        "{}",
        text(&out.stdout)
    );
}

/// `netsim` with `PATH` set to an empty directory: no user-space tool can be found.
fn netsim_without_tools(args: &[&str]) -> Output {
    let empty = tempfile::tempdir().expect("temp dir");
    Command::new(env!("CARGO_BIN_EXE_netsim"))
        .args(args)
        .current_dir(root())
        .env("NETSIM_RUN_DIR", RUN_DIR)
        .env("PATH", empty.path())
        .env_remove("NETSIM_NFT")
        .env_remove("NETSIM_FAULT_FILTERS")
        .output()
        .expect("netsim runs")
}

#[test]
fn a_plan_needing_a_missing_tool_is_refused_before_anything_is_made() {
    let id = format!("cli-notool-{}", suffix());
    // The emulated backend drops shaped-wan's random loss with nftables rules.
    let out = netsim_without_tools(&[
        "up",
        "topologies/shaped-wan.toml",
        "--name",
        &id,
        "--backend",
        "emulated",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("needs `nft`"), "{err}");
    assert!(err.contains("nftables package"), "{err}");
    assert!(err.contains("r1 -- r2"), "{err}");
    let left = netsim::testing::lab_namespaces(&id);
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(!Path::new(RUN_DIR).join(format!("{id}.json")).exists());

    // doctor names the missing tool and its package.
    let doctor = netsim_without_tools(&["doctor"]);
    let report = text(&doctor.stdout);
    assert!(report.contains("MISSING  nft"), "{report}");
    assert!(report.contains("apt-get install nftables"), "{report}");
    let doctor = netsim_without_tools(&["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&doctor.stdout).expect("doctor JSON");
    let nft = v["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["program"] == "nft"))
        .unwrap_or_else(|| panic!("nft in {v}"));
    assert_eq!(nft["package"], "nftables");
    assert!(nft["path"].is_null(), "{nft}");
}

#[test]
fn overlay_names_the_lab_node_and_socket_when_no_router_runs() {
    let id = format!("cli-noovl-{}", suffix());
    let up = netsim(&["up", "topologies/routed-line.toml", "--name", &id]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    let out = netsim(&["overlay", &id, "h1", "--", "status", "--json"]);
    let down = netsim(&["down", &id]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let socket = format!("{RUN_DIR}/{id}-overlay/h1.sock");
    assert!(
        err.contains(&format!(
            "lab {id}, node h1: no overlay router API at {socket}"
        )),
        "{err}"
    );
    assert!(err.contains("no [overlay] section"), "{err}");
}

/// Starts `netsim capture ARGS` and returns once it says it is capturing (its first line on
/// stderr), with the rest of its stderr still to read.
fn capture_started(
    args: &[&str],
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStderr>,
) {
    use std::io::BufRead as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_netsim"))
        .arg("capture")
        .args(args)
        .current_dir(root())
        .env("NETSIM_RUN_DIR", RUN_DIR)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("netsim capture starts");
    let mut err = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    err.read_line(&mut first).expect("capture's first line");
    assert!(first.starts_with("capturing on "), "{first}");
    (child, err)
}

#[test]
fn capture_writes_a_pcap_tshark_reads_and_prints_one_line_per_frame() {
    use std::io::Read as _;
    let id = format!("cli-cap-{}", suffix());
    let up = netsim(&["up", "topologies/routed-line.toml", "--name", &id]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("ping.pcap");
    let file_arg = file.to_str().expect("utf-8 path");

    // To a file: two pings are four frames on h1's eth0. (--duration only bounds a hang.)
    let (child, mut err) = capture_started(&[
        &id,
        "h1:eth0",
        "-w",
        file_arg,
        "--filter",
        "icmp",
        "--count",
        "4",
        "--duration",
        "60s",
    ]);
    let ping = netsim(&["ping", &id, "h1", "h3", "-c", "2", "-i", "10ms"]);
    let out = child.wait_with_output().expect("capture ends");
    let mut rest = String::new();
    err.read_to_string(&mut rest).expect("stderr");
    assert!(ping.status.success(), "{}", text(&ping.stderr));
    assert!(out.status.success(), "{rest}");
    assert!(rest.contains("4 frames captured"), "{rest}");

    // Without a file: one line per frame.
    let (child, _err) = capture_started(&[
        &id,
        "h1",
        "--filter",
        "icmp",
        "--count",
        "2",
        "--duration",
        "60s",
    ]);
    let ping2 = netsim(&["ping", &id, "h1", "h3", "-c", "1"]);
    let lines = child.wait_with_output().expect("capture ends");
    let down = netsim(&["down", &id]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert!(ping2.status.success(), "{}", text(&ping2.stderr));
    let lines = text(&lines.stdout);
    assert_eq!(lines.lines().count(), 2, "{lines}");
    assert!(
        lines.contains("eth0 198.18.1.") && lines.contains("ICMP echo request"),
        "{lines}"
    );

    if netsim::tools::find_program("tshark").is_none() {
        netsim::testing::skip_because(
            "tshark is not installed (Debian's tshark package; ci/setup installs it)",
            module_path!(),
        );
        return;
    }
    let read = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args(["-T", "fields", "-e", "frame.protocols"])
        .output()
        .expect("tshark runs");
    let protocols = text(&read.stdout);
    assert_eq!(
        protocols
            .lines()
            .filter(|p| *p == "eth:ethertype:ip:icmp:data")
            .count(),
        4,
        "{protocols}{}",
        text(&read.stderr)
    );
}

#[test]
fn bench_suite_compare_and_render_speak_in_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A bad suite: exit 2, the file, line and column, and the fix.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[suite]\nname = \"x\"\n[[profile]]\nname = \"p\"\nlink = \"azure-zz\"\n",
    )
    .expect("write");
    let out = netsim(&["bench", "--suite", bad.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.toml:5:8: error: no link profile \"azure-zz\""),
        "{err}"
    );
    assert!(err.contains("help: use one of: azure-a0"), "{err}");
    // The default suite plans without running anything.
    let out = netsim(&["bench", "--suite", "suites/default.toml", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 server, 1/2/4/8 clients"));
    // compare: 0 when nothing got worse, 1 when something did, 2 for a file that is not a run.
    let run = |samples: &str| {
        format!(
            r#"{{"suite":"x","file":"x.toml","started_unix":0,"wall_s":1.0,"duration_s":1.0,"repeats":3,
            "machine":{{"cpu":"c","cpus":2,"memory_gib":1.0,"kernel":"k","shaping":""}},"profiles":[],
            "rows":[{{"profile":"veth","mtu":1500,"datapath":"fast","test":"tcp_bw","higher_is_better":true,
            "figures":{{"samples":[{samples}]}},"carried_by":"vxlan","unavailable":null}}],"matrices":[]}}"#
        )
    };
    let (old, new, same) = (
        dir.path().join("old.json"),
        dir.path().join("new.json"),
        dir.path().join("same.json"),
    );
    std::fs::write(&old, run("100e6, 101e6, 99e6")).expect("write");
    std::fs::write(&same, run("100.5e6, 99e6, 101e6")).expect("write");
    std::fs::write(&new, run("70e6, 71e6, 69e6")).expect("write");
    let path = |p: &Path| p.to_str().expect("utf-8").to_string();
    let out = netsim(&["bench", "compare", &path(&old), &path(&same)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let out = netsim(&["bench", "compare", &path(&old), &path(&new)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("veth / 1500 / fast / tcp_bw: 100 -> 70.0 MB/s (-30.0 %"));
    let out = netsim(&["bench", "compare", &path(&old), &path(&bad)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is not the results.json"));
    // render: tables and page written again from a stored run (results written before rows
    // knew `rounds`), the run itself untouched; 2 for a file that is not a run.
    let stored = std::fs::read(&old).expect("read");
    let page = dir.path().join("page.md");
    let out = netsim(&["bench", "render", &path(&old), "--page", &path(&page)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let md = std::fs::read_to_string(dir.path().join("results.md")).expect("results.md");
    assert!(md.contains("| veth | 1500 |"), "{md}");
    let page = std::fs::read_to_string(&page).expect("page");
    assert!(page.contains("## Targets"), "{page}");
    assert!(
        page.contains(&format!(
            "netsim bench --suite x.toml --out {}",
            path(dir.path())
        )),
        "{page}"
    );
    assert_eq!(std::fs::read(&old).expect("read"), stored);
    let out = netsim(&["bench", "render", &path(&bad)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is not the results.json"));
}
