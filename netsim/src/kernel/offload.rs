//! Segmentation offloads of an interface, switched off with the ethtool ioctl.
//!
//! Why this exists: a veth hands a GSO "super-packet" (up to 64 KiB of TCP, UDP or tunnelled
//! UDP in one skb) to its peer whole, and the peer's nftables hooks see one packet with the
//! total length. A real wire never carries such a thing: the sending NIC cuts it into frames.
//! A lab that filters packets by length (see `DropRule::UdpOver`) must see the frames a wire
//! would carry, so the interfaces sending into the filtering node segment in software instead.
//!
//! Why the ioctl by hand: the feature bits of `ETHTOOL_SFEATURES` are numbered by the running
//! kernel (read back by name with `ETHTOOL_GSTRINGS`), which is four small fixed-layout
//! requests; the ethtool netlink crates available read features but do not set them, and the
//! `ethtool` program is one more package for one call.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

use super::error::{KernelError, Result};
use super::netns;

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_SFEATURES: u32 = 0x3b;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

/// Whether feature `name` is a segmentation offload (any kind of GSO or TSO).
pub fn is_segmentation(name: &str) -> bool {
    name.ends_with("-segmentation") || name == "tx-gso-partial" || name == "tx-gso-list"
}

/// Whether feature `name` segments tunnelled packets (vxlan and other UDP tunnels, GRE,
/// IP-in-IP), which a 10-byte virtio net header cannot describe.
pub fn is_tunnel_segmentation(name: &str) -> bool {
    name.starts_with("tx-udp_tnl")
        || name.starts_with("tx-gre")
        || name.starts_with("tx-ipxip")
        || name == "tx-tunnel-remcsum-segmentation"
        || name == "tx-gso-partial"
}

/// Switches off every segmentation offload interface `ifname` of namespace `ns` can change,
/// so what it sends leaves as frames no larger than its MTU. Returns the names of the
/// features it switched off (empty when none was on).
pub fn segment_in_software(ns: &str, ifname: &str) -> Result<Vec<String>> {
    switch_off(ns, ifname, is_segmentation)
}

/// Switches off the segmentation of tunnelled packets on `ifname` of namespace `ns`: what
/// the interface sends into a delay line (whose packet sockets carry GSO frames with a
/// 10-byte virtio header, which has no words for tunnels: the kernel drops such frames on
/// the way in) is cut into frames first; plain TCP still crosses whole. Returns the
/// features switched off.
pub fn segment_tunnels_in_software(ns: &str, ifname: &str) -> Result<Vec<String>> {
    switch_off(ns, ifname, is_tunnel_segmentation)
}

fn switch_off(ns: &str, ifname: &str, which: fn(&str) -> bool) -> Result<Vec<String>> {
    let (ns_owned, if_owned) = (ns.to_string(), ifname.to_string());
    netns::run_in(ns, move || {
        let err = |op: &str, e: Errno| KernelError::sys(&ns_owned, Some(&if_owned), op, e);
        let sock = socket().map_err(|e| err("socket(AF_INET, SOCK_DGRAM)", e))?;
        let names = feature_names(&sock, &if_owned).map_err(|e| err("ETHTOOL_GSTRINGS", e))?;
        let blocks = names.len().div_ceil(32);
        let features =
            get_features(&sock, &if_owned, blocks).map_err(|e| err("ETHTOOL_GFEATURES", e))?;
        // (valid, requested) per block: only changeable bits that are now on.
        let mut set = vec![(0u32, 0u32); blocks];
        let mut off = Vec::new();
        for (bit, name) in names.iter().enumerate() {
            let (block, mask) = (bit / 32, 1u32 << (bit % 32));
            let [available, _requested, active, _never] = features[block];
            if which(name) && available & mask != 0 && active & mask != 0 {
                set[block].0 |= mask;
                off.push(name.clone());
            }
        }
        if !off.is_empty() {
            set_features(&sock, &if_owned, &set).map_err(|e| err("ETHTOOL_SFEATURES", e))?;
        }
        Ok(off)
    })?
}

fn socket() -> std::result::Result<OwnedFd, Errno> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one ethtool request; `data` is the request structure, filled in place.
fn ethtool(sock: &OwnedFd, ifname: &str, data: &mut [u32]) -> std::result::Result<i32, Errno> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = ifname.as_bytes();
    if name.len() >= ifr.ifr_name.len() {
        return Err(Errno::ENAMETOOLONG);
    }
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = data.as_mut_ptr().cast();
    // SAFETY: `ifr` points at `data`, which is as large as the request says it is and lives
    // until the call returns.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut ifr) };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(rc)
}

/// The names of the feature bits, in bit order.
fn feature_names(sock: &OwnedFd, ifname: &str) -> std::result::Result<Vec<String>, Errno> {
    // struct ethtool_sset_info { u32 cmd; u32 reserved; u64 sset_mask; u32 data[1]; }
    let mut info = [ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_FEATURES, 0, 0];
    ethtool(sock, ifname, &mut info)?;
    let count = info[4] as usize;
    if count == 0 || count > 4096 {
        return Err(Errno::EPROTO);
    }
    // struct ethtool_gstrings { u32 cmd; u32 string_set; u32 len; u8 data[len * 32]; }
    let mut req = vec![0u32; 3 + count * ETH_GSTRING_LEN / 4];
    req[0] = ETHTOOL_GSTRINGS;
    req[1] = ETH_SS_FEATURES;
    req[2] = count as u32;
    ethtool(sock, ifname, &mut req)?;
    let bytes: Vec<u8> = req[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
    Ok(bytes
        .chunks(ETH_GSTRING_LEN)
        .take((req[2] as usize).min(count))
        .map(|s| {
            let end = s.iter().position(|b| *b == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        })
        .collect())
}

/// Per block of 32 bits: available, requested, active, never changed.
fn get_features(
    sock: &OwnedFd,
    ifname: &str,
    blocks: usize,
) -> std::result::Result<Vec<[u32; 4]>, Errno> {
    // struct ethtool_gfeatures { u32 cmd; u32 size; struct { u32 x4 } features[size]; }
    let mut req = vec![0u32; 2 + blocks * 4];
    req[0] = ETHTOOL_GFEATURES;
    req[1] = blocks as u32;
    ethtool(sock, ifname, &mut req)?;
    Ok(req[2..]
        .chunks(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect())
}

/// Requests `(valid, requested)` per block: bits in `valid` take the value in `requested`.
fn set_features(
    sock: &OwnedFd,
    ifname: &str,
    set: &[(u32, u32)],
) -> std::result::Result<(), Errno> {
    // struct ethtool_sfeatures { u32 cmd; u32 size; struct { u32 valid, requested; } features[size]; }
    let mut req = vec![ETHTOOL_SFEATURES, set.len() as u32];
    for (valid, requested) in set {
        req.extend([*valid, *requested]);
    }
    // A positive answer carries ETHTOOL_F_* flags (a bit it could not change, or changed
    // only as a wish): the features read back afterwards are what counts.
    ethtool(sock, ifname, &mut req).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("tx-tcp-segmentation", true)]
    #[case("tx-udp-segmentation", true)]
    #[case("tx-udp_tnl-csum-segmentation", true)]
    #[case("tx-generic-segmentation", true)]
    #[case("tx-gso-partial", true)]
    #[case("tx-gso-list", true)]
    #[case("rx-gro-list", false)]
    #[case("tx-checksum-ip-generic", false)]
    #[case("tx-scatter-gather", false)]
    fn segmentation_features_are_told_by_name(#[case] name: &str, #[case] want: bool) {
        assert_eq!(is_segmentation(name), want);
    }

    #[rstest]
    #[case("tx-udp_tnl-segmentation", true)]
    #[case("tx-udp_tnl-csum-segmentation", true)]
    #[case("tx-gre-segmentation", true)]
    #[case("tx-ipxip4-segmentation", true)]
    #[case("tx-gso-partial", true)]
    // What a virtio net header does describe stays on: plain TCP crosses a delay line whole.
    #[case("tx-tcp-segmentation", false)]
    #[case("tx-tcp6-segmentation", false)]
    #[case("tx-udp-segmentation", false)]
    #[case("tx-generic-segmentation", false)]
    fn tunnel_segmentation_is_told_by_name(#[case] name: &str, #[case] want: bool) {
        assert_eq!(is_tunnel_segmentation(name), want);
    }
}
