//! The state file of a lab, `/run/netsim/<id>.json`: what a lab made and who owns it, so any
//! process can list labs, tear one down, or sweep what a crash left behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::LabError;
use crate::kernel::process;

/// Default directory of state files.
pub const DEFAULT_RUN_DIR: &str = "/run/netsim";

/// Environment variable overriding [`DEFAULT_RUN_DIR`] (tests use it to isolate state).
pub const RUN_DIR_ENV: &str = "NETSIM_RUN_DIR";

/// The directory of state files.
pub fn run_dir() -> PathBuf {
    match std::env::var_os(RUN_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_RUN_DIR),
    }
}

/// The state file of lab `id`.
pub fn state_path(id: &str) -> PathBuf {
    run_dir().join(format!("{id}.json"))
}

/// How far a lab got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// `up` is (or was, if it crashed) creating the lab.
    Creating,
    /// The lab is complete.
    Up,
}

/// A process started in a lab, identified by PID and start time (against PID reuse).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRecord {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot.
    pub start: u64,
    /// The node it runs in, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its command line, when known (for `restart`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// Whether it was stopped (SIGSTOP) and not continued since.
    #[serde(default)]
    pub stopped: bool,
}

/// The owner of a lab: the process whose death makes the lab sweepable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot.
    pub start: u64,
}

impl Owner {
    /// The calling process.
    pub fn me() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start: process::start_time(pid).unwrap_or(0),
        }
    }

    /// Whether the owner is still running.
    pub fn alive(&self) -> bool {
        process::is_alive(self.pid, self.start)
    }
}

/// Content of a state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    /// Lab id.
    pub id: String,
    /// Name of the plan the lab was made from.
    pub plan: String,
    /// Topology file, if the lab came from one.
    pub file: Option<PathBuf>,
    /// The owning process; `None` once the lab was handed over (`persist`).
    pub owner: Option<Owner>,
    /// Whether the lab outlives its owner.
    pub persist: bool,
    /// How far bring-up got.
    pub phase: Phase,
    /// Node names, in plan order.
    pub nodes: Vec<String>,
    /// Namespace names, one per node, same order.
    pub namespaces: Vec<String>,
    /// Processes started in the lab.
    pub pids: Vec<ProcRecord>,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// The resolved plan, so another process can attach to the lab (`netsim ping LAB ...`).
    #[serde(default)]
    pub resolved: Option<crate::model::Plan>,
    /// Links, shaping and faults in force (absent in state files of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<super::shaping::NetState>,
}

impl LabState {
    /// Writes the state atomically (a temporary file renamed over the old one).
    pub fn write(&self, path: &Path) -> Result<(), LabError> {
        let tmp = tmp_path(path);
        self.write_tmp(&tmp)?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            self.io_err(path, e)
        })
    }

    /// Writes the state for the first time, failing with [`LabError::IdInUse`] if a lab of
    /// that id already has a state file. Atomic and exclusive: the temporary file is
    /// hard-linked to the final name, which fails if the name exists.
    pub fn create(&self, path: &Path) -> Result<(), LabError> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        let tmp = tmp_path(path);
        // The last lab to go down removes the run directory when it is left empty
        // (`remove_state`): if that happens between making the directory and writing into
        // it, make it again.
        let mut attempts = 0;
        loop {
            std::fs::create_dir_all(dir).map_err(|e| self.io_err(dir, e))?;
            match self.write_tmp(&tmp) {
                Err(LabError::State { cause, .. })
                    if cause.kind() == std::io::ErrorKind::NotFound && attempts < 3 =>
                {
                    attempts += 1;
                }
                other => break other?,
            }
        }
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(LabError::IdInUse {
                id: self.id.clone(),
                path: path.to_path_buf(),
            }),
            Err(e) => Err(self.io_err(path, e)),
        }
    }

    fn write_tmp(&self, tmp: &Path) -> Result<(), LabError> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| self.io_err(tmp, e.into()))?;
        let mut file = std::fs::File::create(tmp).map_err(|e| self.io_err(tmp, e))?;
        file.write_all(&json)
            .and_then(|()| file.sync_data())
            .map_err(|e| self.io_err(tmp, e))
    }

    fn io_err(&self, path: &Path, cause: std::io::Error) -> LabError {
        LabError::State {
            lab: self.id.clone(),
            path: path.to_path_buf(),
            cause,
        }
    }

    /// Reads a state file.
    pub fn read(path: &Path) -> Result<Self, LabError> {
        let bytes = std::fs::read(path).map_err(|cause| LabError::State {
            lab: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path: path.to_path_buf(),
            cause,
        })?;
        serde_json::from_slice(&bytes).map_err(|cause| LabError::StateCorrupt {
            path: path.to_path_buf(),
            cause,
        })
    }

    /// Reads every state file of the run directory, sorted by id. Files that vanish while
    /// being read (a lab going down meanwhile) are skipped, and so are corrupt ones (with a
    /// warning): one bad file must not stop `list` or `clean` from handling the others.
    pub fn read_all() -> Result<Vec<Self>, LabError> {
        let dir = run_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(cause) => {
                return Err(LabError::State {
                    lab: "*".into(),
                    path: dir,
                    cause,
                })
            }
        };
        let mut labs = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match Self::read(&path) {
                Ok(state) => labs.push(state),
                Err(LabError::State { cause, .. })
                    if cause.kind() == std::io::ErrorKind::NotFound => {}
                Err(e @ LabError::StateCorrupt { .. }) => tracing::warn!("skipped: {e}"),
                Err(e) => return Err(e),
            }
        }
        labs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(labs)
    }
}

/// A temporary name next to `path`, unique to this process and call.
fn tmp_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{seq}.tmp", std::process::id()));
    path.with_file_name(name)
}
