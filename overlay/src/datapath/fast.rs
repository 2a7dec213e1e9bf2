//! The kernel fast path (a vxlan device, or the Open vSwitch datapath with a vxlan vport:
//! [`super::kernel::FastKernel`]) carries container frames between hosts without the router
//! touching them; the router only decides, per connection, whether a peer is reached through
//! it or through sleeve, and keeps the kernel's tables in step with that decision.
//!
//! - **Heartbeats** cross the fast path itself: every [`Timing::interval`] the router sends
//!   each peer two vxlan packets to UDP 6784 with DF set, a small one and one padded to the
//!   overlay MTU. Inside is an Ethernet frame of type [`heartbeat::HEARTBEAT_ETHERTYPE`] to a
//!   link-local group address (the bridge never forwards those); the peer's kernel decapsulates
//!   it, the peer's router reads it from its vxlan device and acknowledges it over the control
//!   connection. What crossed decides: [`super::select::Selector`].
//!   On the Open vSwitch tier a fixed flow hands heartbeats to the datapath's own port, read
//!   the same way; their VNI is the one data uses toward that peer, so a peer on the kernel
//!   vxlan tier (which takes VNI 0 only) drops them exactly as it would drop the frames. Pair
//!   VNIs follow short-id changes of either side (gossip tells the router).
//! - **Tables**: per peer on the fast path, an all-zero FDB entry (one copy of each broadcast
//!   and unknown unicast) and an entry per announced MAC (on the vxlan device; in the Open
//!   vSwitch tier's tables, where misses are decided), and the bridge's static entry for each
//!   announced MAC pointing at the fast path's bridge port; for a peer on sleeve, the bridge
//!   entries point at sleeve's TAP and sleeve floods to it. [`plan`] computes the requests
//!   from what is installed and what should be, so a change is always the difference.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::kernel::{FastKernel, Tier};
use super::pace::{Pace, Pacer};
use super::select::{Arrivals, Change, Path, Reason, Selector, Timing, View};
use super::sleeve::Sleeve;
use super::sock::{raise_receive_buffer, raise_send_buffer, set_int_opt, wait_readable};
use super::vxlan_dev::FLOOD;
use super::PeerSpec;
use crate::wire::{ethernet, fast_report, heartbeat, vxlan as vxwire};

/// The link-local group address heartbeats are sent to (802.1 "nearest bridge" range: a bridge
/// hands such frames to the port's own stack instead of forwarding them).
pub const HEARTBEAT_DST: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e];
const ETH: usize = 14;

/// What arrives of a peer's fast-path heartbeats changed: the router reports it to that peer,
/// found by uid, over the control connection.
#[derive(Debug, Clone, Copy)]
pub struct FastReport {
    /// The peer's uid (its heartbeats carry it as their connection id).
    pub uid: u64,
    /// The router's id of the control connection the report is about: a report still queued
    /// when that connection is replaced speaks of heartbeats of the old one and is dropped
    /// (it reached the new connection's fresh selector and, saying "only small ones arrive",
    /// pushed it to sleeve).
    pub connection: u64,
    /// The report.
    pub report: fast_report::Repr,
}

/// One request to the kernel (or to sleeve) that [`plan`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sleeve floods to the peer again (it is on sleeve).
    SleeveCarries(String, bool),
    /// Add the peer's all-zero FDB entry.
    AddFlood(IpAddr),
    /// Remove it.
    DelFlood(IpAddr),
    /// Send frames for a MAC to the peer through vxlan.
    AddMac([u8; 6], IpAddr),
    /// Stop doing so.
    DelMac([u8; 6], IpAddr),
    /// Point the bridge's entry for a MAC at the vxlan port (`true`) or the TAP.
    Steer([u8; 6], bool),
    /// Remove the bridge's entry for a MAC.
    Unsteer([u8; 6]),
}

/// What the kernel holds (or should hold) for one peer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Installed {
    /// On the fast path.
    pub fast: bool,
    /// The peer's MACs with entries.
    pub macs: BTreeSet<[u8; 6]>,
}

/// The requests that turn `have` into `want` (`None`: the peer is gone) for the peer `name` at
/// `ip`, in an order that never leaves a frame without a way: the new way is opened before the
/// old one is closed.
pub fn plan(name: &str, ip: IpAddr, have: &Installed, want: Option<&Installed>) -> Vec<Op> {
    let mut ops = Vec::new();
    let empty = Installed::default();
    let gone = want.is_none();
    let want = want.unwrap_or(&empty);
    let removed: Vec<[u8; 6]> = have.macs.difference(&want.macs).copied().collect();
    if want.fast && !gone {
        if !have.fast {
            ops.push(Op::AddFlood(ip));
        }
        for m in &want.macs {
            if !have.fast || !have.macs.contains(m) {
                ops.push(Op::AddMac(*m, ip));
                ops.push(Op::Steer(*m, true));
            }
        }
        if !have.fast {
            ops.push(Op::SleeveCarries(name.to_string(), false));
        }
    } else {
        if have.fast && !gone {
            ops.push(Op::SleeveCarries(name.to_string(), true));
        }
        for m in &want.macs {
            if have.fast || !have.macs.contains(m) {
                ops.push(Op::Steer(*m, false));
            }
        }
        if have.fast {
            for m in have.macs.intersection(&want.macs) {
                ops.push(Op::DelMac(*m, ip));
            }
        }
    }
    for m in removed {
        ops.push(Op::Unsteer(m));
        if have.fast {
            ops.push(Op::DelMac(m, ip));
        }
    }
    if have.fast && (!want.fast || gone) {
        ops.push(Op::DelFlood(ip));
    }
    ops
}

/// One connection's fast-path state, as status shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PathStatus {
    /// `odp`, `vxlan` or `sleeve`.
    pub datapath: String,
    /// Seconds on it.
    pub since_s: u64,
    /// Why.
    pub reason: String,
    /// How often heartbeats go: `brisk`, or `idle` once both sides saw the connection healthy
    /// and without frames for an idle interval.
    pub pace: Pace,
    /// The interval of that pace, milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Round trip of a heartbeat to the peer and its report back, microseconds (measured
    /// when the peer reports, i.e. when what arrives changes).
    pub heartbeat_rtt_us: Option<u64>,
    /// Fast-path heartbeat rounds sent to the peer, and heartbeats received from it.
    pub heartbeats_sent: u64,
    /// See `heartbeats_sent`.
    pub heartbeats_received: u64,
    /// Heartbeats the kernel refused to send here (a full socket buffer; EMSGSIZE when the
    /// local path MTU is smaller than the overlay's).
    pub heartbeats_unsent: u64,
    /// Reports received from the peer (what arrives of our heartbeats), and sent to it: one
    /// per change, not per heartbeat.
    pub reports_received: u64,
    /// See `reports_received`.
    pub reports_sent: u64,
    /// MACs the peer announced.
    pub peer_macs: usize,
    /// Times the connection fell back from the fast path to sleeve since it came up.
    pub fallbacks: u64,
}

struct FastPeer {
    ip: IpAddr,
    uid: u64,
    /// The control connection this state belongs to (the router's id for it).
    connection: u64,
    short_id: u16,
    /// The peer runs the Open vSwitch tier (it reads pair VNIs).
    odp: bool,
    selector: Selector,
    /// What arrives of the peer's heartbeats, and what was reported to it.
    arrivals: Arrivals,
    /// How often heartbeats go, as both sides' busy flags make it.
    pacer: Pacer,
    macs: BTreeSet<[u8; 6]>,
    installed: Installed,
    rtt: Option<Duration>,
    sent: u64,
    /// Heartbeats the kernel refused to send (a full buffer, or EMSGSIZE).
    unsent: u64,
    received: u64,
    /// When the last heartbeat from the peer arrived.
    last_heard: Option<Instant>,
    reports_received: u64,
    reports_sent: u64,
    /// Times the connection fell back from the fast path to sleeve.
    fallbacks: u64,
}

impl FastPeer {
    /// Looks at the selector at `now`; a change of datapath is logged and counted and
    /// returned (the caller brings the kernel's tables in line).
    fn evaluate(&mut self, now: Instant, tier: Tier) -> Option<Change> {
        let c = self.selector.evaluate(now)?;
        match c.to {
            Path::Fast => tracing::info!("connection to {}: fast path ({})", self.ip, tier.name()),
            Path::Sleeve => {
                self.fallbacks += 1;
                tracing::warn!(
                    "connection to {}: falling back to sleeve: {}",
                    self.ip,
                    c.reason
                );
            }
        }
        Some(c)
    }
}

/// Fast-path settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// UDP port of vxlan (6784).
    pub port: u16,
    /// Heartbeat timing.
    pub timing: Timing,
    /// The overlay MTU the fast path must carry.
    pub overlay_mtu: u32,
    /// This router's uid (heartbeats carry it).
    pub uid: u64,
    /// This router's short id (pair VNIs carry it).
    pub short_id: u16,
}

struct Inner {
    settings: Settings,
    device: Option<FastKernel>,
    me: AtomicU16,
    unavailable: Option<String>,
    sock: Option<UdpSocket>,
    /// The packet socket heartbeats arrive on. Read by the receiving thread as they come and
    /// by each heartbeat round before it judges arrivals (see [`heartbeat_loop`]).
    receiver: Option<OwnedFd>,
    sleeve: Arc<Sleeve>,
    peers: Mutex<BTreeMap<String, FastPeer>>,
    /// Where reports to peers go (the router sends them over the control connections).
    reports: tokio::sync::mpsc::UnboundedSender<FastReport>,
    base: Instant,
    stop: AtomicBool,
    /// Serializes reconciliation, so two passes never interleave their requests.
    apply: tokio::sync::Mutex<()>,
}

/// The fast path of one router (present even when no kernel tier could be made: then every
/// connection stays on sleeve and says why).
#[derive(Clone)]
pub struct FastPath {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("available", &self.inner.device.is_some())
            .finish_non_exhaustive()
    }
}

fn open_heartbeat_socket() -> std::io::Result<UdpSocket> {
    let sock = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
    // DF on, cached path MTU ignored: only what really crosses is acknowledged.
    set_int_opt(
        &sock,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    )?;
    // A round sends to every peer at once, and a sent heartbeat holds its buffer until the
    // kernel has carried it through the peer's side (veth and vxlan queue it on the way): the
    // default buffer took a few dozen full-size heartbeats, so the rest of a round was refused
    // (EAGAIN), full-size ones first, and peers read it as a path MTU too small.
    raise_send_buffer(&sock, SOCKET_BUFFER);
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// An AF_PACKET socket that receives only heartbeat frames arriving on device `index`. The
/// kernel filters by ethertype, so container traffic never reaches the router.
fn open_receiver(index: u32) -> std::io::Result<OwnedFd> {
    let proto = heartbeat::HEARTBEAT_ETHERTYPE.to_be();
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::c_int::from(proto),
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just opened and own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = index as i32;
    // SAFETY: bind(2) with a sockaddr_ll that lives for the call and its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Room for every peer's heartbeats while this thread waits for a CPU: on a loaded host
    // (a hundred routers coming up on two cores) the default buffer filled, and the kernel
    // dropped the full-size heartbeats first (they are the large ones), so peers read "small
    // ones cross, full ones do not" and fell back with a path MTU that was fine.
    raise_receive_buffer(&fd, SOCKET_BUFFER);
    Ok(fd)
}

/// Send and receive buffers of the heartbeat sockets: a hundred peers' brisk heartbeats (two
/// a round, a jumbo frame each) over the 1.5 s a fallback waits. Memory is taken only while
/// frames wait.
const SOCKET_BUFFER: i32 = 8 << 20;

/// A locally administered unicast MAC for this router's heartbeats.
fn local_mac(uid: u64) -> [u8; 6] {
    let b = uid.to_be_bytes();
    [0x02, b[3], b[4], b[5], b[6], b[7]]
}

impl FastPath {
    /// The fast path over `device`, or (`Err(why)`) a fast path that is not there. Reports of
    /// what arrives of each peer's heartbeats are handed to `reports` when they change.
    pub fn start(
        settings: Settings,
        device: Result<FastKernel, String>,
        sleeve: Arc<Sleeve>,
        reports: tokio::sync::mpsc::UnboundedSender<FastReport>,
    ) -> Self {
        let (device, mut unavailable) = match device {
            Ok(d) => (Some(d), None),
            Err(why) => (None, Some(why)),
        };
        let mut sock = None;
        let mut receiver = None;
        if let Some(d) = &device {
            match (open_heartbeat_socket(), open_receiver(d.heartbeat_index())) {
                (Ok(s), Ok(r)) => {
                    sock = Some(s);
                    receiver = Some(r);
                }
                (Err(e), _) | (_, Err(e)) => {
                    unavailable = Some(format!("cannot open the heartbeat sockets: {e}"));
                }
            }
        }
        let device = if unavailable.is_some() {
            // Made but unusable: what it made in the kernel goes now, not at exit.
            if let Some(d) = device {
                spawn_quiet(async move { d.remove().await });
            }
            None
        } else {
            device
        };
        let inner = Arc::new(Inner {
            settings,
            device,
            me: AtomicU16::new(settings.short_id),
            unavailable,
            sock,
            receiver,
            sleeve,
            peers: Mutex::new(BTreeMap::new()),
            reports,
            base: Instant::now(),
            stop: AtomicBool::new(false),
            apply: tokio::sync::Mutex::new(()),
        });
        if inner.receiver.is_some() {
            let i = inner.clone();
            let spawned = std::thread::Builder::new()
                .name("vxlan-heartbeats".into())
                .spawn(move || receive_loop(&i));
            if let Err(e) = spawned {
                tracing::warn!("cannot start the heartbeat receiver: {e}");
            }
        }
        if inner.device.is_some() {
            let i = inner.clone();
            let main = tokio::runtime::Handle::try_current().ok();
            let spawned = std::thread::Builder::new()
                .name("vxlan-heartbeat-tx".into())
                .spawn(move || send_heartbeats(i, main));
            if let Err(e) = spawned {
                tracing::warn!("cannot start the heartbeat sender: {e}");
            }
        }
        FastPath { inner }
    }

    /// Whether the device exists; `Err` says why not.
    pub fn availability(&self) -> Result<(), String> {
        match &self.inner.unavailable {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    /// The kernel tier in use ([`Tier::Sleeve`] when there is none).
    pub fn tier(&self) -> Tier {
        self.inner
            .device
            .as_ref()
            .map_or(Tier::Sleeve, FastKernel::tier)
    }

    /// The kernel tier itself.
    pub fn kernel(&self) -> Option<&FastKernel> {
        self.inner.device.as_ref()
    }

    /// The peer `name`'s short id changed (it clashed with another's): pair VNIs follow.
    pub fn set_peer_short_id(&self, name: &str, short_id: u16) {
        let registered = {
            let mut peers = self.lock();
            let Some(p) = peers.get_mut(name) else { return };
            if p.short_id == short_id {
                return;
            }
            p.short_id = short_id;
            (p.ip, p.odp, p.uid)
        };
        if let Some(k) = &self.inner.device {
            let (ip, odp, uid) = registered;
            k.register_peer(ip, short_id, odp, uid);
        }
    }

    /// Our short id changed (it clashed with a peer's): pair VNIs follow.
    pub fn set_short_id(&self, me: u16) {
        self.inner.me.store(me, Relaxed);
        if let Some(FastKernel::Odp(d)) = &self.inner.device {
            d.set_short_id(me);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, FastPeer>> {
        self.inner.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection came up.
    pub fn add_peer(&self, spec: &PeerSpec) {
        let now = Instant::now();
        let s = &self.inner.settings;
        let selector = match (&self.inner.unavailable, spec.keys.is_some(), spec.fast_path) {
            (Some(why), _, _) => Selector::unavailable(
                now,
                s.timing,
                s.overlay_mtu,
                Reason::LocalUnavailable(why.clone()),
            ),
            (None, true, _) => Selector::unavailable(
                now,
                s.timing,
                s.overlay_mtu,
                Reason::LocalUnavailable(
                    "the overlay is encrypted and the kernel fast path would carry frames in \
                     clear"
                        .into(),
                ),
            ),
            (None, false, false) => {
                Selector::unavailable(now, s.timing, s.overlay_mtu, Reason::PeerUnavailable)
            }
            (None, false, true) => Selector::new(now, s.timing, s.overlay_mtu),
        };
        let mut peers = self.lock();
        let macs = peers
            .get(&spec.name)
            .map(|p| p.macs.clone())
            .unwrap_or_default();
        let installed = peers
            .remove(&spec.name)
            .map(|p| p.installed)
            .unwrap_or_default();
        peers.insert(
            spec.name.clone(),
            FastPeer {
                ip: spec.ip,
                uid: spec.uid,
                connection: spec.connection_id,
                short_id: spec.short_id,
                odp: spec.odp,
                selector,
                arrivals: Arrivals::default(),
                pacer: Pacer::new(s.timing),
                macs,
                installed,
                rtt: None,
                sent: 0,
                unsent: 0,
                received: 0,
                last_heard: None,
                reports_received: 0,
                reports_sent: 0,
                fallbacks: 0,
            },
        );
        drop(peers);
        if let Some(k) = &self.inner.device {
            k.register_peer(spec.ip, spec.short_id, spec.odp, spec.uid);
        }
        self.reconcile_soon();
    }

    /// A connection went away: its entries are removed.
    pub fn remove_peer(&self, name: &str) {
        let gone = self.lock().remove(name);
        if let (Some(p), Some(dev)) = (gone, self.inner.device.clone()) {
            let mut ops = plan(name, p.ip, &p.installed, None);
            // The Open vSwitch tier's tables are per peer incarnation: `forget_peer` clears
            // this one's, and leaves a quick reconnect's (registered meanwhile) alone, which
            // the per-address table requests would not.
            if matches!(dev, FastKernel::Odp(_)) {
                ops.retain(|op| {
                    matches!(op, Op::Steer(..) | Op::Unsteer(_) | Op::SleeveCarries(..))
                });
            }
            let inner = self.inner.clone();
            spawn_quiet(async move {
                let _guard = inner.apply.lock().await;
                run_ops(&inner, &dev, &ops).await;
                dev.forget_peer(p.ip, p.uid);
            });
        }
    }

    /// The peer `name` announced the MACs of its containers.
    pub fn set_peer_macs(&self, name: &str, macs: Vec<[u8; 6]>) {
        let mut peers = self.lock();
        if let Some(p) = peers.get_mut(name) {
            p.macs = macs.into_iter().collect();
        }
        drop(peers);
        self.reconcile_soon();
    }

    /// The peer reported what arrives of our fast-path heartbeats.
    pub fn report(&self, name: &str, report: &fast_report::Repr) {
        let now = Instant::now();
        let changed = {
            let mut peers = self.lock();
            let Some(p) = peers.get_mut(name) else {
                return;
            };
            p.reports_received += 1;
            let old = p.pacer.window();
            p.pacer.on_peer(report.busy);
            repaced(p, now, old);
            if report.timestamp_ns != 0 {
                let sent = self.inner.base + Duration::from_nanos(report.timestamp_ns);
                p.rtt = Some(now.saturating_duration_since(sent));
            }
            p.selector.on_report(
                now,
                View {
                    small: report.small,
                    full: report.full,
                },
            );
            p.evaluate(now, self.tier()).is_some()
        };
        if changed {
            self.reconcile_soon();
        }
    }

    /// Whether the connection to `name` is on the fast path and the peer's heartbeats arrived
    /// within `within` (or the longer window of an idle pace): both routers are alive and see
    /// each other, so the control connection needs no keepalives of its own.
    pub fn alive(&self, name: &str, within: Duration) -> bool {
        self.lock().get(name).is_some_and(|p| {
            let within = within.max(p.pacer.window());
            p.selector.path() == Path::Fast && p.last_heard.is_some_and(|t| t.elapsed() < within)
        })
    }

    /// One connection's fast-path state.
    pub fn peer_path(&self, name: &str) -> Option<PathStatus> {
        let peers = self.lock();
        let p = peers.get(name)?;
        Some(PathStatus {
            datapath: match p.selector.path() {
                Path::Fast => self.tier().name().into(),
                Path::Sleeve => "sleeve".into(),
            },
            since_s: p.selector.since().elapsed().as_secs(),
            reason: p.selector.reason().to_string(),
            pace: p.pacer.pace(),
            heartbeat_interval_ms: p.pacer.interval().as_millis() as u64,
            heartbeat_rtt_us: p.rtt.map(|d| d.as_micros() as u64),
            heartbeats_sent: p.sent,
            heartbeats_received: p.received,
            heartbeats_unsent: p.unsent,
            reports_received: p.reports_received,
            reports_sent: p.reports_sent,
            fallbacks: p.fallbacks,
            peer_macs: p.macs.len(),
        })
    }

    fn reconcile_soon(&self) {
        let inner = self.inner.clone();
        spawn_quiet(async move { reconcile(&inner).await });
    }

    /// Removes what the kernel tier made (the vxlan device and its FDB; or the datapath, its
    /// vports and flows) and stops the threads.
    pub async fn shutdown(&self) {
        self.inner.stop.store(true, Relaxed);
        if let Some(dev) = &self.inner.device {
            dev.remove().await;
        }
    }
}

/// Spawns on the current runtime when there is one (unit tests without a runtime skip it).
fn spawn_quiet<F: std::future::Future<Output = ()> + Send + 'static>(f: F) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(f);
    }
}

/// Brings the kernel's tables in line with every connection's selected datapath and MACs.
async fn reconcile(inner: &Arc<Inner>) {
    let Some(dev) = inner.device.clone() else {
        return;
    };
    let _guard = inner.apply.lock().await;
    let work: Vec<(String, IpAddr, Installed, Installed)> = {
        let peers = inner.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers
            .iter()
            .map(|(name, p)| {
                let want = Installed {
                    fast: p.selector.path() == Path::Fast,
                    macs: p.macs.clone(),
                };
                (name.clone(), p.ip, p.installed.clone(), want)
            })
            .filter(|(_, _, have, want)| have != want)
            .collect()
    };
    for (name, ip, have, want) in work {
        let ops = plan(&name, ip, &have, Some(&want));
        run_ops(inner, &dev, &ops).await;
        let mut peers = inner.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = peers.get_mut(&name) {
            if p.ip == ip {
                p.installed = want;
            }
        }
    }
}

async fn run_ops(inner: &Inner, dev: &FastKernel, ops: &[Op]) {
    for op in ops {
        let r = match op {
            Op::SleeveCarries(name, on) => {
                inner.sleeve.set_flooded(name, *on);
                Ok(())
            }
            Op::AddFlood(ip) => dev.add_remote(FLOOD, *ip).await,
            Op::DelFlood(ip) => dev.remove_remote(FLOOD, *ip).await,
            Op::AddMac(m, ip) => dev.add_remote(*m, *ip).await,
            Op::DelMac(m, ip) => dev.remove_remote(*m, *ip).await,
            Op::Steer(m, fast) => dev
                .steer()
                .steer(*m, *fast)
                .await
                .map_err(|e| e.to_string()),
            Op::Unsteer(m) => {
                dev.steer().unsteer(*m).await;
                Ok(())
            }
        };
        if let Err(e) = r {
            tracing::warn!("{} datapath: {op:?} failed: {e}", dev.tier().name());
        }
    }
}

/// Builds one heartbeat packet (vxlan header + Ethernet + heartbeat) of `padding` bytes of
/// padding into `buf`; returns its length.
fn build_heartbeat(
    buf: &mut [u8],
    uid: u64,
    round: u64,
    timestamp_ns: u64,
    padding: u16,
) -> Option<usize> {
    let hb = heartbeat::Repr {
        kind: heartbeat::Kind::Heartbeat,
        connection_id: uid,
        sequence: round,
        timestamp_ns,
        padding_len: padding,
    };
    let len = vxwire::HEADER_LEN + ETH + hb.buffer_len();
    let buf = buf.get_mut(..len)?;
    buf.fill(0);
    let vx = vxwire::Repr {
        src_short_id: 0,
        dst_short_id: 0,
    };
    vx.emit(&mut vxwire::Packet::new_unchecked(
        &mut buf[..vxwire::HEADER_LEN],
    ))
    .ok()?;
    let eth = &mut buf[vxwire::HEADER_LEN..];
    eth[..6].copy_from_slice(&HEARTBEAT_DST);
    eth[6..12].copy_from_slice(&local_mac(uid));
    eth[12..14].copy_from_slice(&heartbeat::HEARTBEAT_ETHERTYPE.to_be_bytes());
    hb.emit(&mut heartbeat::Packet::new_unchecked(&mut eth[ETH..]))
        .ok()?;
    Some(len)
}

/// Runs [`heartbeat_loop`] on a thread of its own, with a runtime of its own for its
/// netlink reads. Heartbeats are what the peers judge this router's fast path by: sent from
/// the control plane's runtime, they waited behind its work (a hundred handshakes, gossip and
/// IPAM merges while a mesh comes up), and peers saw a healthy path go silent for 1.5 s and
/// fell back to sleeve (weave #3037: links pushed to sleeve by control-plane load). A thread
/// that sleeps between rounds is also what the kernel's scheduler wakes promptly. The kernel's
/// tables still follow on the router's runtime (`main`).
fn send_heartbeats(inner: Arc<Inner>, main: Option<tokio::runtime::Handle>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!("cannot start the heartbeat sender's runtime: {e}");
            return;
        }
    };
    rt.block_on(heartbeat_loop(inner, main));
}

async fn heartbeat_loop(inner: Arc<Inner>, main: Option<tokio::runtime::Handle>) {
    let s = inner.settings;
    let mut tick = tokio::time::interval(s.timing.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let full_padding = (s.overlay_mtu as usize).saturating_sub(heartbeat::HEADER_LEN);
    let full_padding = u16::try_from(full_padding).unwrap_or(u16::MAX);
    let mut buf = vec![0u8; vxwire::HEADER_LEN + ETH + heartbeat::HEADER_LEN];
    let mut full_buf = vec![0u8; vxwire::HEADER_LEN + ETH + heartbeat::HEADER_LEN + 65_536];
    let mut round = 0u64;
    // When the kernel last carried frames over each connection, read each round while a
    // connection is settled (only those can slow down).
    let mut last_used: HashMap<IpAddr, Instant> = HashMap::new();
    while !inner.stop.load(Relaxed) {
        tick.tick().await;
        round += 1;
        let any_settled = {
            let peers = inner.peers.lock().unwrap_or_else(|e| e.into_inner());
            peers.values().any(|p| p.selector.settled_since().is_some())
        };
        if any_settled {
            if let Some(used) = match &inner.device {
                Some(k) => k.last_used().await,
                None => None,
            } {
                last_used = used;
            }
        }
        // What has arrived is read before it is judged: on a loaded host the receiving thread
        // may not have run since the peers' last heartbeats came in, and a heartbeat waiting
        // in the socket is not a heartbeat lost (a mesh coming up on two cores otherwise
        // pushed hundreds of healthy connections to sleeve at once).
        if let Some(fd) = &inner.receiver {
            while receive_one(&inner, fd, &mut full_buf) {}
        }
        let now = Instant::now();
        let ts = now.saturating_duration_since(inner.base).as_nanos() as u64;
        // The round's two heartbeats are the same bytes for every peer but the VNI: built
        // once, the VNI set per peer.
        let small = build_heartbeat(&mut buf, s.uid, round, ts, 0).unwrap_or(0);
        let full = build_heartbeat(&mut full_buf, s.uid, round, ts, full_padding).unwrap_or(0);
        let me = inner.me.load(Relaxed);
        let tier = inner.device.as_ref().map_or(Tier::Sleeve, FastKernel::tier);
        let mut changed = false;
        {
            let mut peers = inner.peers.lock().unwrap_or_else(|e| e.into_inner());
            for p in peers.values_mut() {
                if p.selector.is_unavailable() {
                    continue;
                }
                // This side's busy flag: told to the peer when it changes.
                let old = p.pacer.window();
                let used = last_used.get(&p.ip).copied();
                if p.pacer
                    .update(now, p.selector.settled_since(), used)
                    .is_some()
                {
                    let v = p.arrivals.last_report(now, old);
                    send_report(&inner, p, v, 0);
                }
                repaced(p, now, old);
                if !p.pacer.due(now) {
                    // Not this round; what arrives is still looked at below.
                } else if let Some(sock) = &inner.sock {
                    let to = SocketAddr::new(p.ip, s.port);
                    // The small heartbeat only explains a failure (small ones cross, full
                    // ones do not: the path MTU): not sent while full ones are reported arriving.
                    let small = if p.selector.outbound_full() { 0 } else { small };
                    if let Some(k) = &inner.device {
                        let vni = k.vni_to(me, p.short_id, p.odp);
                        for b in [&mut buf[..], &mut full_buf[..]] {
                            if b.len() >= vxwire::HEADER_LEN {
                                vxwire::Packet::new_unchecked(b).set_vni(vni);
                            }
                        }
                    }
                    // The full-size one first: a peer that read the small one first reported
                    // "only small ones arrive" for the moment until the other came.
                    for packet in [&full_buf[..full], &buf[..small]] {
                        // A send refused locally (EMSGSIZE, a full buffer) is a heartbeat lost.
                        if !packet.is_empty() && sock.send_to(packet, to).is_err() {
                            p.unsent += 1;
                        }
                    }
                    p.sent += 1;
                }
                // The peer's heartbeats stopped arriving (or only small ones do): tell it.
                if let Some(v) = p.arrivals.report_due(now, p.pacer.window()) {
                    send_report(&inner, p, v, 0);
                }
                if p.evaluate(now, tier).is_some() {
                    changed = true;
                }
            }
        }
        // The kernel's tables follow in a task of their own: a round that waited for them
        // (many netlink requests while a mesh comes up) would hold back the next heartbeats.
        if changed {
            let i = inner.clone();
            let work = async move { reconcile(&i).await };
            match &main {
                Some(rt) => drop(rt.spawn(work)),
                None => spawn_quiet(work),
            }
        }
    }
}

/// The pace of `p` may have changed (its window was `old`): the selector and the arrivals
/// count the peer's heartbeats for the new window; a shorter one starts from `now`.
fn repaced(p: &mut FastPeer, now: Instant, old: Duration) {
    let new = p.pacer.window();
    if new != old {
        p.selector.set_window(now, new);
        if new < old {
            p.arrivals.quickened(now, old);
        }
    }
}

/// Hands the report `v` for peer `p` to the router (`timestamp_ns`: the heartbeat that made
/// it, echoed for the peer's round trip; 0 for none).
fn send_report(inner: &Inner, p: &mut FastPeer, v: View, timestamp_ns: u64) {
    p.reports_sent += 1;
    let _ = inner.reports.send(FastReport {
        uid: p.uid,
        connection: p.connection,
        report: fast_report::Repr {
            small: v.small,
            full: v.full,
            timestamp_ns,
            busy: p.pacer.busy(),
        },
    });
}

/// Reads heartbeats as they come. After each batch it pauses a little (a quarter of the
/// heartbeat interval) so that the heartbeats of many peers are read in one wake-up, not one
/// each: what they decide is measured in whole intervals (three of them before a fallback).
fn receive_loop(inner: &Inner) {
    let Some(fd) = &inner.receiver else { return };
    let mut buf = vec![0u8; 65_536];
    let pause = inner.settings.timing.interval / 4;
    while !inner.stop.load(Relaxed) {
        // 500 ms, so a stop is noticed.
        if !wait_readable(fd.as_raw_fd(), 500) {
            continue;
        }
        while receive_one(inner, fd, &mut buf) {}
        std::thread::sleep(pause);
    }
}

/// Reads one pending heartbeat without blocking; `false` when none is left.
fn receive_one(inner: &Inner, fd: &OwnedFd, buf: &mut [u8]) -> bool {
    // SAFETY: recv(2) into a live, writable buffer of `buf.len()` bytes.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n <= 0 {
        return false;
    }
    let Some(hb) = buf.get(..n as usize).and_then(parse_heartbeat) else {
        return true;
    };
    let now = Instant::now();
    // Only a heartbeat of full size proves the peer's way to us carries the MTU.
    let full =
        usize::from(hb.padding_len) + heartbeat::HEADER_LEN >= inner.settings.overlay_mtu as usize;
    let mut peers = inner.peers.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = peers.values_mut().find(|p| p.uid == hb.connection_id) {
        p.received += 1;
        p.last_heard = Some(now);
        if full {
            p.selector.on_inbound(now);
        }
        p.arrivals.on_heartbeat(now, full, hb.timestamp_ns);
        // Heartbeats (or full-size ones) arrive again: tell the peer at once.
        if let Some(v) = p.arrivals.report_due(now, p.pacer.window()) {
            send_report(inner, p, v, hb.timestamp_ns);
        }
    }
    true
}

/// A heartbeat in an Ethernet frame read off the vxlan device, if that is what it is.
fn parse_heartbeat(frame: &[u8]) -> Option<heartbeat::Repr> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    if eth.ethertype() != heartbeat::HEARTBEAT_ETHERTYPE {
        return None;
    }
    let hb = heartbeat::Packet::new_checked(eth.payload())
        .and_then(|p| heartbeat::Repr::parse(&p))
        .ok()?;
    (hb.kind == heartbeat::Kind::Heartbeat).then_some(hb)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2));
    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    fn st(fast: bool, macs: &[[u8; 6]]) -> Installed {
        Installed {
            fast,
            macs: macs.iter().copied().collect(),
        }
    }

    fn mac(m: &[u8; 6]) -> String {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    fn render(ops: &[Op]) -> String {
        ops.iter()
            .map(|o| match o {
                Op::SleeveCarries(n, on) => format!("sleeve floods to {n}: {on}"),
                Op::AddFlood(ip) => format!("fdb append 00:00:00:00:00:00 dst {ip}"),
                Op::DelFlood(ip) => format!("fdb del 00:00:00:00:00:00 dst {ip}"),
                Op::AddMac(m, ip) => format!("fdb replace {} dst {ip}", mac(m)),
                Op::DelMac(m, ip) => format!("fdb del {} dst {ip}", mac(m)),
                Op::Steer(m, fast) => format!(
                    "bridge {} -> {}",
                    mac(m),
                    if *fast { "vxlan" } else { "tap" }
                ),
                Op::Unsteer(m) => format!("bridge del {}", mac(m)),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn moves_between_datapaths_open_the_new_way_first() {
        let cases = [
            ("new peer on sleeve", st(false, &[]), Some(st(false, &[A]))),
            ("to the fast path", st(false, &[A]), Some(st(true, &[A]))),
            (
                "a new MAC on the fast path",
                st(true, &[A]),
                Some(st(true, &[A, B])),
            ),
            (
                "back to sleeve",
                st(true, &[A, B]),
                Some(st(false, &[A, B])),
            ),
            (
                "a MAC leaves on sleeve",
                st(false, &[A, B]),
                Some(st(false, &[B])),
            ),
            ("gone while fast", st(true, &[A]), None),
            ("nothing to do", st(true, &[A]), Some(st(true, &[A]))),
        ];
        let text: Vec<String> = cases
            .iter()
            .map(|(what, have, want)| {
                format!(
                    "## {what}\n{}",
                    render(&plan("h2", IP, have, want.as_ref()))
                )
            })
            .collect();
        insta::assert_snapshot!(text.join("\n"));
    }

    #[test]
    fn every_broadcast_way_exists_at_each_step_of_a_move() {
        // Walking the ops of a move in order, the peer is always reached by sleeve's flood or
        // by its all-zero entry.
        for (have, want) in [
            (st(false, &[A]), st(true, &[A])),
            (st(true, &[A]), st(false, &[A])),
        ] {
            let mut sleeve = !have.fast;
            let mut flood = have.fast;
            for op in plan("h2", IP, &have, Some(&want)) {
                match op {
                    Op::SleeveCarries(_, on) => sleeve = on,
                    Op::AddFlood(_) => flood = true,
                    Op::DelFlood(_) => flood = false,
                    _ => {}
                }
                assert!(sleeve || flood, "{op:?} left no way");
            }
            assert!(sleeve != flood, "exactly one way at the end");
        }
    }

    #[test]
    fn a_heartbeat_is_a_vxlan_packet_of_the_overlay_mtu() {
        let mut buf = vec![0u8; 10_000];
        let mtu = 1450usize;
        let padding = (mtu - heartbeat::HEADER_LEN) as u16;
        let n = build_heartbeat(&mut buf, 0x1122_3344_5566_7788, 3, 9, padding)
            .unwrap_or_else(|| panic!("fits"));
        // UDP payload + IPv4 20 + UDP 8 = the underlay MTU the overlay MTU needs.
        assert_eq!(n + 28, mtu + vxwire::OVERHEAD);
        let vx = vxwire::Packet::new_checked(&buf[..n]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(vxwire::Repr::parse(&vx).map(|r| r.src_short_id), Ok(0));
        let eth = ethernet::Frame::new_checked(&buf[vxwire::HEADER_LEN..n])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(eth.dst(), HEARTBEAT_DST);
        assert_eq!(eth.src(), [2, 0x44, 0x55, 0x66, 0x77, 0x88]);
        let hb = heartbeat::Packet::new_checked(eth.payload())
            .and_then(|p| heartbeat::Repr::parse(&p))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (hb.connection_id, hb.sequence, hb.padding_len),
            (0x1122_3344_5566_7788, 3, padding)
        );
    }
}
