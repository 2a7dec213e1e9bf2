//! The results page (`--page FILE`): the machine, the targets, the tables, the plots and what
//! the figures mean against the published ones, written from one run. Pure: the caller
//! writes the text and the plots.

use std::fmt::Write as _;

use super::report::{self, share_of, share_of_native};
use super::results::SuiteResults;
use super::seeds;
use super::spec::Datapath;

/// The page for run `r`; `plots` are the chart files relative to the page (SVG first),
/// `command` the command that regenerates it.
pub fn render(r: &SuiteResults, plots: &[String], command: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Benchmark results\n\n\
         Generated from one run of the `{}` suite on the machine below. To take it again \
         (as root; about {:.0} minutes):\n\n```sh\n{command}\n```\n\n\
         `netsim bench render` writes the tables, plots and this page again from the run's \
         `results.json`, without measuring (`--page` names the page).\n",
        r.suite,
        (r.wall_s / 60.0).ceil()
    );
    let m = &r.machine;
    let _ = writeln!(
        out,
        "## Machine\n\n{} CPUs ({}), {:.0} GiB, Linux {}, link shaping by the {} backend. \
         The run took {:.0} s: {} repeats of {} s per case. The machine is shared, so figures \
         carry the noise of its neighbours; the brackets show it.\n",
        m.cpus,
        m.cpu,
        m.memory_gib,
        m.kernel,
        if m.shaping.is_empty() {
            "default"
        } else {
            &m.shaping
        },
        r.wall_s,
        r.repeats,
        r.duration_s
    );
    out.push_str(
        "## Profiles\n\n| profile | shaping of the server's link | source |\n|---|---|---|\n",
    );
    for p in &r.profiles {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            p.name,
            p.describe(),
            p.source.as_deref().unwrap_or("")
        );
    }
    out.push('\n');
    out.push_str("## Targets\n\n");
    out.push_str(&report::render_targets(&report::targets(r)));
    out.push('\n');
    out.push_str("## What the figures mean\n\n");
    out.push_str(&meaning(r));
    out.push_str("## Tables\n\n");
    out.push_str(&report::markdown(r));
    if !plots.is_empty() {
        out.push_str("## Plots\n\n");
        for p in plots.iter().filter(|p| p.ends_with(".svg")) {
            let name = p.rsplit('/').next().unwrap_or(p).trim_end_matches(".svg");
            let _ = writeln!(out, "![{name}]({p})\n");
        }
    }
    out
}

/// Sentences reading this run against the published figures.
fn meaning(r: &SuiteResults) -> String {
    let mut out = String::new();
    let span = |xs: &[f64]| -> Option<String> {
        let lo = xs.iter().copied().reduce(f64::min)?;
        let hi = xs.iter().copied().reduce(f64::max)?;
        Some(if (hi - lo).abs() < 0.005 {
            format!("{:.0} %", lo * 100.0)
        } else {
            format!("{:.0}-{:.0} %", lo * 100.0, hi * 100.0)
        })
    };
    let azure: Vec<(&str, String, u32)> = r
        .profiles
        .iter()
        .filter(|p| p.link.as_deref().is_some_and(|l| l.starts_with("azure-")))
        .flat_map(|p| {
            r.rows
                .iter()
                .filter(|x| x.profile == p.name && x.datapath == Datapath::Native)
                .map(|x| (p.link.as_deref().unwrap_or(""), x.profile.clone(), x.mtu))
                .collect::<Vec<_>>()
        })
        .collect();
    let shares = |d: Datapath| -> Vec<f64> {
        let mut v: Vec<f64> = azure
            .iter()
            .filter_map(|(_, p, m)| share_of_native(r, p, *m, d))
            .collect();
        v.dedup();
        v
    };
    let theirs: Vec<f64> = azure
        .iter()
        .filter_map(|(l, _, _)| seeds::published(l).and_then(|p| p.weave_sleeve))
        .collect();
    if let (Some(ours), Some(weave)) = (span(&shares(Datapath::Sleeve)), span(&theirs)) {
        let _ = writeln!(
            out,
            "- **Sleeve on the Azure links.** Weave's sleeve kept {weave} of native `tcp_bw` \
             on these links (the less, the faster the link). Ours keeps {ours}: on a link this \
             slow the link is the bottleneck, not the userspace copy, as long as the router \
             keeps up with the link's rate. Our fast path keeps {} there.",
            span(&shares(Datapath::Fast)).unwrap_or("-".into())
        );
    }
    let unshaped: Vec<&str> = r
        .profiles
        .iter()
        .filter(|p| p.rate_bps.is_none() && p.delay_ns.is_none())
        .map(|p| p.name.as_str())
        .collect();
    for p in &unshaped {
        let at = |d, mtu| share_of_native(r, p, mtu, d);
        let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.0} %", v * 100.0));
        let bridged = [9000, 1500]
            .iter()
            .any(|&mtu| at(Datapath::VxlanBridge, mtu).is_some());
        let containers = if bridged {
            format!(
                "; the same vxlan carrying containers, each on a veth and a plain bridge per \
                 host (wired by hand), {} and {}. The fast path's frames take those same hops \
                 (the container's veth and the overlay bridge): against that raw vxlan it keeps \
                 {} at 9000 and {} at 1500",
                pct(at(Datapath::VxlanBridge, 9000)),
                pct(at(Datapath::VxlanBridge, 1500)),
                pct(share_of(r, p, 9000, Datapath::Fast, Datapath::VxlanBridge)),
                pct(share_of(r, p, 1500, Datapath::Fast, Datapath::VxlanBridge)),
            )
        } else {
            ", without the container's veth and the overlay bridge the fast path's frames \
             also cross"
                .to_string()
        };
        let _ = writeln!(
            out,
            "- **Fast path on an unshaped link ({p}).** Weave's fast datapath kept 91 % of the \
             host's throughput at MTU 8950 and 26 % at 1410 on a 10 Gbit/s EC2 link. Ours keeps \
             {} at 9000 and {} at 1500. An unshaped veth is CPU-bound: every figure is what one \
             CPU can push (both halves are pinned to it), and every hop a packet takes costs. \
             Raw kernel vxlan between the hosts keeps {} and {}{containers}.",
            pct(at(Datapath::Fast, 9000)),
            pct(at(Datapath::Fast, 1500)),
            pct(at(Datapath::Vxlan, 9000)),
            pct(at(Datapath::Vxlan, 1500)),
        );
        let sl = |mtu| share_of_native(r, p, mtu, Datapath::Sleeve);
        let enc = |mtu| share_of_native(r, p, mtu, Datapath::SleeveEncrypted);
        let _ = writeln!(
            out,
            "- **Sleeve on an unshaped link ({p}).** Sleeve copies every frame through the \
             router in userspace: {} of native at 1500 ({} encrypted), {} at 9000.",
            pct(sl(1500)),
            pct(enc(1500)),
            pct(sl(9000))
        );
    }
    let datacenter: Vec<(&str, u64)> = r
        .profiles
        .iter()
        .filter(|p| p.delay_ns.is_none())
        .filter_map(|p| {
            Some((
                p.name.as_str(),
                p.rate_bps.filter(|&b| b >= super::report::FAST_LINK_BPS)?,
            ))
        })
        .collect();
    for (p, bps) in &datacenter {
        let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.0} %", v * 100.0));
        let at = |d, mtu| pct(share_of_native(r, p, mtu, d));
        let _ = writeln!(
            out,
            "- **Fast path on a {:.0} Gbit/s link ({p}).** Where the link, not the CPU, is the \
             limit (as on the source documents' NICs), the fast path keeps {} of native at 9000 \
             and {} at 1500, as raw kernel vxlan does ({} and {}): vxlan's 50 bytes a packet \
             are all it costs. Sleeve keeps {} at 1500 ({} encrypted).",
            *bps as f64 / 1e9,
            at(Datapath::Fast, 9000),
            at(Datapath::Fast, 1500),
            at(Datapath::Vxlan, 9000),
            at(Datapath::Vxlan, 1500),
            at(Datapath::Sleeve, 1500),
            at(Datapath::SleeveEncrypted, 1500),
        );
    }
    let flannel: Vec<f64> = seeds::PUBLISHED
        .iter()
        .filter_map(|p| p.flannel_vxlan)
        .collect();
    let ours_vx: Vec<f64> = r
        .profiles
        .iter()
        .filter(|p| {
            p.link
                .as_deref()
                .and_then(seeds::published)
                .is_some_and(|s| s.flannel_vxlan.is_some())
        })
        .filter_map(|p| share_of_native(r, &p.name, 1500, Datapath::Fast))
        .collect();
    if let (Some(f), Some(o)) = (span(&flannel), span(&ours_vx)) {
        let _ = writeln!(
            out,
            "- **Against flannel's vxlan.** Flannel's vxlan backend kept {f} of native on \
             Azure A2 and D2; our fast path keeps {o} on the same profiles."
        );
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::results::sample;

    #[test]
    fn the_page_reads_the_run_against_the_published_figures() {
        let plots = vec![
            "run/bandwidth-share.svg".to_string(),
            "run/bandwidth-share.png".to_string(),
        ];
        insta::assert_snapshot!(render(
            &sample(),
            &plots,
            "netsim bench --suite suites/sample.toml --out run --page page.md"
        ));
    }

    /// A 10 Gbit/s profile gets its own reading, and the fast path's targets are judged on it.
    #[test]
    fn a_datacenter_link_is_read_as_link_bound() {
        use crate::suite::results::{Figures, Row};
        use crate::suite::spec::Profile;
        let mut r = sample();
        r.profiles.push(Profile {
            name: "10gbit".into(),
            rate_bps: Some(10_000_000_000),
            delay_ns: None,
            mtus: vec![1500, 9000],
            source: None,
            link: None,
        });
        for (mtu, native, vx) in [(1500, 1200e6, 1160e6), (9000, 1245e6, 1237e6)] {
            for (dp, bw) in [
                (Datapath::Native, native),
                (Datapath::Vxlan, vx),
                (Datapath::VxlanBridge, vx),
                (Datapath::Fast, vx),
                (Datapath::Sleeve, native),
                (Datapath::SleeveEncrypted, native * 0.8),
            ] {
                r.rows.push(Row {
                    profile: "10gbit".into(),
                    mtu,
                    datapath: dp,
                    test: "tcp_bw".into(),
                    higher_is_better: true,
                    figures: Figures {
                        samples: vec![bw; 3],
                    },
                    carried_by: None,
                    unavailable: None,
                    rounds: false,
                });
            }
        }
        let page = render(&r, &[], "netsim bench --suite s.toml");
        assert!(
            page.contains(
                "- **Fast path on a 10 Gbit/s link (10gbit).** Where the link, not the CPU, is \
                 the limit (as on the source documents' NICs), the fast path keeps 99 % of \
                 native at 9000 and 97 % at 1500, as raw kernel vxlan does (99 % and 97 %): \
                 vxlan's 50 bytes a packet are all it costs. Sleeve keeps 100 % at 1500 (80 % \
                 encrypted)."
            ),
            "{page}"
        );
        let targets = crate::suite::report::targets(&r);
        let on_10g: Vec<_> = targets
            .iter()
            .filter(|t| t.what.contains("10gbit"))
            .map(|t| (t.what.as_str(), t.holds))
            .collect();
        assert_eq!(
            on_10g,
            [
                (
                    "fast path >= 95 % of raw kernel vxlan (vxlan-bridge), 10gbit at MTU 1500",
                    Some(true)
                ),
                (
                    "fast path >= 95 % of raw kernel vxlan (vxlan-bridge), 10gbit at MTU 9000",
                    Some(true)
                ),
                (
                    "fast path >= 85 % of native, 10gbit at MTU 9000",
                    Some(true)
                ),
            ]
        );
    }
}
