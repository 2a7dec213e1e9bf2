//! What a suite run measured: one row per (profile, MTU, datapath, test) with every repeat's
//! figure, one per (matrix, datapath, clients). Serialized as the run's JSON; the tables, the
//! plots and `netsim bench compare` all read this.

use serde::{Deserialize, Serialize};

use super::spec::{Datapath, Profile};

/// The machine a run was taken on.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model, from /proc/cpuinfo.
    pub cpu: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// The shaping backend the labs used (netem, or netsim's emulated one).
    pub shaping: String,
}

/// Figures of one case over its repeats, and their summary.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Figures {
    /// One figure per repeat: bytes per second for bandwidth tests, microseconds one way for
    /// latency tests.
    pub samples: Vec<f64>,
}

impl Figures {
    /// The median of the samples (`None` when there are none).
    pub fn median(&self) -> Option<f64> {
        let mut s: Vec<f64> = self
            .samples
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        if s.is_empty() {
            return None;
        }
        s.sort_by(f64::total_cmp);
        let mid = s.len() / 2;
        Some(if s.len() % 2 == 1 {
            s[mid]
        } else {
            (s[mid - 1] + s[mid]) / 2.0
        })
    }

    /// The smallest and largest sample.
    pub fn range(&self) -> Option<(f64, f64)> {
        let finite = self.samples.iter().copied().filter(|v| v.is_finite());
        let min = finite.clone().reduce(f64::min)?;
        let max = finite.reduce(f64::max)?;
        Some((min, max))
    }

    /// The spread of the samples relative to their median: (max - min) / median; the noise
    /// a comparison must see beyond.
    pub fn relative_spread(&self) -> Option<f64> {
        let m = self.median()?;
        let (lo, hi) = self.range()?;
        (m > 0.0).then(|| (hi - lo) / m)
    }
}

/// One row of the main table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Profile name.
    pub profile: String,
    /// Link MTU.
    pub mtu: u32,
    /// Datapath asked for.
    pub datapath: Datapath,
    /// Test label (`tcp_bw`, `tcp_bw x4`, `tcp_lat`, ...).
    pub test: String,
    /// Whether a larger figure is better.
    pub higher_is_better: bool,
    /// The figures.
    pub figures: Figures,
    /// What actually carried the traffic, as the router reports it (`vxlan`, `odp`,
    /// `sleeve`), for overlay datapaths.
    pub carried_by: Option<String>,
    /// Why there are no figures: the datapath is not available here, or the run failed.
    pub unavailable: Option<String>,
    /// Sample `i` was measured in round `i`, beside the other rows of this profile, MTU and
    /// test that say so (one figure each per round, in an order that turns): shares between
    /// such rows are medians of per-round ratios.
    #[serde(default)]
    pub rounds: bool,
}

/// One run of a client matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixRow {
    /// Profile of the server's link.
    pub profile: String,
    /// Link MTU.
    pub mtu: u32,
    /// Datapath.
    pub datapath: Datapath,
    /// Number of clients.
    pub clients: usize,
    /// Aggregate throughput at the server, bytes per second, per repeat.
    pub aggregate: Figures,
    /// Mean throughput per client, bytes per second, per repeat.
    pub per_client: Figures,
    /// Why there are no figures.
    pub unavailable: Option<String>,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SuiteResults {
    /// The suite's name.
    pub suite: String,
    /// The suite file, as given.
    pub file: String,
    /// When the run started, seconds since the Unix epoch.
    pub started_unix: u64,
    /// How long the whole run took, seconds.
    pub wall_s: f64,
    /// Seconds each run lasted.
    pub duration_s: f64,
    /// Repeats per case.
    pub repeats: u32,
    /// The CPU both halves of every run were pinned to (`None`: not pinned).
    #[serde(default)]
    pub pin_cpu: Option<usize>,
    /// The machine.
    pub machine: Machine,
    /// The profiles measured.
    pub profiles: Vec<Profile>,
    /// The main table.
    pub rows: Vec<Row>,
    /// Client matrices.
    pub matrices: Vec<MatrixRow>,
}

impl SuiteResults {
    /// The row of `datapath` and `test` on `profile` at `mtu`.
    pub fn row(&self, profile: &str, mtu: u32, datapath: Datapath, test: &str) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.datapath == datapath && r.profile == profile && r.mtu == mtu && r.test == test
        })
    }

    /// The row of `datapath` with the same profile, MTU and test as `row`.
    pub fn sibling(&self, row: &Row, datapath: Datapath) -> Option<&Row> {
        self.row(&row.profile, row.mtu, datapath, &row.test)
    }

    /// The native row with the same profile, MTU and test as `row`.
    pub fn native_of(&self, row: &Row) -> Option<&Row> {
        self.sibling(row, Datapath::Native)
    }

    /// `row` as a share of `base`: for bandwidth, row / base; for latency, base / row (so 1.0
    /// is "as good as" and smaller is worse either way). Rows measured in the same rounds
    /// ([`Row::rounds`]) give the median of their per-round ratios, which a minute when the
    /// machine is slow for both does not move; others the ratio of their medians.
    pub fn share(row: &Row, base: &Row) -> Option<f64> {
        Self::share_spread(row, base).map(|(m, _, _)| m)
    }

    /// [`Self::share`] with the smallest and largest ratio it comes from: of rows measured in
    /// the same rounds, the per-round ratios; of others, each of `row`'s figures against
    /// `base`'s median.
    pub fn share_spread(row: &Row, base: &Row) -> Option<(f64, f64, f64)> {
        let ratio = |a: f64, b: f64| {
            (a > 0.0 && b > 0.0).then(|| if row.higher_is_better { a / b } else { b / a })
        };
        let (x, y) = (&row.figures.samples, &base.figures.samples);
        let ratios = if Self::paired(row, base) {
            let per_round: Option<Vec<f64>> = x.iter().zip(y).map(|(&a, &b)| ratio(a, b)).collect();
            per_round?
        } else {
            let b = base.figures.median()?;
            let each: Option<Vec<f64>> = x.iter().map(|&a| ratio(a, b)).collect();
            each?
        };
        let f = Figures { samples: ratios };
        let median = if Self::paired(row, base) {
            f.median()?
        } else {
            ratio(row.figures.median()?, base.figures.median()?)?
        };
        let (lo, hi) = f.range()?;
        Some((median, lo, hi))
    }

    /// Whether `row` and `base` were measured in the same rounds, one figure each per round.
    pub fn paired(row: &Row, base: &Row) -> bool {
        let (x, y) = (&row.figures.samples, &base.figures.samples);
        row.rounds && base.rounds && x.len() == y.len() && !x.is_empty()
    }
}

/// A small run for the tests of the report, page and plots: an unshaped link at 1500 and
/// 9000, the Azure A2 link, four datapaths and odp unavailable, a matrix.
#[cfg(test)]
pub(crate) fn sample() -> SuiteResults {
    let mut rows = Vec::new();
    let mut push = |profile: &str, mtu: u32, dp: Datapath, test: &str, s: [f64; 3]| {
        rows.push(Row {
            profile: profile.into(),
            mtu,
            datapath: dp,
            test: test.into(),
            higher_is_better: test.starts_with("tcp_bw"),
            figures: Figures {
                samples: s.to_vec(),
            },
            carried_by: match dp {
                Datapath::Fast => Some("vxlan".into()),
                d if d.is_overlay() => Some("sleeve".into()),
                _ => None,
            },
            unavailable: None,
            // The unshaped link's rows as a run measures them, round by round; the cloud
            // profile's as an older run's results.json has them, without.
            rounds: profile == "veth" && dp.shares_rounds(),
        });
    };
    for (mtu, k) in [(1500, 1.0), (9000, 2.0)] {
        push(
            "veth",
            mtu,
            Datapath::Native,
            "tcp_bw",
            [4.4e9 * k, 4.2e9 * k, 4.5e9 * k],
        );
        push(
            "veth",
            mtu,
            Datapath::Vxlan,
            "tcp_bw",
            [3.8e9 * k, 3.7e9 * k, 3.9e9 * k],
        );
        push(
            "veth",
            mtu,
            Datapath::VxlanBridge,
            "tcp_bw",
            [3.6e9 * k, 3.5e9 * k, 3.6e9 * k],
        );
        push(
            "veth",
            mtu,
            Datapath::Fast,
            "tcp_bw",
            [3.7e9 * k, 3.6e9 * k, 3.8e9 * k],
        );
        push(
            "veth",
            mtu,
            Datapath::Sleeve,
            "tcp_bw",
            [6.5e8 * k, 6.3e8 * k, 6.7e8 * k],
        );
        push("veth", mtu, Datapath::Native, "tcp_lat", [3.3, 3.2, 3.5]);
        push("veth", mtu, Datapath::Fast, "tcp_lat", [3.9, 3.8, 4.1]);
        push("veth", mtu, Datapath::Sleeve, "tcp_lat", [40.0, 39.0, 41.0]);
    }
    push(
        "azure-a2",
        1500,
        Datapath::Native,
        "tcp_bw",
        [23.9e6, 23.8e6, 24.0e6],
    );
    push(
        "azure-a2",
        1500,
        Datapath::Vxlan,
        "tcp_bw",
        [23.1e6, 23.0e6, 23.2e6],
    );
    push(
        "azure-a2",
        1500,
        Datapath::Fast,
        "tcp_bw",
        [23.1e6, 23.0e6, 23.2e6],
    );
    push(
        "azure-a2",
        1500,
        Datapath::Sleeve,
        "tcp_bw",
        [23.8e6, 23.7e6, 23.9e6],
    );
    push(
        "azure-a2",
        1500,
        Datapath::Native,
        "tcp_lat",
        [494.0, 490.0, 497.0],
    );
    push(
        "azure-a2",
        1500,
        Datapath::Fast,
        "tcp_lat",
        [524.0, 516.0, 533.0],
    );
    push(
        "azure-a2",
        1500,
        Datapath::Sleeve,
        "tcp_lat",
        [559.0, 558.0, 560.0],
    );
    rows.push(Row {
        profile: "veth".into(),
        mtu: 1500,
        datapath: Datapath::Odp,
        test: "tcp_bw".into(),
        higher_is_better: true,
        figures: Figures::default(),
        carried_by: None,
        unavailable: Some("not available here: the routers offer vxlan, sleeve".into()),
        rounds: false,
    });
    let mut matrices = Vec::new();
    for dp in [Datapath::Native, Datapath::Sleeve] {
        for n in [1usize, 2, 4] {
            let agg = if dp == Datapath::Native { 117e6 } else { 110e6 };
            matrices.push(MatrixRow {
                profile: "1gbit".into(),
                mtu: 1500,
                datapath: dp,
                clients: n,
                aggregate: Figures {
                    samples: vec![agg, agg * 0.98, agg * 1.01],
                },
                per_client: Figures {
                    samples: vec![agg / n as f64, agg * 0.98 / n as f64, agg * 1.01 / n as f64],
                },
                unavailable: None,
            });
        }
    }
    let profile = |name: &str, link: Option<&str>, rate: Option<u64>, delay: Option<u64>| Profile {
        name: name.into(),
        rate_bps: rate,
        delay_ns: delay,
        mtus: vec![1500],
        source: link.map(|l| format!("{l} source")),
        link: link.map(Into::into),
    };
    SuiteResults {
        suite: "sample".into(),
        file: "suites/sample.toml".into(),
        started_unix: 0,
        wall_s: 300.0,
        duration_s: 1.0,
        repeats: 3,
        pin_cpu: Some(0),
        machine: Machine {
            cpu: "Test CPU".into(),
            cpus: 2,
            memory_gib: 24.0,
            kernel: "6.0.0".into(),
            shaping: "emulated".into(),
        },
        profiles: vec![
            profile("veth", None, None, None),
            profile("1gbit", None, Some(1_000_000_000), None),
            profile(
                "azure-a2",
                Some("azure-a2"),
                Some(198_400_000),
                Some(426_000),
            ),
        ],
        rows,
        matrices,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(&[], None)]
    #[case(&[3.0], Some(3.0))]
    #[case(&[5.0, 1.0, 3.0], Some(3.0))]
    #[case(&[4.0, 1.0, 3.0, 2.0], Some(2.5))]
    #[case(&[f64::NAN, 2.0], Some(2.0))]
    fn median_of_samples(#[case] samples: &[f64], #[case] want: Option<f64>) {
        let f = Figures {
            samples: samples.to_vec(),
        };
        assert_eq!(f.median(), want);
    }

    #[test]
    fn spread_is_relative_to_the_median() {
        let f = Figures {
            samples: vec![90.0, 100.0, 110.0],
        };
        assert_eq!(f.range(), Some((90.0, 110.0)));
        assert_eq!(f.relative_spread(), Some(0.2));
    }

    fn bw(samples: &[f64], rounds: bool) -> Row {
        Row {
            profile: "veth".into(),
            mtu: 1500,
            datapath: Datapath::Fast,
            test: "tcp_bw".into(),
            higher_is_better: true,
            figures: Figures {
                samples: samples.to_vec(),
            },
            carried_by: None,
            unavailable: None,
            rounds,
        }
    }

    /// A machine that slows down between rounds moves both rows of a round alike: paired
    /// rows compare round by round; rows not measured in the same rounds (or with a round
    /// missing) compare their medians.
    #[rstest]
    #[case::paired(true, true, &[100.0, 50.0, 20.0], Some(0.5))]
    #[case::one_not_paired(true, false, &[100.0, 50.0, 20.0], Some(0.3))]
    #[case::round_missing(true, true, &[100.0, 50.0], Some(0.2))]
    fn shares_pair_rounds_when_both_rows_do(
        #[case] row_rounds: bool,
        #[case] base_rounds: bool,
        #[case] base: &[f64],
        #[case] want: Option<f64>,
    ) {
        let row = bw(&[50.0, 15.0, 10.0], row_rounds);
        let base = bw(base, base_rounds);
        let got = SuiteResults::share(&row, &base).map(|s| (s * 100.0).round() / 100.0);
        assert_eq!(got, want);
    }
}
