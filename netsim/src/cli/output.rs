//! How the CLI prints: tables for people, JSON for scripts.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::lab::bench::BenchResult;
use crate::lab::{CleanReport, LabInfo};

/// Prints a value as pretty JSON on stdout.
pub(super) fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
    println!("{text}");
    Ok(())
}

/// Lays out rows in left-aligned columns separated by two spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

pub(super) fn labs_table(labs: &[LabInfo]) -> String {
    if labs.is_empty() {
        return "no labs\n".to_string();
    }
    let rows: Vec<Vec<String>> = labs
        .iter()
        .map(|l| {
            vec![
                l.id.clone(),
                l.plan.clone(),
                l.nodes.to_string(),
                format!("{:?}", l.phase).to_lowercase(),
                match (l.owner_pid, l.owner_alive) {
                    (None, _) => "kept up".to_string(),
                    (Some(pid), true) => format!("pid {pid}"),
                    (Some(pid), false) => format!("pid {pid} (gone: `netsim clean`)"),
                },
                l.backend.map_or("-", |b| b.name()).to_string(),
                if l.faults.is_empty() {
                    "-".to_string()
                } else {
                    l.faults.join("; ")
                },
                l.file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "TOPOLOGY", "NODES", "PHASE", "OWNER", "SHAPING", "FAULTS", "FILE",
        ],
        &rows,
    )
}

pub(super) fn clean_text(report: &CleanReport) -> String {
    if report.labs.is_empty() {
        return "nothing to clean\n".to_string();
    }
    let mut out = String::new();
    for id in &report.labs {
        let _ = writeln!(out, "removed lab {id}");
    }
    let _ = writeln!(
        out,
        "({} namespaces deleted, {} processes killed)",
        report.namespaces, report.processes
    );
    out
}

pub(super) fn bench_line(r: &BenchResult) -> String {
    format!(
        "{} {:>4} hosts ({} namespaces, {} links): up {:>6.2} s ({:>7.1} hosts/s)  down {:>6.2} s ({:>7.1} hosts/s)  peak memory {:>6.1} MiB",
        r.shape,
        r.hosts,
        r.nodes,
        r.links,
        r.up_secs,
        r.up_hosts_per_sec,
        r.down_secs,
        r.down_hosts_per_sec,
        r.peak_rss_kib as f64 / 1024.0
    )
}

#[cfg(test)]
mod tests {
    use super::table;

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec!["a".to_string(), "long value".to_string(), "x".to_string()],
            vec!["bbbb".to_string(), "v".to_string(), "".to_string()],
        ];
        insta::assert_snapshot!(table(&["ID", "NAME", "LAST"], &rows), @r"
        ID    NAME        LAST
        a     long value  x
        bbbb  v
        ");
    }
}
