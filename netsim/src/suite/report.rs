//! A suite run as Markdown: one table per test shaped like the source documents' (each
//! datapath beside native, with "compared to native"), the client matrices, the published
//! figures for the same links, and the targets. Pure.

use std::fmt::Write as _;

use super::results::{Figures, MatrixRow, Row, SuiteResults};
use super::seeds;
use super::spec::Datapath;

/// A figure in the unit tables use: MB/s (10^6 bytes) for bandwidth, microseconds for latency.
pub fn figure(v: f64, bandwidth: bool) -> String {
    let v = if bandwidth { v / 1e6 } else { v };
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Median and range, e.g. `1234 (1190-1260)`, or `-` without figures.
fn cell(f: &Figures, bandwidth: bool) -> String {
    match (f.median(), f.range()) {
        (Some(m), Some((lo, hi))) if f.samples.len() > 1 => format!(
            "{} ({}-{})",
            figure(m, bandwidth),
            figure(lo, bandwidth),
            figure(hi, bandwidth)
        ),
        (Some(m), _) => figure(m, bandwidth),
        _ => "-".into(),
    }
}

fn percent(share: f64) -> String {
    format!("{:.0} %", share * 100.0)
}

/// The datapaths `rows` hold, in table order.
fn datapaths_in<'a>(rows: impl Iterator<Item = &'a Row>) -> Vec<Datapath> {
    let mut dps: Vec<Datapath> = rows.map(|r| r.datapath).collect();
    dps.sort();
    dps.dedup();
    dps
}

/// (profile, MTU) pairs in first-seen order.
fn groups(r: &SuiteResults) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = Vec::new();
    for row in &r.rows {
        let key = (row.profile.clone(), row.mtu);
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

/// The whole report.
pub fn markdown(r: &SuiteResults) -> String {
    let mut out = String::new();
    let pinned = match r.pin_cpu {
        Some(cpu) => format!("both halves of each run on CPU {cpu}"),
        None => "halves placed by the scheduler".into(),
    };
    let _ = writeln!(
        out,
        "Suite `{}`: {} repeats of {} s per case ({pinned}); figures are medians with the \
         range of the repeats in brackets; bandwidth in MB/s (10^6 bytes/s), latency one way \
         in microseconds (qperf's `tcp_lat`: half the round trip). \"vs native\" is the share \
         of native (for latency: native / datapath, so below 100 % is slower){rounds}.\n",
        r.suite,
        r.repeats,
        r.duration_s,
        rounds = if r.rows.iter().any(|x| x.rounds) {
            ": where a share has a range in brackets, the datapath and native ran round by \
             round (one run each per round, in an order that turns), and the share is the \
             median of the per-round ratios, the range theirs; other shares are ratios of \
             medians"
        } else {
            ""
        }
    );
    let mut notes: Vec<String> = Vec::new();
    let mut tests: Vec<String> = Vec::new();
    for row in &r.rows {
        if !tests.contains(&row.test) {
            tests.push(row.test.clone());
        }
    }
    for test in &tests {
        table(&mut out, r, test, &mut notes);
    }
    if !notes.is_empty() {
        out.push_str("Not measured:\n\n");
        for (i, n) in notes.iter().enumerate() {
            let _ = writeln!(out, "{}. {n}", i + 1);
        }
        out.push('\n');
    }
    let carried = carried_by(r);
    if !carried.is_empty() {
        let _ = writeln!(out, "What carried the overlay's traffic: {carried}.\n");
    }
    if !r.matrices.is_empty() {
        matrix_table(&mut out, &r.matrices);
    }
    let seeds = against_published(r);
    if !seeds.is_empty() {
        out.push_str("### Against the published figures (tcp_bw, share of native)\n\n");
        out.push_str(&seeds);
        out.push('\n');
    }
    out
}

fn table(out: &mut String, r: &SuiteResults, test: &str, notes: &mut Vec<String>) {
    let rows: Vec<&Row> = r.rows.iter().filter(|x| x.test == test).collect();
    let Some(first) = rows.first() else {
        return;
    };
    let bw = first.higher_is_better;
    let unit = if bw { "MB/s" } else { "us" };
    let dps = datapaths_in(rows.iter().copied());
    let _ = writeln!(out, "### {test} ({unit})\n");
    let mut head = String::from("| profile | MTU |");
    let mut rule = String::from("|---|---:|");
    for d in &dps {
        let _ = write!(head, " {d} |");
        rule.push_str("---:|");
        if *d != Datapath::Native {
            let _ = write!(head, " {d} vs native |");
            rule.push_str("---:|");
        }
    }
    let _ = writeln!(out, "{head}\n{rule}");
    for (profile, mtu) in groups(r) {
        let in_group: Vec<&&Row> = rows
            .iter()
            .filter(|x| x.profile == profile && x.mtu == mtu)
            .collect();
        if in_group.is_empty() {
            continue;
        }
        let mut line = format!("| {profile} | {mtu} |");
        for d in &dps {
            let row = in_group.iter().find(|x| x.datapath == *d);
            let text = match row {
                None => "".to_string(),
                Some(x) => match &x.unavailable {
                    Some(why) => {
                        // One note per datapath and reason, however many cells share it.
                        let note = format!("{d}: {why}");
                        let k = match notes.iter().position(|n| *n == note) {
                            Some(k) => k + 1,
                            None => {
                                notes.push(note);
                                notes.len()
                            }
                        };
                        format!("n/a ({k})")
                    }
                    None => cell(&x.figures, bw),
                },
            };
            let _ = write!(line, " {text} |");
            if *d != Datapath::Native {
                let share = row
                    .and_then(|x| r.native_of(x).map(|n| (x, n)))
                    .and_then(|(x, n)| {
                        let (m, lo, hi) = SuiteResults::share_spread(x, n)?;
                        // Measured round by round: the per-round ratios' range, the noise
                        // the median stands in.
                        Some(if SuiteResults::paired(x, n) {
                            format!("{} ({:.0}-{:.0})", percent(m), lo * 100.0, hi * 100.0)
                        } else {
                            percent(m)
                        })
                    })
                    .unwrap_or_default();
                let _ = write!(line, " {share} |");
            }
        }
        let _ = writeln!(out, "{line}");
    }
    out.push('\n');
}

/// "fast: vxlan (all 12 rows); odp: sleeve (2 rows)".
fn carried_by(r: &SuiteResults) -> String {
    let mut parts = Vec::new();
    for d in Datapath::ALL.into_iter().filter(|d| d.is_overlay()) {
        let mut seen: Vec<(String, usize)> = Vec::new();
        for row in r.rows.iter().filter(|x| x.datapath == d) {
            if let Some(c) = &row.carried_by {
                match seen.iter_mut().find(|(n, _)| n == c) {
                    Some((_, k)) => *k += 1,
                    None => seen.push((c.clone(), 1)),
                }
            }
        }
        if !seen.is_empty() {
            let list: Vec<String> = seen
                .iter()
                .map(|(n, k)| format!("{n} ({k} row{})", if *k == 1 { "" } else { "s" }))
                .collect();
            parts.push(format!("{d} on {}", list.join(", ")));
        }
    }
    parts.join("; ")
}

fn matrix_table(out: &mut String, rows: &[MatrixRow]) {
    out.push_str("### One server, N clients (tcp_bw, one stream per client, MB/s)\n\n");
    out.push_str(
        "| profile | MTU | datapath | clients | aggregate | per client | per client vs 1 client |\n\
         |---|---:|---|---:|---:|---:|---:|\n",
    );
    for m in rows {
        let one = rows
            .iter()
            .find(|x| {
                x.profile == m.profile
                    && x.mtu == m.mtu
                    && x.datapath == m.datapath
                    && x.clients == 1
            })
            .and_then(|x| x.per_client.median());
        let vs = match (m.per_client.median(), one) {
            (Some(a), Some(b)) if b > 0.0 => percent(a / b),
            _ => String::new(),
        };
        let (agg, per) = match &m.unavailable {
            Some(why) => (format!("n/a: {why}"), String::new()),
            None => (cell(&m.aggregate, true), cell(&m.per_client, true)),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {agg} | {per} | {vs} |",
            m.profile, m.mtu, m.datapath, m.clients
        );
    }
    out.push('\n');
}

/// The share of native `tcp_bw` (one stream) of `datapath` on `profile` at `mtu`.
pub fn share_of_native(
    r: &SuiteResults,
    profile: &str,
    mtu: u32,
    datapath: Datapath,
) -> Option<f64> {
    share_of(r, profile, mtu, datapath, Datapath::Native)
}

/// The share of `base`'s `tcp_bw` (one stream) `datapath` keeps on `profile` at `mtu`.
pub fn share_of(
    r: &SuiteResults,
    profile: &str,
    mtu: u32,
    datapath: Datapath,
    base: Datapath,
) -> Option<f64> {
    let available = |d| {
        r.row(profile, mtu, d, "tcp_bw")
            .filter(|x| x.unavailable.is_none())
    };
    SuiteResults::share(available(datapath)?, available(base)?)
}

fn against_published(r: &SuiteResults) -> String {
    let mut out = String::from(
        "| profile | MTU | fast (ours) | sleeve (ours) | Weave fast datapath | Weave sleeve | flannel vxlan | source |\n\
         |---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let mut any = false;
    for info in &r.profiles {
        let Some(p) = info.link.as_deref().and_then(seeds::published) else {
            continue;
        };
        for (profile, mtu) in groups(r).into_iter().filter(|(n, _)| *n == info.name) {
            any = true;
            let ours = |d| {
                share_of_native(r, &profile, mtu, d)
                    .map(percent)
                    .unwrap_or("-".into())
            };
            let theirs = |v: Option<f64>| v.map(percent).unwrap_or("-".into());
            let _ = writeln!(
                out,
                "| {profile} | {mtu} | {} | {} | {} | {} | {} | {} |",
                ours(Datapath::Fast),
                ours(Datapath::Sleeve),
                theirs(p.weave_fastdp),
                theirs(p.weave_sleeve),
                theirs(p.flannel_vxlan),
                p.source
            );
        }
    }
    if any {
        out
    } else {
        String::new()
    }
}

/// One target and whether the run meets it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// What is asked.
    pub what: String,
    /// `Some(true)`: met; `Some(false)`: missed; `None`: the run has no figures for it.
    pub holds: Option<bool>,
    /// What the run measured.
    pub seen: String,
}

/// The slowest shaped link the fast path's targets are judged on (10 Gbit/s).
pub(crate) const FAST_LINK_BPS: u64 = 10_000_000_000;

/// The project's targets for the default suite (issue 15), checked against a run: the fast
/// path against raw vxlan and native on the unshaped link and on links of 10 Gbit/s or more,
/// sleeve against a 1 Gbit/s link, and the overlay against Weave's published shares on every
/// cloud profile.
pub fn targets(r: &SuiteResults) -> Vec<Target> {
    let mut out = Vec::new();
    // The fast path's targets are judged where the datapath itself is what limits: on an
    // unshaped veth (CPU-bound: the figure is what each byte costs on one core) and on a
    // datacenter link of 10 Gbit/s or more without delay (link-bound, as on the source
    // documents' NICs).
    let fast_profiles: Vec<&super::spec::Profile> = r
        .profiles
        .iter()
        .filter(|p| p.delay_ns.is_none() && p.rate_bps.is_none_or(|b| b >= FAST_LINK_BPS))
        .collect();
    for p in &fast_profiles {
        for (_, mtu) in groups(r).into_iter().filter(|(n, _)| *n == p.name) {
            let fast = r.row(&p.name, mtu, Datapath::Fast, "tcp_bw");
            let (base, vx) = raw_vxlan_base(r, fast);
            let share = match (fast, vx) {
                (Some(f), Some(v)) => SuiteResults::share(f, v),
                _ => None,
            };
            out.push(Target {
                what: format!(
                    "fast path >= 95 % of raw kernel vxlan ({}), {} at MTU {mtu}",
                    base.name(),
                    p.name
                ),
                holds: share.map(|s| s >= 0.95),
                seen: share.map(percent).unwrap_or("not measured".into()),
            });
            if mtu == 9000 {
                let s = share_of_native(r, &p.name, mtu, Datapath::Fast);
                out.push(Target {
                    what: format!("fast path >= 85 % of native, {} at MTU 9000", p.name),
                    holds: s.map(|s| s >= 0.85),
                    seen: s.map(percent).unwrap_or("not measured".into()),
                });
            }
        }
    }
    for p in r
        .profiles
        .iter()
        .filter(|p| p.rate_bps == Some(1_000_000_000))
    {
        for (_, mtu) in groups(r).into_iter().filter(|(n, _)| *n == p.name) {
            let sleeve = r.row(&p.name, mtu, Datapath::Sleeve, "tcp_bw");
            let rate = sleeve
                .and_then(|s| s.figures.median())
                .map(|m| m * 8.0 / 1e9);
            out.push(Target {
                what: format!(
                    "sleeve >= 90 % of a 1 Gbit/s link ({} at MTU {mtu})",
                    p.name
                ),
                holds: rate.map(|g| g >= 0.9),
                seen: rate
                    .map(|g| format!("{:.0} % ({:.0} Mbit/s)", g * 100.0, g * 1000.0))
                    .unwrap_or("not measured".into()),
            });
        }
    }
    for info in &r.profiles {
        let Some(p) = info.link.as_deref().and_then(seeds::published) else {
            continue;
        };
        for (profile, mtu) in groups(r).into_iter().filter(|(n, _)| *n == info.name) {
            for (ours, theirs, label) in [
                (Datapath::Fast, p.weave_best(), "Weave's best"),
                (Datapath::Sleeve, p.weave_sleeve, "Weave sleeve"),
            ] {
                let Some(theirs) = theirs else { continue };
                let s = share_of_native(r, &profile, mtu, ours);
                out.push(Target {
                    what: format!(
                        "{ours} beats {label} ({}) on {profile} at MTU {mtu}",
                        percent(theirs)
                    ),
                    holds: s.map(|s| s > theirs),
                    seen: s.map(percent).unwrap_or("not measured".into()),
                });
            }
        }
    }
    out
}

/// The raw kernel vxlan the fast path is judged against, beside `fast`: the one carrying
/// containers over a veth and a bridge (`vxlan-bridge`, what the fast path is built from)
/// where the run has it, else the one between the hosts (`vxlan`).
fn raw_vxlan_base<'a>(r: &'a SuiteResults, fast: Option<&Row>) -> (Datapath, Option<&'a Row>) {
    let with_figures = |d| {
        fast.and_then(|f| r.sibling(f, d))
            .filter(|row| row.figures.median().is_some())
    };
    match with_figures(Datapath::VxlanBridge) {
        Some(row) => (Datapath::VxlanBridge, Some(row)),
        None => (Datapath::Vxlan, with_figures(Datapath::Vxlan)),
    }
}

/// Targets as a Markdown list.
pub fn render_targets(targets: &[Target]) -> String {
    let mut out = String::new();
    for t in targets {
        let verdict = match t.holds {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let _ = writeln!(out, "- {}: {verdict} ({})", t.what, t.seen);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::results::sample;

    #[test]
    fn tables_set_each_datapath_beside_native() {
        insta::assert_snapshot!(markdown(&sample()));
    }

    #[test]
    fn targets_are_judged_from_the_figures() {
        let t = targets(&sample());
        insta::assert_snapshot!(render_targets(&t));
        // 3.7 of 3.8 GB/s: 97 % of raw vxlan at 1500.
        assert_eq!(t[0].holds, Some(true));
    }
}
