//! Stage events that are not drops: MAC learning, floods, ARP replies sent. Counted
//! per stage like drops (VPP keeps both kinds in one error-counter table; we keep
//! drops apart so that "dropped" means dropped).

use core::fmt;

macro_rules! stage_events {
    ( $( $(#[doc = $doc:literal])+ $code:literal => $variant:ident, $name:literal; )+ ) => {
        /// Something a stage did that is worth counting. Codes are stable and dense.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u16)]
        pub enum StageEvent {
            $( $(#[doc = $doc])+ $variant = $code, )+
        }

        impl StageEvent {
            /// Every event, in code order.
            pub const ALL: &'static [StageEvent] = &[ $( StageEvent::$variant, )+ ];
            /// Size of a counter array.
            pub const COUNT: usize = [ $( $code, )+ ].len();

            /// The snake_case name used in counters and the CLI.
            pub const fn as_str(self) -> &'static str {
                match self { $( StageEvent::$variant => $name, )+ }
            }
        }
    };
}

stage_events! {
    /// A new MAC was learned into the FDB.
    1 => FdbLearned, "fdb_learned";
    /// A learned MAC appeared on another port and moved.
    2 => FdbMoved, "fdb_moved";
    /// An FDB entry aged out.
    3 => FdbAged, "fdb_aged";
    /// A MAC was not learned because the FDB is full.
    4 => FdbFull, "fdb_full";
    /// A frame was flooded (broadcast, multicast or unknown unicast).
    5 => Flooded, "flooded";
    /// A copy made for flooding (one per extra port).
    6 => FloodCopy, "flood_copy";
    /// An ARP reply was sent for one of the node's addresses.
    7 => ArpReplied, "arp_replied";
    /// A proxy-ARP reply was sent (Calico's 169.254.1.1 gateway).
    8 => ProxyArpReplied, "proxy_arp_replied";
    /// An ICMP error was generated.
    9 => IcmpErrorSent, "icmp_error_sent";
    /// An ICMP error was not sent: rate limit (icmp_msgs_per_sec) or RFC 1812 rules.
    10 => IcmpErrorSuppressed, "icmp_error_suppressed";
    /// An ARP request was sent to resolve a next hop.
    11 => ArpRequestSent, "arp_request_sent";
    /// A neighbour entry was created or updated from ARP.
    12 => NeighLearned, "neigh_learned";
    /// A packet was routed.
    13 => Routed, "routed";
    /// A neighbour advertisement was sent for one of the node's IPv6 addresses.
    14 => NdAdvertSent, "nd_advert_sent";
    /// A neighbour solicitation was sent to resolve an IPv6 next hop.
    15 => NdSolicitSent, "nd_solicit_sent";
    /// A packet wrapped for a peer node (VXLAN or IP-in-IP).
    16 => Encapsulated, "encapsulated";
    /// A packet unwrapped from a peer node.
    17 => Decapsulated, "decapsulated";
    /// A new connection committed to the conntrack table.
    18 => CtNew, "ct_new";
    /// A connection entry expired and was swept.
    19 => CtExpired, "ct_expired";
    /// An unassured connection dropped early to make room (as the kernel's `early_drop`).
    20 => CtEarlyDrop, "ct_early_drop";
    /// A new connection given destination NAT.
    21 => DnatNew, "dnat_new";
    /// A new connection given source NAT (masquerade).
    22 => SnatNew, "snat_new";
    /// A new connection that destination NAT sent back to its source, masqueraded.
    23 => NatHairpin, "nat_hairpin";
    /// A new connection to a service given a backend by its scheduler.
    24 => SvcNew, "svc_new";
    /// A new connection to a service sent to its client's remembered backend
    /// (`sessionAffinity: ClientIP`).
    25 => SvcAffinity, "svc_affinity";
    /// A new connection rejected with ICMP port unreachable by the service stage.
    26 => SvcRejected, "svc_rejected";
    /// A packet of a learned flow carried by the fast path (the stages after it skipped).
    27 => FastPathHit, "fastpath_hit";
    /// A flow learned by the fast path from a packet the slow path transmitted.
    28 => FastPathLearned, "fastpath_learned";
}

impl StageEvent {
    /// Dense index (`code - 1`).
    pub const fn index(self) -> usize {
        self as usize - 1
    }
}

impl fmt::Display for StageEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
