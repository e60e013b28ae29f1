//! Changing the FIB while the node runs: a set of route changes is checked as a whole
//! against the routes in force, then applied as a whole, between batches (the stage is
//! borrowed mutably, so no packet sees half of it). A bad change is reported with the
//! route and field it is about, and nothing is applied.
//!
//! Cost: each IPv4 route of length 19..=32 rebuilds the poptrie subtree of its /18
//! (the routes in that /18 only); a shorter one rewrites the 2^(18 - length) direct
//! entries it covers; each IPv6 route is one hash-table insert or remove. No change
//! touches routes it does not cover.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{NextHop, NextHop6, RouteSpec, RouteSpec6, RouteStage};
use crate::table::lpm::Key;

/// One change to the route stage's FIB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteChange {
    /// Add or replace an IPv4 route.
    Add(RouteSpec),
    /// Remove the IPv4 route for exactly `dst/len`.
    Remove {
        /// Destination prefix.
        dst: Ipv4Addr,
        /// Prefix length.
        len: u8,
    },
    /// Add or replace an IPv6 route.
    Add6(RouteSpec6),
    /// Remove the IPv6 route for exactly `dst/len`.
    Remove6 {
        /// Destination prefix.
        dst: Ipv6Addr,
        /// Prefix length.
        len: u8,
    },
}

/// Why a set of route changes was refused (nothing of it was applied).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The prefix length is longer than the address.
    #[error("route {dst}/{len}: len: longer than {max} bits")]
    BadLength {
        /// The route's prefix.
        dst: IpAddr,
        /// Its length.
        len: u8,
        /// The address width.
        max: u8,
    },
    /// The next hop's port is not one of the stage's interfaces.
    #[error("route {dst}/{len}: next_hop: port {port} is not an interface of the node")]
    NoInterface {
        /// The route's prefix.
        dst: IpAddr,
        /// Its length.
        len: u8,
        /// The port named.
        port: u16,
    },
    /// The ECMP group does not exist.
    #[error("route {dst}/{len}: next_hop: ECMP group {group} does not exist")]
    NoGroup {
        /// The route's prefix.
        dst: IpAddr,
        /// Its length.
        len: u8,
        /// The group named.
        group: u16,
    },
    /// A removal names a route that is not there (nor added earlier in the set).
    #[error("route {dst}/{len}: no such route to remove")]
    NoSuchRoute {
        /// The route's prefix.
        dst: IpAddr,
        /// Its length.
        len: u8,
    },
}

impl RouteStage {
    /// Check every change in `changes` against the routes in force (and the earlier
    /// changes of the set), then apply them all in order; on an error nothing is
    /// applied. See the [module docs](self).
    ///
    /// # Errors
    /// The first change that is wrong, naming its route and field.
    pub fn update(&mut self, changes: &[RouteChange]) -> Result<(), RouteError> {
        // Routes the set adds (true) or removes (false) so far, for the removal check.
        let mut pending: Vec<(IpAddr, u8, bool)> = Vec::new();
        for c in changes {
            let (dst, len, max) = match *c {
                RouteChange::Add(r) => (IpAddr::V4(r.dst), r.len, 32),
                RouteChange::Remove { dst, len } => (IpAddr::V4(dst), len, 32),
                RouteChange::Add6(r) => (IpAddr::V6(r.dst), r.len, 128),
                RouteChange::Remove6 { dst, len } => (IpAddr::V6(dst), len, 128),
            };
            if len > max {
                return Err(RouteError::BadLength { dst, len, max });
            }
            let (port, group) = match *c {
                RouteChange::Add(r) => match r.next_hop {
                    NextHop::Connected(p) | NextHop::Via(_, p) => (Some(p), None),
                    NextHop::Multipath(g) => (None, Some((g, self.groups.len()))),
                    _ => (None, None),
                },
                RouteChange::Add6(r) => match r.next_hop {
                    NextHop6::Connected(p) | NextHop6::Via(_, p) => (Some(p), None),
                    NextHop6::Multipath(g) => (None, Some((g, self.groups6.len()))),
                    _ => (None, None),
                },
                _ => (None, None),
            };
            if let Some(p) = port.filter(|p| self.iface(*p).is_none()) {
                return Err(RouteError::NoInterface { dst, len, port: p.0 });
            }
            if let Some((group, _)) = group.filter(|(g, n)| usize::from(*g) >= *n) {
                return Err(RouteError::NoGroup { dst, len, group });
            }
            let key = masked(dst, len);
            let add = matches!(c, RouteChange::Add(_) | RouteChange::Add6(_));
            if !add {
                let here = match pending.iter().rev().find(|(d, l, _)| *d == key && *l == len) {
                    Some(&(_, _, added)) => added,
                    None => self.has_route(key, len),
                };
                if !here {
                    return Err(RouteError::NoSuchRoute { dst, len });
                }
            }
            pending.push((key, len, add));
        }
        for c in changes {
            match *c {
                RouteChange::Add(r) => {
                    self.fib.insert(u32::from(r.dst), r.len, r.next_hop);
                }
                RouteChange::Remove { dst, len } => {
                    self.fib.remove(u32::from(dst), len);
                }
                RouteChange::Add6(r) => {
                    self.fib6.insert(u128::from(r.dst), r.len, r.next_hop);
                }
                RouteChange::Remove6 { dst, len } => {
                    self.fib6.remove(u128::from(dst), len);
                }
            }
        }
        Ok(())
    }

    /// True when exactly `dst/len` (masked) is in the FIB.
    fn has_route(&self, dst: IpAddr, len: u8) -> bool {
        match dst {
            IpAddr::V4(a) => self.fib.get(u32::from(a), len).is_some(),
            IpAddr::V6(a) => self.fib6.get(u128::from(a), len).is_some(),
        }
    }
}

/// `dst` with the bits past `len` cleared.
fn masked(dst: IpAddr, len: u8) -> IpAddr {
    match dst {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).mask(len))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).mask(len))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::PortId;
    use crate::stage::route::{L3If, RouteConfig};
    use crate::wire::EthernetAddress;

    fn stage() -> RouteStage {
        let ifs = vec![
            L3If::routed(PortId(1), EthernetAddress([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(192, 168, 0, 10), 24, 1500)
                .with_ip6("fd00:ff::10".parse().unwrap(), 64),
        ];
        RouteStage::new(&RouteConfig { interfaces: ifs, ..RouteConfig::default() })
    }

    fn via(dst: [u8; 4], len: u8, gw: u8) -> RouteChange {
        RouteChange::Add(RouteSpec {
            dst: Ipv4Addr::from(dst),
            len,
            next_hop: NextHop::Via(Ipv4Addr::new(192, 168, 0, gw), PortId(1)),
        })
    }

    #[test]
    fn a_set_applies_whole_or_not_at_all() {
        let mut s = stage();
        let good = [via([10, 244, 1, 0], 24, 11), via([10, 244, 2, 0], 24, 12)];
        s.update(&good).unwrap();
        assert_eq!(
            s.lookup(Ipv4Addr::new(10, 244, 2, 9)).unwrap().1,
            NextHop::Via(Ipv4Addr::new(192, 168, 0, 12), PortId(1))
        );
        // A set whose third change names a port without an interface: refused, and
        // the first two (a replacement and a removal) are not applied either.
        let bad = [
            via([10, 244, 1, 0], 24, 99),
            RouteChange::Remove { dst: Ipv4Addr::new(10, 244, 2, 0), len: 24 },
            RouteChange::Add(RouteSpec {
                dst: Ipv4Addr::new(10, 244, 3, 0),
                len: 24,
                next_hop: NextHop::Connected(PortId(7)),
            }),
        ];
        let err = s.update(&bad).unwrap_err();
        assert_eq!(err.to_string(), "route 10.244.3.0/24: next_hop: port 7 is not an interface of the node");
        assert_eq!(
            s.lookup(Ipv4Addr::new(10, 244, 1, 9)).unwrap().1,
            NextHop::Via(Ipv4Addr::new(192, 168, 0, 11), PortId(1))
        );
        assert_eq!(
            s.lookup(Ipv4Addr::new(10, 244, 2, 9)).unwrap().1,
            NextHop::Via(Ipv4Addr::new(192, 168, 0, 12), PortId(1))
        );
    }

    #[test]
    fn removals_must_name_a_route_and_see_earlier_changes() {
        let mut s = stage();
        let gone = RouteChange::Remove { dst: Ipv4Addr::new(10, 9, 0, 0), len: 16 };
        assert_eq!(s.update(&[gone]).unwrap_err().to_string(), "route 10.9.0.0/16: no such route to remove");
        // Added then removed in one set: fine, and it is gone; host bits ignored.
        s.update(&[via([10, 9, 0, 0], 16, 5), RouteChange::Remove { dst: Ipv4Addr::new(10, 9, 1, 1), len: 16 }])
            .unwrap();
        assert_eq!(s.lookup(Ipv4Addr::new(10, 9, 0, 1)), None);
        // Removed twice in one set: the second is refused.
        s.update(&[via([10, 9, 0, 0], 16, 5)]).unwrap();
        assert!(s.update(&[gone, gone]).is_err());
        assert!(s.lookup(Ipv4Addr::new(10, 9, 0, 1)).is_some(), "nothing applied");
    }

    #[test]
    fn ipv6_and_field_errors() {
        let mut s = stage();
        let r6 = RouteSpec6 {
            dst: "fd00:b::".parse().unwrap(),
            len: 64,
            next_hop: NextHop6::Via("fe80::b".parse().unwrap(), PortId(1)),
        };
        s.update(&[RouteChange::Add6(r6)]).unwrap();
        assert_eq!(s.lookup6("fd00:b::5".parse().unwrap()), Some((64, r6.next_hop)));
        let long = RouteChange::Add6(RouteSpec6 { len: 129, ..r6 });
        assert_eq!(s.update(&[long]).unwrap_err().to_string(), "route fd00:b::/129: len: longer than 128 bits");
        let group = RouteChange::Add6(RouteSpec6 { next_hop: NextHop6::Multipath(3), ..r6 });
        assert_eq!(
            s.update(&[group]).unwrap_err().to_string(),
            "route fd00:b::/64: next_hop: ECMP group 3 does not exist"
        );
        s.update(&[RouteChange::Remove6 { dst: r6.dst, len: 64 }]).unwrap();
        assert_eq!(s.lookup6("fd00:b::5".parse().unwrap()), None);
    }
}
