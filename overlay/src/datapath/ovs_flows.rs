//! What the Open vSwitch tier does with a miss: pure decisions, free of I/O.
//!
//! The kernel datapath hands the router the first frame of every flow it has no entry for (an
//! upcall). [`decide`] looks at the frame's key and the router's [`Tables`] and answers with
//! the actions to execute the frame with, and (for unicast between two known ends) the flow to
//! install so the rest of the flow never comes up:
//!
//! - **egress** (from the bridge, through the datapath's netdev port): a frame for a MAC a peer
//!   announced (or that was learned from its frames) goes to that peer: set tunnel (peer
//!   address, VNI `our short id | peer short id << 12`) and output through the vxlan port.
//!   Broadcast, multicast and unknown unicast go once to every peer on the fast path and never
//!   make a flow (a flow would pin a guess).
//! - **ingress** (from the vxlan port): the VNI names sender and receiver. A frame for another
//!   host is dropped (the kernel never relays between peers), a frame from an address that is
//!   no peer is dropped, and the rest go to the bridge; the sender's MAC is learned.
//!
//! Heartbeats never come up: a fixed flow hands them to the datapath's own port, where the
//! fast path's heartbeat reader waits ([`heartbeat_flow`]).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::odp::flow::{Action, KeyAttr, KeyExt, TunnelKeyAttr};
use crate::wire::heartbeat::HEARTBEAT_ETHERTYPE;
use crate::wire::vxlan as vxwire;

/// TTL of the tunnel packets the datapath sends (the kernel vxlan device's default).
pub const TUNNEL_TTL: u8 = 64;

/// One peer as the datapath sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OvsPeer {
    /// Its short id (the VNI names it).
    pub short_id: u16,
    /// Whether its connection is on the fast path (it gets floods and unicast through vxlan).
    pub fast: bool,
    /// Whether it runs this tier too (it reads the pair VNI); a kernel vxlan peer only takes
    /// VNI 0 ([`super::vxlan_dev::VNI`]).
    pub pair_vni: bool,
    /// The connection's peer incarnation (its uid): what a late removal of an older
    /// connection to the same address must not touch.
    pub uid: u64,
}

/// What the router knows that misses are decided on.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    /// This router's short id.
    pub me: u16,
    /// The datapath port joined to the overlay bridge.
    pub bridge_port: u32,
    /// The vxlan port.
    pub vxlan_port: u32,
    /// Peers by underlay address.
    pub peers: BTreeMap<Ipv4Addr, OvsPeer>,
    /// MACs peers announced, and where they live.
    pub announced: HashMap<[u8; 6], Ipv4Addr>,
    /// MACs learned from frames arriving through the tunnel.
    pub learned: HashMap<[u8; 6], Ipv4Addr>,
}

/// Why a miss was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Drop {
    /// The key had no in-port, no Ethernet header or came from an unknown port.
    Unparsed,
    /// No peer is on the fast path to flood to.
    NoPeer,
    /// The destination's peer is on sleeve (sleeve carries the frame from the bridge).
    OnSleeve,
    /// A tunnel packet from an address that is no peer.
    UnknownSender,
    /// A tunnel packet whose VNI names another receiver: never relayed.
    NotForUs,
}

/// What to do with a miss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Execute the frame with `actions`; install `flow` (key, mask) when there is one; learn
    /// that a MAC lives behind a peer.
    Forward {
        /// Actions for the frame (and the flow).
        actions: Vec<Action>,
        /// The flow to install, as key and mask.
        flow: Option<(Vec<KeyAttr>, Vec<KeyAttr>)>,
        /// A MAC seen arriving from a peer.
        learned: Option<([u8; 6], Ipv4Addr)>,
    },
    /// Nothing is sent.
    Drop(Drop),
}

fn is_group(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 1
}

impl Tables {
    /// The VNI of frames to the peer `p`.
    pub fn vni_to(&self, p: &OvsPeer) -> u32 {
        vni_between(self.me, p.short_id, p.pair_vni)
    }

    /// A connection to `ip` came up, or its peer's short id changed: `true` when that changes
    /// what frames are decided on (flows must go). A new incarnation starts off the fast path.
    pub fn register(&mut self, ip: Ipv4Addr, short_id: u16, pair_vni: bool, uid: u64) -> bool {
        let fast = self.peers.get(&ip).is_some_and(|p| p.fast && p.uid == uid);
        let new = OvsPeer {
            short_id,
            fast,
            pair_vni,
            uid,
        };
        self.peers.insert(ip, new) != Some(new)
    }

    /// The connection of incarnation `uid` to `ip` went away: its peer, MACs announced and
    /// learned go; `false` (nothing done) when a newer connection to the same address was
    /// registered meanwhile.
    pub fn forget(&mut self, ip: Ipv4Addr, uid: u64) -> bool {
        if self.peers.get(&ip).is_some_and(|p| p.uid != uid) {
            return false;
        }
        self.peers.remove(&ip);
        self.learned.retain(|_, at| *at != ip);
        self.announced.retain(|_, at| *at != ip);
        true
    }

    /// The actions that send a frame to the peer at `ip` through vxlan.
    fn to_peer(&self, ip: Ipv4Addr, p: &OvsPeer, out: &mut Vec<Action>) {
        out.push(Action::SetTunnel(vec![
            TunnelKeyAttr::Id(u64::from(self.vni_to(p))),
            TunnelKeyAttr::Ipv4Dst(ip),
            TunnelKeyAttr::Ttl(TUNNEL_TTL),
        ]));
        out.push(Action::Output(self.vxlan_port));
    }

    /// Where `mac` lives: announced first, then learned.
    pub fn owner(&self, mac: &[u8; 6]) -> Option<Ipv4Addr> {
        self.announced
            .get(mac)
            .or_else(|| self.learned.get(mac))
            .copied()
    }

    fn flood(&self) -> Vec<Action> {
        let mut actions = Vec::new();
        for (ip, p) in self.peers.iter().filter(|(_, p)| p.fast) {
            self.to_peer(*ip, p, &mut actions);
        }
        actions
    }
}

/// The flow that hands heartbeats arriving through the vxlan port to the datapath's own port
/// (port 0), where the fast path's heartbeat reader listens: key and mask.
pub fn heartbeat_flow(vxlan_port: u32) -> (Vec<KeyAttr>, Vec<KeyAttr>) {
    (
        vec![
            KeyAttr::InPort(vxlan_port),
            KeyAttr::Ethernet {
                src: [0; 6],
                dst: [0; 6],
            },
            KeyAttr::EtherType(HEARTBEAT_ETHERTYPE),
        ],
        vec![
            KeyAttr::InPort(u32::MAX),
            KeyAttr::Ethernet {
                src: [0; 6],
                dst: [0; 6],
            },
            KeyAttr::EtherType(u16::MAX),
        ],
    )
}

/// The VNI of frames (and heartbeats) from short id `me` to short id `peer`: the pair,
/// `me | peer << 12`, when the peer runs this tier (`pair`); else the kernel vxlan tier's one
/// VNI, the only one such a peer takes.
pub fn vni_between(me: u16, peer: u16, pair: bool) -> u32 {
    if !pair {
        return super::vxlan_dev::VNI;
    }
    vxwire::vni(me, peer).unwrap_or(super::vxlan_dev::VNI)
}

/// The tunnel id of a tunnel key.
fn tunnel_id(t: &[TunnelKeyAttr]) -> Option<u64> {
    t.iter().find_map(|a| match a {
        TunnelKeyAttr::Id(i) => Some(*i),
        _ => None,
    })
}

/// The tunnel's outer source (`src`) or destination address.
fn tunnel_addr(t: &[TunnelKeyAttr], src: bool) -> Option<Ipv4Addr> {
    t.iter().find_map(|a| match (a, src) {
        (TunnelKeyAttr::Ipv4Src(ip), true) | (TunnelKeyAttr::Ipv4Dst(ip), false) => Some(*ip),
        _ => None,
    })
}

/// What names an installed flow: in-port, both MACs, and for ingress the VNI and sender.
pub type FlowId = (u32, [u8; 6], [u8; 6], Option<(u64, Ipv4Addr)>);

/// The [`FlowId`] of a flow key (as installed, or as the kernel lists it); `None` for keys
/// without in-port or Ethernet (no flow of ours).
pub fn flow_id(key: &[KeyAttr]) -> Option<FlowId> {
    let (src, dst) = key.ethernet()?;
    let tunnel = key
        .tunnel()
        .and_then(|t| Some((tunnel_id(t)?, tunnel_addr(t, true)?)));
    Some((key.in_port()?, src, dst, tunnel))
}

/// The peer a flow carries frames from (ingress: its tunnel's sender) or to (egress: where
/// its destination MAC lives).
pub fn peer_of_flow(t: &Tables, id: &FlowId) -> Option<Ipv4Addr> {
    let (_, _, dst, tunnel) = id;
    match tunnel {
        Some((_, sender)) => Some(*sender),
        None => t.announced.get(dst).or_else(|| t.learned.get(dst)).copied(),
    }
}

/// Whether a flow (by its key) is the heartbeat flow, which stays for the datapath's life.
pub fn is_heartbeat_flow(key: &[KeyAttr]) -> bool {
    key.contains(&KeyAttr::EtherType(HEARTBEAT_ETHERTYPE))
}

/// Decides what to do with a miss whose flow key is `key`.
pub fn decide(t: &Tables, key: &[KeyAttr]) -> Decision {
    let (Some(in_port), Some((src, dst))) = (key.in_port(), key.ethernet()) else {
        return Decision::Drop(Drop::Unparsed);
    };
    if in_port == t.bridge_port {
        egress(t, in_port, src, dst)
    } else if in_port == t.vxlan_port {
        ingress(t, key, src, dst)
    } else {
        Decision::Drop(Drop::Unparsed)
    }
}

fn egress(t: &Tables, in_port: u32, src: [u8; 6], dst: [u8; 6]) -> Decision {
    let owner = if is_group(&dst) { None } else { t.owner(&dst) };
    let Some(ip) = owner else {
        let actions = t.flood();
        if actions.is_empty() {
            return Decision::Drop(Drop::NoPeer);
        }
        return Decision::Forward {
            actions,
            flow: None,
            learned: None,
        };
    };
    let Some(p) = t.peers.get(&ip).filter(|p| p.fast) else {
        return Decision::Drop(Drop::OnSleeve);
    };
    let mut actions = Vec::new();
    t.to_peer(ip, p, &mut actions);
    let key = vec![KeyAttr::InPort(in_port), KeyAttr::Ethernet { src, dst }];
    let mask = vec![
        KeyAttr::InPort(u32::MAX),
        KeyAttr::Ethernet {
            src: [0xff; 6],
            dst: [0xff; 6],
        },
    ];
    Decision::Forward {
        actions,
        flow: Some((key, mask)),
        learned: None,
    }
}

fn ingress(t: &Tables, key: &[KeyAttr], src: [u8; 6], dst: [u8; 6]) -> Decision {
    let tunnel = key.tunnel().unwrap_or(&[]);
    let vni = tunnel_id(tunnel).map_or(super::vxlan_dev::VNI, |id| id as u32);
    let here = tunnel_addr(tunnel, false);
    let Some(ip) = tunnel_addr(tunnel, true).filter(|ip| t.peers.contains_key(ip)) else {
        return Decision::Drop(Drop::UnknownSender);
    };
    if vni != super::vxlan_dev::VNI && vxwire::short_ids(vni).1 != t.me {
        return Decision::Drop(Drop::NotForUs);
    }
    let actions = vec![Action::Output(t.bridge_port)];
    let learned = (!is_group(&src)).then_some((src, ip));
    let flow = (!is_group(&dst)).then(|| {
        let mut tun = vec![
            TunnelKeyAttr::Id(u64::from(vni)),
            TunnelKeyAttr::Ipv4Src(ip),
        ];
        if let Some(h) = here {
            tun.push(TunnelKeyAttr::Ipv4Dst(h));
        }
        tun.push(TunnelKeyAttr::Ttl(TUNNEL_TTL));
        let key = vec![
            KeyAttr::InPort(t.vxlan_port),
            KeyAttr::Tunnel(tun),
            KeyAttr::Ethernet { src, dst },
        ];
        let mask = vec![
            KeyAttr::InPort(u32::MAX),
            KeyAttr::Tunnel(vec![
                TunnelKeyAttr::Id(u64::MAX),
                TunnelKeyAttr::Ipv4Src(Ipv4Addr::BROADCAST),
            ]),
            KeyAttr::Ethernet {
                src: [0xff; 6],
                dst: [0xff; 6],
            },
        ];
        (key, mask)
    });
    Decision::Forward {
        actions,
        flow,
        learned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const BRIDGE: u32 = 1;
    const VXLAN: u32 = 2;
    const H2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
    const H3: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 3);
    const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 9);
    const LOCAL: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const ON_H2: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    const ON_H3: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];
    const UNKNOWN: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
    const BROADCAST: [u8; 6] = [0xff; 6];

    /// Host 1 (short id 1) with peers h2 (id 2, fast) and h3 (id 3, on sleeve).
    fn tables() -> Tables {
        let mut t = Tables {
            me: 1,
            bridge_port: BRIDGE,
            vxlan_port: VXLAN,
            ..Tables::default()
        };
        let peer = |short_id, fast| OvsPeer {
            short_id,
            fast,
            pair_vni: true,
            uid: u64::from(short_id),
        };
        t.peers.insert(H2, peer(2, true));
        t.peers.insert(H3, peer(3, false));
        t.announced.insert(ON_H2, H2);
        t.announced.insert(ON_H3, H3);
        t
    }

    fn from_bridge(dst: [u8; 6]) -> Vec<KeyAttr> {
        vec![
            KeyAttr::InPort(BRIDGE),
            KeyAttr::Ethernet { src: LOCAL, dst },
        ]
    }

    fn from_tunnel(sender: Ipv4Addr, vni: u32, src: [u8; 6], dst: [u8; 6]) -> Vec<KeyAttr> {
        vec![
            KeyAttr::InPort(VXLAN),
            KeyAttr::Tunnel(vec![
                TunnelKeyAttr::Id(u64::from(vni)),
                TunnelKeyAttr::Ipv4Src(sender),
                TunnelKeyAttr::Ipv4Dst(Ipv4Addr::new(198, 18, 1, 1)),
                TunnelKeyAttr::Ttl(64),
            ]),
            KeyAttr::Ethernet { src, dst },
        ]
    }

    /// A decision in one line per action, for tables of cases.
    fn render(d: &Decision) -> String {
        match d {
            Decision::Drop(why) => format!("drop {why:?}"),
            Decision::Forward {
                actions,
                flow,
                learned,
            } => {
                let acts: Vec<String> = actions
                    .iter()
                    .map(|a| match a {
                        Action::Output(p) => format!("output {p}"),
                        Action::SetTunnel(t) => {
                            let id = t.iter().find_map(|a| match a {
                                TunnelKeyAttr::Id(i) => Some(*i),
                                _ => None,
                            });
                            let dst = t.iter().find_map(|a| match a {
                                TunnelKeyAttr::Ipv4Dst(d) => Some(*d),
                                _ => None,
                            });
                            format!(
                                "tunnel {:#x} to {}",
                                id.unwrap_or(0),
                                dst.map_or("?".into(), |d| d.to_string())
                            )
                        }
                        other => format!("{other:?}"),
                    })
                    .collect();
                let flow = if flow.is_some() {
                    "; flow"
                } else {
                    "; no flow"
                };
                let learned = learned
                    .map(|(m, ip)| format!("; learned {:02x} at {ip}", m[5]))
                    .unwrap_or_default();
                format!("{}{flow}{learned}", acts.join(", "))
            }
        }
    }

    #[rstest]
    #[case::unicast_to_a_fast_peer(
        from_bridge(ON_H2),
        "tunnel 0x2001 to 198.18.1.2, output 2; flow"
    )]
    #[case::broadcast_once_per_fast_peer(
        from_bridge(BROADCAST),
        "tunnel 0x2001 to 198.18.1.2, output 2; no flow"
    )]
    #[case::unknown_unicast_floods_without_a_flow(
        from_bridge(UNKNOWN),
        "tunnel 0x2001 to 198.18.1.2, output 2; no flow"
    )]
    #[case::a_peer_on_sleeve_is_left_to_sleeve(from_bridge(ON_H3), "drop OnSleeve")]
    #[case::from_a_peer_to_us(
        from_tunnel(H2, 0x1002, ON_H2, LOCAL),
        "output 1; flow; learned 02 at 198.18.1.2"
    )]
    #[case::broadcast_from_a_peer(
        from_tunnel(H2, 0x1002, ON_H2, BROADCAST),
        "output 1; no flow; learned 02 at 198.18.1.2"
    )]
    #[case::for_another_host_never_relayed(from_tunnel(H2, 0x3002, ON_H2, ON_H3), "drop NotForUs")]
    #[case::from_a_stranger(from_tunnel(STRANGER, 0x1009, UNKNOWN, LOCAL), "drop UnknownSender")]
    #[case::vni_zero_from_a_kernel_vxlan_peer(
        from_tunnel(H2, 0, ON_H2, LOCAL),
        "output 1; flow; learned 02 at 198.18.1.2"
    )]
    #[case::no_ethernet(vec![KeyAttr::InPort(BRIDGE)], "drop Unparsed")]
    #[case::unknown_port(vec![KeyAttr::InPort(7), KeyAttr::Ethernet { src: LOCAL, dst: ON_H2 }], "drop Unparsed")]
    fn misses_are_decided_by_port_vni_and_mac(#[case] key: Vec<KeyAttr>, #[case] want: &str) {
        assert_eq!(render(&decide(&tables(), &key)), want);
    }

    #[test]
    fn with_no_peer_on_the_fast_path_floods_go_nowhere() {
        let mut t = tables();
        t.peers.values_mut().for_each(|p| p.fast = false);
        assert_eq!(render(&decide(&t, &from_bridge(BROADCAST))), "drop NoPeer");
    }

    #[test]
    fn a_learned_mac_is_reached_once_its_peer_is_known_and_announced_macs_win() {
        let mut t = tables();
        t.learned.insert(UNKNOWN, H2);
        assert_eq!(
            render(&decide(&t, &from_bridge(UNKNOWN))),
            "tunnel 0x2001 to 198.18.1.2, output 2; flow"
        );
        t.learned.insert(ON_H3, H2);
        assert_eq!(render(&decide(&t, &from_bridge(ON_H3))), "drop OnSleeve");
    }

    #[test]
    fn a_late_removal_of_an_old_connection_leaves_a_reconnect_alone() {
        let mut t = tables();
        // h2 reconnects (new uid 77) before the old connection's removal runs.
        assert!(t.register(H2, 2, true, 77));
        assert!(
            !t.peers[&H2].fast,
            "a new incarnation starts off the fast path"
        );
        assert!(!t.forget(H2, 2), "the old incarnation's removal is ignored");
        assert!(t.peers.contains_key(&H2));
        assert_eq!(t.owner(&ON_H2), Some(H2));
        // Its own removal goes through, with its MACs.
        assert!(t.forget(H2, 77));
        assert!(!t.peers.contains_key(&H2));
        assert_eq!(t.owner(&ON_H2), None);
    }

    #[test]
    fn a_peer_with_a_new_short_id_is_sent_the_new_pair_vni() {
        let mut t = tables();
        assert!(
            !t.register(H2, 2, true, 2),
            "same registration: nothing changes"
        );
        assert!(t.register(H2, 5, true, 2));
        if let Some(p) = t.peers.get_mut(&H2) {
            p.fast = true;
        }
        assert_eq!(
            render(&decide(&t, &from_bridge(ON_H2))),
            "tunnel 0x5001 to 198.18.1.2, output 2; flow"
        );
    }

    #[test]
    fn a_kernel_vxlan_peer_gets_vni_zero() {
        let mut t = tables();
        if let Some(p) = t.peers.get_mut(&H2) {
            p.pair_vni = false;
        }
        assert_eq!(
            render(&decide(&t, &from_bridge(ON_H2))),
            "tunnel 0x0 to 198.18.1.2, output 2; flow"
        );
    }

    #[test]
    fn flows_match_both_macs_and_the_tunnel_sender() {
        let Decision::Forward {
            flow: Some((key, mask)),
            ..
        } = decide(&tables(), &from_tunnel(H2, 0x1002, ON_H2, LOCAL))
        else {
            panic!("a flow");
        };
        insta::assert_snapshot!(format!("key:  {key:?}\nmask: {mask:?}"));
        let (hk, _) = heartbeat_flow(VXLAN);
        assert!(is_heartbeat_flow(&hk));
        assert!(!is_heartbeat_flow(&key));
    }

    #[rstest]
    #[case::egress_to_an_announced_mac(from_bridge(ON_H2), Some(H2))]
    #[case::egress_to_an_unknown_mac(from_bridge(UNKNOWN), None)]
    #[case::ingress_from_its_sender(from_tunnel(H3, 0x301, ON_H3, LOCAL), Some(H3))]
    fn a_flow_belongs_to_the_peer_it_carries_frames_to_or_from(
        #[case] key: Vec<KeyAttr>,
        #[case] peer: Option<Ipv4Addr>,
    ) {
        let id = flow_id(&key).unwrap_or_else(|| panic!("no flow id for {key:?}"));
        assert_eq!(peer_of_flow(&tables(), &id), peer);
    }
}
