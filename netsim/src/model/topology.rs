//! The topology file as written: serde types with source spans, and the parser that turns TOML
//! text into them (reporting syntax errors, unknown keys and wrong types with their positions).
//!
//! These types are also the source of the JSON schema (`docs/topology.schema.json`), so the doc
//! comments below are what editors show on hover. Values that need checking against each other
//! (names, addresses, subnets) stay strings with spans here; [`crate::model::plan()`] checks and
//! resolves them.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::de::{self, Visitor};
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::diag::{closest, Diagnostic, Diagnostics, Reporter};

/// A parsed topology file: what it says, where it says it, and which file it came from.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "netsim topology",
    description = "A netsim lab: switches, routers, hosts, the links between them, an overlay \
                   section and the assertions that must hold. See docs/topology.md."
)]
pub struct Topology {
    /// The file this was read from (used in diagnostics).
    #[serde(skip)]
    #[schemars(skip)]
    pub file: PathBuf,
    /// The source text (used to point at positions in diagnostics).
    #[serde(skip)]
    #[schemars(skip)]
    pub source: String,
    /// Lab-wide settings.
    pub lab: Option<Lab>,
    /// Switches: Linux bridges, each in a namespace of its own.
    #[serde(default)]
    #[schemars(with = "Vec<Switch>")]
    pub switch: Vec<Spanned<Switch>>,
    /// Routers: hosts that forward IPv4 between their interfaces.
    #[serde(default)]
    #[schemars(with = "Vec<Router>")]
    pub router: Vec<Spanned<Router>>,
    /// Hosts: where the overlay router runs; they may carry containers.
    #[serde(default)]
    #[schemars(with = "Vec<Host>")]
    pub host: Vec<Spanned<Host>>,
    /// Links: a veth pair between two nodes, or between a node and a switch.
    #[serde(default)]
    #[schemars(with = "Vec<Link>")]
    pub link: Vec<Spanned<Link>>,
    /// The overlay (reserved: validated and carried into the plan for the overlay).
    pub overlay: Option<Overlay>,
    /// Assertions checked after the lab is up, in file order.
    #[serde(default)]
    #[schemars(with = "Vec<Expect>")]
    pub expect: Vec<Spanned<Expect>>,
    /// Named steps run in order after the lab is up and its `[[expect]]` tables are checked:
    /// impair, heal, and the expectations that must hold after each.
    #[serde(default)]
    #[schemars(with = "Vec<Step>")]
    pub step: Vec<Spanned<Step>>,
}

/// `[lab]`: lab-wide settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Lab {
    /// The lab's name: lowercase letters, digits and `-`, at most 32 characters. Defaults to
    /// the file's name without `.toml`.
    #[schemars(
        with = "Option<String>",
        length(min = 1, max = 32),
        pattern(r"^[a-z][a-z0-9-]*$")
    )]
    pub name: Option<Spanned<String>>,
    /// Seed of the random choices link shaping makes (loss, jitter, reordering), so runs
    /// repeat. Default 0.
    pub seed: Option<u64>,
    /// Kernel features the file needs to mean anything (e.g. `["netem"]`); where one is
    /// missing, `netsim test` reports the file skipped, naming it (`netsim doctor` lists them).
    #[schemars(with = "Option<Vec<String>>")]
    pub needs: Option<Vec<Spanned<String>>>,
}

/// `[[switch]]`: a Linux bridge in a namespace of its own.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    /// Node name: a lowercase letter, then lowercase letters, digits or `-`; at most 10
    /// characters; unique in the lab.
    #[schemars(
        with = "String",
        length(min = 1, max = 10),
        pattern(r"^[a-z][a-z0-9-]*$")
    )]
    pub name: Spanned<String>,
    /// The IPv4 subnet of this segment (inside 198.18.0.0/16). Interfaces attached to the switch
    /// get their addresses from it unless a link gives one explicitly.
    #[schemars(with = "Option<String>")]
    pub subnet: Option<Spanned<String>>,
    /// MTU of links to this switch that set none (default 1500).
    #[schemars(with = "Option<u32>", range(min = 68, max = 65535))]
    pub mtu: Option<Spanned<u32>>,
}

/// `[[router]]`: a node that forwards IPv4 between its interfaces.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Router {
    /// Node name: a lowercase letter, then lowercase letters, digits or `-`; at most 10
    /// characters; unique in the lab.
    #[schemars(
        with = "String",
        length(min = 1, max = 10),
        pattern(r"^[a-z][a-z0-9-]*$")
    )]
    pub name: Spanned<String>,
    /// Shorthand for links: one interface on each of these switches, addressed from the
    /// switch's subnet. A router takes the lowest free address of a subnet.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub switches: Vec<Spanned<String>>,
    /// Default route: an address on one of this node's subnets, or the name of a node that
    /// shares a subnet with it.
    #[schemars(with = "Option<String>")]
    pub gateway: Option<Spanned<String>>,
    /// Static routes, installed in order.
    #[serde(default)]
    #[schemars(with = "Vec<Route>")]
    pub routes: Vec<Spanned<Route>>,
}

/// `[[host]]`: an end host, where the overlay router runs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Node name: a lowercase letter, then lowercase letters, digits or `-`; at most 10
    /// characters; unique in the lab.
    #[schemars(
        with = "String",
        length(min = 1, max = 10),
        pattern(r"^[a-z][a-z0-9-]*$")
    )]
    pub name: Spanned<String>,
    /// Shorthand for links: one interface on each of these switches, addressed from the
    /// switch's subnet.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub switches: Vec<Spanned<String>>,
    /// Default route: an address on one of this node's subnets, or the name of a node that
    /// shares a subnet with it (usually a router).
    #[schemars(with = "Option<String>")]
    pub gateway: Option<Spanned<String>>,
    /// Static routes, installed in order.
    #[serde(default)]
    #[schemars(with = "Vec<Route>")]
    pub routes: Vec<Spanned<Route>>,
    /// Container namespaces on this host (node names, unique in the lab). They get no
    /// interfaces here: the overlay attaches them.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub containers: Vec<Spanned<String>>,
}

/// A static route.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Destination: a subnet inside 198.18.0.0/15, or `default` (0.0.0.0/0).
    #[schemars(with = "String")]
    pub dst: Spanned<String>,
    /// Next hop: an address on one of this node's subnets, or the name of a node that shares a
    /// subnet with it.
    #[schemars(with = "String")]
    pub via: Spanned<String>,
}

/// `[[link]]`: a veth pair between two nodes, or between a node and a switch.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The two ends: node names. At most one may be a switch; neither may be a container.
    #[schemars(with = "[String; 2]")]
    pub endpoints: Spanned<Vec<Spanned<String>>>,
    /// Addresses, one per end that is not a switch, in the order of `endpoints`. Each is
    /// `A.B.C.D/len`, `A.B.C.D` (the length comes from the subnet) or `auto` (planned from the
    /// subnet). Without it, addresses are planned from the subnet.
    #[schemars(with = "Option<Vec<String>>")]
    pub addresses: Option<Spanned<Vec<Spanned<String>>>>,
    /// For a link between two nodes (no switch): the subnet both ends are addressed from.
    #[schemars(with = "Option<String>")]
    pub subnet: Option<Spanned<String>>,
    /// MTU of both ends (default: the switch's MTU, else 1500).
    #[schemars(with = "Option<u32>", range(min = 68, max = 65535))]
    pub mtu: Option<Spanned<u32>>,
    /// A named link profile measured on a public cloud (rate and one-way delay), e.g.
    /// `"azure-d2"`; `shape` overrides its values. See docs/shaping.md for the list.
    #[schemars(with = "Option<String>")]
    pub profile: Option<Spanned<String>>,
    /// How the link is impaired: applies to both directions; `a_to_b` and `b_to_a` override
    /// it per direction (`a` is the first of `endpoints`). See docs/shaping.md.
    pub shape: Option<LinkShape>,
}

/// `shape = { ... }` of a `[[link]]`: impairments of both directions, with per-direction
/// overrides.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkShape {
    /// Rate limit: a number and `bit`, `kbit`, `mbit` or `gbit`, e.g. `"100mbit"`.
    #[schemars(with = "Option<String>", pattern(r"^[0-9.]+ *([kKmMgGtT]?bit|bps)$"))]
    pub rate: Option<Spanned<String>>,
    /// Added one-way delay: a number and `ns`, `us`, `ms` or `s`, e.g. `"10ms"`.
    #[schemars(with = "Option<String>", pattern(r"^[0-9.]+ *(ns|us|ms|s)$"))]
    pub delay: Option<Spanned<String>>,
    /// Variation of the delay, e.g. `"2ms"`.
    #[schemars(with = "Option<String>", pattern(r"^[0-9.]+ *(ns|us|ms|s)$"))]
    pub jitter: Option<Spanned<String>>,
    /// How the delay varies: `uniform` (default), `normal` or `pareto`.
    #[schemars(with = "Option<String>", pattern(r"^(uniform|normal|pareto)$"))]
    pub distribution: Option<Spanned<String>>,
    /// Random loss, e.g. `"1%"`.
    #[schemars(with = "Option<String>", pattern(r"^[0-9.]+ *%$"))]
    pub loss: Option<Spanned<String>>,
    /// Correlation of each loss decision with the previous one (bursty loss), e.g. `"25%"`.
    #[schemars(with = "Option<String>", pattern(r"^[0-9.]+ *%$"))]
    pub loss_correlation: Option<Spanned<String>>,
    /// Share of packets sent without the delay, so they overtake others, e.g. `"25%"`.
    #[schemars(with = "Option<String>", pattern(r"^[0-9.]+ *%$"))]
    pub reorder: Option<Spanned<String>>,
    /// Share of packets duplicated, e.g. `"1%"`.
    #[schemars(with = "Option<String>", pattern(r"^[0-9.]+ *%$"))]
    pub duplicate: Option<Spanned<String>>,
    /// Share of packets with a bit flipped, e.g. `"0.1%"`.
    #[schemars(with = "Option<String>", pattern(r"^[0-9.]+ *%$"))]
    pub corrupt: Option<Spanned<String>>,
    /// Queue limit in packets.
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub limit: Option<Spanned<u32>>,
    /// Overrides for traffic from the first endpoint to the second.
    pub a_to_b: Option<ShapeSpec>,
    /// Overrides for traffic from the second endpoint to the first.
    pub b_to_a: Option<ShapeSpec>,
}

/// The impairments of one direction of a link (every key optional).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShapeSpec {
    /// Rate limit: a number and `bit`, `kbit`, `mbit` or `gbit`, e.g. `"100mbit"`.
    #[schemars(with = "Option<String>", pattern(r"^[0-9.]+ *([kKmMgGtT]?bit|bps)$"))]
    pub rate: Option<Spanned<String>>,
    /// Added one-way delay: a number and `ns`, `us`, `ms` or `s`, e.g. `"10ms"`.
    #[schemars(with = "Option<String>", pattern(r"^[0-9.]+ *(ns|us|ms|s)$"))]
    pub delay: Option<Spanned<String>>,
    /// Variation of the delay, e.g. `"2ms"`.
    #[schemars(with = "Option<String>", pattern(r"^[0-9.]+ *(ns|us|ms|s)$"))]
    pub jitter: Option<Spanned<String>>,
    /// How the delay varies: `uniform` (default), `normal` or `pareto`.
    #[schemars(with = "Option<String>", pattern(r"^(uniform|normal|pareto)$"))]
    pub distribution: Option<Spanned<String>>,
    /// Random loss, e.g. `"1%"`.
    #[schemars(with = "Option<String>", pattern(r"^[0-9.]+ *%$"))]
    pub loss: Option<Spanned<String>>,
    /// Correlation of each loss decision with the previous one (bursty loss), e.g. `"25%"`.
    #[schemars(with = "Option<String>", pattern(r"^[0-9.]+ *%$"))]
    pub loss_correlation: Option<Spanned<String>>,
    /// Share of packets sent without the delay, so they overtake others, e.g. `"25%"`.
    #[schemars(with = "Option<String>", pattern(r"^[0-9.]+ *%$"))]
    pub reorder: Option<Spanned<String>>,
    /// Share of packets duplicated, e.g. `"1%"`.
    #[schemars(with = "Option<String>", pattern(r"^[0-9.]+ *%$"))]
    pub duplicate: Option<Spanned<String>>,
    /// Share of packets with a bit flipped, e.g. `"0.1%"`.
    #[schemars(with = "Option<String>", pattern(r"^[0-9.]+ *%$"))]
    pub corrupt: Option<Spanned<String>>,
    /// Queue limit in packets.
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub limit: Option<Spanned<u32>>,
}

/// `[overlay]`: the overlay network (reserved for the overlay; validated and carried).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// The overlay's address range, inside 198.19.0.0/16.
    #[schemars(with = "String")]
    pub range: Spanned<String>,
    /// Shared secret; when set, overlay traffic is encrypted. Never shown in plans or reports.
    #[schemars(with = "Option<String>")]
    pub password: Option<Spanned<String>>,
    /// Overlay MTU: `"auto"` (detected from the underlay, the default) or a number.
    #[schemars(with = "Option<OverlayMtu>")]
    pub mtu: Option<Spanned<OverlayMtu>>,
    /// Hosts whose router gets another password than `password` (`""`: none), to show that
    /// a router without the shared secret is refused. Never shown in plans or reports.
    #[schemars(with = "Option<std::collections::BTreeMap<String, String>>")]
    pub host_passwords: Option<Spanned<std::collections::BTreeMap<String, Spanned<String>>>>,
}

/// An overlay MTU setting: `"auto"` or a fixed number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayMtu {
    /// Detect from the underlay route.
    Auto,
    /// A fixed MTU.
    Bytes(i64),
}

impl<'de> Deserialize<'de> for OverlayMtu {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = OverlayMtu;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"auto\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OverlayMtu, E> {
                if v == "auto" {
                    Ok(OverlayMtu::Auto)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<OverlayMtu, E> {
                Ok(OverlayMtu::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<OverlayMtu, E> {
                Ok(OverlayMtu::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for OverlayMtu {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OverlayMtu".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "\"auto\" (detected from the underlay) or a number of bytes",
            "oneOf": [
                { "type": "string", "const": "auto" },
                { "type": "integer", "minimum": 68, "maximum": 65535 }
            ]
        })
    }
}

pub use super::step_types::{Expect, ExpectKind, Impair, ImpairKind, Step};

/// Top-level sections, in the order the docs list them.
pub(crate) const SECTIONS: [&str; 8] = [
    "lab", "switch", "router", "host", "link", "overlay", "expect", "step",
];

impl Topology {
    /// A reporter that points into this topology's source.
    pub(crate) fn reporter(&self) -> Reporter<'_> {
        Reporter::new(&self.file, &self.source)
    }
}

/// Parses TOML text into a [`Topology`]: syntax, known keys and value types. Meaning (names,
/// addresses, references) is checked by [`crate::model::plan()`].
pub(crate) fn parse(src: &str, file: &Path) -> Result<Topology, Diagnostics> {
    let mut r = Reporter::new(file, src);
    let (table, syntax) = DeTable::parse_recoverable(src);
    if !syntax.is_empty() {
        let mut seen_lines = Vec::new();
        let mut errs: Vec<_> = syntax.iter().collect();
        errs.sort_by_key(|e| e.span().map_or(0, |s| s.start));
        for e in errs {
            let span = e.span().unwrap_or(0..0);
            let line = r.line_of(span.start);
            // One error a line: the parser's recovery tends to repeat itself.
            if seen_lines.contains(&line) || seen_lines.len() >= 5 {
                continue;
            }
            seen_lines.push(line);
            r.error(
                span,
                format!("invalid TOML: {}", e.message().trim()),
                "fix the syntax: strings are quoted (\"h1\"), lists are [\"a\", \"b\"], a table is \
                 [lab] and each entry of a list of tables is [[host]] (see https://toml.io)",
            );
        }
        return Err(r.into_diagnostics());
    }

    match Topology::deserialize(toml::de::Deserializer::from(table.clone())) {
        Ok(mut t) => {
            t.file = file.to_path_buf();
            t.source = src.to_string();
            Ok(t)
        }
        Err(whole) => {
            // Deserialize section by section, element by element, so one mistake does not hide
            // the others.
            let root = table.get_ref();
            for (key, value) in root.iter() {
                check_section(&mut r, key, value);
            }
            if !r.has_errors() {
                let span = whole.span().unwrap_or(0..0);
                let d = r.at(span, whole.message().to_string(), "see docs/topology.md");
                r.push(d);
            }
            Err(r.into_diagnostics())
        }
    }
}

fn check_section(
    r: &mut Reporter<'_>,
    key: &Spanned<toml::de::DeString<'_>>,
    value: &Spanned<DeValue<'_>>,
) {
    let name: &str = key.get_ref();
    match name {
        "lab" => check_table::<Lab>(r, "[lab]", value),
        "overlay" => check_table::<Overlay>(r, "[overlay]", value),
        "switch" => check_array::<Switch>(r, name, value),
        "router" => check_array::<Router>(r, name, value),
        "host" => check_array::<Host>(r, name, value),
        "link" => check_array::<Link>(r, name, value),
        "expect" => check_array::<Expect>(r, name, value),
        "step" => check_array::<Step>(r, name, value),
        other => {
            let help = match closest(other, SECTIONS) {
                Some(s) => format!(
                    "did you mean `{s}`? The sections are: {}",
                    SECTIONS.join(", ")
                ),
                None => format!("remove it; the sections are: {}", SECTIONS.join(", ")),
            };
            r.error(key.span(), format!("unknown section `{other}`"), help);
        }
    }
}

fn check_table<'de, T: Deserialize<'de>>(
    r: &mut Reporter<'_>,
    label: &str,
    value: &Spanned<DeValue<'de>>,
) {
    if !value.get_ref().is_table() {
        r.error(
            value.span(),
            format!(
                "{label} must be a table, found {}",
                value.get_ref().type_str()
            ),
            format!("write it as a table: {label} on a line of its own, then its keys"),
        );
        return;
    }
    if let Err(e) = T::deserialize(ValueDeserializer::from(value.clone())) {
        report_de_error(r, label, value.get_ref(), &e);
    }
}

fn check_array<'de, T: Deserialize<'de>>(
    r: &mut Reporter<'_>,
    name: &str,
    value: &Spanned<DeValue<'de>>,
) {
    let label = format!("[[{name}]]");
    let Some(items) = value.get_ref().as_array() else {
        r.error(
            value.span(),
            format!(
                "`{name}` must be a list of tables, found {}",
                value.get_ref().type_str()
            ),
            format!("start each entry with {label} (two brackets), not [{name}]"),
        );
        return;
    };
    for item in items.iter() {
        if !item.get_ref().is_table() {
            r.error(
                item.span(),
                format!(
                    "each `{name}` entry must be a table, found {}",
                    item.get_ref().type_str()
                ),
                format!("start each entry with {label}"),
            );
            continue;
        }
        if let Err(e) = T::deserialize(ValueDeserializer::from(item.clone())) {
            report_de_error(r, &label, item.get_ref(), &e);
        }
    }
}

/// Rewrites serde's message into one that says where and how to fix it.
fn report_de_error(r: &mut Reporter<'_>, label: &str, value: &DeValue<'_>, e: &toml::de::Error) {
    let span = e.span().unwrap_or(0..0);
    let msg = e.message().trim();
    let ticked: Vec<&str> = msg.split('`').skip(1).step_by(2).collect();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let known: Vec<&str> = ticked.iter().skip(1).copied().collect();
        let list = known.join(", ");
        let help = match closest(field, known.iter().copied()) {
            Some(k) => format!("did you mean `{k}`? Known keys here: {list}"),
            None if known.is_empty() => "remove it: this table takes no keys".to_string(),
            None => format!("remove it or use one of the known keys: {list}"),
        };
        r.error(span, format!("unknown key `{field}` in {label}"), help);
    } else if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        r.error(
            span,
            format!("{label} is missing the required key `{field}`"),
            format!("add `{field} = ...` to this table ({})", key_help(field)),
        );
    } else if msg.starts_with("unknown variant `") {
        let got = ticked.first().copied().unwrap_or_default();
        let expected: Vec<&str> = ticked.iter().skip(1).copied().collect();
        let key = key_at(value, &span).unwrap_or_else(|| "value".to_string());
        r.error(
            span,
            format!("unknown {key} `{got}` in {label}"),
            format!("use one of: {}", expected.join(", ")),
        );
    } else {
        let key = key_at(value, &span);
        let (message, help) = match &key {
            Some(k) => (
                format!("bad value for `{k}` in {label}: {msg}"),
                key_help(k),
            ),
            None => (
                format!("bad value in {label}: {msg}"),
                "see docs/topology.md".to_string(),
            ),
        };
        r.error(span, message, help);
    }
}

/// The key whose value sits exactly at `span`, searched through nested tables and arrays.
fn key_at(value: &DeValue<'_>, span: &Range<usize>) -> Option<String> {
    match value {
        DeValue::Table(t) => t.iter().find_map(|(k, v)| {
            if v.span() == *span {
                Some(k.get_ref().to_string())
            } else {
                key_at(v.get_ref(), span)
            }
        }),
        DeValue::Array(a) => a.iter().find_map(|v| key_at(v.get_ref(), span)),
        _ => None,
    }
}

/// What a key expects, for help lines.
fn key_help(key: &str) -> String {
    match key {
        "name" => "a name: a lowercase letter, then lowercase letters, digits or `-`, e.g. \"h1\"",
        "mtu" => {
            "an MTU: an integer from 68 to 65535, e.g. mtu = 9000 (in [overlay] also \"auto\")"
        }
        "subnet" => "a subnet inside 198.18.0.0/16, e.g. \"198.18.1.0/24\"",
        "range" => "a subnet inside 198.19.0.0/16, e.g. \"198.19.0.0/16\"",
        "switches" | "containers" => "a list of node names, e.g. [\"sw1\"]",
        "endpoints" => "a list of two node names, e.g. [\"h1\", \"sw1\"]",
        "addresses" => {
            "a list of addresses, one per end that is not a switch, e.g. [\"198.18.1.10/24\"]"
        }
        "gateway" | "via" => "an address like \"198.18.1.1\" or a node name like \"r1\"",
        "routes" => "a list like [{ dst = \"198.18.2.0/24\", via = \"r1\" }]",
        "dst" => "a subnet like \"198.18.2.0/24\" or \"default\"",
        "kind" => {
            "in [[expect]]: reach, mtu, datapath, refused, no_plaintext, perf or stream; in impair: shape, cut, \
             partition, block, kill or restart"
        }
        "from" => "a node name",
        "to" => "a node name, \"node:iface\" or an address",
        "reachable" => "true or false",
        "group" | "left" | "right" => "a list of node names, e.g. [\"c1\", \"c2\", \"c3\"]",
        "pairs" => "a list of node pairs, e.g. [[\"c1\", \"c2\"], [\"c2\", \"c3\"]]",
        "over" => "\"overlay\" or \"underlay\"",
        "proto" => "icmp, tcp or udp",
        "above" => "frag_needed, local_limit, dropped or fragmented",
        "datapath" => "fast, sleeve, vxlan or odp",
        "reason" => "a piece of text the router's reason must contain",
        "within" | "duration" => "a duration like \"5s\" (ms, s)",
        "test" => "tcp_bw, tcp_lat, udp_bw, udp_lat or loss",
        "min" | "max" => {
            "an absolute bound like \"100mbit\", \"2ms\" or \"1%\", or a share of the native \
             underlay like \"0.85x native\""
        }
        "repeats" => "how many runs to take the median of, e.g. 3",
        "until" => "the name of a later [[step]]",
        "impair" => {
            "a table like { kind = \"block\", node = \"h2\", proto = \"udp\", port = 6784 }"
        }
        "heal" => "\"all\"",
        "link" => "a list of two node names, e.g. [\"h1\", \"sw1\"]",
        "node" => "a node name",
        "port" => "a port number, e.g. 6784",
        "password" => "a string",
        "rate" => "a rate like \"100mbit\" (bit, kbit, mbit, gbit)",
        "delay" | "jitter" => "a duration like \"10ms\" (ns, us, ms, s)",
        "loss" | "loss_correlation" | "reorder" | "duplicate" | "corrupt" => {
            "a percentage like \"1%\""
        }
        "distribution" => "uniform, normal or pareto",
        "limit" => "a queue limit in packets, e.g. 1000",
        "profile" => "a profile name like \"azure-d2\" (see docs/shaping.md)",
        "shape" => "a table like { rate = \"100mbit\", delay = \"10ms\", loss = \"1%\" }",
        "a_to_b" | "b_to_a" => "a table of the same keys as `shape`, e.g. { delay = \"5ms\" }",
        "seed" => "an integer seed, e.g. 42",
        "needs" => "a list of kernel features, e.g. [\"netem\"] (netsim doctor lists them)",
        _ => "see docs/topology.md",
    }
    .to_string()
}

/// A diagnostic for a file that could not be read.
pub(crate) fn unreadable(file: &Path, err: &std::io::Error) -> Diagnostic {
    Diagnostic::whole_file(
        file,
        format!("cannot read the topology file: {err}"),
        "check the path (topologies live in topologies/, e.g. topologies/three-host.toml) and \
         that the file is readable",
    )
}
