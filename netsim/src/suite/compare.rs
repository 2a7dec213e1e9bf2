//! Two suite runs side by side (`netsim bench compare OLD.json NEW.json`): every case both
//! measured, and whether it got worse beyond the noise the runs themselves show. Pure.
//!
//! A case has regressed when (1) the repeats no longer overlap: every new figure is worse
//! than every old one, and (2) the medians moved by more than the noise: the larger relative
//! spread (max - min over median) of the two runs' repeats, and at least `min_change`. Both
//! must hold: a case with one repeat has no spread, so the floor keeps a few percent of
//! machine noise from failing CI. Improvements are found the same way in the other direction.

use std::fmt::Write as _;

use serde::Serialize;

use super::results::{Figures, SuiteResults};

/// What became of one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Worse beyond the noise.
    Regression,
    /// Better beyond the noise.
    Improvement,
    /// Within the noise.
    Same,
    /// Measured in only one of the runs (or without figures in one).
    Missing,
}

/// One case in both runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// `profile / MTU / datapath / test`, or `profile / MTU / datapath / N clients`.
    pub case: String,
    /// Old median (bytes/s or microseconds).
    pub old: Option<f64>,
    /// New median.
    pub new: Option<f64>,
    /// (new - old) / old.
    pub change: Option<f64>,
    /// The noise the change had to exceed (relative).
    pub noise: f64,
    /// The verdict.
    pub verdict: Verdict,
    /// Whether larger figures are better.
    pub higher_is_better: bool,
}

/// Every case of `old` and `new`, in `new`'s order then the ones only `old` has.
pub fn compare(old: &SuiteResults, new: &SuiteResults, min_change: f64) -> Vec<Change> {
    let cases = |r: &SuiteResults| -> Vec<(String, Figures, bool)> {
        let mut v: Vec<(String, Figures, bool)> = r
            .rows
            .iter()
            .map(|x| {
                (
                    format!("{} / {} / {} / {}", x.profile, x.mtu, x.datapath, x.test),
                    x.figures.clone(),
                    x.higher_is_better,
                )
            })
            .collect();
        v.extend(r.matrices.iter().map(|m| {
            (
                format!(
                    "{} / {} / {} / {} clients",
                    m.profile, m.mtu, m.datapath, m.clients
                ),
                m.aggregate.clone(),
                true,
            )
        }));
        v
    };
    let (olds, news) = (cases(old), cases(new));
    let mut out = Vec::new();
    for (case, nf, higher) in &news {
        let of = olds.iter().find(|(c, _, _)| c == case).map(|(_, f, _)| f);
        out.push(judge(case, of, Some(nf), *higher, min_change));
    }
    for (case, of, higher) in &olds {
        if !news.iter().any(|(c, _, _)| c == case) {
            out.push(judge(case, Some(of), None, *higher, min_change));
        }
    }
    out
}

fn judge(
    case: &str,
    old: Option<&Figures>,
    new: Option<&Figures>,
    higher: bool,
    min_change: f64,
) -> Change {
    let (om, nm) = (old.and_then(Figures::median), new.and_then(Figures::median));
    let noise = old
        .and_then(Figures::relative_spread)
        .unwrap_or(0.0)
        .max(new.and_then(Figures::relative_spread).unwrap_or(0.0))
        .max(min_change);
    let mut change = Change {
        case: case.to_string(),
        old: om,
        new: nm,
        change: None,
        noise,
        verdict: Verdict::Missing,
        higher_is_better: higher,
    };
    let (Some(o), Some(n), Some((olo, ohi)), Some((nlo, nhi))) = (
        om,
        nm,
        old.and_then(Figures::range),
        new.and_then(Figures::range),
    ) else {
        return change;
    };
    if o <= 0.0 {
        return change;
    }
    let rel = (n - o) / o;
    change.change = Some(rel);
    // "Worse" in the metric's direction: lower bandwidth, higher latency.
    let (worse_apart, better_apart) = if higher {
        (nhi < olo, nlo > ohi)
    } else {
        (nlo > ohi, nhi < olo)
    };
    let beyond = rel.abs() > noise;
    change.verdict = if worse_apart && beyond {
        Verdict::Regression
    } else if better_apart && beyond {
        Verdict::Improvement
    } else {
        Verdict::Same
    };
    change
}

/// The comparison as text: regressions, improvements, cases measured in one run only, and a
/// count line.
pub fn render(changes: &[Change]) -> String {
    let mut out = String::new();
    for (verdict, title) in [
        (Verdict::Regression, "Regressions"),
        (Verdict::Improvement, "Improvements"),
        (Verdict::Missing, "In one run only (or without figures)"),
    ] {
        let list: Vec<&Change> = changes.iter().filter(|c| c.verdict == verdict).collect();
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{title}:");
        for c in list {
            let fmt = |v: Option<f64>| {
                v.map(|v| super::report::figure(v, c.higher_is_better))
                    .unwrap_or("-".into())
            };
            let unit = if c.higher_is_better { "MB/s" } else { "us" };
            let delta = c
                .change
                .map(|d| format!(" ({:+.1} %, noise {:.1} %)", d * 100.0, c.noise * 100.0))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}: {} -> {} {unit}{delta}",
                c.case,
                fmt(c.old),
                fmt(c.new)
            );
        }
    }
    let count = |v| changes.iter().filter(|c| c.verdict == v).count();
    let _ = writeln!(
        out,
        "{} case{}: {} regressed, {} improved, {} within the noise, {} in one run only",
        changes.len(),
        if changes.len() == 1 { "" } else { "s" },
        count(Verdict::Regression),
        count(Verdict::Improvement),
        count(Verdict::Same),
        count(Verdict::Missing)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::results::Row;
    use crate::suite::spec::Datapath;
    use rstest::rstest;

    fn run(test: &str, samples: &[f64]) -> SuiteResults {
        SuiteResults {
            rows: vec![Row {
                profile: "veth".into(),
                mtu: 1500,
                datapath: Datapath::Fast,
                test: test.into(),
                higher_is_better: test.ends_with("bw"),
                figures: Figures {
                    samples: samples.to_vec(),
                },
                carried_by: None,
                unavailable: None,
                rounds: false,
            }],
            ..SuiteResults::default()
        }
    }

    #[rstest]
    #[case::same_within_the_spread("tcp_bw", &[100.0, 110.0, 90.0], &[95.0, 105.0, 85.0], Verdict::Same)]
    #[case::bandwidth_drop_beyond_spread("tcp_bw", &[100.0, 102.0, 98.0], &[80.0, 82.0, 78.0], Verdict::Regression)]
    #[case::bandwidth_rise("tcp_bw", &[100.0, 102.0, 98.0], &[120.0, 122.0, 118.0], Verdict::Improvement)]
    #[case::overlapping_repeats_are_noise("tcp_bw", &[100.0, 60.0, 140.0], &[70.0, 75.0, 80.0], Verdict::Same)]
    #[case::below_the_floor("tcp_bw", &[100.0], &[97.0], Verdict::Same)]
    #[case::latency_rise_is_a_regression("tcp_lat", &[50.0, 51.0, 49.0], &[70.0, 71.0, 69.0], Verdict::Regression)]
    #[case::latency_drop_is_an_improvement("tcp_lat", &[50.0, 51.0, 49.0], &[30.0, 31.0, 29.0], Verdict::Improvement)]
    #[case::no_figures_is_missing("tcp_bw", &[100.0], &[], Verdict::Missing)]
    fn verdicts(
        #[case] test: &str,
        #[case] old: &[f64],
        #[case] new: &[f64],
        #[case] want: Verdict,
    ) {
        let c = compare(&run(test, old), &run(test, new), 0.05);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].verdict, want, "{c:?}");
    }

    #[test]
    fn a_case_in_one_run_only_is_listed() {
        let mut new = run("tcp_bw", &[100e6]);
        new.rows[0].profile = "other".into();
        let c = compare(&run("tcp_bw", &[100e6]), &new, 0.05);
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|c| c.verdict == Verdict::Missing));
        insta::assert_snapshot!(render(&c));
    }

    #[test]
    fn the_report_names_each_regression_with_its_change_and_noise() {
        let c = compare(
            &run("tcp_bw", &[100e6, 102e6, 98e6]),
            &run("tcp_bw", &[80e6, 82e6, 78e6]),
            0.05,
        );
        insta::assert_snapshot!(render(&c));
    }
}
