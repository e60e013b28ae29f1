//! Reading capture files: classic pcap (micro- or nanosecond) and pcapng (each
//! interface's `if_tsresol` honoured), Ethernet link type only.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context as _, bail};
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::PcapNgReader;
use pcap_file::pcapng::blocks::Block;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;

/// One frame: its timestamp in nanoseconds since the epoch and its bytes.
pub(crate) type Frame = (u64, Vec<u8>);

/// Most frames read from one file (a bound on memory: replay inputs are tests and
/// captures, not days of traffic).
pub(crate) const MAX_FRAMES: usize = 10_000_000;

/// Every frame of `path`, in file order.
pub(crate) fn read(path: &Path) -> anyhow::Result<Vec<Frame>> {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let file = BufReader::new(File::open(path).with_context(|| format!("{}: cannot open", path.display()))?);
    let frames = if magic == [0x0a, 0x0d, 0x0d, 0x0a] { read_ng(file) } else { read_classic(file) };
    frames.with_context(|| format!("{}", path.display()))
}

fn read_classic(file: BufReader<File>) -> anyhow::Result<Vec<Frame>> {
    let mut r = PcapReader::new(file).context("not a pcap or pcapng file")?;
    let link = r.header().datalink;
    if link != DataLink::ETHERNET {
        bail!("link type {link:?}: replay reads Ethernet captures only");
    }
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.context("bad packet record")?;
        if out.len() >= MAX_FRAMES {
            bail!("more than {MAX_FRAMES} frames");
        }
        out.push((u64::try_from(p.timestamp.as_nanos()).unwrap_or(u64::MAX), p.data.into_owned()));
    }
    Ok(out)
}

/// A raw pcapng timestamp in nanoseconds, for the interface's `if_tsresol` (pcapng
/// spec: the high bit selects units of 2^-n seconds, else 10^-n; default 10^-6).
fn to_ns(raw: u128, tsresol: Option<u8>) -> u64 {
    let r = tsresol.unwrap_or(6);
    let ns = if r & 0x80 != 0 {
        (raw * 1_000_000_000) >> u32::from(r & 0x7f).min(127)
    } else if r <= 9 {
        raw * 10u128.pow(9 - u32::from(r))
    } else {
        raw / 10u128.pow(u32::from(r).min(38) - 9)
    };
    u64::try_from(ns).unwrap_or(u64::MAX)
}

fn read_ng(file: BufReader<File>) -> anyhow::Result<Vec<Frame>> {
    let mut r = PcapNgReader::new(file).context("not a pcapng file")?;
    // Per interface: Ethernet or not, and its if_tsresol.
    let mut ifs: Vec<(bool, Option<u8>)> = Vec::new();
    let mut out = Vec::new();
    while let Some(block) = r.next_block() {
        let block = block.context("bad pcapng block")?;
        match block {
            Block::SectionHeader(_) => ifs.clear(),
            Block::InterfaceDescription(d) => {
                let res = d.options.iter().find_map(|o| match o {
                    InterfaceDescriptionOption::IfTsResol(v) => Some(*v),
                    _ => None,
                });
                ifs.push((d.linktype == DataLink::ETHERNET, res));
            }
            Block::EnhancedPacket(p) => {
                let Some(&(ethernet, res)) = ifs.get(p.interface_id as usize) else {
                    bail!("packet on undeclared interface {}", p.interface_id);
                };
                if !ethernet {
                    bail!("interface {}: replay reads Ethernet captures only", p.interface_id);
                }
                if out.len() >= MAX_FRAMES {
                    bail!("more than {MAX_FRAMES} frames");
                }
                // pcap-file 2 hands the raw timestamp counter over as nanoseconds.
                out.push((to_ns(p.timestamp.as_nanos(), res), p.data.into_owned()));
            }
            Block::SimplePacket(p) => {
                if ifs.first().is_none_or(|i| !i.0) {
                    bail!("simple packet block without an Ethernet interface");
                }
                out.push((out.last().map_or(0, |f: &Frame| f.0), p.data.into_owned()));
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::to_ns;

    #[test]
    fn pcapng_resolutions() {
        assert_eq!(to_ns(1_700_000_000_123_456, None), 1_700_000_000_123_456_000);
        assert_eq!(to_ns(1_700_000_000_123_456_789, Some(9)), 1_700_000_000_123_456_789);
        assert_eq!(to_ns(3 << 20, Some(0x80 | 20)), 3_000_000_000);
    }
}
