//! The capability probe, checked against an independent source: the running kernel's own
//! configuration (/proc/config.gz, read with zcat).
//!
//! A feature built in (`=y`) must probe present; one not configured at all must probe missing;
//! a module (`=m`) may go either way on the host, but must be present in the kernel lane, whose
//! guest loads its modules at boot.

use std::process::Command;

use netsim::caps::{self, Feature};
use netsim::testing;

/// The kernel config symbol(s) behind a feature (all must be enabled).
fn config_symbols(feature: Feature) -> &'static [&'static str] {
    match feature {
        Feature::Netns => &["CONFIG_NET_NS"],
        Feature::Veth => &["CONFIG_VETH"],
        Feature::Bridge => &["CONFIG_BRIDGE"],
        Feature::Vxlan => &["CONFIG_VXLAN"],
        Feature::Tbf => &["CONFIG_NET_SCH_TBF"],
        Feature::Htb => &["CONFIG_NET_SCH_HTB"],
        Feature::Netem => &["CONFIG_NET_SCH_NETEM"],
        Feature::Openvswitch => &["CONFIG_OPENVSWITCH"],
        Feature::Nftables => &["CONFIG_NF_TABLES"],
        Feature::Tun => &["CONFIG_TUN"],
        Feature::AfPacket => &["CONFIG_PACKET"],
    }
}

#[derive(Debug, PartialEq, Clone, Copy)]
enum Config {
    BuiltIn,
    Module,
    Absent,
}

fn kernel_config() -> Option<String> {
    let out = Command::new("zcat").arg("/proc/config.gz").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn lookup(config: &str, symbol: &str) -> Config {
    let set = format!("{symbol}=");
    for line in config.lines() {
        if let Some(value) = line.strip_prefix(&set) {
            return match value {
                "y" => Config::BuiltIn,
                "m" => Config::Module,
                _ => Config::Absent,
            };
        }
    }
    Config::Absent
}

#[test]
fn probe_agrees_with_the_kernel_config() {
    netsim::require_features!(Feature::Netns);
    let Some(config) = kernel_config() else {
        // The kernel lane's guest loads the `configs` module, which provides it.
        testing::skip_because("no /proc/config.gz to compare with", module_path!());
        return;
    };
    let caps = caps::probe();
    eprintln!("{}", caps.report());
    let mut disagreements = Vec::new();
    for feature in Feature::ALL {
        let configs: Vec<Config> = config_symbols(feature)
            .iter()
            .map(|s| lookup(&config, s))
            .collect();
        let expected = if configs.contains(&Config::Absent) {
            Some(false)
        } else if configs.iter().all(|c| *c == Config::BuiltIn) || testing::in_kernel_lane() {
            Some(true)
        } else {
            None // a module the host may or may not be able to load
        };
        if let Some(expected) = expected {
            if caps.has(feature) != expected {
                disagreements.push(format!(
                    "{feature}: config {configs:?}, probe {:?}",
                    caps.status(feature)
                ));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "probe and /proc/config.gz disagree:\n{}",
        disagreements.join("\n")
    );
}

#[test]
fn links_the_lab_needs_are_present_wherever_namespaces_are() {
    netsim::require_features!(Feature::Netns);
    let caps = caps::probe();
    for feature in [
        Feature::Veth,
        Feature::Bridge,
        Feature::Vxlan,
        Feature::AfPacket,
    ] {
        assert!(caps.has(feature), "{feature}: {:?}", caps.status(feature));
    }
}

#[test]
fn every_feature_the_kernel_lane_promises() {
    // Skipped (with reasons) on kernels that lack some; a failure in the kernel lane.
    netsim::require_features!(
        Feature::Netns,
        Feature::Veth,
        Feature::Bridge,
        Feature::Vxlan,
        Feature::Tbf,
        Feature::Htb,
        Feature::Netem,
        Feature::Openvswitch,
        Feature::Nftables,
        Feature::Tun,
        Feature::AfPacket,
    );
    assert_eq!(caps::probe().missing().count(), 0);
}

#[test]
fn the_probe_leaves_the_root_namespace_alone() {
    netsim::require_features!(Feature::Netns);
    let before = links();
    let _ = caps::probe_uncached();
    assert_eq!(before, links(), "the probe changed this namespace's links");
}

fn links() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
