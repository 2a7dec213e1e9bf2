//! nftables rule sets, loaded inside a namespace.
//!
//! Why the `nft` binary and not netlink from Rust: the crates that speak nftables' netlink
//! dialect (`rustables`, `nftnl`) are either bindings to libnftnl (a C library this project
//! does not otherwise need) or young and thinly maintained, and none of them is in the
//! workspace's vendored registry. nftables' own front end takes a whole rule set on stdin and
//! applies it in one atomic transaction, which is exactly what netsim needs: the rule set of a
//! node is regenerated from the lab's state and replaced as a whole. Debian ships it in the
//! `nftables` package (the kernel lane's guest runs the host's binary).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::error::{KernelError, Result};
use super::netns;
use crate::tools;

/// The `nft` program (override with `NETSIM_NFT`).
pub fn program() -> String {
    std::env::var("NETSIM_NFT").unwrap_or_else(|_| "nft".to_string())
}

/// Whether the `nft` program can be run.
pub fn available() -> bool {
    Command::new(program())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Loads `script` (nft syntax, as `nft -f` reads it) inside namespace `ns`, atomically.
pub fn apply_in(ns: &str, script: &str) -> Result<()> {
    let fd = netns::open(ns)?;
    let raw = fd.as_raw_fd();
    let mut cmd = Command::new(program());
    cmd.args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setns(2) is async-signal-safe and touches only the child between fork and exec;
    // `fd` outlives the spawn because it is dropped after `output()` returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let program = program();
    let mut child = cmd
        .spawn()
        .map_err(|e| KernelError::tool(ns, &tools::NFT, format!("run `{program} -f -`"), &e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| KernelError::io(ns, None, "write the nft script", &e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| KernelError::io(ns, None, "wait for nft", &e))?;
    drop(fd);
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(KernelError {
        netns: ns.to_string(),
        target: None,
        op: format!("load an nftables rule set with `{program} -f -`"),
        errno: None,
        detail: Some(format!("{}: {}", out.status, stderr.trim())),
        tool: Some(&tools::NFT),
    })
}
