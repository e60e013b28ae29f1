use super::*;

const FIN: TcpFlags = TcpFlags::FIN;
const SYN: TcpFlags = TcpFlags::SYN;
const RST: TcpFlags = TcpFlags::RST;
const PSH: TcpFlags = TcpFlags::PSH;
const ACK: TcpFlags = TcpFlags::ACK;
const URG: TcpFlags = TcpFlags::URG;
const ECE: TcpFlags = TcpFlags::ECE;
const CWR: TcpFlags = TcpFlags::CWR;

/// (Callers pass the entry's SEEN_REPLY and ASSURED bits as they were before the
/// segment, as the kernel sets SEEN_REPLY after `tcp_packet`.)
///
/// The kernel's `tcp_conntracks`, transcribed row by row from
/// net/netfilter/nf_conntrack_proto_tcp.c (columns sNO sSS sSR sES sFW sCW sLA sTW
/// sCL sS2), checked against the table the tracker uses.
#[test]
fn state_table_is_linuxs() {
    let linux = [
        ("ORIGINAL", "syn", "sSS sSS sIG sIG sIG sIG sIG sSS sSS sS2"),
        ("ORIGINAL", "synack", "sIV sIV sSR sIV sIV sIV sIV sIV sIV sSR"),
        ("ORIGINAL", "fin", "sIV sIV sFW sFW sLA sLA sLA sTW sCL sIV"),
        ("ORIGINAL", "ack", "sES sIV sES sES sCW sCW sTW sTW sCL sIV"),
        ("ORIGINAL", "rst", "sIV sCL sCL sCL sCL sCL sCL sCL sCL sCL"),
        ("ORIGINAL", "none", "sIV sIV sIV sIV sIV sIV sIV sIV sIV sIV"),
        ("REPLY", "syn", "sIV sS2 sIV sIV sIV sIV sIV sSS sIV sS2"),
        ("REPLY", "synack", "sIV sSR sIG sIG sIG sIG sIG sIG sIG sSR"),
        ("REPLY", "fin", "sIV sIV sFW sFW sLA sLA sLA sTW sCL sIV"),
        ("REPLY", "ack", "sIV sIG sSR sES sCW sCW sTW sTW sCL sIG"),
        ("REPLY", "rst", "sIV sCL sCL sCL sCL sCL sCL sCL sCL sCL"),
        ("REPLY", "none", "sIV sIV sIV sIV sIV sIV sIV sIV sIV sIV"),
    ];
    let states = [
        TcpState::None,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::SynSent2,
    ];
    let name = |c: Cell| match c {
        Cell::Ignore => "sIG",
        Cell::Invalid => "sIV",
        Cell::To(s) => match s {
            TcpState::None => "sNO",
            TcpState::SynSent => "sSS",
            TcpState::SynRecv => "sSR",
            TcpState::Established => "sES",
            TcpState::FinWait => "sFW",
            TcpState::CloseWait => "sCW",
            TcpState::LastAck => "sLA",
            TcpState::TimeWait => "sTW",
            TcpState::Close => "sCL",
            TcpState::SynSent2 => "sS2",
        },
    };
    for (dir, row, cells) in linux {
        let d = if dir == "ORIGINAL" { Dir::Original } else { Dir::Reply };
        let index = match row {
            "syn" => Index::Syn,
            "synack" => Index::SynAck,
            "fin" => Index::Fin,
            "ack" => Index::Ack,
            "rst" => Index::Rst,
            _ => Index::None,
        };
        let ours: Vec<&str> = states.iter().map(|s| name(cell(d, index, *s))).collect();
        assert_eq!(ours.join(" "), cells, "{dir} {row}");
    }
}

#[test]
fn flag_combinations_as_tcp_error_judges_them() {
    for ok in
        [SYN, SYN | ACK, SYN | URG, RST, RST | ACK, FIN | ACK, FIN | ACK | URG, ACK, ACK | URG, ACK | PSH | ECE | CWR]
    {
        assert!(valid_flags(ok), "{ok:?}");
    }
    let all_six = TcpFlags::from_bits_truncate(0x3f);
    for bad in
        [TcpFlags::empty(), FIN, SYN | FIN, SYN | FIN | ACK, SYN | RST, RST | FIN, URG, PSH, FIN | PSH | URG, all_six]
    {
        assert!(!valid_flags(bad), "{bad:?}");
    }
    // NS is not in the flag byte Linux checks.
    assert!(valid_flags(ACK | TcpFlags::NS));
}

const CFG: TcpConfig = TcpConfig { liberal: false, loose: true, max_retrans: 3, timeouts: TcpTimeouts::KUBERNETES };

fn seg(seq: u32, ack: u32, f: TcpFlags, len: u32) -> Segment<'static> {
    Segment { seq, ack, win: 64240, flags: f, len, options: &[] }
}

/// Window scale 7 and SACK permitted, as Linux's SYN options carry them.
const SYN_OPTS: &[u8] = &[2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];

fn accept(v: Verdict) -> (TcpState, u64, bool) {
    match v {
        Verdict::Accept { state, timeout, assured } => (state, timeout.as_nanos() / 1_000_000_000, assured),
        other => panic!("not accepted: {other:?}"),
    }
}

/// Client ISN 1000, server ISN 5000, both with window scale 7.
fn established() -> TcpTrack {
    let syn = Segment { options: SYN_OPTS, ..seg(1000, 0, SYN, 0) };
    let mut t = TcpTrack::new(&syn, &CFG).unwrap();
    assert_eq!(accept(t.packet(Dir::Original, &syn, &CFG, false, false)), (TcpState::SynSent, 120, false));
    let synack = Segment { options: SYN_OPTS, ..seg(5000, 1001, SYN | ACK, 0) };
    assert_eq!(accept(t.packet(Dir::Reply, &synack, &CFG, false, false)), (TcpState::SynRecv, 60, false));
    // The handshake's ACK: established, assured, kube-proxy's 24 h.
    assert_eq!(
        accept(t.packet(Dir::Original, &seg(1001, 5001, ACK, 0), &CFG, true, false)),
        (TcpState::Established, 86400, true)
    );
    assert_eq!(({ t.seen[0].scale }, { t.seen[1].scale }), (7, 7));
    t
}

#[test]
fn handshake_data_and_close_follow_linux() {
    let mut t = established();
    // Data not yet acknowledged: the 300 s "unacknowledged" timeout.
    assert_eq!(accept(t.packet(Dir::Original, &seg(1001, 5001, ACK | PSH, 100), &CFG, true, true)).1, 300);
    assert_eq!(accept(t.packet(Dir::Reply, &seg(5001, 1101, ACK, 0), &CFG, true, true)).1, 86400);
    // Client closes: FIN_WAIT, CLOSE_WAIT (1 h), LAST_ACK, TIME_WAIT.
    assert_eq!(accept(t.packet(Dir::Original, &seg(1101, 5001, FIN | ACK, 0), &CFG, true, true)).0, TcpState::FinWait);
    assert_eq!(
        accept(t.packet(Dir::Reply, &seg(5001, 1102, ACK, 0), &CFG, true, true)),
        (TcpState::CloseWait, 3600, false)
    );
    assert_eq!(accept(t.packet(Dir::Reply, &seg(5001, 1102, FIN | ACK, 0), &CFG, true, true)).0, TcpState::LastAck);
    assert_eq!(
        accept(t.packet(Dir::Original, &seg(1102, 5002, ACK, 0), &CFG, true, true)),
        (TcpState::TimeWait, 120, false)
    );
    // A new SYN from the client on the closed connection: delete and track anew.
    assert_eq!(t.packet(Dir::Original, &seg(90_000, 0, SYN, 0), &CFG, true, true), Verdict::Reopen);
}

#[test]
fn rst_closes_with_the_10_second_timeout_and_an_early_rst_is_checked() {
    let mut t = established();
    // A RST before what the other side acknowledged: invalid (blind reset).
    assert_eq!(t.packet(Dir::Reply, &seg(4000, 0, RST, 0), &CFG, true, true), Verdict::Invalid(Invalid::Rst));
    assert_eq!(t.state, TcpState::Established);
    assert_eq!(accept(t.packet(Dir::Reply, &seg(5001, 0, RST, 0), &CFG, true, true)), (TcpState::Close, 10, false));
    // The only answer to a SYN is a RST: the entry goes at once.
    let syn = seg(1000, 0, SYN, 0);
    let mut t = TcpTrack::new(&syn, &CFG).unwrap();
    t.packet(Dir::Original, &syn, &CFG, false, false);
    assert_eq!(t.packet(Dir::Reply, &seg(0, 1001, RST | ACK, 0), &CFG, false, false), Verdict::Kill);
}

#[test]
fn over_the_window_is_invalid_under_it_ignored_as_linux_6_does() {
    let mut t = established();
    // Far beyond what the server's window allows (64240 << 7 from 5001).
    let wild = seg(1001 + 100_000_000, 5001, ACK, 100);
    assert_eq!(t.packet(Dir::Original, &wild, &CFG, true, true), Verdict::Invalid(Invalid::SeqOverWindow));
    // An ACK for data the server never sent.
    let ahead = seg(1001, 5001 + 1_000_000, ACK, 0);
    assert_eq!(t.packet(Dir::Original, &ahead, &CFG, true, true), Verdict::Invalid(Invalid::AckOverWindow));
    // Data acknowledged long ago, retransmitted far too late: since Linux 6.0 part of
    // the connection (so still translated) but changing nothing; before, INVALID
    // (kubernetes#74839's out-of-window packets, which kube-proxy's rule drops).
    let old = seg(1001u32.wrapping_sub(100_000_000), 5001, ACK, 10);
    let before = t;
    assert_eq!(t.packet(Dir::Original, &old, &CFG, true, true), Verdict::Ignore);
    assert_eq!(t, before, "an ignored segment changes nothing");
    // An ACK far under what the server has sent: ignored too.
    let stale_ack = seg(1001, 5001u32.wrapping_sub(20_000_000), ACK, 0);
    assert_eq!(t.packet(Dir::Original, &stale_ack, &CFG, true, true), Verdict::Ignore);
    let liberal = TcpConfig { liberal: true, ..CFG };
    assert_eq!(accept(t.packet(Dir::Original, &wild, &liberal, true, true)).0, TcpState::Established);
}

#[test]
fn mid_stream_pickup_when_loose() {
    let mid = seg(777_000, 888_000, ACK, 100);
    let mut t = TcpTrack::new(&mid, &CFG).unwrap();
    // Not answered yet: established but with the short timeout.
    assert_eq!(accept(t.packet(Dir::Original, &mid, &CFG, false, false)), (TcpState::Established, 300, false));
    // The peer answers (the entry has not seen a reply before this one): still short.
    assert_eq!(
        accept(t.packet(Dir::Reply, &seg(888_000, 777_100, ACK, 0), &CFG, false, false)),
        (TcpState::Established, 300, false)
    );
    // The next segment, a reply seen: assured, the long timeout.
    assert_eq!(
        accept(t.packet(Dir::Original, &seg(777_100, 888_000, ACK, 0), &CFG, true, false)),
        (TcpState::Established, 86400, true)
    );
    let strict = TcpConfig { loose: false, ..CFG };
    assert_eq!(TcpTrack::new(&mid, &strict), Err(Invalid::NotNew));
    assert_eq!(TcpTrack::new(&seg(1, 0, FIN | ACK, 0), &strict), Err(Invalid::NotNew));
    assert_eq!(TcpTrack::new(&seg(1, 0, SYN | FIN, 0), &CFG), Err(Invalid::Flags));
    assert_eq!(TcpTrack::new(&seg(1, 2, SYN | ACK, 0), &CFG), Err(Invalid::NotNew));
}

#[test]
fn simultaneous_open_reaches_established() {
    let syn = seg(1000, 0, SYN, 0);
    let mut t = TcpTrack::new(&syn, &CFG).unwrap();
    t.packet(Dir::Original, &syn, &CFG, false, false);
    assert_eq!(accept(t.packet(Dir::Reply, &seg(5000, 0, SYN, 0), &CFG, false, false)).0, TcpState::SynSent2);
    assert_eq!(accept(t.packet(Dir::Original, &seg(1000, 5001, SYN | ACK, 0), &CFG, true, false)).0, TcpState::SynRecv);
    assert_eq!(accept(t.packet(Dir::Reply, &seg(5001, 1001, ACK, 0), &CFG, true, false)).0, TcpState::Established);
}

#[test]
fn ignored_syn_resyncs_on_its_syn_ack() {
    let mut t = established();
    // The client restarted and sends a fresh SYN: ignored (the table cannot know).
    assert_eq!(t.packet(Dir::Original, &seg(700_000, 0, SYN, 0), &CFG, true, true), Verdict::Ignore);
    assert_eq!(t.state, TcpState::Established);
    // The server answers it: conntrack gets in sync from the SYN's values.
    let v = t.packet(Dir::Reply, &seg(9000, 700_001, SYN | ACK, 0), &CFG, true, true);
    assert_eq!(accept(v).0, TcpState::SynRecv);
    assert_eq!({ t.seen[0].end }, 700_001);
    assert_eq!(accept(t.packet(Dir::Original, &seg(700_001, 9001, ACK, 0), &CFG, true, true)).0, TcpState::Established);
}

#[test]
fn retransmissions_shorten_the_timeout() {
    let mut t = established();
    let data = seg(1001, 5001, ACK, 100);
    for _ in 0..3 {
        t.packet(Dir::Original, &data, &CFG, true, true);
    }
    // The fourth identical segment: max_retrans reached, 300 s.
    assert_eq!(accept(t.packet(Dir::Original, &data, &CFG, true, true)).1, 300);
}

#[test]
fn sack_blocks_extend_the_acknowledged_edge() {
    // kind 5, length 10, one block 2000..3000: the right edge is 3000.
    let opts = [1, 1, 5, 10, 0, 0, 0x07, 0xd0, 0, 0, 0x0b, 0xb8];
    assert_eq!(sack_edge(&opts, 1500), 3000);
    assert_eq!(sack_edge(&opts, 3500), 3500);
    assert_eq!(sack_edge(&[5, 3, 0], 10), 10, "malformed block ignored");
    // Timestamps alone (Linux's usual segment): no block. Timestamps and then a SACK
    // block: the block counts.
    let ts = [1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7];
    assert_eq!(sack_edge(&ts, 1500), 1500);
    let ts_sack = [ts.as_slice(), &opts].concat();
    assert_eq!(sack_edge(&ts_sack, 1500), 3000);
    let mut s = Side::default();
    options(&[3, 3, 20, 4, 2], &mut s);
    assert_eq!((s.scale, s.flags & (F_WINDOW_SCALE | F_SACK_PERM)), (14, F_WINDOW_SCALE | F_SACK_PERM));
    options(&[3, 2], &mut s);
    assert_eq!(s.flags & F_WINDOW_SCALE, 0);
}

#[test]
fn sequence_comparisons_wrap() {
    assert!(before(0xffff_fff0, 5));
    assert!(after(5, 0xffff_fff0));
    assert!(!before(5, 5));
}
