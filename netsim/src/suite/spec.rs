//! A benchmark suite file: what to measure (link profiles, MTUs, datapaths, tests, repeats,
//! client matrices), parsed and checked with located errors. Pure: never touches the kernel.
//!
//! ```toml
//! [suite]
//! name = "default"
//! duration = "1s"
//! repeats = 3
//! mtus = [1500, 9000]
//! datapaths = ["native", "vxlan", "fast", "sleeve", "sleeve-encrypted"]
//!
//! [[profile]]
//! name = "veth"            # unshaped
//!
//! [[profile]]
//! name = "azure-a2"
//! link = "azure-a2"        # one of netsim's named link profiles
//! mtus = [1500]
//!
//! [[test]]
//! kind = "tcp_bw"
//! streams = 4
//!
//! [[matrix]]
//! profile = "1gbit"
//! clients = [1, 2, 4]
//! ```

use std::fmt;
use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::measure::perf::Test;
use crate::model::diag::{Diagnostics, Reporter};
use crate::model::shape;

/// How the traffic of a case travels between the two hosts.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Datapath {
    /// Host to host over the underlay: the baseline every other datapath is compared to.
    Native,
    /// A kernel vxlan device pair made by hand between the hosts, no overlay router and no
    /// container: the kernel's encapsulation alone.
    Vxlan,
    /// The same kernel vxlan carrying containers, wired by hand: a container on a veth and a
    /// plain bridge per host, the vxlan device on the bridge. What a bridge-attached vxlan
    /// fast path is built from, without the router.
    VxlanBridge,
    /// The overlay with default settings, container to container (the Open vSwitch datapath
    /// where the kernel has it, else kernel vxlan).
    Fast,
    /// The overlay forced onto the Open vSwitch datapath (`--fast-path odp`): a row that says
    /// "not available" on kernels without openvswitch.
    Odp,
    /// The overlay's userspace sleeve (`--fast-path off`).
    Sleeve,
    /// Sleeve with a password set: encrypted.
    SleeveEncrypted,
}

impl Datapath {
    /// Every datapath, in the order tables list them.
    pub const ALL: [Datapath; 7] = [
        Datapath::Native,
        Datapath::Vxlan,
        Datapath::VxlanBridge,
        Datapath::Fast,
        Datapath::Odp,
        Datapath::Sleeve,
        Datapath::SleeveEncrypted,
    ];

    /// The name suite files use.
    pub fn name(self) -> &'static str {
        match self {
            Datapath::Native => "native",
            Datapath::Vxlan => "vxlan",
            Datapath::VxlanBridge => "vxlan-bridge",
            Datapath::Fast => "fast",
            Datapath::Odp => "odp",
            Datapath::Sleeve => "sleeve",
            Datapath::SleeveEncrypted => "sleeve-encrypted",
        }
    }

    /// Whether the overlay routers carry it.
    pub fn is_overlay(self) -> bool {
        matches!(
            self,
            Datapath::Fast | Datapath::Odp | Datapath::Sleeve | Datapath::SleeveEncrypted
        )
    }

    /// Whether a run can keep it up beside the others of this kind in one lab and measure
    /// them round by round, in an order that turns (native, both raw vxlans and the overlay
    /// with default settings); the rest restart the routers with settings of their own and
    /// are measured one after another.
    pub fn shares_rounds(self) -> bool {
        matches!(
            self,
            Datapath::Native | Datapath::Vxlan | Datapath::VxlanBridge | Datapath::Fast
        )
    }

    /// Bytes of encapsulation each packet carries on this datapath (outer IPv4, UDP, and the
    /// vxlan or sleeve headers), so the inner MTU is the link's minus this.
    pub fn overhead(self) -> u32 {
        match self {
            Datapath::Native => 0,
            Datapath::Vxlan | Datapath::VxlanBridge => 50,
            // The router picks its own MTU ("auto"); this is only for the plan's text.
            _ => 0,
        }
    }
}

impl fmt::Display for Datapath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One measurement of a case: a qperf-style test, with parallel streams for `tcp_bw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TestSpec {
    /// The test.
    pub test: Test,
    /// Parallel TCP streams (`tcp_bw` only; 1 otherwise).
    pub streams: usize,
    /// How long each run lasts, when not the suite's `duration`.
    pub duration: Option<Duration>,
}

impl TestSpec {
    /// The name tables show: `tcp_bw`, `tcp_bw x4`, `tcp_lat`.
    pub fn label(&self) -> String {
        if self.streams > 1 {
            format!("{} x{}", self.test.name(), self.streams)
        } else {
            self.test.name().to_string()
        }
    }

    /// Whether a larger figure is better (bandwidth) or worse (latency).
    pub fn higher_is_better(&self) -> bool {
        matches!(self.test, Test::TcpBw | Test::UdpBw)
    }
}

/// A link profile of a suite: a name and how the server's link is shaped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The name tables show.
    pub name: String,
    /// Rate limit in bits per second, both ways (`None`: unshaped).
    pub rate_bps: Option<u64>,
    /// One-way delay in nanoseconds (`None`: none added).
    pub delay_ns: Option<u64>,
    /// The MTUs measured on this profile.
    #[serde(default)]
    pub mtus: Vec<u32>,
    /// Where the figures come from (for named profiles).
    pub source: Option<String>,
    /// The named link profile it is (e.g. `azure-a2`), if it is one.
    pub link: Option<String>,
}

impl Profile {
    /// Rate and delay as text, e.g. `198.4 Mbit/s, 426 us` or `unshaped`.
    pub fn describe(&self) -> String {
        match (self.rate_bps, self.delay_ns) {
            (None, None) => "unshaped".into(),
            (r, d) => {
                let mut parts = Vec::new();
                if let Some(r) = r {
                    parts.push(shape::format_rate(r));
                }
                if let Some(d) = d {
                    parts.push(format!("{} one way", shape::format_duration(d)));
                }
                parts.join(", ")
            }
        }
    }
}

/// One server and a growing number of clients, each one TCP stream (seed 003's matrix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matrix {
    /// The profile of the server's link (a `[[profile]]` name).
    pub profile: String,
    /// The MTU of every link.
    pub mtu: u32,
    /// The datapaths to run it on.
    pub datapaths: Vec<Datapath>,
    /// The numbers of clients, one run each.
    pub clients: Vec<usize>,
}

/// A checked suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suite {
    /// The suite's name.
    pub name: String,
    /// How long each bandwidth run sends (latency runs take the same time).
    pub duration: Duration,
    /// How many times each case is measured (the spread of these is the noise).
    pub repeats: u32,
    /// The datapaths every profile is measured on.
    pub datapaths: Vec<Datapath>,
    /// The tests every (profile, MTU, datapath) runs.
    pub tests: Vec<TestSpec>,
    /// The CPU both halves of every run are pinned to (`None`: the scheduler places them).
    pub pin_cpu: Option<usize>,
    /// The link profiles.
    pub profiles: Vec<Profile>,
    /// Client matrices.
    pub matrices: Vec<Matrix>,
}

// ---- the file format -------------------------------------------------------------------

/// A benchmark suite file (`netsim bench --suite FILE`). See docs/bench-suite.md.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SuiteFile {
    /// Settings for the whole suite.
    pub suite: SuiteSection,
    /// Link profiles: each is measured at each of its MTUs on every datapath.
    #[serde(default)]
    #[schemars(with = "Vec<ProfileSection>")]
    pub profile: Vec<Spanned<ProfileSection>>,
    /// Tests run for every profile, MTU and datapath (default: tcp_bw, tcp_lat).
    #[serde(default)]
    #[schemars(with = "Vec<TestSection>")]
    pub test: Vec<Spanned<TestSection>>,
    /// One server, N clients: per-client throughput as clients grow.
    #[serde(default)]
    #[schemars(with = "Vec<MatrixSection>")]
    pub matrix: Vec<Spanned<MatrixSection>>,
}

/// `[suite]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SuiteSection {
    /// The suite's name (shown in reports).
    pub name: String,
    /// How long each run lasts, e.g. "1s" (default "1s", at most "60s").
    #[schemars(with = "Option<String>")]
    pub duration: Option<Spanned<String>>,
    /// Runs per case; the report shows the median and the spread (default 3).
    #[schemars(with = "Option<u32>", range(min = 1, max = 100))]
    pub repeats: Option<Spanned<u32>>,
    /// MTUs of profiles that name none (default [1500]).
    #[schemars(with = "Option<Vec<u32>>")]
    pub mtus: Option<Spanned<Vec<u32>>>,
    /// Datapaths: native, vxlan, vxlan-bridge, fast, odp, sleeve, sleeve-encrypted (default: all but odp).
    #[schemars(with = "Option<Vec<Datapath>>")]
    pub datapaths: Option<Spanned<Vec<Spanned<String>>>>,
    /// The CPU both halves (client and server) of every run are pinned to, numbered from 0
    /// (default 0); "none" leaves placement to the scheduler. On an unshaped link every figure
    /// is CPU-bound, and where the scheduler puts the two halves changes it by up to a factor
    /// of two from one run to the next; on one CPU the runs agree far better.
    #[schemars(with = "Option<String>")]
    pub pin: Option<Spanned<toml::Value>>,
}

/// `[[profile]]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileSection {
    /// The name tables show.
    pub name: String,
    /// One of netsim's named link profiles (docs/shaping.md), e.g. "azure-a2".
    #[schemars(with = "Option<String>")]
    pub link: Option<Spanned<String>>,
    /// A rate limit, e.g. "1gbit" (instead of `link`).
    #[schemars(with = "Option<String>")]
    pub rate: Option<Spanned<String>>,
    /// A one-way delay, e.g. "200us" (instead of `link`).
    #[schemars(with = "Option<String>")]
    pub delay: Option<Spanned<String>>,
    /// The MTUs to measure this profile at (default: the suite's `mtus`).
    #[schemars(with = "Option<Vec<u32>>")]
    pub mtus: Option<Spanned<Vec<u32>>>,
}

/// `[[test]]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSection {
    /// tcp_bw, tcp_lat, udp_bw or udp_lat.
    #[schemars(with = "String")]
    pub kind: Spanned<String>,
    /// Parallel streams (tcp_bw only; default 1).
    #[schemars(with = "Option<usize>", range(min = 1, max = 64))]
    pub streams: Option<Spanned<usize>>,
    /// How long each run of this test lasts (default: the suite's `duration`), e.g. "500ms"
    /// for latency tests, which settle quickly.
    #[schemars(with = "Option<String>")]
    pub duration: Option<Spanned<String>>,
}

/// `[[matrix]]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatrixSection {
    /// The `[[profile]]` whose shaping the server's link gets.
    #[schemars(with = "String")]
    pub profile: Spanned<String>,
    /// The MTU of every link (default 1500).
    #[schemars(with = "Option<u32>")]
    pub mtu: Option<Spanned<u32>>,
    /// Numbers of clients, one run each, e.g. [1, 2, 4, 8] (at most 16).
    #[schemars(with = "Vec<usize>")]
    pub clients: Spanned<Vec<usize>>,
    /// Datapaths (default: the suite's).
    #[schemars(with = "Option<Vec<Datapath>>")]
    pub datapaths: Option<Spanned<Vec<Spanned<String>>>>,
}

/// The most clients a matrix may have (each is a host of the lab).
pub const MAX_CLIENTS: usize = 16;

const HELP: &str = "see docs/bench-suite.md for the format";

/// The JSON schema (draft-07) of suite files (`docs/bench-suite.schema.json`).
pub fn json_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<SuiteFile>().to_value();
    crate::model::drop_null(&mut schema);
    schema
}

/// Reads and checks the suite file at `path`.
pub fn load(path: &Path) -> Result<Suite, Diagnostics> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| Diagnostics::from(crate::model::topology::unreadable(path, &e)))?;
    parse(&src, path)
}

/// Parses and checks a suite; `file` names it in errors.
pub fn parse(src: &str, file: &Path) -> Result<Suite, Diagnostics> {
    let mut r = Reporter::new(file, src);
    let raw: SuiteFile = match toml::from_str(src) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let d = r.at(span, e.message().trim().to_string(), HELP);
            return Err(d.into());
        }
    };
    let duration = raw
        .suite
        .duration
        .as_ref()
        .and_then(|d| check_duration(&mut r, d))
        .unwrap_or(Duration::from_secs(1));
    let repeats = match &raw.suite.repeats {
        None => 3,
        Some(n) if (1..=100).contains(n.get_ref()) => *n.get_ref(),
        Some(n) => {
            r.error(
                n.span(),
                format!("repeats = {} is out of range", n.get_ref()),
                "between 1 and 100; 3 or more show the noise",
            );
            3
        }
    };
    let default_mtus = match &raw.suite.mtus {
        None => vec![1500],
        Some(m) => check_mtus(&mut r, m),
    };
    let datapaths = match &raw.suite.datapaths {
        None => Datapath::ALL
            .into_iter()
            .filter(|d| *d != Datapath::Odp)
            .collect(),
        Some(list) => check_datapaths(&mut r, list),
    };
    let pin_cpu = match &raw.suite.pin {
        None => Some(0),
        Some(v) => match v.get_ref() {
            toml::Value::String(s) if s == "none" => None,
            toml::Value::Integer(n) if (0..1024).contains(n) => Some(*n as usize),
            _ => {
                r.error(
                    v.span(),
                    "pin is a CPU number or \"none\"",
                    "write pin = 0 (both halves on CPU 0) or pin = \"none\"",
                );
                None
            }
        },
    };
    let mut tests = Vec::new();
    for t in &raw.test {
        let t = t.get_ref();
        let Some(test) = Test::from_name(t.kind.get_ref()) else {
            r.error(
                t.kind.span(),
                format!("unknown test {:?}", t.kind.get_ref()),
                "use tcp_bw, tcp_lat, udp_bw or udp_lat",
            );
            continue;
        };
        let streams = match &t.streams {
            None => 1,
            Some(s) if *s.get_ref() == 1 => 1,
            Some(s) if test != Test::TcpBw => {
                r.error(
                    s.span(),
                    format!("{} runs one stream", test.name()),
                    "parallel streams are for tcp_bw; remove `streams`",
                );
                1
            }
            Some(s) if (2..=64).contains(s.get_ref()) => *s.get_ref(),
            Some(s) => {
                r.error(
                    s.span(),
                    format!("streams = {} is out of range", s.get_ref()),
                    "between 1 and 64",
                );
                1
            }
        };
        let duration = t.duration.as_ref().and_then(|d| check_duration(&mut r, d));
        let spec = TestSpec {
            test,
            streams,
            duration,
        };
        if tests
            .iter()
            .any(|x: &TestSpec| x.test == spec.test && x.streams == spec.streams)
        {
            r.error(
                t.kind.span(),
                format!("test {} is listed twice", spec.label()),
                "remove one of them",
            );
        }
        tests.push(spec);
    }
    if raw.test.is_empty() {
        tests = vec![
            TestSpec {
                test: Test::TcpBw,
                streams: 1,
                duration: None,
            },
            TestSpec {
                test: Test::TcpLat,
                streams: 1,
                duration: None,
            },
        ];
    }
    let mut profiles: Vec<Profile> = Vec::new();
    for p in &raw.profile {
        let span = p.span();
        let p = p.get_ref();
        if profiles.iter().any(|q| q.name == p.name) {
            r.error(
                span.clone(),
                format!("profile {:?} is defined twice", p.name),
                "give each [[profile]] its own name",
            );
        }
        let (mut rate_bps, mut delay_ns, mut source, mut mtu) = (None, None, None, None);
        let mut link_name = None;
        if let Some(link) = &p.link {
            if p.rate.is_some() || p.delay.is_some() {
                r.error(
                    link.span(),
                    "`link` names a whole profile; `rate` and `delay` cannot be added to it",
                    "use either link = \"...\" or rate/delay",
                );
            }
            match shape::profile_named(link.get_ref()) {
                Some(named) => {
                    rate_bps = Some(named.rate_bps);
                    delay_ns = Some(named.delay_ns);
                    source = Some(named.source.to_string());
                    mtu = named.mtu;
                    link_name = Some(named.name.to_string());
                }
                None => {
                    let names: Vec<&str> = shape::PROFILES.iter().map(|p| p.name).collect();
                    r.error(
                        link.span(),
                        format!("no link profile {:?}", link.get_ref()),
                        format!("use one of: {}", names.join(", ")),
                    );
                }
            }
        }
        if let Some(rate) = &p.rate {
            match shape::parse_rate(rate.get_ref()) {
                Ok(bps) => rate_bps = Some(bps),
                Err(e) => r.error(rate.span(), e, "write e.g. rate = \"1gbit\""),
            }
        }
        if let Some(delay) = &p.delay {
            match shape::parse_duration(delay.get_ref()) {
                Ok(ns) => delay_ns = Some(ns),
                Err(e) => r.error(delay.span(), e, "write e.g. delay = \"200us\""),
            }
        }
        let mtus = match &p.mtus {
            Some(m) => check_mtus(&mut r, m),
            None => mtu.map_or_else(|| default_mtus.clone(), |m| vec![m]),
        };
        profiles.push(Profile {
            name: p.name.clone(),
            rate_bps,
            delay_ns,
            mtus,
            source,
            link: link_name,
        });
    }
    if raw.profile.is_empty() {
        r.error(
            0..0,
            "the suite has no [[profile]]",
            "add one, e.g. [[profile]] name = \"veth\" (unshaped)",
        );
    }
    let mut matrices = Vec::new();
    for m in &raw.matrix {
        let m = m.get_ref();
        if !profiles.iter().any(|p| &p.name == m.profile.get_ref()) {
            let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
            r.error(
                m.profile.span(),
                format!("no [[profile]] named {:?}", m.profile.get_ref()),
                format!("use one of: {}", names.join(", ")),
            );
        }
        let mtu = match &m.mtu {
            None => 1500,
            Some(v) => {
                let span = v.span();
                let list = Spanned::new(span, vec![*v.get_ref()]);
                check_mtus(&mut r, &list).first().copied().unwrap_or(1500)
            }
        };
        let clients = m.clients.get_ref().clone();
        if clients.is_empty() || clients.iter().any(|&c| c == 0 || c > MAX_CLIENTS) {
            r.error(
                m.clients.span(),
                "clients must list numbers of clients from 1 to 16",
                "write e.g. clients = [1, 2, 4, 8]",
            );
        }
        let datapaths = match &m.datapaths {
            None => datapaths.clone(),
            Some(list) => check_datapaths(&mut r, list),
        };
        matrices.push(Matrix {
            profile: m.profile.get_ref().clone(),
            mtu,
            datapaths,
            clients,
        });
    }
    if r.has_errors() {
        return Err(r.into_diagnostics());
    }
    Ok(Suite {
        name: raw.suite.name,
        duration,
        repeats,
        datapaths,
        tests,
        pin_cpu,
        profiles,
        matrices,
    })
}

fn check_duration(r: &mut Reporter<'_>, d: &Spanned<String>) -> Option<Duration> {
    match shape::parse_duration(d.get_ref()) {
        Ok(ns) if ns >= 100_000_000 => Some(Duration::from_nanos(ns)),
        Ok(_) => {
            r.error(
                d.span(),
                "a run shorter than 100ms measures mostly its own start",
                "write e.g. duration = \"1s\"",
            );
            None
        }
        Err(e) => {
            r.error(d.span(), e, "write e.g. duration = \"1s\"");
            None
        }
    }
}

fn check_mtus(r: &mut Reporter<'_>, m: &Spanned<Vec<u32>>) -> Vec<u32> {
    if m.get_ref().is_empty() || m.get_ref().iter().any(|&v| !(1280..=9000).contains(&v)) {
        r.error(
            m.span(),
            "MTUs must be between 1280 and 9000",
            "write e.g. mtus = [1500, 9000]",
        );
        return vec![1500];
    }
    m.get_ref().clone()
}

fn check_datapaths(r: &mut Reporter<'_>, list: &Spanned<Vec<Spanned<String>>>) -> Vec<Datapath> {
    let mut out = Vec::new();
    if list.get_ref().is_empty() {
        r.error(
            list.span(),
            "no datapaths listed",
            "list at least one, e.g. [\"native\", \"fast\"]",
        );
    }
    for d in list.get_ref() {
        match Datapath::ALL.into_iter().find(|p| p.name() == d.get_ref()) {
            Some(p) if out.contains(&p) => r.error(
                d.span(),
                format!("datapath {p} is listed twice"),
                "remove one of them",
            ),
            Some(p) => out.push(p),
            None => {
                let names: Vec<&str> = Datapath::ALL.iter().map(|d| d.name()).collect();
                r.error(
                    d.span(),
                    format!("unknown datapath {:?}", d.get_ref()),
                    format!("use one of: {}", names.join(", ")),
                );
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const HEAD: &str = "[suite]\nname = \"t\"\n";

    fn errors(body: &str) -> String {
        let src = format!("{HEAD}{body}");
        match parse(&src, Path::new("suite.toml")) {
            Ok(s) => panic!("parsed: {s:?}"),
            Err(d) => d.to_string(),
        }
    }

    #[test]
    fn defaults_fill_what_a_file_leaves_out() {
        let s = parse(
            &format!("{HEAD}[[profile]]\nname = \"veth\"\n"),
            Path::new("s.toml"),
        )
        .expect("valid");
        assert_eq!(s.duration, Duration::from_secs(1));
        assert_eq!(s.repeats, 3);
        assert_eq!(s.profiles[0].mtus, vec![1500]);
        assert!(!s.datapaths.contains(&Datapath::Odp));
        assert_eq!(s.tests.len(), 2);
    }

    #[test]
    fn a_named_link_brings_its_rate_delay_and_source() {
        let s = parse(
            &format!("{HEAD}[[profile]]\nname = \"a2\"\nlink = \"azure-a2\"\n"),
            Path::new("s.toml"),
        )
        .expect("valid");
        let p = &s.profiles[0];
        assert_eq!(p.rate_bps, Some(24_800_000 * 8));
        assert_eq!(p.delay_ns, Some(426_000));
        assert_eq!(p.link.as_deref(), Some("azure-a2"));
    }

    #[rstest]
    #[case::no_profile("no_profile", "")]
    #[case::unknown_link("unknown_link", "[[profile]]\nname = \"x\"\nlink = \"azure-zz\"\n")]
    #[case::link_and_rate(
        "link_and_rate",
        "[[profile]]\nname = \"x\"\nlink = \"azure-a2\"\nrate = \"1gbit\"\n"
    )]
    #[case::bad_rate("bad_rate", "[[profile]]\nname = \"x\"\nrate = \"fast\"\n")]
    #[case::bad_mtu("bad_mtu", "[[profile]]\nname = \"x\"\nmtus = [100]\n")]
    #[case::unknown_suite_key("unknown_suite_key", "[[profile]]\nname = \"x\"\n[suite.x]\n")]
    #[case::streams_on_latency(
        "streams_on_latency",
        "[[profile]]\nname = \"x\"\n[[test]]\nkind = \"tcp_lat\"\nstreams = 2\n"
    )]
    #[case::unknown_test(
        "unknown_test",
        "[[profile]]\nname = \"x\"\n[[test]]\nkind = \"tcp_bandwidth\"\n"
    )]
    #[case::matrix_of_no_profile(
        "matrix_of_no_profile",
        "[[profile]]\nname = \"x\"\n[[matrix]]\nprofile = \"y\"\nclients = [1, 40]\n"
    )]
    #[case::unknown_key("unknown_key", "[[profile]]\nname = \"x\"\nspeed = \"1gbit\"\n")]
    #[case::short_duration(
        "short_duration",
        "[[profile]]\nname = \"x\"\n[[test]]\nkind = \"tcp_lat\"\nduration = \"1ms\"\n"
    )]
    fn bad_files_say_where_and_how_to_fix(#[case] name: &str, #[case] body: &str) {
        // Named per case: rstest runs the cases in parallel, so insta's counter would not
        // give each the same snapshot from one run to the next.
        insta::assert_snapshot!(format!("bad_file_{name}"), errors(body));
    }

    #[test]
    fn a_wrong_datapath_name_lists_the_right_ones() {
        let src = "[suite]\nname = \"t\"\ndatapaths = [\"native\", \"fastdp\"]\n[[profile]]\nname = \"x\"\n";
        let e = parse(src, Path::new("s.toml")).expect_err("invalid");
        insta::assert_snapshot!(e.to_string());
    }

    #[test]
    fn the_default_suite_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../suites/default.toml");
        let s = load(&path).expect("suites/default.toml is valid");
        assert!(s.datapaths.contains(&Datapath::Fast));
        assert!(!s.matrices.is_empty());
    }
}
