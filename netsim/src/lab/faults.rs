//! Faults at run time, each one call: change a link's impairment, cut and heal a link,
//! partition nodes and heal, block and unblock a port on a node, stop, continue, kill and
//! restart a process. Every call works from any process on a lab id: it reads the state file,
//! changes the lab, and writes the new state back, so `netsim ls`/`netsim status` and the next
//! call see it.

use std::fmt::Write as _;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use super::error::LabError;
use super::shaping::{self, Block, Filter, LinkRuntime, NetState, Partition, Proto};
use super::state::{self, LabState, ProcRecord};
use super::{find, netns_name, Inner};
use crate::kernel::{offload, process};
use crate::model::plan::{Distribution, LinkShape, Shape};
use crate::model::shape as units;
use crate::model::step::DropRule;

/// A change to one direction (or both) of a link's impairment: each `Some` replaces that
/// property; `clear` starts from an unimpaired link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShapeUpdate {
    /// Start from no impairment at all.
    pub clear: bool,
    /// New rate (`Some(None)` removes the limit).
    pub rate_bps: Option<Option<u64>>,
    /// New delay, ns.
    pub delay_ns: Option<u64>,
    /// New jitter, ns.
    pub jitter_ns: Option<u64>,
    /// New distribution.
    pub distribution: Option<Distribution>,
    /// New loss, ppm.
    pub loss_ppm: Option<u32>,
    /// New loss correlation, ppm.
    pub loss_correlation_ppm: Option<u32>,
    /// New reordering, ppm.
    pub reorder_ppm: Option<u32>,
    /// New duplication, ppm.
    pub duplicate_ppm: Option<u32>,
    /// New corruption, ppm.
    pub corrupt_ppm: Option<u32>,
    /// New queue limit (`Some(None)`: the default).
    pub limit: Option<Option<u32>>,
}

impl ShapeUpdate {
    /// Sets property `key` (as the topology file names it: `rate`, `delay`, `jitter`,
    /// `distribution`, `loss`, `loss_correlation`, `reorder`, `duplicate`, `corrupt`, `limit`)
    /// from its text (`rate = "none"` and `limit = "default"` remove them).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "rate" if value == "none" => self.rate_bps = Some(None),
            "rate" => self.rate_bps = Some(Some(units::parse_rate(value)?)),
            "delay" => self.delay_ns = Some(units::parse_duration(value)?),
            "jitter" => self.jitter_ns = Some(units::parse_duration(value)?),
            "distribution" => self.distribution = Some(units::parse_distribution(value)?),
            "loss" => self.loss_ppm = Some(units::parse_percent(value)?),
            "loss_correlation" | "loss-correlation" => {
                self.loss_correlation_ppm = Some(units::parse_percent(value)?)
            }
            "reorder" => self.reorder_ppm = Some(units::parse_percent(value)?),
            "duplicate" => self.duplicate_ppm = Some(units::parse_percent(value)?),
            "corrupt" => self.corrupt_ppm = Some(units::parse_percent(value)?),
            "limit" if value == "default" => self.limit = Some(None),
            "limit" => {
                let n: u32 = value
                    .parse()
                    .map_err(|_| format!("limit {value:?} is not a number of packets"))?;
                self.limit = Some(Some(n));
            }
            _ => {
                return Err(format!(
                    "unknown shaping property {key:?} (rate, delay, jitter, distribution, loss, \
                     loss_correlation, reorder, duplicate, corrupt, limit)"
                ))
            }
        }
        Ok(())
    }

    /// The shape `base` becomes.
    pub fn apply(&self, base: &Shape) -> Shape {
        let mut s = if self.clear {
            Shape::default()
        } else {
            base.clone()
        };
        if let Some(v) = self.rate_bps {
            s.rate_bps = v;
        }
        if let Some(v) = self.delay_ns {
            s.delay_ns = v;
        }
        if let Some(v) = self.jitter_ns {
            s.jitter_ns = v;
        }
        if let Some(v) = self.distribution {
            s.distribution = v;
        }
        if let Some(v) = self.loss_ppm {
            s.loss_ppm = v;
        }
        if let Some(v) = self.loss_correlation_ppm {
            s.loss_correlation_ppm = v;
        }
        if let Some(v) = self.reorder_ppm {
            s.reorder_ppm = v;
        }
        if let Some(v) = self.duplicate_ppm {
            s.duplicate_ppm = v;
        }
        if let Some(v) = self.corrupt_ppm {
            s.corrupt_ppm = v;
        }
        if let Some(v) = self.limit {
            s.limit = v;
        }
        s
    }
}

/// What to do to a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcAction {
    /// SIGSTOP: freeze it.
    Stop,
    /// SIGCONT: let it run again.
    Cont,
    /// SIGKILL, and forget it.
    Kill,
    /// SIGKILL, then start the same command line in the same node.
    Restart,
}

fn request(lab: &str, what: String) -> LabError {
    LabError::Request {
        lab: lab.to_string(),
        what,
    }
}

/// The namespace of `node` in a lab's state.
fn ns_of(st: &LabState, node: &str) -> String {
    st.nodes
        .iter()
        .position(|n| n == node)
        .and_then(|i| st.namespaces.get(i).cloned())
        .unwrap_or_else(|| netns_name(&st.id, node))
}

fn net_of(st: &mut LabState) -> Result<&mut NetState, LabError> {
    let id = st.id.clone();
    st.net.as_mut().ok_or_else(|| {
        request(
            &id,
            "this lab was brought up by an older netsim that kept no link state; bring it up \
             again to change it at run time"
                .into(),
        )
    })
}

fn check_node(st: &LabState, node: &str) -> Result<(), LabError> {
    if st.nodes.iter().any(|n| n == node) {
        Ok(())
    } else {
        Err(LabError::NoSuchNode {
            lab: st.id.clone(),
            node: node.to_string(),
            known: st.nodes.clone(),
        })
    }
}

/// Phrases describing the faults in force in a lab, for `netsim ls` and `status`.
pub fn fault_list(st: &LabState) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(net) = &st.net {
        for l in net.links.iter().filter(|l| l.cut) {
            out.push(format!("cut {}", l.label()));
        }
        for p in &net.partitions {
            out.push(format!(
                "partition {} | {}",
                p.left.join(","),
                p.right.join(",")
            ));
        }
        for b in &net.blocks {
            out.push(format!("block {} {} {}", b.node, b.proto.name(), b.port));
        }
        for f in &net.drops {
            out.push(format!("drop {} entering {}", f.rule, f.node));
        }
    }
    for p in st.pids.iter().filter(|p| p.stopped) {
        out.push(format!("stopped pid {}", p.pid));
    }
    out
}

/// Reloads the in-memory state of a [`super::Lab`] from its file after a change made through
/// the file.
pub(super) fn refresh(inner: &Inner) {
    if let Ok(on_disk) = LabState::read(&inner.path) {
        let mut st = inner.state();
        st.net = on_disk.net;
        st.pids = on_disk.pids;
    }
}

/// Applies a freshly made lab's shaping: qdiscs, nftables rule sets, delay lines. Records
/// delay-line PIDs in the in-memory state as soon as they exist.
pub(super) async fn apply_initial(inner: &Inner) -> Result<(), LabError> {
    let st = inner.state().clone();
    let Some(mut net) = st.net.clone() else {
        return Ok(());
    };
    let ns_of = |node: &str| ns_of(&st, node);
    for i in 0..net.links.len() {
        if net.links[i].shape.is_some() {
            shaping::apply_link_qdiscs(&st.id, &net, i, &ns_of).await?;
        }
    }
    let result = apply_all_nft(&st, &mut net).await;
    for i in 0..net.links.len() {
        if result.is_err() {
            break;
        }
        tunnels_segmented(&st, &net.links[i])?;
        let rec = shaping::spawn_delay_line(&st.id, &net, &net.links[i])?;
        if let (Some(rec), Some(wire)) = (rec, net.links[i].wire.as_mut()) {
            wire.pid = Some(rec);
            // On disk at once: if this process dies now, `clean` still finds the line.
            let mut st = inner.state();
            st.net = Some(net.clone());
            st.write(&inner.path)?;
        }
    }
    inner.state().net = Some(net);
    result
}

async fn apply_all_nft(st: &LabState, net: &mut NetState) -> Result<(), LabError> {
    for node in &st.nodes {
        shaping::apply_nft(&st.id, net, node, &ns_of(st, node)).await?;
    }
    Ok(())
}

/// Reads lab `id`'s state, lets `f` change it and the lab, and writes the state back (also
/// when `f` fails halfway, so what was done is recorded).
async fn with_state<T>(
    id: &str,
    f: impl AsyncFnOnce(&mut LabState) -> Result<T, LabError>,
) -> Result<T, LabError> {
    super::validate_id(id)?;
    let mut st = find(id)?;
    let result = f(&mut st).await;
    st.write(&state::state_path(id))?;
    result
}

/// Changes the impairment of the link between `x` and `y`: both directions, or only `x -> y`
/// when `oneway`. Returns the link's new shape.
pub async fn set_link(
    id: &str,
    x: &str,
    y: &str,
    update: &ShapeUpdate,
    oneway: bool,
) -> Result<LinkShape, LabError> {
    with_state(id, async |st: &mut LabState| {
        let snapshot = st.clone();
        let net = net_of(st)?;
        let (i, x_is_a) = net.find_link(id, x, y)?;
        let mut shape = net.links[i].shape.clone().unwrap_or_default();
        let (xy, yx) = if x_is_a {
            (&mut shape.a_to_b, &mut shape.b_to_a)
        } else {
            (&mut shape.b_to_a, &mut shape.a_to_b)
        };
        *xy = update.apply(xy);
        if !oneway {
            *yx = update.apply(yx);
        }
        for dir in [&shape.a_to_b, &shape.b_to_a] {
            dir.check().map_err(|problem| {
                request(id, format!("link {}: {problem}", net.links[i].label()))
            })?;
        }
        shape.profile = None;
        shaping::check_shape(id, &net.links[i], &shape, net.backend, crate::caps::probe())?;
        let clear = shape.a_to_b.is_clear() && shape.b_to_a.is_clear();
        net.links[i].shape = if clear && net.links[i].wire.is_none() {
            None
        } else {
            Some(shape.clone())
        };
        let ns = |node: &str| ns_of(&snapshot, node);
        shaping::apply_link_qdiscs(id, net, i, &ns).await?;
        for node in [net.links[i].a.node.clone(), net.links[i].b.node.clone()] {
            shaping::apply_nft(id, net, &node, &ns(&node)).await?;
        }
        if net.links[i].wire.is_some() {
            shaping::kill_delay_line(&mut net.links[i]);
            tunnels_segmented(&snapshot, &net.links[i])?;
            let rec = shaping::spawn_delay_line(id, net, &net.links[i])?;
            if let Some(wire) = net.links[i].wire.as_mut() {
                wire.pid = rec;
            }
        }
        Ok(shape)
    })
    .await
}

/// Cuts (`cut = true`) or heals the link between `x` and `y`. Nothing of its configuration
/// changes: every frame arriving at either end is dropped until it is healed.
pub async fn cut_link(id: &str, x: &str, y: &str, cut: bool) -> Result<(), LabError> {
    with_state(id, async |st: &mut LabState| {
        let snapshot = st.clone();
        let net = net_of(st)?;
        let (i, _) = net.find_link(id, x, y)?;
        net.links[i].cut = cut;
        for node in [net.links[i].a.node.clone(), net.links[i].b.node.clone()] {
            shaping::apply_nft(id, net, &node, &ns_of(&snapshot, &node)).await?;
        }
        Ok(())
    })
    .await
}

/// Partitions nodes `left` from nodes `right`: no packet between an address of one side and
/// an address of the other passes any of them (routers in between keep forwarding the rest).
pub async fn partition(id: &str, left: &[String], right: &[String]) -> Result<(), LabError> {
    with_state(id, async |st: &mut LabState| {
        for n in left.iter().chain(right) {
            check_node(st, n)?;
        }
        if left.is_empty() || right.is_empty() {
            return Err(request(id, "a partition needs nodes on both sides".into()));
        }
        if let Some(n) = left.iter().find(|n| right.contains(n)) {
            return Err(request(
                id,
                format!("node {n} is on both sides of the partition"),
            ));
        }
        let snapshot = st.clone();
        let net = net_of(st)?;
        net.partitions.push(Partition {
            left: left.to_vec(),
            right: right.to_vec(),
        });
        for node in left.iter().chain(right) {
            shaping::apply_nft(id, net, node, &ns_of(&snapshot, node)).await?;
        }
        Ok(())
    })
    .await
}

/// Heals every partition and every cut link of the lab (port blocks stay: see [`block`]).
pub async fn heal(id: &str) -> Result<(), LabError> {
    with_state(id, async |st: &mut LabState| {
        let snapshot = st.clone();
        let net = net_of(st)?;
        net.partitions.clear();
        for l in &mut net.links {
            l.cut = false;
        }
        apply_all_nft(&snapshot, net).await
    })
    .await
}

/// Blocks (`blocked = true`) or unblocks traffic of `proto` to or from `port` in and out of
/// `node` (forwarded traffic included).
pub async fn block(
    id: &str,
    node: &str,
    proto: Proto,
    port: u16,
    blocked: bool,
) -> Result<(), LabError> {
    with_state(id, async |st: &mut LabState| {
        check_node(st, node)?;
        let ns = ns_of(st, node);
        let net = net_of(st)?;
        let b = Block {
            node: node.to_string(),
            proto,
            port,
        };
        if blocked {
            if !net.blocks.contains(&b) {
                net.blocks.push(b);
            }
        } else {
            net.blocks.retain(|x| *x != b);
        }
        shaping::apply_nft(id, net, node, &ns).await
    })
    .await
}

/// Puts in (`on`) or lifts a packet filter: packets matching `rule` are dropped as they enter
/// `node`, on every interface.
pub async fn filter(id: &str, node: &str, rule: DropRule, on: bool) -> Result<(), LabError> {
    with_state(id, async |st: &mut LabState| {
        check_node(st, node)?;
        let ns = ns_of(st, node);
        let net = net_of(st)?;
        let f = Filter {
            node: node.to_string(),
            rule,
        };
        if on {
            if !net.drops.contains(&f) {
                net.drops.push(f);
            }
        } else {
            net.drops.retain(|x| *x != f);
        }
        shaping::apply_nft(id, net, node, &ns).await?;
        if on && matches!(rule, DropRule::UdpOver { .. }) {
            segment_before(st, node)?;
        }
        Ok(())
    })
    .await
}

/// Makes every interface that sends into `node` cut GSO super-packets into frames itself, so
/// a length filter at `node` sees what a wire would carry (see [`crate::kernel::offload`]).
/// Left so until the lab goes down: it costs only throughput.
fn segment_before(st: &LabState, node: &str) -> Result<(), LabError> {
    let Some(net) = st.net.as_ref() else {
        return Ok(());
    };
    for l in &net.links {
        let peer = if l.a.node == node {
            &l.b
        } else if l.b.node == node {
            &l.a
        } else {
            continue;
        };
        let ns = ns_of(st, &peer.node);
        offload::segment_in_software(&ns, &peer.iface).map_err(|cause| LabError::Kernel {
            lab: st.id.clone(),
            node: Some(peer.node.clone()),
            cause: Box::new(cause),
        })?;
    }
    Ok(())
}

/// The two ends of a link with a delay line segment tunnelled packets (an overlay's vxlan)
/// before they reach it: see [`offload::segment_tunnels_in_software`]. Without this, bulk
/// traffic over kernel vxlan crossed such a link at a few KB/s (every GSO frame dropped,
/// only the small ones passing).
fn tunnels_segmented(st: &LabState, link: &shaping::LinkRuntime) -> Result<(), LabError> {
    if link.wire.is_none() {
        return Ok(());
    }
    for end in [&link.a, &link.b] {
        let ns = ns_of(st, &end.node);
        offload::segment_tunnels_in_software(&ns, &end.iface).map_err(|cause| {
            LabError::Kernel {
                lab: st.id.clone(),
                node: Some(end.node.clone()),
                cause: Box::new(cause),
            }
        })?;
    }
    Ok(())
}

/// Stops, continues, kills or restarts process `pid` of `node` (one netsim started there, as
/// `netsim ls` lists). Returns the PID of the restarted process for [`ProcAction::Restart`].
pub async fn proc_action(
    id: &str,
    node: &str,
    pid: u32,
    action: ProcAction,
) -> Result<Option<u32>, LabError> {
    with_state(id, async |st: &mut LabState| {
        check_node(st, node)?;
        let ns = ns_of(st, node);
        let pos = st
            .pids
            .iter()
            .position(|p| p.pid == pid && p.node.as_deref().is_none_or(|n| n == node))
            .ok_or_else(|| {
                let known: Vec<String> = st.pids.iter().map(|p| p.pid.to_string()).collect();
                request(
                    id,
                    format!(
                        "no process {pid} was started by netsim in node {node} (known: {})",
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
            })?;
        let rec = st.pids[pos].clone();
        let perr = |what: &str, cause: std::io::Error| LabError::Process {
            lab: id.to_string(),
            node: node.to_string(),
            what: what.to_string(),
            cause,
        };
        let signal = |sig: Signal| -> Result<(), LabError> {
            if !process::is_alive(rec.pid, rec.start) {
                return Err(request(id, format!("process {pid} is no longer running")));
            }
            let raw = i32::try_from(rec.pid).unwrap_or(i32::MAX);
            kill(Pid::from_raw(raw), sig)
                .map_err(|e| perr(&format!("send {sig:?} to {pid}"), e.into()))
        };
        match action {
            ProcAction::Stop => {
                signal(Signal::SIGSTOP)?;
                st.pids[pos].stopped = true;
                Ok(None)
            }
            ProcAction::Cont => {
                signal(Signal::SIGCONT)?;
                st.pids[pos].stopped = false;
                Ok(None)
            }
            ProcAction::Kill => {
                process::kill_if_same(rec.pid, rec.start);
                st.pids.remove(pos);
                Ok(None)
            }
            ProcAction::Restart => {
                if rec.argv.is_empty() {
                    return Err(request(
                        id,
                        format!("netsim does not know the command line of process {pid}"),
                    ));
                }
                process::kill_if_same(rec.pid, rec.start);
                // Wait (briefly) until it is gone, so a port it held is free again.
                for _ in 0..200 {
                    if !process::is_alive(rec.pid, rec.start) {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                let mut cmd = super::command_in(
                    &crate::kernel::netns::path(&ns),
                    std::ffi::OsStr::new(&rec.argv[0]),
                );
                cmd.args(&rec.argv[1..])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
                let mut child = cmd
                    .spawn()
                    .map_err(|e| perr(&format!("restart {:?}", rec.argv), e))?;
                let new_pid = child.id();
                // Reap it whenever it ends, for as long as this process lives.
                std::thread::spawn(move || child.wait());
                let start = process::start_time(new_pid).unwrap_or(0);
                st.pids[pos] = ProcRecord {
                    pid: new_pid,
                    start,
                    node: Some(node.to_string()),
                    argv: rec.argv.clone(),
                    stopped: false,
                };
                Ok(Some(new_pid))
            }
        }
    })
    .await
}

/// Everything `netsim status` shows of a lab.
#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    /// The lab.
    pub info: super::LabInfo,
    /// Links with their shape now, whether cut, and whether they pass a delay line.
    pub links: Vec<LinkRuntime>,
    /// Partitions in force.
    pub partitions: Vec<Partition>,
    /// Port blocks in force.
    pub blocks: Vec<Block>,
    /// Processes netsim started in the lab.
    pub processes: Vec<ProcRecord>,
}

impl LabStatus {
    /// Stable text for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let i = &self.info;
        let backend = i.backend.map_or("unknown", |b| b.name());
        let _ = writeln!(out, "lab {} ({}), shaping backend {backend}", i.id, i.plan);
        let _ = writeln!(out, "links:");
        for l in &self.links {
            let mut flags = Vec::new();
            if l.cut {
                flags.push("CUT");
            }
            if l.wire.is_some() {
                flags.push("delay line");
            }
            let flags = if flags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", flags.join(", "))
            };
            let _ = writeln!(
                out,
                "  {}:{} -- {}:{}{flags}",
                l.a.node, l.a.iface, l.b.node, l.b.iface
            );
            if let Some(s) = &l.shape {
                let _ = writeln!(
                    out,
                    "    {} -> {}: {}",
                    l.a.node,
                    l.b.node,
                    s.a_to_b.describe()
                );
                let _ = writeln!(
                    out,
                    "    {} -> {}: {}",
                    l.b.node,
                    l.a.node,
                    s.b_to_a.describe()
                );
            }
        }
        for p in &self.partitions {
            let _ = writeln!(
                out,
                "partition: {} | {}",
                p.left.join(","),
                p.right.join(",")
            );
        }
        for b in &self.blocks {
            let _ = writeln!(out, "blocked: {} {} {}", b.node, b.proto.name(), b.port);
        }
        if !self.processes.is_empty() {
            let _ = writeln!(out, "processes:");
            for p in &self.processes {
                let _ = writeln!(
                    out,
                    "  {} in {}{}: {}",
                    p.pid,
                    p.node.as_deref().unwrap_or("?"),
                    if p.stopped { " (stopped)" } else { "" },
                    p.argv.join(" ")
                );
            }
        }
        out
    }
}

/// The status of lab `id`.
pub fn status(id: &str) -> Result<LabStatus, LabError> {
    super::validate_id(id)?;
    let st = find(id)?;
    let net = st.net.clone();
    Ok(LabStatus {
        info: super::LabInfo::from(&st),
        links: net.as_ref().map(|n| n.links.clone()).unwrap_or_default(),
        partitions: net
            .as_ref()
            .map(|n| n.partitions.clone())
            .unwrap_or_default(),
        blocks: net.map(|n| n.blocks).unwrap_or_default(),
        processes: st.pids.clone(),
    })
}
