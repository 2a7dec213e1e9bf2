//! The control plane: peer connections over TCP 6783 (Hello, password proof, gossip,
//! heartbeat acks), the peer table learnt through gossip, discovery of peers from others'
//! connection lists, reconnection with exponential backoff and jitter, unique short ids.
//!
//! Pure decisions (which of two duplicate connections survives, how gossip merges, how a
//! short-id conflict resolves, the backoff schedule) are plain functions with unit tests; the
//! async plumbing around them only moves bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::alloc::IpamSource;
use crate::crypto::handshake::{self, LocalOffer, Session};
use crate::datapath::fast::PathStatus;
use crate::datapath::{Datapath, PeerSpec, PeerStats};
use crate::topology::{PeerTable, Timing};
use crate::wire::auth::{self, Role};
use crate::wire::control::{self, MessageType};
use crate::wire::gossip::{self, ConnectionRepr, PeerRepr};
use crate::wire::handshake::{self as hello, Features};
use crate::wire::heartbeat;
use crate::wire::MAX_SHORT_ID;

/// How long a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Housekeeping period (aging the peer table, sleeve's path-MTU rounds).
const PROBE_PERIOD: Duration = Duration::from_secs(1);
/// A connection on which nothing was sent for this long gets an empty gossip frame, so the
/// peer hears from it well within [`DEAD_AFTER`] (gossip itself is sent only on change);
/// not on the fast path, whose heartbeats show both routers alive.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// A connection silent this long (and, on the fast path, without the peer's heartbeats) is
/// dropped.
const DEAD_AFTER: Duration = Duration::from_secs(10);
/// How long the router with the higher address waits for a peer's dial before dialling it
/// itself, when both come up together (see [`dials_first`]).
const FIRST_DIAL_HEAD_START: Duration = Duration::from_secs(1);
/// How long gossip waits after a change before sending, so that a burst of changes (a mesh
/// coming up, a gossip frame changing many entries) goes out as one frame.
const GOSSIP_COALESCE: Duration = Duration::from_millis(50);
/// See [`gossip_pace`].
const GOSSIP_PACE_PER_CONNECTION: Duration = Duration::from_millis(5);
/// A connection's writer joins queued control frames into one write up to this size.
const WRITE_BATCH: usize = 64 * 1024;
/// Entries learnt from other routers, and learnt IPAM claims, are passed on at most this
/// often (a router's own entry, its tombstones and its own claims go at once). A mesh coming
/// up changes every entry many times a second; by the time a relay round goes, most owners
/// are connected to most receivers and tell them first-hand, so little is relayed at all.
const RELAY_PACE: Duration = Duration::from_secs(1);

/// Static settings of a router's control plane.
#[derive(Clone)]
pub struct Settings {
    /// The router's name.
    pub name: String,
    /// The password, when the overlay is encrypted.
    pub password: Option<Vec<u8>>,
    /// TCP port peers listen on.
    pub port: u16,
    /// Whether this router offers a kernel fast path (vxlan on UDP 6784).
    pub fast_path: bool,
    /// Whether that fast path is the Open vSwitch datapath (it reads pair VNIs).
    pub odp: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("name", &self.name)
            .field("encrypted", &self.password.is_some())
            .field("port", &self.port)
            .field("fast_path", &self.fast_path)
            .finish()
    }
}

#[derive(Debug)]
struct Conn {
    id: u64,
    ip: IpAddr,
    role: Role,
    initiator: String,
    uid: u64,
    short_id: u16,
    encrypted: bool,
    since: Instant,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    /// The connection is new: the next relay round sends it the whole table (what it cannot
    /// hear first-hand), not just what changed.
    needs_table: bool,
}

#[derive(Debug, Default)]
struct State {
    short_id: u16,
    version: u64,
    conns: HashMap<String, Conn>,
    peers: PeerTable,
    targets: BTreeSet<IpAddr>,
    configured: BTreeSet<IpAddr>,
    dialing: BTreeSet<IpAddr>,
    /// Addresses of removed peers: never re-added from gossip (only `peers add` or a
    /// connection the peer makes lifts this).
    banned: BTreeSet<IpAddr>,
    /// The last underlay address seen for each peer name (own connections, then gossip).
    addrs: BTreeMap<String, IpAddr>,
    /// The last uid seen for each peer name, kept after its entry leaves the table so that
    /// `peers remove` can still free its IPAM blocks.
    uids: BTreeMap<String, u64>,
    refused: u64,
    handshake_failures: u64,
    last_refusal: Option<String>,
    malformed_control: u64,
    next_conn_id: u64,
    probe_round: u64,
    /// The newest tombstone of this router a peer gossiped, logged once per version.
    tombstone_heard: Option<u64>,
    /// The peer table's change count at the last gossip round (see `PeerTable::changed_since`).
    gossiped_seq: u64,
    /// This router's own entry version at the last gossip round.
    gossiped_version: u64,
    /// IPAM claims changed since the last relay round.
    claims_dirty: bool,
    /// The peer table's change count at the last relay round.
    relayed_seq: u64,
    /// When the last relay round went out.
    last_relay: Option<Instant>,
    /// The peers reachable from here, and the (own version, table change count) it was
    /// computed at.
    reachable: Option<((u64, u64), BTreeSet<String>)>,
    /// Gossip frames sent and received, and the entries they carried (status: what gossip costs).
    gossip: GossipCounters,
}

/// Control frames and their bytes sent, by message type: where a router's control traffic
/// goes (status `router.control_sent`).
#[derive(Debug, Default)]
struct ControlTally {
    frames: [std::sync::atomic::AtomicU64; 16],
    bytes: [std::sync::atomic::AtomicU64; 16],
}

impl ControlTally {
    fn count(&self, frame: &[u8]) {
        use std::sync::atomic::Ordering::Relaxed;
        // Types past the table, and frames too short to have one, are counted with type 0
        // (never used on the wire).
        let t =
            control::Packet::new_checked(frame).map_or(0, |p| usize::from(u8::from(p.msg_type())));
        let i = if t < 16 { t } else { 0 };
        self.frames[i].fetch_add(1, Relaxed);
        self.bytes[i].fetch_add(frame.len() as u64, Relaxed);
    }

    fn snapshot(&self) -> BTreeMap<String, FrameCount> {
        use std::sync::atomic::Ordering::Relaxed;
        (0u8..16)
            .filter_map(|t| {
                let frames = self.frames[usize::from(t)].load(Relaxed);
                let name = match MessageType::from(t) {
                    MessageType::Unknown(_) if t == 0 => "other".to_string(),
                    MessageType::Unknown(t) => format!("type_{t}"),
                    known => format!("{known:?}"),
                };
                (frames > 0).then(|| {
                    let bytes = self.bytes[usize::from(t)].load(Relaxed);
                    (name, FrameCount { frames, bytes })
                })
            })
            .collect()
    }
}

/// Frames and bytes of one control message type.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FrameCount {
    /// Frames.
    pub frames: u64,
    /// Bytes, framing included.
    pub bytes: u64,
}

/// What gossip cost so far (status `router.gossip`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GossipCounters {
    /// Topology frames sent (deltas, full states on connect, keepalives).
    pub frames_sent: u64,
    /// Peer entries those frames carried.
    pub entries_sent: u64,
    /// Topology frames received.
    pub frames_received: u64,
    /// Peer entries those frames carried.
    pub entries_received: u64,
    /// IPAM claim frames sent.
    pub claims_sent: u64,
}

/// The control plane of one router.
pub struct Router {
    settings: Settings,
    uid: u64,
    state: Mutex<State>,
    /// Bumped whenever what this router gossips changed; the gossip task watches it.
    gossip: watch::Sender<u64>,
    datapath: Mutex<Option<Arc<dyn Datapath>>>,
    ipam: Mutex<Option<Arc<Mutex<IpamSource>>>>,
    /// The MACs of this router's containers, announced to every peer.
    local_macs: Mutex<Vec<[u8; 6]>>,
    control_sent: ControlTally,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("name", &self.settings.name)
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

/// One connection as status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnStatus {
    /// The peer's name.
    pub peer: String,
    /// Its underlay address.
    pub address: IpAddr,
    /// Who dialled.
    pub initiator: String,
    /// This side's role (`Initiator` dialled).
    pub role: String,
    /// The peer incarnation's unique id.
    pub peer_uid: u64,
    /// The peer's short id.
    pub short_id: u16,
    /// Whether sleeve datagrams are sealed.
    pub encrypted: bool,
    /// The datapath carrying this connection's frames.
    pub datapath: String,
    /// The fast path's view of the connection: since when on its datapath, why, heartbeats.
    pub path: Option<PathStatus>,
    /// Seconds since it was established.
    pub age_s: u64,
    /// Datapath counters.
    pub stats: Option<PeerStats>,
}

/// One known peer as status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// Name.
    pub name: String,
    /// Unique id of its current incarnation.
    pub uid: u64,
    /// Short id.
    pub short_id: u16,
    /// Gossip version.
    pub version: u64,
    /// Names of the peers it is connected to.
    pub connections: Vec<String>,
}

/// One peer that `peers remove` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovedPeer {
    /// Its name.
    pub name: String,
    /// The uid of the incarnation removed (its IPAM claims were under this uid).
    pub uid: u64,
    /// IPAM blocks freed (tombstoned) here; gossip frees them everywhere.
    pub blocks_freed: usize,
    /// It was still connected to this router or to a router reachable from it (only with
    /// `force`).
    pub was_connected: bool,
}

/// What `peers remove ADDR` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removal {
    /// The address given.
    pub address: IpAddr,
    /// The peers last seen at that address, now removed (usually one; none for an address
    /// that was dialled but never answered).
    pub peers: Vec<RemovedPeer>,
    /// Whether the address was a dial target (it no longer is).
    pub was_target: bool,
}

impl Removal {
    /// IPAM blocks freed in total.
    pub fn blocks_freed(&self) -> usize {
        self.peers.iter().map(|p| p.blocks_freed).sum()
    }
}

/// Why `peers remove` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoveError {
    /// The peer is still connected: removing it would free blocks its containers use.
    #[error(
        "peer {name} at {address} is still connected (seen by {}): removing a live peer frees \
         the address blocks its containers use, so other routers may hand out the same \
         addresses until it re-addresses its containers; stop its router first (it drops out \
         within 10 s) and retry, or pass --force (API: \"force\":true) if it is really gone",
        via.join(", ")
    )]
    StillConnected {
        /// The peer's name.
        name: String,
        /// The address given.
        address: IpAddr,
        /// The routers that still list a connection to it.
        via: Vec<String>,
    },
    /// No peer, connection or dial target has that address.
    #[error(
        "{0} is not a peer of this router: no connection, dial target or known peer has that \
         address (see `status`)"
    )]
    NotAPeer(IpAddr),
}

/// The control plane part of status.
#[derive(Debug, Clone, Serialize)]
pub struct RouterStatus {
    /// This router's name.
    pub name: String,
    /// Its unique id.
    pub uid: u64,
    /// Its short id.
    pub short_id: u16,
    /// Whether a password is set.
    pub encrypted: bool,
    /// Every peer known through gossip (this router included).
    pub peers: Vec<PeerStatus>,
    /// Established connections.
    pub connections: Vec<ConnStatus>,
    /// Addresses this router dials (configured and discovered).
    pub targets: Vec<IpAddr>,
    /// Removed peers whose tombstones this router still gossips (see `peers remove`).
    pub removed_peers: Vec<String>,
    /// Connections refused for a password mismatch or a bad proof.
    pub refused: u64,
    /// Other handshake failures (timeouts, malformed Hellos, version mismatch).
    pub handshake_failures: u64,
    /// Why the last connection was refused.
    pub last_refusal: Option<String>,
    /// Control frames that did not parse.
    pub malformed_control: u64,
    /// What gossip cost so far.
    pub gossip: GossipCounters,
    /// Control frames and bytes sent since start, by message type.
    pub control_sent: BTreeMap<String, FrameCount>,
}

/// The least time between two gossip rounds of a router with `connections` connections: a
/// round costs a frame per connection, and while a mesh comes up every connection changes
/// every router's entry, so a big mesh gathers more changes into each round (0.5 s at 100
/// connections, at most 1 s).
pub fn gossip_pace(connections: usize) -> Duration {
    (GOSSIP_PACE_PER_CONNECTION * connections as u32).min(Duration::from_secs(1))
}

/// A topology frame carrying `peers` (none: a keepalive).
fn gossip_frame(peers: &[&PeerRepr]) -> Vec<u8> {
    emitted_frame(MessageType::Topology, gossip::buffer_len_of(peers), |b| {
        gossip::emit_peers(peers, &mut gossip::Packet::new_unchecked(b))
    })
}

/// The entries of `peers` worth sending from the router `own` to the router `to`: `own`'s
/// and tombstones always (a tombstone of `to` itself is how a live router hears it was
/// removed); of the others, not `to`'s own, and not those of a
/// router whose entry lists an established connection to `to` (that router sends its entry to
/// `to` itself whenever it changes). In a full mesh nothing is relayed, so an entry crosses
/// each connection once per change instead of once per connection per change.
pub fn relayed_to<'a>(own: &str, to: &str, peers: &[&'a PeerRepr]) -> Vec<&'a PeerRepr> {
    peers
        .iter()
        .copied()
        .filter(|p| {
            p.name == own
                || p.removed
                || p.name != to
                    && !p
                        .connections
                        .iter()
                        .any(|c| c.established && c.peer_name == to)
        })
        .collect()
}

/// Whether this router, at `local` (None: unknown), dials `peer` at once when both come up
/// together; the other side waits up to [`FIRST_DIAL_HEAD_START`] for that dial first.
pub fn dials_first(local: Option<IpAddr>, peer: IpAddr) -> bool {
    local.is_none_or(|l| l < peer)
}

/// The address this host would send from to reach `peer` (no packet is sent).
fn local_address_towards(peer: IpAddr, port: u16) -> Option<IpAddr> {
    let any: IpAddr = match peer {
        IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let sock = std::net::UdpSocket::bind((any, 0)).ok()?;
    sock.connect((peer, port)).ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// Picks which of two connections between the same two peers survives, the same on both
/// sides: the one dialled by the peer whose name sorts first. `true` keeps the new one.
pub fn keep_new_connection(new_initiator: &str, old_initiator: &str) -> bool {
    new_initiator < old_initiator
}

/// Whether a peer with `other_uid` claiming our short id makes us move: the larger uid moves.
pub fn short_id_conflict_moves_us(our_uid: u64, other_uid: u64) -> bool {
    our_uid > other_uid
}

/// The delay before reconnection attempt `attempt` (0-based): 250 ms doubling to 8 s, plus up
/// to half of that again from `jitter` (a value in 0..1000).
pub fn backoff(attempt: u32, jitter: u32) -> Duration {
    let base = 250u64 << attempt.min(5);
    Duration::from_millis(base + base * u64::from(jitter % 1000) / 2000)
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // The clock is a poor but working fallback for ids (never for keys).
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
    }
    u64::from_le_bytes(b)
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
}

fn frame(t: MessageType, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; control::HEADER_LEN + payload.len()];
    let repr = control::Repr {
        msg_type: t,
        payload_len: payload.len(),
    };
    if repr
        .emit(&mut control::Packet::new_unchecked(&mut out[..]))
        .is_err()
    {
        return Vec::new();
    }
    out[control::HEADER_LEN..].copy_from_slice(payload);
    out
}

/// A control frame of type `t` whose `len`-byte payload `emit` writes (empty if it fails).
fn emitted_frame(
    t: MessageType,
    len: usize,
    emit: impl FnOnce(&mut [u8]) -> crate::wire::Result<()>,
) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    match emit(&mut buf) {
        Ok(()) => frame(t, &buf),
        Err(_) => Vec::new(),
    }
}

/// Reads one control frame: (type, payload).
async fn read_frame<R: AsyncReadExt + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<(MessageType, Vec<u8>)> {
    loop {
        match control::next_frame(buf) {
            Ok(Some((pkt, rest))) => {
                let t = pkt.msg_type();
                let payload = pkt.payload().to_vec();
                let consumed = buf.len() - rest.len();
                buf.drain(..consumed);
                return Ok((t, payload));
            }
            Ok(None) => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    e.to_string(),
                ));
            }
        }
        let mut chunk = [0u8; 16384];
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

enum Refusal {
    Refused(String),
    Failed(String),
}

impl Router {
    /// A fresh uid (never 0).
    pub fn random_uid() -> u64 {
        random_u64().max(1)
    }

    /// A router with uid `uid` and a fresh short id, dialling `peers`.
    pub fn new(settings: Settings, peers: &[IpAddr], uid: u64) -> Arc<Self> {
        let st = State {
            short_id: (random_u64() % u64::from(MAX_SHORT_ID)) as u16 + 1,
            version: now_micros(),
            targets: peers.iter().copied().collect(),
            configured: peers.iter().copied().collect(),
            peers: PeerTable::new(&settings.name),
            ..State::default()
        };
        Arc::new(Router {
            settings,
            uid,
            state: Mutex::new(st),
            gossip: watch::Sender::new(0),
            datapath: Mutex::new(None),
            ipam: Mutex::new(None),
            local_macs: Mutex::new(Vec::new()),
            control_sent: ControlTally::default(),
        })
    }

    /// Tells the gossip task that the topology changed: it sends what changed to every
    /// connection shortly.
    fn wake_gossip(&self) {
        self.gossip.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Tells the gossip task that the IPAM claims changed.
    fn wake_claims(&self) {
        self.st().claims_dirty = true;
        self.wake_gossip();
    }

    /// Waits until this router has at least `n` established connections, or `timeout`
    /// passes; returns whether it got there and the peers it is connected to. Woken by the
    /// same signal as gossip (every connection change), never by polling.
    pub async fn wait_connections(&self, n: usize, timeout: Duration) -> (bool, Vec<String>) {
        let mut changes = self.gossip.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            let names: Vec<String> = self.st().conns.keys().cloned().collect();
            if names.len() >= n {
                return (true, names);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or the router is shutting down.
                Ok(Err(_)) | Err(_) => return (false, names),
            }
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dp(&self) -> Option<Arc<dyn Datapath>> {
        self.datapath
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets the datapath new connections are handed to.
    pub fn set_datapath(&self, dp: Arc<dyn Datapath>) {
        *self.datapath.lock().unwrap_or_else(|e| e.into_inner()) = Some(dp);
    }

    /// Sets the IPAM whose claims this router gossips and merges.
    pub fn set_ipam(&self, ipam: Arc<Mutex<IpamSource>>) {
        *self.ipam.lock().unwrap_or_else(|e| e.into_inner()) = Some(ipam);
    }

    fn ipam(&self) -> Option<Arc<Mutex<IpamSource>>> {
        self.ipam.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The IPAM claims as a control frame (empty when there is no IPAM).
    fn claims_frame(&self) -> Vec<u8> {
        let Some(ipam) = self.ipam() else {
            return Vec::new();
        };
        let (_, repr) = ipam.lock().unwrap_or_else(|e| e.into_inner()).claims();
        emitted_frame(MessageType::IpamClaims, repr.buffer_len(), |b| {
            repr.emit(&mut crate::wire::ipam::Packet::new_unchecked(b))
        })
    }

    /// The MACs of this router's containers as a control frame.
    fn macs_frame(&self) -> Vec<u8> {
        let repr = crate::wire::macs::Repr {
            macs: self
                .local_macs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        };
        emitted_frame(MessageType::LocalMacs, repr.buffer_len(), |b| {
            repr.emit(&mut crate::wire::macs::Packet::new_unchecked(b))
        })
    }

    /// Sets the MACs of this router's containers and announces them to every peer (they steer
    /// frames for them to the datapath of their connection to this router).
    pub fn set_local_macs(&self, mut macs: Vec<[u8; 6]>) {
        macs.sort_unstable();
        macs.dedup();
        {
            let mut mine = self.local_macs.lock().unwrap_or_else(|e| e.into_inner());
            if *mine == macs {
                return;
            }
            *mine = macs;
        }
        let f = self.macs_frame();
        for c in self.st().conns.values() {
            let _ = c.tx.send(f.clone());
        }
    }

    /// Tells the router with uid `uid`, over connection `connection`, what arrives of its
    /// fast-path heartbeats; nothing when that connection has been replaced meanwhile (the
    /// report is about the old one's heartbeats).
    pub fn send_fast_report(
        &self,
        uid: u64,
        connection: u64,
        report: &crate::wire::fast_report::Repr,
    ) {
        let f = emitted_frame(MessageType::FastPathReport, report.buffer_len(), |b| {
            report.emit(&mut crate::wire::fast_report::Packet::new_unchecked(b))
        });
        let st = self.st();
        if let Some(c) = st
            .conns
            .values()
            .find(|c| c.uid == uid && c.id == connection)
        {
            if !f.is_empty() {
                let _ = c.tx.send(f);
            }
        }
    }

    /// Sends `c` the acknowledgement of heartbeat `hb` (reporting the padding that arrived).
    fn send_ack(c: &Conn, hb: &heartbeat::Repr, t: MessageType) {
        let ack = hb.ack(hb.padding_len);
        let f = emitted_frame(t, ack.buffer_len(), |b| {
            ack.emit(&mut heartbeat::Packet::new_unchecked(b))
        });
        if !f.is_empty() {
            let _ = c.tx.send(f);
        }
    }

    /// Sends this router's IPAM claims to every peer at once (after a new address claim: a
    /// peer that has not heard it may hand out the same block). Claims learnt from others go
    /// out with the next, paced, gossip round instead.
    pub fn announce(&self) {
        let f = self.claims_frame();
        if f.is_empty() {
            return;
        }
        let mut st = self.st();
        st.gossip.claims_sent += st.conns.len() as u64;
        for c in st.conns.values() {
            let _ = c.tx.send(f.clone());
        }
    }

    /// The router's unique id.
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// The router's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The current short id.
    pub fn short_id(&self) -> u16 {
        self.st().short_id
    }

    /// Starts listening on `listen` and dialling every target; returns once listening.
    pub async fn start(self: &Arc<Self>, listen: SocketAddr) -> std::io::Result<()> {
        let listener = TcpListener::bind(listen).await?;
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, from)) => {
                        let me = me.clone();
                        tokio::spawn(async move {
                            let _ = me.run_connection(stream, Role::Responder, from.ip()).await;
                        });
                    }
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        let targets: Vec<IpAddr> = self.st().targets.iter().copied().collect();
        for ip in targets {
            self.ensure_dialer(ip);
        }
        let me = self.clone();
        tokio::spawn(async move { me.probe_loop().await });
        let me = self.clone();
        tokio::spawn(async move { me.gossip_loop().await });
        Ok(())
    }

    async fn probe_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PROBE_PERIOD);
        // A loaded host skips rounds rather than catching up on them in a burst.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let round = {
                let mut st = self.st();
                st.probe_round += 1;
                st.probe_round
            };
            self.age_peers(Timing::default());
            if let Some(dp) = self.dp() {
                let _ = tokio::task::spawn_blocking(move || dp.probe(round)).await;
            }
        }
    }

    /// Adds a peer address to dial.
    pub fn add_peer(self: &Arc<Self>, ip: IpAddr) {
        {
            let mut st = self.st();
            st.targets.insert(ip);
            st.configured.insert(ip);
            st.banned.remove(&ip);
        }
        self.ensure_dialer(ip);
    }

    /// `peers remove ADDR`: finds the peers last seen at `ip`, refuses (unless `force`) when
    /// one is still connected to this router or to a router reachable from it, then stops
    /// dialling `ip` for good (gossip does not bring it back), closes any connection to it,
    /// turns the peers' topology entries into gossiped tombstones and frees their IPAM blocks
    /// (tombstones that gossip spreads to every router).
    pub fn remove_peer(self: &Arc<Self>, ip: IpAddr, force: bool) -> Result<Removal, RemoveError> {
        let now = Instant::now();
        let mut st = self.st();
        let own_conns: Vec<String> = st.conns.keys().cloned().collect();
        // The peers this address belongs to: a live connection from it, else the names last
        // seen at it that are not removed already.
        let mut names: Vec<String> = st
            .conns
            .iter()
            .filter(|(_, c)| c.ip == ip)
            .map(|(n, _)| n.clone())
            .collect();
        if names.is_empty() {
            names = st
                .addrs
                .iter()
                .filter(|(n, a)| **a == ip && !st.peers.is_tombstoned(n))
                .map(|(n, _)| n.clone())
                .collect();
        }
        let mut peers = Vec::new();
        for name in &names {
            let via = st
                .peers
                .connected_to(name, own_conns.iter().map(String::as_str));
            if !via.is_empty() && !force {
                return Err(RemoveError::StillConnected {
                    name: name.clone(),
                    address: ip,
                    via,
                });
            }
            let uid = st
                .conns
                .get(name)
                .map(|c| c.uid)
                .or_else(|| st.peers.get_any(name).map(|p| p.uid))
                .or_else(|| st.uids.get(name).copied())
                .unwrap_or(0);
            peers.push(RemovedPeer {
                name: name.clone(),
                uid,
                blocks_freed: 0,
                was_connected: !via.is_empty(),
            });
        }
        let was_target = st.targets.remove(&ip);
        let was_configured = st.configured.remove(&ip);
        if peers.is_empty() && !was_target && !was_configured {
            return Err(RemoveError::NotAPeer(ip));
        }
        st.banned.insert(ip);
        let closed: Vec<String> = st
            .conns
            .iter()
            .filter(|(n, c)| c.ip == ip || names.contains(n))
            .map(|(n, _)| n.clone())
            .collect();
        let mut closed_conns = Vec::new();
        for n in &closed {
            closed_conns.extend(st.conns.remove(n));
        }
        for p in &peers {
            if st.peers.remove(&p.name, now, now_micros()).is_some() {
                tracing::warn!(
                    "peer {} ({:016x}) at {ip} removed{}",
                    p.name,
                    p.uid,
                    if p.was_connected {
                        " although still connected (forced)"
                    } else {
                        ""
                    }
                );
            }
        }
        st.version += 1;
        // A live router removed by force hears its tombstone on the connection being closed
        // (its writer sends what is queued before it shuts the socket): it may reconnect at
        // once, and its newer entry then replaces the tombstone everywhere before gossip
        // would have carried it.
        if !closed_conns.is_empty() {
            let tombstones: Vec<&PeerRepr> = st
                .peers
                .tombstones()
                .filter(|p| names.contains(&p.name))
                .collect();
            if !tombstones.is_empty() {
                let frame = gossip_frame(&tombstones);
                for c in &closed_conns {
                    let _ = c.tx.send(frame.clone());
                }
            }
        }
        drop(closed_conns);
        drop(st);
        if let Some(dp) = self.dp() {
            for n in &closed {
                dp.remove_peer(n);
            }
        }
        if let Some(ipam) = self.ipam() {
            let mut ipam = ipam.lock().unwrap_or_else(|e| e.into_inner());
            for p in &mut peers {
                p.blocks_freed = ipam.forget_peer(p.uid);
            }
        }
        self.wake_claims();
        Ok(Removal {
            address: ip,
            peers,
            was_target,
        })
    }

    /// Forgets peers unreachable for too long, drops old tombstones, and stops dialling the
    /// discovered (not configured) addresses of peers forgotten or removed.
    fn age_peers(&self, timing: Timing) {
        let mut st = self.st();
        let st = &mut *st;
        // Who is reachable changes only with this router's connections (its version) or the
        // gossiped entries (the table's change count): walked again only then.
        let key = (st.version, st.peers.change_seq());
        let reachable = match &st.reachable {
            Some((k, set)) if *k == key => set,
            _ => {
                let set = st.peers.reachable(st.conns.keys().map(String::as_str));
                &st.reachable.insert((key, set)).1
            }
        };
        let expired = st.peers.expire(reachable, Instant::now(), timing);
        for name in &expired.forgotten {
            tracing::info!(
                "forgot peer {name}: unreachable for {:?}",
                timing.forget_unreachable_after
            );
        }
        Self::stop_dialling(st, &expired.forgotten);
    }

    /// Stops dialling the last known addresses of `names`, unless configured.
    fn stop_dialling(st: &mut State, names: &[String]) {
        for name in names {
            if let Some(ip) = st.addrs.get(name).copied() {
                if !st.configured.contains(&ip) && !st.conns.values().any(|c| c.ip == ip) {
                    st.targets.remove(&ip);
                }
            }
        }
    }

    fn ensure_dialer(self: &Arc<Self>, ip: IpAddr) {
        if !self.st().dialing.insert(ip) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            me.dial_loop(ip).await;
            me.st().dialing.remove(&ip);
        });
    }

    async fn dial_loop(self: &Arc<Self>, ip: IpAddr) {
        let mut attempt = 0u32;
        // Woken on every connection change (the gossip signal): a connected peer costs
        // nothing until its connection closes.
        let mut changes = self.gossip.subscribe();
        let dial_state = |st: &State| {
            (
                st.targets.contains(&ip),
                st.conns.values().any(|c| c.ip == ip),
            )
        };
        // A mesh coming up has every router dial every other at once: each pair's two dials
        // race, and one connection of each pair is then dropped as a duplicate. Of the two,
        // the router with the higher address gives the other a head start, before its first
        // dial only (reconnection after a loss keeps its timings).
        if !dials_first(local_address_towards(ip, self.settings.port), ip) {
            let wait_for_peer = async {
                loop {
                    changes.borrow_and_update();
                    let (wanted, connected) = dial_state(&self.st());
                    if !wanted || connected || changes.changed().await.is_err() {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(FIRST_DIAL_HEAD_START, wait_for_peer).await;
        }
        loop {
            changes.borrow_and_update();
            let (wanted, connected) = dial_state(&self.st());
            if !wanted {
                return;
            }
            if connected {
                attempt = 0;
                if changes.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let addr = SocketAddr::new(ip, self.settings.port);
            match tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    if self.run_connection(stream, Role::Initiator, ip).await {
                        attempt = 0;
                    }
                }
                Ok(Err(e)) => tracing::debug!("dial {addr}: {e}"),
                Err(_) => tracing::debug!("dial {addr}: timed out"),
            }
            let delay = backoff(attempt, (random_u64() % 1000) as u32);
            attempt = attempt.saturating_add(1);
            tokio::time::sleep(delay).await;
        }
    }

    fn own_entry(&self, st: &State) -> PeerRepr {
        let mut connections: Vec<ConnectionRepr> = st
            .conns
            .iter()
            .map(|(name, c)| ConnectionRepr {
                peer_name: name.clone(),
                address: SocketAddr::new(c.ip, self.settings.port),
                established: true,
            })
            .collect();
        connections.sort_by(|a, b| a.peer_name.cmp(&b.peer_name));
        PeerRepr {
            name: self.settings.name.clone(),
            uid: self.uid,
            short_id: st.short_id,
            version: st.version,
            connections,
            removed: false,
        }
    }

    /// Waits for changes and sends them, one frame per connection, a short while after the
    /// first change (so a burst goes as one frame): this router's own entry if it changed and
    /// tombstones at once; entries learnt from others (the whole table to a new connection)
    /// and learnt IPAM claims in relay rounds at most every [`RELAY_PACE`]; never an entry
    /// to a router that hears it first-hand (`relayed_to`).
    async fn gossip_loop(self: Arc<Self>) {
        let mut changes = self.gossip.subscribe();
        let mut pace = Duration::ZERO;
        let mut relay_due: Option<Instant> = None;
        loop {
            let woken = match relay_due {
                Some(due) => tokio::select! {
                    r = changes.changed() => r.is_ok(),
                    () = tokio::time::sleep_until(due.into()) => true,
                },
                None => changes.changed().await.is_ok(),
            };
            if !woken {
                return;
            }
            tokio::time::sleep(GOSSIP_COALESCE.max(pace)).await;
            changes.mark_unchanged();
            relay_due = self.gossip_round(&mut pace);
        }
    }

    /// One gossip round (see [`Router::gossip_loop`]); returns when a relay round is due, if
    /// one is waiting.
    fn gossip_round(&self, pace: &mut Duration) -> Option<Instant> {
        let now = Instant::now();
        let (relay_allowed, claims_taken) = {
            let mut st = self.st();
            let allowed = st.last_relay.is_none_or(|t| now >= t + RELAY_PACE);
            // Taken before the frame is built: a change meanwhile sets it again.
            let taken = allowed && std::mem::take(&mut st.claims_dirty);
            (allowed, taken)
        };
        let claims = claims_taken.then(|| self.claims_frame());
        let mut st = self.st();
        let st = &mut *st;
        let own = (st.version != st.gossiped_version).then(|| self.own_entry(st));
        st.gossiped_version = st.version;
        let since = std::mem::replace(&mut st.gossiped_seq, st.peers.change_seq());
        *pace = gossip_pace(st.conns.len());
        let relay_pending = claims_taken
            || st.claims_dirty
            || st.peers.change_seq() > st.relayed_seq
            || st.conns.values().any(|c| c.needs_table);
        let relay = relay_pending && relay_allowed;
        // First-hand: this router's entry and the tombstones that changed.
        let mut first_hand: Vec<&PeerRepr> = own.iter().collect();
        first_hand.extend(
            st.peers
                .changed_since(since)
                .into_iter()
                .filter(|p| p.removed),
        );
        // Relayed: what changed since the last relay round, or the whole table.
        let (changed, table) = if relay {
            let changed = st.peers.changed_since(st.relayed_seq);
            st.relayed_seq = st.peers.change_seq();
            st.last_relay = Some(now);
            (changed, st.peers.gossip())
        } else {
            (Vec::new(), Vec::new())
        };
        // Connections that get the same entries get the same bytes: encoded once (in a
        // full mesh, every connection gets just this router's entry).
        let mut encoded: HashMap<Vec<*const PeerRepr>, Vec<u8>> = HashMap::new();
        for (name, c) in st.conns.iter_mut() {
            let mut entries = first_hand.clone();
            if relay {
                entries.extend(if c.needs_table { &table } else { &changed });
                c.needs_table = false;
            }
            entries.sort_by_key(|p| *p as *const PeerRepr);
            entries.dedup_by_key(|p| *p as *const PeerRepr);
            let peers = relayed_to(&self.settings.name, name, &entries);
            if !peers.is_empty() {
                st.gossip.frames_sent += 1;
                st.gossip.entries_sent += peers.len() as u64;
                let key: Vec<*const PeerRepr> = peers.iter().map(|p| *p as *const _).collect();
                let frame = encoded.entry(key).or_insert_with(|| gossip_frame(&peers));
                let _ = c.tx.send(frame.clone());
            }
            if let Some(f) = claims.as_ref().filter(|f| !f.is_empty()) {
                st.gossip.claims_sent += 1;
                let _ = c.tx.send(f.clone());
            }
        }
        (relay_pending && !relay).then(|| st.last_relay.map_or(now, |t| t + RELAY_PACE))
    }

    /// Runs one connection to its end; returns whether it got established.
    async fn run_connection(self: &Arc<Self>, stream: TcpStream, role: Role, ip: IpAddr) -> bool {
        let _ = stream.set_nodelay(true);
        // The kernel watches the connection too, at no cost to the router: probes after 5 s
        // of quiet, and a connection whose data or probes go unacknowledged for DEAD_AFTER
        // fails (its read ends). On the fast path that is what notices a control connection
        // cut while heartbeats still cross, since no keepalive frames are sent there.
        let sock = socket2::SockRef::from(&stream);
        let _ = sock.set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(KEEPALIVE)
                .with_interval(Duration::from_secs(1))
                .with_retries(5),
        );
        let _ = sock.set_tcp_user_timeout(Some(DEAD_AFTER));
        let (mut rd, mut wr) = stream.into_split();
        let mut buf = Vec::new();
        let hs = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            self.handshake(&mut rd, &mut wr, &mut buf, role),
        )
        .await;
        let (peer, session) = match hs {
            Ok(Ok(x)) => x,
            Ok(Err(Refusal::Refused(why))) => {
                tracing::warn!("refused connection with {ip}: {why}");
                let mut st = self.st();
                st.refused += 1;
                st.last_refusal = Some(format!("{ip}: {why}"));
                return false;
            }
            Ok(Err(Refusal::Failed(why))) => {
                tracing::info!("handshake with {ip} failed: {why}");
                self.st().handshake_failures += 1;
                return false;
            }
            Err(_) => {
                tracing::info!("handshake with {ip} timed out");
                self.st().handshake_failures += 1;
                return false;
            }
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let keys = match session {
            Session::Open => None,
            Session::Authenticated(k) => Some(k),
        };
        let initiator = match role {
            Role::Initiator => self.settings.name.clone(),
            Role::Responder => peer.name.clone(),
        };
        // Register, resolving a duplicate connection the same way on both sides.
        let id = {
            let mut st = self.st();
            if let Some(old) = st.conns.get(&peer.name) {
                if !keep_new_connection(&initiator, &old.initiator) {
                    tracing::debug!("duplicate connection to {} dropped", peer.name);
                    return false;
                }
            }
            st.next_conn_id += 1;
            let id = st.next_conn_id;
            st.conns.insert(
                peer.name.clone(),
                Conn {
                    id,
                    ip,
                    role,
                    initiator: initiator.clone(),
                    uid: peer.peer_uid,
                    short_id: peer.short_id,
                    encrypted: keys.is_some(),
                    since: Instant::now(),
                    tx: tx.clone(),
                    needs_table: true,
                },
            );
            st.version += 1;
            // The peer's own entry arrives with its gossip; remember at least who it is.
            st.peers
                .note_connected(&peer.name, peer.peer_uid, peer.short_id, Instant::now());
            st.addrs.insert(peer.name.clone(), ip);
            st.uids.insert(peer.name.clone(), peer.peer_uid);
            // A removed peer that connects again is alive: it may be dialled again.
            st.banned.remove(&ip);
            id
        };
        tracing::info!(
            "connected to {} at {ip} ({:?}, {})",
            peer.name,
            role,
            if keys.is_some() {
                "encrypted"
            } else {
                "unencrypted"
            }
        );
        if let Some(dp) = self.dp() {
            dp.add_peer(PeerSpec {
                name: peer.name.clone(),
                ip,
                short_id: peer.short_id,
                connection_id: id,
                uid: peer.peer_uid,
                fast_path: peer.features.contains(Features::VXLAN),
                odp: peer.features.contains(Features::FAST_DATAPATH),
                keys,
            });
        }
        self.wake_gossip();

        let me = self.clone();
        let writer = tokio::spawn(async move {
            while let Some(mut f) = rx.recv().await {
                me.control_sent.count(&f);
                // Frames queued meanwhile go in the same write: one system call and segment
                // for a round's gossip, claims and acknowledgements, not one each.
                while f.len() < WRITE_BATCH {
                    let Ok(more) = rx.try_recv() else { break };
                    me.control_sent.count(&more);
                    f.extend_from_slice(&more);
                }
                if wr.write_all(&f).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        // This router's own entry and the tombstones go now, what it learnt from others with
        // the next relay round. The peer must know this router's entry even if it stops
        // before its next round (a `peers remove` elsewhere builds its tombstone on it), a
        // removed router must hear it was removed even if the connection is closed again at
        // once, and the peer must know which address blocks are taken before it hands out any.
        let first = {
            let st = self.st();
            let own = self.own_entry(&st);
            let mut entries: Vec<&PeerRepr> = vec![&own];
            entries.extend(st.peers.tombstones());
            gossip_frame(&entries)
        };
        let _ = tx.send(first);
        let _ = tx.send(self.claims_frame());
        let _ = tx.send(self.macs_frame());
        let mut tick = tokio::time::interval(KEEPALIVE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut last_rx = Instant::now();
        let reason = loop {
            let still_ours = self.st().conns.get(&peer.name).is_some_and(|c| c.id == id);
            if !still_ours {
                break "replaced or removed".to_string();
            }
            tokio::select! {
                r = read_frame(&mut rd, &mut buf) => match r {
                    Ok((t, payload)) => {
                        last_rx = Instant::now();
                        if let Err(why) = self.handle(&peer.name, t, &payload) {
                            break why;
                        }
                    }
                    Err(e) => break format!("read: {e}"),
                },
                _ = tick.tick() => {
                    // On the fast path, heartbeats both ways show both routers alive (each
                    // side's selector needs its own heartbeats acknowledged and the other's
                    // arriving): no keepalive is sent, and silence alone is no death. A side
                    // that stops hearing heartbeats reports it over this connection at once.
                    let fast_alive = self
                        .dp()
                        .is_some_and(|dp| dp.fast_alive(&peer.name, DEAD_AFTER));
                    if fast_alive {
                        // Heard, in effect: when the fast path stops counting, the peer
                        // (which sends keepalives again once its side falls back too) has the
                        // whole DEAD_AFTER from here, not from its last control frame.
                        last_rx = Instant::now();
                    } else {
                        if last_rx.elapsed() > DEAD_AFTER {
                            break "peer silent".to_string();
                        }
                        let _ = tx.send(gossip_frame(&[]));
                    }
                }
            }
        };
        tracing::info!("connection to {} closed: {reason}", peer.name);
        let removed = {
            let mut st = self.st();
            if st.conns.get(&peer.name).is_some_and(|c| c.id == id) {
                st.conns.remove(&peer.name);
                st.version += 1;
                true
            } else {
                false
            }
        };
        if removed {
            if let Some(dp) = self.dp() {
                dp.remove_peer(&peer.name);
            }
            self.wake_gossip();
        }
        drop(tx);
        writer.abort();
        true
    }

    async fn handshake(
        &self,
        rd: &mut tokio::net::tcp::OwnedReadHalf,
        wr: &mut tokio::net::tcp::OwnedWriteHalf,
        buf: &mut Vec<u8>,
        role: Role,
    ) -> Result<(hello::Repr, Session), Refusal> {
        let failed = |e: &dyn std::fmt::Display| Refusal::Failed(e.to_string());
        let offer = LocalOffer::random().map_err(|e| failed(&e))?;
        let short_id = self.st().short_id;
        let mine = hello::Repr {
            version_min: hello::PROTOCOL_VERSION_MIN,
            version_max: hello::PROTOCOL_VERSION_MAX,
            password: self.settings.password.is_some(),
            features: if self.settings.fast_path && self.settings.odp {
                Features(Features::SLEEVE.0 | Features::VXLAN.0 | Features::FAST_DATAPATH.0)
            } else if self.settings.fast_path {
                Features(Features::SLEEVE.0 | Features::VXLAN.0)
            } else {
                Features::SLEEVE
            },
            peer_uid: self.uid,
            short_id,
            nonce: offer.nonce(),
            dh_public: offer.dh_public(),
            name: self.settings.name.clone(),
        };
        let mut local = vec![0u8; mine.buffer_len()];
        mine.emit(&mut hello::Packet::new_unchecked(&mut local[..]))
            .map_err(|e| failed(&e))?;
        wr.write_all(&frame(MessageType::Hello, &local))
            .await
            .map_err(|e| failed(&e))?;
        let (t, peer_bytes) = read_frame(rd, buf).await.map_err(|e| failed(&e))?;
        if t != MessageType::Hello {
            return Err(Refusal::Failed(format!("expected Hello, got {t:?}")));
        }
        let peer = hello::Packet::new_checked(&peer_bytes[..])
            .and_then(|p| hello::Repr::parse(&p))
            .map_err(|e| failed(&e))?;
        hello::negotiate(
            (mine.version_min, mine.version_max),
            (peer.version_min, peer.version_max),
        )
        .map_err(|e| failed(&e))?;
        if peer.name == self.settings.name {
            return Err(Refusal::Failed(if peer.peer_uid == self.uid {
                "connected to itself".to_string()
            } else {
                format!("the peer uses this router's name {:?}", peer.name)
            }));
        }
        let pending = match handshake::begin(
            role,
            self.settings.password.as_deref(),
            offer,
            &local,
            &peer_bytes,
        ) {
            Ok(p) => p,
            Err(e) => {
                let why = e.to_string();
                let _ = wr
                    .write_all(&frame(MessageType::Close, why.as_bytes()))
                    .await;
                return Err(Refusal::Refused(why));
            }
        };
        let proof = match pending.local_proof() {
            Some(p) => {
                let mut b = vec![0u8; auth::MESSAGE_LEN];
                p.emit(&mut auth::Packet::new_unchecked(&mut b[..]))
                    .map_err(|e| failed(&e))?;
                wr.write_all(&frame(MessageType::AuthProof, &b))
                    .await
                    .map_err(|e| failed(&e))?;
                let (t, pb) = read_frame(rd, buf).await.map_err(|e| {
                    Refusal::Refused(format!(
                        "the peer closed during authentication ({e}): its password differs"
                    ))
                })?;
                match t {
                    MessageType::AuthProof => Some(
                        auth::Packet::new_checked(&pb[..])
                            .and_then(|p| auth::Repr::parse(&p))
                            .map_err(|e| Refusal::Refused(e.to_string()))?,
                    ),
                    MessageType::Close => {
                        return Err(Refusal::Refused(format!(
                            "the peer refused: {}",
                            String::from_utf8_lossy(&pb)
                        )))
                    }
                    other => {
                        return Err(Refusal::Failed(format!(
                            "expected AuthProof, got {other:?}"
                        )))
                    }
                }
            }
            None => None,
        };
        match pending.finish(proof.as_ref()) {
            Ok(s) => Ok((peer, s)),
            Err(e) => {
                let why = e.to_string();
                let _ = wr
                    .write_all(&frame(MessageType::Close, why.as_bytes()))
                    .await;
                Err(Refusal::Refused(why))
            }
        }
    }

    fn handle(self: &Arc<Self>, from: &str, t: MessageType, payload: &[u8]) -> Result<(), String> {
        match t {
            MessageType::Topology => {
                // Only entries newer than those held are copied out of the frame (see
                // `merge`, which keeps the same rule).
                let mut st = self.st();
                let parsed = gossip::Packet::new_checked(payload).and_then(|p| {
                    let repr = gossip::Repr::parse_with(&p, |name, version| {
                        self.worth_merging(&st, name, version)
                    })?;
                    Ok((repr, p.peer_count()))
                });
                let repr = match parsed {
                    Ok((repr, count)) => {
                        st.gossip.frames_received += 1;
                        st.gossip.entries_received += u64::from(count);
                        repr
                    }
                    Err(_) => {
                        st.malformed_control += 1;
                        return Ok(());
                    }
                };
                drop(st);
                if !repr.peers.is_empty() {
                    self.merge(repr.peers);
                }
            }
            MessageType::HeartbeatAck => {
                match heartbeat::Packet::new_checked(payload)
                    .and_then(|p| heartbeat::Repr::parse(&p))
                {
                    Ok(ack) if ack.kind == heartbeat::Kind::Ack => {
                        let encrypted = self.st().conns.get(from).is_some_and(|c| c.encrypted);
                        if let Some(dp) = self.dp() {
                            dp.acked(
                                from,
                                ack.sequence,
                                crate::datapath::sleeve::heartbeat_size(ack.padding_len, encrypted),
                            );
                        }
                    }
                    _ => self.st().malformed_control += 1,
                }
            }
            MessageType::Close => {
                return Err(format!("peer closed: {}", String::from_utf8_lossy(payload)));
            }
            MessageType::LocalMacs => {
                match crate::wire::macs::Packet::new_checked(payload)
                    .and_then(|p| crate::wire::macs::Repr::parse(&p))
                {
                    Ok(r) => {
                        if let Some(dp) = self.dp() {
                            dp.set_peer_macs(from, r.macs);
                        }
                    }
                    Err(_) => self.st().malformed_control += 1,
                }
            }
            MessageType::FastPathReport => {
                match crate::wire::fast_report::Packet::new_checked(payload)
                    .and_then(|p| crate::wire::fast_report::Repr::parse(&p))
                {
                    Ok(report) => {
                        if let Some(dp) = self.dp() {
                            dp.fast_report(from, &report);
                        }
                    }
                    Err(_) => self.st().malformed_control += 1,
                }
            }
            MessageType::IpamClaims => {
                let repr = match crate::wire::ipam::Packet::new_checked(payload)
                    .and_then(|p| crate::wire::ipam::Repr::parse(&p))
                {
                    Ok(r) => r,
                    Err(_) => {
                        self.st().malformed_control += 1;
                        return Ok(());
                    }
                };
                if let Some(ipam) = self.ipam() {
                    let out = ipam.lock().unwrap_or_else(|e| e.into_inner()).merge(&repr);
                    if out.changed {
                        self.wake_claims();
                    }
                }
            }
            // Unknown types are skipped.
            _ => {}
        }
        Ok(())
    }

    /// Whether a received entry can change anything: one about this router (a tombstone of
    /// it, an earlier incarnation), or news to the table.
    fn worth_merging(&self, st: &State, name: &str, version: u64) -> bool {
        name == self.settings.name || st.peers.is_news(name, version)
    }

    fn merge(self: &Arc<Self>, mut received: Vec<PeerRepr>) {
        let mut discovered = Vec::new();
        let changed = {
            let mut st = self.st();
            let st = &mut *st;
            // Only entries newer than what is stored can change anything: the rest (most of a
            // frame, in a mesh that already agrees) is dropped before any per-connection work.
            received.retain(|p| self.worth_merging(st, &p.name, p.version));
            if received.is_empty() {
                return;
            }
            let mut own_changed = false;
            for p in received.iter().filter(|p| p.name == self.settings.name) {
                if p.removed && st.tombstone_heard < Some(p.version) {
                    // Someone ran `peers remove` on this live router (forced, or across a
                    // partition): its blocks are being freed; its containers in them will be
                    // re-addressed as conflicts. It stays in the overlay by outranking the
                    // tombstone (below), unless its own entry already does (it changed
                    // while the tombstone was on its way).
                    tracing::warn!(
                        "this router was removed by a peer (tombstone version {}): rejoining; \
                         its IPAM blocks were freed and its containers get new addresses",
                        p.version
                    );
                    st.tombstone_heard = Some(p.version);
                }
                if p.version < st.version {
                    continue;
                }
                if p.removed {
                    st.version = p.version + 1;
                    own_changed = true;
                } else if p.uid != self.uid {
                    // An earlier incarnation of this router is still gossiped: outrank it.
                    st.version = p.version + 1;
                    own_changed = true;
                }
            }
            // Learn where peers are, for `peers remove ADDR` and to stop dialling removed ones.
            for p in received.iter().filter(|p| !p.removed) {
                for c in &p.connections {
                    if c.peer_name != self.settings.name
                        && !st.conns.contains_key(&c.peer_name)
                        && st.addrs.get(&c.peer_name) != Some(&c.address.ip())
                    {
                        st.addrs.insert(c.peer_name.clone(), c.address.ip());
                    }
                }
            }
            for p in received
                .iter()
                .filter(|p| !p.removed && p.name != self.settings.name)
            {
                st.uids.insert(p.name.clone(), p.uid);
            }
            let fresh: Vec<String> = received
                .iter()
                .filter(|p| !p.removed && p.name != self.settings.name)
                .map(|p| p.name.clone())
                .collect();
            let merged = st.peers.merge(received, Instant::now());
            // A connected peer that moved to another short id (a clash): the datapath's pair
            // VNIs follow, or frames to it would carry the old one.
            let moved: Vec<(String, u16)> = fresh
                .iter()
                .filter_map(|name| {
                    let entry = st.peers.get(name)?;
                    let conn = st.conns.get_mut(name)?;
                    (conn.uid == entry.uid && conn.short_id != entry.short_id).then(|| {
                        conn.short_id = entry.short_id;
                        (name.clone(), entry.short_id)
                    })
                })
                .collect();
            if !moved.is_empty() {
                if let Some(dp) = self.dp() {
                    for (name, id) in &moved {
                        dp.set_peer_short_id(name, *id);
                    }
                }
            }
            for name in &merged.removed {
                tracing::info!("peer {name} was removed (tombstone from gossip)");
            }
            Self::stop_dialling(st, &merged.removed);
            let clash = st
                .peers
                .live()
                .any(|p| p.short_id == st.short_id && short_id_conflict_moves_us(self.uid, p.uid));
            if clash {
                let used: BTreeSet<u16> = st.peers.live().map(|p| p.short_id).collect();
                let start = (random_u64() % u64::from(MAX_SHORT_ID)) as u16;
                if let Some(id) = (0..MAX_SHORT_ID)
                    .map(|i| (start + i) % MAX_SHORT_ID + 1)
                    .find(|id| !used.contains(id))
                {
                    tracing::info!("short id {} taken; now {id}", st.short_id);
                    st.short_id = id;
                    st.version += 1;
                    own_changed = true;
                    if let Some(dp) = self.dp() {
                        dp.set_short_id(id);
                    }
                }
            }
            // Discovery looks at the entries that just arrived: an address in an older entry
            // was looked at when that entry arrived (targets are kept until forgotten).
            for p in fresh.iter().filter_map(|name| st.peers.get(name)) {
                for c in &p.connections {
                    let ip = c.address.ip();
                    if c.peer_name != self.settings.name
                        && !st.conns.contains_key(&c.peer_name)
                        && !st.peers.is_removed(&c.peer_name)
                        && !st.targets.contains(&ip)
                        && !st.banned.contains(&ip)
                        && !discovered.contains(&ip)
                    {
                        discovered.push(ip);
                    }
                }
            }
            for ip in &discovered {
                st.targets.insert(*ip);
            }
            merged.changed || own_changed
        };
        for ip in discovered {
            tracing::info!("discovered peer address {ip}");
            self.ensure_dialer(ip);
        }
        if changed {
            self.wake_gossip();
        }
    }

    /// Answers a heartbeat that arrived from `ip` over that peer's control connection.
    pub fn ack_heartbeat(&self, ip: IpAddr, hb: heartbeat::Repr) {
        let st = self.st();
        if let Some(c) = st.conns.values().find(|c| c.ip == ip) {
            Self::send_ack(c, &hb, MessageType::HeartbeatAck);
        }
    }

    /// The control plane's status.
    pub fn status(&self) -> RouterStatus {
        let dp = self.dp();
        let st = self.st();
        let mut peers: Vec<PeerStatus> = std::iter::once(self.own_entry(&st))
            .chain(st.peers.live().cloned())
            .map(|p| PeerStatus {
                name: p.name,
                uid: p.uid,
                short_id: p.short_id,
                version: p.version,
                connections: p.connections.into_iter().map(|c| c.peer_name).collect(),
            })
            .collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        let mut connections: Vec<ConnStatus> = st
            .conns
            .iter()
            .map(|(name, c)| {
                let path = dp.as_ref().and_then(|d| d.peer_path(name));
                ConnStatus {
                    peer: name.clone(),
                    address: c.ip,
                    initiator: c.initiator.clone(),
                    role: format!("{:?}", c.role),
                    peer_uid: c.uid,
                    short_id: c.short_id,
                    encrypted: c.encrypted,
                    datapath: path
                        .as_ref()
                        .map(|p| p.datapath.clone())
                        .or_else(|| dp.as_ref().map(|d| d.kind().to_string()))
                        .unwrap_or_else(|| "none".to_string()),
                    path,
                    age_s: c.since.elapsed().as_secs(),
                    stats: dp.as_ref().and_then(|d| d.peer_stats(name)),
                }
            })
            .collect();
        connections.sort_by(|a, b| a.peer.cmp(&b.peer));
        RouterStatus {
            name: self.settings.name.clone(),
            uid: self.uid,
            short_id: st.short_id,
            encrypted: self.settings.password.is_some(),
            peers,
            connections,
            targets: st.targets.iter().copied().collect(),
            removed_peers: st.peers.removed(),
            refused: st.refused,
            handshake_failures: st.handshake_failures,
            last_refusal: st.last_refusal.clone(),
            malformed_control: st.malformed_control,
            gossip: st.gossip,
            control_sent: self.control_sent.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("h1", "h2", true)]
    #[case("h2", "h1", false)]
    fn duplicate_connections_resolve_the_same_on_both_sides(
        #[case] new: &str,
        #[case] old: &str,
        #[case] keep: bool,
    ) {
        assert_eq!(keep_new_connection(new, old), keep);
        // The other side sees the two connections in the other order and keeps the same one.
        assert_eq!(keep_new_connection(old, new), !keep);
    }

    #[test]
    fn exactly_one_side_of_a_short_id_conflict_moves() {
        assert!(short_id_conflict_moves_us(9, 3));
        assert!(!short_id_conflict_moves_us(3, 9));
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_bounded_jitter() {
        assert_eq!(backoff(0, 0), Duration::from_millis(250));
        assert_eq!(backoff(1, 0), Duration::from_millis(500));
        assert_eq!(backoff(5, 0), Duration::from_millis(8000));
        assert_eq!(backoff(40, 0), Duration::from_millis(8000));
        assert!(backoff(5, 999) < Duration::from_millis(12_000));
        assert!(backoff(0, 999) > Duration::from_millis(250));
    }

    const H2: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 1, 2));
    const H3: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 1, 3));
    const H3_UID: u64 = 0x33;

    fn entry(name: &str, uid: u64, version: u64, conns: &[(&str, IpAddr)]) -> PeerRepr {
        PeerRepr {
            name: name.into(),
            uid,
            short_id: (uid & 0xfff) as u16,
            version,
            connections: conns
                .iter()
                .map(|(n, ip)| ConnectionRepr {
                    peer_name: (*n).into(),
                    address: SocketAddr::new(*ip, 6783),
                    established: true,
                })
                .collect(),
            removed: false,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 1, last))
    }

    /// Of two routers coming up together, exactly one dials at once: the lower address.
    #[rstest]
    #[case::lower_dials(Some(ip(1)), ip(2), true)]
    #[case::higher_waits(Some(ip(2)), ip(1), false)]
    #[case::unknown_local_address_dials(None, ip(1), true)]
    fn one_side_of_each_pair_dials_first(
        #[case] local: Option<IpAddr>,
        #[case] peer: IpAddr,
        #[case] first: bool,
    ) {
        assert_eq!(dials_first(local, peer), first);
        if let Some(l) = local {
            assert_ne!(dials_first(Some(peer), l), first, "both sides agree");
        }
    }

    /// h1 gossips to h2: its own entry always; h2's own entry never; an entry whose owner is
    /// connected to h2 not (the owner tells h2 itself); the rest yes; tombstones always, the
    /// receiver's own included (a forced `peers remove` of a live h2 reaches h2 that way).
    #[rstest]
    #[case::own_entry_always("h1", &[("h2", ip(2))], false, true)]
    #[case::the_receivers_own_entry("h2", &[("h1", ip(1))], false, false)]
    #[case::the_receivers_own_tombstone("h2", &[], true, true)]
    #[case::owner_connected_to_the_receiver("h3", &[("h2", ip(2))], false, false)]
    #[case::tombstone_of_a_router_connected_to_the_receiver("h3", &[("h2", ip(2))], true, true)]
    #[case::owner_not_connected_to_the_receiver("h3", &[("h4", ip(4))], false, true)]
    #[case::owner_without_connections("h5", &[], false, true)]
    fn gossip_relays_only_what_the_receiver_cannot_hear_first_hand(
        #[case] owner: &str,
        #[case] conns: &[(&str, IpAddr)],
        #[case] removed: bool,
        #[case] sent: bool,
    ) {
        let e = PeerRepr {
            removed,
            ..entry(owner, 7, 1, conns)
        };
        assert_eq!(relayed_to("h1", "h2", &[&e]).len(), usize::from(sent));
    }

    /// Router h1 connected to h2, knowing h3 from gossip (connected to h2 when
    /// `h3_connected`), with an IPAM in which h3 owns the blocks of two containers.
    fn h1_knowing_h3(h3_connected: bool) -> (Arc<Router>, Arc<Mutex<IpamSource>>) {
        let r = Router::new(
            Settings {
                name: "h1".into(),
                password: None,
                port: 6783,
                fast_path: false,
                odp: false,
            },
            &[H2, H3],
            0x11,
        );
        let (tx, _rx) = mpsc::unbounded_channel();
        r.st().conns.insert(
            "h2".into(),
            Conn {
                id: 1,
                ip: H2,
                role: Role::Initiator,
                initiator: "h1".into(),
                uid: 0x22,
                short_id: 0x22,
                encrypted: false,
                since: Instant::now(),
                tx,
                needs_table: true,
            },
        );
        let h2_conns: &[(&str, IpAddr)] = if h3_connected {
            &[("h1", IpAddr::from([198, 18, 1, 1])), ("h3", H3)]
        } else {
            &[("h1", IpAddr::from([198, 18, 1, 1]))]
        };
        let range = crate::config::Range {
            addr: std::net::Ipv4Addr::new(198, 19, 0, 0),
            len: 16,
        };
        let mut h3 = crate::ipam::Ipam::new(range, H3_UID).unwrap_or_else(|e| panic!("{e}"));
        for c in ["c5", "c6"] {
            h3.allocate(c).unwrap_or_else(|e| panic!("{e}"));
        }
        let ipam = Arc::new(Mutex::new(
            IpamSource::open(range, 0x11, None).unwrap_or_else(|e| panic!("{e}")),
        ));
        ipam.lock()
            .unwrap_or_else(|e| e.into_inner())
            .merge(&h3.claims());
        r.set_ipam(ipam.clone());
        // Earlier gossip: h2 was connected to h3 at its address.
        r.merge(vec![entry(
            "h2",
            0x22,
            4,
            &[("h1", IpAddr::from([198, 18, 1, 1])), ("h3", H3)],
        )]);
        r.merge(vec![
            entry("h2", 0x22, 5, h2_conns),
            entry("h3", H3_UID, 7, &[("h2", H2)]),
        ]);
        (r, ipam)
    }

    fn h3_blocks(ipam: &Arc<Mutex<IpamSource>>) -> usize {
        let st = ipam.lock().unwrap_or_else(|e| e.into_inner()).status();
        st.blocks.iter().filter(|b| b.owner == Some(H3_UID)).count()
    }

    #[rstest]
    #[case::gone(false, false, Ok(false))]
    #[case::live_is_refused(true, false, Err("h2"))]
    #[case::live_forced(true, true, Ok(true))]
    fn remove_refuses_a_live_peer_unless_forced(
        #[case] h3_connected: bool,
        #[case] force: bool,
        #[case] want: Result<bool, &str>,
    ) {
        let (r, ipam) = h1_knowing_h3(h3_connected);
        let owned = h3_blocks(&ipam);
        assert!(owned >= 1);
        match (r.remove_peer(H3, force), want) {
            (Ok(removal), Ok(was_connected)) => {
                assert_eq!(removal.peers.len(), 1);
                let p = &removal.peers[0];
                assert_eq!((p.name.as_str(), p.uid), ("h3", H3_UID));
                assert_eq!(p.was_connected, was_connected);
                assert_eq!(removal.blocks_freed(), owned);
                assert!(removal.was_target);
                assert_eq!(h3_blocks(&ipam), 0);
                let st = r.status();
                assert_eq!(st.removed_peers, ["h3"]);
                assert!(st.peers.iter().all(|p| p.name != "h3"));
                assert!(!st.targets.contains(&H3));
            }
            (Err(RemoveError::StillConnected { name, via, .. }), Err(seen_by)) => {
                assert_eq!((name.as_str(), via), ("h3", vec![seen_by.to_string()]));
                assert_eq!(h3_blocks(&ipam), owned, "nothing freed");
                assert!(r.status().peers.iter().any(|p| p.name == "h3"));
                assert!(r.status().targets.contains(&H3));
            }
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn stale_gossip_neither_revives_nor_redials_a_removed_peer() {
        let (r, _) = h1_knowing_h3(false);
        assert!(r.remove_peer(H3, false).is_ok());
        // h2 has not heard the removal yet: it still gossips h3's old entry and a connection.
        r.merge(vec![
            entry("h2", 0x22, 6, &[("h3", H3)]),
            entry("h3", H3_UID, 7, &[("h2", H2)]),
        ]);
        let st = r.status();
        assert!(st.peers.iter().all(|p| p.name != "h3"));
        assert!(!st.targets.contains(&H3), "not rediscovered");
        assert!(r.st().banned.contains(&H3));
        // A new incarnation of h3 (a restart: its versions start at its start time, later
        // than the tombstone's) is welcome again.
        r.merge(vec![entry("h3", H3_UID, now_micros() + 1_000_000, &[])]);
        assert!(r.status().peers.iter().any(|p| p.name == "h3"));
        assert!(r.status().removed_peers.is_empty());
    }

    #[test]
    fn removing_an_unknown_address_is_an_error_and_a_silent_target_just_stops() {
        let (r, _) = h1_knowing_h3(false);
        let unknown = IpAddr::from([198, 18, 1, 99]);
        assert_eq!(
            r.remove_peer(unknown, false),
            Err(RemoveError::NotAPeer(unknown))
        );
        // H2's address is a target, but the router also knows h2 is connected: refused.
        assert!(matches!(
            r.remove_peer(H2, false),
            Err(RemoveError::StillConnected { .. })
        ));
        // An address that was configured but never answered: dialling stops, nothing freed.
        let silent = IpAddr::from([198, 18, 1, 50]);
        let r = Router::new(
            Settings {
                name: "h1".into(),
                password: None,
                port: 6783,
                fast_path: false,
                odp: false,
            },
            &[silent],
            0x11,
        );
        let removal = r
            .remove_peer(silent, false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(removal.peers.is_empty() && removal.was_target);
        assert_eq!(removal.blocks_freed(), 0);
        assert!(r.status().targets.is_empty());
        assert!(matches!(
            r.remove_peer(silent, false),
            Err(RemoveError::NotAPeer(_))
        ));
    }

    #[test]
    fn a_router_that_hears_its_own_tombstone_outranks_it() {
        let (r, _) = h1_knowing_h3(false);
        let before = r.st().version;
        let mut me = entry("h1", 0x11, before + 3, &[]);
        me.removed = true;
        r.merge(vec![me]);
        assert_eq!(r.st().version, before + 4);
        assert!(r.status().peers.iter().any(|p| p.name == "h1"));
    }

    #[test]
    fn remove_errors_say_how_to_proceed() {
        let errors = [
            RemoveError::StillConnected {
                name: "h3".into(),
                address: H3,
                via: vec!["h1".into(), "h2".into()],
            },
            RemoveError::NotAPeer(H3),
        ];
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        insta::assert_snapshot!(text.join("\n"));
    }

    /// A fast-path report goes over the connection it is about, and is dropped once that
    /// connection was replaced: it speaks of the old connection's heartbeats (a stale "only
    /// small ones arrive" pushed the new connection to sleeve while a mesh came up).
    #[test]
    fn fast_reports_of_a_replaced_connection_are_dropped() {
        let r = Router::new(
            Settings {
                name: "h1".into(),
                password: None,
                port: 6783,
                fast_path: true,
                odp: false,
            },
            &[H2],
            0x11,
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        r.st().conns.insert(
            "h2".into(),
            Conn {
                id: 2,
                ip: H2,
                role: Role::Responder,
                initiator: "h2".into(),
                uid: 0x22,
                short_id: 0x22,
                encrypted: false,
                since: Instant::now(),
                tx,
                needs_table: false,
            },
        );
        let report = crate::wire::fast_report::Repr {
            small: true,
            full: false,
            timestamp_ns: 7,
            busy: true,
        };
        r.send_fast_report(0x22, 1, &report);
        assert!(
            rx.try_recv().is_err(),
            "a report about connection 1 went over 2"
        );
        r.send_fast_report(0x22, 2, &report);
        let frame = rx
            .try_recv()
            .expect("the report about connection 2 is sent");
        assert!(!frame.is_empty());
    }
}
