//! IPv4 prefixes (`10.244.0.0/16`) as configuration and address plans use them.

use core::fmt;
use core::str::FromStr;
use std::net::Ipv4Addr;

/// An IPv4 prefix with its host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

/// Why a string or an address/length pair is not an IPv4 prefix. The messages are
/// meant to follow the offending value in a configuration error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// No `/`.
    #[error("expected address/prefix")]
    NoSlash,
    /// The part before `/` is not an IPv4 address.
    #[error("invalid address")]
    BadAddress,
    /// The part after `/` is not a number.
    #[error("invalid prefix length")]
    BadLength,
    /// Longer than 32.
    #[error("prefix length over 32")]
    TooLong,
    /// Bits set below the prefix (`ip route` refuses these too: "Invalid prefix for
    /// given prefix length").
    #[error("host bits set")]
    HostBits,
}

impl Cidr {
    /// A prefix; host bits of `addr` must be zero.
    ///
    /// # Errors
    /// [`CidrError::TooLong`] or [`CidrError::HostBits`].
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, CidrError> {
        if prefix > 32 {
            return Err(CidrError::TooLong);
        }
        let c = Cidr { addr, prefix };
        if u32::from(addr) & !c.mask() != 0 {
            return Err(CidrError::HostBits);
        }
        Ok(c)
    }

    /// The prefix of length `prefix` (at most 32) that holds `ip`.
    pub fn of(ip: Ipv4Addr, prefix: u8) -> Cidr {
        let prefix = prefix.min(32);
        Cidr { addr: Ipv4Addr::from(u32::from(ip) & mask(prefix)), prefix }
    }

    /// The last address (the broadcast address of a subnet).
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// An address with its prefix length (`192.168.0.11/24`, an interface address):
    /// host bits allowed. Returns the address and the prefix it is in.
    ///
    /// # Errors
    /// As [`FromStr`], but for host bits.
    pub fn parse_host(s: &str) -> Result<(Ipv4Addr, Cidr), CidrError> {
        let (addr, prefix) = split(s)?;
        if prefix > 32 {
            return Err(CidrError::TooLong);
        }
        Ok((addr, Cidr::of(addr, prefix)))
    }

    /// The netmask as a number.
    pub fn mask(&self) -> u32 {
        mask(self.prefix)
    }

    /// Addresses in the prefix.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix.min(32)))
    }

    /// True when `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// True when the two prefixes share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// True when `other` lies wholly inside this prefix.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    /// The `i`-th address (0 is the network address).
    pub fn nth(&self, i: u64) -> Option<Ipv4Addr> {
        (i < self.size()).then(|| Ipv4Addr::from(u32::from(self.addr).wrapping_add(u32::try_from(i).unwrap_or(0))))
    }

    /// The `i`-th subnet of length `prefix`.
    pub fn subnet(&self, prefix: u8, i: u64) -> Option<Cidr> {
        if prefix < self.prefix || prefix > 32 || i >= 1u64 << (prefix - self.prefix) {
            return None;
        }
        let step = 1u64 << (32 - u32::from(prefix));
        let a = u64::from(u32::from(self.addr)) + i * step;
        Some(Cidr { addr: Ipv4Addr::from(u32::try_from(a).ok()?), prefix })
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) }
}

fn split(s: &str) -> Result<(Ipv4Addr, u8), CidrError> {
    let (a, p) = s.split_once('/').ok_or(CidrError::NoSlash)?;
    let addr: Ipv4Addr = a.parse().map_err(|_| CidrError::BadAddress)?;
    let prefix: u8 = p.parse().map_err(|_| CidrError::BadLength)?;
    Ok((addr, prefix))
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (addr, prefix) = split(s)?;
        Cidr::new(addr, prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_names_what_is_wrong() {
        assert_eq!("10.244.0.0/16".parse::<Cidr>(), Ok(Cidr { addr: Ipv4Addr::new(10, 244, 0, 0), prefix: 16 }));
        assert_eq!("10.244.0.1/16".parse::<Cidr>(), Err(CidrError::HostBits));
        assert_eq!("10.244.0.0".parse::<Cidr>(), Err(CidrError::NoSlash));
        assert_eq!("10.244.300.0/24".parse::<Cidr>(), Err(CidrError::BadAddress));
        assert_eq!("10.244.0.0/x".parse::<Cidr>(), Err(CidrError::BadLength));
        assert_eq!("10.244.0.0/33".parse::<Cidr>(), Err(CidrError::TooLong));
        let (ip, net) = Cidr::parse_host("192.168.0.11/24").unwrap();
        assert_eq!((ip, net.to_string()), (Ipv4Addr::new(192, 168, 0, 11), "192.168.0.0/24".to_string()));
        assert_eq!(Cidr::parse_host("0.0.0.0/0").unwrap().1.size(), 1 << 32);
    }
}
