//! The two NAT stages: `dnat` before routing (netfilter's PREROUTING: destination NAT
//! of new connections, and the reverse of source NAT on replies) and `snat` after it
//! (POSTROUTING: source NAT and masquerade of new connections, and the reverse of
//! destination NAT on replies).
//!
//! Both work as `nf_nat_packet` does: a connection's NAT is decided once, on its
//! first packet, by changing the tuple its replies will carry; afterwards every packet
//! of either direction is made to look like the inverse of the other direction's
//! tuple, each stage changing its own side. ICMP errors RELATED to a translated
//! connection have their outer address and the packet they quote translated
//! (`nf_nat_icmp_reply_translation`); errors the node makes itself (the route stage's
//! fragmentation-needed or time-exceeded about a translated packet) enter after
//! conntrack, so `snat` finds their connection from the quote.

use std::net::{IpAddr, Ipv4Addr};

use super::ports::PortAlloc;
use super::rewrite::{Endpoint, Manip, rewrite, rewrite_icmp_error, set_side, side};
use super::rules::NatConfig;
use crate::buf::{Batch, L3Kind, PktFlags};
use crate::pipeline::{Context, Disposition, DropReason, Stage, StageEvent};
use crate::stage::conntrack::lookup::{View, related, view_generated};
use crate::stage::conntrack::state::{Conntrack, CtRef, Holder, SharedConntrack, info, pack, tuple4, unpack};
use crate::stage::lb::{ServiceTable, Verdict};
use crate::table::conntrack::status;
use crate::wire::flow::FlowKey;

/// See the [module docs](self).
#[derive(Debug)]
pub struct NatStage {
    ct: SharedConntrack,
    manip: Manip,
    cfg: NatConfig,
    ports: PortAlloc,
    /// Services (the `dnat` stage's; empty in `snat`).
    services: ServiceTable,
}

fn v4(a: &[u8; 16]) -> Ipv4Addr {
    Ipv4Addr::new(a[0], a[1], a[2], a[3])
}

fn ip(k: &FlowKey, a: &[u8; 16]) -> IpAddr {
    if k.v6 { IpAddr::V6((*a).into()) } else { IpAddr::V4(v4(a)) }
}

fn addr16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// The `dnat` stage's decision for a new connection.
enum Dnat {
    /// Untranslated.
    None,
    /// To this endpoint (the reply tuple's source); masquerade after routing when
    /// true.
    To(Endpoint, bool),
    /// Rejected (the route stage answers with port unreachable).
    Reject(DropReason),
    /// Dropped.
    Drop(DropReason),
}

/// Why a new connection's NAT could not be set up.
enum Refused {
    NoPort,
    NoAddress,
}

impl NatStage {
    /// The `dnat` stage (before routing) over the worker's conntrack state.
    pub fn dnat(ct: SharedConntrack, cfg: NatConfig) -> Self {
        Self::new(ct, Manip::Dst, cfg)
    }

    /// The `snat` stage (after routing) over the worker's conntrack state.
    pub fn snat(ct: SharedConntrack, cfg: NatConfig) -> Self {
        Self::new(ct, Manip::Src, cfg)
    }

    fn new(ct: SharedConntrack, manip: Manip, cfg: NatConfig) -> Self {
        let ports = PortAlloc::new(cfg.ports.clone(), cfg.mode, cfg.worker.0, cfg.worker.1);
        NatStage { ct, manip, cfg, ports, services: ServiceTable::default() }
    }

    /// The service table this stage balances new connections with (`dnat` only).
    pub fn services(&self) -> &ServiceTable {
        &self.services
    }

    /// The service table, to change (between batches).
    pub fn services_mut(&mut self) -> &mut ServiceTable {
        &mut self.services
    }

    /// Give this stage a service table.
    pub fn with_services(mut self, services: ServiceTable) -> Self {
        self.services = services;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &NatConfig {
        &self.cfg
    }

    /// Take a new configuration: later new connections follow it; connections already
    /// translated keep their translation.
    pub fn reconfigure(&mut self, cfg: NatConfig) {
        self.ports = PortAlloc::new(cfg.ports.clone(), cfg.mode, cfg.worker.0, cfg.worker.1);
        self.cfg = cfg;
    }

    /// Destination NAT decision for a new connection `orig`: the service table's
    /// verdict, else a DNAT rule's (its reply tuple), else none.
    fn decide_dnat(services: &mut ServiceTable, cfg: &NatConfig, cx: &mut Context<'_>, orig: &FlowKey) -> Dnat {
        if !services.is_empty() {
            let mut random = || rand_core::RngCore::next_u32(cx.rng);
            match services.decide(orig, cx.now, &mut random) {
                Verdict::Pass => {}
                Verdict::Dnat { to, masquerade, affinity } => {
                    cx.count(if affinity { StageEvent::SvcAffinity } else { StageEvent::SvcNew });
                    return Dnat::To(Endpoint { addr: addr16(to.addr), port: to.port }, masquerade);
                }
                Verdict::Reject(reason) => return Dnat::Reject(reason),
                Verdict::Drop(reason) => return Dnat::Drop(reason),
            }
        }
        let rule = cfg.dnat_for(orig.proto, ip(orig, &orig.dst), orig.dst_port);
        match rule {
            Some(rule) => Dnat::To(Endpoint { addr: addr16(rule.to), port: rule.to_port }, false),
            None => Dnat::None,
        }
    }

    /// Source NAT decision for a new connection whose replies (after destination NAT)
    /// carry `reply`, its packet going out of `out_port`: the node's endpoint its
    /// replies will be sent to, and the [`Conntrack::hash_of`] of the reply tuple with
    /// it (the clash check computed it); none when not translated. Only the endpoint
    /// is handed back: copying the 40-byte reply tuple out through the result cost a
    /// new connection 19 instructions (`benches/callgrind.sh`).
    fn decide_snat(
        &self,
        ct: &Conntrack,
        cx: &mut Context<'_>,
        reply: &FlowKey,
        st: u8,
        (out_port, marked): (crate::buf::PortId, bool),
    ) -> Result<Option<(Endpoint, u64, bool)>, Refused> {
        if reply.v6 {
            return Ok(None);
        }
        // The packet now goes the reverse of `reply`.
        let (src, dst) = (v4(&reply.dst), v4(&reply.src));
        let (proto, sport) = (reply.proto, reply.dst_port);
        let hairpin = self.cfg.hairpin && st & status::DST_NAT != 0 && src == dst;
        if !hairpin && !marked && !self.cfg.masquerades(src, dst) {
            return Ok(None);
        }
        let addr = self.cfg.address_of(out_port).ok_or(Refused::NoAddress)?;
        let mut to = Endpoint { addr: addr16(IpAddr::V4(addr)), port: 0 };
        let candidate = |p: u16| {
            let mut r = *reply;
            set_side(&mut r, Manip::Dst, Endpoint { port: p, ..to });
            r
        };
        let now = cx.now;
        let has_ports = matches!(proto, 6 | 17 | 132 | 136 | 1 | 58);
        // The last candidate checked, with its hash and whether no entry at all had
        // it: the one chosen.
        let mut last = None;
        let mut taken = |p: u16| {
            let c = candidate(p);
            let t = tuple4(&c);
            let h = ct.v4.hash(&t);
            let holder = ct.holder4(&t, &c, h, now);
            last = Some((p, h, holder == Holder::Nobody));
            holder == Holder::Live
        };
        if has_ports {
            to.port = self.ports.choose(proto, sport, cx.rng, &mut taken).ok_or(Refused::NoPort)?;
        } else if taken(0) {
            return Err(Refused::NoPort);
        }
        let (h, free) = match last {
            Some((p, h, free)) if p == to.port => (h, free),
            _ => (ct.hash_of(&candidate(to.port)), false),
        };
        Ok(Some((to, h, free)))
    }

    /// The `dnat` hook's decision for pending connection `k`, whose first packet
    /// `pkt` passes: recorded on the connection (its reply tuple and status), and
    /// the destination the packet must have; the reason when it is dropped.
    #[inline(always)]
    fn first_dnat(
        (services, cfg): (&mut ServiceTable, &NatConfig),
        ct: &mut Conntrack,
        cx: &mut Context<'_>,
        pkt: crate::buf::PktId,
        k: u16,
    ) -> Result<Endpoint, DropReason> {
        let Some(p) = ct.pending_ref(k) else { return Err(DropReason::NatMalformed) };
        let flag = match Self::decide_dnat(services, cfg, cx, &p.key) {
            Dnat::None => PktFlags::empty(),
            Dnat::To(to, masquerade) => {
                cx.count(StageEvent::DnatNew);
                // The replies will come from `to`: the source side of the reply tuple.
                let mut reply = p.reply;
                set_side(&mut reply, Manip::Src, to);
                // That side of the new reply tuple (both ports for ICMP), read back.
                let want = side(&reply, Manip::Src);
                ct.set_reply(k, reply, status::DST_NAT | status::DST_NAT_DONE);
                if masquerade {
                    cx.pool.meta_mut(pkt).flags |= PktFlags::MASQUERADE;
                }
                return Ok(want);
            }
            // The route stage answers with port unreachable.
            Dnat::Reject(DropReason::SvcNoEndpoints) => PktFlags::REJECT_NO_ENDPOINTS,
            Dnat::Reject(_) => PktFlags::REJECT_UNKNOWN_PORT,
            Dnat::Drop(reason) => return Err(reason),
        };
        let want = side(&p.reply, Manip::Src);
        ct.add_status(k, status::DST_NAT_DONE);
        if !flag.is_empty() {
            cx.pool.meta_mut(pkt).flags |= flag;
        }
        Ok(want)
    }

    /// The `snat` hook's decision for pending connection `k`, whose first packet
    /// passes (leaving by `out_port`, with its `flags`): recorded on the connection,
    /// and the source the packet must have; the reason when it is dropped.
    #[inline(never)]
    fn first_snat(
        &self,
        ct: &mut Conntrack,
        cx: &mut Context<'_>,
        k: u16,
        (out_port, flags): (crate::buf::PortId, PktFlags),
    ) -> Result<Endpoint, DropReason> {
        let Some(p) = ct.pending_ref(k) else { return Err(DropReason::NatMalformed) };
        let marked = flags.contains(PktFlags::MASQUERADE);
        match self.decide_snat(ct, cx, &p.reply, p.status, (out_port, marked)) {
            Ok(None) => {
                let want = side(&p.reply, Manip::Dst);
                ct.add_status(k, status::SRC_NAT_DONE);
                Ok(want)
            }
            Ok(Some((to, h, free))) => {
                // SNAT leaves the reply's source: the client's after a hairpin's DNAT.
                let hairpin = p.status & status::DST_NAT != 0 && p.key.src == p.reply.src;
                cx.count(if hairpin { StageEvent::NatHairpin } else { StageEvent::SnatNew });
                // The replies will go to `to`: the destination side of the reply tuple.
                let mut reply = p.reply;
                set_side(&mut reply, Manip::Dst, to);
                let want = side(&reply, Manip::Dst);
                ct.set_reply_hashed(k, reply, h, status::SRC_NAT | status::SRC_NAT_DONE, free);
                Ok(want)
            }
            Err(Refused::NoPort) => Err(DropReason::NatPortExhausted),
            Err(Refused::NoAddress) => Err(DropReason::NatNoAddress),
        }
    }

    /// Translate an ICMP error RELATED to connection `orig`/`reply` (status `st`),
    /// going in the reply direction when `reply_dir`.
    fn icmp_error(
        &self,
        cx: &mut Context<'_>,
        pkt: crate::buf::PktId,
        (orig, reply, st): (FlowKey, FlowKey, u8),
        reply_dir: bool,
    ) -> Option<()> {
        // The NAT this hook undoes or applies for a packet of this direction.
        let (mine, theirs) = (status::SRC_NAT, status::DST_NAT);
        let (mine, theirs) = if self.manip == Manip::Src { (mine, theirs) } else { (theirs, mine) };
        let need = if reply_dir { theirs } else { mine };
        if st & need == 0 {
            return Some(());
        }
        // The other direction's tuple: the quote becomes a packet of it, and the outer
        // header a packet answering it.
        let other = if reply_dir { orig } else { reply };
        let inner = side(&other, self.manip.other());
        let outer = side(&other.reversed(), self.manip).addr;
        let (b, m) = cx.pool.slot_and_meta_mut(pkt);
        if self.cfg.fixes.icmp_inner {
            rewrite_icmp_error(b, m, self.manip, outer, inner)
        } else {
            rewrite(b, m, self.manip, Endpoint { addr: outer, port: side(&m.flow, self.manip).port })
        }
    }
}

/// The connection of an ICMP error the node made (it entered after conntrack).
fn generated_related(ct: &Conntrack, cx: &mut Context<'_>, pkt: crate::buf::PktId) -> Option<Generated> {
    let m = *cx.pool.meta(pkt);
    if !m.flags.contains(PktFlags::GENERATED) || m.ct != 0 || !matches!(m.l3_kind, L3Kind::Ipv4 | L3Kind::Ipv6) {
        return None;
    }
    let View::Related(quoted) = view_generated(cx.pool, pkt) else { return None };
    if let Ok((Some(r), bits)) = related(ct, &quoted, cx.now) {
        let meta = cx.pool.meta_mut(pkt);
        meta.ct = pack(r);
        meta.ct_info = bits;
        return Some(Generated::Tracked(r, bits));
    }
    // About a packet whose new connection died with it (the too-big first packet the
    // error answers): translated by that connection all the same, as the kernel's
    // error is by the unconfirmed entry of the packet it quotes.
    let inverse = quoted.reversed();
    ct.recently_dropped().iter().find_map(|&(key, reply, st)| {
        if reply == inverse {
            Some(Generated::Dropped(key, reply, st, true))
        } else if key == inverse {
            Some(Generated::Dropped(key, reply, st, false))
        } else {
            None
        }
    })
}

/// The connection an ICMP error the node made is about.
enum Generated {
    /// A tracked connection, and the error's `ct_info` bits.
    Tracked(CtRef, u8),
    /// A new connection dropped in the last batch (original, reply, status), and
    /// whether the error goes in its reply direction.
    Dropped(FlowKey, FlowKey, u8, bool),
}

impl Stage for NatStage {
    fn name(&self) -> &'static str {
        match self.manip {
            Manip::Dst => "dnat",
            Manip::Src => "snat",
        }
    }

    /// The source-side stage has nothing to do without live packets; the
    /// destination-side one hands ended connections to the service table per batch.
    fn skips_final_batches(&self) -> bool {
        self.manip == Manip::Src
    }

    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        // One loop per hook, the hook a constant in each: told at run time, the
        // hook's choices cost a new connection about 30 instructions in each stage
        // (`benches/callgrind.sh`).
        match self.manip {
            Manip::Dst => self.run::<true>(cx, batch),
            Manip::Src => self.run::<false>(cx, batch),
        }
    }
}

impl NatStage {
    /// The stage's work on a batch, as the `dnat` hook when `DST`, else as `snat`.
    #[inline(always)]
    fn run<const DST: bool>(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        let manip = if DST { Manip::Dst } else { Manip::Src };
        let Ok(mut ct) = self.ct.lock() else { return };
        if manip == Manip::Dst && !self.services.is_empty() {
            let services = &mut self.services;
            ct.drain_ended(|addr, port, proto| services.connection_ended((addr, port), proto));
        }
        if batch.live_count() == 0 {
            return;
        }
        for i in 0..batch.len() {
            if !batch.is_live(i) || batch.disposition(i) == Disposition::Held {
                continue;
            }
            let pkt = batch.pkt(i);
            // What this stage reads of the metadata (not a copy of all of it).
            let (ct_ref, ct_info, out_port, flags) = {
                let m = cx.pool.meta(pkt);
                (m.ct, m.ct_info, m.out_port, m.flags)
            };
            let (r, bits) = match unpack(ct_ref) {
                Some(r) => (r, ct_info),
                None if manip == Manip::Src => match generated_related(&ct, cx, pkt) {
                    Some(Generated::Tracked(r, bits)) => (r, bits),
                    Some(Generated::Dropped(orig, reply, st, reply_dir)) => {
                        if self.icmp_error(cx, pkt, (orig, reply, st), reply_dir).is_none() {
                            cx.drop(batch, i, DropReason::NatMalformed);
                        }
                        continue;
                    }
                    None => continue,
                },
                None => continue,
            };
            let reply_dir = bits & info::REPLY != 0;
            // A committed connection whose translation does not touch this hook's side
            // in this direction has nothing to do here (the `snat` stage on a service
            // connection's requests, both stages on untranslated ones): decided from
            // the status alone, without copying the tuples.
            if !matches!(r, CtRef::Pending(_)) && bits & info::RELATED == 0 {
                let (mine, theirs) = if manip == Manip::Src {
                    (status::SRC_NAT, status::DST_NAT)
                } else {
                    (status::DST_NAT, status::SRC_NAT)
                };
                let need = if reply_dir { theirs } else { mine };
                let Some((st, other)) = ct.nat_view(r, reply_dir) else { continue };
                if st & need == 0 {
                    continue;
                }
                // This side must be that of the inverse of the other direction's
                // tuple: read straight from the entry, no tuples copied.
                let want = if manip == Manip::Src {
                    Endpoint { addr: other.dst, port: other.dst_port }
                } else {
                    Endpoint { addr: other.src, port: other.src_port }
                };
                if side(&cx.pool.meta(pkt).flow, manip) != want {
                    let (b, meta) = cx.pool.slot_and_meta_mut(pkt);
                    if rewrite(b, meta, manip, want).is_none() {
                        cx.drop(batch, i, DropReason::NatMalformed);
                    } else if manip == Manip::Dst {
                        meta.flags |= PktFlags::DNATED;
                    }
                }
                continue;
            }
            if bits & info::RELATED != 0 {
                let Some(t) = ct.tuples(r) else { continue };
                if self.icmp_error(cx, pkt, t, reply_dir).is_none() {
                    cx.drop(batch, i, DropReason::NatMalformed);
                }
                continue;
            }
            // A new connection, read in place (copying its two 40-byte tuples out,
            // in both stages, cost 130 instructions a connection).
            let CtRef::Pending(k) = r else { continue };
            let Some(p) = ct.pending_ref(k) else { continue };
            let done = if manip == Manip::Dst { status::DST_NAT_DONE } else { status::SRC_NAT_DONE };
            // Make this side of the packet that of the inverse of the other direction:
            // the `manip` side of the inverse is the other side of the tuple.
            let want = if reply_dir || p.status & done != 0 {
                side(if reply_dir { &p.key } else { &p.reply }, manip.other())
            } else {
                // A new connection's first packet through this hook decides, in a
                // function per hook (in the loop, shared by both, the decision cost
                // a new connection about 100 instructions more); `snat`'s out of
                // line (inlined, it cost 25 more: registers).
                let decided = match manip {
                    Manip::Dst => Self::first_dnat((&mut self.services, &self.cfg), &mut ct, cx, pkt, k),
                    Manip::Src => self.first_snat(&mut ct, cx, k, (out_port, flags)),
                };
                match decided {
                    Ok(want) => want,
                    Err(reason) => {
                        cx.drop(batch, i, reason);
                        continue;
                    }
                }
            };
            if side(&cx.pool.meta(pkt).flow, manip) != want {
                let (b, meta) = cx.pool.slot_and_meta_mut(pkt);
                if rewrite(b, meta, manip, want).is_none() {
                    cx.drop(batch, i, DropReason::NatMalformed);
                } else if manip == Manip::Dst {
                    // The destination changed before routing, in either direction
                    // (un-SNAT of a reply too): br_netfilter's `daddr_was_changed`.
                    meta.flags |= PktFlags::DNATED;
                }
            }
        }
    }
}
