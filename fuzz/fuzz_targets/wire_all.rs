//! Arbitrary bytes into every wire parser, the pretty printer, the parse stage's
//! per-packet function and worker steering: nothing may panic, and every accessor of
//! a view whose `new_checked` succeeded must work (the `check_len` contract).
#![no_main]

use libfuzzer_sys::fuzz_target;
use podplane::buf::{BufPool, Owner};
use podplane::stage::parse::parse_one;
use podplane::steer::{Tunnel, flow_owner};
use podplane::wire::arp::{ArpPacket, ArpRepr};
use podplane::wire::checksum::Sum;
use podplane::wire::display::PrettyFrame;
use podplane::wire::icmp::IcmpPacket;
use podplane::wire::icmpv4::Icmpv4Repr;
use podplane::wire::ipip;
use podplane::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use podplane::wire::ipv6::{Ipv6Packet, Ipv6Repr};
use podplane::wire::tcp::{TcpPacket, TcpRepr};
use podplane::wire::udp::{UdpPacket, UdpRepr};
use podplane::wire::vxlan::VxlanPacket;
use podplane::wire::{ChecksumPolicy, EthernetFrame, EthernetRepr};

fuzz_target!(|data: &[u8]| {
    // Every layer parser at offset 0, and at the offsets an Ethernet frame puts them.
    for off in [0usize, 14, 18, 34, 54] {
        let Some(b) = data.get(off..) else { break };
        if let Ok(f) = EthernetFrame::new_checked(b) {
            let _ = (EthernetRepr::parse(&f), f.payload().len(), f.to_string());
        }
        if let Ok(p) = ArpPacket::new_checked(b) {
            let _ = (ArpRepr::parse(&p), p.to_string());
        }
        if let Ok(p) = Ipv4Packet::new_checked(b) {
            let _ = (Ipv4Repr::parse(&p), p.verify_checksum(), p.payload().len(), p.options().len(), p.to_string());
            let _ = ipip::inner(&p);
        }
        if let Ok(p) = Ipv6Packet::new_checked(b) {
            let _ = (Ipv6Repr::parse(&p), p.transport(), p.payload().len(), p.to_string());
        }
        if let Ok(p) = UdpPacket::new_checked(b) {
            let _ = (UdpRepr::parse(&p), p.payload().len(), p.verify_checksum(Sum::new(), true), p.to_string());
        }
        if let Ok(p) = TcpPacket::new_checked(b) {
            let _ = (
                TcpRepr::parse(&p),
                p.options().len(),
                p.payload().len(),
                p.verify_checksum(Sum::new()),
                p.to_string(),
            );
        }
        if let Ok(p) = IcmpPacket::new_checked(b) {
            let _ = (Icmpv4Repr::parse(&p), p.body().len(), p.verify_checksum(Sum::new()), p.to_string());
        }
        if let Ok(p) = VxlanPacket::new_checked(b) {
            let _ = (p.vni(), p.payload().len(), p.to_string());
        }
    }
    let _ = PrettyFrame(data).to_string();
    // Worker steering reads every frame a multi-worker node receives, tunnels too.
    let local = std::net::Ipv4Addr::new(192, 168, 0, 11);
    for t in [
        None,
        Some(Tunnel::Vxlan { port: 8472, local, local6: Some(std::net::Ipv6Addr::LOCALHOST) }),
        Some(Tunnel::Ipip { local }),
    ] {
        if let Some(w) = flow_owner(data, t.as_ref(), 3) {
            assert!(w < 3);
        }
    }

    let Ok(mut pool) = BufPool::with_slots(1) else { return };
    let Some(pkt) = pool.alloc(Owner::Pipeline) else { return };
    if pool.set_data(pkt, data).is_err() {
        return;
    }
    let before = pool.meta(pkt).len();
    for policy in [ChecksumPolicy::default(), ChecksumPolicy { ipv4: true, l4: true }] {
        let (slot, meta) = pool.slot_and_meta_mut(pkt);
        if parse_one(slot, meta, policy).is_ok() {
            let m = pool.meta(pkt);
            // Parsing only ever trims padding; offsets stay inside the packet.
            assert!(m.len() <= before);
            assert!(m.l3 <= m.head() + m.len());
        }
    }
});
