//! AF_PACKET sockets that carry whole frames, GSO-sized ones included, in and out of one
//! interface: what netsim's delay line reads from one side of a link and writes to the other.
//!
//! Each socket is bound to one interface with `ETH_P_ALL`, ignores the frames it sends itself
//! (`PACKET_IGNORE_OUTGOING`) and speaks `PACKET_VNET_HDR`: every frame read starts with a
//! 10-byte `struct virtio_net_hdr` that describes its GSO and checksum state, and writing the
//! same header back lets the kernel rebuild the frame as it was, so a 64 KiB TCP segment
//! crosses as one frame with its checksum still to be done. No crate wraps these socket
//! options, hence the few lines of libc below.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// `SOL_PACKET` option: prefix frames with `struct virtio_net_hdr`.
const PACKET_VNET_HDR: libc::c_int = 15;
/// `SOL_PACKET` option: do not deliver frames this socket (or the host) sends.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// Size of `struct virtio_net_hdr`.
pub const VNET_HDR_LEN: usize = 10;
/// The largest frame read: a 64 KiB GSO frame with its Ethernet header and vnet header.
pub const MAX_FRAME: usize = 65_536 + 14 + VNET_HDR_LEN + 64;

/// A packet socket bound to one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> Result<(), Errno> {
    // SAFETY: `value` lives across the call and its size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    Errno::result(rc).map(drop)
}

impl PacketSocket {
    /// Opens a non-blocking socket on interface `ifindex` of the calling thread's namespace.
    pub fn open(ifindex: u32) -> Result<Self, Errno> {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        };
        let raw = Errno::result(raw)?;
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt_int(&fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
        setsockopt_int(&fd, libc::SOL_PACKET, PACKET_VNET_HDR, 1)?;
        // Room for bursts: a few MiB each way (capped by net.core.*mem_max unless FORCE works).
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
            let _ = setsockopt_int(&fd, libc::SOL_SOCKET, opt, 16 << 20);
        }
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: `addr` is a valid sockaddr_ll and its size is passed along.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        Errno::result(rc)?;
        Ok(Self { fd, ifindex })
    }

    /// The interface this socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The raw descriptor, for poll.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads one frame (vnet header included) into `buf`; `Ok(None)` when none is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>, Errno> {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        match Errno::result(n) {
            Ok(n) => Ok(Some(n as usize)),
            Err(Errno::EAGAIN) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes one frame (vnet header included).
    pub fn send(&self, frame: &[u8]) -> Result<(), Errno> {
        // SAFETY: `frame` is valid for reads of its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        Errno::result(n).map(drop)
    }
}
