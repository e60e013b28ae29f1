//! What operators see and clear: connections one line each, as `conntrack -L` prints
//! them, and flushing by filter, as `conntrack -D` does (kube-proxy clears stale UDP
//! entries with `-D -p udp --orig-dst SERVICE --dst-nat ENDPOINT`).

use core::fmt;
use std::net::IpAddr;

use super::proto::ProtoState;
use super::state::{Conntrack, key4, key6};
use crate::table::conntrack::{CtEntry, CtId, status};
use crate::time::Instant;
use crate::wire::flow::FlowKey;

/// One connection as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// IP protocol.
    pub proto: u8,
    /// Seconds until it expires.
    pub ttl_secs: u64,
    /// TCP state name (`ESTABLISHED`), empty for other protocols.
    pub state: &'static str,
    /// The original direction's tuple.
    pub original: FlowKey,
    /// The reply direction's tuple.
    pub reply: FlowKey,
    /// No reply seen yet.
    pub unreplied: bool,
    /// Assured (never dropped early).
    pub assured: bool,
    /// Source NAT applied.
    pub src_nat: bool,
    /// Destination NAT applied.
    pub dst_nat: bool,
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        58 => "icmpv6",
        132 => "sctp",
        _ => "unknown",
    }
}

fn tuple(f: &mut fmt::Formatter<'_>, k: &FlowKey) -> fmt::Result {
    write!(f, "src={} dst={} ", k.src_addr(), k.dst_addr())?;
    if k.proto == 1 || k.proto == 58 {
        write!(f, "id={}", k.src_port)
    } else {
        write!(f, "sport={} dport={}", k.src_port, k.dst_port)
    }
}

impl fmt::Display for Listing {
    /// `conntrack -L`'s layout: `tcp      6 86397 ESTABLISHED src=.. dst=.. sport=..
    /// dport=.. src=.. dst=.. sport=.. dport=.. [ASSURED] mark=0 use=1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<8} {} {} ", proto_name(self.proto), self.proto, self.ttl_secs)?;
        if !self.state.is_empty() {
            write!(f, "{} ", self.state)?;
        }
        tuple(f, &self.original)?;
        if self.unreplied {
            write!(f, " [UNREPLIED]")?;
        }
        write!(f, " ")?;
        tuple(f, &self.reply)?;
        if self.assured {
            write!(f, " [ASSURED]")?;
        }
        write!(f, " mark=0 use=1")
    }
}

/// Which connections a flush removes: every field set must match (as `conntrack -D`
/// filters do); the empty filter matches everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// IP protocol.
    pub proto: Option<u8>,
    /// The original source address (`--orig-src`).
    pub orig_src: Option<IpAddr>,
    /// The original destination address (`--orig-dst`, a service's address).
    pub orig_dst: Option<IpAddr>,
    /// The original destination port (`--orig-port-dst`).
    pub orig_dport: Option<u16>,
    /// Where destination NAT sent it (`--dst-nat`, an endpoint: the reply source).
    pub dst_nat: Option<IpAddr>,
}

impl Filter {
    /// True when `l` matches.
    pub fn matches(&self, l: &Listing) -> bool {
        self.proto.is_none_or(|p| p == l.proto)
            && self.orig_src.is_none_or(|a| a == l.original.src_addr())
            && self.orig_dst.is_none_or(|a| a == l.original.dst_addr())
            && self.orig_dport.is_none_or(|p| p == l.original.dst_port)
            && self.dst_nat.is_none_or(|a| l.dst_nat && a == l.reply.src_addr())
    }
}

fn listing<A: Copy>(
    e: &CtEntry<A, ProtoState>,
    now: Instant,
    key: impl Fn(&crate::table::conntrack::Tuple<A>) -> FlowKey,
) -> Listing {
    Listing {
        proto: e.original.proto,
        ttl_secs: e.expires.saturating_since(now).as_nanos() / 1_000_000_000,
        state: match e.proto {
            ProtoState::Tcp(t) => t.state.as_str(),
            _ => "",
        },
        original: key(&e.original),
        reply: key(&e.reply),
        unreplied: !e.has(status::SEEN_REPLY),
        assured: e.has(status::ASSURED),
        src_nat: e.has(status::SRC_NAT),
        dst_nat: e.has(status::DST_NAT),
    }
}

impl Conntrack {
    /// Every live connection at `now`, IPv4 first, in table order.
    pub fn list(&self, now: Instant) -> Vec<Listing> {
        let v4 = self.v4.iter(now).map(|(_, e)| listing(e, now, key4));
        let v6 = self.v6.iter(now).map(|(_, e)| listing(e, now, key6));
        v4.chain(v6).collect()
    }

    /// Remove every connection `filter` matches; returns how many. Packets of a removed
    /// connection start a new one (a UDP client's next datagram goes to a live
    /// endpoint: the fix for stale entries after an endpoint change).
    pub fn flush(&mut self, filter: &Filter, now: Instant) -> usize {
        let gone4: Vec<CtId> =
            self.v4.iter(now).filter(|(_, e)| filter.matches(&listing(e, now, key4))).map(|(id, _)| id).collect();
        let gone6: Vec<CtId> =
            self.v6.iter(now).filter(|(_, e)| filter.matches(&listing(e, now, key6))).map(|(id, _)| id).collect();
        for id in &gone4 {
            self.v4.remove(*id);
        }
        for id in &gone6 {
            self.v6.remove(*id);
        }
        gone4.len() + gone6.len()
    }
}
