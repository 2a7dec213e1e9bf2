//! Which kernel fast path a host has, and the one interface the fast path drives it through.
//!
//! A host tries the Open vSwitch datapath first, then a kernel vxlan device, and runs on sleeve
//! alone when neither can be made; [`settle`] turns what each attempt said into the tier and a
//! sentence for status ("openvswitch module missing: using kernel vxlan"). Per connection,
//! heartbeats then decide between that tier and sleeve ([`super::select`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use serde::Serialize;

use super::ovs_dev::OvsDevice;
use super::steer::BridgeSteer;
use super::vxlan_dev::VxlanDevice;

/// A host's kernel fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The Open vSwitch kernel datapath with a vxlan vport.
    Odp,
    /// A kernel vxlan device on the overlay bridge.
    Vxlan,
    /// None: sleeve carries every connection.
    Sleeve,
}

impl Tier {
    /// The name status and expectations use.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Odp => "odp",
            Tier::Vxlan => "vxlan",
            Tier::Sleeve => "sleeve",
        }
    }

    fn words(self) -> &'static str {
        match self {
            Tier::Odp => "the openvswitch datapath",
            Tier::Vxlan => "kernel vxlan",
            Tier::Sleeve => "sleeve only",
        }
    }
}

/// The tier a host ends on, given each tier it tried in order of preference and what came of
/// it (`Err(why)`: it could not be made), and why: the reasons the better tiers failed.
pub fn settle(attempts: &[(Tier, Result<(), String>)]) -> (Tier, String) {
    let mut failed = Vec::new();
    for (tier, outcome) in attempts {
        match outcome {
            Ok(()) if failed.is_empty() => {
                return (*tier, format!("using {}", tier.words()));
            }
            Ok(()) => {
                return (
                    *tier,
                    format!("{}: using {}", failed.join("; "), tier.words()),
                )
            }
            Err(why) => failed.push(why.clone()),
        }
    }
    if failed.is_empty() {
        return (Tier::Sleeve, "using sleeve only".to_string());
    }
    (
        Tier::Sleeve,
        format!("{}: using sleeve only", failed.join("; ")),
    )
}

/// The kernel fast path the heartbeats and tables of [`super::fast`] drive.
#[derive(Debug, Clone)]
pub enum FastKernel {
    /// A kernel vxlan device: FDB entries per peer and MAC.
    Vxlan(VxlanDevice),
    /// The Open vSwitch datapath: flows installed on miss.
    Odp(OvsDevice),
}

impl FastKernel {
    /// Which tier this is.
    pub fn tier(&self) -> Tier {
        match self {
            FastKernel::Vxlan(_) => Tier::Vxlan,
            FastKernel::Odp(_) => Tier::Odp,
        }
    }

    /// Where heartbeats arriving through the fast path can be read (an interface index).
    pub fn heartbeat_index(&self) -> u32 {
        match self {
            FastKernel::Vxlan(d) => d.index,
            FastKernel::Odp(d) => d.heartbeat_index,
        }
    }

    /// The bridge entries steering remote MACs to this tier or to sleeve.
    pub fn steer(&self) -> &BridgeSteer {
        match self {
            FastKernel::Vxlan(d) => &d.steer,
            FastKernel::Odp(d) => &d.steer,
        }
    }

    /// The VNI of this host's frames to a peer, and of its heartbeats: the kernel vxlan tier
    /// has one VNI; the Open vSwitch tier names the pair when the peer runs it too.
    pub fn vni_to(&self, me: u16, peer: u16, peer_odp: bool) -> u32 {
        let pair = matches!(self, FastKernel::Odp(_)) && peer_odp;
        super::ovs_flows::vni_between(me, peer, pair)
    }

    /// A connection came up, or its peer's short id changed (the Open vSwitch tier learns
    /// the peer's short id; `uid` names the peer's incarnation).
    pub fn register_peer(&self, ip: IpAddr, short_id: u16, peer_odp: bool, uid: u64) {
        if let FastKernel::Odp(d) = self {
            d.register_peer(ip, short_id, peer_odp, uid);
        }
    }

    /// The connection to incarnation `uid` at `ip` went away (the vxlan tier's entries are
    /// removed by the plan; the Open vSwitch tier forgets this incarnation's).
    pub fn forget_peer(&self, ip: IpAddr, uid: u64) {
        if let FastKernel::Odp(d) = self {
            d.forget_peer(ip, uid);
        }
    }

    /// Sends frames for `mac` (or for [`super::vxlan_dev::FLOOD`], floods) to `ip`.
    pub async fn add_remote(&self, mac: [u8; 6], ip: IpAddr) -> Result<(), String> {
        match self {
            FastKernel::Vxlan(d) => d.add_remote(mac, ip).await.map_err(|e| e.to_string()),
            FastKernel::Odp(d) => {
                d.add_remote(mac, ip);
                Ok(())
            }
        }
    }

    /// Stops sending frames for `mac` (or floods) to `ip`.
    pub async fn remove_remote(&self, mac: [u8; 6], ip: IpAddr) -> Result<(), String> {
        match self {
            FastKernel::Vxlan(d) => d.remove_remote(mac, ip).await.map_err(|e| e.to_string()),
            FastKernel::Odp(d) => {
                d.remove_remote(mac, ip);
                Ok(())
            }
        }
    }

    /// When the kernel last carried frames over each peer's connection, where it says
    /// (`None`: it could not be asked). The vxlan tier reads its FDB's "used" stamps (frames
    /// sent, floods included); the Open vSwitch tier counts a peer with flows, toward or from
    /// it, as used now (its flows go after `--flow-idle-ms` unused), and floods as uses of
    /// every fast peer.
    pub async fn last_used(&self) -> Option<HashMap<IpAddr, Instant>> {
        match self {
            FastKernel::Vxlan(d) => match d.last_used().await {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::debug!("cannot list the vxlan device's FDB: {e}");
                    None
                }
            },
            FastKernel::Odp(d) => {
                let now = Instant::now();
                Some(
                    d.peer_use()
                        .into_iter()
                        .map(|(ip, ago)| (ip, now.checked_sub(ago).unwrap_or(now)))
                        .collect(),
                )
            }
        }
    }

    /// Removes everything this tier made in the kernel.
    pub async fn remove(&self) {
        match self {
            FastKernel::Vxlan(d) => d.remove().await,
            FastKernel::Odp(d) => d.remove().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn no(why: &str) -> Result<(), String> {
        Err(why.to_string())
    }

    #[rstest]
    #[case::odp_first(vec![(Tier::Odp, Ok(())), (Tier::Vxlan, Ok(()))], Tier::Odp, "using the openvswitch datapath")]
    #[case::no_module(
        vec![(Tier::Odp, no("openvswitch module missing")), (Tier::Vxlan, Ok(()))],
        Tier::Vxlan,
        "openvswitch module missing: using kernel vxlan"
    )]
    #[case::neither(
        vec![(Tier::Odp, no("openvswitch module missing")), (Tier::Vxlan, no("the kernel has no vxlan support (module vxlan missing)"))],
        Tier::Sleeve,
        "openvswitch module missing; the kernel has no vxlan support (module vxlan missing): using sleeve only"
    )]
    #[case::turned_off(vec![(Tier::Odp, no("turned off (--fast-path off)"))], Tier::Sleeve, "turned off (--fast-path off): using sleeve only")]
    #[case::vxlan_asked_for(vec![(Tier::Vxlan, Ok(()))], Tier::Vxlan, "using kernel vxlan")]
    #[case::nothing_tried(vec![], Tier::Sleeve, "using sleeve only")]
    fn the_first_tier_that_works_wins_and_says_why(
        #[case] attempts: Vec<(Tier, Result<(), String>)>,
        #[case] tier: Tier,
        #[case] why: &str,
    ) {
        assert_eq!(settle(&attempts), (tier, why.to_string()));
    }
}
