//! The router's local API: a Unix socket speaking JSON lines, one request per line, one
//! answer per line.
//!
//! Requests: `{"cmd":"status"}`, `{"cmd":"attach","netns":"NAME|PATH","addr":"A.B.C.D"?}`,
//! `{"cmd":"detach","netns":"..."}`, `{"cmd":"peers","op":"add"|"remove","addr":"IP"}`
//! (`"force":true` removes a peer that is still connected),
//! `{"cmd":"wait","connections":N,"timeout_ms":T}` (answers once the router has N
//! established connections or T ms passed: `"reached"` says which, `"connections"` lists the
//! peers connected).
//! Answers: `{"ok":true,...}` or `{"ok":false,"error":"..."}`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// A request to the API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The router's status.
    Status,
    /// Attach a container namespace.
    Attach {
        /// Namespace name (under /run/netns) or path.
        netns: String,
        /// A specific address, else one from IPAM.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        addr: Option<std::net::Ipv4Addr>,
    },
    /// Detach a container namespace.
    Detach {
        /// Namespace name or path.
        netns: String,
    },
    /// Add or remove a peer address.
    Peers {
        /// `add` or `remove`.
        op: PeerOp,
        /// The peer's underlay address.
        addr: std::net::IpAddr,
        /// With `remove`: remove the peer even if it is still connected (see
        /// `Router::remove_peer`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    /// Wait until the router has `connections` established connections (at most
    /// `timeout_ms`).
    Wait {
        /// How many connections to wait for.
        connections: usize,
        /// The longest wait, in milliseconds.
        timeout_ms: u64,
    },
}

/// Peer operation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PeerOp {
    /// Start dialling.
    Add,
    /// Forget a departed peer: stop dialling it, drop it from the topology everywhere and free
    /// its IPAM blocks.
    Remove,
}

/// Something that answers API requests.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request with a JSON value (an object with `ok`).
    fn handle(&self, req: Request) -> impl std::future::Future<Output = serde_json::Value> + Send;
}

/// The default socket path of router `name`.
pub fn default_path(name: &str) -> PathBuf {
    Path::new("/run/overlay").join(format!("{name}.sock"))
}

/// Serves the API on `path` (replacing a stale socket file) until the task is dropped.
pub async fn serve<H: Handler>(
    path: &Path,
    handler: std::sync::Arc<H>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut lines = BufReader::new(rd).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let answer = match serde_json::from_str::<Request>(&line) {
                        Ok(req) => handler.handle(req).await,
                        Err(e) => {
                            serde_json::json!({"ok": false, "error": format!("bad request: {e}")})
                        }
                    };
                    let mut out = answer.to_string();
                    out.push('\n');
                    if wr.write_all(out.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    }))
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error(
        "cannot reach the router's API at {path}: {source} (is the router running? pass --api)"
    )]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("API exchange on {path} failed: {what}")]
    Exchange {
        /// Socket path.
        path: PathBuf,
        /// What went wrong.
        what: String,
    },
    /// The router answered with an error.
    #[error("{0}")]
    Refused(String),
}

/// Sends one request and returns the answer (an error when `ok` is false).
pub async fn call(path: &Path, req: &Request) -> Result<serde_json::Value, ClientError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    let ex = |what: String| ClientError::Exchange {
        path: path.to_path_buf(),
        what,
    };
    let (rd, mut wr) = stream.into_split();
    let mut line = serde_json::to_string(req).map_err(|e| ex(e.to_string()))?;
    line.push('\n');
    wr.write_all(line.as_bytes())
        .await
        .map_err(|e| ex(e.to_string()))?;
    let mut lines = BufReader::new(rd).lines();
    let answer = lines
        .next_line()
        .await
        .map_err(|e| ex(e.to_string()))?
        .ok_or_else(|| ex("the router closed without answering".into()))?;
    let v: serde_json::Value = serde_json::from_str(&answer).map_err(|e| ex(e.to_string()))?;
    if v.get("ok").and_then(|o| o.as_bool()) == Some(true) {
        Ok(v)
    } else {
        Err(ClientError::Refused(
            v.get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("the router refused without a reason")
                .to_string(),
        ))
    }
}

/// [`call`] from synchronous code (its own current-thread runtime).
pub fn call_blocking(path: &Path, req: &Request) -> Result<serde_json::Value, ClientError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Exchange {
            path: path.to_path_buf(),
            what: format!("runtime: {e}"),
        })?;
    rt.block_on(call(path, req))
}

/// Renders a status answer for people: the router, its connections with their counters, the
/// peers it knows, refusals and containers.
pub fn render_status(v: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let r = &v["router"];
    let text = |x: &serde_json::Value| x.as_str().unwrap_or("?").to_string();
    let _ = writeln!(
        out,
        "router {} (short id {}, {}), MTU {} (underlay {}), range {}, datapath {}",
        text(&r["name"]),
        r["short_id"],
        if r["encrypted"].as_bool() == Some(true) {
            "encrypted"
        } else {
            "unencrypted"
        },
        v["mtu"],
        v["underlay_mtu"],
        text(&v["range"]),
        text(&v["datapath"]),
    );
    let fast = &v["fast_path"];
    if fast.is_object() {
        if fast["available"].as_bool() == Some(true) {
            let _ = writeln!(out, "fast path: kernel vxlan on UDP {}", fast["port"]);
        } else {
            let _ = writeln!(out, "fast path: unavailable: {}", text(&fast["reason"]));
        }
    }
    let _ = writeln!(out, "connections:");
    for c in r["connections"].as_array().into_iter().flatten() {
        let s = &c["stats"];
        let p = &c["path"];
        let path = if p.is_object() {
            let rtt = p["heartbeat_rtt_us"]
                .as_u64()
                .map(|us| format!(", heartbeat rtt {:.2} ms", us as f64 / 1000.0))
                .unwrap_or_default();
            format!("for {} s: {}{rtt}", p["since_s"], text(&p["reason"]))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {:<10} {:<15} {:<7} {:<9} {path}",
            text(&c["peer"]),
            text(&c["address"]),
            text(&c["datapath"]),
            if c["encrypted"].as_bool() == Some(true) {
                "encrypted"
            } else {
                "plain"
            },
        );
        let _ = writeln!(
            out,
            "  {:<10} sleeve: path MTU {} (overlay {}), tx {} rx {} frames, replayed {}, auth \
             failures {}, frag-needed {}{}",
            "",
            s["path_mtu"],
            s["overlay_mtu"],
            s["tx_frames"],
            s["rx_frames"],
            s["replayed"],
            s["auth_failures"],
            s["frag_needed_sent"],
            if s["healthy"].as_bool() == Some(true) {
                ""
            } else {
                ", UNHEALTHY"
            },
        );
    }
    let _ = writeln!(out, "peers:");
    for p in r["peers"].as_array().into_iter().flatten() {
        let conns: Vec<&str> = p["connections"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<10} short id {:<5} connected to {}",
            text(&p["name"]),
            p["short_id"],
            if conns.is_empty() {
                "nobody".to_string()
            } else {
                conns.join(", ")
            }
        );
    }
    let removed: Vec<&str> = r["removed_peers"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    if !removed.is_empty() {
        let _ = writeln!(out, "removed peers: {}", removed.join(", "));
    }
    let _ = writeln!(
        out,
        "refused {} (last: {}), handshake failures {}",
        r["refused"],
        r["last_refusal"].as_str().unwrap_or("none"),
        r["handshake_failures"],
    );
    let dp = &v["datapath_stats"];
    let _ = writeln!(
        out,
        "dropped: {} from unknown peers, {} malformed",
        dp["unknown_peer"], dp["malformed"]
    );
    let _ = writeln!(out, "containers:");
    for c in v["containers"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  {} {}", text(&c["netns"]), text(&c["addr"]));
    }
    out
}

/// Renders a `peers` answer for people: for `remove`, each peer removed, the blocks freed and
/// any warning; nothing for `add`.
pub fn render_peers_answer(v: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let Some(removed) = v["removed"].as_array() else {
        return out;
    };
    let addr = v["address"].as_str().unwrap_or("?");
    if removed.is_empty() {
        let _ = writeln!(
            out,
            "stopped dialling {addr} (no peer was ever seen there; no blocks freed)"
        );
    }
    for p in removed {
        let _ = writeln!(
            out,
            "removed peer {} (uid {:016x}) at {addr}: {} IPAM block(s) freed",
            p["name"].as_str().unwrap_or("?"),
            p["uid"].as_u64().unwrap_or(0),
            p["blocks_freed"],
        );
    }
    if let Some(w) = v["warning"].as_str() {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_renders_for_people() {
        let v = serde_json::json!({
            "ok": true, "ready": true, "mtu": 1450, "underlay_mtu": 1500,
            "range": "198.19.0.0/16", "datapath": "vxlan",
            "fast_path": {"available": true, "port": 6784},
            "datapath_stats": {"unknown_peer": 0, "malformed": 2, "tx_dropped": 0, "injected": 9},
            "containers": [{"netns": "/run/netns/c1", "addr": "198.19.32.0/16"}],
            "router": {
                "name": "h1", "short_id": 17, "encrypted": false, "refused": 1,
                "last_refusal": "198.18.1.3: the peer requires a password and this router has none",
                "handshake_failures": 0,
                "peers": [
                    {"name": "h1", "short_id": 17, "connections": ["h2"]},
                    {"name": "h2", "short_id": 4, "connections": ["h1"]},
                    {"name": "h3", "short_id": 9, "connections": []}
                ],
                "connections": [{
                    "peer": "h2", "address": "198.18.1.2", "datapath": "sleeve", "encrypted": false,
                    "path": {"datapath": "sleeve", "since_s": 4, "heartbeat_rtt_us": null,
                             "reason": "heartbeats on UDP 6784 unanswered for 4.0 s"},
                    "stats": {"path_mtu": 1500, "overlay_mtu": 1440, "tx_frames": 10,
                              "rx_frames": 12, "replayed": 0, "auth_failures": 0,
                              "frag_needed_sent": 0, "healthy": true}
                }, {
                    "peer": "h3", "address": "198.18.1.3", "datapath": "vxlan", "encrypted": false,
                    "path": {"datapath": "vxlan", "since_s": 61, "heartbeat_rtt_us": 512,
                             "reason": "heartbeats on UDP 6784 answered both ways"},
                    "stats": {"path_mtu": 1500, "overlay_mtu": 1440, "tx_frames": 3,
                              "rx_frames": 2, "replayed": 0, "auth_failures": 0,
                              "frag_needed_sent": 0, "healthy": true}
                }]
            }
        });
        insta::assert_snapshot!(render_status(&v));
    }

    #[test]
    fn peers_remove_answers_render_for_people() {
        let answers = [
            serde_json::json!({"ok": true}),
            serde_json::json!({"ok": true, "address": "198.18.1.3", "removed": [],
                "blocks_freed": 0, "was_target": true}),
            serde_json::json!({"ok": true, "address": "198.18.1.3", "blocks_freed": 2,
                "removed": [{"name": "h3", "uid": 0x1234, "blocks_freed": 2,
                             "was_connected": true}],
                "warning": "h3 still connected: ..."}),
        ];
        let text: Vec<String> = answers.iter().map(render_peers_answer).collect();
        insta::assert_snapshot!(text.join("--\n"));
    }

    #[test]
    fn requests_have_stable_json() {
        let reqs = [
            Request::Status,
            Request::Attach {
                netns: "c1".into(),
                addr: None,
            },
            Request::Attach {
                netns: "/run/netns/c2".into(),
                addr: Some(
                    "198.19.1.2"
                        .parse()
                        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                ),
            },
            Request::Detach { netns: "c1".into() },
            Request::Peers {
                op: PeerOp::Add,
                addr: std::net::IpAddr::from([198, 18, 1, 2]),
                force: false,
            },
            Request::Peers {
                op: PeerOp::Remove,
                addr: std::net::IpAddr::from([198, 18, 1, 3]),
                force: true,
            },
            Request::Wait {
                connections: 99,
                timeout_ms: 60_000,
            },
        ];
        let text: Vec<String> = reqs
            .iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default())
            .collect();
        insta::assert_snapshot!(text.join("\n"));
    }
}
