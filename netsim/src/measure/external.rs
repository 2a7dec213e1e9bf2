//! The same measurements through Debian's qperf and iperf3, to cross-check the built-in probes.
//!
//! These are independent tools by design: if netsim's own figures and theirs agree, both can be
//! trusted. They are optional: [`available`] says whether a tool is installed, and callers skip
//! the cross-check (saying so) where it is not.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

use super::perf::{PerfOptions, Test};
use crate::lab::NodeHandle;

/// An external measurement tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    /// qperf (tcp_bw, tcp_lat, udp_bw, udp_lat).
    Qperf,
    /// iperf3 (TCP throughput).
    Iperf3,
}

impl Tool {
    /// The program's name.
    pub fn program(self) -> &'static str {
        match self {
            Tool::Qperf => "qperf",
            Tool::Iperf3 => "iperf3",
        }
    }
}

/// Why an external measurement failed.
#[derive(Debug, Error)]
pub enum ExternalError {
    /// The tool is not installed.
    #[error("{0} is not installed: install Debian's `{0}` package (ci/setup does)")]
    Missing(&'static str),
    /// Starting or running it failed.
    #[error("{tool} in node {node}: {what}")]
    Run {
        /// The program.
        tool: &'static str,
        /// The node.
        node: String,
        /// What went wrong.
        what: String,
    },
}

/// Where `tool` is installed, if it is.
pub fn available(tool: Tool) -> Option<PathBuf> {
    crate::tools::find_program(tool.program())
}

/// A server process, in a process group of its own, killed with its group when dropped: qperf's
/// server forks a child per test, which would otherwise outlive it (as an orphan that finishes
/// its test on its own, seconds later).
struct ServerGuard(Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        // The group's id is the server's pid (`process_group(0)` at spawn), and it holds only
        // the server and what it forked.
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_err(tool: Tool, node: &NodeHandle, what: impl Into<String>) -> ExternalError {
    ExternalError::Run {
        tool: tool.program(),
        node: node.name().to_string(),
        what: what.into(),
    }
}

fn start_server(
    tool: Tool,
    node: &NodeHandle,
    args: &[String],
) -> Result<ServerGuard, ExternalError> {
    let program = available(tool).ok_or(ExternalError::Missing(tool.program()))?;
    let mut cmd = node.command(program);
    cmd.args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = node
        .spawn_command(cmd)
        .map_err(|e| run_err(tool, node, format!("cannot start the server: {e}")))?;
    Ok(ServerGuard(child))
}

/// Runs a client until its output reads as a result, or `patience` passes (the server may
/// still be starting: the client then fails to connect, and is run again).
async fn run_client<T>(
    tool: Tool,
    node: &NodeHandle,
    args: Vec<String>,
    patience: Duration,
    read: impl Fn(&Output) -> Result<T, String>,
) -> Result<T, ExternalError> {
    let program = available(tool).ok_or(ExternalError::Missing(tool.program()))?;
    let started = Instant::now();
    loop {
        let mut cmd = node.command(&program);
        cmd.args(&args).stdin(Stdio::null());
        let output = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .map_err(|e| run_err(tool, node, format!("client thread failed: {e}")))?
            .map_err(|e| run_err(tool, node, format!("cannot run the client: {e}")))?;
        let outcome = if output.status.success() {
            read(&output)
        } else {
            Err(format!(
                "client failed ({}): {} {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                String::from_utf8_lossy(&output.stdout).trim()
            ))
        };
        match outcome {
            Ok(value) => return Ok(value),
            Err(why) if started.elapsed() > patience => return Err(run_err(tool, node, why)),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// iperf3 TCP throughput from `client` to `server` listening on `addr`, in bytes per second
/// as the receiver counted them. Takes the built-in probe's settings, so both measure the same
/// thing: `duration` (whole seconds, at least one), `msg_size` (iperf3's `-l`, the size of each
/// write and read) and `cpus` (iperf3's `-A client,server`).
pub async fn iperf3_tcp_bw(
    server: &NodeHandle,
    addr: Ipv4Addr,
    client: &NodeHandle,
    opts: &PerfOptions,
) -> Result<f64, ExternalError> {
    let port = "5201".to_string();
    let _server = start_server(
        Tool::Iperf3,
        server,
        &[
            "-s".into(),
            "-1".into(),
            "-B".into(),
            addr.to_string(),
            "-p".into(),
            port.clone(),
        ],
    )?;
    run_client(
        Tool::Iperf3,
        client,
        iperf3_client_args(addr, &port, opts),
        Duration::from_secs(3),
        |output| parse_iperf3_json(&output.stdout),
    )
    .await
}

/// The iperf3 client's command line for `opts`.
fn iperf3_client_args(addr: Ipv4Addr, port: &str, opts: &PerfOptions) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-c".into(),
        addr.to_string(),
        "-p".into(),
        port.into(),
        "-t".into(),
        whole_seconds(opts.duration),
        "-l".into(),
        opts.msg_size.max(1).to_string(),
        "-J".into(),
    ];
    if let Some(cpus) = opts.cpus {
        args.push("-A".into());
        args.push(format!("{},{}", cpus.client, cpus.server));
    }
    args
}

/// Both tools take whole seconds.
fn whole_seconds(duration: Duration) -> String {
    duration.as_secs().max(1).to_string()
}

/// The receiver's throughput in bytes per second from iperf3's `-J` output.
pub fn parse_iperf3_json(stdout: &[u8]) -> Result<f64, String> {
    let value: serde_json::Value =
        serde_json::from_slice(stdout).map_err(|e| format!("unreadable JSON output: {e}"))?;
    if let Some(error) = value["error"].as_str() {
        return Err(format!("iperf3 reported: {error}"));
    }
    value["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bits| bits / 8.0)
        .ok_or_else(|| "no end.sum_received.bits_per_second in the output".to_string())
}

/// One qperf figure: bandwidth in bytes per second, or latency in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum QperfFigure {
    /// Bytes per second (`bw`, or `recv_bw` for UDP).
    Bandwidth(f64),
    /// Microseconds.
    Latency(f64),
}

/// Runs one qperf test from `client` against a qperf server started in `server`, with the
/// built-in probe's settings: `duration` (whole seconds, at least one), `msg_size` (qperf's
/// `--msg_size`) and `cpus` (`--loc_cpu_affinity`, `--rem_cpu_affinity`).
pub async fn qperf(
    server: &NodeHandle,
    addr: Ipv4Addr,
    client: &NodeHandle,
    test: Test,
    opts: &PerfOptions,
) -> Result<QperfFigure, ExternalError> {
    let port = "19765".to_string();
    let _server = start_server(Tool::Qperf, server, &["--listen_port".into(), port.clone()])?;
    run_client(
        Tool::Qperf,
        client,
        qperf_client_args(addr, &port, test, opts),
        Duration::from_secs(3),
        |output| parse_qperf(&String::from_utf8_lossy(&output.stdout), test),
    )
    .await
}

/// The qperf client's command line for `test` with `opts`.
fn qperf_client_args(addr: Ipv4Addr, port: &str, test: Test, opts: &PerfOptions) -> Vec<String> {
    let mut args: Vec<String> = vec![
        addr.to_string(),
        "--listen_port".into(),
        port.into(),
        "--time".into(),
        whole_seconds(opts.duration),
        "--msg_size".into(),
        opts.msg_size.max(1).to_string(),
    ];
    if let Some(cpus) = opts.cpus {
        // qperf numbers CPUs from 1 (0 means "any"), whatever its help text says: `-lca 1`
        // leaves the process with Cpus_allowed_list 0.
        args.push("--loc_cpu_affinity".into());
        args.push((cpus.client + 1).to_string());
        args.push("--rem_cpu_affinity".into());
        args.push((cpus.server + 1).to_string());
    }
    args.push(test.name().into());
    args
}

/// Reads qperf's figure for `test` from its output (`bw = 488 MB/sec`, `recv_bw = ...`,
/// `latency = 10.4 us`).
pub fn parse_qperf(text: &str, test: Test) -> Result<QperfFigure, String> {
    let key = match test {
        Test::TcpBw => "bw",
        Test::UdpBw => "recv_bw",
        Test::TcpLat | Test::UdpLat => "latency",
    };
    let line = text
        .lines()
        .find(|l| l.split('=').next().map(str::trim) == Some(key))
        .ok_or_else(|| format!("no `{key} =` line in qperf's output: {text:?}"))?;
    let value = line.split('=').nth(1).unwrap_or("").trim();
    let mut parts = value.split_whitespace();
    let number: f64 = parts
        .next()
        .and_then(|n| n.replace(',', "").parse().ok())
        .ok_or_else(|| format!("no number in {line:?}"))?;
    let unit = parts.next().unwrap_or("");
    let scaled = match unit {
        "bytes/sec" => QperfFigure::Bandwidth(number),
        "KB/sec" => QperfFigure::Bandwidth(number * 1e3),
        "MB/sec" => QperfFigure::Bandwidth(number * 1e6),
        "GB/sec" => QperfFigure::Bandwidth(number * 1e9),
        "ns" => QperfFigure::Latency(number / 1e3),
        "us" => QperfFigure::Latency(number),
        "ms" => QperfFigure::Latency(number * 1e3),
        "sec" => QperfFigure::Latency(number * 1e6),
        other => return Err(format!("unknown unit {other:?} in {line:?}")),
    };
    Ok(scaled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(
        "tcp_bw:\n    bw  =  488 MB/sec\n",
        Test::TcpBw,
        QperfFigure::Bandwidth(488e6)
    )]
    #[case(
        "tcp_bw:\n    bw  =  1.2 GB/sec\n",
        Test::TcpBw,
        QperfFigure::Bandwidth(1.2e9)
    )]
    #[case(
        "udp_bw:\n    send_bw  =  554 MB/sec\n    recv_bw  =  363 MB/sec\n",
        Test::UdpBw,
        QperfFigure::Bandwidth(363e6)
    )]
    #[case(
        "tcp_lat:\n    latency  =  10.4 us\n",
        Test::TcpLat,
        QperfFigure::Latency(10.4)
    )]
    #[case(
        "udp_lat:\n    latency  =  1.02 ms\n",
        Test::UdpLat,
        QperfFigure::Latency(1020.0)
    )]
    fn qperf_output_is_read(#[case] text: &str, #[case] test: Test, #[case] want: QperfFigure) {
        let got = parse_qperf(text, test).expect("parses");
        match (got, want) {
            (QperfFigure::Bandwidth(a), QperfFigure::Bandwidth(b))
            | (QperfFigure::Latency(a), QperfFigure::Latency(b)) => {
                assert!((a - b).abs() < 1e-6 * b.abs().max(1.0), "{a} vs {b}")
            }
            _ => panic!("{got:?} is not {want:?}"),
        }
    }

    #[rstest]
    #[case("")]
    #[case("tcp_bw:\n    bw  =  fast\n")]
    #[case("tcp_bw:\n    bw  =  3 furlongs/sec\n")]
    fn bad_qperf_output_is_an_error(#[case] text: &str) {
        assert!(parse_qperf(text, Test::TcpBw).is_err());
    }

    fn pinned(msg_size: usize) -> PerfOptions {
        PerfOptions {
            duration: Duration::from_millis(1500),
            msg_size,
            cpus: Some(crate::measure::perf::CpuPin {
                client: 0,
                server: 1,
            }),
            ..PerfOptions::for_test(Test::TcpBw)
        }
    }

    #[test]
    fn tools_get_the_built_in_probes_settings() {
        let addr = Ipv4Addr::new(198, 18, 0, 2);
        assert_eq!(
            iperf3_client_args(addr, "5201", &pinned(65536)).join(" "),
            "-c 198.18.0.2 -p 5201 -t 1 -l 65536 -J -A 0,1"
        );
        // qperf numbers CPUs from 1.
        assert_eq!(
            qperf_client_args(addr, "19765", Test::TcpBw, &pinned(65536)).join(" "),
            "198.18.0.2 --listen_port 19765 --time 1 --msg_size 65536 \
             --loc_cpu_affinity 1 --rem_cpu_affinity 2 tcp_bw"
        );
        let unpinned = PerfOptions::for_test(Test::TcpBw);
        assert!(!iperf3_client_args(addr, "5201", &unpinned).contains(&"-A".to_string()));
        assert!(!qperf_client_args(addr, "19765", Test::TcpBw, &unpinned)
            .iter()
            .any(|a| a.contains("affinity")));
    }

    #[test]
    fn iperf3_json_is_read() {
        let json = br#"{"end": {"sum_received": {"bits_per_second": 8000000000.0}}}"#;
        assert_eq!(parse_iperf3_json(json), Ok(1e9));
        assert!(parse_iperf3_json(b"{}").is_err());
        assert!(parse_iperf3_json(b"not json").is_err());
    }
}
