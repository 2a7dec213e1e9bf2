//! sysctl writes. Keys under `net.` are per network namespace, resolved from the namespace of
//! the thread that opens the file; [`write_in`] runs on a thread inside the target namespace.

use super::error::{KernelError, Result};
use super::netns;

/// The `/proc/sys` path of a dotted key (`net.ipv4.ip_forward`).
fn proc_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// Writes `value` to sysctl `key` in the namespace of the calling thread. `netns` only names
/// that namespace in errors.
pub fn write_here(netns: &str, key: &str, value: &str) -> Result<()> {
    let path = proc_path(key);
    std::fs::write(&path, value)
        .map_err(|e| KernelError::io(netns, Some(key), format!("sysctl write {path}"), &e))
}

/// Reads sysctl `key` in the namespace of the calling thread, trimmed.
pub fn read_here(netns: &str, key: &str) -> Result<String> {
    let path = proc_path(key);
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| KernelError::io(netns, Some(key), format!("sysctl read {path}"), &e))
}

/// Writes `value` to sysctl `key` inside the named namespace `netns`.
pub fn write_in(netns: &str, key: &str, value: &str) -> Result<()> {
    let (ns, key, value) = (netns.to_string(), key.to_string(), value.to_string());
    netns::run_in(netns, move || write_here(&ns, &key, &value))?
}

/// Reads sysctl `key` inside the named namespace `netns`.
pub fn read_in(netns: &str, key: &str) -> Result<String> {
    let (ns, key) = (netns.to_string(), key.to_string());
    netns::run_in(netns, move || read_here(&ns, &key))?
}

/// The kernel-wide cap on IPv4 neighbour entries (all namespaces share one table).
const NEIGH_CAP: &str = "net.ipv4.neigh.default.gc_thresh3";
/// Where garbage collection of neighbour entries becomes eager.
const NEIGH_SOFT: &str = "net.ipv4.neigh.default.gc_thresh2";

/// Raises the kernel-wide cap on IPv4 neighbour entries to at least `want` (the soft limit to
/// three quarters of it), from the root namespace (the only one that has these keys). Returns
/// `Some((old, new))` when it raised the cap, `None` when it was already high enough. The
/// setting is a cache bound, not an address or a route; it stays raised after the lab (other
/// labs may need it), and `netsim doctor` shows it.
pub fn raise_neighbour_cap(want: u64) -> Result<Option<(u64, u64)>> {
    let old: u64 = read_here("root", NEIGH_CAP)?.parse().unwrap_or(0);
    if old >= want {
        return Ok(None);
    }
    write_here("root", NEIGH_CAP, &want.to_string())?;
    let soft: u64 = read_here("root", NEIGH_SOFT)?.parse().unwrap_or(0);
    if soft < want * 3 / 4 {
        write_here("root", NEIGH_SOFT, &(want * 3 / 4).to_string())?;
    }
    Ok(Some((old, want)))
}

/// The kernel-wide cap on IPv4 neighbour entries, if readable.
pub fn neighbour_cap() -> Option<u64> {
    read_here("root", NEIGH_CAP).ok()?.parse().ok()
}
