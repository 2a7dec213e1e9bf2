//! The router's configuration, validated before anything starts.

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

use thiserror::Error;

/// The overlay address space every range must lie in (RFC 2544's benchmarking block, upper half).
pub const OVERLAY_SPACE: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 19, 0, 0), 16);

/// The overlay MTU: detected from the underlay route, or fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mtu {
    /// Underlay MTU minus the datapath's overhead.
    Auto,
    /// A fixed MTU.
    Fixed(u32),
}

impl FromStr for Mtu {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(Mtu::Auto);
        }
        match s.parse::<u32>() {
            Ok(mtu) if (576..=65535).contains(&mtu) => Ok(Mtu::Fixed(mtu)),
            _ => Err(ConfigError::Mtu(s.to_string())),
        }
    }
}

/// An overlay address range, `a.b.c.d/len`, inside 198.19.0.0/16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub len: u8,
}

impl FromStr for Range {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::Range(s.to_string());
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        if !(OVERLAY_SPACE.1..=30).contains(&len) || !in_space(addr) {
            return Err(ConfigError::OutsideSpace(s.to_string()));
        }
        Ok(Range { addr, len })
    }
}

fn in_space(addr: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - OVERLAY_SPACE.1);
    u32::from(addr) & mask == u32::from(OVERLAY_SPACE.0)
}

/// A configuration error, with how to fix it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The MTU is neither `auto` nor a number in range.
    #[error("MTU {0:?} is invalid: use `auto` or a number from 576 to 65535")]
    Mtu(String),
    /// The range is not `a.b.c.d/len`.
    #[error("range {0:?} is malformed: write it as a.b.c.d/len, e.g. 198.19.0.0/16")]
    Range(String),
    /// The range lies outside the overlay space.
    #[error("range {0:?} is outside 198.19.0.0/16 (prefix 16..=30): the project confines overlays to the RFC 2544 benchmarking block")]
    OutsideSpace(String),
    /// The router name is empty or malformed.
    #[error("router name {0:?} is invalid: use 1 to 32 characters of [a-z0-9-]")]
    Name(String),
}

/// Everything a router needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// The router's name, unique in the overlay.
    pub name: String,
    /// Peers to connect to at start.
    pub peers: Vec<SocketAddr>,
    /// The overlay address range.
    pub range: Range,
    /// Whether a password is set (the password is kept out of this struct's Debug output).
    pub encrypted: bool,
    /// The overlay MTU.
    pub mtu: Mtu,
}

/// Checks a router name.
pub fn validate_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Name(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("auto", Ok(Mtu::Auto))]
    #[case("1410", Ok(Mtu::Fixed(1410)))]
    #[case("8950", Ok(Mtu::Fixed(8950)))]
    #[case("100", Err(ConfigError::Mtu("100".into())))]
    #[case("big", Err(ConfigError::Mtu("big".into())))]
    fn mtu_parses(#[case] input: &str, #[case] expected: Result<Mtu, ConfigError>) {
        assert_eq!(input.parse::<Mtu>(), expected);
    }

    #[rstest]
    #[case("198.19.0.0/16", true)]
    #[case("198.19.4.0/24", true)]
    #[case("198.18.0.0/16", false)]
    #[case("10.32.0.0/12", false)]
    #[case("198.19.0.0/8", false)]
    #[case("198.19.0.0", false)]
    fn ranges_stay_in_the_overlay_space(#[case] input: &str, #[case] ok: bool) {
        assert_eq!(input.parse::<Range>().is_ok(), ok, "{input}");
    }

    #[rstest]
    #[case("h1", true)]
    #[case("", false)]
    #[case("Host", false)]
    #[case("a-very-long-router-name-that-goes-on-and-on", false)]
    fn names(#[case] name: &str, #[case] ok: bool) {
        assert_eq!(validate_name(name).is_ok(), ok);
    }
}
