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
}

/// The directory of lab `lab`'s routers: their API sockets (`HOST.sock`), logs and state.
pub fn router_dir(lab: &str) -> PathBuf {
    crate::lab::state::run_dir().join(format!("{lab}-overlay"))
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
        let dir = crate::lab::state::run_dir().join(format!("{}-overlay", lab.id()));
        std::fs::create_dir_all(&dir).map_err(|cause| LabError::Process {
            lab: lab.id().to_string(),
            node: "-".into(),
            what: format!("create {}", dir.display()),
            cause,
        })?;
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
        let mut overlay = Overlay {
            lab: lab.id().to_string(),
            dir: dir.clone(),
            binary,
            routers: BTreeMap::new(),
            addresses: BTreeMap::new(),
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
                .cloned()
                .unwrap_or_else(|| default_password.clone());
            overlay.routers.insert(
                host.clone(),
                RouterProc {
                    child: None,
                    api: dir.join(format!("{host}.sock")),
                    args,
                    password,
                    log: dir.join(format!("{host}.log")),
                },
            );
        }
        let names: Vec<String> = overlay.routers.keys().cloned().collect();
        for host in &names {
            overlay.spawn(lab, host)?;
        }
        for host in &names {
            overlay.wait_ready(host).await?;
        }
        // Every router connects to every other with the same password (all of them, unless
        // `host_passwords` sets some apart) before any container is attached: a router that
        // hands out addresses before it hears its peers' IPAM claims may pick a block one of
        // them uses, and the container it loses is re-addressed afterwards.
        for host in &names {
            let password = &overlay.routers[host].password;
            let peers = names
                .iter()
                .filter(|other| *other != host && &overlay.routers[*other].password == password)
                .count();
            overlay.wait_connected(host, peers).await?;
        }
        if !opts.no_attach {
            for n in &plan.nodes {
                if let NodeKind::Container { host } = &n.kind {
                    let addr = overlay.attach(lab, host, &n.name).await?;
                    overlay.addresses.insert(n.name.clone(), addr);
                }
            }
        }
        Ok(overlay)
    }

    fn spawn(&mut self, lab: &Lab, host: &str) -> Result<(), OverlayError> {
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

    /// Waits until the router on `host` answers status (60 s bound, only to catch hangs).
    pub async fn wait_ready(&mut self, host: &str) -> Result<(), OverlayError> {
        let api = self.api_path(host)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if api_call(&api, &serde_json::json!({"cmd": "status"}))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(r) = self.routers.get_mut(host) {
                if let Some(c) = r.child.as_mut() {
                    if let Ok(Some(status)) = c.try_wait() {
                        let log = std::fs::read_to_string(&r.log).unwrap_or_default();
                        let tail: Vec<&str> = log.lines().rev().take(5).collect();
                        return Err(self.err(
                            host,
                            format!(
                                "the router exited ({status}) before it was ready; its log ends: {}",
                                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                            ),
                        ));
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(self.err(host, "not ready after 60 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the router on `host` has `n` established connections (60 s bound).
    pub async fn wait_connected(&self, host: &str, n: usize) -> Result<(), OverlayError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st = self.status(host).await?;
            let have = st["router"]["connections"].as_array().map_or(0, Vec::len);
            if have >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.err(host, format!("{have} of {n} peers connected after 60 s")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
        self.spawn(lab, host)?;
        self.wait_ready(host).await
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
    }

    fn stop_all(&mut self) {
        for r in self.routers.values_mut() {
            if let Some(mut c) = r.child.take() {
                // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
                unsafe {
                    libc::kill(c.id() as i32, libc::SIGTERM);
                }
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    match c.try_wait() {
                        Ok(Some(_)) | Err(_) => break,
                        Ok(None) if Instant::now() > deadline => {
                            let _ = c.kill();
                            let _ = c.wait();
                            break;
                        }
                        Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            }
        }
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        self.stop_all();
    }
}
