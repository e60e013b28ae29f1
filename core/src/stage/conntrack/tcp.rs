//! TCP connection tracking as Linux's `nf_conntrack_proto_tcp.c` does it: the state
//! table (`tcp_conntracks`), window tracking (`tcp_in_window`, after Guido van Rooij's
//! "Real Stateful TCP Packet Filtering in IP Filter"), the flag check (`tcp_error`),
//! the pickup of new and mid-stream connections (`tcp_new`, `nf_conntrack_tcp_loose`)
//! and the choice of timeout (`nf_conntrack_tcp_packet`).
//!
//! The caller gives each segment as a [`Segment`] with its direction; [`TcpTrack`]
//! says what the segment is: accepted (with the new state and timeout), ignored
//! (let through without changing the state, as Linux's `sIG`), invalid (out of window,
//! an impossible transition: the conntrack stage must not let it leave untranslated),
//! or a reopen of a closed connection (delete the entry and track the segment as new).
//!
//! Not tracked, as in a node without helpers: NAT sequence adjustment (no ALG
//! rewrites payload lengths) and SYN proxy.

use crate::time::Duration;
use crate::wire::tcp::TcpFlags;

/// The states of a tracked TCP connection (`enum tcp_conntrack`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum TcpState {
    /// No packet seen yet.
    #[default]
    None = 0,
    /// A SYN seen.
    SynSent,
    /// A SYN-ACK seen.
    SynRecv,
    /// The handshake's ACK seen.
    Established,
    /// A FIN seen.
    FinWait,
    /// The FIN acknowledged.
    CloseWait,
    /// FINs seen both ways.
    LastAck,
    /// The last ACK seen.
    TimeWait,
    /// Reset.
    Close,
    /// A SYN from the reply side (simultaneous open).
    SynSent2,
}

impl TcpState {
    /// The name `conntrack -L` prints.
    pub const fn as_str(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::SynSent2 => "SYN_SENT2",
        }
    }

    /// States whose entries may be dropped early when the table is full
    /// (`tcp_can_early_drop`): connections that are closing.
    pub const fn can_early_drop(self) -> bool {
        matches!(
            self,
            TcpState::FinWait | TcpState::LastAck | TcpState::TimeWait | TcpState::Close | TcpState::CloseWait
        )
    }
}

/// TCP timeouts (Linux's defaults; kube-proxy overrides established and close_wait).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpTimeouts {
    /// `nf_conntrack_tcp_timeout_syn_sent` (120 s).
    pub syn_sent: Duration,
    /// `..._syn_recv` (60 s).
    pub syn_recv: Duration,
    /// `..._established` (Linux 5 days; kube-proxy sets 86400 s).
    pub established: Duration,
    /// `..._fin_wait` (120 s).
    pub fin_wait: Duration,
    /// `..._close_wait` (Linux 60 s; kube-proxy sets 3600 s).
    pub close_wait: Duration,
    /// `..._last_ack` (30 s).
    pub last_ack: Duration,
    /// `..._time_wait` (120 s).
    pub time_wait: Duration,
    /// `..._close` (10 s).
    pub close: Duration,
    /// `..._max_retrans` reached (300 s).
    pub retrans: Duration,
    /// Data sent and not acknowledged (300 s).
    pub unacknowledged: Duration,
}

impl TcpTimeouts {
    /// Linux's defaults.
    pub const LINUX: TcpTimeouts = TcpTimeouts {
        syn_sent: Duration::from_secs(120),
        syn_recv: Duration::from_secs(60),
        established: Duration::from_secs(5 * 86400),
        fin_wait: Duration::from_secs(120),
        close_wait: Duration::from_secs(60),
        last_ack: Duration::from_secs(30),
        time_wait: Duration::from_secs(120),
        close: Duration::from_secs(10),
        retrans: Duration::from_secs(300),
        unacknowledged: Duration::from_secs(300),
    };

    /// A Kubernetes node: Linux's, with kube-proxy's `conntrack` overrides
    /// (`--conntrack-tcp-timeout-established=24h`, `--conntrack-tcp-timeout-close-wait=1h`).
    pub const KUBERNETES: TcpTimeouts = TcpTimeouts {
        established: Duration::from_secs(86400),
        close_wait: Duration::from_secs(3600),
        ..TcpTimeouts::LINUX
    };

    /// The timeout of `state`.
    pub const fn of(&self, state: TcpState) -> Duration {
        match state {
            TcpState::None | TcpState::SynSent | TcpState::SynSent2 => self.syn_sent,
            TcpState::SynRecv => self.syn_recv,
            TcpState::Established => self.established,
            TcpState::FinWait => self.fin_wait,
            TcpState::CloseWait => self.close_wait,
            TcpState::LastAck => self.last_ack,
            TcpState::TimeWait => self.time_wait,
            TcpState::Close => self.close,
        }
    }
}

/// How TCP is tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// `nf_conntrack_tcp_be_liberal`: out-of-window segments are accepted (the
    /// window records are not updated from them). Impossible transitions and bad flag
    /// combinations stay invalid.
    pub liberal: bool,
    /// `nf_conntrack_tcp_loose` (1 by default): pick up connections mid-stream, so a
    /// restart of podplane does not break established connections.
    pub loose: bool,
    /// `nf_conntrack_tcp_max_retrans` (3).
    pub max_retrans: u8,
    /// The timeouts.
    pub timeouts: TcpTimeouts,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig { liberal: false, loose: true, max_retrans: 3, timeouts: TcpTimeouts::KUBERNETES }
    }
}

/// What conntrack needs of one TCP segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Window field (unscaled).
    pub win: u16,
    /// The control flags.
    pub flags: TcpFlags,
    /// Payload bytes.
    pub len: u32,
    /// The option bytes (after the 20-byte header).
    pub options: &'a [u8],
}

impl Segment<'_> {
    fn has(&self, f: TcpFlags) -> bool {
        self.flags.intersects(f)
    }

    /// `seq + len` counting SYN and FIN (`segment_seq_plus_len`).
    fn end(&self) -> u32 {
        self.seq
            .wrapping_add(self.len)
            .wrapping_add(u32::from(self.has(TcpFlags::SYN)))
            .wrapping_add(u32::from(self.has(TcpFlags::FIN)))
    }

    fn index(&self) -> Index {
        if self.has(TcpFlags::RST) {
            Index::Rst
        } else if self.has(TcpFlags::SYN) {
            if self.has(TcpFlags::ACK) { Index::SynAck } else { Index::Syn }
        } else if self.has(TcpFlags::FIN) {
            Index::Fin
        } else if self.has(TcpFlags::ACK) {
            Index::Ack
        } else {
            Index::None
        }
    }
}

/// The flag combinations Linux accepts (`tcp_valid_flags`; PSH, ECE and CWR are
/// ignored): SYN, SYN+URG, SYN+ACK, RST, RST+ACK, FIN+ACK, FIN+ACK+URG, ACK, ACK+URG.
/// Anything else (SYN+FIN, a bare FIN, no flags at all...) is invalid.
pub fn valid_flags(f: TcpFlags) -> bool {
    const ACK: TcpFlags = TcpFlags::ACK;
    const FIN: TcpFlags = TcpFlags::FIN;
    const RST: TcpFlags = TcpFlags::RST;
    const SYN: TcpFlags = TcpFlags::SYN;
    const URG: TcpFlags = TcpFlags::URG;
    // The flag byte only: NS is in the byte before (`tcp_flag_byte`).
    let f = f - (TcpFlags::ECE | TcpFlags::CWR | TcpFlags::PSH | TcpFlags::NS);
    [SYN, SYN | URG, SYN | ACK, RST, RST | ACK, FIN | ACK, FIN | ACK | URG, ACK, ACK | URG].contains(&f)
}

/// Which row of the state table a segment uses (`enum tcp_bit_set`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Index {
    Syn = 0,
    SynAck,
    Fin,
    Ack,
    Rst,
    None,
}

/// A cell of the state table: a state, ignore (`sIG`) or invalid (`sIV`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    To(TcpState),
    Ignore,
    Invalid,
}

/// Direction of a segment in its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    /// The direction of the first packet.
    Original = 0,
    /// The other one.
    Reply = 1,
}

impl Dir {
    fn other(self) -> Dir {
        match self {
            Dir::Original => Dir::Reply,
            Dir::Reply => Dir::Original,
        }
    }
}

/// The state table, `[dir][index][old state]`, as the kernel's `tcp_conntracks`; the
/// kernel's comments explain each cell (RFC 793/1122/5961 cases).
const TABLE: [[[Cell; 10]; 6]; 2] = {
    use Cell::{Ignore as IG, Invalid as IV};
    use TcpState::*;
    const SS: Cell = Cell::To(SynSent);
    const SR: Cell = Cell::To(SynRecv);
    const ES: Cell = Cell::To(Established);
    const FW: Cell = Cell::To(FinWait);
    const CW: Cell = Cell::To(CloseWait);
    const LA: Cell = Cell::To(LastAck);
    const TW: Cell = Cell::To(TimeWait);
    const CL: Cell = Cell::To(Close);
    const S2: Cell = Cell::To(SynSent2);
    [
        // ORIGINAL   sNO sSS sSR sES sFW sCW sLA sTW sCL sS2
        [
            /* syn    */ [SS, SS, IG, IG, IG, IG, IG, SS, SS, S2],
            /* synack */ [IV, IV, SR, IV, IV, IV, IV, IV, IV, SR],
            /* fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
            /* ack    */ [ES, IV, ES, ES, CW, CW, TW, TW, CL, IV],
            /* rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
            /* none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
        ],
        // REPLY      sNO sSS sSR sES sFW sCW sLA sTW sCL sS2
        [
            /* syn    */ [IV, S2, IV, IV, IV, IV, IV, SS, IV, S2],
            /* synack */ [IV, SR, IG, IG, IG, IG, IG, IG, IG, SR],
            /* fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
            /* ack    */ [IV, IG, SR, ES, CW, CW, TW, TW, CL, IG],
            /* rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
            /* none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
        ],
    ]
};

fn cell(dir: Dir, index: Index, old: TcpState) -> Cell {
    TABLE
        .get(dir as usize)
        .and_then(|t| t.get(index as usize))
        .and_then(|r| r.get(old as usize))
        .copied()
        .unwrap_or(Cell::Invalid)
}

/// Sequence-space comparisons (RFC 1982 style, as the kernel's `before`/`after`).
fn before(a: u32, b: u32) -> bool {
    a.wrapping_sub(b).cast_signed() < 0
}
fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

const F_WINDOW_SCALE: u8 = 0x01;
const F_SACK_PERM: u8 = 0x02;
const F_CLOSE_INIT: u8 = 0x04;
const F_BE_LIBERAL: u8 = 0x08;
const F_DATA_UNACK: u8 = 0x10;
const F_MAXACK_SET: u8 = 0x20;
/// `last_flags`: a SYN in LAST_ACK may draw an RFC 5961 challenge ACK.
const L_CHALLENGE_ACK: u8 = 0x40;
/// `last_flags`: simultaneous open seen.
const L_SIMULTANEOUS_OPEN: u8 = 0x80;
/// The largest window scale (RFC 7323).
const MAX_WSCALE: u8 = 14;
/// `MAXACKWINCONST`.
const MAX_ACK_WIN_CONST: u32 = 66000;

/// What one side of a connection has sent (`struct ip_ct_tcp_state`). Packed to
/// 2-byte alignment: 18 bytes, not 20, so a connection's TCP state is 56 bytes and
/// its entry 104 (fields are read and written by value; x86 loads them unaligned at
/// no cost).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(Rust, packed(2))]
pub struct Side {
    /// Highest `seq + len` sent.
    pub end: u32,
    /// Highest right edge of the receiver's window seen.
    pub maxend: u32,
    /// Largest window advertised.
    pub maxwin: u32,
    /// Highest ACK sent.
    pub maxack: u32,
    /// Window scale.
    pub scale: u8,
    /// `F_*` flags.
    pub flags: u8,
}

/// The TCP options as (kind, body), as the kernel walks them: NOPs skipped, stopping
/// at EOL or at the first malformed option (length under 2 or past the end).
fn tcp_options(opts: &[u8]) -> impl Iterator<Item = (u8, &[u8])> + '_ {
    let mut i = 0;
    core::iter::from_fn(move || {
        loop {
            match *opts.get(i)? {
                0 => return None,
                1 => i += 1,
                kind => {
                    let size = usize::from(*opts.get(i + 1)?);
                    let body = opts.get(i + 2..i + size.max(2)).filter(|_| size >= 2)?;
                    i += size;
                    return Some((kind, body));
                }
            }
        }
    })
}

/// Parse the options Linux's `tcp_options` looks at: window scale and SACK permitted.
fn options(opts: &[u8], side: &mut Side) {
    side.scale = 0;
    side.flags &= !(F_WINDOW_SCALE | F_SACK_PERM);
    for (kind, body) in tcp_options(opts) {
        match (kind, body) {
            (4, []) => side.flags |= F_SACK_PERM,
            (3, [scale]) => {
                side.scale = (*scale).min(MAX_WSCALE);
                side.flags |= F_WINDOW_SCALE;
            }
            _ => {}
        }
    }
}

/// The highest right edge of the first SACK option's blocks, if above `ack`
/// (`tcp_sack`).
fn sack_edge(opts: &[u8], ack: u32) -> u32 {
    // Timestamps alone (NOP, NOP, TS: what Linux puts on nearly every segment) hold
    // no SACK block: the kernel's `tcp_sack()` returns at once on this layout too
    // (walking it cost 46 instructions a segment, `parse_ct_1m_tcp`).
    if opts.len() == 12 && opts.starts_with(&[1, 1, 8, 10]) {
        return ack;
    }
    let mut sack = ack;
    let blocks = tcp_options(opts).find(|(kind, body)| *kind == 5 && !body.is_empty() && body.len() % 8 == 0);
    for block in blocks.map_or(&[][..], |(_, b)| b).chunks_exact(8) {
        if let Some(r) = block.get(4..).and_then(|r| r.first_chunk::<4>()) {
            let right = u32::from_be_bytes(*r);
            if after(right, sack) {
                sack = right;
            }
        }
    }
    sack
}

/// What the tracker decided about a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// In state and in window: the connection is now in `state`, its entry lives for
    /// `timeout` more; `assured` when this segment made it assured.
    Accept {
        /// The new state.
        state: TcpState,
        /// Time to live from now.
        timeout: Duration,
        /// The connection became assured now.
        assured: bool,
    },
    /// Let through, state unchanged (Linux's "ignored" segments: a SYN in an
    /// established connection the endpoints may know better about).
    Ignore,
    /// Invalid (impossible transition, out of window, bad flags): never forward it
    /// untranslated.
    Invalid(Invalid),
    /// A new SYN on a closed or aborted connection: delete the entry and track the
    /// segment as a new connection.
    Reopen,
    /// The only answer to the first packet was a RST: the entry can go now.
    Kill,
}

/// Why a segment is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// A flag combination Linux rejects.
    Flags,
    /// The state table has no transition for it.
    State,
    /// SEQ over the receiver's window.
    SeqOverWindow,
    /// SEQ under the lower bound (data already acknowledged).
    SeqUnderWindow,
    /// ACK for data not seen yet.
    AckOverWindow,
    /// ACK under the lower bound.
    AckUnderWindow,
    /// A RST whose sequence number is before what the other side acknowledged.
    Rst,
    /// Not a valid first segment (loose pickup off, or no flags).
    NotNew,
}

/// What the window check made of an acceptable segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Window {
    /// In the window: state and records go on.
    Accept,
    /// Under it (a retransmission of acknowledged data, an overly delayed ACK):
    /// part of the connection, but nothing changes (`NFCT_TCP_IGNORE`).
    Ignore,
}

/// The TCP part of a conntrack entry (`struct ip_ct_tcp`). The state first: the
/// entry's variant is told by it (its niche), at the start of the protocol state,
/// beside the fields every hit reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TcpTrack {
    /// Current state.
    pub state: TcpState,
    last_dir: u8,
    last_index: u8,
    last_wscale: u8,
    last_flags: u8,
    retrans: u8,
    last_win: u16,
    /// What each side sent, indexed by [`Dir`].
    pub seen: [Side; 2],
    last_seq: u32,
    last_ack: u32,
    last_end: u32,
}

const NO_INDEX: u8 = Index::None as u8;

impl TcpTrack {
    /// What `dir` sent.
    pub fn side(&self, dir: Dir) -> &Side {
        let [o, r] = &self.seen;
        if dir == Dir::Original { o } else { r }
    }

    fn side_mut(&mut self, dir: Dir) -> &mut Side {
        let [o, r] = &mut self.seen;
        if dir == Dir::Original { o } else { r }
    }

    /// Start tracking with the first segment of a connection (original direction), as
    /// `tcp_new`: a SYN starts SYN_SENT; anything else the table takes from NONE
    /// (an ACK) is a mid-stream pickup when `loose`, tracked liberally because its
    /// window scale is unknown.
    ///
    /// # Errors
    /// The reason the segment cannot start a connection.
    pub fn new(seg: &Segment<'_>, cfg: &TcpConfig) -> Result<TcpTrack, Invalid> {
        if !valid_flags(seg.flags) {
            return Err(Invalid::Flags);
        }
        let mut t = TcpTrack { last_index: NO_INDEX, ..TcpTrack::default() };
        let [s, _] = &mut t.seen;
        match cell(Dir::Original, seg.index(), TcpState::None) {
            Cell::To(TcpState::SynSent) => {
                s.end = seg.end();
                s.maxend = s.end;
                s.maxwin = u32::from(seg.win).max(1);
                options(seg.options, s);
            }
            Cell::To(_) if cfg.loose => {
                s.end = seg.end();
                s.maxwin = u32::from(seg.win).max(1);
                s.maxend = s.end.wrapping_add(s.maxwin);
                s.flags = F_SACK_PERM | F_BE_LIBERAL;
                t.seen[1].flags = F_SACK_PERM | F_BE_LIBERAL;
            }
            _ => return Err(Invalid::NotNew),
        }
        Ok(t)
    }

    /// Track a segment in direction `dir` (`nf_conntrack_tcp_packet`). `seen_reply`
    /// and `assured` are the entry's status bits before this segment.
    #[allow(clippy::too_many_lines)]
    pub fn packet(&mut self, dir: Dir, seg: &Segment<'_>, cfg: &TcpConfig, seen_reply: bool, assured: bool) -> Verdict {
        if !valid_flags(seg.flags) {
            return Verdict::Invalid(Invalid::Flags);
        }
        let mut old = self.state;
        let index = seg.index();
        let mut new = match cell(dir, index, old) {
            Cell::To(s) => Some(s),
            Cell::Ignore => None,
            Cell::Invalid => return Verdict::Invalid(Invalid::State),
        };
        let mut skip_window = false;
        match new {
            Some(TcpState::SynSent) if old >= TcpState::TimeWait => {
                // A SYN reopening a closed or aborted connection (RFC 1122 4.2.2.13):
                // delete this entry and look up again.
                let closing = (self.side(dir).flags | self.side(dir.other()).flags) & F_CLOSE_INIT != 0;
                let aborted = self.last_dir == dir as u8 && self.last_index == Index::Rst as u8;
                if closing || aborted {
                    return Verdict::Reopen;
                }
                if !self.ignore(dir, index, old, seg) {
                    return Verdict::Ignore;
                }
                old = TcpState::SynSent;
                new = Some(TcpState::SynRecv);
            }
            None => {
                if !self.ignore(dir, index, old, seg) {
                    return Verdict::Ignore;
                }
                old = TcpState::SynSent;
                new = Some(TcpState::SynRecv);
            }
            Some(TcpState::TimeWait)
                if old == TcpState::LastAck
                    && index == Index::Ack
                    && self.last_dir != dir as u8
                    && self.last_index == Index::Syn as u8
                    && self.last_flags & L_CHALLENGE_ACK != 0 =>
            {
                // RFC 5961 challenge ACK to a SYN: not the ACK of the last FIN.
                self.last_flags &= !L_CHALLENGE_ACK;
                return Verdict::Ignore;
            }
            Some(TcpState::SynSent2) => self.last_flags |= L_SIMULTANEOUS_OPEN,
            Some(TcpState::SynRecv)
                if dir == Dir::Reply && index == Index::Ack && self.last_flags & L_SIMULTANEOUS_OPEN != 0 =>
            {
                new = Some(TcpState::Established);
            }
            Some(TcpState::Close) if index == Index::Rst => {
                let other = *self.side(dir.other());
                if other.flags & F_MAXACK_SET != 0 {
                    if before(seg.seq, other.maxack) {
                        return Verdict::Invalid(Invalid::Rst);
                    }
                    let established = old == TcpState::Established;
                    let exact = seg.seq == other.maxack;
                    let train =
                        self.last_index == Index::Ack as u8 && self.last_dir == dir as u8 && seg.seq == self.last_end;
                    if established && !exact && !train {
                        // Not exactly the next sequence number: keep the state, so a
                        // challenge ACK can follow (RFC 5961).
                        new = Some(old);
                    }
                }
                let rst_to_ignored = ((seen_reply && self.last_index == Index::Syn as u8)
                    || (!assured && self.last_index == Index::Ack as u8))
                    && seg.ack == self.last_end;
                if rst_to_ignored {
                    skip_window = true;
                }
            }
            _ => {}
        }
        if !skip_window {
            match self.in_window(dir, index, seg, cfg) {
                Err(why) => return Verdict::Invalid(why),
                // Neither state nor timeout change (nf_conntrack_tcp_packet returns
                // before both).
                Ok(Window::Ignore) => return Verdict::Ignore,
                Ok(Window::Accept) => {}
            }
        }
        let new = new.unwrap_or(old);
        self.last_index = index as u8;
        self.last_dir = dir as u8;
        if old != new && new == TcpState::FinWait {
            self.side_mut(dir).flags |= F_CLOSE_INIT;
        }
        self.state = new;
        let t = &cfg.timeouts;
        let mut timeout = if self.retrans >= cfg.max_retrans && t.of(new) > t.retrans {
            t.retrans
        } else if index == Index::Rst {
            t.close
        } else if (self.side(Dir::Original).flags | self.side(Dir::Reply).flags) & F_DATA_UNACK != 0
            && t.of(new) > t.unacknowledged
        {
            t.unacknowledged
        } else if self.last_win == 0 && t.of(new) > t.retrans {
            t.retrans
        } else {
            t.of(new)
        };
        let mut became_assured = false;
        if !seen_reply {
            // (The entry's SEEN_REPLY bit is set after this, by the caller.) The only
            // answer to the first packet is a RST: no connection to keep.
            if seg.has(TcpFlags::RST) {
                return Verdict::Kill;
            }
            // Picked up mid-stream and not answered yet: no long ESTABLISHED timeout.
            if new == TcpState::Established && timeout > t.unacknowledged {
                timeout = t.unacknowledged;
            }
        } else if !assured && (old == TcpState::SynRecv || old == TcpState::Established) && new == TcpState::Established
        {
            became_assured = true;
        }
        Verdict::Accept { state: new, timeout, assured: became_assured }
    }

    /// A segment the table ignores: note it, since a later SYN-ACK or RST may prove
    /// it right. Returns true when it is a SYN-ACK answering a SYN ignored earlier:
    /// then the endpoints are in sync and conntrack is not, so the SYN's recorded
    /// values are taken and tracking goes on as SYN_SENT -> SYN_RECV.
    fn ignore(&mut self, dir: Dir, index: Index, old: TcpState, seg: &Segment<'_>) -> bool {
        if index == Index::SynAck
            && self.last_index == Index::Syn as u8
            && self.last_dir != dir as u8
            && seg.ack == self.last_end
        {
            let last = if self.last_dir == Dir::Reply as u8 { Dir::Reply } else { Dir::Original };
            *self.side_mut(last) = Side {
                end: self.last_end,
                maxend: self.last_end,
                maxwin: u32::from(self.last_win).max(1),
                maxack: 0,
                scale: self.last_wscale,
                flags: self.last_flags & (F_WINDOW_SCALE | F_SACK_PERM),
            };
            self.last_flags &= !L_CHALLENGE_ACK;
            *self.side_mut(dir) = Side::default();
            return true;
        }
        self.last_index = index as u8;
        self.last_dir = dir as u8;
        self.last_seq = seg.seq;
        self.last_end = seg.end();
        self.last_win = seg.win;
        if index == Index::Syn && dir == Dir::Original {
            let mut s = Side::default();
            options(seg.options, &mut s);
            self.last_flags = s.flags & (F_WINDOW_SCALE | F_SACK_PERM);
            self.last_wscale = if s.flags & F_WINDOW_SCALE != 0 { s.scale } else { 0 };
            if old == TcpState::LastAck {
                self.last_flags |= L_CHALLENGE_ACK;
            }
        }
        false
    }

    /// `tcp_in_window`: is the segment inside what each side has announced? Updates
    /// both sides' records when it is.
    fn in_window(&mut self, dir: Dir, index: Index, seg: &Segment<'_>, cfg: &TcpConfig) -> Result<Window, Invalid> {
        // The records are updated in place, as the kernel does (copied out and back,
        // they cost 44 instructions a segment).
        let state = self.state;
        let [o, r] = &mut self.seen;
        let (sender, receiver) = if dir == Dir::Original { (o, r) } else { (r, o) };
        let mut seq = seg.seq;
        let mut ack = seg.ack;
        let win_raw = seg.win;
        let mut win = u32::from(win_raw);
        let mut end = seg.end();
        let mut sack = if receiver.flags & F_SACK_PERM != 0 { sack_edge(seg.options, ack) } else { ack };
        if sender.maxwin == 0 {
            if seg.has(TcpFlags::SYN) {
                // SYN-ACK answering a SYN, or a SYN from the reply side.
                sender.end = end;
                sender.maxend = end;
                sender.maxwin = win.max(1);
                options(seg.options, sender);
                // RFC 7323: scaling only when both sides offer it.
                if !(sender.flags & F_WINDOW_SCALE != 0 && receiver.flags & F_WINDOW_SCALE != 0) {
                    sender.scale = 0;
                    receiver.scale = 0;
                }
                if !seg.has(TcpFlags::ACK) {
                    return Ok(Window::Accept);
                }
            } else {
                // Mid-connection: its history is lost; use what the segment says.
                sender.end = end;
                let swin = win << sender.scale;
                sender.maxwin = swin.max(1);
                sender.maxend = end.wrapping_add(sender.maxwin);
                if receiver.maxwin == 0 {
                    receiver.end = sack;
                    receiver.maxend = sack;
                } else if sack == receiver.end.wrapping_add(1) {
                    // Likely a reply to a keepalive.
                    receiver.end = receiver.end.wrapping_add(1);
                }
            }
        } else if ((state == TcpState::SynSent && dir == Dir::Original)
            || (state == TcpState::SynRecv && dir == Dir::Reply))
            && after(end, sender.end)
        {
            // A reinitialised connection (RFC 793): new, larger sequence numbers.
            sender.end = end;
            sender.maxend = end;
            sender.maxwin = win.max(1);
            options(seg.options, sender);
        }
        if !seg.has(TcpFlags::ACK) {
            ack = receiver.end;
            sack = receiver.end;
        } else if seg.flags.contains(TcpFlags::ACK | TcpFlags::RST) && ack == 0 {
            // Broken stacks set ACK with a zero ack value on RSTs.
            ack = receiver.end;
            sack = receiver.end;
        }
        if seg.has(TcpFlags::RST) && seq == 0 && state == TcpState::SynSent {
            // RST answering a SYN.
            seq = sender.end;
            end = sender.end;
        }
        let in_recv_win = receiver.maxwin == 0 || after(end, sender.end.wrapping_sub(receiver.maxwin).wrapping_sub(1));
        let max_ack_win = sender.maxwin.max(MAX_ACK_WIN_CONST);
        let seq_ok = before(seq, sender.maxend.wrapping_add(1));
        let ack_ok = before(sack, receiver.end.wrapping_add(1));
        let ack_low_ok = after(sack, receiver.end.wrapping_sub(max_ack_win).wrapping_sub(1));
        let liberal = sender.flags & F_BE_LIBERAL != 0 || cfg.liberal;
        // The checks in the order of Linux 6.x's tcp_in_window (since 6.0: "ignore
        // overly delayed tcp packets"): over the window is INVALID, under it is only
        // ignored: the packet belongs to the connection (so NAT applies to it) but
        // changes nothing. What was initialised above stays, as the kernel writes it
        // in place.
        if !seq_ok {
            let overshot = end.wrapping_sub(sender.maxend).wrapping_add(1);
            let strictly_in_recv_win =
                receiver.maxwin != 0 && after(end, sender.end.wrapping_sub(receiver.maxwin).wrapping_sub(1));
            if strictly_in_recv_win && ack_low_ok && overshot <= receiver.maxwin && ack_ok {
                // A sender that overshot the receive window by less than a window:
                // accepted, the records not updated.
                return Ok(Window::Accept);
            }
            if !liberal {
                return Err(Invalid::SeqOverWindow);
            }
        }
        if !ack_ok && !liberal {
            return Err(Invalid::AckOverWindow);
        }
        if !in_recv_win || !ack_low_ok {
            return Ok(Window::Ignore);
        }
        {
            if !seg.has(TcpFlags::SYN) {
                win <<= sender.scale;
            }
            let swin = win.wrapping_add(sack.wrapping_sub(ack));
            if sender.maxwin < swin {
                sender.maxwin = swin;
            }
            if after(end, sender.end) {
                sender.end = end;
                sender.flags |= F_DATA_UNACK;
            }
            if seg.has(TcpFlags::ACK) {
                if sender.flags & F_MAXACK_SET == 0 {
                    sender.maxack = ack;
                    sender.flags |= F_MAXACK_SET;
                } else if after(ack, sender.maxack) {
                    sender.maxack = ack;
                }
            }
            if receiver.maxwin != 0 && after(end, sender.maxend) {
                receiver.maxwin = receiver.maxwin.wrapping_add(end.wrapping_sub(sender.maxend));
            }
            if after(sack.wrapping_add(win), receiver.maxend.wrapping_sub(1)) {
                receiver.maxend = sack.wrapping_add(win);
                if win == 0 {
                    receiver.maxend = receiver.maxend.wrapping_add(1);
                }
            }
            if ack == receiver.end {
                receiver.flags &= !F_DATA_UNACK;
            }
            if index == Index::Ack {
                if self.last_dir == dir as u8
                    && self.last_seq == seq
                    && self.last_ack == ack
                    && self.last_end == end
                    && self.last_win == win_raw
                {
                    self.retrans = self.retrans.saturating_add(1);
                } else {
                    self.last_dir = dir as u8;
                    self.last_seq = seq;
                    self.last_ack = ack;
                    self.last_end = end;
                    self.last_win = win_raw;
                    self.retrans = 0;
                }
            }
            Ok(Window::Accept)
        }
    }
}

#[cfg(test)]
mod tests;
