//! Simulated hosts: smoltcp interfaces with real TCP, UDP and ICMP sockets, ARP and
//! IPv6 neighbour discovery, each with its own MAC, addresses and routes. Pods,
//! external clients and other nodes' kernels are hosts.
//!
//! A host's one interface is port 0. smoltcp keeps time in microseconds: the virtual
//! clock (nanoseconds) is handed to it rounded down. smoltcp 0.14 ignores ICMP errors
//! for TCP and has no PMTU discovery (design.md): PMTU signalling is checked on the
//! wire, not through the host's TCP.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

use crate::error::SimError;
use crate::workload::App;

/// How to build a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// Unique name.
    pub name: String,
    /// MAC address.
    pub mac: [u8; 6],
    /// IPv4 address and prefix length.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// IPv4 default gateway.
    pub gateway4: Option<Ipv4Addr>,
    /// A second IPv4 address and prefix, after the first (an on-link link-local net).
    pub ipv4_extra: Option<(Ipv4Addr, u8)>,
    /// IPv6 address and prefix length.
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// IPv6 default gateway.
    pub gateway6: Option<Ipv6Addr>,
    /// Interface MTU (IP packet size).
    pub mtu: usize,
}

impl HostConfig {
    /// An IPv4 host `name` with `addr/prefix`, MTU 1500, MAC derived from the address.
    pub fn v4(name: &str, addr: Ipv4Addr, prefix: u8) -> Self {
        let o = addr.octets();
        HostConfig {
            name: name.to_owned(),
            mac: [0x02, 0x00, o[0], o[1], o[2], o[3]],
            ipv4: Some((addr, prefix)),
            ipv4_extra: None,
            gateway4: None,
            ipv6: None,
            gateway6: None,
            mtu: 1500,
        }
    }

    /// Set the IPv4 default gateway.
    pub fn gateway(mut self, gw: Ipv4Addr) -> Self {
        self.gateway4 = Some(gw);
        self
    }

    /// Set the MTU.
    pub fn mtu(mut self, mtu: usize) -> Self {
        self.mtu = mtu;
        self
    }
}

/// smoltcp's view of the host's port: frames in from the link, frames out to it.
#[derive(Debug, Default)]
pub(crate) struct SimDevice {
    pub(crate) rx: VecDeque<Vec<u8>>,
    pub(crate) tx: Vec<Vec<u8>>,
    mtu: usize,
}

pub(crate) struct SimRx(Vec<u8>);
pub(crate) struct SimTx<'a>(&'a mut Vec<Vec<u8>>);

impl RxToken for SimRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for SimTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl Device for SimDevice {
    type RxToken<'a> = SimRx;
    type TxToken<'a> = SimTx<'a>;

    fn receive(&mut self, _t: smoltcp::time::Instant) -> Option<(SimRx, SimTx<'_>)> {
        let f = self.rx.pop_front()?;
        Some((SimRx(f), SimTx(&mut self.tx)))
    }

    fn transmit(&mut self, _t: smoltcp::time::Instant) -> Option<SimTx<'_>> {
        Some(SimTx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        // smoltcp counts the Ethernet header in the MTU of an Ethernet device.
        c.max_transmission_unit = self.mtu + 14;
        c
    }
}

/// A simulated host.
pub struct Host {
    pub(crate) config: HostConfig,
    pub(crate) iface: Interface,
    pub(crate) device: SimDevice,
    pub(crate) sockets: SocketSet<'static>,
    pub(crate) apps: Vec<Box<dyn App>>,
    /// Generation of the pending timer poll; older poll events are stale.
    pub(crate) poll_gen: u64,
    /// When the pending timer poll fires; a later wake-up needs no new event.
    pub(crate) poll_at: Option<podplane::Instant>,
    pub(crate) link: Option<(usize, usize)>,
}

impl core::fmt::Debug for Host {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Host").field("config", &self.config).field("apps", &self.apps.len()).finish_non_exhaustive()
    }
}

/// smoltcp's clock from the virtual clock.
pub(crate) fn smol_now(t: podplane::Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(i64::try_from(t.as_nanos() / 1000).unwrap_or(i64::MAX))
}

impl Host {
    /// Build the interface. `seed` seeds smoltcp's own RNG (initial sequence numbers,
    /// ephemeral ports) from the simulator's RNG.
    pub(crate) fn new(config: HostConfig, seed: u64, now: podplane::Instant) -> Result<Self, SimError> {
        let bad = |reason: &str| SimError::BadHost { host: config.name.clone(), reason: reason.to_owned() };
        if config.ipv4.is_none() && config.ipv6.is_none() {
            return Err(bad("needs an IPv4 or IPv6 address"));
        }
        if !(576..=9000).contains(&config.mtu) {
            return Err(bad("mtu must be in 576..=9000"));
        }
        if config.mac[0] & 1 != 0 {
            return Err(bad("mac must be unicast"));
        }
        let mut device = SimDevice { mtu: config.mtu, ..SimDevice::default() };
        let mut c = Config::new(HardwareAddress::Ethernet(EthernetAddress(config.mac)));
        c.random_seed = seed;
        let mut iface = Interface::new(c, &mut device, smol_now(now));
        let mut addr_err = None;
        iface.update_ip_addrs(|a| {
            let v4 = config.ipv4.map(|(ip, len)| IpCidr::new(IpAddress::Ipv4(ip), len));
            let v4x = config.ipv4_extra.map(|(ip, len)| IpCidr::new(IpAddress::Ipv4(ip), len));
            let v6 = config.ipv6.map(|(ip, len)| IpCidr::new(IpAddress::Ipv6(ip), len));
            for cidr in v4.into_iter().chain(v4x).chain(v6) {
                if a.push(cidr).is_err() {
                    addr_err = Some("too many addresses");
                }
            }
        });
        if let Some(e) = addr_err {
            return Err(bad(e));
        }
        if let Some(gw) = config.gateway4 {
            iface.routes_mut().add_default_ipv4_route(gw).map_err(|_| bad("route table full"))?;
        }
        if let Some(gw) = config.gateway6 {
            iface.routes_mut().add_default_ipv6_route(gw).map_err(|_| bad("route table full"))?;
        }
        Ok(Host {
            config,
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            apps: Vec::new(),
            poll_gen: 0,
            poll_at: None,
            link: None,
        })
    }

    /// The host's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The host's configuration.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }
}
