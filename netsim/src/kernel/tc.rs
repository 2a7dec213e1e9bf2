//! Queueing disciplines over rtnetlink: netem (delay, jitter, loss), tbf (rate) and a bare htb
//! root.
//!
//! Every call acts on an interface index in the namespace the [`rtnetlink::Handle`] lives in
//! (the namespace its socket was opened in).
//!
//! netlink-packet-route 0.34 knows the `TCA_OPTIONS` layout of ingress, fq_codel and some
//! filters only. For netem, tbf and htb we build the `TCA_OPTIONS` payload ourselves and send it
//! as a [`TcAttribute::Other`] carrying a [`DefaultNla`] of type `TCA_OPTIONS`: netem's payload
//! is not even a list of attributes (a fixed `struct tc_netem_qopt` comes first, then
//! attributes), so the crate's `TcOption` list could not carry it. Layouts follow the kernel
//! UAPI header `include/uapi/linux/pkt_sched.h`.

use std::time::Duration;

use futures::StreamExt;
use netlink_packet_core::{
    DefaultNla, Emitable, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcHeader, TcMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// Netlink attribute type of a qdisc's options (`TCA_OPTIONS`).
const TCA_OPTIONS: u16 = 2;
/// `TCA_NETEM_LATENCY64`: delay in nanoseconds (s64), overriding the tick-based field.
const TCA_NETEM_LATENCY64: u16 = 10;
/// `TCA_NETEM_JITTER64`: jitter in nanoseconds (s64).
const TCA_NETEM_JITTER64: u16 = 11;
/// `TCA_NETEM_CORR`: `struct tc_netem_corr { delay_corr, loss_corr, dup_corr }`.
const TCA_NETEM_CORR: u16 = 1;
/// `TCA_NETEM_REORDER`: `struct tc_netem_reorder { probability, correlation }`.
const TCA_NETEM_REORDER: u16 = 3;
/// `TCA_NETEM_CORRUPT`: `struct tc_netem_corrupt { probability, correlation }`.
const TCA_NETEM_CORRUPT: u16 = 4;
/// `TCA_TBF_PARMS`: `struct tc_tbf_qopt`.
const TCA_TBF_PARMS: u16 = 1;
/// `TCA_TBF_RATE64`: rate in bytes per second when it exceeds 32 bits.
const TCA_TBF_RATE64: u16 = 4;
/// `TCA_TBF_BURST`: bucket size in bytes.
const TCA_TBF_BURST: u16 = 6;
/// `TCA_HTB_INIT`: `struct tc_htb_glob`.
const TCA_HTB_INIT: u16 = 2;
/// `TC_LINKLAYER_ETHERNET`: with a link layer set, the kernel needs no rate table.
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// The kernel's psched tick is 64 ns (`PSCHED_SHIFT` 6).
const PSCHED_TICK_NS: u64 = 64;

/// netem's default queue limit is 1000 packets, which drops packets at modest rates once a delay
/// holds them; we raise it by default.
pub const DEFAULT_NETEM_LIMIT: u32 = 10_000;

/// What went wrong with a qdisc request.
#[derive(Debug, thiserror::Error)]
pub enum TcError {
    /// The parameters cannot be expressed (e.g. loss outside 0..=100 %).
    #[error("invalid {kind} parameters: {reason}")]
    Invalid {
        /// Qdisc kind.
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The kernel refused the request.
    #[error(
        "{op} {} on interface index {ifindex}: {cause}{}",
        object(kind),
        hint_for(op, kind, cause)
    )]
    Netlink {
        /// `replace`, `add` or `delete`.
        op: &'static str,
        /// Qdisc kind (`tbf`, `netem`, ...), or a filter (`flower filter`).
        kind: &'static str,
        /// Interface index.
        ifindex: u32,
        /// The netlink error.
        cause: rtnetlink::Error,
    },
}

/// `tbf qdisc`, `flower filter`: what a request was about.
fn object(kind: &str) -> String {
    if kind.ends_with("filter") {
        kind.to_string()
    } else {
        format!("{kind} qdisc")
    }
}

/// A hint where the answer has one cause: ENOENT to adding a qdisc or filter is a kernel
/// without it (to a delete it only means there was nothing to delete).
fn hint_for(op: &str, kind: &str, err: &rtnetlink::Error) -> &'static str {
    let enoent = matches!(err, rtnetlink::Error::NetlinkError(e) if e.raw_code() == -libc::ENOENT);
    match (enoent, op) {
        (false, _) | (true, "delete") => "",
        _ if kind.ends_with("filter") => {
            " (hint: the kernel lacks this filter or its drop action: see `netsim doctor`)"
        }
        _ => {
            " (hint: the kernel lacks this qdisc: see `netsim doctor`; netem is absent from \
             many stock kernels, where netsim uses its emulated backend)"
        }
    }
}

/// netem parameters: a fixed delay plus uniform jitter, random (optionally correlated) loss,
/// reordering, duplication and corruption. Percentages are 0 to 100.
#[derive(Debug, Clone, PartialEq)]
pub struct Netem {
    /// Added one-way delay.
    pub delay: Duration,
    /// Jitter around the delay (uniform, no distribution table).
    pub jitter: Duration,
    /// Random loss, in percent.
    pub loss_percent: f64,
    /// Correlation of each loss decision with the previous one, in percent.
    pub loss_correlation_percent: f64,
    /// Share of packets sent at once instead of delayed, in percent (needs a delay).
    pub reorder_percent: f64,
    /// With reordering: only every n-th packet is a candidate (tc's `gap`; 0 means 1).
    pub reorder_gap: u32,
    /// Share of packets duplicated, in percent.
    pub duplicate_percent: f64,
    /// Share of packets with a bit flipped, in percent.
    pub corrupt_percent: f64,
    /// Queue limit in packets.
    pub limit: u32,
}

impl Default for Netem {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss_percent: 0.0,
            loss_correlation_percent: 0.0,
            reorder_percent: 0.0,
            reorder_gap: 0,
            duplicate_percent: 0.0,
            corrupt_percent: 0.0,
            limit: DEFAULT_NETEM_LIMIT,
        }
    }
}

/// A percentage as netem's probability: scaled to the full u32 range.
fn probability(percent: f64) -> u32 {
    (percent / 100.0 * f64::from(u32::MAX)).round() as u32
}

impl Netem {
    /// The `TCA_OPTIONS` payload: `struct tc_netem_qopt` then the 64-bit delay attributes.
    pub fn options(&self) -> Result<Vec<u8>, TcError> {
        let invalid = |reason: String| TcError::Invalid {
            kind: "netem",
            reason,
        };
        for (what, v) in [
            ("loss", self.loss_percent),
            ("loss correlation", self.loss_correlation_percent),
            ("reorder", self.reorder_percent),
            ("duplicate", self.duplicate_percent),
            ("corrupt", self.corrupt_percent),
        ] {
            if !(0.0..=100.0).contains(&v) || v.is_nan() {
                return Err(invalid(format!("{what} must be 0 to 100 %, got {v}")));
            }
        }
        if self.reorder_percent > 0.0 && self.delay.is_zero() {
            return Err(invalid("reordering needs a delay".into()));
        }
        let delay = i64::try_from(self.delay.as_nanos())
            .map_err(|_| invalid(format!("delay {:?} too large", self.delay)))?;
        let jitter = i64::try_from(self.jitter.as_nanos())
            .map_err(|_| invalid(format!("jitter {:?} too large", self.jitter)))?;
        // The kernel reads probabilities scaled to the full u32 range.
        let loss = probability(self.loss_percent);
        // With reordering and no gap, a gap of 1 makes every packet a candidate (as `tc` does).
        let gap = if self.reorder_percent > 0.0 {
            self.reorder_gap.max(1)
        } else {
            0
        };

        let mut out = Vec::with_capacity(24 + 2 * 12);
        // struct tc_netem_qopt { latency, limit, loss, gap, duplicate, jitter } (u32 each).
        // latency and jitter stay 0 here: the nanosecond attributes below override them.
        for field in [
            0,
            self.limit,
            loss,
            gap,
            probability(self.duplicate_percent),
            0,
        ] {
            out.extend_from_slice(&field.to_ne_bytes());
        }
        if self.loss_correlation_percent > 0.0 {
            let corr = [0, probability(self.loss_correlation_percent), 0];
            let bytes: Vec<u8> = corr.iter().flat_map(|v| v.to_ne_bytes()).collect();
            push_nla(&mut out, TCA_NETEM_CORR, &bytes);
        }
        if self.reorder_percent > 0.0 {
            let bytes: Vec<u8> = [probability(self.reorder_percent), 0]
                .iter()
                .flat_map(|v| v.to_ne_bytes())
                .collect();
            push_nla(&mut out, TCA_NETEM_REORDER, &bytes);
        }
        if self.corrupt_percent > 0.0 {
            let bytes: Vec<u8> = [probability(self.corrupt_percent), 0]
                .iter()
                .flat_map(|v| v.to_ne_bytes())
                .collect();
            push_nla(&mut out, TCA_NETEM_CORRUPT, &bytes);
        }
        for (kind, ns) in [(TCA_NETEM_LATENCY64, delay), (TCA_NETEM_JITTER64, jitter)] {
            push_nla(&mut out, kind, &ns.to_ne_bytes());
        }
        Ok(out)
    }
}

/// tbf parameters: a token bucket of `burst` bytes filled at `rate`, with at most `latency`
/// of queueing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tbf {
    /// Rate in bytes per second.
    pub rate_bytes_per_sec: u64,
    /// Bucket size in bytes (at least one MTU-sized frame).
    pub burst_bytes: u32,
    /// Longest time a packet may wait in the queue; sets the queue limit in bytes.
    pub latency: Duration,
}

impl Tbf {
    /// The `TCA_OPTIONS` payload: `TCA_TBF_PARMS`, `TCA_TBF_BURST` and, for rates above 32
    /// bits, `TCA_TBF_RATE64`.
    pub fn options(&self) -> Result<Vec<u8>, TcError> {
        let invalid = |reason: String| TcError::Invalid {
            kind: "tbf",
            reason,
        };
        if self.rate_bytes_per_sec == 0 {
            return Err(invalid("rate must be above 0".into()));
        }
        if self.burst_bytes == 0 {
            return Err(invalid("burst must be above 0 bytes".into()));
        }
        // Queue limit in bytes: what the rate drains within the latency, plus the bucket.
        let limit = u128::from(self.rate_bytes_per_sec) * self.latency.as_nanos() / 1_000_000_000
            + u128::from(self.burst_bytes);
        let limit = u32::try_from(limit)
            .map_err(|_| invalid(format!("queue limit of {limit} bytes exceeds 32 bits")))?;
        let rate32 = u32::try_from(self.rate_bytes_per_sec).unwrap_or(u32::MAX);
        // Bucket duration in psched ticks; the kernel recomputes it from TCA_TBF_BURST.
        let buffer_ticks =
            u64::from(self.burst_bytes) * 1_000_000_000 / self.rate_bytes_per_sec / PSCHED_TICK_NS;
        let buffer_ticks = u32::try_from(buffer_ticks).unwrap_or(u32::MAX);

        let mut parms = Vec::with_capacity(36);
        // struct tc_ratespec rate { cell_log u8, linklayer u8, overhead u16, cell_align i16,
        // mpu u16, rate u32 }, then the (unused) peak rate, limit, buffer and mtu.
        parms.extend_from_slice(&[0, TC_LINKLAYER_ETHERNET]);
        parms.extend_from_slice(&[0; 6]);
        parms.extend_from_slice(&rate32.to_ne_bytes());
        parms.extend_from_slice(&[0; 12]);
        for field in [limit, buffer_ticks, 0] {
            parms.extend_from_slice(&field.to_ne_bytes());
        }
        let mut out = Vec::new();
        push_nla(&mut out, TCA_TBF_PARMS, &parms);
        if self.rate_bytes_per_sec > u64::from(u32::MAX) {
            push_nla(
                &mut out,
                TCA_TBF_RATE64,
                &self.rate_bytes_per_sec.to_ne_bytes(),
            );
        }
        push_nla(&mut out, TCA_TBF_BURST, &self.burst_bytes.to_ne_bytes());
        Ok(out)
    }
}

/// The `TCA_OPTIONS` payload of an htb root: `TCA_HTB_INIT` with version 3, rate2quantum 10
/// and `default_class` as the class unclassified traffic goes to.
pub fn htb_root_options(default_class: u32) -> Vec<u8> {
    let mut glob = Vec::with_capacity(20);
    // struct tc_htb_glob { version, rate2quantum, defcls, debug, direct_pkts }.
    for field in [3u32, 10, default_class, 0, 0] {
        glob.extend_from_slice(&field.to_ne_bytes());
    }
    let mut out = Vec::new();
    push_nla(&mut out, TCA_HTB_INIT, &glob);
    out
}

/// Append one netlink attribute (header, value, padding to 4 bytes) to `out`.
fn push_nla(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let nla = DefaultNla::new(kind, value.to_vec());
    let start = out.len();
    out.resize(start + nla.buffer_len(), 0);
    nla.emit(&mut out[start..]);
}

/// The RTM_NEWQDISC message for a root qdisc of `kind` with raw `options` on `ifindex`.
pub fn root_qdisc_message(ifindex: u32, kind: &str, options: Vec<u8>) -> TcMessage {
    let header = TcHeader {
        family: AddressFamily::Unspec,
        index: ifindex as i32,
        // 1:0, so a child qdisc or class can be attached under it later.
        handle: TcHandle { major: 1, minor: 0 },
        parent: TcHandle::ROOT,
        info: 0,
    };
    TcMessage::from_parts(
        header,
        vec![
            TcAttribute::Kind(kind.to_string()),
            TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, options)),
        ],
    )
}

/// The RTM_NEWQDISC message for a qdisc of `kind` with handle `major:` under class
/// `parent` of `ifindex`.
pub fn child_qdisc_message(
    ifindex: u32,
    major: u16,
    parent: TcHandle,
    kind: &str,
    options: Vec<u8>,
) -> TcMessage {
    let header = TcHeader {
        family: AddressFamily::Unspec,
        index: ifindex as i32,
        handle: TcHandle { major, minor: 0 },
        parent,
        info: 0,
    };
    TcMessage::from_parts(
        header,
        vec![
            TcAttribute::Kind(kind.to_string()),
            TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, options)),
        ],
    )
}

/// Install (or replace) netem as the root qdisc of `ifindex` with, when `tbf` is given, a tbf
/// child (handle 2:, under netem's class 1:1) that limits the rate after the delay: the
/// layout `tc qdisc add dev X root handle 1: netem ...; tc qdisc add dev X parent 1:1 handle
/// 2: tbf ...` makes.
pub async fn replace_netem_tbf(
    handle: &rtnetlink::Handle,
    ifindex: u32,
    netem: &Netem,
    tbf: Option<&Tbf>,
) -> Result<(), TcError> {
    // Replacing a root netem that has a child keeps the child; start from scratch so a rate
    // that was removed goes away.
    let _ = delete_root_qdisc(handle, ifindex).await;
    replace_netem(handle, ifindex, netem).await?;
    if let Some(tbf) = tbf {
        let msg = child_qdisc_message(
            ifindex,
            2,
            TcHandle { major: 1, minor: 1 },
            "tbf",
            tbf.options()?,
        );
        send(
            handle,
            RouteNetlinkMessage::NewQueueDiscipline(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map_err(|cause| TcError::Netlink {
            op: "replace",
            kind: "tbf",
            ifindex,
            cause,
        })?;
    }
    Ok(())
}

impl Tbf {
    /// A tbf for `rate_bps` bits per second: a bucket of 10 ms of traffic, at least one
    /// frame of `mtu` plus headroom (tbf splits larger GSO frames itself), and `latency` of
    /// queue.
    pub fn for_rate(rate_bps: u64, mtu: u32, latency: Duration) -> Tbf {
        let rate_bytes_per_sec = (rate_bps / 8).max(1);
        let ten_ms = rate_bytes_per_sec / 100;
        let floor = u64::from(mtu) + 100;
        let burst_bytes = u32::try_from(ten_ms.max(floor)).unwrap_or(u32::MAX);
        Tbf {
            rate_bytes_per_sec,
            burst_bytes,
            latency,
        }
    }
}

async fn send(
    handle: &rtnetlink::Handle,
    message: RouteNetlinkMessage,
    flags: u16,
) -> Result<(), rtnetlink::Error> {
    let mut req = NetlinkMessage::from(message);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut response = handle.clone().request(req)?;
    while let Some(msg) = response.next().await {
        if let NetlinkPayload::Error(err) = msg.payload {
            return Err(rtnetlink::Error::NetlinkError(err));
        }
    }
    Ok(())
}

async fn replace_root(
    handle: &rtnetlink::Handle,
    ifindex: u32,
    kind: &'static str,
    options: Vec<u8>,
) -> Result<(), TcError> {
    let msg = root_qdisc_message(ifindex, kind, options);
    send(
        handle,
        RouteNetlinkMessage::NewQueueDiscipline(msg),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
    .await
    .map_err(|cause| TcError::Netlink {
        op: "replace",
        kind,
        ifindex,
        cause,
    })
}

/// Install (or replace) netem as the root qdisc of `ifindex`.
pub async fn replace_netem(
    handle: &rtnetlink::Handle,
    ifindex: u32,
    netem: &Netem,
) -> Result<(), TcError> {
    replace_root(handle, ifindex, "netem", netem.options()?).await
}

/// Install (or replace) tbf as the root qdisc of `ifindex`.
pub async fn replace_tbf(
    handle: &rtnetlink::Handle,
    ifindex: u32,
    tbf: &Tbf,
) -> Result<(), TcError> {
    replace_root(handle, ifindex, "tbf", tbf.options()?).await
}

/// Install (or replace) a bare htb root qdisc (handle 1:) on `ifindex`.
pub async fn replace_htb_root(
    handle: &rtnetlink::Handle,
    ifindex: u32,
    default_class: u32,
) -> Result<(), TcError> {
    replace_root(handle, ifindex, "htb", htb_root_options(default_class)).await
}

/// Create (never replace) netem as the root qdisc of `ifindex`; fails if a root qdisc other
/// than the default exists.
pub async fn add_netem(
    handle: &rtnetlink::Handle,
    ifindex: u32,
    netem: &Netem,
) -> Result<(), TcError> {
    let msg = root_qdisc_message(ifindex, "netem", netem.options()?);
    send(
        handle,
        RouteNetlinkMessage::NewQueueDiscipline(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .await
    .map_err(|cause| TcError::Netlink {
        op: "add",
        kind: "netem",
        ifindex,
        cause,
    })
}

/// Delete the root qdisc of `ifindex`, restoring the kernel's default.
pub async fn delete_root_qdisc(handle: &rtnetlink::Handle, ifindex: u32) -> Result<(), TcError> {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = TcHandle::ROOT;
    send(handle, RouteNetlinkMessage::DelQueueDiscipline(msg), 0)
        .await
        .map_err(|cause| TcError::Netlink {
            op: "delete",
            kind: "root",
            ifindex,
            cause,
        })
}

/// What a drop filter matches (see [`add_drop_filter`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowerMatch {
    /// IPv4 protocol number (6 TCP, 17 UDP).
    pub ip_proto: Option<u8>,
    /// IPv4 source address.
    pub src: Option<std::net::Ipv4Addr>,
    /// IPv4 destination address.
    pub dst: Option<std::net::Ipv4Addr>,
    /// Transport source port (needs `ip_proto`).
    pub sport: Option<u16>,
    /// Transport destination port (needs `ip_proto`).
    pub dport: Option<u16>,
}

/// `TC_H_CLSACT`: the parent of a clsact qdisc.
const TC_H_CLSACT: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0xfff1,
};
/// The ingress hook of a clsact qdisc.
const CLSACT_INGRESS: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0xfff2,
};
/// The egress hook of a clsact qdisc.
const CLSACT_EGRESS: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0xfff3,
};
/// `TC_ACT_SHOT`: drop.
const TC_ACT_SHOT: i32 = 2;
/// `TC_ACT_OK`: pass.
const TC_ACT_OK: i32 = 0;
/// `NLA_F_NESTED`.
const NLA_F_NESTED: u16 = 0x8000;

fn nested(kind: u16, inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    push_nla(&mut out, kind | NLA_F_NESTED, inner);
    out
}

/// A gact action list that drops every packet, or one in `one_in` at random.
fn gact_drop(one_in: Option<u16>) -> Vec<u8> {
    let prob = one_in;
    // struct tc_gact { index, capab, action, refcnt, bindcnt }.
    let (action, random) = match prob {
        // Random: the default action passes, the random one drops (`tc ... action pass
        // random netrand drop N`).
        Some(p) => (TC_ACT_OK, Some(p)),
        None => (TC_ACT_SHOT, None),
    };
    let mut parms = Vec::new();
    for v in [0i32, 0, action, 0, 0] {
        parms.extend_from_slice(&v.to_ne_bytes());
    }
    let mut opts = Vec::new();
    push_nla(&mut opts, 2, &parms); // TCA_GACT_PARMS
    if let Some(p) = random {
        // struct tc_gact_p { u16 ptype (PGACT_NETRAND 1), u16 pval, int paction }: the kernel
        // takes `paction` for one packet in `pval` at random, the default action otherwise.
        let mut prob = Vec::new();
        prob.extend_from_slice(&1u16.to_ne_bytes());
        prob.extend_from_slice(&p.max(1).to_ne_bytes());
        prob.extend_from_slice(&TC_ACT_SHOT.to_ne_bytes());
        push_nla(&mut opts, 3, &prob); // TCA_GACT_PROB
    }
    let mut act = Vec::new();
    push_nla(&mut act, 1, b"gact\0"); // TCA_ACT_KIND
    act.extend(nested(2, &opts)); // TCA_ACT_OPTIONS
    nested(1, &act) // action number 1 of the list
}

/// Creates (after deleting any) a clsact qdisc on `ifindex`, the hook of [`add_drop_filter`].
pub async fn replace_clsact(handle: &rtnetlink::Handle, ifindex: u32) -> Result<(), TcError> {
    delete_clsact(handle, ifindex).await;
    let header = TcHeader {
        family: AddressFamily::Unspec,
        index: ifindex as i32,
        handle: TcHandle {
            major: 0xffff,
            minor: 0,
        },
        parent: TC_H_CLSACT,
        info: 0,
    };
    let msg = TcMessage::from_parts(header, vec![TcAttribute::Kind("clsact".into())]);
    send(
        handle,
        RouteNetlinkMessage::NewQueueDiscipline(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .await
    .map_err(|cause| TcError::Netlink {
        op: "add",
        kind: "clsact",
        ifindex,
        cause,
    })
}

/// Deletes the clsact qdisc of `ifindex` and every filter on it, if there is one.
pub async fn delete_clsact(handle: &rtnetlink::Handle, ifindex: u32) {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = TC_H_CLSACT;
    msg.header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    let _ = send(handle, RouteNetlinkMessage::DelQueueDiscipline(msg), 0).await;
}

/// Adds a filter to the clsact hook (`ingress` or egress) of `ifindex` that drops what
/// `matches` describes (everything when `None`), always or one packet in `prob` at random.
/// Layouts follow `include/uapi/linux/pkt_cls.h` and `tc_act/tc_gact.h`; the route crate
/// knows neither flower keys nor gact.
pub async fn add_drop_filter(
    handle: &rtnetlink::Handle,
    ifindex: u32,
    ingress: bool,
    prio: u16,
    matches: Option<&FlowerMatch>,
    prob: Option<u16>,
) -> Result<(), TcError> {
    let actions = gact_drop(prob);
    let (kind, proto, options) = match matches {
        None => {
            let mut o = Vec::new();
            o.extend(nested(2, &actions)); // TCA_MATCHALL_ACT
            ("matchall", libc::ETH_P_ALL as u16, o)
        }
        Some(m) => {
            let mut o = Vec::new();
            o.extend(nested(3, &actions)); // TCA_FLOWER_ACT
            push_nla(&mut o, 8, &(libc::ETH_P_IP as u16).to_be_bytes()); // KEY_ETH_TYPE
            if let Some(p) = m.ip_proto {
                push_nla(&mut o, 9, &[p]); // KEY_IP_PROTO
            }
            for (key, mask, addr) in [(10u16, 11u16, m.src), (12, 13, m.dst)] {
                if let Some(a) = addr {
                    push_nla(&mut o, key, &a.octets());
                    push_nla(&mut o, mask, &[255; 4]);
                }
            }
            // KEY_TCP_SRC 18, KEY_TCP_DST 19, KEY_UDP_SRC 20, KEY_UDP_DST 21 (big endian).
            let (sk, dk) = if m.ip_proto == Some(6) {
                (18, 19)
            } else {
                (20, 21)
            };
            if let Some(p) = m.sport {
                push_nla(&mut o, sk, &p.to_be_bytes());
            }
            if let Some(p) = m.dport {
                push_nla(&mut o, dk, &p.to_be_bytes());
            }
            ("flower", libc::ETH_P_IP as u16, o)
        }
    };
    let header = TcHeader {
        family: AddressFamily::Unspec,
        index: ifindex as i32,
        handle: TcHandle::UNSPEC,
        parent: if ingress {
            CLSACT_INGRESS
        } else {
            CLSACT_EGRESS
        },
        // Priority in the upper half, protocol (network order) in the lower.
        info: (u32::from(prio) << 16) | u32::from(proto.to_be()),
    };
    let msg = TcMessage::from_parts(
        header,
        vec![
            TcAttribute::Kind(kind.to_string()),
            TcAttribute::Other(DefaultNla::new(TCA_OPTIONS | NLA_F_NESTED, options)),
        ],
    );
    send(
        handle,
        RouteNetlinkMessage::NewTrafficFilter(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .await
    .map_err(|cause| TcError::Netlink {
        op: "add",
        kind: if matches.is_some() {
            "flower filter"
        } else {
            "matchall filter"
        },
        ifindex,
        cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes
            .chunks(4)
            .map(|w| w.iter().map(|b| format!("{b:02x}")).collect::<String>())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn netem_options_layout() {
        let netem = Netem {
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(1),
            loss_percent: 1.0,
            limit: DEFAULT_NETEM_LIMIT,
            ..Netem::default()
        };
        let bytes = netem.options().unwrap_or_default();
        // qopt (24 bytes: limit 10000, loss 1 % of u32::MAX = 0x028f5c29), then two 12-byte
        // attributes: LATENCY64 = 10 ms, JITTER64 = 1 ms, in nanoseconds.
        assert_eq!(bytes.len(), 24 + 12 + 12);
        insta::assert_snapshot!(hex(&bytes), @"00000000 10270000 295c8f02 00000000 00000000 00000000 0c000a00 80969800 00000000 0c000b00 40420f00 00000000");
    }

    #[test]
    fn netem_options_with_correlation_reorder_duplicate_corrupt() {
        let netem = Netem {
            delay: Duration::from_millis(10),
            loss_percent: 1.0,
            loss_correlation_percent: 25.0,
            reorder_percent: 25.0,
            duplicate_percent: 1.0,
            corrupt_percent: 0.1,
            ..Netem::default()
        };
        let bytes = netem.options().unwrap_or_default();
        // qopt with gap 1 and duplicate 1 %, then CORR (12 + 4), REORDER (8 + 4), CORRUPT
        // (8 + 4), LATENCY64, JITTER64.
        insta::assert_snapshot!(hex(&bytes), @"00000000 10270000 295c8f02 01000000 295c8f02 00000000 10000100 00000000 00000040 00000000 0c000300 00000040 00000000 0c000400 37894100 00000000 0c000a00 80969800 00000000 0c000b00 00000000 00000000");
    }

    #[test]
    fn netem_refuses_reordering_without_delay() {
        let netem = Netem {
            reorder_percent: 10.0,
            ..Netem::default()
        };
        assert!(netem.options().is_err());
    }

    #[test]
    fn netem_rejects_impossible_loss() {
        for loss in [-1.0, 100.5, f64::NAN] {
            let netem = Netem {
                loss_percent: loss,
                ..Netem::default()
            };
            assert!(netem.options().is_err(), "loss {loss} accepted");
        }
    }

    #[test]
    fn full_loss_is_the_whole_u32_range() {
        let netem = Netem {
            loss_percent: 100.0,
            ..Netem::default()
        };
        let bytes = netem.options().unwrap_or_default();
        assert_eq!(bytes[8..12], u32::MAX.to_ne_bytes());
    }

    #[test]
    fn tbf_options_layout() {
        let tbf = Tbf {
            rate_bytes_per_sec: 125_000, // 1 Mbit/s
            burst_bytes: 1600,
            latency: Duration::from_millis(50),
        };
        let bytes = tbf.options().unwrap_or_default();
        // rate 125000 B/s, limit 6250 + 1600 = 7850 bytes, buffer 12.8 ms = 200000 ticks.
        insta::assert_snapshot!(hex(&bytes), @"28000100 00010000 00000000 48e80100 00000000 00000000 00000000 aa1e0000 400d0300 00000000 08000600 40060000");
    }

    #[test]
    fn tbf_rate_above_32_bits_carries_rate64() {
        let tbf = Tbf {
            rate_bytes_per_sec: 5_000_000_000,
            burst_bytes: 64_000,
            latency: Duration::from_millis(1),
        };
        let bytes = tbf.options().unwrap_or_default();
        // PARMS (40) + RATE64 (12) + BURST (8).
        assert_eq!(bytes.len(), 40 + 12 + 8);
        assert_eq!(bytes[40..44], [0x0c, 0x00, 0x04, 0x00]);
    }

    #[test]
    fn htb_root_options_layout() {
        insta::assert_snapshot!(hex(&htb_root_options(0x10)), @"18000200 03000000 0a000000 10000000 00000000 00000000");
    }

    #[test]
    fn root_qdisc_message_carries_kind_and_raw_options() {
        let msg = root_qdisc_message(7, "netem", vec![1, 2, 3, 4]);
        assert_eq!(msg.header.index, 7);
        assert_eq!(msg.header.parent, TcHandle::ROOT);
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        // tcmsg (20) + TCA_KIND "netem\0" (4 + 6, padded to 12) + TCA_OPTIONS (4 + 4).
        insta::assert_snapshot!(hex(&buf), @"00000000 07000000 00000100 ffffffff 00000000 0a000100 6e657465 6d000000 08000200 01020304");
    }
}
