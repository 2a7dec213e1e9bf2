//! User-Mode-Linux guests: run netsim (or any command) under a kernel that has what the host's
//! lacks (openvswitch, netem), for `netsim run --kernel uml` and `netsim doctor --kernel uml`.
//!
//! The guest is Debian's `/usr/bin/linux.uml` (package `user-mode-linux`) booted on the host's
//! root file system over hostfs, read-only, with the modules of `/usr/lib/uml/modules/<version>`
//! loaded by an init script this module embeds ([`INIT_SCRIPT`], the same file `ci/uml-run`
//! boots, so both runners share one list of facts). The guest's tty1 and tty2 are wired to the
//! caller's stdout and stderr, so what the command prints reaches the caller unchanged; its exit
//! code comes back through a file in a share directory (UML itself always exits 0).
//!
//! The protocol with the guest, all through one share directory `/tmp/netsim-uml.*` (mounted at
//! `/run/netsim-share` in the guest): the host writes `init`, `argv` and `env` (NUL-separated),
//! `cwd`, and `rw` (host directories the guest may write, one a line); the guest writes
//! `modules.log`, `ready` once its modules are loaded, and `rc` (the command's exit code) last.
//! The kernel's own console goes to `boot.log` there. The guest runs in a process group of its
//! own (UML forks helper processes); the whole group is killed when the command ends, on a
//! timeout, and when this process is interrupted (with [`GuestOptions::handle_signals`]).
//!
//! Nothing is left behind: the share directory is removed (unless [`GuestOptions::keep_share`]),
//! and namespaces made inside the guest die with its kernel.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

pub mod labs;

use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The init script the guest boots with (PID 1): mounts, modules, then the command.
pub const INIT_SCRIPT: &str = include_str!("guest-init.sh");

/// Where Debian's user-mode-linux package installs the guest kernel.
pub const DEFAULT_KERNEL: &str = "/usr/bin/linux.uml";

/// Where the guest's modules live (one directory per kernel version).
pub const MODULE_DIR: &str = "/usr/lib/uml/modules";

/// Where the init script mounts the share directory inside the guest.
pub const GUEST_SHARE: &str = "/run/netsim-share";

/// Exit code reported for a guest that ran out of time (as `timeout(1)` does).
pub const TIMEOUT_EXIT: i32 = 124;

/// Why a guest could not run a command. Each message is complete in itself (an I/O `cause`
/// is part of the text, not a `source()`), so a chain printer says it once.
#[derive(Debug, thiserror::Error)]
pub enum UmlError {
    /// The guest kernel is not installed.
    #[error(
        "{} not found: install Debian's user-mode-linux package (apt-get install \
         user-mode-linux kmod), or run ci/setup --install",
        path.display()
    )]
    KernelMissing {
        /// The kernel path looked for.
        path: PathBuf,
    },
    /// The guest's init needs modprobe from the host's file system.
    #[error("modprobe not found: install the kmod package (apt-get install kmod, or ci/setup)")]
    ModprobeMissing,
    /// Already inside a guest: User-Mode-Linux does not nest.
    #[error(
        "already inside a User-Mode-Linux guest (NETSIM_LANE=kernel): guests do not nest; \
         leave out --kernel uml here"
    )]
    Nested,
    /// A setting from the environment is malformed.
    #[error("{var}={value:?} is not valid: {why}")]
    Setting {
        /// The environment variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is expected.
        why: &'static str,
    },
    /// A host path cannot be made visible in the guest.
    #[error("cannot share {} with the guest: {why}", path.display())]
    Unshareable {
        /// The path.
        path: PathBuf,
        /// Why not.
        why: &'static str,
    },
    /// A file operation on the host failed.
    #[error("{what}: {cause}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        cause: io::Error,
    },
    /// The guest stopped without reporting an exit code.
    #[error(
        "the guest ended without an exit code ({stage}); the tail of its log follows \
         (set NETSIM_UML_KEEP=1 to keep {}):\n{log_tail}",
        share.display()
    )]
    Boot {
        /// How far it got: "did not finish booting" or "the command did not finish".
        stage: &'static str,
        /// The share directory (removed unless kept).
        share: PathBuf,
        /// The last lines of its boot and module logs.
        log_tail: String,
    },
    /// The guest ran out of time and was killed.
    #[error(
        "the guest was killed after {secs} s ({stage}); raise NETSIM_UML_TIMEOUT if it needs \
         longer. The tail of its log:\n{log_tail}"
    )]
    Timeout {
        /// The limit.
        secs: u64,
        /// How far it got.
        stage: &'static str,
        /// The share directory (removed unless kept).
        share: PathBuf,
        /// The last lines of its boot and module logs.
        log_tail: String,
    },
    /// A lab in a guest could not be brought up, reached or stopped.
    #[error("lab {id} in a User-Mode-Linux guest: {what}")]
    GuestLab {
        /// Lab id.
        id: String,
        /// What went wrong, and the way forward.
        what: String,
    },
    /// This process was interrupted; the guest was stopped.
    #[error("interrupted by signal {signal}; the guest was stopped")]
    Interrupted {
        /// The signal number.
        signal: i32,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> UmlError {
    let what = what.into();
    move |cause| UmlError::Io { what, cause }
}

/// How to boot a guest.
#[derive(Debug, Clone)]
pub struct GuestOptions {
    /// The guest kernel (default [`DEFAULT_KERNEL`], `NETSIM_UML_KERNEL`).
    pub kernel: PathBuf,
    /// Guest memory in MiB (default 1024, `NETSIM_UML_MEM` such as `1024M` or `2G`).
    pub mem_mib: u64,
    /// Time after which the guest is killed (default 900 s, `NETSIM_UML_TIMEOUT` in seconds).
    pub timeout: Duration,
    /// Host directories the guest may write (everything else of the host is read-only, and
    /// the guest's /tmp, /run and /dev are its own: host paths there are shared this way).
    pub writable: Vec<PathBuf>,
    /// Print progress (booting, ready) to stderr.
    pub progress: bool,
    /// Keep the share directory (boot log, module log) afterwards (`NETSIM_UML_KEEP=1`).
    pub keep_share: bool,
    /// Catch SIGINT, SIGTERM and SIGHUP while the guest runs and stop the guest on them (for
    /// command-line use; a library caller that handles signals itself leaves this off).
    pub handle_signals: bool,
}

impl Default for GuestOptions {
    fn default() -> Self {
        GuestOptions {
            kernel: PathBuf::from(DEFAULT_KERNEL),
            mem_mib: 1024,
            timeout: Duration::from_secs(900),
            writable: Vec::new(),
            progress: false,
            keep_share: false,
            handle_signals: false,
        }
    }
}

impl GuestOptions {
    /// Defaults overridden by `NETSIM_UML_KERNEL`, `NETSIM_UML_MEM`, `NETSIM_UML_TIMEOUT` and
    /// `NETSIM_UML_KEEP` (the settings `ci/uml-run` reads too).
    pub fn from_env() -> Result<Self, UmlError> {
        let mut opts = GuestOptions::default();
        if let Some(k) = std::env::var_os("NETSIM_UML_KERNEL") {
            opts.kernel = PathBuf::from(k);
        }
        if let Ok(mem) = std::env::var("NETSIM_UML_MEM") {
            opts.mem_mib = parse_mem_mib(&mem).ok_or(UmlError::Setting {
                var: "NETSIM_UML_MEM",
                value: mem.clone(),
                why: "write it like 1024M or 2G (at least 64M)",
            })?;
        }
        if let Ok(t) = std::env::var("NETSIM_UML_TIMEOUT") {
            let secs: u64 = t.trim().parse().map_err(|_| UmlError::Setting {
                var: "NETSIM_UML_TIMEOUT",
                value: t.clone(),
                why: "whole seconds",
            })?;
            opts.timeout = Duration::from_secs(secs);
        }
        opts.keep_share = std::env::var("NETSIM_UML_KEEP").is_ok_and(|v| v == "1");
        Ok(opts)
    }
}

/// Guest memory as `ci/uml-run` accepts it: a number with K, M or G, or plain bytes.
pub fn parse_mem_mib(text: &str) -> Option<u64> {
    let text = text.trim();
    let (num, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, 'B'),
    };
    let n: u64 = num.parse().ok()?;
    let mib = match unit {
        'K' => n / 1024,
        'M' => n,
        'G' => n.checked_mul(1024)?,
        'B' => n / (1024 * 1024),
        _ => return None,
    };
    (mib >= 64).then_some(mib)
}

/// A command to run in a guest.
#[derive(Debug)]
pub struct GuestCommand {
    /// Program and arguments; the program is a path on the host's file system (which the guest
    /// sees read-only at the same place, except under /tmp, /run and /dev).
    pub argv: Vec<OsString>,
    /// Working directory (default: this process's).
    pub cwd: Option<PathBuf>,
    /// Where the command's stdout goes (default: this process's stdout).
    pub stdout: Option<File>,
    /// Where the command's stderr goes (default: this process's stderr).
    pub stderr: Option<File>,
}

impl GuestCommand {
    /// A command with this process's working directory, stdout and stderr.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        GuestCommand {
            argv: argv.into_iter().map(Into::into).collect(),
            cwd: None,
            stdout: None,
            stderr: None,
        }
    }
}

/// How a guest run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestExit {
    /// The command's exit code (128 + N for a signal, 127 when it could not start).
    pub code: i32,
    /// Seconds of guest uptime when its modules were loaded and the command started.
    pub ready_after: Option<String>,
    /// The guest's process group id (gone by the time [`run`] returns).
    pub pgid: i32,
    /// The share directory (removed by the time [`run`] returns, unless kept).
    pub share: PathBuf,
}

/// Check that a guest can be booted here (kernel, modprobe, not nested), without booting one.
pub fn preflight(opts: &GuestOptions) -> Result<(), UmlError> {
    if crate::testing::in_kernel_lane() {
        return Err(UmlError::Nested);
    }
    if !is_executable(&opts.kernel) {
        return Err(UmlError::KernelMissing {
            path: opts.kernel.clone(),
        });
    }
    let modprobe = ["/usr/sbin/modprobe", "/sbin/modprobe", "/usr/bin/modprobe"];
    if !modprobe.iter().any(|p| is_executable(Path::new(p))) {
        return Err(UmlError::ModprobeMissing);
    }
    Ok(())
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The path of the running `netsim` binary, and the directory the guest must have shared to
/// see it (when it lies under /tmp or /run, which the guest covers with its own).
pub fn guest_visible_exe() -> Result<(PathBuf, Option<PathBuf>), UmlError> {
    let exe = std::env::current_exe().map_err(io_err("cannot find the netsim binary"))?;
    if exe.to_string_lossy().ends_with(" (deleted)") {
        return Err(UmlError::Unshareable {
            path: exe,
            why: "the binary was replaced while running; run it again",
        });
    }
    if ["/dev", "/proc", "/sys"]
        .iter()
        .any(|top| exe.starts_with(top))
    {
        return Err(UmlError::Unshareable {
            path: exe,
            why: "the guest has its own /dev, /proc and /sys; install netsim elsewhere",
        });
    }
    let share = if hidden_in_guest(&exe) {
        exe.parent().map(Path::to_path_buf)
    } else {
        None
    };
    Ok((exe, share))
}

/// Whether a host path is covered by one of the guest's own file systems.
pub fn hidden_in_guest(path: &Path) -> bool {
    ["/tmp", "/run", "/dev", "/proc", "/sys"]
        .iter()
        .any(|top| path.starts_with(top))
}

static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_signal(sig: libc::c_int) {
    SIGNALLED.store(sig, Ordering::SeqCst);
}

fn catch_signals() -> Result<(), UmlError> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let action = SigAction::new(
        SigHandler::Handler(note_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.map_err(|e| UmlError::Io {
            what: format!("cannot catch {sig}"),
            cause: e.into(),
        })?;
    }
    Ok(())
}

/// Where UML keeps guest memory: /dev/shm when it can hold it, else /tmp (slower, on disk).
/// Containers often give /dev/shm 64 MB, and a guest touching memory beyond it dies of SIGBUS.
fn memory_dir(mem_mib: u64, progress: bool) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let free_mib = nix::sys::statvfs::statvfs(shm)
        .ok()
        .map(|s| s.blocks_available() * s.fragment_size() / (1024 * 1024));
    let writable = nix::unistd::access(shm, nix::unistd::AccessFlags::W_OK).is_ok();
    match free_mib {
        Some(free) if writable && free >= mem_mib => shm.to_path_buf(),
        _ => {
            if progress {
                eprintln!(
                    "netsim: /dev/shm has {} MiB free for a guest of {mem_mib} MiB: guest memory \
                     goes to /tmp (slower)",
                    free_mib.map_or("no".to_string(), |f| f.to_string())
                );
            }
            PathBuf::from("/tmp")
        }
    }
}

/// The share directory: created fresh (unique per guest), removed on drop unless kept.
struct Share {
    path: PathBuf,
    keep: bool,
    /// Owned by a background guest now: never removed on drop.
    detached: bool,
}

impl Share {
    fn create() -> Result<Self, UmlError> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut last = None;
        for attempt in 0..100u32 {
            let path = PathBuf::from(format!(
                "/tmp/netsim-uml.{}.{:x}",
                std::process::id(),
                stamp.wrapping_add(attempt)
            ));
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    return Ok(Share {
                        path,
                        keep: false,
                        detached: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(io_err("cannot create a share directory in /tmp")(e)),
            }
        }
        Err(io_err("cannot create a share directory in /tmp")(
            last.unwrap_or_else(|| io::Error::other("no free name")),
        ))
    }

    fn write(&self, name: &str, data: &[u8], mode: u32) -> Result<(), UmlError> {
        let path = self.path.join(name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut f| f.write_all(data))
            .map_err(io_err(format!("cannot write {}", path.display())))
    }

    fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for name in ["boot.log", "modules.log"] {
            if let Ok(text) = fs::read(self.path.join(name)) {
                let text = String::from_utf8_lossy(&text);
                if let Some(why) = known_boot_failure(&text) {
                    out.push_str(&why);
                    out.push('\n');
                }
                if text.trim().is_empty() {
                    continue;
                }
                let all: Vec<&str> = text.lines().collect();
                let start = all.len().saturating_sub(lines);
                out.push_str(&format!("---- {name} ----\n"));
                for l in &all[start..] {
                    out.push_str(l.trim_end_matches('\r'));
                    out.push('\n');
                }
            }
        }
        if out.is_empty() {
            out.push_str(
                "(the guest wrote no log: it was stopped before its kernel printed anything)\n",
            );
        }
        out
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        if self.keep {
            eprintln!(
                "netsim: kept the guest's share directory {}",
                self.path.display()
            );
        } else if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("netsim: cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Writable host directories, as the init script takes them: absolute, existing, parents
/// first, none inside another, never the guest's own /, /tmp, /run, /dev, /proc, /sys.
fn writable_list(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, UmlError> {
    let mut canon: Vec<PathBuf> = dirs.iter().filter_map(|d| d.canonicalize().ok()).collect();
    canon.sort_by_key(|p| p.as_os_str().len());
    canon.dedup();
    let mut kept: Vec<PathBuf> = Vec::new();
    for d in canon {
        let own = ["/", "/tmp", "/run", "/dev", "/proc", "/sys"];
        if own.iter().any(|o| d == Path::new(o))
            || d.starts_with("/dev")
            || d.starts_with("/proc")
            || d.starts_with("/sys")
        {
            continue;
        }
        if kept.iter().any(|k| d.starts_with(k)) {
            continue;
        }
        let bytes = d.as_os_str().as_bytes();
        if bytes.contains(&b',') || bytes.contains(&b'\n') {
            return Err(UmlError::Unshareable {
                path: d,
                why: "mount options cannot carry a comma or newline",
            });
        }
        kept.push(d);
    }
    Ok(kept)
}

/// A descriptor duplicated to 10 or above, close-on-exec (so the child's dup2 onto 5 and 6
/// cannot clobber it, whatever numbers the originals have).
fn high_dup(fd: impl AsFd, what: &str) -> Result<OwnedFd, UmlError> {
    let raw = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(10)).map_err(|e| UmlError::Io {
        what: format!("cannot duplicate the {what} descriptor"),
        cause: e.into(),
    })?;
    // SAFETY: fcntl just returned this new descriptor, owned by nobody else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

/// Check the options and write the share directory for `cmd` (argv, env, cwd, init, rw).
fn prepare(cmd: &GuestCommand, opts: &GuestOptions) -> Result<Share, UmlError> {
    preflight(opts)?;
    if cmd.argv.is_empty() {
        return Err(UmlError::Io {
            what: "nothing to run in the guest".into(),
            cause: io::Error::from(io::ErrorKind::InvalidInput),
        });
    }
    let cwd = match &cmd.cwd {
        Some(c) => c.clone(),
        None => std::env::current_dir().map_err(io_err("cannot read the working directory"))?,
    };
    let share = Share::create()?;
    let mut argv = Vec::new();
    for a in &cmd.argv {
        argv.extend_from_slice(a.as_bytes());
        argv.push(0);
    }
    let mut env = Vec::new();
    for (k, v) in std::env::vars_os() {
        env.extend_from_slice(k.as_bytes());
        env.push(b'=');
        env.extend_from_slice(v.as_bytes());
        env.push(0);
    }
    share.write("argv", &argv, 0o600)?;
    share.write("env", &env, 0o600)?;
    let mut cwd_line = cwd.as_os_str().as_bytes().to_vec();
    cwd_line.push(b'\n');
    share.write("cwd", &cwd_line, 0o600)?;
    share.write("init", INIT_SCRIPT.as_bytes(), 0o755)?;
    let mut writable = opts.writable.clone();
    if hidden_in_guest(&cwd) {
        // The command must be able to enter its working directory.
        writable.push(cwd.clone());
    }
    let rw = writable_list(&writable)?;
    if !rw.is_empty() {
        let mut text = Vec::new();
        for d in &rw {
            text.extend_from_slice(d.as_os_str().as_bytes());
            text.push(b'\n');
        }
        share.write("rw", &text, 0o600)?;
    }
    fs::create_dir(share.path.join("uml")).map_err(io_err("cannot create the guest's uml_dir"))?;
    Ok(share)
}

/// The file name of the `uml-xstate` shim (see uml-xstate/src/lib.rs).
pub const XSTATE_SHIM: &str = "libnetsim_uml_xstate.so";

/// The `uml-xstate` shim: `NETSIM_UML_SHIM`, else next to the running binary or one or two
/// directories up (cargo's `target/<profile>/` for binaries and `deps/` for tests).
pub fn xstate_shim() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NETSIM_UML_SHIM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(3)
        .map(|d| d.join(XSTATE_SHIM))
        .find(|p| p.is_file())
}

/// A cause of a failed boot the log shows, said plainly with the way out.
fn known_boot_failure(log: &str) -> Option<String> {
    log.contains("ptrace set fp regs failed").then(|| {
        format!(
            "cause: this host's CPU keeps more FPU state than this User-Mode-Linux kernel \
             knows (AMX), and the host refuses its shorter buffer (\"ptrace set fp regs \
             failed, errno = 14\"). netsim boots it with the uml-xstate shim when it finds \
             {XSTATE_SHIM}: build it with `cargo build -p uml-xstate` (it lands next to the \
             netsim binary) or point NETSIM_UML_SHIM at it."
        )
    })
}

/// Start the guest kernel on a prepared share directory, in a session (and process group) of
/// its own, its tty1 and tty2 on `out` and `err`. `guard_secs` makes the guest's init kill
/// the command after that long (a one-shot guest); None leaves it running (a lab guest).
fn spawn(
    share: &Share,
    opts: &GuestOptions,
    out: OwnedFd,
    err: OwnedFd,
    guard_secs: Option<u64>,
) -> Result<std::process::Child, UmlError> {
    let mem_dir = memory_dir(opts.mem_mib, opts.progress);
    let log = File::create(share.path.join("boot.log"))
        .map_err(io_err("cannot create the guest's boot log"))?;
    let log2 = log
        .try_clone()
        .map_err(io_err("cannot duplicate the boot log"))?;
    let (out_raw, err_raw) = (out.as_raw_fd(), err.as_raw_fd());
    let share_arg = share.path.display().to_string();
    let mut kernel = Command::new(&opts.kernel);
    kernel
        .arg(format!("mem={}M", opts.mem_mib))
        .args(["root=/dev/root", "rootfstype=hostfs", "rootflags=/", "ro"])
        .arg(format!("init={share_arg}/init"))
        .arg(format!("netsim_share={share_arg}"));
    if let Some(secs) = guard_secs {
        kernel.arg(format!("netsim_timeout={secs}"));
    }
    if let Some(shim) = xstate_shim() {
        // Only the guest kernel's process: its guest programs never see the host's
        // environment.
        let mut preload = shim.into_os_string();
        if let Some(more) = std::env::var_os("LD_PRELOAD").filter(|p| !p.is_empty()) {
            preload.push(":");
            preload.push(more);
        }
        kernel.env("LD_PRELOAD", preload);
    }
    kernel
        .arg(format!("uml_dir={}", share.path.join("uml").display()))
        .args([
            "umid=netsim",
            "con=null",
            "con0=null,fd:1",
            "con1=null,fd:5",
            "con2=null,fd:6",
            "ssl=null",
            "quiet",
            "loglevel=4",
        ])
        .env("TMPDIR", &mem_dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: between fork and exec the closure calls only dup2 and setsid, which are
    // async-signal-safe, on descriptors that stay open in the parent until spawn returns.
    unsafe {
        kernel.pre_exec(move || {
            // tty1 and tty2 of the guest: the command's stdout and stderr.
            if libc::dup2(out_raw, 5) < 0 || libc::dup2(err_raw, 6) < 0 {
                return Err(io::Error::last_os_error());
            }
            // A process group of its own (it is not a group leader after fork): UML's helper
            // processes join it, and killing the group stops them all.
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    if opts.progress {
        eprintln!(
            "netsim: booting a User-Mode-Linux guest ({}, {} MiB) ...",
            opts.kernel.display(),
            opts.mem_mib
        );
    }
    let child = kernel
        .spawn()
        .map_err(io_err(format!("cannot start {}", opts.kernel.display())))?;
    drop(out);
    drop(err);
    Ok(child)
}

/// Boot a guest, run `cmd` in it with this process's environment (plus `NETSIM_LANE=kernel`),
/// and return its exit code once the guest has stopped and everything of it is gone.
pub fn run(cmd: GuestCommand, opts: &GuestOptions) -> Result<GuestExit, UmlError> {
    let mut share = prepare(&cmd, opts)?;
    share.keep = opts.keep_share;
    let out = match &cmd.stdout {
        Some(f) => high_dup(f, "stdout")?,
        None => high_dup(io::stdout(), "stdout")?,
    };
    let err = match &cmd.stderr {
        Some(f) => high_dup(f, "stderr")?,
        None => high_dup(io::stderr(), "stderr")?,
    };
    if opts.handle_signals {
        catch_signals()?;
    }
    let started = Instant::now();
    let mut child = spawn(&share, opts, out, err, Some(opts.timeout.as_secs() + 30))?;
    let pgid = Pid::from_raw(child.id() as i32);

    let deadline = started + opts.timeout;
    let ready_path = share.path.join("ready");
    let mut ready: Option<String> = None;
    let mut outcome: Option<UmlError> = None;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) => {}
            Err(e) => {
                outcome = Some(io_err("cannot wait for the guest")(e));
                break;
            }
        }
        if ready.is_none() {
            if let Ok(t) = fs::read_to_string(&ready_path) {
                if !t.trim().is_empty() {
                    let t = t.trim().to_string();
                    if opts.progress {
                        eprintln!(
                            "netsim: guest ready after {:.1} s (kernel uptime {t} s, modules \
                             loaded)",
                            started.elapsed().as_secs_f64()
                        );
                    }
                    ready = Some(t);
                }
            }
        }
        let sig = SIGNALLED.swap(0, Ordering::SeqCst);
        if opts.handle_signals && sig != 0 {
            outcome = Some(UmlError::Interrupted { signal: sig });
            break;
        }
        if Instant::now() >= deadline {
            outcome = Some(UmlError::Timeout {
                secs: opts.timeout.as_secs(),
                stage: if ready.is_some() {
                    "the command did not finish"
                } else {
                    "it did not finish booting"
                },
                share: share.path.clone(),
                log_tail: String::new(),
            });
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The whole group: the kernel process and its helpers (they hold our stdout otherwise).
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = child.wait();
    // The guest's helper processes are not our children: once killed, they linger until init
    // reaps them. Return only when the group is really gone, so callers see nothing left.
    let gone_by = Instant::now() + Duration::from_secs(5);
    while !labs::group_members(pgid.as_raw()).is_empty() && Instant::now() < gone_by {
        let _ = killpg(pgid, Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(10));
    }
    match outcome {
        Some(UmlError::Timeout {
            secs,
            stage,
            share: path,
            ..
        }) => {
            return Err(UmlError::Timeout {
                secs,
                stage,
                share: path,
                log_tail: share.log_tail(30),
            })
        }
        Some(e) => return Err(e),
        None => {}
    }
    let rc = fs::read_to_string(share.path.join("rc")).unwrap_or_default();
    match rc.trim().parse::<i32>() {
        Ok(code) => Ok(GuestExit {
            code,
            ready_after: ready,
            pgid: pgid.as_raw(),
            share: share.path.clone(),
        }),
        Err(_) => Err(UmlError::Boot {
            stage: if ready.is_some() {
                "the command did not finish"
            } else {
                "it did not finish booting"
            },
            share: share.path.clone(),
            log_tail: share.log_tail(40),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_like_uml_run() {
        assert_eq!(parse_mem_mib("1024M"), Some(1024));
        assert_eq!(parse_mem_mib("2G"), Some(2048));
        assert_eq!(parse_mem_mib("2g"), Some(2048));
        assert_eq!(parse_mem_mib("131072K"), Some(128));
        assert_eq!(parse_mem_mib("134217728"), Some(128));
        assert_eq!(parse_mem_mib("32M"), None);
        assert_eq!(parse_mem_mib("lots"), None);
        assert_eq!(parse_mem_mib(""), None);
    }

    #[test]
    fn writable_dirs_drop_the_guests_own_and_nested_ones() {
        let dirs = [
            PathBuf::from("/usr/share"),
            PathBuf::from("/usr"),
            PathBuf::from("/tmp"),
            PathBuf::from("/"),
            PathBuf::from("/does/not/exist"),
        ];
        assert_eq!(writable_list(&dirs).ok(), Some(vec![PathBuf::from("/usr")]));
    }

    #[test]
    fn paths_under_the_guests_own_mounts_are_hidden() {
        assert!(hidden_in_guest(Path::new("/tmp/x/netsim")));
        assert!(hidden_in_guest(Path::new("/run/netsim")));
        assert!(!hidden_in_guest(Path::new("/usr/bin/netsim")));
        assert!(!hidden_in_guest(Path::new("/tmpfoo")));
    }

    #[test]
    fn the_init_script_is_the_one_ci_boots() {
        let ci = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/uml-init");
        if let Ok(text) = fs::read_to_string(&ci) {
            assert_eq!(text, INIT_SCRIPT, "ci/uml-init must be the same file");
        }
        assert!(INIT_SCRIPT.contains("\"$share/ready\""));
        assert!(INIT_SCRIPT.contains("\"$share/rc\""));
    }
}
