//! Capture files, written with the `pcap-file` crate: pcapng when the name ends in `.pcapng`
//! (one interface description per captured interface, so a capture of several interfaces
//! keeps which frame crossed which), classic pcap otherwise (frames of all interfaces in one
//! stream). Timestamps are in nanoseconds in both.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, TsResolution};

use super::{CaptureError, Frame, SNAPLEN};

enum Format {
    Pcap(PcapWriter<BufWriter<File>>),
    PcapNg {
        writer: PcapNgWriter<BufWriter<File>>,
        ifaces: Vec<String>,
    },
}

/// A capture file being written.
pub struct CaptureFile {
    path: PathBuf,
    format: Format,
}

impl std::fmt::Debug for CaptureFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureFile")
            .field("path", &self.path)
            .finish()
    }
}

impl CaptureFile {
    /// Creates `path` for frames of interfaces `ifaces` (pcapng if it ends in `.pcapng`).
    pub fn create(path: &Path, ifaces: &[String]) -> Result<CaptureFile, CaptureError> {
        let err = |why: String| CaptureError::File {
            path: path.to_path_buf(),
            why,
        };
        let out = BufWriter::new(File::create(path).map_err(|e| err(e.to_string()))?);
        let pcapng = path.extension().is_some_and(|e| e == "pcapng");
        let format = if pcapng {
            let mut writer = PcapNgWriter::new(out).map_err(|e| err(e.to_string()))?;
            for iface in ifaces {
                let idb = InterfaceDescriptionBlock {
                    linktype: DataLink::ETHERNET,
                    snaplen: SNAPLEN,
                    options: vec![
                        InterfaceDescriptionOption::IfName(Cow::Borrowed(iface)),
                        // Timestamps in units of 10^-9 s.
                        InterfaceDescriptionOption::IfTsResol(9),
                    ],
                };
                writer
                    .write_pcapng_block(idb)
                    .map_err(|e| err(e.to_string()))?;
            }
            Format::PcapNg {
                writer,
                ifaces: ifaces.to_vec(),
            }
        } else {
            let header = PcapHeader {
                snaplen: SNAPLEN,
                datalink: DataLink::ETHERNET,
                ts_resolution: TsResolution::NanoSecond,
                ..PcapHeader::default()
            };
            Format::Pcap(PcapWriter::with_header(out, header).map_err(|e| err(e.to_string()))?)
        };
        Ok(CaptureFile {
            path: path.to_path_buf(),
            format,
        })
    }

    /// Appends `frame`.
    pub fn write(&mut self, frame: &Frame) -> Result<(), CaptureError> {
        let written = match &mut self.format {
            Format::Pcap(w) => w
                .write_packet(&PcapPacket::new(frame.time, frame.orig_len, &frame.data))
                .map(drop),
            Format::PcapNg { writer, ifaces } => {
                let Some(id) = ifaces.iter().position(|i| *i == frame.iface) else {
                    return Err(CaptureError::File {
                        path: self.path.clone(),
                        why: format!("frame of {}, which the file does not list", frame.iface),
                    });
                };
                writer
                    .write_pcapng_block(EnhancedPacketBlock {
                        interface_id: u32::try_from(id).unwrap_or(u32::MAX),
                        timestamp: frame.time,
                        original_len: frame.orig_len,
                        data: Cow::Borrowed(&frame.data),
                        options: vec![],
                    })
                    .map(drop)
            }
        };
        written.map_err(|e| CaptureError::File {
            path: self.path.clone(),
            why: e.to_string(),
        })
    }

    /// Flushes and closes the file.
    pub fn finish(self) -> Result<(), CaptureError> {
        let flushed = match self.format {
            Format::Pcap(w) => w.into_writer().flush(),
            Format::PcapNg { writer, .. } => writer.into_inner().flush(),
        };
        flushed.map_err(|e| CaptureError::File {
            path: self.path,
            why: e.to_string(),
        })
    }
}

/// Writes `frames` of interfaces `ifaces` to `path` in one go.
pub fn write_file(path: &Path, ifaces: &[String], frames: &[Frame]) -> Result<(), CaptureError> {
    let mut file = CaptureFile::create(path, ifaces)?;
    for f in frames {
        file.write(f)?;
    }
    file.finish()
}
