//! The error every kernel adapter returns: what was asked, where, the errno, and a hint.
//!
//! The message is complete in itself (the errno and the library's detail are part of it), so
//! the error has no `source()`: a chain printer such as the CLI's says each thing once.

use std::fmt;

use nix::errno::Errno;

use crate::tools::Tool;

/// A failed system call or netlink request, with enough context to act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    /// The network namespace the request ran in (`"root"` for the caller's own).
    pub netns: String,
    /// The object concerned: an interface, a file, a route.
    pub target: Option<String>,
    /// The operation, e.g. `"RTM_NEWLINK veth"` or `"unshare(CLONE_NEWNET)"`.
    pub op: String,
    /// The errno the kernel answered, when there is one.
    pub errno: Option<Errno>,
    /// Extra detail (the library's message when there is no errno).
    pub detail: Option<String>,
    /// The user-space tool the request ran (e.g. `nft`), when it ran one: an `ENOENT` is
    /// then a program that is not installed, not a kernel object that vanished.
    pub tool: Option<&'static Tool>,
}

impl KernelError {
    /// An error from a failed system call.
    pub fn sys(netns: &str, target: Option<&str>, op: impl Into<String>, errno: Errno) -> Self {
        Self {
            netns: netns.to_string(),
            target: target.map(str::to_string),
            op: op.into(),
            errno: Some(errno),
            detail: None,
            tool: None,
        }
    }

    /// An error from an `std::io` call.
    pub fn io(
        netns: &str,
        target: Option<&str>,
        op: impl Into<String>,
        err: &std::io::Error,
    ) -> Self {
        Self {
            netns: netns.to_string(),
            target: target.map(str::to_string),
            op: op.into(),
            errno: err.raw_os_error().map(Errno::from_raw),
            detail: if err.raw_os_error().is_some() {
                None
            } else {
                Some(err.to_string())
            },
            tool: None,
        }
    }

    /// An error from starting user-space `tool` (as `op`, e.g. ``run `nft -f -` ``).
    pub fn tool(
        netns: &str,
        tool: &'static Tool,
        op: impl Into<String>,
        err: &std::io::Error,
    ) -> Self {
        Self {
            tool: Some(tool),
            ..Self::io(netns, None, op, err)
        }
    }

    /// An error from a netlink request made through rtnetlink.
    pub fn netlink(
        netns: &str,
        target: Option<&str>,
        op: impl Into<String>,
        err: &rtnetlink::Error,
    ) -> Self {
        let (errno, detail) = match err {
            rtnetlink::Error::NetlinkError(msg) => match msg.code {
                // The kernel reports a negative errno.
                Some(code) => (Some(Errno::from_raw(-code.get())), None),
                None => (None, Some(err.to_string())),
            },
            other => (None, Some(other.to_string())),
        };
        Self {
            netns: netns.to_string(),
            target: target.map(str::to_string),
            op: op.into(),
            errno,
            detail,
            tool: None,
        }
    }

    /// What to do about it, judged from the errno (and, for a program netsim ran, from
    /// which program it was).
    pub fn hint(&self) -> Option<String> {
        let errno = self.errno?;
        if let Some(tool) = self.tool {
            return match errno {
                Errno::ENOENT => Some(tool.missing_hint()),
                Errno::EACCES => Some(format!("`{}` is not executable", tool.command())),
                Errno::EPERM => Some("run as root (CAP_SYS_ADMIN and CAP_NET_ADMIN)".into()),
                _ => None,
            };
        }
        let hint = match errno {
            Errno::EEXIST if self.op.contains("NEWADDR") || self.op.contains("NEWROUTE") => {
                Some("the plan gives the same address or route twice")
            }
            Errno::EEXIST => Some("it already exists: a stale lab? run `netsim clean`"),
            Errno::EPERM | Errno::EACCES => Some("run as root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"),
            Errno::EMFILE | Errno::ENFILE => Some("too many open files: raise `ulimit -n`"),
            Errno::EOPNOTSUPP => Some("this kernel lacks the feature: see `netsim doctor`"),
            Errno::ENODEV | Errno::ENOENT => {
                Some("the object is gone: was the lab torn down meanwhile?")
            }
            Errno::EINVAL => Some("the kernel rejected a value: check the topology"),
            Errno::ENETUNREACH => Some("the gateway is not on a connected subnet of the node"),
            _ => None,
        };
        hint.map(str::to_string)
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed in netns {}", self.op, self.netns)?;
        if let Some(target) = &self.target {
            write!(f, " on {target}")?;
        }
        if let Some(errno) = self.errno {
            write!(f, ": {errno:?} ({})", errno.desc())?;
        }
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        if let Some(hint) = self.hint() {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for KernelError {}

/// Results of kernel adapters.
pub type Result<T, E = KernelError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_request_the_place_and_a_way_forward() {
        let cases = [
            KernelError::sys(
                "netsim-lab1-h1",
                None,
                "unshare(CLONE_NEWNET)",
                Errno::EPERM,
            ),
            KernelError::sys(
                "root",
                Some("/run/netns/netsim-lab1-h1"),
                "create netns file",
                Errno::EEXIST,
            ),
            KernelError::sys(
                "netsim-lab1-r1",
                Some("198.18.9.0/24 via 198.18.99.1"),
                "RTM_NEWROUTE",
                Errno::ENETUNREACH,
            ),
            KernelError {
                netns: "netsim-lab1-sw".into(),
                target: Some("br0".into()),
                op: "RTM_NEWLINK bridge".into(),
                errno: None,
                detail: Some("A netlink request failed".into()),
                tool: None,
            },
            KernelError::tool(
                "netsim-lab1-h1",
                &crate::tools::NFT,
                "run `nft -f -`",
                &std::io::Error::from_raw_os_error(libc::ENOENT),
            ),
        ];
        let text: Vec<String> = cases.iter().map(ToString::to_string).collect();
        insta::assert_snapshot!(text.join("\n"));
    }
}
