//! A suite expanded into what a run does: the labs it builds (one per profile and MTU, one per
//! matrix), the topology of each, and the cases measured in each. Pure: the runner follows
//! this, and `netsim bench --suite FILE --dry-run` prints it.

use std::fmt::Write as _;
use std::time::Duration;

use super::spec::{Datapath, Matrix, Profile, Suite, TestSpec};

/// Where the raw vxlan datapath's devices take their addresses: inside the overlay range, but
/// on the hosts, where the routers put no address (they address the `c` containers alone).
pub const RAW_VXLAN_NET: [u8; 3] = [198, 19, 255];
/// Where the `vxlan-bridge` datapath's containers (`v0`, `v1`, ...) take their addresses:
/// namespaces of their own, which the routers never address.
pub const VXLAN_BRIDGE_NET: [u8; 3] = [198, 19, 254];
/// The `vxlan-bridge` devices' VNI and UDP port: flannel's defaults (VNI 1, the kernel's
/// historical vxlan port), so both raw vxlans can be up at once.
pub const VXLAN_BRIDGE_VNI: u32 = 1;
/// See [`VXLAN_BRIDGE_VNI`].
pub const VXLAN_BRIDGE_PORT: u16 = 8472;
/// The raw vxlan devices' VNI and UDP port (the IANA vxlan port; the overlay uses its own).
pub const RAW_VXLAN_VNI: u32 = 4242;
/// See [`RAW_VXLAN_VNI`].
pub const RAW_VXLAN_PORT: u16 = 4789;
/// Bytes vxlan adds to each packet (outer IPv4 20, UDP 8, vxlan 8, inner Ethernet 14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// One lab of a run and what is measured in it.
#[derive(Debug, Clone, PartialEq)]
pub struct LabCase {
    /// Short name (also the lab's name).
    pub name: String,
    /// The profile shaping the server's link.
    pub profile: Profile,
    /// Link MTU.
    pub mtu: u32,
    /// Client hosts (h1..hN); the server is h0.
    pub clients: usize,
    /// Datapaths, in order.
    pub datapaths: Vec<Datapath>,
    /// What is measured.
    pub work: Work,
}

/// What a lab measures.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// Each test, client h1 to server h0 (or their containers).
    Tests(Vec<TestSpec>),
    /// One server, the first N clients, one stream each, for each N.
    Clients(Vec<usize>),
}

/// Every lab of the suite, profiles first (in file order, each MTU in turn), then matrices.
pub fn expand(suite: &Suite) -> Vec<LabCase> {
    let mut out = Vec::new();
    for (i, p) in suite.profiles.iter().enumerate() {
        for &mtu in &p.mtus {
            out.push(LabCase {
                name: format!("bs{}m{}", i + 1, mtu),
                profile: p.clone(),
                mtu,
                clients: 1,
                datapaths: suite.datapaths.clone(),
                work: Work::Tests(suite.tests.clone()),
            });
        }
    }
    for (i, m) in suite.matrices.iter().enumerate() {
        let Some(profile) = suite.profiles.iter().find(|p| p.name == m.profile) else {
            continue;
        };
        out.push(matrix_case(i, m, profile));
    }
    out
}

fn matrix_case(i: usize, m: &Matrix, profile: &Profile) -> LabCase {
    LabCase {
        name: format!("bx{}", i + 1),
        profile: profile.clone(),
        mtu: m.mtu,
        clients: m.clients.iter().copied().max().unwrap_or(1),
        datapaths: m.datapaths.clone(),
        work: Work::Clients(m.clients.clone()),
    }
}

impl LabCase {
    /// Measurement runs in this lab (each repeat counts).
    pub fn runs(&self, repeats: u32) -> usize {
        let per_datapath = match &self.work {
            Work::Tests(t) => t.len(),
            Work::Clients(c) => c.len(),
        };
        self.datapaths.len() * per_datapath * repeats as usize
    }

    /// The lab's topology: a switch, the server h0 on a link shaped by the profile, clients
    /// h1..hN unshaped, one container per host (`c0`, `c1`, ...: the overlay's), a second one
    /// (`v0`, `v1`, ...) when the `vxlan-bridge` datapath is measured, and an overlay section
    /// (the routers only start for overlay datapaths).
    pub fn topology(&self) -> String {
        let containers = |i: usize| {
            if self.datapaths.contains(&Datapath::VxlanBridge) {
                format!("[\"c{i}\", \"v{i}\"]")
            } else {
                format!("[\"c{i}\"]")
            }
        };
        let mtu = self.mtu;
        let mut t = format!(
            "[lab]\nname = \"{}\"\n\n[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.0.0/24\"\nmtu = {mtu}\n\n",
            self.name
        );
        let _ = write!(
            t,
            "[[host]]\nname = \"h0\"\ncontainers = {}\n\n",
            containers(0)
        );
        let _ = write!(t, "[[link]]\nendpoints = [\"h0\", \"sw1\"]\nmtu = {mtu}\n");
        let mut shape = Vec::new();
        if let Some(r) = self.profile.rate_bps {
            shape.push(format!("rate = \"{r}bit\""));
        }
        if let Some(d) = self.profile.delay_ns {
            shape.push(format!("delay = \"{d}ns\""));
        }
        if !shape.is_empty() {
            let _ = writeln!(t, "shape = {{ {} }}", shape.join(", "));
        }
        t.push('\n');
        for i in 1..=self.clients {
            let _ = writeln!(
                t,
                "[[host]]\nname = \"h{i}\"\nswitches = [\"sw1\"]\ncontainers = {}\n",
                containers(i)
            );
        }
        t.push_str("[overlay]\nrange = \"198.19.0.0/16\"\nmtu = \"auto\"\n");
        t
    }
}

/// How long a run of the suite takes, roughly: each measurement run plus the set-up of each
/// lab and datapath (measured on a 2-core machine: a lab about 0.3 s, an overlay start about
/// 1 s, a run's own start and end about 0.3 s).
pub fn estimate(suite: &Suite, labs: &[LabCase]) -> Duration {
    let run = |d: Option<Duration>| d.unwrap_or(suite.duration).as_secs_f64() + 0.3;
    let mut secs = 0.0;
    for l in labs {
        let per_datapath: f64 = match &l.work {
            Work::Tests(t) => t.iter().map(|t| run(t.duration)).sum(),
            Work::Clients(c) => c.len() as f64 * run(None),
        };
        secs += 0.5 + l.datapaths.len() as f64 * per_datapath * f64::from(suite.repeats);
        secs += l.datapaths.iter().filter(|d| d.is_overlay()).count() as f64 * 1.5;
    }
    Duration::from_secs_f64(secs)
}

/// The plan as text: the labs, their datapaths and cases, and the estimated time.
pub fn render(suite: &Suite, labs: &[LabCase]) -> String {
    let mut out = format!(
        "suite {:?}: {} labs, {} measurement runs of {} (repeats {}), about {} s\n",
        suite.name,
        labs.len(),
        labs.iter().map(|l| l.runs(suite.repeats)).sum::<usize>(),
        crate::model::shape::format_duration(suite.duration.as_nanos() as u64),
        suite.repeats,
        estimate(suite, labs).as_secs()
    );
    for l in labs {
        let dps: Vec<&str> = l.datapaths.iter().map(|d| d.name()).collect();
        let work = match &l.work {
            Work::Tests(t) => t.iter().map(|t| t.label()).collect::<Vec<_>>().join(", "),
            Work::Clients(c) => format!(
                "1 server, {} clients, one stream each",
                c.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            ),
        };
        let rounds: Vec<&str> = l
            .datapaths
            .iter()
            .filter(|d| d.shares_rounds())
            .map(|d| d.name())
            .collect();
        let rounds = if matches!(l.work, Work::Tests(_)) && rounds.len() > 1 {
            format!(" ({} round by round)", rounds.join(", "))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {}: {} ({}), MTU {}, {} client host{}: {} on {}{rounds}",
            l.name,
            l.profile.name,
            l.profile.describe(),
            l.mtu,
            l.clients,
            if l.clients == 1 { "" } else { "s" },
            work,
            dps.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SUITE: &str = r#"
[suite]
name = "t"
duration = "1s"
repeats = 2
mtus = [1500, 9000]
datapaths = ["native", "fast", "sleeve"]

[[profile]]
name = "veth"

[[profile]]
name = "azure-a2"
link = "azure-a2"
mtus = [1500]

[[test]]
kind = "tcp_bw"

[[test]]
kind = "tcp_bw"
streams = 4

[[test]]
kind = "tcp_lat"

[[matrix]]
profile = "azure-a2"
clients = [1, 2, 4]
datapaths = ["native", "sleeve"]
"#;

    #[test]
    fn a_suite_expands_into_labs_and_a_plan_a_reviewer_can_read() {
        let suite = super::super::spec::parse(SUITE, Path::new("t.toml")).expect("valid");
        let labs = expand(&suite);
        assert_eq!(labs.len(), 4);
        assert_eq!(labs[0].runs(2), 3 * 3 * 2);
        assert_eq!(labs[3].runs(2), 2 * 3 * 2);
        insta::assert_snapshot!(render(&suite, &labs));
        insta::assert_snapshot!("matrix_topology", labs[3].topology());
    }

    #[test]
    fn every_lab_topology_plans() {
        let suite = super::super::spec::parse(SUITE, Path::new("t.toml")).expect("valid");
        for l in expand(&suite) {
            let src = l.topology();
            let plan = crate::model::parse(&src, Path::new("<suite>"))
                .and_then(|t| crate::model::plan(&t));
            assert!(plan.is_ok(), "{}: {:?}\n{src}", l.name, plan.err());
        }
    }
}
