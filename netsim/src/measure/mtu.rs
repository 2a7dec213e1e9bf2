//! Path MTU between two nodes: the largest DF packet that gets through, and what happens to
//! one byte more (an ICMP "fragmentation needed" comes back, or it vanishes in a black hole).

use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use super::icmp::{self, PingOptions};

/// IPv4 header (20) plus ICMP echo header (8): what a probe adds to its payload.
const PROBE_OVERHEAD: u32 = 28;

/// What happens to a DF packet one byte larger than the path MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Oversize {
    /// A router answered with ICMP "fragmentation needed", quoting this next-hop MTU.
    FragNeeded {
        /// The next-hop MTU the router reported.
        mtu: u16,
    },
    /// The sender's own interface is the limit: the kernel refused to send it.
    LocalLimit,
    /// Nothing came back: a black hole.
    BlackHole,
}

/// The path MTU and the behaviour just above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PathMtu {
    /// The largest IPv4 packet (headers included) that crossed the path with DF set.
    pub mtu: u32,
    /// What happened to `mtu + 1`, or `None` when `mtu` is the search's upper bound.
    pub oversize: Option<Oversize>,
}

/// Probes from the calling thread's namespace to `dst`, searching packet sizes up to `max`.
/// Each size is tried up to `tries` times so a lost probe is not taken for the limit.
pub fn path_mtu(dst: Ipv4Addr, max: u32, tries: u16) -> io::Result<PathMtu> {
    let probe = |total: u32| -> io::Result<icmp::PingResult> {
        let opts = PingOptions {
            count: tries.max(1),
            interval: Duration::from_millis(5),
            timeout: Duration::from_millis(300),
            size: (total - PROBE_OVERHEAD) as usize,
            df: true,
        };
        icmp::ping(dst, &opts)
    };
    let mut low = PROBE_OVERHEAD + 40;
    if probe(low)?.received == 0 {
        return Err(io::Error::new(
            io::ErrorKind::HostUnreachable,
            format!("{dst} does not answer even small pings: no path to measure"),
        ));
    }
    let mut high = max.max(low);
    if probe(high)?.received > 0 {
        return Ok(PathMtu {
            mtu: high,
            oversize: None,
        });
    }
    // Invariant: `low` passes, `high` does not.
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if probe(mid)?.received > 0 {
            low = mid;
        } else {
            high = mid;
        }
    }
    let above = probe(low + 1)?;
    let oversize = if let Some(mtu) = above.frag_needed_mtu {
        Oversize::FragNeeded { mtu }
    } else if above.too_big_locally > 0 {
        Oversize::LocalLimit
    } else {
        Oversize::BlackHole
    };
    Ok(PathMtu {
        mtu: low,
        oversize: Some(oversize),
    })
}
