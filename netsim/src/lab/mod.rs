//! The lab lifecycle: applies a [`Plan`] through the kernel adapters and owns teardown.
//!
//! A lab is a set of network namespaces named `netsim-<id>-<node>` plus a state file
//! (`/run/netsim/<id>.json`, see [`state`]) written before anything else is made. A [`Lab`]
//! value owns its lab: dropping it tears everything down. [`Lab::persist`] hands the lab over
//! to nobody (for `netsim up`); [`down`] and [`clean`] remove labs from any process.

mod apply;
pub mod bench;
mod error;
pub mod faults;
pub mod shaping;
pub mod state;

use std::ffi::OsStr;
use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use error::LabError;
pub use state::{LabState, Phase, ProcRecord};

use crate::kernel::{netns, process};
use crate::model::Plan;
use state::Owner;

/// Longest lab id.
pub const ID_MAX: usize = 20;

/// Prefix of every namespace a lab makes.
pub const NETNS_PREFIX: &str = "netsim-";

/// The phases of bring-up, in order, as reported by [`Progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpPhase {
    /// Creating network namespaces.
    Namespaces,
    /// Creating bridges inside switch nodes.
    Bridges,
    /// Creating veth pairs.
    Links,
    /// Bringing interfaces up, adding addresses and routes.
    Configure,
    /// Waiting until every interface is operationally up. The kernel turns carrier changes
    /// into operational state asynchronously (its link watcher may wait up to a second), and
    /// until then a bridge port drops frames: a lab is not ready before that.
    Settle,
}

/// Bring-up progress: `done` of `total` items of `phase` are finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// The phase running.
    pub phase: UpPhase,
    /// Items finished.
    pub done: usize,
    /// Items in this phase.
    pub total: usize,
}

impl Progress {
    fn new(phase: UpPhase, done: usize, total: usize) -> Self {
        Self { phase, done, total }
    }
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Options of [`Lab::up`].
#[derive(Clone, Default)]
pub struct UpOptions {
    /// Lab id; by default `<plan name>-<4 random hex digits>`.
    pub name: Option<String>,
    /// Keep the lab when its owner dies (so `clean` leaves it once complete).
    pub persist: bool,
    /// Called as bring-up advances.
    pub progress: Option<ProgressFn>,
    /// The topology file the plan came from, recorded for `netsim list`.
    pub file: Option<PathBuf>,
    /// The shaping backend; by default chosen from the kernel's features
    /// ([`shaping::Backend::choose`]).
    pub backend: Option<shaping::Backend>,
}

impl std::fmt::Debug for UpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpOptions")
            .field("name", &self.name)
            .field("persist", &self.persist)
            .field("progress", &self.progress.is_some())
            .field("file", &self.file)
            .field("backend", &self.backend)
            .finish()
    }
}

/// What `netsim list` shows of a lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabInfo {
    /// Lab id.
    pub id: String,
    /// Plan name.
    pub plan: String,
    /// Topology file, if any.
    pub file: Option<PathBuf>,
    /// Owning process, if the lab has one.
    pub owner_pid: Option<u32>,
    /// Whether the owning process is alive.
    pub owner_alive: bool,
    /// Whether the lab outlives its owner.
    pub persist: bool,
    /// How far bring-up got.
    pub phase: Phase,
    /// Number of nodes.
    pub nodes: usize,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// The link shaping backend.
    pub backend: Option<shaping::Backend>,
    /// Faults in force, one phrase each (`cut h1 -- h2`, `partition h1 | h2`, `block h1 udp
    /// 6784`, `stopped pid 123`).
    pub faults: Vec<String>,
}

impl From<&LabState> for LabInfo {
    fn from(s: &LabState) -> Self {
        Self {
            id: s.id.clone(),
            plan: s.plan.clone(),
            file: s.file.clone(),
            owner_pid: s.owner.map(|o| o.pid),
            owner_alive: s.owner.is_some_and(|o| o.alive()),
            persist: s.persist,
            phase: s.phase,
            nodes: s.nodes.len(),
            created: s.created,
            backend: s.net.as_ref().map(|n| n.backend),
            faults: faults::fault_list(s),
        }
    }
}

/// What [`clean`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanReport {
    /// Ids of the labs removed.
    pub labs: Vec<String>,
    /// Namespaces deleted.
    pub namespaces: usize,
    /// Processes killed.
    pub processes: usize,
    /// Namespaces named `netsim-*` that no state file of this run directory claims. They are
    /// left alone (they may belong to labs of another run directory); `ip netns del` removes
    /// one by hand.
    pub unknown: Vec<String>,
}

/// Shared between a [`Lab`] and its [`NodeHandle`]s.
struct Inner {
    id: String,
    plan: Plan,
    path: PathBuf,
    state: Mutex<LabState>,
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, LabState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running lab, torn down when dropped.
pub struct Lab {
    inner: Arc<Inner>,
    /// Set once the lab was torn down or handed over, so `Drop` does nothing.
    released: bool,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab").field("id", &self.inner.id).finish()
    }
}

/// The namespace name of `node` in lab `id`.
pub fn netns_name(id: &str, node: &str) -> String {
    format!("{NETNS_PREFIX}{id}-{node}")
}

/// Checks a lab id: 1 to [`ID_MAX`] of `[a-z0-9-]`, not starting or ending with `-`.
pub fn validate_id(id: &str) -> Result<(), LabError> {
    let bad = |reason: &str| LabError::InvalidId {
        id: id.to_string(),
        reason: reason.to_string(),
    };
    if id.is_empty() || id.len() > ID_MAX {
        return Err(bad("wrong length"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(bad("only lowercase letters, digits and '-' are allowed"));
    }
    if id.starts_with('-') || id.ends_with('-') {
        return Err(bad("must not start or end with '-'"));
    }
    Ok(())
}

/// A random 16-bit number (ids, ICMP identifiers; nothing security relevant).
pub(crate) fn random_u16() -> u16 {
    let mut bytes = [0u8; 2];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if read.is_err() {
        // Fall back on the clock and pid: uniqueness of ids is still checked by the state file.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id();
        return (nanos >> 8) as u16;
    }
    u16::from_be_bytes(bytes)
}

/// Four random hex digits.
fn random_suffix() -> String {
    format!("{:04x}", random_u16())
}

/// The default id of a lab made from a plan named `plan`.
pub fn default_id(plan: &str) -> String {
    let mut stem: String = plan
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    stem.truncate(ID_MAX - 5);
    let stem = stem.trim_matches('-');
    let stem = if stem.is_empty() { "lab" } else { stem };
    format!("{stem}-{}", random_suffix())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Kills the processes and deletes the namespaces a state records. Synchronous and
/// best-effort: it goes on past failures and returns the first, with counts of what it did.
fn teardown(state: &LabState, only: Option<&[String]>) -> (usize, usize, Option<LabError>) {
    let mut killed = 0;
    let wires = state
        .net
        .iter()
        .flat_map(|n| n.links.iter())
        .filter_map(|l| l.wire.as_ref().and_then(|w| w.pid.as_ref()));
    for p in state.pids.iter().chain(wires) {
        if process::kill_if_same(p.pid, p.start) {
            killed += 1;
        }
    }
    let names: Vec<&String> = match only {
        Some(only) => only.iter().collect(),
        None => state.namespaces.iter().collect(),
    };
    // Unmounting is cheap but not free: spread it over a few threads for big labs.
    let first_err: Mutex<Option<LabError>> = Mutex::new(None);
    let deleted = std::sync::atomic::AtomicUsize::new(0);
    let chunk = names.len().div_ceil(4).max(16);
    std::thread::scope(|scope| {
        for part in names.chunks(chunk) {
            let (first_err, deleted) = (&first_err, &deleted);
            let lab = &state.id;
            scope.spawn(move || {
                for name in part {
                    let existed = netns::exists(name);
                    match netns::delete(name) {
                        Ok(()) => {
                            if existed {
                                deleted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                        Err(cause) => {
                            let mut slot = first_err.lock().unwrap_or_else(|p| p.into_inner());
                            if slot.is_none() {
                                *slot = Some(LabError::Kernel {
                                    lab: lab.clone(),
                                    node: None,
                                    cause: Box::new(cause),
                                });
                            }
                        }
                    }
                }
            });
        }
    });
    let err = first_err.into_inner().unwrap_or_else(|p| p.into_inner());
    (killed, deleted.into_inner(), err)
}

/// Removes a state file, ignoring one already gone.
fn remove_state(id: &str, path: &std::path::Path) -> Result<(), LabError> {
    // Files of processes the lab ran (e.g. overlay routers' sockets and state) go with it.
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir.join(format!("{id}-overlay")));
    }
    let removed = match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(cause) => Err(LabError::State {
            lab: id.to_string(),
            path: path.to_path_buf(),
            cause,
        }),
    };
    // The run directory goes with the last lab in it (removing a directory that still holds
    // anything fails, and is left alone; `LabState::create` makes it again if a lab coming
    // up loses this race).
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir(dir);
    }
    removed
}

impl Lab {
    /// Brings a lab up from `plan`. On failure everything made so far is removed and the
    /// original error returned.
    pub async fn up(plan: Plan, opts: UpOptions) -> Result<Lab, LabError> {
        let id = match &opts.name {
            Some(name) => name.clone(),
            None => default_id(&plan.name),
        };
        validate_id(&id)?;
        apply::check_plan(&id, &plan)?;
        // Two descriptors per node while bring-up runs, plus headroom. If the hard limit is
        // lower, EMFILE comes later with its own hint.
        let want = 2 * plan.nodes.len() as u64 + 256;
        if let Err(e) = process::raise_nofile(want) {
            tracing::warn!("could not raise the open-file limit to {want}: {e}");
        }
        // All namespaces share one neighbour table: a big switch or overlay can fill it, and
        // then nothing resolves anywhere (see `model::neighbours`). Raised with room to spare.
        let demand = crate::model::neighbours::neighbour_demand(&plan);
        if demand > 512 {
            let want = (2 * demand + 1024).next_multiple_of(1024);
            match crate::kernel::sysctl::raise_neighbour_cap(want) {
                Ok(Some((old, new))) => tracing::info!(
                    "raised the kernel's neighbour table cap (net.ipv4.neigh.default.gc_thresh3) \
                     from {old} to {new}: this lab can need {demand} ARP entries"
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    "this lab can need {demand} ARP entries but the neighbour table cap could \
                     not be raised ({e}): set net.ipv4.neigh.default.gc_thresh3 to {want} or \
                     hosts will fail to reach each other"
                ),
            }
        }
        let caps = crate::caps::probe();
        let backend = opts
            .backend
            .unwrap_or_else(|| shaping::Backend::choose(caps));
        let net = shaping::NetState::from_plan(&id, &plan, backend);
        // A link is never silently left unshaped: refuse before anything is made.
        for link in &net.links {
            if let Some(shape) = &link.shape {
                shaping::check_shape(&id, link, shape, backend, caps)?;
            }
        }
        // Nor is a lab half made for want of a program it runs.
        if let Some((tool, needed_for)) = shaping::tools_needed(&net)
            .into_iter()
            .find(|(tool, _)| !tool.present())
        {
            return Err(LabError::MissingTool {
                lab: id,
                needed_for,
                tool,
            });
        }
        let wires: Vec<Option<String>> = net
            .links
            .iter()
            .map(|l| l.wire.as_ref().map(|w| w.ns.clone()))
            .collect();
        let path = state::state_path(&id);
        let nodes: Vec<String> = plan.nodes.iter().map(|n| n.name.clone()).collect();
        let mut namespaces: Vec<String> = nodes.iter().map(|n| netns_name(&id, n)).collect();
        // Wire namespaces follow the nodes' (the first `nodes.len()` entries stay one per node).
        namespaces.extend(wires.iter().flatten().cloned());
        let state = LabState {
            id: id.clone(),
            plan: plan.name.clone(),
            file: opts.file.clone(),
            owner: Some(Owner::me()),
            persist: opts.persist,
            phase: Phase::Creating,
            nodes,
            namespaces: namespaces.clone(),
            pids: Vec::new(),
            created: now_secs(),
            resolved: Some(plan.clone()),
            net: Some(net),
        };
        // The state file comes first: whatever happens next, `clean` can find it.
        state.create(&path)?;
        let inner = Arc::new(Inner {
            id: id.clone(),
            plan,
            path,
            state: Mutex::new(state),
        });

        let created = Arc::new(Mutex::new(apply::Created::default()));
        // Rolls back on failure, and also if this future is dropped halfway.
        let mut guard = UpGuard {
            inner: inner.clone(),
            created: created.clone(),
            armed: true,
        };
        let noop = |_: Progress| {};
        let progress: &(dyn Fn(Progress) + Send + Sync) = match &opts.progress {
            Some(f) => f.as_ref(),
            None => &noop,
        };
        let node_ns = &namespaces[..inner.plan.nodes.len()];
        let result =
            apply::apply(&id, &inner.plan, node_ns, &wires, created.clone(), progress).await;
        let result = match result {
            Ok(()) => faults::apply_initial(&inner).await,
            Err(e) => Err(e),
        };
        let result = match result {
            Ok(()) => {
                let mut st = inner.state();
                st.phase = Phase::Up;
                st.write(&inner.path)
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                guard.armed = false;
                Ok(Lab {
                    inner,
                    released: false,
                })
            }
            // The guard rolls back as it goes out of scope.
            Err(e) => Err(e),
        }
    }

    /// A handle on a lab that is already up (made by another process, e.g. `netsim up`). The
    /// handle does not own the lab: dropping it leaves the lab up.
    pub fn attach(id: &str) -> Result<Lab, LabError> {
        validate_id(id)?;
        let st = find(id)?;
        if st.phase != Phase::Up {
            return Err(LabError::NotUp {
                id: id.to_string(),
                phase: format!("{:?}", st.phase).to_lowercase(),
            });
        }
        let Some(plan) = st.resolved.clone() else {
            return Err(LabError::NotUp {
                id: id.to_string(),
                phase: "made by an older netsim that did not record its plan".to_string(),
            });
        };
        let inner = Arc::new(Inner {
            id: st.id.clone(),
            plan,
            path: state::state_path(id),
            state: Mutex::new(st),
        });
        Ok(Lab {
            inner,
            released: true,
        })
    }

    /// The lab id, or the only lab up when `id` is `None`.
    pub fn resolve_id(id: Option<&str>) -> Result<String, LabError> {
        match id {
            Some(id) => Ok(id.to_string()),
            None => Ok(only_lab(LabState::read_all()?)?.id),
        }
    }

    /// The lab id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The plan the lab was made from.
    pub fn plan(&self) -> &Plan {
        &self.inner.plan
    }

    /// Resolves a probe target (`node`, `node:iface` or an IPv4 address) to an address: the
    /// planned one, or, for a node the plan gives no address (a container addressed by its
    /// overlay router), the first address its namespace has now.
    pub async fn address_of(&self, target: &str) -> Result<std::net::Ipv4Addr, LabError> {
        let request = |what: String| LabError::Request {
            lab: self.id().to_string(),
            what,
        };
        let (name, iface) = match target.split_once(':') {
            Some((n, i)) => (n, Some(i.to_string())),
            None => (target, None),
        };
        let unaddressed = self
            .plan()
            .node(name)
            .is_some_and(|n| n.interfaces.is_empty());
        let node = match (self.plan().address_of(target), self.node(name)) {
            (Ok(addr), _) => return Ok(addr),
            (Err(_), Some(node)) if unaddressed => node,
            (Err(what), _) => return Err(request(what)),
        };
        let ns = node.netns_name();
        let wanted_iface = iface.clone();
        let (found, names) = node
            .run(move || async move {
                let rt = tokio::runtime::Handle::current();
                let nl = crate::kernel::rtnl::Netlink::open_here(&ns, &rt)?;
                let links = nl.links().await?;
                let addrs = nl.addrs().await?;
                let found = addrs.into_iter().find_map(|(index, net)| {
                    let link = links.iter().find(|l| l.index == index)?;
                    let wanted = match &wanted_iface {
                        Some(i) => &link.name == i,
                        None => !net.addr().is_loopback(),
                    };
                    wanted.then_some(net.addr())
                });
                let names: Vec<String> = links.into_iter().map(|l| l.name).collect();
                Ok::<_, crate::kernel::KernelError>((found, names))
            })
            .await?
            .map_err(|cause| LabError::Kernel {
                lab: self.id().to_string(),
                node: Some(name.to_string()),
                cause: Box::new(cause),
            })?;
        found.ok_or_else(|| {
            request(match iface {
                Some(i) if !names.contains(&i) => format!(
                    "{name} has no interface {i:?}; its interfaces are: {}",
                    names.join(", ")
                ),
                _ => format!(
                    "{target} has no address yet: a container gets one when its overlay router \
                     attaches it (see `netsim status {}`)",
                    self.id()
                ),
            })
        })
    }

    /// A handle on node `name`, if the lab has it.
    pub fn node(&self, name: &str) -> Option<NodeHandle> {
        self.inner.plan.node(name).map(|n| NodeHandle {
            inner: self.inner.clone(),
            name: n.name.clone(),
        })
    }

    /// Handles on every node, in plan order.
    pub fn nodes(&self) -> Vec<NodeHandle> {
        self.inner
            .plan
            .nodes
            .iter()
            .map(|n| NodeHandle {
                inner: self.inner.clone(),
                name: n.name.clone(),
            })
            .collect()
    }

    /// The backend that shapes this lab's links.
    pub fn backend(&self) -> Option<shaping::Backend> {
        self.inner.state().net.as_ref().map(|n| n.backend)
    }

    /// The backend, when it shapes something: at least one link of the lab is declared with a
    /// shape or profile, or impaired at run time. `None` for a lab whose links all run plain,
    /// so reports need not name a backend that does nothing.
    pub fn shaping_backend(&self) -> Option<shaping::Backend> {
        let st = self.inner.state();
        let net = st.net.as_ref()?;
        net.links
            .iter()
            .any(|l| l.shape.is_some())
            .then_some(net.backend)
    }

    /// Links, shaping, faults and processes as they are now.
    pub fn status(&self) -> Result<faults::LabStatus, LabError> {
        faults::status(&self.inner.id)
    }

    /// Changes the impairment of the link between `x` and `y` (both directions, or `x -> y`
    /// only when `oneway`); see [`faults::set_link`].
    pub async fn set_link(
        &self,
        x: &str,
        y: &str,
        update: &faults::ShapeUpdate,
        oneway: bool,
    ) -> Result<crate::model::plan::LinkShape, LabError> {
        let r = faults::set_link(&self.inner.id, x, y, update, oneway).await;
        faults::refresh(&self.inner);
        r
    }

    /// Cuts the link between `x` and `y`, keeping its configuration.
    pub async fn cut(&self, x: &str, y: &str) -> Result<(), LabError> {
        let r = faults::cut_link(&self.inner.id, x, y, true).await;
        faults::refresh(&self.inner);
        r
    }

    /// Heals the link between `x` and `y`.
    pub async fn heal_link(&self, x: &str, y: &str) -> Result<(), LabError> {
        let r = faults::cut_link(&self.inner.id, x, y, false).await;
        faults::refresh(&self.inner);
        r
    }

    /// Partitions nodes `left` from nodes `right`.
    pub async fn partition(&self, left: &[&str], right: &[&str]) -> Result<(), LabError> {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let r = faults::partition(&self.inner.id, &own(left), &own(right)).await;
        faults::refresh(&self.inner);
        r
    }

    /// Heals every partition and cut link.
    pub async fn heal(&self) -> Result<(), LabError> {
        let r = faults::heal(&self.inner.id).await;
        faults::refresh(&self.inner);
        r
    }

    /// Blocks `proto` traffic to or from `port` in and out of `node`.
    pub async fn block(
        &self,
        node: &str,
        proto: shaping::Proto,
        port: u16,
    ) -> Result<(), LabError> {
        let r = faults::block(&self.inner.id, node, proto, port, true).await;
        faults::refresh(&self.inner);
        r
    }

    /// Lifts a [`Lab::block`].
    pub async fn unblock(
        &self,
        node: &str,
        proto: shaping::Proto,
        port: u16,
    ) -> Result<(), LabError> {
        let r = faults::block(&self.inner.id, node, proto, port, false).await;
        faults::refresh(&self.inner);
        r
    }

    /// Drops packets matching `rule` as they enter `node` (a PMTU black hole, an underlay
    /// that loses big UDP datagrams); see [`faults::filter`].
    pub async fn drop_packets(
        &self,
        node: &str,
        rule: crate::model::step::DropRule,
    ) -> Result<(), LabError> {
        let r = faults::filter(&self.inner.id, node, rule, true).await;
        faults::refresh(&self.inner);
        r
    }

    /// Lifts a [`Lab::drop_packets`].
    pub async fn undrop_packets(
        &self,
        node: &str,
        rule: crate::model::step::DropRule,
    ) -> Result<(), LabError> {
        let r = faults::filter(&self.inner.id, node, rule, false).await;
        faults::refresh(&self.inner);
        r
    }

    /// Stops, continues, kills or restarts a process started in `node`; see
    /// [`faults::proc_action`].
    pub async fn proc_action(
        &self,
        node: &str,
        pid: u32,
        action: faults::ProcAction,
    ) -> Result<Option<u32>, LabError> {
        let r = faults::proc_action(&self.inner.id, node, pid, action).await;
        faults::refresh(&self.inner);
        r
    }

    /// What `netsim list` would show of this lab.
    pub fn info(&self) -> LabInfo {
        LabInfo::from(&*self.inner.state())
    }

    /// Tears the lab down: kills its processes, deletes its namespaces (which removes their
    /// interfaces), removes its state file.
    pub async fn down(mut self) -> Result<(), LabError> {
        self.released = true;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || Self::teardown_inner(&inner))
            .await
            .map_err(|e| LabError::Task {
                lab: self.inner.id.clone(),
                what: format!("teardown thread failed: {e}"),
            })?
    }

    fn teardown_inner(inner: &Inner) -> Result<(), LabError> {
        let st = inner.state().clone();
        let (_, _, err) = teardown(&st, None);
        if let Some(err) = err {
            // Keep the state file: `netsim down`/`clean` can retry.
            return Err(err);
        }
        remove_state(&inner.id, &inner.path)
    }

    /// Leaves the lab up, owned by nobody, and returns its description. `clean` leaves it
    /// alone; `netsim down ID` removes it.
    pub fn persist(mut self) -> Result<LabInfo, LabError> {
        let mut st = self.inner.state();
        st.persist = true;
        st.owner = None;
        st.write(&self.inner.path)?;
        let info = LabInfo::from(&*st);
        drop(st);
        self.released = true;
        Ok(info)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.released {
            // Synchronous system calls only: works in or out of a runtime, and unwinding.
            if let Err(e) = Self::teardown_inner(&self.inner) {
                tracing::warn!("lab {}: teardown on drop: {e}", self.inner.id);
            }
        }
    }
}

/// Rolls back a bring-up that failed or was cancelled: deletes the namespaces it made (only
/// those: a namespace that was there before is not ours) and the state file.
struct UpGuard {
    inner: Arc<Inner>,
    created: Arc<Mutex<apply::Created>>,
    armed: bool,
}

impl Drop for UpGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let made = self
            .created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cancel();
        let st = self.inner.state().clone();
        let (_, _, err) = teardown(&st, Some(&made));
        match err {
            // Keep the state file so `clean` can retry.
            Some(e) => tracing::warn!("lab {}: rollback: {e}", self.inner.id),
            None => {
                let _ = remove_state(&self.inner.id, &self.inner.path);
            }
        }
    }
}

/// One node of a running lab.
#[derive(Clone)]
pub struct NodeHandle {
    inner: Arc<Inner>,
    name: String,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("lab", &self.inner.id)
            .field("node", &self.name)
            .finish()
    }
}

/// Builds a command that enters namespace file `path` before exec.
pub(crate) fn command_in(path: &std::path::Path, program: &OsStr) -> Command {
    let mut cmd = Command::new(program);
    let fd: Result<OwnedFd, i32> = std::fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::ENOENT));
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes one setns system call (no allocation on
    // success; an io::Error from a raw errno does not allocate either).
    unsafe {
        cmd.pre_exec(move || match &fd {
            Ok(fd) => {
                netns::enter(fd.as_fd()).map_err(|e| std::io::Error::from_raw_os_error(e as i32))
            }
            Err(errno) => Err(std::io::Error::from_raw_os_error(*errno)),
        });
    }
    cmd
}

impl NodeHandle {
    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lab's id.
    pub fn lab_id(&self) -> &str {
        &self.inner.id
    }

    /// The node's namespace name (`netsim-<id>-<node>`).
    pub fn netns_name(&self) -> String {
        netns_name(&self.inner.id, &self.name)
    }

    /// The bind mount of the node's namespace (`/run/netns/netsim-<id>-<node>`).
    pub fn netns_path(&self) -> PathBuf {
        netns::path(&self.netns_name())
    }

    /// A command for `program` that runs inside the node's namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        command_in(&self.netns_path(), program.as_ref())
    }

    /// Runs `argv` in the node, inheriting stdio, and waits for it.
    pub fn exec(&self, argv: &[&str]) -> std::io::Result<ExitStatus> {
        let (program, args) = argv.split_first().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command")
        })?;
        self.command(program).args(args).status()
    }

    /// Starts `argv` in the node and records its PID in the state file, so `down` and
    /// `clean` kill it.
    pub fn spawn(&self, argv: &[&str]) -> Result<Child, LabError> {
        let (program, args) = argv.split_first().ok_or_else(|| LabError::Process {
            lab: self.inner.id.clone(),
            node: self.name.clone(),
            what: "spawn".into(),
            cause: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
        })?;
        let mut cmd = self.command(program);
        cmd.args(args);
        self.spawn_command(cmd)
    }

    /// Starts a command made with [`NodeHandle::command`] and records its PID.
    pub fn spawn_command(&self, mut cmd: Command) -> Result<Child, LabError> {
        let child = cmd.spawn().map_err(|cause| LabError::Process {
            lab: self.inner.id.clone(),
            node: self.name.clone(),
            what: format!("spawn {:?}", cmd.get_program()),
            cause,
        })?;
        let pid = child.id();
        if let Some(start) = process::start_time(pid) {
            let mut st = self.inner.state();
            let argv: Vec<String> = std::iter::once(cmd.get_program())
                .chain(cmd.get_args())
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            // Another process (`netsim link set`, ...) may have changed the file meanwhile.
            if let Ok(on_disk) = LabState::read(&self.inner.path) {
                st.net = on_disk.net;
                st.pids = on_disk.pids;
            }
            st.pids.push(ProcRecord {
                pid,
                start,
                node: Some(self.name.clone()),
                argv,
                stopped: false,
            });
            st.write(&self.inner.path)?;
        }
        Ok(child)
    }

    /// Runs `f` inside the node's namespace on a dedicated thread with a current-thread tokio
    /// runtime, and returns its output. Sockets `f` opens live in the node.
    pub async fn run<F, Fut, T>(&self, f: F) -> Result<T, LabError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let lab = self.inner.id.clone();
        let node = self.name.clone();
        let ns = self.netns_name();
        let fd = netns::open(&ns).map_err(|cause| LabError::Kernel {
            lab: lab.clone(),
            node: Some(node.clone()),
            cause: Box::new(cause),
        })?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread_lab = lab.clone();
        let thread_node = node.clone();
        std::thread::Builder::new()
            .name(format!("node-{node}"))
            .spawn(move || {
                let result = (|| {
                    netns::enter(&fd).map_err(|e| LabError::Kernel {
                        lab: thread_lab.clone(),
                        node: Some(thread_node.clone()),
                        cause: Box::new(crate::kernel::KernelError::sys(
                            &ns,
                            None,
                            "setns(CLONE_NEWNET)",
                            e,
                        )),
                    })?;
                    drop(fd);
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|cause| LabError::Process {
                            lab: thread_lab.clone(),
                            node: thread_node.clone(),
                            what: "build runtime".into(),
                            cause,
                        })?;
                    Ok(rt.block_on(f()))
                })();
                let _ = tx.send(result);
            })
            .map_err(|cause| LabError::Process {
                lab: lab.clone(),
                node: node.clone(),
                what: "spawn thread".into(),
                cause,
            })?;
        rx.await.map_err(|_| LabError::Task {
            lab,
            what: format!("the task run in node {node} panicked"),
        })?
    }
}

/// Every lab with a state file.
pub fn list() -> Result<Vec<LabInfo>, LabError> {
    Ok(LabState::read_all()?.iter().map(LabInfo::from).collect())
}

fn find(id: &str) -> Result<LabState, LabError> {
    let path = state::state_path(id);
    if !path.exists() {
        let known = LabState::read_all()?.into_iter().map(|s| s.id).collect();
        return Err(LabError::NoSuchLab {
            id: id.to_string(),
            known,
        });
    }
    LabState::read(&path)
}

/// Tears down lab `id`, whoever owns it: exactly its processes, namespaces and state file.
pub fn down(id: &str) -> Result<(), LabError> {
    validate_id(id)?;
    let st = find(id)?;
    let (_, _, err) = teardown(&st, None);
    if let Some(err) = err {
        return Err(err);
    }
    remove_state(id, &state::state_path(id))
}

/// Whether `clean` should sweep a lab: its owner is gone, and it is not a complete lab that
/// was meant to stay.
fn abandoned(st: &LabState) -> bool {
    let owner_alive = st.owner.is_some_and(|o| o.alive());
    let kept_on_purpose = st.persist && st.phase == Phase::Up;
    !owner_alive && !kept_on_purpose
}

/// Removes labs left by crashed or killed processes: their processes, namespaces and state
/// files. Touches nothing else; running it twice is harmless.
pub fn clean() -> Result<CleanReport, LabError> {
    let mut report = CleanReport::default();
    let mut first_err = None;
    for st in LabState::read_all()? {
        if !abandoned(&st) {
            continue;
        }
        let (killed, deleted, err) = teardown(&st, None);
        report.processes += killed;
        report.namespaces += deleted;
        match err {
            Some(e) => {
                first_err.get_or_insert(e);
            }
            None => {
                remove_state(&st.id, &state::state_path(&st.id))?;
                report.labs.push(st.id.clone());
            }
        }
    }
    let claimed: std::collections::HashSet<String> = LabState::read_all()?
        .into_iter()
        .flat_map(|st| st.namespaces)
        .collect();
    report.unknown = netns::list()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(NETNS_PREFIX) && !claimed.contains(n))
        .collect();
    match first_err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// The one lab of `labs`, or why there is not exactly one.
fn only_lab(mut labs: Vec<LabState>) -> Result<LabState, LabError> {
    match labs.len() {
        0 => Err(LabError::NoLab),
        1 => Ok(labs.remove(0)),
        _ => Err(LabError::Ambiguous {
            labs: labs.into_iter().map(|s| s.id).collect(),
        }),
    }
}

/// Runs `argv` in `node` of lab `id` (or of the only lab up), inheriting stdio, and returns
/// its exit code (128 + signal number if a signal ended it).
pub fn exec(id: Option<&str>, node: &str, argv: &[&str]) -> Result<i32, LabError> {
    let st = match id {
        Some(id) => find(id)?,
        None => only_lab(LabState::read_all()?)?,
    };
    let Some(pos) = st.nodes.iter().position(|n| n == node) else {
        return Err(LabError::NoSuchNode {
            lab: st.id.clone(),
            node: node.to_string(),
            known: st.nodes.clone(),
        });
    };
    let perr = |what: &str, cause| LabError::Process {
        lab: st.id.clone(),
        node: node.to_string(),
        what: what.to_string(),
        cause,
    };
    let (program, args) = argv.split_first().ok_or_else(|| {
        perr(
            "exec",
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
        )
    })?;
    let ns = st
        .namespaces
        .get(pos)
        .cloned()
        .unwrap_or_else(|| netns_name(&st.id, node));
    let status = command_in(&netns::path(&ns), OsStr::new(program))
        .args(args)
        .status()
        .map_err(|e| perr(&format!("exec {program}"), e))?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn lab_state(id: &str, owner: Option<Owner>, persist: bool, phase: Phase) -> LabState {
        LabState {
            id: id.into(),
            plan: "p".into(),
            file: None,
            owner,
            persist,
            phase,
            nodes: vec!["h1".into()],
            namespaces: vec![netns_name(id, "h1")],
            pids: Vec::new(),
            created: 0,
            resolved: None,
            net: None,
        }
    }

    /// A process that certainly is not running: pid 1 with an impossible start time.
    const DEAD: Owner = Owner {
        pid: 1,
        start: u64::MAX,
    };

    #[rstest]
    #[case::live_owner(Some(Owner::me()), false, Phase::Creating, false)]
    #[case::live_owner_persistent(Some(Owner::me()), true, Phase::Up, false)]
    #[case::dead_owner_mid_up(Some(DEAD), false, Phase::Creating, true)]
    #[case::dead_owner_complete(Some(DEAD), false, Phase::Up, true)]
    #[case::dead_owner_persistent_mid_up(Some(DEAD), true, Phase::Creating, true)]
    #[case::dead_owner_persistent_complete(Some(DEAD), true, Phase::Up, false)]
    #[case::handed_over(None, true, Phase::Up, false)]
    fn clean_sweeps_only_abandoned_labs(
        #[case] owner: Option<Owner>,
        #[case] persist: bool,
        #[case] phase: Phase,
        #[case] swept: bool,
    ) {
        assert_eq!(abandoned(&lab_state("x", owner, persist, phase)), swept);
    }

    #[test]
    fn exec_without_an_id_needs_exactly_one_lab() {
        assert!(matches!(only_lab(Vec::new()), Err(LabError::NoLab)));
        let one = only_lab(vec![lab_state("a", None, true, Phase::Up)]);
        assert_eq!(one.map(|s| s.id).ok().as_deref(), Some("a"));
        let two = vec![
            lab_state("a", None, true, Phase::Up),
            lab_state("b", None, true, Phase::Up),
        ];
        match only_lab(two) {
            Err(LabError::Ambiguous { labs }) => assert_eq!(labs, ["a", "b"]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[rstest]
    #[case::plain("lab1", true)]
    #[case::dashes("my-lab-0a1b", true)]
    #[case::longest("abcdefghijklmnopqrst", true)]
    #[case::too_long("abcdefghijklmnopqrstu", false)]
    #[case::empty("", false)]
    #[case::upper("Lab", false)]
    #[case::underscore("a_b", false)]
    #[case::leading_dash("-a", false)]
    #[case::trailing_dash("a-", false)]
    fn ids(#[case] id: &str, #[case] ok: bool) {
        assert_eq!(validate_id(id).is_ok(), ok, "{id}");
    }

    #[rstest]
    #[case::simple("three-host")]
    #[case::odd_chars("My Lab_v2!")]
    #[case::very_long("a-topology-name-much-longer-than-any-id")]
    #[case::nothing_usable("___")]
    fn default_ids_are_valid(#[case] plan: &str) {
        let id = default_id(plan);
        assert!(validate_id(&id).is_ok(), "{plan} -> {id}");
    }
}
