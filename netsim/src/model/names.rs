//! Names: which node names are allowed, and how interface names are derived and fitted to the
//! kernel's 15-byte limit.

use super::plan::IFNAME_MAX;

/// The longest node name. Switch ports are named `<peer>-<iface>` (e.g. `h1-eth0`); with at
/// most 10 characters of node name, `<peer>-eth0` .. `<peer>-eth9` fit in [`IFNAME_MAX`]
/// uncut (only a node's eleventh link onwards has its port name cut).
pub const NODE_NAME_MAX: usize = 10;

/// The longest lab name.
pub const LAB_NAME_MAX: usize = 32;

/// The bridge device inside every switch namespace.
pub const BRIDGE_NAME: &str = "br0";

/// Why a name is not acceptable, or `None` if it is.
pub(crate) fn name_problem(name: &str, max: usize) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > max {
        return Some(format!(
            "is {} characters long; the limit is {max}",
            name.len()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Some("must start with a lowercase letter".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!("contains {c:?}; only a-z, 0-9 and - are allowed"));
    }
    if name.ends_with('-') {
        return Some("must not end with -".into());
    }
    None
}

/// A suggested fix for a bad name: lowercased, bad characters turned into `-`, cut to `max`.
pub(crate) fn sanitize(name: &str, max: usize) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        s.insert(0, 'n');
    }
    s.truncate(max);
    while s.ends_with('-') {
        s.pop();
    }
    if s.is_empty() {
        s.push_str("lab");
    }
    s
}

/// The `index`-th interface of a host or router.
pub(crate) fn eth(index: usize) -> String {
    format!("eth{index}")
}

/// The name of a switch port facing `peer`'s interface `peer_iface`: `<peer>-<peer_iface>`,
/// with the peer part cut so the whole fits in [`IFNAME_MAX`] bytes, and a number added when
/// cutting made it collide with a port in `taken`.
pub(crate) fn port_name(peer: &str, peer_iface: &str, taken: &[String]) -> String {
    let fit = |peer_room: usize, suffix: &str| {
        let cut: String = peer.chars().take(peer_room).collect();
        format!("{}{suffix}-{peer_iface}", cut.trim_end_matches('-'))
    };
    let room = IFNAME_MAX.saturating_sub(peer_iface.len() + 1);
    let first = fit(room, "");
    if !taken.contains(&first) {
        return first;
    }
    (1usize..)
        .map(|n| {
            let suffix = n.to_string();
            fit(room.saturating_sub(suffix.len()), &suffix)
        })
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("h1", None)]
    #[case("edge-rtr-1", None)]
    #[case("", Some("is empty"))]
    #[case("eleven-char", Some("is 11 characters long; the limit is 10"))]
    #[case("1h", Some("must start with a lowercase letter"))]
    #[case("H1", Some("must start with a lowercase letter"))]
    #[case("h_1", Some("contains '_'; only a-z, 0-9 and - are allowed"))]
    #[case("h1-", Some("must not end with -"))]
    fn node_names(#[case] name: &str, #[case] problem: Option<&str>) {
        assert_eq!(name_problem(name, NODE_NAME_MAX).as_deref(), problem);
    }

    #[test]
    fn sanitize_makes_valid_names() {
        assert_eq!(sanitize("Three_Host", LAB_NAME_MAX), "three-host");
        assert_eq!(sanitize("9lives", LAB_NAME_MAX), "n9lives");
        assert_eq!(name_problem(&sanitize("__", 12), 12), None);
    }

    #[test]
    fn port_names_are_peer_and_iface() {
        assert_eq!(port_name("h1", "eth0", &[]), "h1-eth0");
        assert_eq!(port_name("edge-rtr-1", "eth9", &[]), "edge-rtr-1-eth9");
    }

    #[test]
    fn port_names_fit_in_ifname_max() {
        let name = port_name("edge-rtr-1", "eth12", &[]);
        assert_eq!(name, "edge-rtr-eth12");
        assert!(name.len() <= IFNAME_MAX);
    }

    #[test]
    fn cut_port_names_stay_unique() {
        let mut taken = Vec::new();
        for peer in ["hostalpha1", "hostalpha2", "hostalpha3"] {
            let name = port_name(peer, "eth10", &taken);
            assert!(name.len() <= IFNAME_MAX, "{name} is too long");
            taken.push(name);
        }
        assert_eq!(
            taken,
            ["hostalpha-eth10", "hostalph1-eth10", "hostalph2-eth10"]
        );
    }
}
