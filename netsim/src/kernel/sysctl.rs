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
