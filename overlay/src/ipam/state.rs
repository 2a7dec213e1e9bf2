//! The IPAM state file: JSON, written atomically (temporary file, fsync, rename, fsync of the
//! directory), so a crash leaves either the old or the new state, never half of one.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Ipam, IpamError};
use crate::config::Range;
use crate::wire::ipam::ClaimRepr;

/// Version of the state file's layout.
const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    format: u32,
    range: String,
    uid: u64,
    claims: Vec<SavedClaim>,
    allocations: BTreeMap<String, Ipv4Addr>,
    /// Own blocks recovered from gossip and not yet adopted (first addresses).
    #[serde(default)]
    recovered: Vec<Ipv4Addr>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedClaim {
    start: Ipv4Addr,
    size: u32,
    owner: u64,
    version: u64,
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> IpamError + 'a {
    move |source| IpamError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> IpamError {
    IpamError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read(path: &Path) -> Result<Option<StateFile>, IpamError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path, "read it")(e)),
    };
    let file: StateFile = serde_json::from_str(&text).map_err(|e| corrupt(path, e.to_string()))?;
    if file.format != FORMAT {
        return Err(corrupt(
            path,
            format!("format {} is not {FORMAT}", file.format),
        ));
    }
    Ok(Some(file))
}

/// The router uid saved in the state file at `path`, `None` when there is no file yet. A router
/// that wants its earlier claims back restarts with this uid.
pub fn state_uid(path: &Path) -> Result<Option<u64>, IpamError> {
    Ok(read(path)?.map(|f| f.uid))
}

impl Ipam {
    /// Writes the state (every known claim and this router's allocations) to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), IpamError> {
        let file = StateFile {
            format: FORMAT,
            range: self.range_text(),
            uid: self.me,
            claims: self
                .claims()
                .claims
                .into_iter()
                .map(|c| SavedClaim {
                    start: c.start,
                    size: c.size,
                    owner: c.owner,
                    version: c.version,
                })
                .collect(),
            allocations: self.allocs.clone(),
            recovered: self
                .recovered
                .iter()
                .map(|&i| Ipv4Addr::from(self.block_start(i)))
                .collect(),
        };
        let mut text =
            serde_json::to_string_pretty(&file).map_err(|e| corrupt(path, e.to_string()))?;
        text.push('\n');
        let name = path
            .file_name()
            .ok_or_else(|| corrupt(path, "the path names no file"))?;
        let mut tmp_name = name.to_os_string();
        tmp_name.push(".tmp");
        let tmp = path.with_file_name(tmp_name);
        let mut f = fs::File::create(&tmp).map_err(io(&tmp, "create it"))?;
        f.write_all(text.as_bytes()).map_err(io(&tmp, "write it"))?;
        f.sync_all().map_err(io(&tmp, "sync it"))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io(path, "rename the temporary file onto it"))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir, "sync its directory"))?;
        Ok(())
    }

    /// The state saved at `path` for router `me` over `range`; an empty state when there is no
    /// file yet. Refuses a file written for another range or uid.
    pub fn load(path: &Path, range: Range, me: u64) -> Result<Ipam, IpamError> {
        let mut ipam = Ipam::new(range, me)?;
        let Some(file) = read(path)? else {
            return Ok(ipam);
        };
        if file.range != ipam.range_text() {
            return Err(IpamError::Mismatch {
                path: path.to_path_buf(),
                what: "range",
                saved: file.range,
                configured: ipam.range_text(),
            });
        }
        if file.uid != me {
            return Err(IpamError::Mismatch {
                path: path.to_path_buf(),
                what: "router uid",
                saved: format!("{:016x}", file.uid),
                configured: format!("{me:016x}"),
            });
        }
        let claims: Vec<ClaimRepr> = file
            .claims
            .iter()
            .map(|c| ClaimRepr {
                start: c.start,
                size: c.size,
                owner: c.owner,
                version: c.version,
            })
            .collect();
        let merged = ipam.merge(&claims);
        if merged.ignored > 0 {
            return Err(corrupt(
                path,
                format!("{} claim(s) are not blocks of the range", merged.ignored),
            ));
        }
        // The saved claims are this router's own knowledge, not news from gossip.
        ipam.recovered.clear();
        for start in file.recovered {
            match ipam.block_of(start) {
                Some(i) if ipam.claims.get(&i).is_some_and(|c| c.owner == me) => {
                    ipam.recovered.insert(i);
                }
                _ => {
                    return Err(corrupt(
                        path,
                        format!("recovered block {start} is not this router's"),
                    ))
                }
            }
        }
        for (container, addr) in file.allocations {
            ipam.allocate_specific(&container, addr).map_err(|e| {
                corrupt(path, format!("allocation of {container:?} to {addr}: {e}"))
            })?;
        }
        Ok(ipam)
    }
}
