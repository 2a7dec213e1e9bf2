//! Running the system under test: when a plan has an `[overlay]` section, one overlay router
//! process per host (the real `overlay-router` binary, started inside the host's namespace so
//! the lab records its PID), connected to every other host, with each host's containers
//! attached.
//!
//! netsim knows the router only through its command line and its API socket (JSON lines), so
//! it has no build-time dependency on the overlay crate.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::lab::{Lab, LabError};
use crate::model::plan::NodeKind;

/// Environment variable naming the router binary.
pub const BIN_ENV: &str = "NETSIM_OVERLAY_BIN";
/// The router binary's file name.
pub const BIN_NAME: &str = "overlay-router";

/// Why the overlay could not be run.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// The router binary was not found.
    #[error("cannot find the {BIN_NAME} binary next to {0}: build it (`cargo build -p overlay`) or set {BIN_ENV}")]
    NoBinary(String),
    /// The plan has no overlay section.
    #[error("lab {0} has no [overlay] section")]
    NoOverlay(String),
    /// A lab operation failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// No router answers for this node: the lab runs no overlay, the node is not a host, or
    /// its router is not running.
    #[error("lab {lab}, node {node}: no overlay router API at {}: {why}", socket.display())]
    NoRouter {
        /// The lab.
        lab: String,
        /// The node asked for.
        node: String,
        /// Where the router's API socket would be.
        socket: PathBuf,
        /// Why there is none, and what to do.
        why: String,
    },
    /// A router did not become ready, or refused a request.
    #[error("lab {lab}, router on {host}: {what}")]
    Router {
        /// The lab.
        lab: String,
        /// The host.
        host: String,
        /// What happened, with the router's answer.
        what: String,
    },
    /// Routers were not ready, or not connected to all their peers, when the start limit
    /// ran out.
    #[error(
        "lab {lab}: {what} after {after_s} s (the limit; raise it with --overlay-timeout SECS):\n{}",
        routers.join("\n")
    )]
    NotConverged {
        /// The lab.
        lab: String,
        /// What was being waited for.
        what: String,
        /// The limit, in seconds.
        after_s: u64,
        /// One line per router still missing something: what it lacks and where its log is.
        routers: Vec<String>,
    },
}

/// How long [`Overlay::start`] waits, by default, for every router to be ready and connected
/// to all its peers.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The calling thread's scheduling priority raised by 10 (nice -10 from 0) while this lives;
/// `None` where the kernel refuses (no CAP_SYS_NICE). On Linux, nice values are per thread.
struct RaisedPriority {
    old: i32,
}

impl RaisedPriority {
    fn new() -> Option<RaisedPriority> {
        // SAFETY: getpriority/setpriority on the calling thread (who = 0).
        unsafe {
            *libc::__errno_location() = 0;
            let old = libc::getpriority(libc::PRIO_PROCESS, 0);
            if *libc::__errno_location() != 0 {
                return None;
            }
            (libc::setpriority(libc::PRIO_PROCESS, 0, old - 10) == 0)
                .then_some(RaisedPriority { old })
        }
    }
}

impl Drop for RaisedPriority {
    fn drop(&mut self) {
        // SAFETY: as in `new`.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, 0, self.old);
        }
    }
}

/// The API request that answers once a router has `connections` connections, or after
/// `timeout`.
fn wait_request(connections: usize, timeout: Duration) -> serde_json::Value {
    serde_json::json!({
        "cmd": "wait",
        "connections": connections,
        "timeout_ms": u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    })
}

/// The router named in a readiness datagram (`READY=1` and `NAME=...` lines, the sd_notify
/// protocol the router speaks on `$NOTIFY_SOCKET`), or `None` for any other message.
pub fn ready_name(msg: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(msg).ok()?;
    let mut ready = false;
    let mut name = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => ready = true,
            Some(("NAME", n)) if !n.is_empty() => name = Some(n),
            _ => {}
        }
    }
    name.filter(|_| ready)
}

/// One line of a [`OverlayError::NotConverged`] report: `host` has `connected` of the peers
/// in `want`; names the missing ones (the first eight) and the router's log.
pub fn missing_peers_line(host: &str, want: &[String], connected: &[String], log: &Path) -> String {
    let missing: Vec<&str> = want
        .iter()
        .filter(|p| !connected.contains(p))
        .map(String::as_str)
        .collect();
    let shown = missing
        .iter()
        .take(8)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    let more = match missing.len().saturating_sub(8) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!(
        "  {host}: {} of {} peers connected, missing {shown}{more}; log: {}",
        want.len() - missing.len(),
        want.len(),
        log.display()
    )
}

/// The directory of lab `lab`'s routers: their API sockets (`HOST.sock`), logs and state.
pub fn router_dir(lab: &str) -> PathBuf {
    crate::lab::state::run_dir().join(format!("{lab}-overlay"))
}

/// Where the router logs of lab `lab` are written: `HOST.log`. They are removed with the
/// overlay when it stops, unless something failed ([`Overlay::keep_logs`], and always when
/// the overlay did not start): then they stay for reading, under the run directory (a tmpfs
/// on most machines), until `netsim clean --logs` or a reboot.
pub fn log_dir(lab: &str) -> PathBuf {
    crate::lab::state::run_dir().join("logs").join(lab)
}

/// Removes the router logs kept for labs that are no longer up; returns their lab ids.
pub fn clean_logs() -> Vec<String> {
    let root = crate::lab::state::run_dir().join("logs");
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if crate::lab::state::state_path(&id).exists() {
            continue;
        }
        if std::fs::remove_dir_all(entry.path()).is_ok() {
            removed.push(id);
        }
    }
    removed.sort();
    removed
}

/// The API socket of the router on host `node` of lab `lab` (whether it runs or not).
pub fn api_socket(lab: &str, node: &str) -> PathBuf {
    router_dir(lab).join(format!("{node}.sock"))
}

/// A command that runs the router's client verbs against the router on `node` of lab `lab`:
/// `overlay-router --api SOCKET`, to which the caller appends a verb and its arguments
/// (`status --json`, `peers add 198.18.1.9`). The router binary is [`find_binary`]'s. Fails,
/// naming the lab, the node and the socket, when no router runs there.
pub fn client_command(lab: &str, node: &str) -> Result<std::process::Command, OverlayError> {
    let attached = Lab::attach(lab)?;
    let plan = attached.plan();
    let socket = api_socket(lab, node);
    let no_router = |why: String| OverlayError::NoRouter {
        lab: lab.to_string(),
        node: node.to_string(),
        socket: socket.clone(),
        why,
    };
    let hosts: Vec<&str> = plan
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Host)
        .map(|n| n.name.as_str())
        .collect();
    let Some(n) = plan.node(node) else {
        return Err(LabError::NoSuchNode {
            lab: lab.to_string(),
            node: node.to_string(),
            known: plan.nodes.iter().map(|n| n.name.clone()).collect(),
        }
        .into());
    };
    if plan.overlay.is_none() {
        return Err(no_router(
            "the lab's topology has no [overlay] section, so it runs no routers".into(),
        ));
    }
    if n.kind != NodeKind::Host {
        return Err(no_router(format!(
            "routers run on hosts only (this lab's: {})",
            hosts.join(", ")
        )));
    }
    // A router killed without a chance to clean up leaves its socket file: connect to know.
    if let Err(e) = std::os::unix::net::UnixStream::connect(&socket) {
        return Err(no_router(format!(
            "the router is not running ({e}; `netsim status {lab}` shows the lab's routers)"
        )));
    }
    let mut cmd = std::process::Command::new(find_binary()?);
    cmd.arg("--api").arg(&socket);
    Ok(cmd)
}

/// Runs router client verb `verb` (e.g. `["status", "--json"]`) against the router on `node`
/// of lab `lab`, with this process's stdin, stdout and stderr, and returns its exit code
/// (128 + the signal number if a signal ended it).
pub fn client(lab: &str, node: &str, verb: &[String]) -> Result<i32, OverlayError> {
    use std::os::unix::process::ExitStatusExt as _;
    let mut cmd = client_command(lab, node)?;
    let status = cmd.args(verb).status().map_err(|cause| LabError::Process {
        lab: lab.to_string(),
        node: node.to_string(),
        what: format!("run {:?}", cmd.get_program()),
        cause,
    })?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// The status of every router lab `lab` runs (by host name), as each router's API answers it
/// (`Err` with the reason when one does not). Empty when the lab runs no overlay.
pub async fn router_statuses(lab: &str) -> BTreeMap<String, Result<serde_json::Value, String>> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(router_dir(lab)) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Some(host) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".sock"))
            .map(str::to_string)
        else {
            continue;
        };
        let status = tokio::time::timeout(
            Duration::from_secs(5),
            api_call(&path, &serde_json::json!({"cmd": "status"})),
        )
        .await
        .unwrap_or_else(|_| Err(format!("{} did not answer within 5 s", path.display())));
        out.insert(host, status);
    }
    out
}

/// Each router's datapath and connections, for people: per connection the datapath, since
/// when, why and the heartbeat round trip.
pub fn render_routers(routers: &BTreeMap<String, Result<serde_json::Value, String>>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if routers.is_empty() {
        return out;
    }
    let _ = writeln!(out, "overlay routers:");
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
    for (host, st) in routers {
        let st = match st {
            Ok(st) => st,
            Err(e) => {
                let _ = writeln!(out, "  {host}: no answer: {e}");
                continue;
            }
        };
        let fast = &st["fast_path"];
        let fast = if fast["available"].as_bool() == Some(false) {
            format!(", fast path unavailable: {}", text(&fast["reason"]))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {host}: datapath {}, MTU {} (underlay {}){fast}",
            text(&st["datapath"]),
            st["mtu"],
            st["underlay_mtu"],
        );
        for c in st["router"]["connections"].as_array().into_iter().flatten() {
            let p = &c["path"];
            let rtt = p["heartbeat_rtt_us"]
                .as_u64()
                .map(|us| format!(", rtt {:.2} ms", us as f64 / 1000.0))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    -> {:<8} {:<6} for {} s: {}{rtt}; sleeve path MTU {}",
                text(&c["peer"]),
                text(&c["datapath"]),
                p["since_s"],
                text(&p["reason"]),
                c["stats"]["path_mtu"],
            );
        }
    }
    out
}

/// How to run the overlay.
#[derive(Debug, Clone, Default)]
pub struct OverlayOptions {
    /// The router binary (default: [`find_binary`]).
    pub binary: Option<PathBuf>,
    /// Override the plan's password (`Some(None)`: run without one).
    pub password: Option<Option<String>>,
    /// Per-host password overrides (for refusal tests).
    pub host_passwords: BTreeMap<String, Option<String>>,
    /// Do not attach containers.
    pub no_attach: bool,
    /// Extra `overlay-router run` arguments for every router (e.g. `--fast-path off`).
    pub router_args: Vec<String>,
    /// How long to wait for every router to be ready and connected to all its peers
    /// (default [`DEFAULT_START_TIMEOUT`]).
    pub start_timeout: Option<Duration>,
}

/// Finds the router binary: `$NETSIM_OVERLAY_BIN`, else next to the running executable (or one
/// directory up, for test binaries in target/*/deps).
pub fn find_binary() -> Result<PathBuf, OverlayError> {
    if let Some(p) = std::env::var_os(BIN_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| OverlayError::NoBinary(e.to_string()))?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    for _ in 0..2 {
        if let Some(d) = &dir {
            let cand = d.join(BIN_NAME);
            if cand.is_file() {
                return Ok(cand);
            }
            dir = d.parent().map(Path::to_path_buf);
        }
    }
    Err(OverlayError::NoBinary(exe.display().to_string()))
}

struct RouterProc {
    child: Option<Child>,
    api: PathBuf,
    args: Vec<String>,
    password: Option<String>,
    log: PathBuf,
}

/// The overlay routers of one lab.
pub struct Overlay {
    lab: String,
    dir: PathBuf,
    binary: PathBuf,
    routers: BTreeMap<String, RouterProc>,
    addresses: BTreeMap<String, Ipv4Addr>,
    /// Where routers say they are ready (`$NOTIFY_SOCKET`), and the socket netsim reads.
    notify_path: PathBuf,
    notify: std::os::unix::net::UnixDatagram,
    start_timeout: Duration,
    logs: PathBuf,
    keep_logs: bool,
    ready_after: Option<Duration>,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("lab", &self.lab)
            .field("hosts", &self.routers.keys().collect::<Vec<_>>())
            .field("addresses", &self.addresses)
            .finish()
    }
}

/// Sends one JSON request to a router's API socket and returns its answer.
pub async fn api_call(
    path: &Path,
    request: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|e| format!("connect {}: {e}", path.display()))?;
    let (rd, mut wr) = stream.into_split();
    let mut line = request.to_string();
    line.push('\n');
    wr.write_all(line.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let answer = BufReader::new(rd)
        .lines()
        .next_line()
        .await
        .map_err(|e| format!("read: {e}"))?
        .ok_or_else(|| "the router closed without answering".to_string())?;
    let v: serde_json::Value =
        serde_json::from_str(&answer).map_err(|e| format!("bad answer {answer:?}: {e}"))?;
    if v["ok"].as_bool() == Some(true) {
        Ok(v)
    } else {
        Err(v["error"].as_str().unwrap_or("refused").to_string())
    }
}

impl Overlay {
    /// Starts a router on every host of the lab, waits until each is ready and connected to
    /// every other, then attaches every container to its host's router.
    pub async fn start(lab: &Lab, opts: &OverlayOptions) -> Result<Overlay, OverlayError> {
        let plan = lab.plan();
        let o = plan
            .overlay
            .as_ref()
            .ok_or_else(|| OverlayError::NoOverlay(lab.id().to_string()))?;
        let binary = match &opts.binary {
            Some(b) => b.clone(),
            None => find_binary()?,
        };
        let dir = router_dir(lab.id());
        let logs = log_dir(lab.id());
        for d in [&dir, &logs] {
            std::fs::create_dir_all(d).map_err(|cause| LabError::Process {
                lab: lab.id().to_string(),
                node: "-".into(),
                what: format!("create {}", d.display()),
                cause,
            })?;
        }
        let hosts: Vec<(String, Ipv4Addr)> = plan
            .nodes
            .iter()
            .filter(|n| n.kind == NodeKind::Host)
            .filter_map(|n| {
                n.interfaces
                    .iter()
                    .find_map(|i| i.addrs.first())
                    .map(|a| (n.name.clone(), a.addr()))
            })
            .collect();
        let default_password = match &opts.password {
            Some(p) => p.clone(),
            None => o.password.clone(),
        };
        // One socket hears every router say it is ready: no polling of API sockets that do
        // not exist yet.
        // Not `*.sock`: those are the routers' API sockets (`router_statuses` lists them).
        let notify_path = dir.join("routers.ready");
        let _ = std::fs::remove_file(&notify_path);
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|cause| LabError::Process {
                lab: lab.id().to_string(),
                node: "-".into(),
                what: format!("bind the readiness socket {}", notify_path.display()),
                cause,
            })?;
        let mut overlay = Overlay {
            lab: lab.id().to_string(),
            dir: dir.clone(),
            binary,
            routers: BTreeMap::new(),
            addresses: BTreeMap::new(),
            notify_path,
            notify,
            start_timeout: opts.start_timeout.unwrap_or(DEFAULT_START_TIMEOUT),
            logs: logs.clone(),
            keep_logs: false,
            ready_after: None,
        };
        for (host, _) in &hosts {
            let mut args = vec![
                "run".to_string(),
                "--name".into(),
                host.clone(),
                "--range".into(),
                o.range.to_string(),
                "--mtu".into(),
                o.mtu
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "auto".into()),
                "--state-dir".into(),
                dir.join(format!("{host}.state")).display().to_string(),
            ];
            for (other, addr) in &hosts {
                if other != host {
                    args.push("--peer".into());
                    args.push(addr.to_string());
                }
            }
            args.extend(opts.router_args.iter().cloned());
            let password = opts
                .host_passwords
                .get(host)
                .or_else(|| o.host_passwords.get(host))
                .cloned()
                .unwrap_or_else(|| default_password.clone());
            overlay.routers.insert(
                host.clone(),
                RouterProc {
                    child: None,
                    api: dir.join(format!("{host}.sock")),
                    args,
                    password,
                    log: logs.join(format!("{host}.log")),
                },
            );
        }
        // When the start fails, the routers are stopped (as `overlay` drops) and their logs
        // kept: the error says where they are.
        match overlay.converge(lab, opts.no_attach).await {
            Ok(()) => Ok(overlay),
            Err(e) => {
                overlay.keep_logs();
                Err(e)
            }
        }
    }

    /// Starts every router, waits until all are ready and connected, and attaches the
    /// containers.
    async fn converge(&mut self, lab: &Lab, no_attach: bool) -> Result<(), OverlayError> {
        let overlay = self;
        let plan = lab.plan();
        let names: Vec<String> = overlay.routers.keys().cloned().collect();
        let started = Instant::now();
        let deadline = started + overlay.start_timeout;
        // Routers already running busy the CPU connecting to each other; netsim's spawning of
        // the rest would get a small share of it (at 100 routers on 2 cores the last spawn
        // came 15 s after the first). Spawn at a higher priority; each router gets the usual
        // one back before it runs.
        let raised = RaisedPriority::new();
        for host in &names {
            overlay.spawn(lab, host, raised.as_ref().map(|r| r.old))?;
        }
        drop(raised);
        overlay.wait_all_ready(&names, deadline).await?;
        overlay.ready_after = Some(started.elapsed());
        // Every router connects to every other with the same password (all of them, unless
        // `host_passwords` sets some apart) before any container is attached: a router that
        // hands out addresses before it hears its peers' IPAM claims may pick a block one of
        // them uses, and the container it loses is re-addressed afterwards.
        let want: Vec<(String, Vec<String>)> = names
            .iter()
            .map(|host| {
                let password = &overlay.routers[host].password;
                let peers = names
                    .iter()
                    .filter(|other| *other != host && &overlay.routers[*other].password == password)
                    .cloned()
                    .collect();
                (host.clone(), peers)
            })
            .collect();
        overlay.wait_all_connected(want, deadline).await?;
        if !no_attach {
            for n in &plan.nodes {
                if let NodeKind::Container { host } = &n.kind {
                    let addr = overlay.attach(lab, host, &n.name).await?;
                    overlay.addresses.insert(n.name.clone(), addr);
                }
            }
        }
        Ok(())
    }

    /// How long the routers took, from the first spawned to the last ready, at start.
    pub fn ready_after(&self) -> Option<Duration> {
        self.ready_after
    }

    /// Keeps the routers' logs when the overlay stops (for a run that failed).
    pub fn keep_logs(&mut self) {
        self.keep_logs = true;
    }

    /// Starts `host`'s router; with `nice`, the child sets that scheduling priority before it
    /// runs (see [`RaisedPriority`]).
    fn spawn(&mut self, lab: &Lab, host: &str, nice: Option<i32>) -> Result<(), OverlayError> {
        let node = lab.node(host).ok_or_else(|| LabError::NoSuchNode {
            lab: lab.id().to_string(),
            node: host.to_string(),
            known: vec![],
        })?;
        let binary = self.binary.clone();
        let Some(r) = self.routers.get_mut(host) else {
            return Ok(());
        };
        let mut cmd = node.command(&binary);
        cmd.arg("--api").arg(&r.api).args(&r.args);
        cmd.env("NOTIFY_SOCKET", &self.notify_path);
        if let Some(n) = nice {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: setpriority(2) is async-signal-safe; the closure touches nothing else.
            unsafe {
                cmd.pre_exec(move || {
                    libc::setpriority(libc::PRIO_PROCESS, 0, n);
                    Ok(())
                });
            }
        }
        cmd.env_remove("OVERLAY_PASSWORD");
        if let Some(p) = &r.password {
            cmd.env("OVERLAY_PASSWORD", p);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&r.log)
            .map_err(|cause| LabError::Process {
                lab: lab.id().to_string(),
                node: host.to_string(),
                what: format!("open {}", r.log.display()),
                cause,
            })?;
        let log2 = log.try_clone().map_err(|cause| LabError::Process {
            lab: lab.id().to_string(),
            node: host.to_string(),
            what: "dup log".into(),
            cause,
        })?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        let _ = std::fs::remove_file(&r.api);
        r.child = Some(node.spawn_command(cmd)?);
        Ok(())
    }

    fn err(&self, host: &str, what: String) -> OverlayError {
        OverlayError::Router {
            lab: self.lab.clone(),
            host: host.to_string(),
            what,
        }
    }

    /// Waits until every router in `hosts` says it is ready on the readiness socket, or
    /// `deadline`; a router that exits first is an error quoting the end of its log.
    async fn wait_all_ready(
        &mut self,
        hosts: &[String],
        deadline: Instant,
    ) -> Result<(), OverlayError> {
        let (lab, path) = (self.lab.clone(), self.notify_path.clone());
        let io_err = move |what: &str, e: std::io::Error| OverlayError::Router {
            lab: lab.clone(),
            host: "-".into(),
            what: format!("{what} the readiness socket {}: {e}", path.display()),
        };
        let sock = self
            .notify
            .try_clone()
            .and_then(tokio::net::UnixDatagram::from_std)
            .map_err(|e| io_err("read", e))?;
        let mut pending: std::collections::BTreeSet<String> = hosts.iter().cloned().collect();
        let mut buf = [0u8; 512];
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(OverlayError::NotConverged {
                    lab: self.lab.clone(),
                    what: format!("{} of {} routers not ready", pending.len(), hosts.len()),
                    after_s: self.start_timeout.as_secs(),
                    routers: pending
                        .iter()
                        .map(|h| {
                            format!("  {h}: no readiness signal; log: {}", self.log_display(h))
                        })
                        .collect(),
                });
            }
            // Wake at least once a second to notice a router that died before it was ready.
            match tokio::time::timeout(left.min(Duration::from_secs(1)), sock.recv(&mut buf)).await
            {
                Ok(Ok(n)) => {
                    if let Some(name) = ready_name(&buf[..n]) {
                        pending.remove(name);
                    }
                }
                Ok(Err(e)) => return Err(io_err("read", e)),
                Err(_) => {
                    for host in &pending {
                        self.check_alive(host)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// An error if `host`'s router has exited, quoting the end of its log.
    fn check_alive(&mut self, host: &str) -> Result<(), OverlayError> {
        let Some(r) = self.routers.get_mut(host) else {
            return Ok(());
        };
        let Some(Ok(Some(status))) = r.child.as_mut().map(Child::try_wait) else {
            return Ok(());
        };
        let log = std::fs::read_to_string(&r.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let what = format!(
            "the router exited ({status}) before it was ready; its log ({}) ends: {}",
            r.log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
        Err(self.err(host, what))
    }

    fn log_display(&self, host: &str) -> String {
        self.routers
            .get(host)
            .map_or_else(|| "-".into(), |r| r.log.display().to_string())
    }

    /// Waits, for all routers at once, until each `(host, peers)` has an established
    /// connection to all its `peers`, or `deadline`. Each router answers an API `wait` when
    /// its connections change; nothing polls. The error names every router still missing
    /// peers, which ones, and its log.
    async fn wait_all_connected(
        &self,
        want: Vec<(String, Vec<String>)>,
        deadline: Instant,
    ) -> Result<(), OverlayError> {
        let mut waits = tokio::task::JoinSet::new();
        for (host, peers) in want {
            let api = self.api_path(&host)?;
            let left = deadline.saturating_duration_since(Instant::now());
            waits.spawn(async move {
                let request = wait_request(peers.len(), left);
                // The router answers by the deadline; a hung one is given two seconds more.
                let answer =
                    tokio::time::timeout(left + Duration::from_secs(2), api_call(&api, &request))
                        .await
                        .unwrap_or_else(|_| Err("no answer from the router's API".into()));
                (host, peers, answer)
            });
        }
        let mut missing = Vec::new();
        while let Some(done) = waits.join_next().await {
            let Ok((host, peers, answer)) = done else {
                continue;
            };
            let connected: Vec<String> = match &answer {
                Ok(v) if v["reached"] == true => continue,
                Ok(v) => v["connections"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect(),
                Err(e) => {
                    missing.push(format!("  {host}: {e}; log: {}", self.log_display(&host)));
                    continue;
                }
            };
            let log = self
                .routers
                .get(&host)
                .map(|r| r.log.clone())
                .unwrap_or_default();
            missing.push(missing_peers_line(&host, &peers, &connected, &log));
        }
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort();
        Err(OverlayError::NotConverged {
            lab: self.lab.clone(),
            what: format!("{} routers not connected to all their peers", missing.len()),
            after_s: self.start_timeout.as_secs(),
            routers: missing,
        })
    }

    /// Waits until the router on `host` has `n` established connections (the start limit).
    pub async fn wait_connected(&self, host: &str, n: usize) -> Result<(), OverlayError> {
        let request = wait_request(n, self.start_timeout);
        let answer = api_call(&self.api_path(host)?, &request)
            .await
            .map_err(|e| self.err(host, e))?;
        if answer["reached"] == true {
            return Ok(());
        }
        let have = answer["connections"].as_array().map_or(0, Vec::len);
        Err(self.err(
            host,
            format!(
                "{have} of {n} peers connected after {} s; log: {}",
                self.start_timeout.as_secs(),
                self.log_display(host)
            ),
        ))
    }

    /// The API socket of `host`'s router.
    pub fn api_path(&self, host: &str) -> Result<PathBuf, OverlayError> {
        self.routers
            .get(host)
            .map(|r| r.api.clone())
            .ok_or_else(|| self.err(host, "no router runs on this node".into()))
    }

    /// The router's status (JSON, as `overlay-router status --json` prints it).
    pub async fn status(&self, host: &str) -> Result<serde_json::Value, OverlayError> {
        let api = self.api_path(host)?;
        api_call(&api, &serde_json::json!({"cmd": "status"}))
            .await
            .map_err(|e| self.err(host, format!("status: {e}")))
    }

    /// Attaches container `container` to `host`'s router; returns its overlay address.
    pub async fn attach(
        &self,
        lab: &Lab,
        host: &str,
        container: &str,
    ) -> Result<Ipv4Addr, OverlayError> {
        let node = lab.node(container).ok_or_else(|| LabError::NoSuchNode {
            lab: lab.id().to_string(),
            node: container.to_string(),
            known: vec![],
        })?;
        let api = self.api_path(host)?;
        let v = api_call(
            &api,
            &serde_json::json!({"cmd": "attach", "netns": node.netns_path().display().to_string()}),
        )
        .await
        .map_err(|e| self.err(host, format!("attach {container}: {e}")))?;
        v["addr"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| self.err(host, format!("attach {container}: no address in {v}")))
    }

    /// The overlay address given to `container`.
    pub fn address_of(&self, container: &str) -> Option<Ipv4Addr> {
        self.addresses.get(container).copied()
    }

    /// Every container and its overlay address.
    pub fn addresses(&self) -> &BTreeMap<String, Ipv4Addr> {
        &self.addresses
    }

    /// Where `host`'s router writes its log (while the overlay runs; `stop` removes it).
    pub fn log_path(&self, host: &str) -> Option<PathBuf> {
        self.routers.get(host).map(|r| r.log.clone())
    }

    /// The process id of every running router, by host.
    pub fn router_pids(&self) -> BTreeMap<String, u32> {
        self.routers
            .iter()
            .filter_map(|(h, r)| r.child.as_ref().map(|c| (h.clone(), c.id())))
            .collect()
    }

    /// Whether `host`'s router process is running (not killed by [`Overlay::kill`]).
    pub fn is_running(&self, host: &str) -> bool {
        self.routers.get(host).is_some_and(|r| r.child.is_some())
    }

    /// The router's log so far.
    pub fn log(&self, host: &str) -> String {
        self.routers
            .get(host)
            .and_then(|r| std::fs::read_to_string(&r.log).ok())
            .unwrap_or_default()
    }

    /// Changes the password `host`'s router gets at its next (re)start.
    pub fn set_password(&mut self, host: &str, password: Option<String>) {
        if let Some(r) = self.routers.get_mut(host) {
            r.password = password;
        }
    }

    /// Kills `host`'s router with SIGKILL (as a crash would) and reaps it.
    pub fn kill(&mut self, host: &str) -> Result<(), OverlayError> {
        if let Some(mut c) = self.routers.get_mut(host).and_then(|r| r.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// Starts `host`'s router again (after [`Overlay::kill`]) and waits until it is ready.
    pub async fn restart(&mut self, lab: &Lab, host: &str) -> Result<(), OverlayError> {
        self.kill(host)?;
        // Readiness news of the router's earlier life is stale.
        let mut buf = [0u8; 512];
        while self.notify.recv(&mut buf).is_ok() {}
        self.spawn(lab, host, None)?;
        let deadline = Instant::now() + self.start_timeout;
        self.wait_all_ready(&[host.to_string()], deadline).await
    }

    /// Stops every router (SIGTERM, then SIGKILL after 5 s) and removes the run directory.
    pub fn stop(mut self) {
        self.stop_all();
    }

    /// Leaves the routers running (for `netsim run --keep`; `netsim down` kills them).
    pub fn leave_running(mut self) {
        for r in self.routers.values_mut() {
            r.child = None;
        }
        self.dir = PathBuf::new();
        self.logs = PathBuf::new();
    }

    fn stop_all(&mut self) {
        // SIGTERM to all first, then reap: a hundred routers stop together, not in turn.
        let mut children: Vec<Child> = self
            .routers
            .values_mut()
            .filter_map(|r| r.child.take())
            .collect();
        for c in &children {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !children.is_empty() {
            children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
            if children.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                for c in &mut children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        if !self.keep_logs && !self.logs.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.logs);
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::{missing_peers_line, ready_name};

    #[rstest]
    #[case::ready_with_name(b"READY=1\nNAME=h1\n".as_slice(), Some("h1"))]
    #[case::name_first(b"NAME=h7\nREADY=1".as_slice(), Some("h7"))]
    #[case::not_ready(b"STATUS=starting\nNAME=h1\n".as_slice(), None)]
    #[case::no_name(b"READY=1\n".as_slice(), None)]
    #[case::empty_name(b"READY=1\nNAME=\n".as_slice(), None)]
    #[case::not_utf8(b"READY=1\nNAME=\xff\n".as_slice(), None)]
    fn readiness_datagrams_name_their_router(#[case] msg: &[u8], #[case] name: Option<&str>) {
        assert_eq!(ready_name(msg), name);
    }

    #[test]
    fn a_router_missing_peers_is_named_with_them_and_its_log() {
        let names = |n: std::ops::Range<usize>| n.map(|i| format!("h{i}")).collect::<Vec<_>>();
        let log = std::path::Path::new("/run/netsim/lab1-overlay/h0.log");
        let lines = [
            missing_peers_line("h0", &names(1..4), &names(1..3), log),
            missing_peers_line("h0", &names(1..40), &names(1..25), log),
        ];
        insta::assert_snapshot!(lines.join("\n"), @r"
          h0: 2 of 3 peers connected, missing h3; log: /run/netsim/lab1-overlay/h0.log
          h0: 24 of 39 peers connected, missing h25, h26, h27, h28, h29, h30, h31, h32 and 7 more; log: /run/netsim/lab1-overlay/h0.log
        ");
    }
}
