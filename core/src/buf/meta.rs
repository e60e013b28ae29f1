//! Per-packet metadata, kept in an array beside the slot memory (so the slot memory
//! stays one region the kernel can write into, and metadata never shares a cache line
//! with packet bytes the NIC or kernel is writing).

use crate::time::Instant;
use crate::wire::flow::FlowKey;

use super::handle::PortId;

/// Who may touch a slot right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Owner {
    /// On the free list.
    #[default]
    Free,
    /// Lent to a driver (for example posted as an io_uring read buffer).
    Driver,
    /// Held by the pipeline or a stage.
    Pipeline,
}

/// The network layer the parse stage found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum L3Kind {
    /// Not parsed yet, or an EtherType the node does not interpret (still bridged).
    #[default]
    None,
    /// ARP over Ethernet.
    Arp,
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

/// State of the transport checksum, as virtio-net's vnet_hdr describes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CsumState {
    /// Nobody checked it.
    #[default]
    Unverified,
    /// Checked and correct.
    Verified,
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the field holds only the pseudo-header sum and
    /// must be completed before the packet leaves on a device that cannot do it.
    Partial {
        /// Offset (from the packet start) where summing starts.
        start: u16,
        /// Offset of the checksum field from `start`.
        offset: u16,
    },
}

bitflags::bitflags! {
    /// Facts about a packet that later stages test instead of re-parsing.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct PktFlags: u32 {
        /// The parse stage has run and the offsets are valid.
        const PARSED = 1 << 0;
        /// The frame carried an 802.1Q tag (see `vlan_tci`).
        const VLAN = 1 << 1;
        /// An IP fragment (IPv4 MF or offset, or an IPv6 fragment header).
        const FRAGMENT = 1 << 2;
        /// A fragment other than the first: it has no transport header.
        const LATER_FRAGMENT = 1 << 3;
        /// `l4` points at a complete transport header of `ip_proto`.
        const HAS_L4 = 1 << 4;
        /// The flow key is filled in.
        const HAS_FLOW = 1 << 5;
        /// Destination MAC is broadcast or multicast.
        const L2_MULTI = 1 << 6;
        /// Record this packet's path in the trace.
        const TRACE = 1 << 7;
        /// Made by a stage (ICMP error, ARP request), not received.
        const GENERATED = 1 << 8;
        /// Addressed to the node's own interface on a bridge (its gateway MAC, or a
        /// broadcast the node also receives): the ARP and route stages take it.
        const L2_LOCAL = 1 << 9;
        /// The bridge forwarded it at L2 (`out_port` is its decision).
        const BRIDGED = 1 << 10;
        /// The route stage forwarded it: `next_hop` and `out_port` (an interface) are
        /// set; the neighbour stage still has to write the MACs.
        const ROUTED = 1 << 11;
        /// Masquerade this new connection after routing (kube-proxy's
        /// `mark-for-masquerade`, mark 0x4000): set by the service stage.
        const MASQUERADE = 1 << 12;
        /// Reject with ICMP port unreachable where routing would forward it: a service
        /// without endpoints (set by the service stage; the route stage answers).
        const REJECT_NO_ENDPOINTS = 1 << 13;
        /// As `REJECT_NO_ENDPOINTS`, for a ClusterIP on a port it does not serve.
        const REJECT_UNKNOWN_PORT = 1 << 14;
        /// The `dnat` stage rewrote this packet's destination on this pass (DNAT, or
        /// un-SNAT of a reply): br_netfilter's `daddr_was_changed`.
        const DNATED = 1 << 15;
        /// Forwarded at L2 after destination NAT to a neighbour on the bridge it came
        /// from, as br_netfilter's bridged DNAT does: no TTL change, the sender's
        /// source MAC kept (the neighbour stage writes only the destination MAC).
        const KEEP_SRC_MAC = 1 << 16;
        /// The `fastpath` stage took a snapshot of this packet: the `offload` stage may
        /// learn its flow from it. A stage whose work the fast path must not skip for
        /// the next second clears it.
        const OFFLOAD = 1 << 17;
    }
}

/// Metadata of one packet. Offsets are absolute positions in the slot, so moving the
/// packet start (encapsulation, decapsulation) does not invalidate them.
#[derive(Clone, Copy, Debug)]
pub struct PktMeta {
    pub(super) head: u16,
    pub(super) len: u16,
    pub(super) owner: Owner,
    /// Port the packet arrived on (or the port a generated packet is about).
    pub in_port: PortId,
    /// Egress port chosen so far ([`PortId::NONE`] until a stage decides).
    pub out_port: PortId,
    /// Offset of the Ethernet header.
    pub l2: u16,
    /// Offset of the network header (valid when `l3_kind` is not `None`).
    pub l3: u16,
    /// Offset of the transport header (valid when `flags` has `HAS_L4`).
    pub l4: u16,
    /// Network layer kind.
    pub l3_kind: L3Kind,
    /// IP protocol / IPv6 next header of the transport (after extension headers).
    pub ip_proto: u8,
    /// 802.1Q tag control information when `flags` has `VLAN`.
    pub vlan_tci: u16,
    /// Parse facts.
    pub flags: PktFlags,
    /// The 5-tuple (valid when `flags` has `HAS_FLOW`).
    pub flow: FlowKey,
    /// Free-form mark, as the kernel's `skb->mark`.
    pub mark: u32,
    /// Receive time on the driver's clock.
    pub timestamp: Instant,
    /// Transport checksum state.
    pub csum: CsumState,
    /// Trace id when the packet is traced (`flags` has `TRACE`), else 0.
    pub trace_id: u32,
    /// IPv4 next hop chosen by the route stage (when `flags` has `ROUTED`).
    pub next_hop: std::net::Ipv4Addr,
    /// The IPv6 next hop the route stage chose, for the neighbour stage (IPv6 packets).
    pub next_hop6: std::net::Ipv6Addr,
    /// Conntrack: the packet's connection (`stage::conntrack::CtRef` packed), 0 for none.
    pub ct: u32,
    /// Conntrack: the packet's direction and state in its connection
    /// (`stage::conntrack::info` bits).
    pub ct_info: u8,
    /// The largest IPv4 packet the route stage would have forwarded whole on the path
    /// it chose (its egress MTU), 0 when it did not check: the fast path replays a
    /// flow only for packets that fit.
    pub path_mtu: u16,
}

impl PktMeta {
    /// Metadata of a fresh slot whose packet starts at `head` and is empty.
    pub(super) const fn fresh(head: u16, owner: Owner) -> Self {
        PktMeta {
            head,
            len: 0,
            owner,
            in_port: PortId::NONE,
            out_port: PortId::NONE,
            l2: head,
            l3: 0,
            l4: 0,
            l3_kind: L3Kind::None,
            ip_proto: 0,
            vlan_tci: 0,
            flags: PktFlags::empty(),
            flow: FlowKey::EMPTY,
            mark: 0,
            timestamp: Instant::ZERO,
            csum: CsumState::Unverified,
            trace_id: 0,
            next_hop: std::net::Ipv4Addr::UNSPECIFIED,
            next_hop6: std::net::Ipv6Addr::UNSPECIFIED,
            ct: 0,
            ct_info: 0,
            path_mtu: 0,
        }
    }

    /// Move the packet's start to `new_head`, keeping its end: prepend the bytes in
    /// front (already written by the caller) or strip some, in one step. False, and
    /// nothing changes, when `new_head` is past the end.
    #[inline]
    pub fn move_head(&mut self, new_head: u16) -> bool {
        // head + len <= slot size, which fits u16.
        match self.head.checked_add(self.len).and_then(|end| end.checked_sub(new_head)) {
            Some(len) => {
                self.head = new_head;
                self.len = len;
                true
            }
            None => false,
        }
    }

    /// Make the packet the `len` bytes at `head` in one step, for a caller that has
    /// checked they lie in the slot (the flow fast path: its prefix in the headroom,
    /// its end inside the old window). Even a window outside the slot would make
    /// nothing panic: the pool's accessors give no bytes for it.
    #[inline]
    pub(crate) fn set_window(&mut self, head: u16, len: u16) {
        self.head = head;
        self.len = len;
    }

    /// Offset of the first packet byte in the slot.
    #[inline]
    pub const fn head(&self) -> u16 {
        self.head
    }

    /// Packet length in bytes.
    #[inline]
    pub const fn len(&self) -> u16 {
        self.len
    }

    /// True when the packet has no bytes.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Take every field of `src` but this slot's own window (`head`, `len`) and owner:
    /// for a packet made from another one (a fragment).
    pub(crate) fn inherit(&mut self, src: &PktMeta) {
        *self = PktMeta { head: self.head, len: self.len, owner: self.owner, ..*src };
    }

    /// Shorten the packet to `len` bytes (padding after an IP packet); never grows it.
    #[inline]
    pub(crate) fn trim(&mut self, len: u16) {
        if len < self.len {
            self.len = len;
        }
    }

    /// Who holds the slot.
    #[inline]
    pub const fn owner(&self) -> Owner {
        self.owner
    }
}
