//! Small socket helpers the datapaths' blocking threads share (no crate offers these
//! without pulling in an event loop the threads do not want).

use std::os::fd::{AsRawFd, OwnedFd};

/// Raises a socket's receive buffer to `bytes`: forced past `rmem_max` (the router runs as
/// root), else the plain option, which the kernel caps at `rmem_max`.
pub(super) fn raise_receive_buffer(sock: &impl AsRawFd, bytes: i32) {
    if set_int_opt(sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes).is_err() {
        let _ = set_int_opt(sock, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes);
    }
}

/// Raises a socket's send buffer to `bytes`, as [`raise_receive_buffer`] does.
pub(super) fn raise_send_buffer(sock: &impl AsRawFd, bytes: i32) {
    if set_int_opt(sock, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, bytes).is_err() {
        let _ = set_int_opt(sock, libc::SOL_SOCKET, libc::SO_SNDBUF, bytes);
    }
}

/// Sets an integer socket option.
pub(super) fn set_int_opt(
    sock: &impl AsRawFd,
    level: i32,
    name: i32,
    value: i32,
) -> std::io::Result<()> {
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Makes a descriptor non-blocking.
pub(super) fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; flags are read then written back with O_NONBLOCK.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Waits up to `timeout_ms` for `fd` to be readable; `false` on timeout (or error).
pub(super) fn wait_readable(fd: i32, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd for the given timeout.
    let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    rc > 0
}
