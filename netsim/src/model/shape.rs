//! Link shaping values: parsing the units a topology file (or the command line) writes, the
//! stable text plans show, and the named link profiles measured on public clouds.

use super::plan::{Distribution, Shape};

/// A named link profile: a rate and a one-way delay taken from a published measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Name used in `profile = "..."`.
    pub name: &'static str,
    /// Rate in bits per second.
    pub rate_bps: u64,
    /// One-way delay in nanoseconds (qperf's latency, which is already one-way).
    pub delay_ns: u64,
    /// MTU the profile implies, if not the default.
    pub mtu: Option<u32>,
    /// Where the figures come from (measured bandwidth, latency).
    pub source: &'static str,
}

/// Every profile, in the order docs/shaping.md lists them. Rates are the measured qperf
/// `tcp_bw` (bytes per second, 10^6 bytes to the MB) times 8; delays are the measured qperf
/// `tcp_lat`, which qperf reports one-way (half a round trip).
pub const PROFILES: &[Profile] = &[
    profile(
        "azure-a0",
        590_000,
        289_000,
        None,
        "Azure A0: 590 KB/s, 289 us",
    ),
    profile(
        "azure-a1",
        12_500_000,
        483_000,
        None,
        "Azure A1: 12.5 MB/s, 483 us",
    ),
    profile(
        "azure-a2",
        24_800_000,
        426_000,
        None,
        "Azure A2: 24.8 MB/s, 426 us",
    ),
    profile(
        "azure-a3",
        48_000_000,
        465_000,
        None,
        "Azure A3: 48 MB/s, 465 us",
    ),
    profile(
        "azure-a8",
        310_000_000,
        94_200,
        None,
        "Azure A8: 310 MB/s, 94.2 us",
    ),
    profile(
        "azure-d1",
        56_300_000,
        276_000,
        None,
        "Azure D1: 56.3 MB/s, 276 us",
    ),
    profile(
        "azure-d2",
        117_000_000,
        178_000,
        None,
        "Azure D2: 117 MB/s, 178 us",
    ),
    profile(
        "aws-t2-micro",
        126_000_000,
        196_000,
        None,
        "AWS t2.micro: 126 MB/s, 196 us",
    ),
    profile(
        "aws-t2-small",
        126_000_000,
        202_000,
        None,
        "AWS t2.small: 126 MB/s, 202 us",
    ),
    profile(
        "aws-t2-medium",
        126_000_000,
        124_000,
        None,
        "AWS t2.medium: 126 MB/s, 124 us",
    ),
    profile(
        "aws-m4-large",
        130_000_000,
        96_500,
        None,
        "AWS m4.large: 130 MB/s, 96.5 us",
    ),
    profile(
        "aws-m4-xlarge",
        267_000_000,
        83_500,
        None,
        "AWS m4.xlarge: 267 MB/s, 83.5 us",
    ),
    profile(
        "aws-m4-2xlarge",
        186_000_000,
        80_000,
        None,
        "AWS m4.2xlarge: 186 MB/s, 80 us",
    ),
    profile(
        "do-5",
        108_000_000,
        157_000,
        None,
        "DigitalOcean $5/month: 108 MB/s, 157 us",
    ),
    profile(
        "ec2-10g",
        1_200_000_000,
        48_100,
        Some(9000),
        "EC2 c3.8xlarge, 10 Gbit/s, jumbo frames: 1.2 GB/s, 48.1 us",
    ),
];

const fn profile(
    name: &'static str,
    bytes_per_sec: u64,
    latency_ns: u64,
    mtu: Option<u32>,
    source: &'static str,
) -> Profile {
    Profile {
        name,
        rate_bps: bytes_per_sec * 8,
        // qperf's tcp_lat is already one-way (half a round trip).
        delay_ns: latency_ns,
        mtu,
        source,
    }
}

/// The profile called `name`.
pub fn profile_named(name: &str) -> Option<&'static Profile> {
    PROFILES.iter().find(|p| p.name == name)
}

/// Splits `text` into a non-negative decimal number and its (lowercased) unit.
fn number_unit(text: &str) -> Result<(f64, String), String> {
    let t = text.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(end);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    if !value.is_finite() {
        return Err(format!("{text:?} is not a finite number"));
    }
    Ok((value, unit.trim().to_ascii_lowercase()))
}

/// Parses a rate: a number and `bit`, `kbit`, `mbit`, `gbit` or `tbit` (powers of 1000, bits
/// per second), e.g. `"100mbit"`, `"1.5gbit"`.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let (value, unit) = number_unit(text)?;
    let scale = match unit.as_str() {
        "bit" | "bps" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "tbit" => 1e12,
        _ => {
            return Err(format!(
                "unknown rate unit {unit:?} in {text:?} (use bit, kbit, mbit, gbit)"
            ))
        }
    };
    let bps = (value * scale).round();
    if bps < 8.0 {
        return Err(format!("rate {text:?} is below 8 bit/s"));
    }
    if bps > 1e13 {
        return Err(format!("rate {text:?} is above 10 tbit"));
    }
    Ok(bps as u64)
}

/// Parses a duration: a number and `ns`, `us`, `ms` or `s`, e.g. `"10ms"`, `"250us"`.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let (value, unit) = number_unit(text)?;
    let scale = match unit.as_str() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => {
            return Err(format!(
                "unknown time unit {unit:?} in {text:?} (use ns, us, ms, s)"
            ))
        }
    };
    let ns = (value * scale).round();
    if ns > 60e9 {
        return Err(format!("{text:?} is longer than a minute"));
    }
    Ok(ns as u64)
}

/// Parses a percentage, e.g. `"1%"`, `"0.5%"`, into parts per million.
pub fn parse_percent(text: &str) -> Result<u32, String> {
    let (value, unit) = number_unit(text)?;
    if unit != "%" {
        return Err(format!("{text:?} is not a percentage (write e.g. \"1%\")"));
    }
    if value > 100.0 {
        return Err(format!("{text:?} is above 100%"));
    }
    Ok((value * 10_000.0).round() as u32)
}

/// Parses a distribution name.
pub fn parse_distribution(text: &str) -> Result<Distribution, String> {
    match text {
        "uniform" => Ok(Distribution::Uniform),
        "normal" => Ok(Distribution::Normal),
        "pareto" => Ok(Distribution::Pareto),
        _ => Err(format!(
            "unknown distribution {text:?} (use uniform, normal or pareto)"
        )),
    }
}

fn trim_decimal(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// A rate as the topology file would write it (`100mbit`, `4.72mbit`).
pub fn format_rate(bps: u64) -> String {
    let v = bps as f64;
    if bps >= 1_000_000_000 {
        format!("{}gbit", trim_decimal(v / 1e9))
    } else if bps >= 1_000_000 {
        format!("{}mbit", trim_decimal(v / 1e6))
    } else if bps >= 1_000 {
        format!("{}kbit", trim_decimal(v / 1e3))
    } else {
        format!("{bps}bit")
    }
}

/// A duration in nanoseconds as the topology file would write it (`10ms`, `89us`).
pub fn format_duration(ns: u64) -> String {
    let v = ns as f64;
    if ns >= 1_000_000_000 {
        format!("{}s", trim_decimal(v / 1e9))
    } else if ns >= 1_000_000 {
        format!("{}ms", trim_decimal(v / 1e6))
    } else if ns >= 1_000 {
        format!("{}us", trim_decimal(v / 1e3))
    } else {
        format!("{ns}ns")
    }
}

/// Parts per million as a percentage (`1%`, `0.25%`).
pub fn format_ppm(ppm: u32) -> String {
    format!("{}%", trim_decimal(f64::from(ppm) / 10_000.0))
}

impl Shape {
    /// The shape as stable text: `rate 100mbit delay 10ms loss 1%`, or `clear`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(rate) = self.rate_bps {
            parts.push(format!("rate {}", format_rate(rate)));
        }
        if self.delay_ns > 0 {
            parts.push(format!("delay {}", format_duration(self.delay_ns)));
        }
        if self.jitter_ns > 0 {
            parts.push(format!(
                "jitter {} {}",
                format_duration(self.jitter_ns),
                self.distribution.name()
            ));
        }
        if self.loss_ppm > 0 {
            parts.push(format!("loss {}", format_ppm(self.loss_ppm)));
        }
        if self.loss_correlation_ppm > 0 {
            parts.push(format!(
                "loss-correlation {}",
                format_ppm(self.loss_correlation_ppm)
            ));
        }
        if self.reorder_ppm > 0 {
            parts.push(format!("reorder {}", format_ppm(self.reorder_ppm)));
        }
        if self.duplicate_ppm > 0 {
            parts.push(format!("duplicate {}", format_ppm(self.duplicate_ppm)));
        }
        if self.corrupt_ppm > 0 {
            parts.push(format!("corrupt {}", format_ppm(self.corrupt_ppm)));
        }
        if let Some(limit) = self.limit {
            parts.push(format!("limit {limit}"));
        }
        if parts.is_empty() {
            "clear".to_string()
        } else {
            parts.join(" ")
        }
    }

    /// Checks combinations that no backend can give a meaning to; returns what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.reorder_ppm > 0 && self.delay_ns == 0 {
            return Err("reordering needs a delay (reordered packets skip it)".into());
        }
        if self.loss_correlation_ppm > 0 && self.loss_ppm == 0 {
            return Err("loss_correlation needs a loss".into());
        }
        if self.distribution != Distribution::Uniform && self.jitter_ns == 0 {
            return Err("a distribution needs a jitter".into());
        }
        if self.limit == Some(0) {
            return Err("limit must be at least 1 packet".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_trip() {
        assert_eq!(parse_rate("100mbit"), Ok(100_000_000));
        assert_eq!(parse_rate("1.5Gbit"), Ok(1_500_000_000));
        assert_eq!(format_rate(4_720_000), "4.72mbit");
        assert_eq!(parse_duration("10ms"), Ok(10_000_000));
        assert_eq!(parse_duration("89.1us"), Ok(89_100));
        assert_eq!(format_duration(89_100), "89.1us");
        assert_eq!(parse_percent("0.25%"), Ok(2_500));
        assert_eq!(format_ppm(2_500), "0.25%");
        assert!(parse_rate("100mb").is_err());
        assert!(parse_percent("1").is_err());
        assert!(parse_percent("101%").is_err());
        assert!(parse_duration("-1ms").is_err());
    }

    #[test]
    fn profiles_take_qperf_one_way_latency_as_delay() {
        let d2 = profile_named("azure-d2");
        assert_eq!(
            d2.map(|p| (p.rate_bps, p.delay_ns)),
            Some((936_000_000, 178_000))
        );
        let a0 = profile_named("azure-a0");
        assert_eq!(a0.map(|p| p.rate_bps), Some(4_720_000));
    }
}
