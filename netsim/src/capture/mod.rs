//! Packet capture inside a node: `netsim capture LAB NODE[:IFACE,...]`, and the same from Rust
//! so a test can capture during a step and assert on the frames.
//!
//! Capture goes through libpcap (the `pcap` crate): one live handle per interface, opened on a
//! thread inside the node's namespace (a packet socket keeps the namespace it was opened in),
//! in immediate mode with nanosecond timestamps, then read together from one thread of their
//! own. A filter is libpcap's language (what tcpdump takes: `icmp`, `udp port 6784`, `host
//! 198.18.1.2 and tcp`), compiled by libpcap to classic BPF and run in the kernel, so frames it
//! rejects never reach netsim. Frames go to a pcap or pcapng file ([`file`]) or become one line
//! each ([`summary`]).
//!
//! Capturing sees a frame when the kernel hands it to or takes it from the interface: every
//! frame of a step that has finished is already in the capture's buffer, and
//! [`Capture::stop`] reads the buffers out before it returns, so a test needs no wait.

pub mod file;
pub mod summary;

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::lab::{LabError, NodeHandle};

/// The most bytes kept of one frame: a 64 KiB GSO burst with its headers (libpcap's default).
pub const SNAPLEN: u32 = 262_144;

/// What to capture.
#[derive(Debug, Clone, Default)]
pub struct CaptureOptions {
    /// Interfaces to capture on together; empty: every interface of the node but `lo`.
    pub ifaces: Vec<String>,
    /// A filter in libpcap's language, run in the kernel; `None` keeps every frame.
    pub filter: Option<String>,
    /// Stop after this many frames.
    pub count: Option<usize>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The interface it was seen on.
    pub iface: String,
    /// When, since the Unix epoch (the kernel's timestamp).
    pub time: Duration,
    /// Its length on the wire (`data` holds at most [`SNAPLEN`] bytes of it).
    pub orig_len: u32,
    /// The frame from its Ethernet header on.
    pub data: Vec<u8>,
}

impl Frame {
    /// One line for people: interface, addresses, protocol, and the inner frame of a vxlan
    /// packet (see [`summary::describe`]).
    pub fn summary(&self) -> String {
        format!("{} {}", self.iface, summary::describe(&self.data))
    }
}

/// Why a capture could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The filter does not compile.
    #[error(
        "filter {expr:?}: {why} (write a libpcap filter, as tcpdump takes: `icmp`, `udp port \
         6784`, `host 198.18.1.2 and tcp`)"
    )]
    Filter {
        /// The filter as given.
        expr: String,
        /// libpcap's complaint.
        why: String,
    },
    /// The node has no such interface.
    #[error("lab {lab}, node {node} has no interface {iface} (its interfaces: {})", known.join(", "))]
    NoSuchInterface {
        /// The lab.
        lab: String,
        /// The node.
        node: String,
        /// The interface asked for.
        iface: String,
        /// The node's interfaces.
        known: Vec<String>,
    },
    /// Opening or reading an interface failed.
    #[error("lab {lab}, node {node}: capture on {iface}: {why}")]
    Interface {
        /// The lab.
        lab: String,
        /// The node.
        node: String,
        /// The interface.
        iface: String,
        /// What failed.
        why: String,
    },
    /// Writing the capture file failed.
    #[error("capture file {}: {why}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        why: String,
    },
    /// A lab operation failed.
    #[error(transparent)]
    Lab(#[from] LabError),
}

/// Checks that `expr` is a filter libpcap compiles (for Ethernet frames).
pub fn check_filter(expr: &str) -> Result<(), CaptureError> {
    let bad = |e: pcap::Error| CaptureError::Filter {
        expr: expr.to_string(),
        why: e.to_string(),
    };
    let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).map_err(bad)?;
    dead.compile(expr, true).map(drop).map_err(bad)
}

/// Splits a capture target `NODE`, `NODE:IFACE` or `NODE:IFACE,IFACE` into the node and its
/// interfaces (none: every interface but `lo`).
pub fn parse_target(target: &str) -> (String, Vec<String>) {
    match target.split_once(':') {
        Some((node, ifaces)) => (
            node.to_string(),
            ifaces
                .split(',')
                .filter(|i| !i.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        None => (target.to_string(), Vec::new()),
    }
}

/// What [`Capture::next`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A frame.
    Frame(Frame),
    /// None within the wait; the capture goes on.
    Idle,
    /// The capture ended (count reached, duration over, or stopped); every frame was taken.
    Done,
}

/// A capture running on one node: frames are read on a thread of its own into a queue that
/// [`Capture::next`] and [`Capture::stop`] empty.
#[derive(Debug)]
pub struct Capture {
    lab: String,
    node: String,
    ifaces: Vec<String>,
    started: Duration,
    rx: mpsc::Receiver<Frame>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<Result<(), CaptureError>>>,
}

/// One interface's live handle.
struct Handle {
    iface: String,
    cap: pcap::Capture<pcap::Active>,
}

impl Capture {
    /// Starts capturing on `node` as `opts` says. Once this returns, every frame that crosses
    /// the interfaces (and passes the filter) is captured.
    pub async fn start(node: &NodeHandle, opts: &CaptureOptions) -> Result<Capture, CaptureError> {
        if let Some(expr) = &opts.filter {
            check_filter(expr)?;
        }
        let lab = node.lab_id().to_string();
        let name = node.name().to_string();
        let want = opts.ifaces.clone();
        let filter = opts.filter.clone();
        let (l, n) = (lab.clone(), name.clone());
        // Interfaces are listed and opened inside the node: names and sockets are the
        // namespace's own.
        let handles = node
            .run(move || async move { open_all(&l, &n, &want, filter.as_deref()) })
            .await??;
        let ifaces = handles.iter().map(|h| h.iface.clone()).collect();
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let limits = Limits {
            count: opts.count,
            deadline: opts.duration.map(|d| Instant::now() + d),
        };
        let flag = stop.clone();
        let (l, n) = (lab.clone(), name.clone());
        let reader = std::thread::Builder::new()
            .name(format!("capture-{name}"))
            .spawn(move || read_loop(&l, &n, handles, &tx, &flag, limits))
            .map_err(|e| CaptureError::Interface {
                lab: lab.clone(),
                node: name.clone(),
                iface: "-".into(),
                why: format!("cannot start the reader thread: {e}"),
            })?;
        Ok(Capture {
            lab,
            node: name,
            ifaces,
            started: now(),
            rx,
            stop,
            reader: Some(reader),
        })
    }

    /// The interfaces captured on, in the order of their pcapng interface ids.
    pub fn interfaces(&self) -> &[String] {
        &self.ifaces
    }

    /// When the capture started, since the Unix epoch.
    pub fn started(&self) -> Duration {
        self.started
    }

    /// The node captured on.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The next frame, waiting up to `wait` for one.
    pub fn next(&mut self, wait: Duration) -> Result<Next, CaptureError> {
        match self.rx.recv_timeout(wait) {
            Ok(frame) => Ok(Next::Frame(frame)),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(Next::Idle),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.join()?;
                Ok(Next::Done)
            }
        }
    }

    /// Stops the capture and returns every frame not yet taken with [`Capture::next`], those
    /// still in the kernel's buffers included, in time order.
    pub fn stop(mut self) -> Result<Vec<Frame>, CaptureError> {
        self.stop.store(true, Ordering::Relaxed);
        self.join()?;
        let mut frames: Vec<Frame> = self.rx.try_iter().collect();
        frames.sort_by_key(|f| f.time);
        Ok(frames)
    }

    fn join(&mut self) -> Result<(), CaptureError> {
        match self.reader.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(CaptureError::Interface {
                lab: self.lab.clone(),
                node: self.node.clone(),
                iface: self.ifaces.join(","),
                why: "the reader thread panicked".into(),
            }),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.join();
    }
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The node's interfaces (by name, in index order), listed inside its namespace.
fn interfaces_here() -> Result<Vec<String>, String> {
    let list = nix::net::if_::if_nameindex().map_err(|e| format!("list interfaces: {e}"))?;
    let mut named: Vec<(u32, String)> = list
        .iter()
        .map(|i| (i.index(), i.name().to_string_lossy().into_owned()))
        .collect();
    named.sort();
    Ok(named.into_iter().map(|(_, n)| n).collect())
}

/// Opens a live handle on each interface `want` names (every one but `lo` when empty), with
/// `filter` attached. Runs inside the node's namespace.
fn open_all(
    lab: &str,
    node: &str,
    want: &[String],
    filter: Option<&str>,
) -> Result<Vec<Handle>, CaptureError> {
    let err = |iface: &str, why: String| CaptureError::Interface {
        lab: lab.to_string(),
        node: node.to_string(),
        iface: iface.to_string(),
        why,
    };
    let known = interfaces_here().map_err(|why| err("-", why))?;
    let ifaces: Vec<String> = if want.is_empty() {
        known.iter().filter(|i| *i != "lo").cloned().collect()
    } else {
        for iface in want {
            if !known.contains(iface) {
                return Err(CaptureError::NoSuchInterface {
                    lab: lab.to_string(),
                    node: node.to_string(),
                    iface: iface.clone(),
                    known,
                });
            }
        }
        want.to_vec()
    };
    let mut handles = Vec::new();
    for iface in ifaces {
        let open = pcap::Capture::from_device(iface.as_str())
            .map(|c| {
                c.snaplen(SNAPLEN as i32)
                    .immediate_mode(true)
                    .precision(pcap::Precision::Nano)
                    .buffer_size(8 << 20)
            })
            .and_then(pcap::Capture::open)
            .and_then(pcap::Capture::setnonblock);
        let mut cap = open.map_err(|e| err(&iface, pcap_why(&iface, &e)))?;
        if let Some(expr) = filter {
            cap.filter(expr, true)
                .map_err(|e| err(&iface, format!("filter {expr:?}: {e}")))?;
        }
        handles.push(Handle { iface, cap });
    }
    Ok(handles)
}

/// libpcap's message without what the error around it says already (`libpcap error: eth0: `).
fn pcap_why(iface: &str, e: &pcap::Error) -> String {
    let text = e.to_string();
    let text = text.strip_prefix("libpcap error: ").unwrap_or(&text);
    text.strip_prefix(&format!("{iface}: "))
        .unwrap_or(text)
        .to_string()
}

struct Limits {
    count: Option<usize>,
    deadline: Option<Instant>,
}

/// Reads every handle's frames into `tx` until `stop` (after one last read of every buffer),
/// the count or the deadline.
fn read_loop(
    lab: &str,
    node: &str,
    mut handles: Vec<Handle>,
    tx: &mpsc::Sender<Frame>,
    stop: &AtomicBool,
    limits: Limits,
) -> Result<(), CaptureError> {
    let mut taken = 0usize;
    let full = |taken: usize| limits.count.is_some_and(|c| taken >= c);
    if full(taken) {
        return Ok(());
    }
    loop {
        // Read after seeing the stop flag: what reached the buffers before `stop()` is kept.
        let stopping = stop.load(Ordering::Relaxed);
        if !stopping {
            wait_readable(&handles, Duration::from_millis(50));
        }
        for h in &mut handles {
            loop {
                match h.cap.next_packet() {
                    Ok(p) => {
                        // With nanosecond precision libpcap puts nanoseconds in `tv_usec`.
                        let time = Duration::new(
                            u64::try_from(p.header.ts.tv_sec).unwrap_or(0),
                            u32::try_from(p.header.ts.tv_usec).unwrap_or(0),
                        );
                        let frame = Frame {
                            iface: h.iface.clone(),
                            time,
                            orig_len: p.header.len,
                            data: p.data.to_vec(),
                        };
                        if tx.send(frame).is_err() {
                            return Ok(());
                        }
                        taken += 1;
                        if full(taken) {
                            return Ok(());
                        }
                    }
                    Err(pcap::Error::TimeoutExpired) => break,
                    Err(e) => {
                        return Err(CaptureError::Interface {
                            lab: lab.to_string(),
                            node: node.to_string(),
                            iface: h.iface.clone(),
                            why: format!("read: {}", pcap_why(&h.iface, &e)),
                        })
                    }
                }
            }
        }
        if stopping || limits.deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
    }
}

/// Waits until a handle has a frame, or `wait` passes.
fn wait_readable(handles: &[Handle], wait: Duration) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds: Vec<PollFd<'_>> = handles
        .iter()
        .map(|h| {
            // SAFETY: the descriptor belongs to `h.cap`, which outlives this borrow (the
            // PollFds are dropped before this function returns).
            let fd = unsafe { BorrowedFd::borrow_raw(h.cap.as_raw_fd()) };
            PollFd::new(fd, PollFlags::POLLIN)
        })
        .collect();
    let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
    let _ = poll(&mut fds, PollTimeout::from(ms));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_a_node_and_its_interfaces() {
        assert_eq!(parse_target("h1"), ("h1".into(), vec![]));
        assert_eq!(parse_target("h1:eth0"), ("h1".into(), vec!["eth0".into()]));
        assert_eq!(
            parse_target("r1:eth0,eth1"),
            ("r1".into(), vec!["eth0".into(), "eth1".into()])
        );
    }

    #[test]
    fn filters_are_libpcaps() {
        assert!(check_filter("icmp").is_ok());
        assert!(check_filter("udp port 6784 and host 198.18.1.2").is_ok());
        let err = check_filter("udp prot 6784").expect_err("a typo");
        let text = err.to_string();
        assert!(text.starts_with("filter \"udp prot 6784\": "), "{text}");
        assert!(text.contains("syntax error"), "{text}");
    }
}
