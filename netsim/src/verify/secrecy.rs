//! Checks of what the overlay keeps to itself: a router without the shared password is
//! refused, and container payload never crosses the underlay in clear.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use super::{Check, Context};
use crate::capture::{Capture, CaptureOptions};
use crate::model::plan::{Expectation, Target};

/// UDP ports overlay routers send on (sleeve and control, the fast path's vxlan).
const OVERLAY_PORTS: [u16; 2] = [6783, 6784];
/// Datagrams the sender sends, paced, while the underlay is watched.
const SENDS: usize = 10;

/// Host `host`'s router refuses `peer` within `within_ms`: it has counted a refusal whose
/// reason names the peer's underlay address, and holds no connection to it.
pub(super) async fn refused(
    ctx: Context<'_>,
    e: &Expectation,
    host: &str,
    peer: &str,
    within_ms: u64,
) -> Check {
    let check = Check::new(e, format!("{host} refuses {peer}"));
    let Some(overlay) = ctx.overlay else {
        return check.verdict(false, "the lab runs no overlay routers");
    };
    // A router speaks from its host's first address (as the overlay runner starts it).
    let addr = match ctx.lab.plan().address_of(peer) {
        Ok(a) => a,
        Err(why) => return check.verdict(false, why),
    };
    let deadline = Instant::now() + Duration::from_millis(within_ms);
    let mut last = format!("no refusal and no connection to {peer}");
    loop {
        if let Ok(status) = overlay.status(host).await {
            let r = &status["router"];
            let connected = super::connection(&status, peer).is_some();
            let refusals = r["refused"].as_u64().unwrap_or(0);
            let why = r["last_refusal"].as_str().unwrap_or("");
            if connected {
                last = format!("{host} holds a connection to {peer}");
            } else if refusals > 0 && why.starts_with(&format!("{addr}:")) {
                return check.verdict(true, format!("{host} refuses {peer} ({addr})"));
            } else if refusals > 0 {
                last = format!("{refusals} refused, the last not {peer} ({addr}): {why}");
            }
        }
        if Instant::now() >= deadline {
            let within = crate::model::shape::format_duration(within_ms * 1_000_000);
            return check.verdict(false, format!("{last} after {within}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Container `from` sends marked datagrams to container `to` while the underlay interfaces of
/// `host` (the receiver's host, as the plan made them) are captured: overlay datagrams must
/// cross there, the mark never.
pub(super) async fn no_plaintext(
    ctx: Context<'_>,
    e: &Expectation,
    from: &str,
    to: &str,
    host: &str,
) -> Check {
    let check = Check::new(
        e,
        "overlay datagrams on the underlay, never the payload in clear",
    );
    match watch(ctx, from, to, host).await {
        Ok((overlay, clear)) if clear > 0 => check.verdict(
            false,
            format!(
                "the payload crossed the underlay of {host} in clear in {clear} of {overlay} \
                 overlay datagrams"
            ),
        ),
        Ok((0, _)) => check.verdict(
            false,
            format!(
                "no overlay datagram crossed the underlay of {host} while {from} sent to {to}: \
                 nothing to judge (is the overlay connected?)"
            ),
        ),
        Ok(_) => check.verdict(true, "only sealed overlay datagrams"),
        Err(why) => check.verdict(false, why),
    }
}

/// (overlay datagrams seen, frames holding the mark) on `host`'s underlay interfaces.
async fn watch(
    ctx: Context<'_>,
    from: &str,
    to: &str,
    host: &str,
) -> Result<(usize, usize), String> {
    let dst = ctx
        .addr(&Target::Overlay {
            container: to.to_string(),
        })
        .await?;
    let ifaces: Vec<String> = ctx
        .lab
        .plan()
        .node(host)
        .map(|n| n.interfaces.iter().map(|i| i.name.clone()).collect())
        .unwrap_or_default();
    if ifaces.is_empty() {
        return Err(format!("{host} has no underlay interface to watch"));
    }
    let opts = CaptureOptions {
        ifaces,
        filter: Some("udp".into()),
        count: None,
        duration: None,
    };
    let cap = Capture::start(&ctx.node(host)?, &opts)
        .await
        .map_err(|e| e.to_string())?;
    let mark = marker(from, to);
    let payload = mark.clone();
    let sent = ctx
        .node(from)?
        .run(move || async move {
            let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            for _ in 0..SENDS {
                sock.send_to(&payload, (dst, 9))?;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok::<_, std::io::Error>(())
        })
        .await
        .map_err(|e| e.to_string())?;
    // Whatever is in flight lands before the capture stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let frames = tokio::task::spawn_blocking(move || cap.stop())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    sent.map_err(|e| format!("{from} could not send to {to} ({dst}): {e}"))?;
    let overlay = frames
        .iter()
        .filter(|f| udp_ports(&f.data).is_some_and(|(s, d)| is_overlay(s) || is_overlay(d)))
        .count();
    let clear = frames.iter().filter(|f| contains(&f.data, &mark)).count();
    Ok((overlay, clear))
}

/// The payload looked for: long and particular enough never to occur by chance.
fn marker(from: &str, to: &str) -> Vec<u8> {
    format!("netsim no_plaintext marker {from} -> {to} 5f0c3a9e71d2").into_bytes()
}

fn is_overlay(port: u16) -> bool {
    OVERLAY_PORTS.contains(&port)
}

/// Source and destination ports of an Ethernet frame carrying a UDP datagram over IPv4 (the
/// first fragment, or a whole one).
fn udp_ports(frame: &[u8]) -> Option<(u16, u16)> {
    let ip = frame.get(14..)?;
    if frame.get(12..14)? != [0x08, 0x00] || ip.first()? >> 4 != 4 || *ip.get(9)? != 17 {
        return None;
    }
    let offset = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff;
    if offset != 0 {
        return None;
    }
    let udp = ip.get(usize::from(ip[0] & 0x0f) * 4..)?;
    Some((
        u16::from_be_bytes([*udp.first()?, *udp.get(1)?]),
        u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]),
    ))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn frame(ethertype: [u8; 2], proto: u8, frag: u16, ports: (u16, u16)) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&ethertype);
        let mut ip = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, proto, 0, 0];
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip.extend([198, 18, 0, 1, 198, 18, 0, 2]);
        f.extend(ip);
        f.extend(ports.0.to_be_bytes());
        f.extend(ports.1.to_be_bytes());
        f.extend([0, 8, 0, 0]);
        f
    }

    #[rstest]
    #[case::sleeve(frame([8, 0], 17, 0, (6783, 6783)), Some((6783, 6783)))]
    #[case::vxlan(frame([8, 0], 17, 0x4000, (40000, 6784)), Some((40000, 6784)))]
    #[case::later_fragment(frame([8, 0], 17, 0x00b9, (6783, 6783)), None)]
    #[case::tcp(frame([8, 0], 6, 0, (6783, 6783)), None)]
    #[case::arp(frame([8, 6], 17, 0, (6783, 6783)), None)]
    #[case::short(vec![0u8; 20], None)]
    fn udp_ports_are_read_from_whole_or_first_fragments(
        #[case] f: Vec<u8>,
        #[case] want: Option<(u16, u16)>,
    ) {
        assert_eq!(udp_ports(&f), want);
    }

    #[test]
    fn the_marker_is_found_anywhere_and_only_whole() {
        let m = marker("c1", "c3");
        let mut f = vec![1u8; 40];
        assert!(!contains(&f, &m));
        f.extend(&m[..m.len() - 1]);
        assert!(!contains(&f, &m));
        f.extend(&m);
        assert!(contains(&f, &m));
    }
}
