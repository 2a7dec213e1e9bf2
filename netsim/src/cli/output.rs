//! How the CLI prints: tables for people, JSON for scripts.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde::Serialize;

use std::net::Ipv4Addr;

use crate::lab::bench::BenchResult;
use crate::lab::{CleanReport, LabInfo};
use crate::measure::icmp::PingResult;
use crate::measure::matrix::MatrixResult;
use crate::measure::mtu::{Oversize, PathMtu};
use crate::measure::perf::PerfResult;

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

pub(super) fn labs_table(labs: &[LabInfo], guests: &[crate::uml::labs::GuestLab]) -> String {
    if labs.is_empty() && guests.is_empty() {
        return "no labs\n".to_string();
    }
    let mut rows: Vec<Vec<String>> = labs
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
                "host".to_string(),
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
    rows.extend(guests.iter().map(|g| {
        vec![
            g.id.clone(),
            g.plan.clone(),
            g.nodes.to_string(),
            "up".to_string(),
            if g.alive() {
                format!("guest pid {}", g.pid)
            } else {
                format!("guest pid {} (gone: `netsim clean`)", g.pid)
            },
            "uml".to_string(),
            g.file.display().to_string(),
        ]
    }));
    table(
        &[
            "ID", "TOPOLOGY", "NODES", "PHASE", "OWNER", "KERNEL", "SHAPING", "FAULTS", "FILE",
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

pub(super) fn ping_text(from: &str, to: &str, addr: Ipv4Addr, r: &PingResult) -> String {
    let mut out = format!(
        "{from} -> {to} ({addr}): {} sent, {} received, {:.0}% loss",
        r.sent,
        r.received,
        r.loss() * 100.0
    );
    if !r.rtt_us.is_empty() {
        let n = r.rtt_us.len() as f64;
        let mean = r.rtt_us.iter().sum::<u64>() as f64 / n;
        let var = r
            .rtt_us
            .iter()
            .map(|v| (*v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let min = r.rtt_us.iter().min().copied().unwrap_or(0);
        let max = r.rtt_us.iter().max().copied().unwrap_or(0);
        let _ = write!(
            out,
            "\nrtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms",
            min as f64 / 1e3,
            mean / 1e3,
            max as f64 / 1e3,
            var.sqrt() / 1e3
        );
    }
    if let Some(mtu) = r.frag_needed_mtu {
        let _ = write!(out, "\nfragmentation needed: next-hop MTU {mtu}");
    }
    if r.too_big_locally > 0 {
        let _ = write!(
            out,
            "\n{} requests larger than the outgoing interface's MTU were not sent",
            r.too_big_locally
        );
    }
    out.push('\n');
    out
}

pub(super) fn perf_line(r: &PerfResult) -> String {
    let figure = match (r.bytes_per_sec, r.latency_us) {
        (Some(bps), _) => format!("{:>10.1} MB/sec ({:.0} Mbit/s)", bps / 1e6, bps * 8.0 / 1e6),
        (None, Some(us)) => format!("{us:>10.1} us"),
        (None, None) => "no figure".to_string(),
    };
    let mut line = format!("{:<8} {figure}", r.test.name());
    if let Some((sent, received)) = r.datagrams {
        let _ = write!(line, "  ({received} of {sent} datagrams arrived)");
    }
    if let Some(p) = &r.partial {
        let _ = write!(line, "  PARTIAL: {p}");
    }
    line
}

pub(super) fn matrix_text(r: &MatrixResult) -> String {
    let rows: Vec<Vec<String>> = r
        .clients
        .iter()
        .map(|c| {
            vec![
                c.node.clone(),
                c.server.clone(),
                c.streams.to_string(),
                format!("{:.1}", c.bytes_per_sec * 8.0 / 1e6),
                c.partial.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = table(&["CLIENT", "SERVER", "STREAMS", "MBIT/S", "NOTE"], &rows);
    let _ = writeln!(
        out,
        "aggregate {:.1} Mbit/s, mean per client {:.1} Mbit/s",
        r.aggregate_bytes_per_sec * 8.0 / 1e6,
        r.per_client_mean() * 8.0 / 1e6
    );
    out
}

pub(super) fn mtu_line(from: &str, to: &str, p: &PathMtu) -> String {
    let above = match p.oversize {
        None => "the search's upper bound passed".to_string(),
        Some(Oversize::FragNeeded { mtu }) => {
            format!("one byte more gets ICMP fragmentation-needed (next-hop MTU {mtu})")
        }
        Some(Oversize::LocalLimit) => {
            "one byte more exceeds the sender's own interface MTU".to_string()
        }
        Some(Oversize::BlackHole) => {
            "one byte more vanishes: a black hole (no ICMP comes back)".to_string()
        }
    };
    format!("{from} -> {to}: path MTU {}; {above}", p.mtu)
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
