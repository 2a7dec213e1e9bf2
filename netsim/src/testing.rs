//! Helpers for tests that need kernel features: skip with a reason, or fail in the kernel lane.
//!
//! A test that needs a feature says so on its first line:
//!
//! ```no_run
//! use netsim::caps::Feature;
//!
//! #[test]
//! fn delay_is_applied() {
//!     netsim::require_features!(Feature::Netns, Feature::Veth, Feature::Netem);
//!     // ... the test proper
//! }
//! ```
//!
//! Where a feature is missing the macro prints `SKIPPED <test>: needs netem (<reason>)` to
//! stderr, appends the same line to the file named by `NETSIM_SKIP_LOG` (when set) and returns
//! from the test. In the kernel lane (`NETSIM_LANE=kernel`, set by `ci/uml-run`) it panics
//! instead: that lane exists to run exactly these tests, so a skip there is a failure.
//!
//! [`ScratchNs`] is a small self-contained anonymous network namespace for such tests.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, Write as _};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sched::{setns, unshare, CloneFlags};

use crate::caps::{self, Feature, Status};

/// Environment variable naming the lane a test runs in; `kernel` in the kernel lane.
pub const LANE_ENV: &str = "NETSIM_LANE";
/// Environment variable naming a file to which skip records are appended.
pub const SKIP_LOG_ENV: &str = "NETSIM_SKIP_LOG";

/// Declare the kernel features a test needs; see the [module docs](self).
///
/// Works in `#[test]` functions returning `()` or `Result<(), E>`, and in async tests (it
/// returns from the async fn).
#[macro_export]
macro_rules! require_features {
    ($($feature:expr),+ $(,)?) => {
        if $crate::testing::skip_unless(&[$($feature),+], ::core::module_path!()) {
            return $crate::testing::Skipped::skipped();
        }
    };
}

/// Return from a test that must not run in the kernel lane, with a printed reason; in the host
/// lane do nothing.
///
/// For tests that boot a User-Mode-Linux guest themselves (`netsim::uml`): the kernel lane
/// already runs inside such a guest, and guests do not nest. Unlike [`skip_because`], which
/// panics in the kernel lane (a skip there means a missing module), this returns quietly there:
/// such a test has nothing to check in that lane by design, and the host lane runs it.
#[macro_export]
macro_rules! host_lane_only {
    () => {
        if $crate::testing::in_kernel_lane() {
            ::std::eprintln!(
                "NOT RUN {} in the kernel lane: it boots a User-Mode-Linux guest, and guests \
                 do not nest (the host lane runs it)",
                $crate::testing::current_test_name(::core::module_path!())
            );
            return $crate::testing::Skipped::skipped();
        }
    };
}

/// The value a skipped test returns: `()` or `Ok(())`.
pub trait Skipped {
    /// The return value of a test that skipped itself.
    fn skipped() -> Self;
}

impl Skipped for () {
    fn skipped() -> Self {}
}

impl<E> Skipped for Result<(), E> {
    fn skipped() -> Self {
        Ok(())
    }
}

/// Namespaces under /run/netns that lab `id` still has (a test asserts none after `down`).
pub fn lab_namespaces(id: &str) -> Vec<String> {
    let prefix = format!("netsim-{id}-");
    crate::kernel::netns::list()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Whether the current test runs in the kernel lane (`NETSIM_LANE=kernel`).
pub fn in_kernel_lane() -> bool {
    std::env::var(LANE_ENV).is_ok_and(|lane| lane == "kernel")
}

/// The path of the running test, `<crate>::<test>`: libtest names each test's thread after the
/// test (its path within the crate); where the thread has no such name (a test run on the main
/// thread, a tokio worker) the caller's module path.
pub fn current_test_name(module_path: &str) -> String {
    let krate = module_path.split("::").next().unwrap_or(module_path);
    match std::thread::current().name() {
        Some(name) if name != "main" && !name.starts_with("tokio-") => {
            if name.starts_with(&format!("{krate}::")) {
                name.to_string()
            } else {
                format!("{krate}::{name}")
            }
        }
        _ => module_path.to_string(),
    }
}

/// The skip record for `test` given the missing features, or `None` when nothing is missing.
pub fn skip_record(test: &str, missing: &[(Feature, String)]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let mut line = format!("SKIPPED {test}: needs ");
    for (i, (feature, reason)) in missing.iter().enumerate() {
        if i > 0 {
            line.push_str(", ");
        }
        // Writing to a String cannot fail.
        let _ = write!(line, "{} ({reason})", feature.name());
    }
    Some(line)
}

/// Check `features` against the probe; returns `true` when the test must skip itself.
///
/// Prints and logs the skip record; panics in the kernel lane. Used by [`require_features!`].
pub fn skip_unless(features: &[Feature], module_path: &str) -> bool {
    let caps = caps::probe();
    let missing: Vec<(Feature, String)> = features
        .iter()
        .filter_map(|&f| match caps.status(f) {
            Status::Present => None,
            Status::Missing(reason) => Some((f, reason.clone())),
        })
        .collect();
    let test = current_test_name(module_path);
    let Some(record) = skip_record(&test, &missing) else {
        return false;
    };
    report_skip(&record);
    true
}

/// Skip the running test for a reason other than a missing kernel feature (e.g. a missing
/// cross-check tool): prints and logs `SKIPPED <test>: <reason>`, or panics in the kernel lane.
/// The caller returns right after.
pub fn skip_because(reason: &str, module_path: &str) {
    let test = current_test_name(module_path);
    report_skip(&format!("SKIPPED {test}: {reason}"));
}

fn report_skip(record: &str) {
    if in_kernel_lane() {
        panic!(
            "{record}\nthe kernel lane (NETSIM_LANE=kernel) must run every test: check the \
             guest's module list in ci/uml-init and `netsim doctor` inside it"
        );
    }
    eprintln!("{record}");
    if let Ok(path) = std::env::var(SKIP_LOG_ENV) {
        // O_APPEND keeps concurrent one-line records whole.
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{record}\n").as_bytes()));
        if let Err(e) = written {
            eprintln!("netsim: cannot append the skip record to {path} ({SKIP_LOG_ENV}): {e}");
        }
    }
}

/// An anonymous network namespace for tests, alive as long as this value.
///
/// The namespace is held by an open namespace file descriptor rather than a bind mount, so
/// nothing appears under /run/netns and nothing is left behind if the test crashes: the kernel
/// destroys the namespace (and every link in it) when the last descriptor closes. Work runs
/// inside it on a fresh thread that `setns`es first, since namespace membership is per thread.
#[derive(Debug)]
pub struct ScratchNs {
    fd: OwnedFd,
}

impl ScratchNs {
    /// Create a new, empty network namespace (only `lo`, down).
    pub fn new() -> io::Result<Self> {
        // unshare on a throw-away thread so the caller's thread stays where it was.
        let fd = std::thread::Builder::new()
            .name("netsim-scratch-ns".into())
            .spawn(|| -> io::Result<OwnedFd> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("unshare(CLONE_NEWNET) for a scratch namespace: {e} (needs root)"),
                    )
                })?;
                let file = File::open("/proc/thread-self/ns/net").map_err(|e| {
                    io::Error::new(e.kind(), format!("open /proc/thread-self/ns/net: {e}"))
                })?;
                Ok(OwnedFd::from(file))
            })?
            .join()
            .map_err(|_| io::Error::other("the scratch-namespace thread panicked"))??;
        Ok(Self { fd })
    }

    /// The namespace's file descriptor (for `setns`, or moving links into it).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Run `f` on a thread inside the namespace and return its result.
    pub fn run<T, F>(&self, f: F) -> io::Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                // Keep the test's thread name, so test-name lookups inside still work.
                .name(
                    std::thread::current()
                        .name()
                        .unwrap_or("netsim-scratch-ns")
                        .to_string(),
                )
                .spawn_scoped(scope, || -> io::Result<T> {
                    setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                        io::Error::other(format!("setns into the scratch namespace: {e}"))
                    })?;
                    Ok(f())
                })?;
            match handle.join() {
                Ok(result) => result,
                // Re-raise the closure's panic so assertion messages reach the test harness.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Run the future made by `f` on a current-thread tokio runtime inside the namespace.
    ///
    /// The future is created on the namespace's thread, so it need not be `Send`; sockets it
    /// opens (netlink, UDP) belong to the namespace.
    pub fn run_async<T, F, Fut>(&self, f: F) -> io::Result<T>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        self.run(|| -> io::Result<T> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| io::Error::other(format!("tokio runtime for the namespace: {e}")))?;
            Ok(rt.block_on(f()))
        })?
    }
}

/// One end of a veth pair made by [`veth_between`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethEnd {
    /// Interface name.
    pub name: String,
    /// Interface index in its namespace.
    pub ifindex: u32,
    /// IPv4 address configured on it.
    pub addr: Ipv4Addr,
}

/// Join two scratch namespaces with a veth pair named `name`-a / `name`-b, address both ends
/// in `addr_a`/`addr_b` (/24; use 198.18.0.0/15 addresses) and bring everything, `lo`
/// included, up.
pub fn veth_between(
    a: &ScratchNs,
    b: &ScratchNs,
    name: &str,
    addr_a: Ipv4Addr,
    addr_b: Ipv4Addr,
) -> io::Result<(VethEnd, VethEnd)> {
    let name_a = format!("{name}-a");
    let name_b = format!("{name}-b");
    let b_fd = b.fd().as_raw_fd();
    let ifindex_a = a.run_async(|| async {
        let handle = rtnl()?;
        handle
            .link()
            .add(rtnetlink::LinkVeth::new(&name_a, &name_b).build())
            .execute()
            .await
            .map_err(|e| nl_err(&format!("create veth {name_a}/{name_b}"), e))?;
        let peer = link_index(&handle, &name_b).await?;
        handle
            .link()
            .set(
                rtnetlink::LinkUnspec::new_with_index(peer)
                    .setns_by_fd(b_fd)
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| nl_err(&format!("move {name_b} into the peer namespace"), e))?;
        configure(&handle, &name_a, addr_a).await
    })??;
    let ifindex_b = b.run_async(|| async {
        let handle = rtnl()?;
        configure(&handle, &name_b, addr_b).await
    })??;
    Ok((
        VethEnd {
            name: name_a,
            ifindex: ifindex_a,
            addr: addr_a,
        },
        VethEnd {
            name: name_b,
            ifindex: ifindex_b,
            addr: addr_b,
        },
    ))
}

/// An rtnetlink handle for the current thread's namespace, its connection driven by a task on
/// the current tokio runtime.
pub fn rtnl() -> io::Result<rtnetlink::Handle> {
    let (conn, handle, _) = rtnetlink::new_connection()
        .map_err(|e| io::Error::new(e.kind(), format!("open an rtnetlink socket: {e}")))?;
    tokio::spawn(conn);
    Ok(handle)
}

fn nl_err(what: &str, e: rtnetlink::Error) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

/// The index of the link called `name` in the handle's namespace.
pub async fn link_index(handle: &rtnetlink::Handle, name: &str) -> io::Result<u32> {
    use futures::TryStreamExt;
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(msg.header.index),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no link called {name}"),
        )),
        Err(e) => Err(nl_err(&format!("look up link {name}"), e)),
    }
}

async fn configure(handle: &rtnetlink::Handle, name: &str, addr: Ipv4Addr) -> io::Result<u32> {
    let index = link_index(handle, name).await?;
    handle
        .address()
        .add(index, addr.into(), 24)
        .execute()
        .await
        .map_err(|e| nl_err(&format!("add {addr}/24 to {name}"), e))?;
    for (i, what) in [(index, name), (1, "lo")] {
        handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(i).up().build())
            .execute()
            .await
            .map_err(|e| nl_err(&format!("bring {what} up"), e))?;
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_record_names_every_missing_feature_with_its_reason() {
        let record = skip_record(
            "kernel_lane::netem_delay",
            &[
                (Feature::Netem, "qdisc kind netem unknown (ENOENT)".into()),
                (
                    Feature::Openvswitch,
                    "no generic netlink family ovs_datapath".into(),
                ),
            ],
        );
        insta::assert_snapshot!(record.unwrap_or_default(), @"SKIPPED kernel_lane::netem_delay: needs netem (qdisc kind netem unknown (ENOENT)), openvswitch (no generic netlink family ovs_datapath)");
    }

    #[test]
    fn nothing_missing_means_no_skip() {
        assert_eq!(skip_record("t", &[]), None);
    }

    #[test]
    fn the_test_name_comes_from_the_libtest_thread() {
        // libtest runs each test on a thread named after it (unless run on the main thread).
        let name = current_test_name(module_path!());
        assert!(
            name == "netsim::testing::tests::the_test_name_comes_from_the_libtest_thread"
                || name == module_path!(),
            "unexpected test name {name}"
        );
    }

    fn own_netns_inode() -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino())
    }

    #[test]
    fn a_scratch_namespace_is_a_new_one_and_run_enters_it() {
        use std::os::unix::fs::MetadataExt;
        crate::require_features!(Feature::Netns);
        let ns = ScratchNs::new().expect("scratch namespace");
        let inside = ns.run(own_netns_inode).expect("run inside");
        assert_ne!(
            inside,
            own_netns_inode(),
            "run() stayed in the caller's namespace"
        );
        let held = std::fs::metadata(format!("/proc/self/fd/{}", ns.fd().as_raw_fd()))
            .map_or(0, |m| m.ino());
        assert_eq!(
            held, inside,
            "run() entered another namespace than the one held"
        );
    }

    #[test]
    fn a_panic_inside_run_reaches_the_test() {
        crate::require_features!(Feature::Netns);
        let ns = ScratchNs::new().expect("scratch namespace");
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = ns.run(|| panic!("inner assertion"));
        }));
        let msg = caught
            .err()
            .and_then(|p| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert_eq!(msg, "inner assertion");
    }

    async fn needs_netns_async() -> Result<(), String> {
        crate::require_features!(Feature::Netns);
        Ok(())
    }

    #[test]
    fn the_macro_works_in_async_fns_returning_results() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| e.to_string());
        assert_eq!(rt.and_then(|rt| rt.block_on(needs_netns_async())), Ok(()));
    }

    #[test]
    fn skipped_values() {
        let unit: () = Skipped::skipped();
        assert_eq!(unit, ());
        let result: Result<(), String> = Skipped::skipped();
        assert_eq!(result, Ok(()));
    }
}
