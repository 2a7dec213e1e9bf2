//! `netsim overlay LAB NODE -- VERB`: the router's client verbs run against the routers of a
//! lab through `netsim::overlay_run::client_command`, the library call the CLI verb makes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use netsim::overlay_run::{client_command, OverlayOptions};

fn run(lab: &str, node: &str, verb: &[&str]) -> (String, String) {
    let out = client_command(lab, node)
        .unwrap_or_else(|e| panic!("{node}: {e}"))
        .args(verb)
        .output()
        .expect("the router client runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{verb:?}: {stderr}");
    (stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_verbs_reach_a_hosts_router_and_a_node_without_one_is_named() {
    let id = unique("ovl-cli");
    let lab = up("topologies/two-host.toml", &id).await;
    let mut o = overlay(&lab, OverlayOptions::default()).await;

    let (status, _) = run(&id, "h1", &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(v["router"]["name"], "h1", "{v}");
    let peers: Vec<&str> = v["router"]["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["peer"].as_str())
        .collect();
    assert_eq!(peers, ["h2"], "{v}");

    // A peer added through netsim is one the router dials: removing it says so.
    run(&id, "h2", &["peers", "add", "198.18.1.9"]);
    let (removed, _) = run(&id, "h2", &["peers", "remove", "198.18.1.9"]);
    assert!(removed.contains("stopped dialling 198.18.1.9"), "{removed}");

    // No router: a container, a node that does not exist, a router that is gone.
    let err = client_command(&id, "c1").unwrap_err().to_string();
    assert!(
        err.contains(&format!("lab {id}, node c1"))
            && err.contains(&format!("{id}-overlay/c1.sock"))
            && err.contains("hosts only"),
        "{err}"
    );
    let err = client_command(&id, "h9").unwrap_err().to_string();
    assert!(err.contains("no node h9"), "{err}");
    o.kill("h2").expect("kill h2's router");
    let err = client_command(&id, "h2").unwrap_err().to_string();
    assert!(
        err.contains(&format!("lab {id}, node h2")) && err.contains("not running"),
        "{err}"
    );
    drop(o);
    lab.down().await.expect("down");
}

#[tokio::test]
async fn a_lab_without_an_overlay_has_no_router_to_ask() {
    let id = unique("ovl-none");
    let lab = up("topologies/routed-line.toml", &id).await;
    let err = client_command(&id, "h1").unwrap_err().to_string();
    assert!(
        err.contains(&format!("lab {id}, node h1"))
            && err.contains(".sock")
            && err.contains("no [overlay] section"),
        "{err}"
    );
    lab.down().await.expect("down");
}
