//! The socket the kernel hands a datapath's misses to: one generic netlink socket whose port
//! id is set as a vport's upcall port ([`super::OdpClient::set_vport_upcall_pid`]). Every
//! packet that matches no flow arrives here as an `OVS_PACKET_CMD_MISS` message with the
//! frame and its flow key; the owner decides, executes the packet and installs a flow, so the
//! next packets of the flow never come up.
//!
//! Waits are on the socket's readiness with a timeout (poll), never a busy loop.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::client::OdpError;
use super::flow::PacketMessage;

/// Receive buffer asked for: a burst of misses (a mesh coming up, a flood) must not be lost
/// while the owner installs flows.
const RCVBUF: usize = 4 << 20;

/// A socket receiving upcalls.
#[derive(Debug)]
pub struct UpcallSocket {
    socket: Socket,
    portid: u32,
    buf: Vec<u8>,
}

impl UpcallSocket {
    /// Opens one in the calling thread's network namespace.
    pub fn open() -> Result<Self, OdpError> {
        let io_err = |what: &str, source| OdpError::Io {
            request: format!("{what} (upcall socket)"),
            source,
        };
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(|e| io_err("open", e))?;
        socket.bind_auto().map_err(|e| io_err("bind", e))?;
        let mut addr = SocketAddr::new(0, 0);
        socket
            .get_address(&mut addr)
            .map_err(|e| io_err("read the port id", e))?;
        // Best effort: without the larger buffer, bursts lose more upcalls (the kernel
        // counts them as lost in the datapath's statistics). SO_RCVBUFFORCE (the router has
        // CAP_NET_ADMIN) passes net.core.rmem_max, often 208 KiB: about 150 misses.
        let forced =
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBufForce, &RCVBUF);
        if forced.is_err() {
            let _ = socket.set_rx_buf_sz(RCVBUF);
        }
        Ok(Self {
            socket,
            portid: addr.port_number(),
            buf: vec![0; 1 << 16],
        })
    }

    /// The netlink port id to give the kernel as the upcall port.
    pub fn portid(&self) -> u32 {
        self.portid
    }

    /// The next upcall, waiting at most `timeout` for one (`None`: none came).
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<PacketMessage>, OdpError> {
        let io_err = |source| OdpError::Io {
            request: "receive an upcall".to_string(),
            source,
        };
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(None),
            Err(e) => return Err(io_err(io::Error::from(e))),
        }
        let n = self
            .socket
            .recv(&mut &mut self.buf[..], 0)
            .map_err(io_err)?;
        parse_upcall(&self.buf[..n])
            .map_err(|source| OdpError::Decode {
                request: "receive an upcall".to_string(),
                source,
            })
            .map(Some)
    }
}

impl AsFd for UpcallSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor belongs to `self.socket`, which lives as long as the borrow.
        unsafe { BorrowedFd::borrow_raw(self.socket.as_raw_fd()) }
    }
}

/// One upcall as the kernel sends it: a netlink header, the generic netlink header, then an
/// `ovs_packet` message. Anything else (an error or a message of another family) is refused.
pub fn parse_upcall(bytes: &[u8]) -> Result<PacketMessage, netlink_packet_core::DecodeError> {
    let msg = NetlinkMessage::<GenlMessage<PacketMessage>>::deserialize(bytes)?;
    match msg.payload {
        NetlinkPayload::InnerMessage(genl) => Ok(genl.payload),
        other => Err(netlink_packet_core::DecodeError::from(format!(
            "not an upcall: {other:?}"
        ))),
    }
}
