//! Benchmark suites: the source documents' tables and plots, reproduced for this overlay and
//! these links in one command (`netsim bench --suite FILE`).
//!
//! - [`spec`]: the suite file (profiles, MTUs, datapaths, tests, repeats, client matrices),
//!   parsed with located errors; its JSON schema is `docs/bench-suite.schema.json`.
//! - [`cases`]: a suite expanded into labs and cases, and the time it will take. Pure.
//! - [`run`]: the runner (labs, datapaths, measurements, progress).
//! - [`results`]: what a run measured (the JSON it writes).
//! - [`report`]: Markdown tables, the published figures beside ours, the targets. Pure.
//! - [`plot`]: the charts (SVG and PNG).
//! - [`compare`]: two runs side by side, regressions beyond the noise. Pure.
//! - [`page`]: the results page in docs/.
//! - [`seeds`]: the published figures the runs are read against.

pub mod cases;
pub mod compare;
pub mod page;
pub mod plot;
pub mod report;
pub mod results;
pub mod run;
pub mod seeds;
pub mod spec;
