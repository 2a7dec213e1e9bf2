//! Named network namespaces, bind-mounted under `/run/netns/` the way iproute2 does it, so
//! `ip netns exec NAME ...` works on them.
//!
//! `setns` and `unshare` act on the calling thread only, so every function here that changes
//! namespace does it on a fresh thread of its own; the caller's thread never moves.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use super::error::{KernelError, Result};

/// Where named namespaces are bind-mounted (iproute2's convention).
pub const NETNS_DIR: &str = "/run/netns";

/// The name used in errors for the caller's own namespace.
pub const ROOT: &str = "root";

/// The bind-mount path of namespace `name`.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Whether namespace `name` is present under [`NETNS_DIR`].
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Names of all namespaces under [`NETNS_DIR`] (empty if the directory does not exist).
pub fn list() -> Result<Vec<String>> {
    let dir = match std::fs::read_dir(NETNS_DIR) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(KernelError::io(ROOT, Some(NETNS_DIR), "readdir", &e)),
    };
    let mut names = Vec::new();
    for entry in dir {
        let entry = entry.map_err(|e| KernelError::io(ROOT, Some(NETNS_DIR), "readdir", &e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Whether [`NETNS_DIR`] has been made a shared mount by this process.
static DIR_READY: Mutex<bool> = Mutex::new(false);

/// Makes [`NETNS_DIR`] exist and be a shared mount point, so bind mounts made under it are
/// seen by other mount namespaces (as `ip netns add` does).
fn prepare_dir() -> Result<()> {
    let mut ready = DIR_READY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if *ready {
        return Ok(());
    }
    std::fs::create_dir_all(NETNS_DIR)
        .map_err(|e| KernelError::io(ROOT, Some(NETNS_DIR), "mkdir", &e))?;
    let make_shared = || {
        mount(
            None::<&str>,
            NETNS_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => {}
        // Not a mount point yet: bind it onto itself, then share it.
        Err(Errno::EINVAL) => {
            mount(
                Some(NETNS_DIR),
                NETNS_DIR,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| KernelError::sys(ROOT, Some(NETNS_DIR), "bind mount onto itself", e))?;
            make_shared()
                .map_err(|e| KernelError::sys(ROOT, Some(NETNS_DIR), "mount --make-rshared", e))?;
        }
        Err(e) => {
            return Err(KernelError::sys(
                ROOT,
                Some(NETNS_DIR),
                "mount --make-rshared",
                e,
            ));
        }
    }
    *ready = true;
    Ok(())
}

/// Creates the named namespace `name` (like `ip netns add`).
pub fn create(name: &str) -> Result<()> {
    create_with(name, || ())
}

/// Creates the named namespace `name` and runs `f` inside it, on the creating thread, before
/// that thread ends. Handy to open sockets in the new namespace without a second `setns`.
///
/// Fails with `EEXIST` if the name is taken. On failure nothing is left behind.
pub fn create_with<T, F>(name: &str, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    prepare_dir()?;
    let target = path(name);
    // The mount point: an empty file, created exclusively so two labs never share a name.
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&target)
        .map_err(|e| {
            KernelError::io(
                ROOT,
                Some(&target.to_string_lossy()),
                "create netns file",
                &e,
            )
        })?;

    let ns = name.to_string();
    let thread_target = target.clone();
    let joined = std::thread::Builder::new()
        .name(format!("netns-add-{name}"))
        .spawn(move || -> Result<T> {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| KernelError::sys(&ns, None, "unshare(CLONE_NEWNET)", e))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &thread_target,
                Some("none"),
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| {
                KernelError::sys(
                    &ns,
                    Some(&thread_target.to_string_lossy()),
                    "bind mount netns",
                    e,
                )
            })?;
            Ok(f())
        })
        .map_err(|e| KernelError::io(name, None, "spawn thread", &e))?
        .join();
    let result = match joined {
        Ok(result) => result,
        Err(_) => Err(KernelError {
            netns: name.to_string(),
            target: None,
            op: "create namespace".into(),
            errno: None,
            detail: Some("the setup closure panicked".into()),
            tool: None,
        }),
    };
    if result.is_err() {
        // Best effort: the original error matters more than a failed cleanup.
        let _ = delete(name);
    }
    result
}

/// Deletes the named namespace `name` (like `ip netns del`): lazily unmounts it and removes
/// the file. The kernel frees the namespace, and with it every interface inside, once no
/// process or open file holds it. Deleting a namespace that does not exist succeeds.
pub fn delete(name: &str) -> Result<()> {
    let target = path(name);
    match umount2(&target, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a half-made namespace); ENOENT: already gone.
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => {
            return Err(KernelError::sys(
                name,
                Some(&target.to_string_lossy()),
                "umount2",
                e,
            ));
        }
    }
    match std::fs::remove_file(&target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(KernelError::io(
            name,
            Some(&target.to_string_lossy()),
            "unlink",
            &e,
        )),
    }
}

/// Opens a file descriptor on namespace `name` (close-on-exec).
pub fn open(name: &str) -> Result<OwnedFd> {
    let target = path(name);
    File::open(&target)
        .map(OwnedFd::from)
        .map_err(|e| KernelError::io(name, Some(&target.to_string_lossy()), "open netns", &e))
}

/// Moves the calling thread into the namespace behind `fd`.
pub fn enter(fd: impl AsFd) -> nix::Result<()> {
    setns(fd, CloneFlags::CLONE_NEWNET)
}

/// Runs `f` inside namespace `name` on a dedicated thread and returns its result.
pub fn run_in<T, F>(name: &str, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let fd = open(name)?;
    let ns = name.to_string();
    let joined = std::thread::Builder::new()
        .name(format!("netns-{name}"))
        .spawn(move || -> Result<T> {
            enter(&fd).map_err(|e| KernelError::sys(&ns, None, "setns(CLONE_NEWNET)", e))?;
            drop(fd);
            Ok(f())
        })
        .map_err(|e| KernelError::io(name, None, "spawn thread", &e))?
        .join();
    match joined {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
