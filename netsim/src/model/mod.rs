//! The pure model: topology files in, a resolved [`Plan`] out. Never touches the kernel.
//!
//! - [`parse`] / [`load`]: TOML text to a [`Topology`] (syntax, known keys, value types);
//! - [`plan()`]: a [`Topology`] to a [`Plan`] (names, references, subnets, addresses, MTUs,
//!   routes, expectations), or every problem found, as [`Diagnostics`];
//! - [`json_schema`]: the JSON schema of topology files, for editors (`docs/topology.schema.json`);
//! - [`graph::to_dot`]: a Graphviz picture of a plan.
//!
//! The file format is documented in `docs/topology.md`.

use std::path::Path;

mod alloc;
pub mod diag;
pub mod expectation;
pub mod graph;
pub mod names;
pub mod neighbours;
pub mod plan;
mod planner;
mod render;
pub mod shape;
pub mod step;
pub mod step_types;
pub mod topology;

pub use diag::{Diagnostic, Diagnostics};
pub use plan::Plan;
pub use planner::{BENCHMARK, OVERLAY, UNDERLAY};
pub use topology::Topology;

/// Parses topology text; `file` is only used to name the file in diagnostics.
pub fn parse(src: &str, file: &Path) -> Result<Topology, Diagnostics> {
    topology::parse(src, file)
}

/// Reads and parses a topology file. A file that cannot be read is a diagnostic too.
pub fn load(path: &Path) -> Result<Topology, Diagnostics> {
    let src = std::fs::read_to_string(path).map_err(|e| topology::unreadable(path, &e))?;
    parse(&src, path)
}

/// Checks a topology and resolves it into a [`Plan`], reporting every problem it finds.
pub fn plan(topology: &Topology) -> Result<Plan, Diagnostics> {
    planner::plan(topology)
}

/// [`load`] then [`plan()`].
pub fn load_plan(path: &Path) -> Result<Plan, Diagnostics> {
    plan(&load(path)?)
}

/// The JSON schema (draft-07) of topology files, generated from the [`topology`] types.
/// `docs/topology.schema.json` holds it; a test keeps the two equal.
pub fn json_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<Topology>().to_value();
    drop_null(&mut schema);
    schema
}

/// TOML has no null (an absent key is how a file says "not set"), so `Option` fields are
/// plain types in the schema rather than "T or null".
pub(crate) fn drop_null(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            // `Option<Struct>` comes out as anyOf [ref, null].
            if let Some(Value::Array(alts)) = map.get_mut("anyOf") {
                alts.retain(|a| a.get("type").is_none_or(|t| t != "null"));
                if alts.len() == 1 {
                    if let Some(Value::Object(only)) = alts.pop() {
                        map.remove("anyOf");
                        map.extend(only);
                    }
                }
            }
            for child in map.values_mut() {
                drop_null(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null),
        _ => {}
    }
}
