//! The shaping accuracy benchmark (`netsim bench-shaping`): for one backend, configured versus
//! measured rate, delay and loss on a two-host lab, and the throughput the emulated delay line
//! carries at 10 ms as a share of an unshaped link.
//!
//! Targets: rate within 5 %, delay within 5 % or 200 us (whichever is larger), loss within
//! 20 % relative.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::icmp::{self, PingOptions};
use super::pair;
use super::perf::{PerfOptions, Test};
use crate::lab::shaping::Backend;
use crate::lab::{Lab, LabError, UpOptions};
use crate::model;

const H1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const H2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);

/// One line of the benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The backend measured.
    pub backend: String,
    /// What was measured (`rate`, `delay (min rtt / 2)`, ...).
    pub property: String,
    /// The configured value, as text.
    pub configured: String,
    /// The measured value, as text.
    pub measured: String,
    /// The error relative to the configured value, in percent.
    pub error_percent: f64,
    /// Whether the target is met.
    pub ok: bool,
}

fn plan(link_extra: &str) -> Result<model::Plan, LabError> {
    let src = format!(
        "[lab]\nname = \"bench-shaping\"\nseed = 1\n[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n\
         [[link]]\nendpoints = [\"h1\", \"h2\"]\nsubnet = \"198.18.1.0/30\"\n{link_extra}\n"
    );
    model::parse(&src, Path::new("bench-shaping.toml"))
        .and_then(|t| model::plan(&t))
        .map_err(|d| LabError::Plan {
            lab: "bench-shaping".into(),
            reason: d.to_string(),
        })
}

async fn lab(shape: &str, backend: Backend) -> Result<Lab, LabError> {
    let opts = UpOptions {
        backend: Some(backend),
        ..Default::default()
    };
    Lab::up(plan(shape)?, opts).await
}

fn task(e: impl std::fmt::Display) -> LabError {
    LabError::Task {
        lab: "bench-shaping".into(),
        what: e.to_string(),
    }
}

async fn tcp_bw(lab: &Lab, secs: u64) -> Result<f64, LabError> {
    let (h1, h2) = (lab.node("h1"), lab.node("h2"));
    let (Some(h1), Some(h2)) = (h1, h2) else {
        return Err(task("bench lab has no h1/h2"));
    };
    let opts = PerfOptions {
        duration: Duration::from_secs(secs),
        ..PerfOptions::for_test(Test::TcpBw)
    };
    let (r, _) = pair::run(&h2, H2, &h1, Test::TcpBw, opts)
        .await
        .map_err(task)?;
    Ok(r.bytes_per_sec.unwrap_or(0.0) * 8.0)
}

async fn rtts(lab: &Lab, count: u16, interval: Duration) -> Result<Vec<u64>, LabError> {
    let Some(h1) = lab.node("h1") else {
        return Err(task("bench lab has no h1"));
    };
    let opts = PingOptions {
        count,
        interval,
        timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let r = h1
        .run(move || async move { icmp::ping(H2, &opts) })
        .await?
        .map_err(task)?;
    let mut v = r.rtt_us;
    v.sort_unstable();
    Ok(v)
}

/// Sends `n` UDP datagrams h1 -> h2 and returns the share that did not arrive.
async fn udp_loss(lab: &Lab, n: u32) -> Result<f64, LabError> {
    let (Some(h1), Some(h2)) = (lab.node("h1"), lab.node("h2")) else {
        return Err(task("bench lab has no h1/h2"));
    };
    let server = h2.run(move || async move {
        let sock = UdpSocket::bind((H2, 7300))?;
        // Wait long for the first datagram (the client's thread may start late on a busy
        // machine), then stop once the stream has been quiet for a second.
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut got = 0u32;
        let mut buf = [0u8; 64];
        while sock.recv(&mut buf).is_ok() {
            got += 1;
            sock.set_read_timeout(Some(Duration::from_millis(1000)))?;
        }
        Ok::<_, std::io::Error>(got)
    });
    let client = h1.run(move || async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sock = UdpSocket::bind((H1, 0))?;
        for i in 0..n {
            sock.send_to(&i.to_be_bytes(), (H2, 7300))?;
            if i % 32 == 0 {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        Ok::<_, std::io::Error>(())
    });
    let (got, sent) = futures::join!(server, client);
    sent?.map_err(task)?;
    let got = got?.map_err(task)?;
    Ok(1.0 - f64::from(got) / f64::from(n))
}

fn row(
    backend: Backend,
    property: &str,
    configured: String,
    measured: String,
    err: f64,
    ok: bool,
) -> Row {
    Row {
        backend: backend.name().into(),
        property: property.into(),
        configured,
        measured,
        error_percent: (err * 1000.0).round() / 10.0,
        ok,
    }
}

/// Runs the benchmark for `backend`, printing each row to stderr as it comes.
pub async fn run(backend: Backend) -> Result<Vec<Row>, LabError> {
    let mut rows = Vec::new();
    let mut push = |r: Row| {
        eprintln!("{}", render_row(&r));
        rows.push(r);
    };
    // Baseline: an unshaped link's round trip and throughput.
    let base = lab("", backend).await?;
    let base_rtt = rtts(&base, 20, Duration::from_millis(20)).await?;
    let base_min = base_rtt.first().copied().unwrap_or(0);
    let base_bw = tcp_bw(&base, 3).await?;
    base.down().await?;

    for mbit in [10u64, 100, 1000] {
        let l = lab(&format!("shape = {{ rate = \"{mbit}mbit\" }}"), backend).await?;
        let bw = tcp_bw(&l, 3).await?;
        l.down().await?;
        let want = mbit as f64 * 1e6;
        let err = (bw - want) / want;
        push(row(
            backend,
            "rate (tcp_bw)",
            format!("{mbit} Mbit/s"),
            format!("{:.1} Mbit/s", bw / 1e6),
            err,
            err.abs() <= 0.05,
        ));
    }
    for ms in [1u64, 10, 100] {
        let l = lab(&format!("shape = {{ delay = \"{ms}ms\" }}"), backend).await?;
        let count = if ms >= 100 { 10 } else { 30 };
        let v = rtts(&l, count, Duration::from_millis(20)).await?;
        l.down().await?;
        let want_us = 2.0 * ms as f64 * 1000.0;
        let min = v.first().copied().unwrap_or(0) as f64;
        let med = v.get(v.len() / 2).copied().unwrap_or(0) as f64;
        // Judged net of the unshaped link's own round trip (the stacks and veths, which no
        // shaping adds), shown with the raw figure.
        let base = base_min as f64;
        for (what, got) in [("delay (min rtt)", min), ("delay (median rtt)", med)] {
            let net = got - base;
            let err = (net - want_us) / want_us;
            let ok = (net - want_us).abs() <= (0.05 * want_us).max(200.0);
            push(row(
                backend,
                what,
                format!("{:.1} ms rtt", want_us / 1000.0),
                format!("{:.3} ms ({:.3} ms net)", got / 1000.0, net / 1000.0),
                err,
                ok,
            ));
        }
    }
    for pct in [1u32, 10] {
        let l = lab(
            &format!("shape = {{ a_to_b = {{ loss = \"{pct}%\" }} }}"),
            backend,
        )
        .await?;
        let loss = udp_loss(&l, 20_000).await?;
        l.down().await?;
        let want = f64::from(pct) / 100.0;
        let err = (loss - want) / want;
        push(row(
            backend,
            "loss (udp, 20000 datagrams)",
            format!("{pct} %"),
            format!("{:.2} %", loss * 100.0),
            err,
            err.abs() <= 0.2,
        ));
    }
    // What a 10 ms link carries compared with an unshaped one.
    let l = lab("shape = { delay = \"10ms\" }", backend).await?;
    let bw = tcp_bw(&l, 5).await?;
    l.down().await?;
    let share = if base_bw > 0.0 { bw / base_bw } else { 0.0 };
    push(Row {
        backend: backend.name().into(),
        property: "throughput at 10 ms delay vs unshaped".into(),
        configured: format!("unshaped {:.0} Mbit/s", base_bw / 1e6),
        measured: format!("{:.0} Mbit/s ({:.0} %)", bw / 1e6, share * 100.0),
        error_percent: ((share - 1.0) * 1000.0).round() / 10.0,
        ok: true,
    });
    push(Row {
        backend: backend.name().into(),
        property: "unshaped min rtt (for reference)".into(),
        configured: "-".into(),
        measured: format!("{:.3} ms", base_min as f64 / 1000.0),
        error_percent: 0.0,
        ok: true,
    });
    Ok(rows)
}

fn render_row(r: &Row) -> String {
    format!(
        "| {} | {} | {} | {} | {:+.1} % | {} |",
        r.backend,
        r.property,
        r.configured,
        r.measured,
        r.error_percent,
        if r.ok { "ok" } else { "MISS" }
    )
}

/// The rows as a Markdown table.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from(
        "| backend | property | configured | measured | error | target |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(out, "{}", render_row(r));
    }
    out
}
