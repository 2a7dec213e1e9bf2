//! The charts of a suite run, as SVG and PNG: each datapath's `tcp_bw` as a share of native,
//! the absolute throughput and latency per (profile, MTU), and the client matrices. Text is
//! drawn with a TrueType font loaded at run time (DejaVu Sans, or `$NETSIM_FONT`).

use std::error::Error;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{
    AsRangedCoord, KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter,
};
use plotters::coord::Shift;
use plotters::element::{DynElement, IntoDynElement};
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::results::{Figures, Row, SuiteResults};
use super::spec::Datapath;

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// No usable font for the charts' text.
    #[error("{0}")]
    Font(String),
    /// Plotters failed on a chart.
    #[error("cannot draw the {chart} chart: {reason}")]
    Draw {
        /// The chart's file base name.
        chart: String,
        /// What went wrong.
        reason: String,
    },
    /// The output directory could not be made.
    #[error("cannot create {}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];
const NO_FONT: &str = "no TrueType font for the plots' text: install the Debian package \
                       fonts-dejavu-core, or set NETSIM_FONT=/path/to/font.ttf";
const FONT: &str = "sans-serif";

/// Loads and registers the font once per process.
fn load_font() -> Result<(), PlotError> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    let loaded = LOADED.get_or_init(|| {
        let path = match std::env::var_os("NETSIM_FONT").filter(|p| !p.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => FONT_PATHS
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .ok_or(NO_FONT)?,
        };
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("cannot read the font {}: {e}", path.display()))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font(FONT, FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a TrueType font", path.display()))
    });
    loaded.clone().map_err(PlotError::Font)
}

/// Draws every chart the results have data for into `dir` (created if missing), each as
/// NAME.svg and NAME.png; returns the files written, in order. Charts with no data are
/// skipped, never an error.
pub fn write_all(results: &SuiteResults, dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let mb = |f: &Figures| spread(f, 1e-6);
    let share = |r: &Row| {
        let (m, lo, hi) = SuiteResults::share_spread(r, results.native_of(r)?)?;
        Some((m * 100.0, lo * 100.0, hi * 100.0))
    };
    let repeats = results.repeats;
    let share_title =
        format!("tcp_bw: share of native (median, bars min-max over {repeats} repeats or rounds)");
    let charts: Vec<Chart> = [
        bar_chart(
            results,
            "bandwidth-share",
            "tcp_bw",
            share_title,
            "share of native, %",
            Axis::Share,
            share,
        ),
        bar_chart(
            results,
            "bandwidth",
            "tcp_bw",
            "tcp_bw: throughput, MB/s (log scale)".into(),
            "MB/s",
            Axis::Log,
            |r| mb(&r.figures),
        ),
        bar_chart(
            results,
            "latency",
            "tcp_lat",
            "tcp_lat: one-way latency, us (median, min-max)".into(),
            "one-way latency, us",
            Axis::Linear,
            |r| spread(&r.figures, 1.0),
        ),
        clients_chart(results),
    ]
    .into_iter()
    .flatten()
    .collect();
    if charts.is_empty() {
        return Ok(Vec::new());
    }
    load_font()?;
    std::fs::create_dir_all(dir).map_err(|source| PlotError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for chart in &charts {
        let size = chart.size();
        let fail = |e: Box<dyn Error>| PlotError::Draw {
            chart: chart.name.to_string(),
            reason: e.to_string(),
        };
        let svg = dir.join(format!("{}.svg", chart.name));
        chart
            .finish(SVGBackend::new(&svg, size).into_drawing_area())
            .map_err(fail)?;
        written.push(svg);
        let png = dir.join(format!("{}.png", chart.name));
        chart
            .finish(BitMapBackend::new(&png, size).into_drawing_area())
            .map_err(fail)?;
        written.push(png);
    }
    Ok(written)
}

/// A median with its min and max.
type Spread = (f64, f64, f64);

/// The median and range of `f`, times `scale`.
fn spread(f: &Figures, scale: f64) -> Option<Spread> {
    let (m, (lo, hi)) = (f.median()?, f.range()?);
    Some((m * scale, lo * scale, hi * scale))
}

fn colour(d: Datapath) -> RGBColor {
    match d {
        Datapath::Native => RGBColor(120, 120, 120),
        Datapath::Vxlan => RGBColor(31, 119, 180),
        Datapath::VxlanBridge => RGBColor(148, 103, 189),
        Datapath::Fast => RGBColor(44, 160, 44),
        Datapath::Odp => RGBColor(23, 190, 207),
        Datapath::Sleeve => RGBColor(255, 127, 14),
        Datapath::SleeveEncrypted => RGBColor(214, 39, 40),
    }
}

/// How a bar chart's y axis runs.
enum Axis {
    /// Linear from 0 to at least 110.
    Share,
    /// Linear from 0.
    Linear,
    /// Log10 between whole decades.
    Log,
}

/// A chart ready to draw.
struct Chart {
    name: &'static str,
    title: String,
    x_desc: &'static str,
    y_desc: &'static str,
    x: Ticks,
    y: Range<f64>,
    log: bool,
    /// Label, colour, and the marker of a line (`None`: a bar).
    legend: Vec<(String, RGBColor, Option<usize>)>,
    kind: Kind,
}

enum Kind {
    /// `cells[group][series]`: one bar per datapath in each group.
    Bars(Vec<Vec<Option<Spread>>>),
    /// Per legend entry, its points `(x, spread)`.
    Lines(Vec<Vec<(f64, Spread)>>),
}

fn bar_chart(
    results: &SuiteResults,
    name: &'static str,
    test: &str,
    title: String,
    y_desc: &'static str,
    axis: Axis,
    value: impl Fn(&Row) -> Option<Spread>,
) -> Option<Chart> {
    let rows: Vec<&Row> = results.rows.iter().filter(|r| r.test == test).collect();
    let mut groups: Vec<(&str, u32)> = Vec::new();
    for r in &rows {
        if !groups.contains(&(r.profile.as_str(), r.mtu)) {
            groups.push((r.profile.as_str(), r.mtu));
        }
    }
    let series: Vec<Datapath> = Datapath::ALL
        .into_iter()
        .filter(|d| rows.iter().any(|r| r.datapath == *d))
        .collect();
    let positive = |s: Spread| (s.0 > 0.0 || !matches!(axis, Axis::Log)).then_some(s);
    let cells: Vec<Vec<Option<Spread>>> = groups
        .iter()
        .map(|&(p, mtu)| {
            let row = |d| {
                rows.iter()
                    .find(|r| r.profile == p && r.mtu == mtu && r.datapath == d)
            };
            let cell = |d| {
                row(d)
                    .filter(|r| r.unavailable.is_none())
                    .and_then(|r| value(r))
            };
            series.iter().map(|&d| cell(d).and_then(positive)).collect()
        })
        .collect();
    let values: Vec<Spread> = cells.iter().flatten().flatten().copied().collect();
    let hi = values.iter().map(|v| v.2).reduce(f64::max)?;
    let y = match axis {
        Axis::Share => 0.0..(hi + 10.0).max(110.0),
        Axis::Linear => 0.0..(hi * 1.1).max(f64::MIN_POSITIVE),
        Axis::Log => {
            let lo = values
                .iter()
                .map(|v| v.1)
                .filter(|v| *v > 0.0)
                .fold(values[0].0, f64::min);
            10f64.powf(lo.log10().floor())..10f64.powf((hi * 1.05).log10().ceil())
        }
    };
    let labels = groups
        .iter()
        .enumerate()
        .map(|(i, (p, m))| (i as f64 + 0.5, format!("{p} / {m}")));
    Some(Chart {
        name,
        title,
        x_desc: "profile / MTU",
        y_desc,
        x: Ticks {
            range: 0.0..groups.len() as f64,
            at: labels.collect(),
        },
        y,
        log: matches!(axis, Axis::Log),
        legend: series
            .iter()
            .map(|&d| (d.name().to_string(), colour(d), None))
            .collect(),
        kind: Kind::Bars(cells),
    })
}

fn clients_chart(results: &SuiteResults) -> Option<Chart> {
    let rows: Vec<_> = results
        .matrices
        .iter()
        .filter(|m| m.unavailable.is_none())
        .filter_map(|m| Some((m, spread(&m.per_client, 1e-6)?)))
        .collect();
    let mut pairs: Vec<(&str, u32)> = Vec::new();
    let mut keys: Vec<(&str, u32, Datapath)> = Vec::new();
    for (m, _) in &rows {
        let pair = (m.profile.as_str(), m.mtu);
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
        if !keys.contains(&(pair.0, pair.1, m.datapath)) {
            keys.push((pair.0, pair.1, m.datapath));
        }
    }
    let mut clients: Vec<usize> = rows.iter().map(|(m, _)| m.clients).collect();
    clients.sort_unstable();
    clients.dedup();
    let (first, last) = (*clients.first()?, *clients.last()?);
    // Clients spanning a factor of 8 or more sit on a log2 axis.
    let log2 = last >= first * 8;
    let x = |c: usize| if log2 { (c as f64).log2() } else { c as f64 };
    let hi = rows.iter().map(|(_, s)| s.2).fold(0.0, f64::max);
    let (mut legend, mut lines) = (Vec::new(), Vec::new());
    for (p, mtu, d) in keys {
        let marker = pairs.iter().position(|&q| q == (p, mtu));
        legend.push((format!("{d} ({p} / {mtu})"), colour(d), marker));
        let mut points: Vec<(f64, Spread)> = rows
            .iter()
            .filter(|(m, _)| m.profile == p && m.mtu == mtu && m.datapath == d)
            .map(|(m, s)| (x(m.clients), *s))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        lines.push(points);
    }
    Some(Chart {
        name: "clients",
        title: "one server, N clients: throughput per client, MB/s".into(),
        x_desc: if log2 {
            "clients (log scale)"
        } else {
            "clients"
        },
        y_desc: "throughput per client, MB/s",
        x: Ticks {
            range: x(first) - 0.5..x(last) + 0.5,
            at: clients.iter().map(|&c| (x(c), c.to_string())).collect(),
        },
        y: 0.0..(hi * 1.1).max(f64::MIN_POSITIVE),
        log: false,
        legend,
        kind: Kind::Lines(lines),
    })
}

/// A linear x axis whose ticks sit at given places with given labels.
#[derive(Clone)]
struct Ticks {
    range: Range<f64>,
    at: Vec<(f64, String)>,
}

impl Ranged for Ticks {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;
    fn map(&self, v: &f64, (from, to): (i32, i32)) -> i32 {
        let frac = (v - self.range.start) / (self.range.end - self.range.start);
        from + (frac * f64::from(to - from)).round() as i32
    }
    fn key_points<H: KeyPointHint>(&self, _: H) -> Vec<f64> {
        self.at.iter().map(|t| t.0).collect()
    }
    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

impl ValueFormatter<f64> for Ticks {
    fn format_ext(&self, v: &f64) -> String {
        let tick = self.at.iter().find(|t| (t.0 - v).abs() < 1e-9);
        tick.map(|t| t.1.clone()).unwrap_or_default()
    }
}

/// A tick label: whole numbers from 10 up, else up to two decimals.
fn number(v: f64) -> String {
    if v == 0.0 || v.abs() >= 10.0 {
        return format!("{v:.0}");
    }
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A line's point marker: dot, triangle, ring or cross, by `kind`.
fn marker<DB: DrawingBackend, C: Clone + 'static>(
    kind: usize,
    at: C,
    c: RGBColor,
) -> DynElement<'static, DB, C> {
    match kind % 4 {
        0 => Circle::new(at, 5, c.filled()).into_dyn(),
        1 => TriangleMarker::new(at, 7, c.filled()).into_dyn(),
        2 => Circle::new(at, 5, c.stroke_width(2)).into_dyn(),
        _ => Cross::new(at, 5, c.stroke_width(2)).into_dyn(),
    }
}

type Drawn = Result<(), Box<dyn Error>>;

impl Chart {
    fn legend_width(&self) -> u32 {
        let longest = self
            .legend
            .iter()
            .map(|l| l.0.chars().count())
            .max()
            .unwrap_or(0);
        (longest as u32 * 9 + 60).max(140)
    }

    fn size(&self) -> (u32, u32) {
        let longest = self
            .x
            .at
            .iter()
            .map(|t| t.1.chars().count())
            .max()
            .unwrap_or(0) as u32;
        let per_group = if matches!(self.kind, Kind::Bars(_)) {
            (longest * 9 + 24).max(120)
        } else {
            0
        };
        (
            (per_group * self.x.at.len() as u32 + 110 + self.legend_width()).max(1000),
            560,
        )
    }

    fn finish<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let area = root.titled(&self.title, (FONT, 22))?;
        let (width, _) = area.dim_in_pixel();
        let (plot, legend) = area.split_horizontally(width.saturating_sub(self.legend_width()));
        if self.log {
            self.plot(&plot, self.y.clone().log_scale())?;
        } else {
            self.plot(&plot, self.y.clone())?;
        }
        for (i, (label, c, kind)) in self.legend.iter().enumerate() {
            let y = 30 + i as i32 * 26;
            match kind {
                None => legend.draw(&Rectangle::new([(6, y - 8), (26, y + 8)], c.filled()))?,
                Some(k) => {
                    legend.draw(&PathElement::new([(2, y), (30, y)], c.stroke_width(2)))?;
                    legend.draw(&marker(*k, (16, y), *c))?;
                }
            }
            let style = TextStyle::from((FONT, 15)).pos(Pos::new(HPos::Left, VPos::Center));
            legend.draw(&Text::new(label.as_str(), (38, y), style))?;
        }
        root.present()?;
        Ok(())
    }

    fn plot<DB: DrawingBackend, Y>(&self, area: &DrawingArea<DB, Shift>, y: Y) -> Drawn
    where
        DB::ErrorType: 'static,
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(55)
            .y_label_area_size(80)
            .build_cartesian_2d(self.x.clone(), y)?;
        let mut mesh = chart.configure_mesh();
        if matches!(self.kind, Kind::Bars(_)) {
            mesh.disable_x_mesh();
        }
        let fmt = |v: &f64| number(*v);
        mesh.x_desc(self.x_desc)
            .y_desc(self.y_desc)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .y_label_formatter(&fmt)
            .draw()?;
        let base = self.y.start;
        let whisker = |x: f64, half: f64, (_, lo, hi): Spread, c: RGBColor| {
            let (lo, hi) = (lo.max(base), hi.max(base));
            let s = c.stroke_width(2);
            [
                PathElement::new([(x, lo), (x, hi)], s),
                PathElement::new([(x - half, lo), (x + half, lo)], s),
                PathElement::new([(x - half, hi), (x + half, hi)], s),
            ]
        };
        match &self.kind {
            Kind::Bars(cells) => {
                let width = 0.8 / self.legend.len().max(1) as f64;
                for (g, cells) in cells.iter().enumerate() {
                    for (s, (cell, (_, c, _))) in cells.iter().zip(&self.legend).enumerate() {
                        let x0 = g as f64 + 0.1 + s as f64 * width;
                        let (x1, mid) = (x0 + width * 0.88, x0 + width * 0.44);
                        let Some(v) = cell else {
                            let style = TextStyle::from((FONT, 12))
                                .pos(Pos::new(HPos::Center, VPos::Bottom));
                            chart
                                .plotting_area()
                                .draw(&Text::new("n/a", (mid, base), style))?;
                            continue;
                        };
                        let bar = Rectangle::new([(x0, base), (x1, v.0.max(base))], c.filled());
                        chart.plotting_area().draw(&bar)?;
                        chart.draw_series(whisker(mid, width * 0.2, *v, BLACK))?;
                    }
                }
            }
            Kind::Lines(lines) => {
                let half = (self.x.range.end - self.x.range.start) / 120.0;
                for (points, (_, c, kind)) in lines.iter().zip(&self.legend) {
                    chart.draw_series(LineSeries::new(
                        points.iter().map(|p| (p.0, p.1 .0)),
                        c.stroke_width(2),
                    ))?;
                    for &(x, v) in points {
                        chart.draw_series(whisker(x, half, v, *c))?;
                        chart
                            .plotting_area()
                            .draw(&marker(kind.unwrap_or(0), (x, v.0), *c))?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::results::MatrixRow;
    use super::*;
    use rstest::{fixture, rstest};
    use tempfile::TempDir;

    fn row(profile: &str, mtu: u32, d: Datapath, test: &str, samples: &[f64]) -> Row {
        Row {
            profile: profile.into(),
            mtu,
            datapath: d,
            test: test.into(),
            higher_is_better: test == "tcp_bw",
            figures: Figures {
                samples: samples.to_vec(),
            },
            carried_by: None,
            unavailable: samples.is_empty().then(|| "not available here".into()),
            rounds: false,
        }
    }

    fn synthetic() -> SuiteResults {
        let mut rows = Vec::new();
        for (profile, rate) in [("azure-a2", 1.2e8), ("veth", 4e9)] {
            for mtu in [1500, 9000] {
                for (i, d) in [
                    Datapath::Native,
                    Datapath::Vxlan,
                    Datapath::Fast,
                    Datapath::Sleeve,
                ]
                .into_iter()
                .enumerate()
                {
                    let bw = rate / (1.0 + i as f64 * 0.4);
                    let bw_samples = if profile == "veth" && mtu == 9000 && d == Datapath::Sleeve {
                        vec![]
                    } else {
                        vec![bw * 0.95, bw, bw * 1.03]
                    };
                    rows.push(row(profile, mtu, d, "tcp_bw", &bw_samples));
                    let lat = 30.0 + i as f64 * 12.0;
                    rows.push(row(
                        profile,
                        mtu,
                        d,
                        "tcp_lat",
                        &[lat * 0.9, lat, lat * 1.2],
                    ));
                }
            }
        }
        let mut matrices = Vec::new();
        for d in [Datapath::Native, Datapath::Fast] {
            for clients in [1, 2, 4] {
                let per = 1e9 / clients as f64 / if d == Datapath::Fast { 1.5 } else { 1.0 };
                let figures = |v: f64| Figures {
                    samples: vec![v * 0.9, v, v * 1.1],
                };
                matrices.push(MatrixRow {
                    profile: "azure-a2".into(),
                    mtu: 1500,
                    datapath: d,
                    clients,
                    aggregate: figures(per * clients as f64),
                    per_client: figures(per),
                    unavailable: None,
                });
            }
        }
        SuiteResults {
            suite: "test".into(),
            repeats: 3,
            rows,
            matrices,
            ..Default::default()
        }
    }

    #[fixture]
    #[once]
    fn drawn() -> (TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = write_all(&synthetic(), dir.path()).expect("charts drawn");
        (dir, files)
    }

    #[rstest]
    fn writes_an_svg_and_a_png_of_each_chart(drawn: &(TempDir, Vec<PathBuf>)) {
        let (dir, files) = drawn;
        let names = ["bandwidth-share", "bandwidth", "latency", "clients"];
        let want: Vec<PathBuf> = names
            .iter()
            .flat_map(|n| ["svg", "png"].map(|ext| dir.path().join(format!("{n}.{ext}"))))
            .collect();
        assert_eq!(files, &want);
        for f in files {
            assert!(f.is_file(), "{} missing", f.display());
        }
    }

    #[rstest]
    #[case::share("bandwidth-share", "tcp_bw: share of native (median, bars min-max over 3 repeats or rounds)", &["native", "vxlan", "fast", "sleeve", "n/a", "azure-a2 / 1500", "veth / 9000"])]
    #[case::bandwidth("bandwidth", "tcp_bw: throughput, MB/s (log scale)", &["native", "vxlan", "fast", "sleeve", "n/a"])]
    #[case::latency("latency", "tcp_lat: one-way latency, us (median, min-max)", &["native", "vxlan", "fast", "sleeve"])]
    #[case::clients("clients", "one server, N clients: throughput per client, MB/s", &["native (azure-a2 / 1500)", "fast (azure-a2 / 1500)", "4"])]
    fn charts_have_their_title_and_labels(
        drawn: &(TempDir, Vec<PathBuf>),
        #[case] name: &str,
        #[case] title: &str,
        #[case] labels: &[&str],
    ) -> Result<(), Box<dyn Error>> {
        let svg = std::fs::read_to_string(drawn.0.path().join(format!("{name}.svg")))?;
        // plotters writes each text as `<text ...>\nTEXT\n</text>`.
        for text in std::iter::once(&title).chain(labels) {
            assert!(
                svg.contains(&format!(">\n{text}\n</text>")),
                "{name}.svg lacks text {text:?}"
            );
        }
        let png = std::fs::read(drawn.0.path().join(format!("{name}.png")))?;
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{name}.png is not a PNG"
        );
        assert!(png.len() > 1024, "{name}.png is only {} bytes", png.len());
        Ok(())
    }

    #[test]
    fn nothing_to_draw_writes_nothing() -> Result<(), Box<dyn Error>> {
        let dir = tempfile::tempdir()?;
        assert_eq!(
            write_all(&SuiteResults::default(), dir.path())?,
            Vec::<PathBuf>::new()
        );
        Ok(())
    }

    #[test]
    fn only_unavailable_rows_draw_nothing() -> Result<(), Box<dyn Error>> {
        let dir = tempfile::tempdir()?;
        let mut results = SuiteResults {
            repeats: 3,
            ..Default::default()
        };
        for d in Datapath::ALL {
            results.rows.push(row("veth", 1500, d, "tcp_bw", &[]));
            results.rows.push(row("veth", 1500, d, "tcp_lat", &[]));
        }
        assert_eq!(write_all(&results, dir.path())?, Vec::<PathBuf>::new());
        Ok(())
    }
}
