//! Bring-up: applies a [`Plan`] through the kernel adapters, phase by phase, doing the
//! independent work of each phase concurrently.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

use futures::stream::{FuturesUnordered, StreamExt};
use ipnet::Ipv4Net;

use super::error::LabError;
use super::shaping::{WIRE_A_INDEX, WIRE_B_INDEX};
use super::{Progress, UpPhase};
use crate::kernel::rtnl::{LinkSettings, Netlink, VethSpec};
use crate::kernel::{netns, sysctl, KernelError};
use crate::model::plan::{Plan, IFNAME_MAX};

/// Index of the bridge inside a switch namespace. Indexes are chosen by the engine, not the
/// kernel, so no request has to look an interface up by name: a fresh namespace holds only
/// `lo` (index 1) and perhaps fallback tunnel devices with small indexes.
pub(crate) const BRIDGE_INDEX: u32 = 99;

/// Index of a node's interface number `i` (in plan order).
pub(crate) fn iface_index(i: usize) -> u32 {
    100 + u32::try_from(i).unwrap_or(u32::MAX - 100)
}

/// How many namespaces are created at once (the kernel serialises much of it anyway).
const NETNS_PARALLEL: usize = 4;

/// How many netlink requests are in flight at once, across all namespaces.
const NETLINK_PARALLEL: usize = 64;

/// The benchmark range every lab address must lie in (RFC 2544, 198.18.0.0/15).
fn lab_range() -> Ipv4Net {
    Ipv4Net::new(std::net::Ipv4Addr::new(198, 18, 0, 0), 15).unwrap_or_default()
}

/// Checks what the kernel would otherwise reject halfway, so most mistakes fail before
/// anything is made.
pub(crate) fn check_plan(lab: &str, plan: &Plan) -> Result<(), LabError> {
    let bad = |reason: String| LabError::Plan {
        lab: lab.to_string(),
        reason,
    };
    let mut names = std::collections::HashSet::new();
    for node in &plan.nodes {
        if node.name.is_empty()
            || !node
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(bad(format!(
                "node name {:?} is not [A-Za-z0-9._-]+",
                node.name
            )));
        }
        if !names.insert(node.name.as_str()) {
            return Err(bad(format!("node {} appears twice", node.name)));
        }
        let mut ifaces = std::collections::HashSet::new();
        for iface in &node.interfaces {
            if iface.name.is_empty() || iface.name.len() > IFNAME_MAX || iface.name == "lo" {
                return Err(bad(format!(
                    "node {}: bad interface name {:?} (1..={IFNAME_MAX} bytes, not lo)",
                    node.name, iface.name
                )));
            }
            if !ifaces.insert(iface.name.as_str()) {
                return Err(bad(format!(
                    "node {}: interface {} appears twice",
                    node.name, iface.name
                )));
            }
            for addr in &iface.addrs {
                if !lab_range().contains(addr) {
                    return Err(bad(format!(
                        "node {} {}: address {addr} is outside 198.18.0.0/15",
                        node.name, iface.name
                    )));
                }
            }
        }
        if let Some(bridge) = &node.bridge {
            if ifaces.contains(bridge.name.as_str()) || bridge.name.len() > IFNAME_MAX {
                return Err(bad(format!(
                    "node {}: bad bridge name {:?}",
                    node.name, bridge.name
                )));
            }
        }
        for route in &node.routes {
            if let Some(dev) = &route.dev {
                if !ifaces.contains(dev.as_str()) {
                    return Err(bad(format!(
                        "node {}: route {} uses unknown interface {dev}",
                        node.name, route.dst
                    )));
                }
            }
            if let Some(via) = route.via {
                if !lab_range().contains(&via) {
                    return Err(bad(format!(
                        "node {}: gateway {via} is outside 198.18.0.0/15",
                        node.name
                    )));
                }
            }
        }
    }
    for link in &plan.links {
        for end in [&link.a, &link.b] {
            let known = plan
                .node(&end.node)
                .is_some_and(|n| n.interfaces.iter().any(|i| i.name == end.iface));
            if !known {
                return Err(bad(format!(
                    "link end {}:{} is not an interface of the plan",
                    end.node, end.iface
                )));
            }
        }
    }
    Ok(())
}

/// Runs `futs` with at most `limit` in flight, reporting each completion as progress of
/// `phase`. At the first error no new future is started, but those in flight are still
/// awaited, so nothing keeps working behind the rollback's back. The futures are built up
/// front (rather than mapped lazily inside a stream) so the bring-up future stays `Send`.
async fn bounded<T, F>(
    futs: Vec<F>,
    limit: usize,
    phase: UpPhase,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Vec<T>, LabError>
where
    F: std::future::Future<Output = Result<T, LabError>>,
{
    let total = futs.len();
    progress(Progress::new(phase, 0, total));
    let mut pending = futs.into_iter();
    let mut running = FuturesUnordered::new();
    running.extend(pending.by_ref().take(limit.max(1)));
    let mut out = Vec::with_capacity(total);
    let mut first_err = None;
    while let Some(item) = running.next().await {
        match item {
            Ok(v) if first_err.is_none() => {
                out.push(v);
                progress(Progress::new(phase, out.len(), total));
                running.extend(pending.next());
            }
            Ok(_) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// A namespace made by bring-up, with what is needed to configure it.
struct Made {
    fd: OwnedFd,
    nl: Netlink,
}

/// The namespaces bring-up has made so far. Once cancelled (bring-up failed or was dropped),
/// a creation still in flight deletes its namespace instead of recording it, so rollback
/// never misses one.
#[derive(Debug, Default)]
pub(crate) struct Created {
    names: Vec<String>,
    cancelled: bool,
}

impl Created {
    /// Refuses further records and returns the namespaces made so far.
    pub(crate) fn cancel(&mut self) -> Vec<String> {
        self.cancelled = true;
        std::mem::take(&mut self.names)
    }
}

/// Creates namespace `ns` and, on its creating thread, opens what bring-up needs there.
fn make_namespace(
    ns: String,
    forwarding: bool,
    wire: bool,
    rt: tokio::runtime::Handle,
    created: &Mutex<Created>,
) -> Result<Made, KernelError> {
    let inner_ns = ns.clone();
    let made = netns::create_with(&ns, move || -> Result<Made, KernelError> {
        let fd = std::fs::File::open("/proc/thread-self/ns/net")
            .map(OwnedFd::from)
            .map_err(|e| KernelError::io(&inner_ns, None, "open own netns", &e))?;
        if forwarding {
            sysctl::write_here(&inner_ns, "net.ipv4.ip_forward", "1")?;
        }
        if wire {
            // A wire only carries frames: no IPv6 link-local addresses, router or neighbour
            // solicitations of its own leaking into the link. (Kernels without IPv6 have no
            // such keys, and nothing to silence.)
            for key in [
                "net.ipv6.conf.default.disable_ipv6",
                "net.ipv6.conf.all.disable_ipv6",
            ] {
                let _ = sysctl::write_here(&inner_ns, key, "1");
            }
        }
        let nl = Netlink::open_here(&inner_ns, &rt)?;
        Ok(Made { fd, nl })
    })?;
    // Recorded as soon as it exists, even if opening something in it failed.
    let mut record = created.lock().unwrap_or_else(|p| p.into_inner());
    if record.cancelled {
        drop(record);
        let _ = netns::delete(&ns);
        return Err(KernelError {
            netns: ns,
            target: None,
            op: "create namespace".into(),
            errno: None,
            detail: Some("bring-up was cancelled meanwhile".into()),
            tool: None,
        });
    }
    record.names.push(ns);
    made
}

/// Applies `plan` as lab `id`. Every namespace created is pushed to `created` as soon as it
/// exists, so the caller can roll back whatever happens.
pub(crate) async fn apply(
    id: &str,
    plan: &Plan,
    namespaces: &[String],
    wires: &[Option<String>],
    created: Arc<Mutex<Created>>,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(), LabError> {
    let rt = tokio::runtime::Handle::current();
    let lab = id.to_string();
    let kerr = move |node: &str, cause: KernelError| LabError::Kernel {
        lab: lab.clone(),
        node: Some(node.to_string()),
        cause: Box::new(cause),
    };
    let kerr = &kerr;
    let plan_err = |reason: String| LabError::Plan {
        lab: id.to_string(),
        reason,
    };
    let tag = format!("netsim:{id}");

    // Phase 1: namespaces, each with its netlink socket opened on the creating thread.
    let mut futs = Vec::with_capacity(plan.nodes.len());
    for (node, ns) in plan.nodes.iter().zip(namespaces) {
        let (ns, rt, created) = (ns.clone(), rt.clone(), created.clone());
        let forwarding = node.forwarding;
        let name = node.name.clone();
        futs.push(async move {
            let joined = tokio::task::spawn_blocking(move || {
                make_namespace(ns, forwarding, false, rt, &created)
            })
            .await;
            match joined {
                Ok(Ok(made)) => Ok((name, made)),
                Ok(Err(e)) => Err(kerr(&name, e)),
                Err(e) => Err(LabError::Task {
                    lab: id.to_string(),
                    what: format!("creating the namespace of node {name}: {e}"),
                }),
            }
        });
    }
    let mut wire_futs = Vec::new();
    for (i, wire) in wires.iter().enumerate() {
        let Some(ns) = wire.clone() else { continue };
        let (rt, created) = (rt.clone(), created.clone());
        let key = wire_key(i);
        wire_futs.push(async move {
            let joined =
                tokio::task::spawn_blocking(move || make_namespace(ns, false, true, rt, &created))
                    .await;
            match joined {
                Ok(Ok(made)) => Ok((key, made)),
                Ok(Err(e)) => Err(kerr(&key, e)),
                Err(e) => Err(LabError::Task {
                    lab: id.to_string(),
                    what: format!("creating wire namespace {key}: {e}"),
                }),
            }
        });
    }
    let wires_made = bounded(wire_futs, NETNS_PARALLEL, UpPhase::Namespaces, progress).await?;
    let made: HashMap<String, Made> = bounded(futs, NETNS_PARALLEL, UpPhase::Namespaces, progress)
        .await?
        .into_iter()
        .chain(wires_made)
        .collect();
    let made = &made;
    let get = |name: &str| {
        made.get(name)
            .ok_or_else(|| plan_err(format!("unknown node {name}")))
    };
    let get = &get;
    // Interface indexes: (node, iface) -> index, chosen here rather than by the kernel.
    let mut index: HashMap<(String, String), u32> = HashMap::new();
    for node in &plan.nodes {
        for (i, iface) in node.interfaces.iter().enumerate() {
            index.insert((node.name.clone(), iface.name.clone()), iface_index(i));
        }
    }
    let index = &index;
    let idx = |node: &str, iface: &str| {
        index
            .get(&(node.to_string(), iface.to_string()))
            .copied()
            .ok_or_else(|| plan_err(format!("unknown interface {node}:{iface}")))
    };
    let idx = &idx;

    // Phase 2: bridges.
    let mut futs = Vec::new();
    for node in &plan.nodes {
        let Some(bridge) = &node.bridge else { continue };
        futs.push(async move {
            get(&node.name)?
                .nl
                .add_bridge(&bridge.name, BRIDGE_INDEX, bridge.mtu)
                .await
                .map_err(|e| kerr(&node.name, e))
        });
    }
    bounded(futs, NETLINK_PARALLEL, UpPhase::Bridges, progress).await?;

    // Phase 3: veth pairs, each sent from the `a` end's namespace with the peer placed
    // directly in the `b` end's.
    let mut futs = Vec::with_capacity(plan.links.len());
    for (i, link) in plan.links.iter().enumerate() {
        let wired = wires.get(i).is_some_and(Option::is_some);
        futs.push(async move {
            if wired {
                // A:eth0 <-> W:a and W:b <-> B:eth0, each sent from the node's namespace with
                // the wire end placed directly in the wire namespace.
                let wire_fd = get(&wire_key(i))?.fd.as_fd();
                for (end, wname, windex) in
                    [(&link.a, "a", WIRE_A_INDEX), (&link.b, "b", WIRE_B_INDEX)]
                {
                    let spec = VethSpec {
                        name: end.iface.clone(),
                        index: idx(&end.node, &end.iface)?,
                        peer_name: wname.to_string(),
                        peer_index: windex,
                        mtu: link.mtu,
                    };
                    get(&end.node)?
                        .nl
                        .add_veth(&spec, wire_fd)
                        .await
                        .map_err(|e| kerr(&end.node, e))?;
                }
                return Ok(());
            }
            let (local, peer) = (&link.a, &link.b);
            let spec = VethSpec {
                name: local.iface.clone(),
                index: idx(&local.node, &local.iface)?,
                peer_name: peer.iface.clone(),
                peer_index: idx(&peer.node, &peer.iface)?,
                mtu: link.mtu,
            };
            let peer_fd = get(&peer.node)?.fd.as_fd();
            get(&local.node)?
                .nl
                .add_veth(&spec, peer_fd)
                .await
                .map_err(|e| kerr(&local.node, e))
        });
    }
    bounded(futs, NETLINK_PARALLEL, UpPhase::Links, progress).await?;

    // Phase 4: per node, interfaces up (tagged, enslaved), addresses, then routes in order.
    let tag = &tag;
    let mut futs = Vec::with_capacity(plan.nodes.len());
    for node in &plan.nodes {
        futs.push(async move {
            let nl = &get(&node.name)?.nl;
            let err = |e| kerr(&node.name, e);
            let lo = LinkSettings {
                up: true,
                ..Default::default()
            };
            nl.set_link(1, "lo", &lo).await.map_err(err)?;
            if let Some(bridge) = &node.bridge {
                let settings = LinkSettings {
                    up: true,
                    alias: Some(tag.clone()),
                    ..Default::default()
                };
                nl.set_link(BRIDGE_INDEX, &bridge.name, &settings)
                    .await
                    .map_err(err)?;
            }
            for (i, iface) in node.interfaces.iter().enumerate() {
                let settings = LinkSettings {
                    up: true,
                    alias: Some(tag.clone()),
                    master: (iface.bridge_port && node.bridge.is_some()).then_some(BRIDGE_INDEX),
                    mtu: None,
                };
                nl.set_link(iface_index(i), &iface.name, &settings)
                    .await
                    .map_err(err)?;
                for addr in &iface.addrs {
                    nl.add_addr(iface_index(i), &iface.name, *addr)
                        .await
                        .map_err(err)?;
                }
            }
            for route in &node.routes {
                let oif = match &route.dev {
                    Some(dev) => Some(idx(&node.name, dev)?),
                    None => None,
                };
                nl.add_route(route.dst, route.via, oif).await.map_err(err)?;
            }
            Ok::<_, LabError>(())
        });
    }
    for (i, wire) in wires.iter().enumerate() {
        if wire.is_none() {
            continue;
        }
        let key = wire_key(i);
        let nl = &get(&key)?.nl;
        let up = LinkSettings {
            up: true,
            alias: Some(tag.clone()),
            ..Default::default()
        };
        for (index, name) in [(1, "lo"), (WIRE_A_INDEX, "a"), (WIRE_B_INDEX, "b")] {
            nl.set_link(index, name, &up)
                .await
                .map_err(|e| kerr(&key, e))?;
        }
    }
    bounded(futs, NETLINK_PARALLEL, UpPhase::Configure, progress).await?;

    // Phase 5: wait until every planned interface (and bridge) is operationally up.
    let mut futs = Vec::with_capacity(plan.nodes.len());
    for node in &plan.nodes {
        futs.push(async move {
            let nl = &get(&node.name)?.nl;
            let mut wanted: Vec<u32> = (0..node.interfaces.len()).map(iface_index).collect();
            if node.bridge.is_some() {
                wanted.push(BRIDGE_INDEX);
            }
            let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
            loop {
                let links = nl.links().await.map_err(|e| kerr(&node.name, e))?;
                let waiting: Vec<&str> = links
                    .iter()
                    .filter(|l| wanted.contains(&l.index) && !l.running)
                    .map(|l| l.name.as_str())
                    .collect();
                if waiting.is_empty() {
                    return Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(LabError::Plan {
                        lab: id.to_string(),
                        reason: format!(
                            "node {}: interfaces {} did not come up within {:?} (no carrier?)",
                            node.name,
                            waiting.join(", "),
                            SETTLE_TIMEOUT
                        ),
                    });
                }
                tokio::time::sleep(SETTLE_POLL).await;
            }
        });
    }
    bounded(futs, NETLINK_PARALLEL, UpPhase::Settle, progress).await?;
    Ok(())
}

/// How long interfaces may take to become operationally up.
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How often a node's interfaces are looked at while settling.
const SETTLE_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// The key of the wire namespace of link `i` among the namespaces bring-up made.
fn wire_key(i: usize) -> String {
    format!("_w{i}")
}
