//! The delay line: netsim's own userspace link emulator, for kernels without netem.
//!
//! It runs as a process (`netsim delay-line`, hidden) inside a link's hidden "wire" namespace,
//! which sits between the link's two ends: `A:eth0 <-> W:a`, `W:b <-> B:eth0`. It reads every
//! frame that arrives on `W:a` and `W:b` through AF_PACKET sockets (see
//! [`crate::kernel::packet`]), decides its fate with a seeded random generator (so a run
//! repeats), holds it in a min-heap keyed by its due time, and writes it out of the other side
//! when due. It gives delay, jitter (uniform, normal, pareto), reordering, duplication,
//! corruption and (correlated) loss; rate limits stay with tbf on the sender's interface.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::kernel::packet::{PacketSocket, MAX_FRAME, VNET_HDR_LEN};
use crate::model::plan::{Distribution, Shape};

/// Queue limit per direction when the shape sets none (as netsim sets for netem).
pub const DEFAULT_LIMIT: u32 = crate::kernel::tc::DEFAULT_NETEM_LIMIT;

/// What one delay line does: the interfaces it joins and each direction's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelayLineConfig {
    /// Index of `W:a` (faces the link's `a` end).
    pub a_ifindex: u32,
    /// Index of `W:b` (faces the link's `b` end).
    pub b_ifindex: u32,
    /// What happens to frames from `a` to `b` (rate is ignored here: tbf does it).
    pub a_to_b: Shape,
    /// What happens to frames from `b` to `a`.
    pub b_to_a: Shape,
    /// Seed of the random choices.
    pub seed: u64,
}

/// Per-direction state: the shape, its random generator and the last loss draw (for
/// correlation).
struct Direction {
    shape: Shape,
    rng: StdRng,
    last_loss: f64,
    queued: u32,
    limit: u32,
}

fn ppm(v: u32) -> f64 {
    f64::from(v) / 1_000_000.0
}

impl Direction {
    fn new(shape: Shape, seed: u64) -> Self {
        let limit = shape.limit.unwrap_or(DEFAULT_LIMIT);
        Self {
            shape,
            rng: StdRng::seed_from_u64(seed),
            last_loss: 0.0,
            queued: 0,
            limit,
        }
    }

    /// Whether this frame is lost; with a correlation, each draw leans on the last one (as
    /// netem's correlated generator does).
    fn lost(&mut self) -> bool {
        if self.shape.loss_ppm == 0 {
            return false;
        }
        let rho = ppm(self.shape.loss_correlation_ppm);
        let u: f64 = self.rng.random();
        let v = u * (1.0 - rho) + self.last_loss * rho;
        self.last_loss = v;
        v < ppm(self.shape.loss_ppm)
    }

    fn chance(&mut self, p: u32) -> bool {
        p > 0 && self.rng.random::<f64>() < ppm(p)
    }

    /// The delay of one frame.
    fn delay(&mut self) -> Duration {
        let base = self.shape.delay_ns as f64;
        let jitter = self.shape.jitter_ns as f64;
        if self.chance(self.shape.reorder_ppm) {
            return Duration::ZERO;
        }
        let offset = if jitter == 0.0 {
            0.0
        } else {
            match self.shape.distribution {
                Distribution::Uniform => (self.rng.random::<f64>() * 2.0 - 1.0) * jitter,
                Distribution::Normal => {
                    // Box-Muller.
                    let u1: f64 = self.rng.random::<f64>().max(f64::MIN_POSITIVE);
                    let u2: f64 = self.rng.random();
                    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                    z * jitter
                }
                Distribution::Pareto => {
                    // Pareto with shape 3 and scale 1, shifted to start at 0: a heavy tail
                    // of extra delay whose mean is jitter / 2.
                    let u: f64 = self.rng.random::<f64>().min(1.0 - f64::EPSILON);
                    ((1.0 - u).powf(-1.0 / 3.0) - 1.0) * jitter
                }
            }
        };
        Duration::from_nanos((base + offset).max(0.0) as u64)
    }
}

/// A frame waiting for its due time. Ordered by due time, then arrival.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    due: Instant,
    seq: u64,
    to_b: bool,
    frame: Vec<u8>,
}

/// Counters of one run, per direction `[a_to_b, b_to_a]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Frames read.
    pub received: [u64; 2],
    /// Frames written (duplicates included).
    pub sent: [u64; 2],
    /// Frames dropped: lost on purpose, over the queue limit, or refused by the kernel.
    pub dropped: [u64; 2],
}

/// What `netsim delay-line` prints on stdout once it carries frames.
pub const READY: &str = "ready";

/// Runs the delay line in the calling thread's namespace until `stop` returns true (checked
/// at least every 100 ms) or an unrecoverable socket error. Calls `ready` once both of its
/// sockets are open. Returns the counters.
pub fn run(
    cfg: &DelayLineConfig,
    stop: &dyn Fn() -> bool,
    ready: &mut dyn FnMut(),
) -> Result<Counters, String> {
    // Wake-ups as precise as the kernel allows: the default 50 us slack would bias delays.
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes an integer argument and touches only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
    let open = |ifindex: u32| {
        PacketSocket::open(ifindex)
            .map_err(|e| format!("AF_PACKET socket on interface index {ifindex}: {e}"))
    };
    let sockets = [open(cfg.a_ifindex)?, open(cfg.b_ifindex)?];
    // From here on every frame is carried: whoever started the line may send traffic.
    ready();
    let mut dirs = [
        Direction::new(cfg.a_to_b.clone(), cfg.seed),
        Direction::new(cfg.b_to_a.clone(), cfg.seed ^ 0x9e37_79b9_7f4a_7c15),
    ];
    let mut heap: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut counters = Counters::default();
    let mut buf = vec![0u8; MAX_FRAME];
    loop {
        if stop() {
            return Ok(counters);
        }
        let now = Instant::now();
        let wait = heap
            .peek()
            .map(|Reverse(h)| h.due.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(100))
            .min(Duration::from_millis(100));
        let mut fds = [
            libc::pollfd {
                fd: sockets[0].raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sockets[1].raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if !wait.is_zero() {
            let ts = libc::timespec {
                tv_sec: wait.as_secs() as libc::time_t,
                tv_nsec: libc::c_long::from(wait.subsec_nanos() as i32),
            };
            // SAFETY: `fds` and `ts` are valid for the call; no signal mask is passed.
            let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null()) };
            if rc < 0 {
                let e = nix::errno::Errno::last();
                if e != nix::errno::Errno::EINTR {
                    return Err(format!("ppoll: {e}"));
                }
            }
        }
        // Read what arrived on either side (bounded, so one side cannot starve the other).
        for (side, socket) in sockets.iter().enumerate() {
            for _ in 0..256 {
                let n = match socket.recv(&mut buf) {
                    Ok(Some(n)) => n,
                    Ok(None) => break,
                    Err(e) => return Err(format!("recv on interface {}: {e}", socket.ifindex())),
                };
                let dir = &mut dirs[side];
                counters.received[side] += 1;
                if dir.lost() {
                    counters.dropped[side] += 1;
                    continue;
                }
                let copies = if dir.chance(dir.shape.duplicate_ppm) {
                    2
                } else {
                    1
                };
                let arrived = Instant::now();
                for _ in 0..copies {
                    if dir.queued >= dir.limit {
                        counters.dropped[side] += 1;
                        continue;
                    }
                    let mut frame = buf[..n].to_vec();
                    if dir.chance(dir.shape.corrupt_ppm) && n > VNET_HDR_LEN + 14 {
                        let span = n - VNET_HDR_LEN - 14;
                        let at = VNET_HDR_LEN + 14 + dir.rng.random_range(0..span);
                        frame[at] ^= 1 << dir.rng.random_range(0..8u32);
                    }
                    let due = arrived + dir.delay();
                    dir.queued += 1;
                    seq += 1;
                    heap.push(Reverse(Held {
                        due,
                        seq,
                        to_b: side == 0,
                        frame,
                    }));
                }
            }
        }
        // Send what is due.
        let now = Instant::now();
        while heap.peek().is_some_and(|Reverse(h)| h.due <= now) {
            let Some(Reverse(held)) = heap.pop() else {
                break;
            };
            let side = usize::from(!held.to_b);
            dirs[side].queued = dirs[side].queued.saturating_sub(1);
            let out = &sockets[usize::from(held.to_b)];
            match out.send(&held.frame) {
                Ok(()) => counters.sent[side] += 1,
                // A full queue or a down interface (a cut link) drops the frame, as a wire
                // would; anything else is unexpected but still not worth stopping the link.
                Err(_) => counters.dropped[side] += 1,
            }
        }
    }
}
