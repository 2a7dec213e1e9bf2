//! Every shipped topology plans, and its plan renders as reviewed (insta snapshots).

use std::path::{Path, PathBuf};

use netsim::model::{self, graph};

fn topologies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies")
}

fn topology_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(topologies_dir())
        .unwrap_or_else(|e| panic!("cannot list topologies/: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn the_expected_topologies_ship() {
    let names: Vec<String> = topology_files().iter().map(|p| stem(p)).collect();
    for wanted in ["jumbo", "routed-line", "three-host", "two-host"] {
        assert!(
            names.iter().any(|n| n == wanted),
            "topologies/{wanted}.toml is missing: {names:?}"
        );
    }
}

#[test]
fn every_topology_plans_and_renders() {
    for file in topology_files() {
        let plan = model::load_plan(&file).unwrap_or_else(|d| panic!("{}:\n{d}", file.display()));
        insta::assert_snapshot!(format!("plan-{}", stem(&file)), plan.render());
    }
}

#[test]
fn every_topology_points_editors_at_the_schema() {
    for file in topology_files() {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            text.starts_with("#:schema ../docs/topology.schema.json\n"),
            "{} must start with the #:schema line",
            file.display()
        );
    }
}

#[test]
fn three_host_dot() {
    let plan = model::load_plan(&topologies_dir().join("three-host.toml"))
        .unwrap_or_else(|d| panic!("{d}"));
    insta::assert_snapshot!(graph::to_dot(&plan));
}

#[test]
fn routed_line_dot() {
    let plan = model::load_plan(&topologies_dir().join("routed-line.toml"))
        .unwrap_or_else(|d| panic!("{d}"));
    insta::assert_snapshot!(graph::to_dot(&plan));
}

fn plan_str(src: &str) -> model::Plan {
    let file = Path::new("inline.toml");
    let topo = model::parse(src, file).unwrap_or_else(|d| panic!("{d}"));
    model::plan(&topo).unwrap_or_else(|d| panic!("{d}"))
}

#[test]
fn routers_take_the_lowest_addresses_wherever_declared() {
    let plan = plan_str(
        r#"
[[switch]]
name = "sw1"
subnet = "198.18.1.0/24"

[[host]]
name = "h1"
switches = ["sw1"]
gateway = "r1"

[[router]]
name = "r1"
switches = ["sw1"]
"#,
    );
    insta::assert_snapshot!(plan.render());
}

#[test]
fn explicit_addresses_are_skipped_and_interfaces_follow_file_order() {
    let plan = plan_str(
        r#"
[lab]
name = "explicit"

[[switch]]
name = "sw1"
subnet = "198.18.1.0/24"
mtu = 9000

[[host]]
name = "h1"

[[host]]
name = "h2"
switches = ["sw1"]

[[link]]
endpoints = ["h1", "sw1"]
addresses = ["198.18.1.1"]

[[link]]
endpoints = ["h1", "h2"]
addresses = ["198.18.9.1/31", "auto"]
subnet = "198.18.9.0/31"
mtu = 1400

[[link]]
endpoints = ["sw1", "h1"]
mtu = 1500
"#,
    );
    insta::assert_snapshot!(plan.render());
}

#[test]
fn the_lab_name_defaults_to_the_file_stem() {
    let topo = model::parse("", Path::new("dir/My_Lab.toml")).unwrap_or_else(|d| panic!("{d}"));
    let plan = model::plan(&topo).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(plan.name, "my-lab");
    assert!(plan.nodes.is_empty());
}

#[test]
fn the_overlay_password_is_never_rendered() {
    let plan = plan_str(
        r#"
[overlay]
range = "198.19.0.0/16"
password = "hunter2"
mtu = 1376
"#,
    );
    let text = plan.render();
    assert!(!text.contains("hunter2"));
    assert!(
        text.contains("overlay: range 198.19.0.0/16, mtu 1376, encrypted"),
        "{text}"
    );
}

#[test]
fn port_names_fit_and_stay_unique_with_many_links() {
    // Two long-named hosts with a dozen links each to one switch: every port name must fit
    // in 15 bytes and be unique within the switch even after cutting.
    let mut src = String::from("[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n");
    for host in ["hostalpha1", "hostalpha2"] {
        src.push_str(&format!(
            "[[host]]\nname = \"{host}\"\nswitches = [{}]\n",
            ["\"sw1\""; 12].join(", ")
        ));
    }
    let plan = plan_str(&src);
    let sw = plan.node("sw1").unwrap_or_else(|| panic!("no sw1 in plan"));
    let names: Vec<&str> = sw.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names.len(), 24);
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 24, "duplicate port names: {names:?}");
    assert!(
        names
            .iter()
            .all(|n| n.len() <= netsim::model::plan::IFNAME_MAX),
        "{names:?}"
    );
    insta::assert_snapshot!(names.join("\n"));
}

#[test]
fn planning_is_deterministic() {
    let file = topologies_dir().join("routed-line.toml");
    let a = model::load_plan(&file).unwrap_or_else(|d| panic!("{d}"));
    let b = model::load_plan(&file).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(a, b);
}
