//! Kernel adapter of the Open vSwitch tier: one kernel datapath per host, joined to the overlay
//! bridge by a veth pair (the bridge end is the fast path's bridge port, the other end a
//! netdev vport) and to the other hosts by a vxlan vport on UDP 6784; the thread that answers
//! its misses; and the sweep that removes idle flows.
//!
//! ```text
//!  containers ─ ovl0 (bridge) ─ ovldpbr ═ ovldpin ─┐
//!                   └─ ovltap (sleeve)             ├─ datapath ovldp ─ ovldpvx (vxlan, 6784)
//!                                                  └─ port 0 "ovldp": heartbeats
//! ```
//!
//! **One upcall thread per datapath**, not one per CPU: misses are the first frame of each
//! flow only (established traffic never leaves the kernel), and a lab runs a hundred routers
//! on two cores, where a thread per CPU per router would be hundreds of idle threads for no
//! gain. One reader also keeps MAC learning in arrival order without locking across threads.
//!
//! Decisions are [`super::ovs_flows::decide`]'s; this file only carries them out and counts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::ovs_flows::{self, decide, Decision, FlowId, Tables};
use super::steer::BridgeSteer;
use super::vxlan_dev::FLOOD;
use crate::netdev::Netdev;
use crate::odp::flow::{Action, KeyAttr, PacketCmd};
use crate::odp::{Datapath, OdpClient, OdpError, UpcallSocket};

/// Name of the datapath (and of its own port's device, where heartbeats arrive).
pub const DATAPATH: &str = "ovldp";
/// The veth end on the overlay bridge.
pub const BRIDGE_VETH: &str = "ovldpbr";
/// The veth end in the datapath (a netdev vport).
pub const DATAPATH_VETH: &str = "ovldpin";
/// The vxlan vport.
pub const VXLAN_VPORT: &str = "ovldpvx";
/// How long a flow may stay unused before it is removed, unless set otherwise.
pub const DEFAULT_FLOW_IDLE: Duration = Duration::from_secs(10);

/// Counters of the datapath, as status shows them.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct OvsStats {
    /// Misses handed up by the kernel.
    pub upcalls: u64,
    /// Missed frames sent on by the router.
    pub executed: u64,
    /// Of those, the ones no flow is made for (broadcast, multicast, unknown unicast): they
    /// come up every time. `upcalls - group - dropped` are the unicast misses.
    pub group: u64,
    /// Flows installed.
    pub flows_installed: u64,
    /// Flows removed after being idle.
    pub flows_expired: u64,
    /// Flows in the datapath now (besides the heartbeat flow).
    pub flows: u64,
    /// Times every flow was removed (a peer's datapath, address or MAC changed).
    pub flushes: u64,
    /// MACs seen arriving from another peer than before.
    pub macs_moved: u64,
    /// Misses dropped, by reason.
    pub dropped: HashMap<String, u64>,
    /// Requests to the kernel that failed.
    pub errors: u64,
    /// Idle time after which flows are removed, milliseconds.
    pub flow_idle_ms: u64,
}

struct Counters {
    upcalls: AtomicU64,
    executed: AtomicU64,
    group: AtomicU64,
    flows_installed: AtomicU64,
    flows_expired: AtomicU64,
    flushes: AtomicU64,
    macs_moved: AtomicU64,
    errors: AtomicU64,
    dropped: Mutex<HashMap<String, u64>>,
}

/// What the datapath holds besides the kernel objects: the decision tables and the flows
/// installed (with the key they were installed with, and when).
struct State {
    tables: Tables,
    flows: HashMap<FlowId, (Vec<KeyAttr>, u64)>,
    /// Bumped by every flush: a flow decided before a flush is not kept after it.
    generation: u64,
    /// When a frame was last flooded to the fast peers (floods never become flows).
    last_flood: Option<Instant>,
}

struct Inner {
    netdev: Netdev,
    client: Mutex<OdpClient>,
    dp: Datapath,
    steer: BridgeSteer,
    state: Mutex<State>,
    counters: Counters,
    idle: Duration,
    stop: AtomicBool,
}

/// The Open vSwitch datapath of one router.
#[derive(Clone)]
pub struct OvsDevice {
    inner: Arc<Inner>,
    /// Interface index of the datapath's own port, where heartbeats arrive.
    pub heartbeat_index: u32,
    /// The bridge entries steering remote MACs to the datapath or to sleeve's TAP.
    pub steer: BridgeSteer,
}

impl std::fmt::Debug for OvsDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OvsDevice")
            .field("datapath", &self.inner.dp.name)
            .finish_non_exhaustive()
    }
}

/// Milliseconds of the monotonic clock, the clock the kernel stamps a flow's last use with.
fn monotonic_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// Why the datapath could not be made, in words for status and the log.
pub fn unavailable_reason(step: &str, e: &OdpError) -> String {
    match (e, e.errno()) {
        (OdpError::FamilyMissing { .. }, _) => "openvswitch module missing".to_string(),
        (_, Some(libc::EADDRINUSE)) => {
            format!("{step}: the UDP port is already in use by another socket on this host")
        }
        (_, Some(libc::EAFNOSUPPORT | libc::EOPNOTSUPP | libc::ENOENT | libc::ENODEV))
            if step.contains("vxlan") =>
        {
            "the openvswitch module has no vxlan vports (module vport-vxlan missing)".to_string()
        }
        (_, Some(libc::EPERM | libc::EACCES)) => {
            format!("{step}: no permission (CAP_NET_ADMIN needed)")
        }
        _ => format!("{step}: {e}"),
    }
}

/// Where the datapath joins the host and how it behaves.
#[derive(Debug, Clone, Copy)]
pub struct OvsSettings {
    /// The overlay bridge (interface index).
    pub bridge: u32,
    /// Sleeve's TAP on it (interface index).
    pub tap: u32,
    /// UDP port of the vxlan vport.
    pub port: u16,
    /// The overlay MTU (the veth and the datapath's own port get it).
    pub mtu: u32,
    /// This router's short id (pair VNIs carry it).
    pub me: u16,
    /// Flows unused this long are removed.
    pub idle: Duration,
}

impl OvsDevice {
    /// Creates the datapath (replacing one of the same name a killed router left, and a kernel
    /// vxlan device that would hold the port), its veth to the bridge, its vxlan vport, the
    /// heartbeat flow and the upcall thread. On any failure nothing is left behind and the
    /// reason says why.
    pub async fn create(netdev: &Netdev, s: OvsSettings) -> Result<Self, String> {
        let mut client =
            OdpClient::connect().map_err(|e| unavailable_reason("open the datapath", &e))?;
        if client.get_datapath(DATAPATH).is_ok() {
            tracing::info!("replacing the datapath {DATAPATH} a previous run left");
            client
                .delete_datapath(DATAPATH)
                .map_err(|e| unavailable_reason("remove the old datapath", &e))?;
        }
        for old in [BRIDGE_VETH, super::vxlan_dev::DEVICE] {
            if netdev.delete_named(old).await.map_err(|e| e.to_string())? {
                tracing::info!("removed {old}, which a previous run left");
            }
        }
        let dp = client
            .create_datapath(DATAPATH)
            .map_err(|e| unavailable_reason("create the datapath", &e))?;
        match Self::finish(netdev, &mut client, dp.clone(), s).await {
            Ok(dev) => Ok(dev),
            Err(why) => {
                let _ = client.delete_datapath(DATAPATH);
                let _ = netdev.delete_named(BRIDGE_VETH).await;
                BridgeSteer::new(netdev, 0, s.tap).release_tap().await;
                Err(why)
            }
        }
    }

    /// Removes a datapath and veth of this tier that an earlier run left (it would hold the
    /// vxlan port the kernel vxlan tier needs), where this run does not make its own. Best
    /// effort: where the module is missing there is nothing to remove.
    pub async fn remove_leftovers(netdev: &Netdev) {
        if let Ok(mut client) = OdpClient::connect() {
            if client.get_datapath(DATAPATH).is_ok() {
                tracing::info!("removing the datapath {DATAPATH} a previous run left");
                let _ = client.delete_datapath(DATAPATH);
            }
        }
        let _ = netdev.delete_named(BRIDGE_VETH).await;
    }

    async fn finish(
        netdev: &Netdev,
        client: &mut OdpClient,
        dp: Datapath,
        s: OvsSettings,
    ) -> Result<Self, String> {
        let OvsSettings {
            bridge,
            tap,
            port,
            mtu,
            me,
            idle,
        } = s;
        let here = crate::netdev::open_netns(Path::new("/proc/thread-self/ns/net"))
            .map_err(|e| e.to_string())?;
        netdev
            .add_veth(BRIDGE_VETH, DATAPATH_VETH, mtu, &here)
            .await
            .map_err(|e| e.to_string())?;
        let link = |name: &'static str| async move {
            match netdev.link(name).await {
                Ok(Some(l)) => Ok(l.index),
                _ => Err(format!("{name} vanished after creation")),
            }
        };
        let (br_end, dp_end) = (link(BRIDGE_VETH).await?, link(DATAPATH_VETH).await?);
        let own = u32::try_from(dp.ifindex).map_err(|_| "the datapath has no port".to_string())?;
        // The datapath's own port carries full-size heartbeats: it needs the overlay MTU too.
        for (index, name, master) in [
            (br_end, BRIDGE_VETH, Some(bridge)),
            (dp_end, DATAPATH_VETH, None),
            (own, DATAPATH, None),
        ] {
            netdev
                .set(index, name, true, master, Some(mtu))
                .await
                .map_err(|e| e.to_string())?;
        }
        let bridge_vport = client
            .add_vport_netdev(&dp, DATAPATH_VETH)
            .map_err(|e| unavailable_reason("add the bridge vport", &e))?;
        let vxlan_vport = client
            .add_vport_vxlan(&dp, VXLAN_VPORT, port)
            .map_err(|e| unavailable_reason(&format!("add the vxlan vport on UDP {port}"), &e))?;
        let upcalls =
            UpcallSocket::open().map_err(|e| unavailable_reason("open the upcall socket", &e))?;
        for p in [bridge_vport.port_no, vxlan_vport.port_no] {
            client
                .set_vport_upcall_pid(&dp, p, upcalls.portid())
                .map_err(|e| unavailable_reason("point misses at the router", &e))?;
        }
        match client.set_upcall_pid_all_cpus(&dp, upcalls.portid()) {
            Ok(()) => {}
            // An older kernel: per-vport pids alone, which no tool can switch away from there.
            Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => {}
            Err(e) => return Err(unavailable_reason("point misses at the router", &e)),
        }
        let (key, mask) = ovs_flows::heartbeat_flow(vxlan_vport.port_no);
        client
            .new_flow(&dp, key, mask, vec![Action::Output(0)])
            .map_err(|e| unavailable_reason("install the heartbeat flow", &e))?;
        let steer = BridgeSteer::new(netdev, br_end, tap);
        steer.isolate(BRIDGE_VETH).await?;
        let inner = Arc::new(Inner {
            netdev: netdev.clone(),
            client: Mutex::new(OdpClient::connect().map_err(|e| e.to_string())?),
            dp,
            steer: steer.clone(),
            state: Mutex::new(State {
                tables: Tables {
                    me,
                    bridge_port: bridge_vport.port_no,
                    vxlan_port: vxlan_vport.port_no,
                    ..Tables::default()
                },
                flows: HashMap::new(),
                generation: 0,
                last_flood: None,
            }),
            counters: Counters {
                upcalls: AtomicU64::new(0),
                executed: AtomicU64::new(0),
                group: AtomicU64::new(0),
                flows_installed: AtomicU64::new(0),
                flows_expired: AtomicU64::new(0),
                flushes: AtomicU64::new(0),
                macs_moved: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                dropped: Mutex::new(HashMap::new()),
            },
            idle,
            stop: AtomicBool::new(false),
        });
        let i = inner.clone();
        std::thread::Builder::new()
            .name("odp-upcalls".into())
            .spawn(move || upcall_loop(&i, upcalls))
            .map_err(|e| format!("cannot start the upcall thread: {e}"))?;
        Ok(OvsDevice {
            inner,
            heartbeat_index: own,
            steer,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection came up (or the peer's short id changed): frames from and to `ip` are
    /// known by its short id; `uid` names the peer's incarnation.
    pub fn register_peer(&self, ip: IpAddr, short_id: u16, pair_vni: bool, uid: u64) {
        let IpAddr::V4(ip) = ip else { return };
        let changed = self.state().tables.register(ip, short_id, pair_vni, uid);
        if changed {
            self.flush();
        }
    }

    /// The connection of incarnation `uid` to `ip` went away: its MACs are forgotten and its
    /// flows removed. A newer connection to the same address registered meanwhile (a quick
    /// reconnect) is left alone.
    pub fn forget_peer(&self, ip: IpAddr, uid: u64) {
        let IpAddr::V4(ip) = ip else { return };
        let forgotten = self.state().tables.forget(ip, uid);
        if forgotten {
            self.flush();
        }
    }

    /// Our short id changed (it clashed with a peer's).
    pub fn set_short_id(&self, me: u16) {
        let changed = std::mem::replace(&mut self.state().tables.me, me) != me;
        if changed {
            self.flush();
        }
    }

    /// Sends frames for `mac` (or, for [`FLOOD`], broadcasts and unknown unicast) to `ip`.
    pub fn add_remote(&self, mac: [u8; 6], ip: IpAddr) {
        let IpAddr::V4(ip) = ip else { return };
        let moved = {
            let mut st = self.state();
            if mac == FLOOD {
                if let Some(p) = st.tables.peers.get_mut(&ip) {
                    p.fast = true;
                }
                false
            } else {
                st.tables
                    .announced
                    .insert(mac, ip)
                    .is_some_and(|old| old != ip)
            }
        };
        if moved {
            self.flush();
        }
    }

    /// Stops sending frames for `mac` (or floods) to `ip`; the flows made for it go.
    pub fn remove_remote(&self, mac: [u8; 6], ip: IpAddr) {
        let IpAddr::V4(ip) = ip else { return };
        {
            let mut st = self.state();
            if mac == FLOOD {
                if let Some(p) = st.tables.peers.get_mut(&ip) {
                    p.fast = false;
                }
            } else if st.tables.announced.get(&mac) == Some(&ip) {
                st.tables.announced.remove(&mac);
            }
        }
        self.flush();
    }

    /// How long ago frames crossed each peer's connection: now for a peer with flows toward
    /// or from it (flows go once unused for the idle time), else the last flood to the fast
    /// peers (a conversation over a broken path may never get past its ARP broadcast).
    pub fn peer_use(&self) -> HashMap<IpAddr, Duration> {
        let st = self.state();
        let mut used = HashMap::new();
        if let Some(t) = st.last_flood {
            for (ip, p) in &st.tables.peers {
                if p.fast {
                    used.insert(IpAddr::V4(*ip), t.elapsed());
                }
            }
        }
        for id in st.flows.keys() {
            if let Some(ip) = ovs_flows::peer_of_flow(&st.tables, id) {
                used.insert(IpAddr::V4(ip), Duration::ZERO);
            }
        }
        used
    }

    /// Removes every flow but the heartbeat flow.
    pub fn flush(&self) {
        flush(&self.inner);
    }

    /// The datapath's counters.
    pub fn stats(&self) -> OvsStats {
        let c = &self.inner.counters;
        OvsStats {
            upcalls: c.upcalls.load(Relaxed),
            executed: c.executed.load(Relaxed),
            group: c.group.load(Relaxed),
            flows_installed: c.flows_installed.load(Relaxed),
            flows_expired: c.flows_expired.load(Relaxed),
            flows: self.state().flows.len() as u64,
            flushes: c.flushes.load(Relaxed),
            macs_moved: c.macs_moved.load(Relaxed),
            dropped: c.dropped.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            errors: c.errors.load(Relaxed),
            flow_idle_ms: self.inner.idle.as_millis() as u64,
        }
    }

    /// Removes the datapath (its vports and flows go with it) and the veth, gives the TAP back
    /// its default flags and stops the upcall thread.
    pub async fn remove(&self) {
        self.inner.stop.store(true, Relaxed);
        let _ = lock_client(&self.inner).delete_datapath(DATAPATH);
        let _ = self.inner.netdev.delete_named(BRIDGE_VETH).await;
        self.inner.steer.release_tap().await;
    }
}

fn lock_client(inner: &Inner) -> std::sync::MutexGuard<'_, OdpClient> {
    inner.client.lock().unwrap_or_else(|e| e.into_inner())
}

fn failed(inner: &Inner, what: &str, e: &OdpError) {
    inner.counters.errors.fetch_add(1, Relaxed);
    tracing::warn!("odp datapath: {what}: {e}");
}

fn flush(inner: &Inner) {
    let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
    st.generation += 1;
    if st.flows.is_empty() {
        return;
    }
    // Flow by flow (not OVS_FLOW_CMD_DEL without a key) so the heartbeat flow stays. A flow
    // whose removal failed stays tracked, so a later flush or sweep tries again.
    let mut client = lock_client(inner);
    let tracked = std::mem::take(&mut st.flows);
    for (id, (key, at)) in tracked {
        match client.delete_flow(&inner.dp, key.clone()) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::ENOENT) => {}
            Err(e) => {
                failed(inner, "remove a flow", &e);
                st.flows.insert(id, (key, at));
            }
        }
    }
    inner.counters.flushes.fetch_add(1, Relaxed);
}

/// Answers misses until stopped; sweeps idle flows every half idle time while there are any.
fn upcall_loop(inner: &Inner, mut upcalls: UpcallSocket) {
    let sweep_every = (inner.idle / 2).max(Duration::from_millis(100));
    let mut next_sweep = Instant::now() + sweep_every;
    while !inner.stop.load(Relaxed) {
        let any_flows = !inner
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flows
            .is_empty();
        // Asleep on the socket; woken by a miss, for a sweep due, or to notice a stop.
        let wait = if any_flows {
            next_sweep.saturating_duration_since(Instant::now())
        } else {
            Duration::from_secs(2)
        };
        match upcalls.recv(wait.max(Duration::from_millis(1))) {
            Ok(Some(m)) if m.cmd == PacketCmd::Miss => handle_miss(inner, &m),
            Ok(_) => {}
            // The socket overflowed (a burst of misses): those are lost, the kernel counts
            // them; read on at once.
            Err(crate::odp::OdpError::Io { source, .. })
                if source.raw_os_error() == Some(libc::ENOBUFS) =>
            {
                inner.counters.errors.fetch_add(1, Relaxed);
            }
            Err(e) => {
                failed(inner, "receive an upcall", &e);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if Instant::now() >= next_sweep {
            if any_flows {
                sweep(inner);
            }
            next_sweep = Instant::now() + sweep_every;
        }
    }
}

fn handle_miss(inner: &Inner, miss: &crate::odp::flow::PacketMessage) {
    let c = &inner.counters;
    c.upcalls.fetch_add(1, Relaxed);
    let Some(frame) = miss.packet() else {
        return;
    };
    let key = miss.key();
    let (decision, mut decided_in) = {
        let st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
        (decide(&st.tables, key), st.generation)
    };
    let (actions, flow, learned) = match decision {
        Decision::Drop(why) => {
            let why = serde_json::to_value(why)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            *c.dropped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(why)
                .or_default() += 1;
            return;
        }
        Decision::Forward {
            actions,
            flow,
            learned,
        } => (actions, flow, learned),
    };
    if let Some((mac, ip)) = learned {
        let moved = {
            let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            st.tables
                .learned
                .insert(mac, ip)
                .is_some_and(|old| old != ip)
        };
        if moved {
            c.macs_moved.fetch_add(1, Relaxed);
            tracing::info!("MAC {mac:02x?} moved to {ip}: flows flushed");
            flush(inner);
            // This flush is ours: the decision was made with the MAC's new place.
            decided_in = inner
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .generation;
        }
    }
    // The client is locked for each request alone: `flush` and `sweep` take the state first.
    let executed = lock_client(inner).execute(&inner.dp, frame, key.to_vec(), actions.clone());
    match executed {
        Ok(()) => {
            c.executed.fetch_add(1, Relaxed);
        }
        Err(e) => failed(inner, "execute a missed frame", &e),
    }
    let Some((key, mask)) = flow else {
        c.group.fetch_add(1, Relaxed);
        inner
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_flood = Some(Instant::now());
        return;
    };
    let Some(id) = ovs_flows::flow_id(&key) else {
        return;
    };
    // A flush after the decision (a peer moved, changed its short id or went away) means the
    // decision may be stale: the flow is not kept.
    let installed = lock_client(inner).new_flow(&inner.dp, key.clone(), mask, actions);
    match installed {
        Ok(()) => {
            c.flows_installed.fetch_add(1, Relaxed);
            let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.generation == decided_in {
                st.flows.insert(id, (key, monotonic_ms()));
            } else if let Err(e) = lock_client(inner).delete_flow(&inner.dp, key) {
                if e.errno() != Some(libc::ENOENT) {
                    failed(inner, "remove a stale flow", &e);
                }
            }
        }
        // Two misses of one flow raced: the first installed it.
        Err(e) if e.errno() == Some(libc::EEXIST) => {}
        Err(e) => failed(inner, "install a flow", &e),
    }
}

/// Removes the flows unused for the idle time (by the kernel's last-use stamp, or since they
/// were installed when never used).
fn sweep(inner: &Inner) {
    let flows = match lock_client(inner).dump_flows(&inner.dp) {
        Ok(f) => f,
        Err(e) => return failed(inner, "list the flows", &e),
    };
    let now = monotonic_ms();
    let idle = inner.idle.as_millis() as u64;
    let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
    let mut client = lock_client(inner);
    let mut listed = std::collections::HashSet::new();
    for f in flows {
        let Some(id) = ovs_flows::flow_id(&f.key) else {
            continue;
        };
        listed.insert(id);
        let Some((key, installed)) = st.flows.get(&id) else {
            continue;
        };
        let last = f.used_ms.unwrap_or(0).max(*installed);
        if now.saturating_sub(last) < idle {
            continue;
        }
        match client.delete_flow(&inner.dp, key.clone()) {
            Ok(()) => {
                inner.counters.flows_expired.fetch_add(1, Relaxed);
            }
            Err(e) if e.errno() == Some(libc::ENOENT) => {}
            // Still in the kernel: kept tracked, tried again at the next sweep.
            Err(e) => {
                failed(inner, "remove an idle flow", &e);
                continue;
            }
        }
        st.flows.remove(&id);
    }
    // Flows the kernel no longer lists (removed from outside) are forgotten too.
    st.flows.retain(|id, _| listed.contains(id));
}
