//! The assertion and step tables of a topology file as written: `[[expect]]`, `[[step]]` and a
//! step's `impair`. Like the rest of [`super::topology`], values that need checking against the
//! lab stay strings with spans; [`crate::model::plan()`] checks and resolves them.

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::topology::ShapeSpec;

/// What an `[[expect]]` asserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExpectKind {
    /// `from` can (or cannot) reach `to` (or every pair of `group`, or each of `pairs`) with
    /// ICMP echo, a TCP connection or a UDP exchange (`proto`).
    Reach,
    /// The path MTU from `from` to `to` (`mtu`: exact or a range) and what happens just above it
    /// (`above`).
    Mtu,
    /// The datapath the overlay connection between hosts `from` and `to` uses (`datapath`), and
    /// why (`reason`), reached `within` a time.
    Datapath,
    /// A throughput, latency or loss envelope (`test`, `min`, `max`), absolute or relative to
    /// the native underlay measured in the same run.
    Perf,
    /// A paced TCP stream from `from` to `to`, started in this step, that must survive every
    /// step up to `until` without a reset or a lost byte.
    Stream,
    /// The router of host `from` refuses host `to` (see `[overlay] host_passwords`), `within`
    /// a time.
    Refused,
    /// Container `from` sends datagrams to container `to`; the underlay interfaces of `to`'s
    /// host carry them as overlay traffic, never their payload in clear.
    NoPlaintext,
}

/// `[[expect]]` (and `[[step.expect]]`): an assertion checked once the lab is up, or after a
/// step's impairment.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// What to check.
    pub kind: ExpectKind,
    /// The node the probe runs in (for `datapath`: a host, or a container standing for its
    /// host).
    #[schemars(with = "Option<String>")]
    pub from: Option<Spanned<String>>,
    /// The target: a node (its first address, or a container's overlay address), `node:iface`,
    /// or an address.
    #[schemars(with = "Option<String>")]
    pub to: Option<Spanned<String>>,
    /// `reach` only: every ordered pair of these nodes, instead of `from` and `to`.
    #[schemars(with = "Option<Vec<String>>")]
    pub group: Option<Vec<Spanned<String>>>,
    /// `reach` only: these `[from, to]` pairs, instead of `from` and `to`.
    #[schemars(with = "Option<Vec<[String; 2]>>")]
    pub pairs: Option<Vec<Spanned<Vec<Spanned<String>>>>>,
    /// `reach`: whether the target must answer (default `true`) or must not (`false`).
    pub reachable: Option<bool>,
    /// Which network the probe must cross: `overlay` (the target is a container) or
    /// `underlay` (a host or router). Checked against the target; default: whatever the target
    /// is.
    #[schemars(with = "Option<String>", pattern(r"^(overlay|underlay)$"))]
    pub over: Option<Spanned<String>>,
    /// `reach`: `icmp` (echo, the default), `tcp` (a connection and an echoed message) or
    /// `udp` (a datagram and its echo).
    #[schemars(with = "Option<String>", pattern(r"^(icmp|tcp|udp)$"))]
    pub proto: Option<Spanned<String>>,
    /// `reach` with ICMP: the echo's payload in bytes (default 56), e.g. 10000 for an echo
    /// that leaves in fragments and comes back only if every piece crosses.
    #[schemars(with = "Option<u32>", range(min = 0, max = 65507))]
    pub size: Option<Spanned<i64>>,
    /// `mtu`: the path MTU, exact (`1450`) or a range (`"1400..1450"`, both ends included).
    #[schemars(with = "Option<ExpectMtu>")]
    pub mtu: Option<Spanned<ExpectMtu>>,
    /// `mtu`: what happens to a packet one byte above it: `frag_needed` (a router answers with
    /// ICMP "fragmentation needed"), `local_limit` (the sender's own interface refuses it),
    /// `dropped` (a black hole), or `fragmented` (without DF it is fragmented and delivered).
    #[schemars(with = "Option<String>")]
    pub above: Option<Spanned<String>>,
    /// `datapath`: `fast` (any kernel fast path), `sleeve`, or a named tier: `vxlan`, `odp`.
    #[schemars(with = "Option<String>")]
    pub datapath: Option<Spanned<String>>,
    /// `datapath`: text the router's reason for the datapath must contain.
    #[schemars(with = "Option<String>")]
    pub reason: Option<Spanned<String>>,
    /// How long the expectation may take to hold (polled until then), e.g. `"5s"`. Default:
    /// checked once (for `datapath`: 20 s).
    #[schemars(with = "Option<String>", pattern(r"^[0-9.]+ *(ms|s)$"))]
    pub within: Option<Spanned<String>>,
    /// `perf`: `tcp_bw`, `udp_bw` (throughput), `tcp_lat`, `udp_lat` (one-way latency, half a
    /// round trip) or `loss` (share of ICMP echoes unanswered).
    #[schemars(
        with = "Option<String>",
        pattern(r"^(tcp_bw|tcp_lat|udp_bw|udp_lat|loss)$")
    )]
    pub test: Option<Spanned<String>>,
    /// `perf`: the lower bound: `"100mbit"`, `"2ms"`, `"1%"`, or `"0.85x native"` (a share of
    /// the same test between the nodes' hosts on the underlay, measured in the same run).
    #[schemars(with = "Option<String>")]
    pub min: Option<Spanned<String>>,
    /// `perf`: the upper bound, written like `min`.
    #[schemars(with = "Option<String>")]
    pub max: Option<Spanned<String>>,
    /// `perf`: how many runs to take the median of (default 3).
    #[schemars(with = "Option<u32>", range(min = 1, max = 20))]
    pub repeats: Option<Spanned<u32>>,
    /// `perf`: how long each run lasts, e.g. `"2s"` (default 2 s; `loss` sends 100 echoes).
    #[schemars(with = "Option<String>", pattern(r"^[0-9.]+ *(ms|s)$"))]
    pub duration: Option<Spanned<String>>,
    /// `stream`: the name of the step after which the stream is stopped and checked (default:
    /// the last step).
    #[schemars(with = "Option<String>")]
    pub until: Option<Spanned<String>>,
}

/// An expected path MTU: a number of bytes or a range `"LOW..HIGH"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectMtu {
    /// Exactly this many bytes.
    Bytes(i64),
    /// A range as written, checked by the planner.
    Range(String),
}

impl<'de> Deserialize<'de> for ExpectMtu {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ExpectMtu;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes or a range like \"1400..1450\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ExpectMtu, E> {
                Ok(ExpectMtu::Range(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ExpectMtu, E> {
                Ok(ExpectMtu::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ExpectMtu, E> {
                Ok(ExpectMtu::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ExpectMtu {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ExpectMtu".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "a number of bytes, or a range \"LOW..HIGH\" (both included)",
            "oneOf": [
                { "type": "integer", "minimum": 68, "maximum": 65535 },
                { "type": "string", "pattern": "^[0-9]+ *\\.\\. *[0-9]+$" }
            ]
        })
    }
}

/// `[[step]]`: one named step. It does at most one thing (`impair` or `heal`), then checks its
/// `[[step.expect]]` tables; a report names the step an expectation failed in.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// What the step is, in a few words; unique among the steps.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// A fault to put in: shape a link, cut it, partition nodes, block a port, kill or
    /// restart a host's overlay router.
    #[schemars(with = "Option<Impair>")]
    pub impair: Option<Spanned<Impair>>,
    /// `"all"`: undo every impairment of the earlier steps (links back to their shape and
    /// healed, partitions and port blocks lifted, killed routers started again).
    #[schemars(with = "Option<String>", pattern(r"^all$"))]
    pub heal: Option<Spanned<String>>,
    /// What must hold after the step's action.
    #[serde(default)]
    #[schemars(with = "Vec<Expect>")]
    pub expect: Vec<Spanned<Expect>>,
}

/// What an `impair` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImpairKind {
    /// Change a link's impairment (`link`, and the keys of a link's `shape`).
    Shape,
    /// Cut a link (`link`): nothing passes, its configuration stays.
    Cut,
    /// Partition nodes `left` from nodes `right`.
    Partition,
    /// Drop `proto` traffic to and from `port` in and out of `node`.
    Block,
    /// Drop ICMP "fragmentation needed" entering `node` (a host, router or switch): a PMTU
    /// black hole.
    DropFragNeeded,
    /// Drop UDP packets (fragments too) longer than `bytes` entering `node`.
    DropUdpOver,
    /// Kill `node`'s overlay router with SIGKILL, as a crash would.
    Kill,
    /// Kill `node`'s overlay router and start it again.
    Restart,
}

/// `impair = { kind = ..., ... }` of a `[[step]]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Impair {
    /// What to do.
    pub kind: ImpairKind,
    /// `shape`, `cut`: the link's two ends, e.g. `["h1", "sw1"]`.
    #[schemars(with = "Option<[String; 2]>")]
    pub link: Option<Spanned<Vec<Spanned<String>>>>,
    /// `block`, `drop_frag_needed`, `drop_udp_over`, `kill`, `restart`: the node.
    #[schemars(with = "Option<String>")]
    pub node: Option<Spanned<String>>,
    /// `block`: `tcp` or `udp`.
    #[schemars(with = "Option<String>", pattern(r"^(tcp|udp)$"))]
    pub proto: Option<Spanned<String>>,
    /// `block`: the port.
    #[schemars(with = "Option<u16>")]
    pub port: Option<Spanned<i64>>,
    /// `drop_udp_over`: the largest IP packet that still passes, e.g. 700.
    #[schemars(with = "Option<u16>", range(min = 28))]
    pub bytes: Option<Spanned<i64>>,
    /// `partition`: one side.
    #[schemars(with = "Option<Vec<String>>")]
    pub left: Option<Vec<Spanned<String>>>,
    /// `partition`: the other side.
    #[schemars(with = "Option<Vec<String>>")]
    pub right: Option<Vec<Spanned<String>>>,
    /// `shape`: the new impairment of both directions (keys as in a link's `shape`; unset keys
    /// keep their value).
    pub shape: Option<ShapeSpec>,
}
