//! Per-protocol tracking besides TCP ([`super::tcp`]): UDP (unreplied, then a stream
//! once both ways have been seen for two seconds), ICMP echo, and any other protocol
//! (`generic`), with Linux's timeouts. One [`ProtoState`] per entry.

use super::tcp::{Dir, Segment, TcpConfig, TcpTrack, Verdict};
use crate::table::conntrack::status;
use crate::time::{Duration, Instant};

/// Timeouts of the protocols other than TCP (Linux's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtherTimeouts {
    /// `nf_conntrack_udp_timeout` (30 s): no reply yet, or a short exchange.
    pub udp: Duration,
    /// `nf_conntrack_udp_timeout_stream` (120 s): traffic both ways for 2 s or more.
    pub udp_stream: Duration,
    /// `nf_conntrack_icmp_timeout` (30 s).
    pub icmp: Duration,
    /// `nf_conntrack_generic_timeout` (600 s).
    pub generic: Duration,
}

impl Default for OtherTimeouts {
    fn default() -> Self {
        OtherTimeouts {
            udp: Duration::from_secs(30),
            udp_stream: Duration::from_secs(120),
            icmp: Duration::from_secs(30),
            generic: Duration::from_secs(600),
        }
    }
}

/// How long a UDP flow must have lived, replies seen, before it counts as a stream
/// (`udp_packet`: `stream_ts = jiffies + 2 * HZ`).
pub const UDP_STREAM_AFTER: Duration = Duration::from_secs(2);

/// The protocol part of a conntrack entry (by default [`ProtoState::Generic`]: what a
/// free slot of the table holds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProtoState {
    /// TCP with window tracking.
    Tcp(TcpTrack),
    /// UDP: when a flow with replies becomes a stream.
    Udp {
        /// Creation time + [`UDP_STREAM_AFTER`].
        stream_at: Instant,
    },
    /// ICMP echo request/reply.
    Icmp,
    /// Any other protocol.
    #[default]
    Generic,
}

/// What a non-TCP packet does to its entry: the new timeout, and whether the entry
/// becomes assured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refresh {
    /// Time to live from now.
    pub timeout: Duration,
    /// Set the ASSURED bit.
    pub assured: bool,
}

impl ProtoState {
    /// State for the first packet of a connection of IP protocol `proto` seen `now`.
    ///
    /// # Errors
    /// For TCP, why the segment cannot start a connection.
    pub fn new(
        proto: u8,
        seg: Option<&Segment<'_>>,
        tcp: &TcpConfig,
        now: Instant,
    ) -> Result<Self, super::tcp::Invalid> {
        Ok(match (proto, seg) {
            (6, Some(s)) => ProtoState::Tcp(TcpTrack::new(s, tcp)?),
            _ => Self::untracked(proto, now),
        })
    }

    /// [`Self::new`] without a TCP segment (infallible): UDP, UDP-Lite, ICMP echo, or
    /// generic (a TCP packet without its header, such as a later fragment, too).
    #[inline]
    pub fn untracked(proto: u8, now: Instant) -> Self {
        match proto {
            17 | 136 => ProtoState::Udp { stream_at: now + UDP_STREAM_AFTER },
            1 | 58 => ProtoState::Icmp,
            _ => ProtoState::Generic,
        }
    }

    /// A non-TCP packet (in either direction: none of these protocols cares) of an entry whose status bits (before this
    /// packet) are `st`, as Linux's `udp_packet`, `icmp_packet` and `generic_packet`.
    /// (TCP goes through [`TcpTrack::packet`].)
    pub fn refresh(&self, _dir: Dir, st: u8, t: &OtherTimeouts, now: Instant) -> Refresh {
        // SEEN_REPLY as it was before this packet: the kernel sets it after the
        // protocol handler, so the first reply still gets the unreplied timeout.
        match *self {
            ProtoState::Udp { stream_at } => udp_refresh(stream_at, st, t, now),
            ProtoState::Icmp => Refresh { timeout: t.icmp, assured: false },
            ProtoState::Generic | ProtoState::Tcp(_) => Refresh { timeout: t.generic, assured: false },
        }
    }

    /// Track a TCP segment (other protocols: `None`).
    pub fn tcp_packet(&mut self, dir: Dir, seg: &Segment<'_>, cfg: &TcpConfig, st: u8) -> Option<Verdict> {
        match self {
            ProtoState::Tcp(t) => {
                Some(t.packet(dir, seg, cfg, st & status::SEEN_REPLY != 0, st & status::ASSURED != 0))
            }
            _ => None,
        }
    }

    /// May this entry be dropped early when the table is full (besides not being
    /// assured)? TCP connections that are closing may.
    pub fn closing(&self) -> bool {
        matches!(self, ProtoState::Tcp(t) if t.state.can_early_drop())
    }
}

/// [`ProtoState::refresh`] of a UDP entry created at `stream_at` - 2 s (the
/// conntrack stage calls it straight for UDP, without the match on the state).
#[inline(always)]
pub(crate) fn udp_refresh(stream_at: Instant, st: u8, t: &OtherTimeouts, now: Instant) -> Refresh {
    // SEEN_REPLY as it was before this packet (see `refresh`).
    if st & status::SEEN_REPLY != 0 && now > stream_at {
        // Still active after two seconds both ways: a stream, assured.
        Refresh { timeout: t.udp_stream, assured: st & status::ASSURED == 0 }
    } else {
        Refresh { timeout: t.udp, assured: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Instant = Instant::ZERO;

    #[test]
    fn udp_becomes_a_stream_after_two_seconds_both_ways() {
        let t = OtherTimeouts::default();
        let u = ProtoState::new(17, None, &TcpConfig::default(), NOW).unwrap();
        let secs = |r: Refresh| (r.timeout.as_nanos() / 1_000_000_000, r.assured);
        // Unreplied (a DNS query, its retries): 30 s, never assured.
        assert_eq!(secs(u.refresh(Dir::Original, 0, &t, NOW + Duration::from_secs(5))), (30, false));
        // The first answer (even late): 30 s; later traffic within two seconds: 30 s.
        assert_eq!(secs(u.refresh(Dir::Reply, 0, &t, NOW + Duration::from_secs(5))), (30, false));
        let soon = NOW + Duration::from_millis(50);
        assert_eq!(secs(u.refresh(Dir::Original, status::SEEN_REPLY, &t, soon)), (30, false));
        // Traffic both ways after two seconds: 120 s and assured, once.
        let later = NOW + Duration::from_secs(3);
        assert_eq!(secs(u.refresh(Dir::Original, status::SEEN_REPLY, &t, later)), (120, true));
        assert_eq!(secs(u.refresh(Dir::Original, status::SEEN_REPLY | status::ASSURED, &t, later)), (120, false));
    }

    #[test]
    fn icmp_and_generic_timeouts() {
        let t = OtherTimeouts::default();
        let cfg = TcpConfig::default();
        let icmp = ProtoState::new(1, None, &cfg, NOW).unwrap();
        assert_eq!(icmp.refresh(Dir::Original, 0, &t, NOW).timeout, Duration::from_secs(30));
        let gre = ProtoState::new(47, None, &cfg, NOW).unwrap();
        assert_eq!(gre, ProtoState::Generic);
        assert_eq!(gre.refresh(Dir::Reply, 0, &t, NOW).timeout, Duration::from_secs(600));
        assert!(!gre.closing());
        // TCP without a segment is generic (no header: a later fragment).
        assert_eq!(ProtoState::new(6, None, &cfg, NOW).unwrap(), ProtoState::Generic);
    }

    #[test]
    fn tcp_entries_go_through_the_tcp_tracker() {
        use super::super::tcp::TcpState;
        use crate::wire::tcp::TcpFlags;
        let cfg = TcpConfig::default();
        let syn = Segment { seq: 1, ack: 0, win: 1000, flags: TcpFlags::SYN, len: 0, options: &[] };
        let mut p = ProtoState::new(6, Some(&syn), &cfg, NOW).unwrap();
        let v = p.tcp_packet(Dir::Original, &syn, &cfg, 0);
        assert!(matches!(v, Some(Verdict::Accept { state: TcpState::SynSent, .. })));
        let rst = Segment { seq: 0, ack: 2, win: 0, flags: TcpFlags::RST | TcpFlags::ACK, len: 0, options: &[] };
        assert_eq!(p.tcp_packet(Dir::Reply, &rst, &cfg, 0), Some(Verdict::Kill));
        assert!(ProtoState::Icmp.tcp_packet(Dir::Original, &syn, &cfg, 0).is_none());
    }
}
