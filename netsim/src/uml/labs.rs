//! Labs kept in background guests: `netsim up --kernel uml FILE`, then `ls`, `exec`, `down`
//! and `clean` from the host.
//!
//! `up` boots a guest whose command is the agent (`netsim uml-agent`, hidden): it brings the
//! lab up inside the guest under the same id, writes `up.json` (or `up.err`) to the share
//! directory, and then serves requests until asked to stop. The host keeps a record,
//! `<run dir>/uml/<id>.json` (run dir `/run/netsim` or `NETSIM_RUN_DIR`), naming the guest's
//! process (its pid is its process group) with its start time, and the share directory.
//!
//! Requests go through the share directory, which both sides see (hostfs), so no socket has
//! to cross the guest boundary: the host writes `req/<n>.tmp` and renames it to `req/<n>.req`
//! (a request is whole once visible); the agent claims it by renaming it to `req/<n>.run`,
//! runs it with stdout and stderr to `req/<n>.out` and `req/<n>.err` (the host copies them to
//! its own as they grow) and publishes the exit code as `req/<n>.rc` the same way. A request
//! is JSON: `{"op":"exec","node":"h1","argv":["ip","addr"]}` or `{"op":"stop"}`. Exec'd
//! commands get no stdin; a signal to the host's `netsim exec` (Ctrl-C) is passed on as
//! `req/<n>.kill` holding its number, and the agent sends it to the command's process group
//! in the guest. `stop` tears the lab down; the agent exits, and the guest's init
//! powers it off.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::{
    catch_signals, high_dup, io_err, prepare, spawn, GuestCommand, GuestOptions, UmlError,
    GUEST_SHARE, SIGNALLED,
};
use crate::kernel::process;
use crate::lab::{self, state, Lab, UpOptions};
use crate::model::Plan;

/// The host's record of a lab kept in a guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestLab {
    /// Lab id (the same inside the guest).
    pub id: String,
    /// Plan name.
    pub plan: String,
    /// Topology file.
    pub file: PathBuf,
    /// Number of nodes.
    pub nodes: usize,
    /// The guest kernel's pid, which is also its process group id.
    pub pid: u32,
    /// Its start time in clock ticks since boot (against pid reuse).
    pub start: u64,
    /// The guest kernel binary.
    pub kernel: PathBuf,
    /// The share directory on the host.
    pub share: PathBuf,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
}

impl GuestLab {
    /// Whether the guest is still running.
    pub fn alive(&self) -> bool {
        // A guest killed after its parent exited may linger a moment as a zombie: dead.
        let zombie = fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|stat| {
                let (_, rest) = stat.rsplit_once(')')?;
                rest.split_whitespace().next().map(|s| s == "Z" || s == "X")
            })
            .unwrap_or(false);
        process::is_alive(self.pid, self.start) && !zombie
    }

    fn err(&self, what: impl Into<String>) -> UmlError {
        UmlError::GuestLab {
            id: self.id.clone(),
            what: what.into(),
        }
    }
}

/// The directory of guest-lab records.
pub fn records_dir() -> PathBuf {
    state::run_dir().join("uml")
}

fn record_path(id: &str) -> PathBuf {
    records_dir().join(format!("{id}.json"))
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), UmlError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".part");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, data)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(io_err(format!("cannot write {}", path.display())))
}

fn save(rec: &GuestLab) -> Result<(), UmlError> {
    fs::create_dir_all(records_dir())
        .map_err(io_err(format!("cannot create {}", records_dir().display())))?;
    let json = serde_json::to_vec_pretty(rec).map_err(|e| rec.err(e.to_string()))?;
    write_atomic(&record_path(&rec.id), &json)
}

/// Every guest-lab record on this machine (unreadable ones are skipped with a warning).
pub fn list() -> Vec<GuestLab> {
    let Ok(dir) = fs::read_dir(records_dir()) else {
        return Vec::new();
    };
    let mut out: Vec<GuestLab> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
        .filter_map(|p| match fs::read(&p) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(rec) => Some(rec),
                Err(e) => {
                    tracing::warn!("skipping guest-lab record {}: {e}", p.display());
                    None
                }
            },
            Err(_) => None,
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// The record of guest lab `id`, if there is one.
pub fn find(id: &str) -> Option<GuestLab> {
    let bytes = fs::read(record_path(id)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Kill what is left of a guest's process group, if its members are still that guest's
/// kernel (a dead guest's pid may have been reused by an unrelated process).
fn kill_group(rec: &GuestLab) {
    let members = group_members(rec.pid as i32);
    let ours = !members.is_empty()
        && members.iter().all(|pid| {
            fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
                exe == rec.kernel || rec.kernel.canonicalize().is_ok_and(|k| k == exe)
            })
        });
    if ours {
        let _ = killpg(Pid::from_raw(rec.pid as i32), Signal::SIGKILL);
    }
}

/// Processes in process group `pgid`, from /proc.
pub fn group_members(pgid: i32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            // pid (comm) state ppid pgrp: comm may hold spaces; split after the last ')'.
            let (_, rest) = stat.rsplit_once(')')?;
            let pgrp: i32 = rest.split_whitespace().nth(2)?.parse().ok()?;
            (pgrp == pgid).then_some(pid)
        })
        .collect()
}

fn remove_all(rec: &GuestLab) {
    kill_group(rec);
    if let Err(e) = fs::remove_dir_all(&rec.share) {
        if e.kind() != io::ErrorKind::NotFound {
            eprintln!("netsim: cannot remove {}: {e}", rec.share.display());
        }
    }
    let _ = fs::remove_file(record_path(&rec.id));
}

/// Boot a background guest and bring up the lab of `file` (already planned as `plan`) in it
/// under id `id` (default: the plan's name and a random suffix). Returns once the lab is up.
pub fn up(
    file: &Path,
    plan: &Plan,
    id: Option<&str>,
    opts: &GuestOptions,
) -> Result<GuestLab, UmlError> {
    let id = match id {
        Some(id) => id.to_string(),
        None => lab::default_id(&plan.name),
    };
    let lab_err = |what: String| UmlError::GuestLab {
        id: id.clone(),
        what,
    };
    lab::validate_id(&id).map_err(|e| lab_err(e.to_string()))?;
    if state::state_path(&id).exists() || record_path(&id).exists() {
        return Err(lab_err(
            "the id is in use (see `netsim ls`); pick another with --name".into(),
        ));
    }
    let (exe, exe_dir) = super::guest_visible_exe()?;
    let mut opts = opts.clone();
    opts.writable.extend(exe_dir);
    if super::hidden_in_guest(file) {
        if let Some(dir) = file.parent() {
            opts.writable.push(dir.to_path_buf());
        }
    }
    let cmd = GuestCommand::new([
        exe.into_os_string(),
        "uml-agent".into(),
        "--id".into(),
        id.clone().into(),
        "--share".into(),
        GUEST_SHARE.into(),
        file.as_os_str().to_owned(),
    ]);
    let mut share = prepare(&cmd, &opts)?;
    fs::create_dir(share.path.join("req")).map_err(io_err("cannot create the request dir"))?;
    let agent_out = File::create(share.path.join("agent.out"))
        .map_err(io_err("cannot create the agent's log"))?;
    let agent_err = File::create(share.path.join("agent.err"))
        .map_err(io_err("cannot create the agent's log"))?;
    let out = high_dup(&agent_out, "agent stdout")?;
    let err = high_dup(&agent_err, "agent stderr")?;
    if opts.handle_signals {
        catch_signals()?;
    }
    let started = Instant::now();
    let mut child = spawn(&share, &opts, out, err, None)?;
    let rec = GuestLab {
        id: id.clone(),
        plan: plan.name.clone(),
        file: file.to_path_buf(),
        nodes: plan.nodes.len(),
        pid: child.id(),
        start: process::start_time(child.id()).unwrap_or(0),
        kernel: opts.kernel.clone(),
        share: share.path.clone(),
        created: now_secs(),
    };
    // From here the guest outlives this process: the record owns the share directory.
    share.detached = true;
    if let Err(e) = save(&rec) {
        remove_all(&rec);
        let _ = child.wait();
        return Err(e);
    }
    let fail = |e: UmlError, child: &mut std::process::Child| {
        remove_all(&rec);
        let _ = child.wait();
        Err(e)
    };
    let deadline = started + opts.timeout;
    let mut ready = false;
    loop {
        if let Ok(bytes) = fs::read(rec.share.join("up.json")) {
            if !bytes.is_empty() {
                break;
            }
        }
        if let Ok(text) = fs::read_to_string(rec.share.join("up.err")) {
            return fail(
                rec.err(format!("bring-up failed in the guest: {}", text.trim())),
                &mut child,
            );
        }
        if !ready && rec.share.join("ready").exists() {
            ready = true;
            if opts.progress {
                eprintln!(
                    "netsim: guest ready after {:.1} s; bringing the lab up inside it ...",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        if let Ok(Some(_)) = child.try_wait() {
            let tail = share.log_tail(30);
            let agent = fs::read_to_string(rec.share.join("agent.err")).unwrap_or_default();
            return fail(
                rec.err(format!(
                    "the guest stopped before the lab was up.\n---- agent stderr ----\n{}{}",
                    agent, tail
                )),
                &mut child,
            );
        }
        let sig = SIGNALLED.swap(0, Ordering::SeqCst);
        if opts.handle_signals && sig != 0 {
            return fail(UmlError::Interrupted { signal: sig }, &mut child);
        }
        if Instant::now() >= deadline {
            let tail = share.log_tail(30);
            return fail(
                UmlError::Timeout {
                    secs: opts.timeout.as_secs(),
                    stage: if ready {
                        "the lab did not come up"
                    } else {
                        "it did not finish booting"
                    },
                    share: rec.share.clone(),
                    log_tail: tail,
                },
                &mut child,
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The guest runs on, reparented when this process exits; nothing to wait for here.
    drop(child);
    Ok(rec)
}

/// A request to the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Exec { node: String, argv: Vec<String> },
    Stop,
}

fn request_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}", std::process::id())
}

/// Copy what was appended to `path` since `pos` to `out`.
fn pump(path: &Path, pos: &mut u64, out: &mut dyn Write) {
    let Ok(mut f) = File::open(path) else { return };
    if f.seek(SeekFrom::Start(*pos)).is_err() {
        return;
    }
    let mut buf = Vec::new();
    if let Ok(n) = f.read_to_end(&mut buf) {
        if n > 0 {
            let _ = out.write_all(&buf);
            let _ = out.flush();
            *pos += n as u64;
        }
    }
}

/// Send a request and wait for its exit code, copying its output to ours meanwhile.
fn request(rec: &GuestLab, req: &Request, timeout: Option<Duration>) -> Result<i32, UmlError> {
    if !rec.alive() {
        return Err(rec.err("its guest is gone; remove the record with `netsim clean`"));
    }
    let dir = rec.share.join("req");
    let name = request_name();
    let json = serde_json::to_vec(req).map_err(|e| rec.err(e.to_string()))?;
    let tmp = dir.join(format!("{name}.tmp"));
    fs::write(&tmp, json)
        .and_then(|()| fs::rename(&tmp, dir.join(format!("{name}.req"))))
        .map_err(io_err(format!(
            "cannot write a request to {}",
            dir.display()
        )))?;
    let files = |ext: &str| dir.join(format!("{name}.{ext}"));
    let (mut out_pos, mut err_pos) = (0u64, 0u64);
    let started = Instant::now();
    let forward = matches!(req, Request::Exec { .. }) && catch_signals().is_ok();
    let result = loop {
        // Ctrl-C and friends reach the command inside the guest; its exit code says the rest.
        let sig = SIGNALLED.swap(0, Ordering::SeqCst);
        if forward && sig != 0 {
            let _ = fs::write(files("kill"), sig.to_string());
        }
        pump(&files("out"), &mut out_pos, &mut io::stdout());
        pump(&files("err"), &mut err_pos, &mut io::stderr());
        if let Ok(text) = fs::read_to_string(files("rc")) {
            pump(&files("out"), &mut out_pos, &mut io::stdout());
            pump(&files("err"), &mut err_pos, &mut io::stderr());
            break text
                .trim()
                .parse::<i32>()
                .map_err(|_| rec.err(format!("garbled exit code {text:?} from the agent")));
        }
        if !rec.alive() {
            break Err(rec.err("its guest stopped while running the request"));
        }
        if timeout.is_some_and(|t| started.elapsed() > t) {
            break Err(rec.err("the agent did not answer in time"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for ext in ["req", "run", "out", "err", "rc", "kill"] {
        let _ = fs::remove_file(files(ext));
    }
    result
}

/// Run `argv` in `node` of guest lab `id`; its output reaches ours; returns its exit code.
pub fn exec(id: &str, node: &str, argv: &[String]) -> Result<i32, UmlError> {
    let rec = find(id).ok_or_else(|| UmlError::GuestLab {
        id: id.to_string(),
        what: "no such guest lab (see `netsim ls`)".into(),
    })?;
    request(
        &rec,
        &Request::Exec {
            node: node.to_string(),
            argv: argv.to_vec(),
        },
        None,
    )
}

/// Tear down guest lab `id`: the lab inside, then the guest, its share directory and record.
pub fn down(id: &str) -> Result<(), UmlError> {
    let rec = find(id).ok_or_else(|| UmlError::GuestLab {
        id: id.to_string(),
        what: "no such guest lab (see `netsim ls`)".into(),
    })?;
    let mut result = Ok(());
    if rec.alive() {
        match request(&rec, &Request::Stop, Some(Duration::from_secs(120))) {
            Ok(0) => {}
            Ok(code) => result = Err(rec.err(format!("teardown in the guest exited {code}"))),
            Err(e) => result = Err(e),
        }
        // The agent has exited; init powers the guest off. Give it a moment, then make sure.
        let until = Instant::now() + Duration::from_secs(20);
        while rec.alive() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    remove_all(&rec);
    result
}

/// Remove the records, leftover processes and share directories of guest labs whose guest
/// died; returns their ids. Running guests are left alone.
pub fn clean() -> Vec<String> {
    list()
        .into_iter()
        .filter(|rec| !rec.alive())
        .map(|rec| {
            remove_all(&rec);
            rec.id
        })
        .collect()
}

/// The agent, run inside the guest by `netsim uml-agent`: bring the lab up, report, and serve
/// requests until `stop`. `share` is the share directory as the guest sees it.
pub fn agent(plan: Plan, id: &str, file: &Path, share: &Path) -> Result<(), UmlError> {
    let gerr = |what: String| UmlError::GuestLab {
        id: id.to_string(),
        what,
    };
    if !crate::testing::in_kernel_lane() {
        return Err(gerr(
            "the agent runs only inside a guest (NETSIM_LANE=kernel); use `netsim up --kernel uml`"
                .into(),
        ));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io_err("cannot start the async runtime"))?;
    let up = rt.block_on(Lab::up(
        plan,
        UpOptions {
            name: Some(id.to_string()),
            persist: true,
            file: Some(file.to_path_buf()),
            ..UpOptions::default()
        },
    ));
    let info = match up.and_then(Lab::persist) {
        Ok(info) => info,
        Err(e) => {
            let text = format!("{e}");
            write_atomic(&share.join("up.err"), text.as_bytes())?;
            return Err(gerr(text));
        }
    };
    let json = serde_json::to_vec(&info).map_err(|e| gerr(e.to_string()))?;
    write_atomic(&share.join("up.json"), &json)?;
    let exe = std::env::current_exe().map_err(io_err("cannot find the netsim binary"))?;
    let dir = share.join("req");
    loop {
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map_err(io_err(format!("cannot read {}", dir.display())))?
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".req"))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        for name in names {
            let file = |ext: &str| dir.join(format!("{name}.{ext}"));
            // Claim it: a rename either happens once or not at all.
            if fs::rename(file("req"), file("run")).is_err() {
                continue;
            }
            let req: Option<Request> = fs::read(file("run"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            match req {
                Some(Request::Stop) => {
                    let code = match lab::down(id) {
                        Ok(()) => 0,
                        Err(e) => {
                            let _ = fs::write(file("err"), format!("netsim: error: {e}\n"));
                            1
                        }
                    };
                    write_atomic(&file("rc"), code.to_string().as_bytes())?;
                    return Ok(());
                }
                Some(Request::Exec { node, argv }) => {
                    let (exe, id) = (exe.clone(), id.to_string());
                    let (dir, name) = (dir.clone(), name.clone());
                    // One thread each: a long command must not hold up the others.
                    std::thread::spawn(move || {
                        let files = |ext: &str| dir.join(format!("{name}.{ext}"));
                        let code = run_exec(&exe, &id, &node, &argv, &files);
                        let _ = write_atomic(&files("rc"), code.to_string().as_bytes());
                    });
                }
                None => {
                    let _ = fs::write(file("err"), "netsim: error: malformed request\n");
                    write_atomic(&file("rc"), b"2")?;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run one exec request: `netsim exec` in a process group of its own (the command in the node
/// joins it), signalled as a whole when the host asks (a `<n>.kill` file holding the signal).
fn run_exec(
    exe: &Path,
    id: &str,
    node: &str,
    argv: &[String],
    files: &dyn Fn(&str) -> PathBuf,
) -> i32 {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let (Ok(out), Ok(err)) = (File::create(files("out")), File::create(files("err"))) else {
        return 125;
    };
    let child = Command::new(exe)
        .args(["exec", "--lab", id, node, "--"])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn();
    let Ok(mut child) = child else { return 125 };
    let pgid = Pid::from_raw(child.id() as i32);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            }
            Ok(None) => {}
            Err(_) => return 125,
        }
        if let Ok(text) = fs::read_to_string(files("kill")) {
            let sig = text
                .trim()
                .parse::<i32>()
                .ok()
                .and_then(|n| Signal::try_from(n).ok())
                .unwrap_or(Signal::SIGTERM);
            let _ = killpg(pgid, sig);
            let _ = fs::remove_file(files("kill"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
