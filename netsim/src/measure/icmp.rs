//! ICMP echo ("ping") from inside a namespace, without the external `ping` tool.
//!
//! A raw ICMP socket is used because unprivileged ping sockets are disabled by default in a new
//! namespace (`net.ipv4.ping_group_range = 1 0`); netsim runs as root.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use pnet_packet::icmp::{checksum, echo_reply, echo_request, IcmpPacket, IcmpTypes};
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::Packet;
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

/// How to ping.
#[derive(Debug, Clone)]
pub struct PingOptions {
    /// Echo requests to send.
    pub count: u16,
    /// Time between requests.
    pub interval: Duration,
    /// How long to wait for the reply to each request.
    pub timeout: Duration,
    /// ICMP payload size in bytes.
    pub size: usize,
    /// Set Don't Fragment (and ignore the kernel's cached path MTU, so the probe reaches the
    /// wire and a router on the path answers for itself).
    pub df: bool,
}

impl Default for PingOptions {
    fn default() -> Self {
        PingOptions {
            count: 3,
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(1000),
            size: 56,
            df: false,
        }
    }
}

/// What a ping run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PingResult {
    /// Requests sent.
    pub sent: u16,
    /// Replies received.
    pub received: u16,
    /// Round trips of the replies, in microseconds.
    pub rtt_us: Vec<u64>,
    /// The smallest next-hop MTU of any ICMP "fragmentation needed" that came back instead of a
    /// reply (only with `df`).
    pub frag_needed_mtu: Option<u16>,
    /// Requests the local stack refused to send because they exceed the outgoing interface's
    /// MTU (only with `df`).
    pub too_big_locally: u16,
}

impl PingResult {
    /// Smallest round trip, if any reply came.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.rtt_us
            .iter()
            .min()
            .map(|us| Duration::from_micros(*us))
    }

    /// Fraction of requests that got no reply.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        f64::from(self.sent - self.received) / f64::from(self.sent)
    }
}

/// Sends `opts.count` echo requests to `dst` from the calling thread's namespace (blocking).
pub fn ping(dst: Ipv4Addr, opts: &PingOptions) -> io::Result<PingResult> {
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    if opts.df {
        set_pmtudisc_probe(&socket)?;
    }
    let ident = crate::lab::random_u16();
    let target = SocketAddrV4::new(dst, 0);
    let mut result = PingResult {
        sent: 0,
        received: 0,
        rtt_us: Vec::new(),
        frag_needed_mtu: None,
        too_big_locally: 0,
    };
    for seq in 0..opts.count {
        if seq > 0 {
            std::thread::sleep(opts.interval);
        }
        let request = echo_request_bytes(ident, seq, opts.size);
        let sent_at = Instant::now();
        result.sent += 1;
        if let Err(e) = socket.send_to(&request, &target.into()) {
            if e.raw_os_error() == Some(libc::EMSGSIZE) {
                result.too_big_locally += 1;
                continue;
            }
            return Err(e);
        }
        match wait_reply(&socket, dst, ident, seq, sent_at + opts.timeout)? {
            Answer::Reply => {
                result.received += 1;
                result.rtt_us.push(sent_at.elapsed().as_micros() as u64);
            }
            Answer::FragNeeded(mtu) => {
                let best = result.frag_needed_mtu.map_or(mtu, |m| m.min(mtu));
                result.frag_needed_mtu = Some(best);
            }
            Answer::Nothing => {}
        }
    }
    Ok(result)
}

fn echo_request_bytes(ident: u16, seq: u16, size: usize) -> Vec<u8> {
    let mut buf = vec![0u8; echo_request::MutableEchoRequestPacket::minimum_packet_size() + size];
    if let Some(mut pkt) = echo_request::MutableEchoRequestPacket::new(&mut buf) {
        pkt.set_icmp_type(IcmpTypes::EchoRequest);
        pkt.set_identifier(ident);
        pkt.set_sequence_number(seq);
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        pkt.set_payload(&payload);
    }
    let sum = IcmpPacket::new(&buf).map(|p| checksum(&p)).unwrap_or(0);
    if let Some(mut pkt) = echo_request::MutableEchoRequestPacket::new(&mut buf) {
        pkt.set_checksum(sum);
    }
    buf
}

/// Sets `IP_MTU_DISCOVER = IP_PMTUDISC_PROBE`: DF on every datagram, path MTU cache ignored.
fn set_pmtudisc_probe(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value: libc::c_int = libc::IP_PMTUDISC_PROBE;
    // SAFETY: a valid socket fd and a pointer to a c_int of the stated length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What came back for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Reply,
    FragNeeded(u16),
    Nothing,
}

/// Waits until `deadline` for the echo reply matching `ident`/`seq` from `dst`, or an ICMP
/// "fragmentation needed" quoting our request.
fn wait_reply(
    socket: &Socket,
    dst: Ipv4Addr,
    ident: u16,
    seq: u16,
    deadline: Instant,
) -> io::Result<Answer> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 65536];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(Answer::Nothing);
        }
        socket.set_read_timeout(Some(deadline - now))?;
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Answer::Nothing)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // SAFETY: recv initialised the first n bytes.
        let bytes: Vec<u8> = buf[..n]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        if is_reply(&bytes, dst, ident, seq) {
            return Ok(Answer::Reply);
        }
        if let Some(mtu) = frag_needed(&bytes, dst, ident, seq) {
            return Ok(Answer::FragNeeded(mtu));
        }
    }
}

/// Whether a raw-socket datagram (IPv4 header first) is our echo reply.
fn is_reply(datagram: &[u8], dst: Ipv4Addr, ident: u16, seq: u16) -> bool {
    let Some(ip) = Ipv4Packet::new(datagram) else {
        return false;
    };
    if ip.get_source() != dst {
        return false;
    }
    let Some(reply) = echo_reply::EchoReplyPacket::new(ip.payload()) else {
        return false;
    };
    reply.get_icmp_type() == IcmpTypes::EchoReply
        && reply.get_identifier() == ident
        && reply.get_sequence_number() == seq
}

/// The next-hop MTU of an ICMP "fragmentation needed" (type 3, code 4) that quotes our echo
/// request to `dst` with `ident`/`seq`.
fn frag_needed(datagram: &[u8], dst: Ipv4Addr, ident: u16, seq: u16) -> Option<u16> {
    let ip = Ipv4Packet::new(datagram)?;
    let icmp = ip.payload();
    // type, code, checksum, unused (2 bytes), next-hop MTU (2 bytes), then the quoted datagram.
    if icmp.len() < 8 || icmp[0] != 3 || icmp[1] != 4 {
        return None;
    }
    let mtu = u16::from_be_bytes([icmp[6], icmp[7]]);
    let quoted = Ipv4Packet::new(&icmp[8..])?;
    if quoted.get_destination() != dst {
        return None;
    }
    let header_len = usize::from(quoted.get_header_length()) * 4;
    let inner = icmp.get(8 + header_len..8 + header_len + 8)?;
    let quoted_ident = u16::from_be_bytes([inner[4], inner[5]]);
    let quoted_seq = u16::from_be_bytes([inner[6], inner[7]]);
    (inner[0] == 8 && quoted_ident == ident && quoted_seq == seq).then_some(mtu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_has_valid_checksum() {
        let bytes = echo_request_bytes(7, 3, 8);
        let pkt = IcmpPacket::new(&bytes).expect("long enough");
        assert_eq!(checksum(&pkt), pkt.get_checksum());
        assert_eq!(bytes.len(), 16);
    }

    #[test]
    fn truncated_datagrams_are_not_replies() {
        for len in 0..64 {
            assert!(!is_reply(&vec![0x45; len], Ipv4Addr::LOCALHOST, 1, 1));
            assert_eq!(
                frag_needed(&vec![0x45; len], Ipv4Addr::LOCALHOST, 1, 1),
                None
            );
        }
    }

    #[test]
    fn frag_needed_quoting_our_request_is_recognised() {
        let dst = Ipv4Addr::new(198, 18, 2, 10);
        let request = echo_request_bytes(0x1234, 9, 8);
        let mut quoted_ip = vec![0x45, 0, 0, 36, 0, 0, 0x40, 0, 64, 1, 0, 0];
        quoted_ip.extend_from_slice(&[198, 18, 1, 10]);
        quoted_ip.extend_from_slice(&dst.octets());
        quoted_ip.extend_from_slice(&request[..8]);
        let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
        icmp.extend_from_slice(&quoted_ip);
        let mut outer = vec![0x45, 0, 0, (20 + icmp.len()) as u8, 0, 0, 0, 0, 64, 1, 0, 0];
        outer.extend_from_slice(&[198, 18, 1, 1]);
        outer.extend_from_slice(&[198, 18, 1, 10]);
        outer.extend_from_slice(&icmp);
        assert_eq!(frag_needed(&outer, dst, 0x1234, 9), Some(1400));
        assert_eq!(frag_needed(&outer, dst, 0x1234, 10), None);
        assert_eq!(
            frag_needed(&outer, Ipv4Addr::new(198, 18, 2, 11), 0x1234, 9),
            None
        );
    }
}
