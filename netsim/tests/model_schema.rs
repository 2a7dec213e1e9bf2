//! The committed JSON schema is the one generated from the model types.
//!
//! To update docs/topology.schema.json (or docs/bench-suite.schema.json) after changing the
//! types, run
//! `NETSIM_BLESS=1 cargo test -p netsim --test model_schema`.

use std::path::Path;

/// Fails when `generated` differs from the committed file `rel` (under the workspace root);
/// with NETSIM_BLESS set, writes it first.
fn check_committed(rel: &str, generated: serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    let text = serde_json::to_string_pretty(&generated).unwrap_or_default() + "\n";
    if std::env::var_os("NETSIM_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{rel} is stale; run NETSIM_BLESS=1 cargo test -p netsim --test model_schema"
    );
}

#[test]
fn committed_schema_is_current() {
    check_committed("docs/topology.schema.json", netsim::model::json_schema());
}

#[test]
fn schema_lists_every_section() {
    let schema = netsim::model::json_schema();
    let props = schema["properties"]
        .as_object()
        .map(|o| o.keys().cloned().collect::<Vec<_>>());
    let mut props = props.unwrap_or_default();
    props.sort();
    assert_eq!(
        props,
        ["expect", "host", "lab", "link", "overlay", "router", "step", "switch"]
    );
    assert_eq!(
        schema["additionalProperties"],
        serde_json::Value::Bool(false)
    );
}

#[test]
fn committed_bench_suite_schema_is_current() {
    check_committed(
        "docs/bench-suite.schema.json",
        netsim::suite::spec::json_schema(),
    );
}
