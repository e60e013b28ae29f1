//! The node file's `nat` and `conntrack` sections, checked and turned into the NAT
//! and conntrack stages' configurations.

use core::ops::RangeInclusive;
use std::net::{Ipv4Addr, SocketAddr};

use super::ConfigError;
use super::file::{ConntrackFile, NatFile};
use crate::buf::PortId;
use crate::stage::conntrack::CtConfig;
use crate::stage::nat::{DnatRule, Masquerade, NatConfig, PortMode};
use crate::time::Duration;
use crate::wire::cidr::Cidr;

/// kube-proxy's table size for one core: max(32768 x cores, 131072).
pub(super) const CONNTRACK_MIN: usize = 131_072;

/// Parse `FIRST-LAST`.
pub(super) fn range(s: &str) -> Option<RangeInclusive<u16>> {
    let (a, b) = s.split_once('-')?;
    let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
    (a >= 1 && a <= b).then_some(a..=b)
}

/// The NAT configuration of a node whose pods are in `cluster`, whose interface
/// addresses are `local` (by port) and whose primary address is `primary`. Errors
/// name the field.
pub(super) fn nat(
    file: &str,
    me: &str,
    f: &NatFile,
    cluster: Cidr,
    local: &[(PortId, Ipv4Addr)],
    primary: Option<Ipv4Addr>,
    errors: &mut Vec<ConfigError>,
) -> NatConfig {
    let mut push = |field: &str, value: &str, problem: &str| {
        errors.push(ConfigError::field(file, me, field, Some(value), problem));
    };
    let except = match &f.non_masquerade_cidrs {
        None => vec![cluster],
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                c.parse::<Cidr>().map_err(|err| push(&format!("nat.nonMasqueradeCIDRs[{i}]"), c, &err.to_string())).ok()
            })
            .collect(),
    };
    let ports = match f.port_range.as_deref() {
        None => 1024..=65535,
        Some(r) => range(r).unwrap_or_else(|| {
            push("nat.portRange", r, "expected FIRST-LAST with 1 <= FIRST <= LAST <= 65535");
            1024..=65535
        }),
    };
    let mut dnat = Vec::new();
    for (i, d) in f.dnat.iter().enumerate() {
        let proto = match d.protocol.to_ascii_lowercase().as_str() {
            "tcp" => 6,
            "udp" => 17,
            _ => {
                push(&format!("nat.dnat[{i}].protocol"), &d.protocol, "expected tcp or udp");
                continue;
            }
        };
        let addr = |field: &str, v: &str, push: &mut dyn FnMut(&str, &str, &str)| -> Option<SocketAddr> {
            v.parse::<SocketAddr>()
                .map_err(|_| push(&format!("nat.dnat[{i}].{field}"), v, "expected ADDRESS:PORT"))
                .ok()
        };
        let (Some(from), Some(to)) = (addr("destination", &d.destination, &mut push), addr("to", &d.to, &mut push))
        else {
            continue;
        };
        if from.is_ipv4() != to.is_ipv4() {
            push(&format!("nat.dnat[{i}].to"), &d.to, "not the destination's address family");
            continue;
        }
        if dnat.iter().any(|r: &DnatRule| r.proto == proto && r.dst == from.ip() && r.port == from.port()) {
            push(&format!("nat.dnat[{i}].destination"), &d.destination, "a rule for it comes earlier");
            continue;
        }
        dnat.push(DnatRule { proto, dst: from.ip(), port: from.port(), to: to.ip(), to_port: to.port() });
    }
    NatConfig {
        dnat,
        masquerade: f.masquerade.unwrap_or(true).then(|| Masquerade { sources: vec![cluster], except }),
        hairpin: f.hairpin.unwrap_or(true),
        addresses: local.to_vec(),
        fallback: primary,
        ports,
        mode: if f.fully_random.unwrap_or(true) { PortMode::FullyRandom } else { PortMode::KeepPort },
        ..NatConfig::default()
    }
}

/// The conntrack configuration (capacity for the whole node: workers share it out).
/// Errors name the field.
pub(super) fn conntrack(file: &str, me: &str, f: &ConntrackFile, errors: &mut Vec<ConfigError>) -> CtConfig {
    let max = crate::table::conntrack::MAX_CAPACITY;
    if let Some(n) = f.max.filter(|&n| n > max) {
        errors.push(ConfigError::field(file, me, "conntrack.max", Some(&n.to_string()), &format!("at most {max}")));
    }
    let mut c = CtConfig { capacity: f.max.unwrap_or(CONNTRACK_MIN).clamp(1, max), ..CtConfig::default() };
    c.tcp.liberal = f.liberal;
    if let Some(s) = f.tcp_established {
        c.tcp.timeouts.established = Duration::from_secs(s);
    }
    if let Some(s) = f.tcp_close_wait {
        c.tcp.timeouts.close_wait = Duration::from_secs(s);
    }
    if let Some(s) = f.udp {
        c.other.udp = Duration::from_secs(s);
    }
    if let Some(s) = f.udp_stream {
        c.other.udp_stream = Duration::from_secs(s);
    }
    c
}
