//! Processes by PID, made safe against PID reuse by checking each one's start time.

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Field `n` (1-based, as proc(5) numbers them; 3 or more) of a `/proc/<pid>/stat` line.
fn stat_field(stat: &str, n: usize) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
}

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), or `None` if there is no such process.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_field(&stat, 22)
}

/// User plus system CPU time (fields 14 and 15) from a `/proc/<pid>/stat` line, in clock
/// ticks.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    Some(stat_field(stat, 14)? + stat_field(stat, 15)?)
}

/// User plus system CPU time of process `pid` so far, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    stat_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The number after `name` (e.g. `"VmRSS:"`, in kB) in a `/proc/<pid>/status` text.
pub fn status_number(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether process `pid` exists and started at `started` (so is the one recorded).
pub fn is_alive(pid: u32, started: u64) -> bool {
    start_time(pid) == Some(started)
}

/// Sends SIGKILL to `pid` if it is still the process that started at `started`. Returns
/// whether a signal was sent.
pub fn kill_if_same(pid: u32, started: u64) -> bool {
    if !is_alive(pid, started) {
        return false;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    matches!(
        kill(Pid::from_raw(raw), Signal::SIGKILL),
        Ok(()) | Err(Errno::ESRCH)
    )
}

/// Raises this process's soft limit on open files to at least `want` (capped by the hard
/// limit). Big labs hold a namespace descriptor and a netlink socket per node while they are
/// being made. Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and pass by valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    lim.rlim_cur = want.min(lim.rlim_max);
    // SAFETY: setrlimit reads the struct we own and pass by valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}
