//! The daemon: wires the overlay bridge, sleeve, the control plane and the API together.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::alloc::{AddressSource, IpamSource};
use crate::api::{self, Handler, PeerOp, Request};
use crate::config::{Mtu, Range};
use crate::datapath::fast::{self, FastPath};
use crate::datapath::kernel::{settle, FastKernel, Tier};
use crate::datapath::ovs_dev::{OvsDevice, OvsSettings, DEFAULT_FLOW_IDLE};
use crate::datapath::select::Timing;
use crate::datapath::sleeve::Sleeve;
use crate::datapath::tiers::Tiers;
use crate::datapath::vxlan_dev::VxlanDevice;
use crate::datapath::{auto_mtu, Datapath};
use crate::netdev::{self, Netdev};
use crate::router::{Router, Settings};

/// Everything `overlay-router run` needs.
#[derive(Clone)]
pub struct Options {
    /// Router name.
    pub name: String,
    /// Control-plane listen address (the sleeve UDP port is the same number).
    pub listen: SocketAddr,
    /// Peers to dial.
    pub peers: Vec<IpAddr>,
    /// Overlay range.
    pub range: Range,
    /// Password.
    pub password: Option<String>,
    /// MTU setting.
    pub mtu: Mtu,
    /// API socket path.
    pub api: PathBuf,
    /// State directory (address holdings).
    pub state_dir: Option<PathBuf>,
    /// The kernel fast path.
    pub fast_path: FastPathOptions,
}

/// Which kernel fast path tiers a router tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastPathMode {
    /// The Open vSwitch datapath, else kernel vxlan, else sleeve alone.
    Auto,
    /// The Open vSwitch datapath or sleeve.
    Odp,
    /// Kernel vxlan or sleeve.
    Vxlan,
    /// Sleeve alone.
    Off,
}

/// Settings of the kernel fast path.
#[derive(Debug, Clone, Copy)]
pub struct FastPathOptions {
    /// Which tiers to try (`--fast-path`).
    pub mode: FastPathMode,
    /// Its UDP port.
    pub port: u16,
    /// Heartbeat timing: interval, fallback and recovery delays.
    pub timing: Timing,
    /// How long an Open vSwitch flow may stay unused before it is removed.
    pub flow_idle: std::time::Duration,
}

impl Default for FastPathOptions {
    fn default() -> Self {
        FastPathOptions {
            mode: FastPathMode::Auto,
            port: crate::VXLAN_PORT,
            timing: Timing::default(),
            flow_idle: DEFAULT_FLOW_IDLE,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("range", &self.range)
            .field("encrypted", &self.password.is_some())
            .field("mtu", &self.mtu)
            .field("api", &self.api)
            .field("fast_path", &self.fast_path)
            .finish()
    }
}

/// A running daemon.
pub struct Daemon {
    opts: Options,
    router: Arc<Router>,
    sleeve: Arc<Sleeve>,
    tiers: Arc<Tiers>,
    macs: Mutex<std::collections::BTreeMap<String, [u8; 6]>>,
    netdev: Netdev,
    bridge: u32,
    mtu: u32,
    underlay_mtu: u32,
    /// Which kernel fast path tier this host has and why.
    fast_reason: String,
    alloc: Arc<Mutex<IpamSource>>,
    rt: tokio::runtime::Handle,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Sets up devices, sleeve, the control plane and the API; returns once all listen.
    pub async fn start(opts: Options) -> anyhow::Result<Arc<Self>> {
        use anyhow::Context as _;
        let rt = tokio::runtime::Handle::current();
        let netdev = Netdev::open_here(&rt).context("open rtnetlink")?;
        let underlay_mtu = netdev
            .underlay_mtu()
            .await
            .context("read the underlay MTU")?;
        let encrypted = opts.password.is_some();
        let mtu_for = |fast: bool| match opts.mtu {
            Mtu::Auto => auto_mtu(underlay_mtu, fast, encrypted),
            Mtu::Fixed(m) => m,
        };
        let fast_mtu = mtu_for(true);
        let bridge = netdev
            .ensure_bridge(netdev::BRIDGE, fast_mtu)
            .await
            .context("create the overlay bridge")?;
        let tap = netdev::create_tap(netdev::TAP).context("create the sleeve TAP device")?;
        let tap_link = netdev
            .link(netdev::TAP)
            .await?
            .ok_or_else(|| anyhow::anyhow!("TAP {} vanished", netdev::TAP))?;
        netdev
            .set(
                tap_link.index,
                netdev::TAP,
                true,
                Some(bridge),
                Some(fast_mtu),
            )
            .await
            .context("attach the TAP to the bridge")?;
        // The fast path, if this host can have it; never fatal (weave #1599 is the anti-example).
        let fp = opts.fast_path;
        let (device, fast_reason) = if encrypted {
            let why = "the overlay is encrypted: the kernel fast path would carry container \
                       frames in clear, so sleeve carries them sealed";
            OvsDevice::remove_leftovers(&netdev).await;
            (Err(why.to_string()), format!("{why}: using sleeve only"))
        } else {
            let mut attempts = Vec::new();
            let mut device = Err(String::new());
            if fp.mode == FastPathMode::Off {
                attempts.push((
                    Tier::Sleeve,
                    Err("turned off (--fast-path off)".to_string()),
                ));
            }
            if matches!(fp.mode, FastPathMode::Vxlan | FastPathMode::Off) {
                OvsDevice::remove_leftovers(&netdev).await;
            }
            if matches!(fp.mode, FastPathMode::Auto | FastPathMode::Odp) {
                let settings = OvsSettings {
                    bridge,
                    tap: tap_link.index,
                    port: fp.port,
                    mtu: fast_mtu,
                    // The router is made later: its short id is handed over then.
                    me: 0,
                    idle: fp.flow_idle,
                };
                let made = OvsDevice::create(&netdev, settings).await;
                attempts.push((Tier::Odp, made.as_ref().map(drop).map_err(Clone::clone)));
                device = made.map(FastKernel::Odp);
            }
            if device.is_err() && matches!(fp.mode, FastPathMode::Auto | FastPathMode::Vxlan) {
                let made =
                    VxlanDevice::create(&netdev, bridge, tap_link.index, fp.port, fast_mtu).await;
                attempts.push((Tier::Vxlan, made.as_ref().map(drop).map_err(Clone::clone)));
                device = made.map(FastKernel::Vxlan);
            }
            let (_, reason) = settle(&attempts);
            // Connections on sleeve say why the tiers failed; status says where that led.
            let failed: Vec<String> = attempts.into_iter().filter_map(|(_, r)| r.err()).collect();
            (device.map_err(|_| failed.join("; ")), reason)
        };
        match &device {
            Ok(_) => tracing::info!("fast path: {fast_reason}"),
            Err(_) => tracing::warn!("fast path: {fast_reason}; every connection uses sleeve"),
        }
        let mtu = mtu_for(device.is_ok());
        if mtu != fast_mtu {
            netdev
                .set(bridge, netdev::BRIDGE, true, None, Some(mtu))
                .await
                .context("set the bridge MTU")?;
            netdev
                .set(tap_link.index, netdev::TAP, true, None, Some(mtu))
                .await
                .context("set the TAP MTU")?;
        }

        if let Some(dir) = &opts.state_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        // A restarted router takes its saved uid back, so its IPAM claims stay its own.
        let uid = IpamSource::saved_uid(opts.state_dir.as_ref())
            .context("read the IPAM state")?
            .unwrap_or_else(Router::random_uid);
        let ipam = Arc::new(Mutex::new(
            IpamSource::open(opts.range, uid, opts.state_dir.as_ref()).context("open the IPAM")?,
        ));
        let router = Router::new(
            Settings {
                name: opts.name.clone(),
                password: opts.password.as_ref().map(|p| p.as_bytes().to_vec()),
                port: opts.listen.port(),
                fast_path: device.is_ok(),
                odp: matches!(device, Ok(FastKernel::Odp(_))),
            },
            &opts.peers,
            uid,
        );
        router.set_ipam(ipam.clone());
        let (hb_tx, mut hb_rx) = tokio::sync::mpsc::unbounded_channel();
        let sleeve = Arc::new(
            Sleeve::start(
                tap.fd,
                opts.listen.port(),
                underlay_mtu,
                router.short_id(),
                hb_tx,
            )
            .context("start sleeve on UDP")?,
        );
        let (fast_tx, mut fast_rx) = tokio::sync::mpsc::unbounded_channel();
        let fast = FastPath::start(
            fast::Settings {
                port: opts.fast_path.port,
                timing: opts.fast_path.timing,
                overlay_mtu: mtu,
                uid,
                short_id: router.short_id(),
            },
            device,
            sleeve.clone(),
            fast_tx,
        );
        fast.set_short_id(router.short_id());
        let tiers = Arc::new(Tiers::new(sleeve.clone(), fast));
        router.set_datapath(tiers.clone() as Arc<dyn Datapath>);
        let r = router.clone();
        tokio::spawn(async move {
            while let Some(seen) = hb_rx.recv().await {
                r.ack_heartbeat(seen.ip, seen.heartbeat);
            }
        });
        let r = router.clone();
        tokio::spawn(async move {
            while let Some(r2) = fast_rx.recv().await {
                r.send_fast_report(r2.uid, r2.connection, &r2.report);
            }
        });
        router
            .start(opts.listen)
            .await
            .with_context(|| format!("listen on {}", opts.listen))?;
        let daemon = Arc::new(Daemon {
            opts: opts.clone(),
            router,
            sleeve,
            tiers,
            macs: Mutex::new(std::collections::BTreeMap::new()),
            netdev,
            bridge,
            mtu,
            underlay_mtu,
            fast_reason,
            alloc: ipam,
            rt,
        });
        api::serve(&opts.api, daemon.clone())
            .await
            .with_context(|| format!("serve the API on {}", opts.api.display()))?;
        // A restarted router finds the containers it still holds (their veths outlive it) and
        // announces their MACs again, so peers keep steering frames to them instead of flooding.
        let held: Vec<String> = daemon
            .alloc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .held()
            .into_iter()
            .map(|(netns, _)| netns)
            .collect();
        let mut found = Vec::new();
        for netns in held {
            match netdev::container_mac(&netns, &daemon.rt).await {
                Ok(Some(mac)) => found.push((netns, Some(mac))),
                Ok(None) => {}
                Err(e) => tracing::warn!("cannot read the MAC of {netns}: {e}"),
            }
        }
        daemon.set_macs(found);
        // Ready: the API answers. Whoever started the router (systemd with Type=notify, or
        // netsim, which waits on one socket for all its routers instead of polling each API)
        // hears it on $NOTIFY_SOCKET; without that variable this does nothing.
        let ready_name = format!("NAME={}", opts.name);
        if let Err(e) = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Custom(&ready_name),
        ]) {
            tracing::warn!("cannot tell $NOTIFY_SOCKET that the router is ready: {e}");
        }
        // Keep sleeve's short id in step with the control plane's, and re-address containers
        // whose address block another router won.
        let d = daemon.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tick.tick().await;
                d.sleeve.set_short_id(d.router.short_id());
                let conflicts = {
                    let mut alloc = d.alloc.lock().unwrap_or_else(|e| e.into_inner());
                    alloc.flush();
                    alloc.take_conflicts()
                };
                for c in conflicts {
                    match d.attach(&c.container, None).await {
                        Ok(v) => tracing::warn!(
                            "re-addressed {} from {} to {} (its block went to another router)",
                            c.container,
                            c.addr,
                            v["addr"].as_str().unwrap_or("?")
                        ),
                        Err(e) => tracing::warn!("cannot re-address {}: {e}", c.container),
                    }
                }
            }
        });
        tracing::info!(
            "router {} ready: MTU {mtu} (underlay {underlay_mtu}), datapath {}, {}, API {}",
            opts.name,
            daemon.tiers.kind(),
            if encrypted {
                "encrypted"
            } else {
                "unencrypted"
            },
            opts.api.display()
        );
        Ok(daemon)
    }

    /// Removes what the router made in the kernel that would outlive it (the vxlan device, or
    /// the Open vSwitch datapath with its vports and flows).
    pub async fn shutdown(&self) {
        self.tiers.fast().shutdown().await;
    }

    /// The datapaths this router can put a connection on, best first.
    fn datapaths(&self) -> Vec<&'static str> {
        match self.tiers.fast().tier() {
            Tier::Sleeve => vec!["sleeve"],
            t => vec![t.name(), "sleeve"],
        }
    }

    /// Status as JSON.
    pub fn status(&self) -> serde_json::Value {
        let alloc = self.alloc.lock().unwrap_or_else(|e| e.into_inner());
        let containers: Vec<_> = alloc
            .held()
            .into_iter()
            .map(|(c, a)| json!({"netns": c, "addr": format!("{a}/{}", self.opts.range.len)}))
            .collect();
        json!({
            "ok": true,
            "ready": true,
            "router": self.router.status(),
            "mtu": self.mtu,
            "underlay_mtu": self.underlay_mtu,
            "range": format!("{}/{}", self.opts.range.addr, self.opts.range.len),
            "datapath": self.tiers.kind(),
            "datapaths": self.datapaths(),
            "fast_path": match self.tiers.fast().availability() {
                Ok(()) => json!({
                    "available": true,
                    "tier": self.tiers.fast().tier().name(),
                    "port": self.opts.fast_path.port,
                    "reason": self.fast_reason,
                }),
                Err(_) => json!({
                    "available": false,
                    "tier": "sleeve",
                    "port": self.opts.fast_path.port,
                    "reason": self.fast_reason,
                }),
            },
            "odp": match self.tiers.fast().kernel() {
                Some(FastKernel::Odp(d)) => json!(d.stats()),
                _ => serde_json::Value::Null,
            },
            "datapath_stats": self.sleeve.stats(),
            "containers": containers,
            "ipam": alloc.status(),
            "ipam_conflicts": alloc.conflicts_total,
        })
    }

    async fn attach(
        &self,
        netns: &str,
        wanted: Option<Ipv4Addr>,
    ) -> Result<serde_json::Value, String> {
        let addr = self
            .alloc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allocate(netns, wanted)?;
        // Spread a new block claim at once, before another router picks the same block.
        self.router.announce();
        match netdev::attach(
            &self.netdev,
            self.bridge,
            netns,
            addr,
            self.opts.range.len,
            self.mtu,
            &self.rt,
        )
        .await
        {
            Ok((iface, mac)) => {
                if let Some(mac) = mac {
                    self.set_mac(netns, Some(mac));
                }
                Ok(json!({
                    "ok": true,
                    "addr": format!("{addr}/{}", self.opts.range.len),
                    "iface": iface,
                    "mtu": self.mtu,
                }))
            }
            Err(e) => {
                self.alloc
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .release(netns);
                Err(format!("attach {netns}: {e}"))
            }
        }
    }
}

impl Daemon {
    /// Records (or forgets) a container's MAC and announces the set to every peer.
    fn set_mac(&self, netns: &str, mac: Option<[u8; 6]>) {
        self.set_macs([(netns.to_string(), mac)]);
    }

    /// Records (or forgets) containers' MACs, then announces the set to every peer once.
    fn set_macs(&self, changes: impl IntoIterator<Item = (String, Option<[u8; 6]>)>) {
        let all: Vec<[u8; 6]> = {
            let mut macs = self.macs.lock().unwrap_or_else(|e| e.into_inner());
            for (netns, mac) in changes {
                match mac {
                    Some(m) => macs.insert(netns, m),
                    None => macs.remove(&netns),
                };
            }
            macs.values().copied().collect()
        };
        self.router.set_local_macs(all);
    }
}

impl Handler for Daemon {
    async fn handle(&self, req: Request) -> serde_json::Value {
        let err = |e: String| json!({"ok": false, "error": e});
        match req {
            Request::Status => self.status(),
            Request::Wait {
                connections,
                timeout_ms,
            } => {
                let (reached, names) = self
                    .router
                    .wait_connections(connections, std::time::Duration::from_millis(timeout_ms))
                    .await;
                json!({"ok": true, "reached": reached, "connections": names})
            }
            Request::Attach { netns, addr } => self.attach(&netns, addr).await.unwrap_or_else(err),
            Request::Detach { netns } => {
                let removed = netdev::detach(&self.netdev, &netns).await;
                self.set_mac(&netns, None);
                let released = self
                    .alloc
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .release(&netns);
                match removed {
                    Ok(found) => {
                        json!({"ok": true, "removed": found, "released": released.map(|a| a.to_string())})
                    }
                    Err(e) => err(format!("detach {netns}: {e}")),
                }
            }
            Request::Peers { op, addr, force } => match op {
                PeerOp::Add => {
                    self.router.add_peer(addr);
                    json!({"ok": true})
                }
                PeerOp::Remove => match self.router.remove_peer(addr, force) {
                    Ok(r) => {
                        let forced: Vec<&str> = r
                            .peers
                            .iter()
                            .filter(|p| p.was_connected)
                            .map(|p| p.name.as_str())
                            .collect();
                        let mut v = json!({
                            "ok": true,
                            "address": r.address,
                            "removed": r.peers,
                            "blocks_freed": r.blocks_freed(),
                            "was_target": r.was_target,
                        });
                        if !forced.is_empty() {
                            v["warning"] = json!(format!(
                                "{} still connected: its containers' blocks were freed; it will \
                                 re-address them when it hears the tombstones, and until then \
                                 other routers may hand out the same addresses",
                                forced.join(", ")
                            ));
                        }
                        v
                    }
                    Err(e) => err(e.to_string()),
                },
            },
        }
    }
}
