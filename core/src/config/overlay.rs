//! The node file's `overlay` section and the peers' tunnel details from their `Node`
//! objects (Flannel's annotations).

use std::net::{Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::Node;

use super::file::{NodeFile, OverlayMode, PortRole, Underlay};
use super::node::Port;
use crate::buf::PortId;
use crate::stage::overlay::Encap;
use crate::wire::EthernetAddress;
use crate::wire::cidr::Cidr;

/// The tunnel's virtual port (Flannel's `flannel.1`, Calico's `tunl0`/`vxlan.calico`).
pub const TUNNEL_PORT: PortId = PortId(4095);
/// Flannel's annotation with the node's VXLAN details (`{"VNI":1,"VtepMAC":"..."}`).
pub const FLANNEL_BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
/// Flannel's annotation with the node's underlay address.
pub const FLANNEL_PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";

/// The overlay as checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub encap: Encap,
    pub vtep_mac: EthernetAddress,
    pub uplink: PortId,
    pub local_ip: Ipv4Addr,
    pub uplink_net: Cidr,
    pub tunnel_mtu: u16,
    pub cross_subnet: bool,
    pub dont_fragment: bool,
    /// Over an IPv6 underlay: the uplink's IPv6 address and prefix length.
    pub local6: Option<(Ipv6Addr, u8)>,
}

/// The VTEP MAC a node without Flannel's annotation gets: locally administered
/// `0e:00` and its underlay address (podplane nodes agree on it without talking).
pub fn default_vtep_mac(ip: Ipv4Addr) -> EthernetAddress {
    let [a, b, c, d] = ip.octets();
    EthernetAddress([0x0e, 0x00, a, b, c, d])
}

/// The default VTEP MAC over an IPv6 underlay: `0e:00` and the last four bytes of
/// the node's IPv6 underlay address.
pub fn default_vtep_mac6(ip: Ipv6Addr) -> EthernetAddress {
    let o = ip.octets();
    EthernetAddress([0x0e, 0x00, o[12], o[13], o[14], o[15]])
}

/// Check the `overlay` section against the ports; `None` for direct routing.
pub(crate) fn plan(f: &NodeFile, ports: &[Port], mut err: impl FnMut(&str, Option<&str>, String)) -> Option<Plan> {
    let o = f.overlay.as_ref()?;
    let encap = match o.mode {
        OverlayMode::None => {
            if o.cross_subnet || o.port.is_some() || o.vni.is_some() || o.vtep_mac.is_some() {
                err("overlay.mode", Some("none"), "port, vni, vtepMAC and crossSubnet need mode vxlan or ipip".into());
            }
            return None;
        }
        OverlayMode::Vxlan => {
            let vni = o.vni.unwrap_or(1);
            if vni > 0x00ff_ffff {
                err("overlay.vni", Some(&vni.to_string()), "must fit 24 bits (0-16777215)".into());
            }
            let port = o.port.unwrap_or(crate::wire::vxlan::PORT_LINUX);
            if port == 0 {
                err("overlay.port", Some("0"), "must be a UDP port (1-65535)".into());
            }
            Encap::Vxlan { port, vni, src_ports: 32768..=60999, udp_checksum: o.udp_checksum }
        }
        OverlayMode::Ipip => {
            if o.port.is_some() || o.vni.is_some() || o.vtep_mac.is_some() || o.udp_checksum {
                err("overlay.mode", Some("ipip"), "port, vni, vtepMAC and udpChecksum are VXLAN settings".into());
            }
            Encap::Ipip
        }
    };
    let uplinks: Vec<&Port> = ports.iter().filter(|p| p.role == PortRole::Uplink && p.address.is_some()).collect();
    let Some(up) = uplinks.first() else {
        err("overlay.mode", None, "an overlay needs an uplink port with an address".into());
        return None;
    };
    let (local_ip, uplink_net) = up.address?;
    let v6 = o.underlay == Underlay::Ipv6;
    let local6 = match (v6, up.address6, &encap) {
        (false, _, _) => None,
        (true, _, Encap::Ipip) => {
            err("overlay.underlay", Some("ipv6"), "IP-in-IP runs over IPv4 only; use mode vxlan".into());
            None
        }
        (true, None, _) => {
            err(
                "overlay.underlay",
                Some("ipv6"),
                format!("Port/{} has no address6 to be the tunnel's source", up.name),
            );
            None
        }
        (true, Some(a), _) => Some(a),
    };
    let vtep_mac = match &o.vtep_mac {
        Some(m) => match m.parse::<EthernetAddress>() {
            Ok(mac) if mac.is_unicast() && mac.0 != [0; 6] => mac,
            _ => {
                err("overlay.vtepMAC", Some(m), "not a unicast MAC address".into());
                return None;
            }
        },
        None => local6.map_or_else(|| default_vtep_mac(local_ip), |(a, _)| default_vtep_mac6(a)),
    };
    let tunnel_mtu = up.mtu.saturating_sub(encap.overhead(v6));
    if tunnel_mtu < 576 {
        err(
            "overlay.mode",
            None,
            format!("the uplink MTU {} leaves {tunnel_mtu} inside the tunnel: under 576", up.mtu),
        );
    }
    Some(Plan {
        encap,
        vtep_mac,
        uplink: up.id,
        local_ip,
        uplink_net,
        tunnel_mtu,
        cross_subnet: o.cross_subnet,
        dont_fragment: o.dont_fragment,
        local6,
    })
}

/// What Flannel's annotations say of a node: its underlay address and VTEP MAC.
pub(crate) type FlannelDetails = (Option<Ipv4Addr>, Option<EthernetAddress>);

/// A malformed annotation: the field, its value, the problem.
pub(crate) type AnnotationError = (String, String, String);

/// A peer's underlay address and VTEP MAC from Flannel's annotations (each `None` when
/// absent), or what is malformed in them.
pub(crate) fn flannel_details(n: &Node) -> Result<FlannelDetails, AnnotationError> {
    let Some(ann) = n.metadata.annotations.as_ref() else { return Ok((None, None)) };
    let field = |k: &str| format!("metadata.annotations[{k}]");
    let ip = match ann.get(FLANNEL_PUBLIC_IP) {
        Some(v) => Some(
            v.parse::<Ipv4Addr>()
                .map_err(|_| (field(FLANNEL_PUBLIC_IP), v.clone(), "invalid IPv4 address".to_string()))?,
        ),
        None => None,
    };
    let mac = match ann.get(FLANNEL_BACKEND_DATA) {
        Some(v) => {
            let bad = || {
                (
                    field(FLANNEL_BACKEND_DATA),
                    v.clone(),
                    "expected {\"VNI\":N,\"VtepMAC\":\"aa:bb:cc:dd:ee:ff\"}".to_string(),
                )
            };
            let j: serde_json::Value = serde_json::from_str(v).map_err(|_| bad())?;
            match j.get("VtepMAC").and_then(serde_json::Value::as_str) {
                Some(m) => Some(m.parse::<EthernetAddress>().map_err(|()| bad())?),
                None => None,
            }
        }
        None => None,
    };
    Ok((ip, mac))
}
