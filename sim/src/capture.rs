//! pcap capture of a link: every frame a sender puts on the link, stamped with the
//! virtual time it was sent, in a standard pcap file (LINKTYPE_ETHERNET) that tcpdump,
//! tshark and Wireshark read.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use podplane::Instant;

use crate::error::SimError;

/// An open capture file (also what `podplane replay` writes its outputs with).
pub struct Capture {
    writer: PcapWriter<BufWriter<File>>,
    path: String,
}

impl core::fmt::Debug for Capture {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Capture").field("path", &self.path).finish()
    }
}

impl Capture {
    /// Create `path` with a pcap header (nanosecond timestamps, 65535 snap length).
    ///
    /// # Errors
    /// [`SimError::Capture`] when the file cannot be created.
    pub fn create(path: &Path) -> Result<Self, SimError> {
        Self::create_buffered(path, 64 * 1024)
    }

    /// As [`create`](Self::create), writing through to the file every `buffer` bytes (0:
    /// at every frame, so a live capture can be read while it grows, as `tcpdump -U`).
    ///
    /// # Errors
    /// [`SimError::Capture`] when the file cannot be created.
    pub fn create_buffered(path: &Path, buffer: usize) -> Result<Self, SimError> {
        let err = |e: String| SimError::Capture { path: path.display().to_string(), reason: e };
        let file = File::create(path).map_err(|e| err(e.to_string()))?;
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            ts_resolution: pcap_file::TsResolution::NanoSecond,
            snaplen: 65535,
            ..PcapHeader::default()
        };
        let writer =
            PcapWriter::with_header(BufWriter::with_capacity(buffer, file), header).map_err(|e| err(e.to_string()))?;
        Ok(Capture { writer, path: path.display().to_string() })
    }

    /// Write out what is buffered and close the file.
    ///
    /// # Errors
    /// [`SimError::Capture`] when the file cannot be written.
    pub fn finish(self) -> Result<(), SimError> {
        use std::io::Write as _;
        let path = self.path;
        self.writer.into_writer().flush().map_err(|e| SimError::Capture { path, reason: e.to_string() })
    }

    /// Append one frame, stamped `at`.
    ///
    /// # Errors
    /// [`SimError::Capture`] when the file cannot be written.
    pub fn write(&mut self, at: Instant, frame: &[u8]) -> Result<(), SimError> {
        let ts = std::time::Duration::from_nanos(at.as_nanos());
        let orig_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        self.writer
            .write_packet(&PcapPacket::new(ts, orig_len, frame))
            .map(|_| ())
            .map_err(|e| SimError::Capture { path: self.path.clone(), reason: e.to_string() })
    }
}
