//! The flow fast path: established IPv4 flows skip the stages between `fastpath` and
//! egress, as Linux's flowtable (`nft flowtable`, net/netfilter/nf_flow_table_ip.c)
//! lets an offloaded connection skip the netfilter hooks and the FIB.
//!
//! Two stages share one [`FlowCache`]:
//! - [`OffloadStage`] (last in the node path) *learns*: for a packet the slow path
//!   transmitted, it compares the frame as it left with the snapshot the `fastpath`
//!   stage took when the packet came in, and when the difference is one the fast path
//!   can replay exactly (new addresses, ports and TTL with their checksums, a new
//!   Ethernet header or a whole IPv4 tunnel prefix) it stores that difference for the
//!   flow. Nothing stage-specific is trusted: a difference of any other shape (a
//!   fragmented packet, a payload change, a checksum the replay would not reproduce)
//!   installs nothing.
//! - [`FastPathStage`] (first in the node path, reading frames before `parse`; on a
//!   node that decapsulates, after `decap`) *replays*: a packet of a
//!   cached flow that looks like the one learned (same MACs, TOS, flags and TTL, not
//!   longer than the path MTU the route stage checked) has its connection refreshed as
//!   conntrack would and the recorded difference applied, and is transmitted.
//!
//! A cache entry is exact while nothing the slow path consulted changes, so it is
//! dropped (not used) when:
//! - the pipeline's generation moved: any configuration change (`Pipeline::stage_mut`
//!   and friends) and any learned change a stage reports (a neighbour or FDB entry
//!   learned, moved or aged);
//! - its connection is gone, expired, or changed status, or the table slot holds
//!   another connection (both tuples and the status are compared on every hit);
//! - it is older than [`FAST_PATH_LIFE`]: time-driven slow-path work (the bridge's
//!   learning refresh, once a second) still happens at its own pace; the neighbour
//!   stage does not let a flow be learned when its next hop would turn stale sooner.
//!
//! Replayed packets must not overtake slow ones that could change what they see (the
//! kernel handles packets one at a time): after a packet of the batch that is neither
//! IPv4 UDP nor TCP (an ARP reply may bring a new MAC) nothing more is replayed in the
//! batch; after a UDP or TCP packet that takes the slow path only assured connections
//! are, which such a packet cannot change, and TCP ones only when no packet of the
//! same connection went the slow way before them (the tracker must see segments in
//! order). `core/tests/fastpath.rs` compares frames and connection tables (TCP
//! tracking state included) with a node without the fast path, batch by batch; it
//! fails when the first two rules are loosened or the TCP tracking is skipped (for the
//! third it found no counterexample: a reordered segment is mostly refused by the
//! tracker, which sends it down the slow path; the rule stays as the safe side).
//!
//! Only connections in a steady conntrack state are learned: UDP either unreplied or
//! assured (each packet then sets the same timeout and no status bit), whose refresh
//! the fast path repeats; TCP established and assured, each of whose segments the
//! fast path runs through conntrack's own tracker on a copy of the state, keeping the
//! result only when the segment is accepted and leaves the connection established
//! with the same status (anything else, a FIN, an out-of-window segment, goes down
//! the slow path untouched; Linux's flowtable instead switches an offloaded TCP
//! connection to liberal tracking). Packets with a partial (vnet_hdr NEEDS_CSUM)
//! transport checksum, as a TAP with offloads delivers them, have entries of their
//! own (their field holds the pseudo-header sum, which only the addresses change).
//! IPv6, fragments, IP options, VLAN tags, traced packets, flows into a bridge's own
//! interface and IPv6 underlays stay on the slow path.
//!
//! # Differences from Linux's flowtable
//! - Replayed packets are not seen by the counters of the stages they skip, as
//!   nftables rule counters do not see offloaded packets; `fastpath_hit` counts them.
//! - The flowtable needs a rule (`flow add @ft`) and tears a flow down after 30 s idle;
//!   here every steady flow is learned and an entry lives one second, then is learned
//!   again from the next slow-path packet.

mod cache;
mod learn;
mod replay;

pub use cache::{DEFAULT_CAPACITY, FAST_PATH_LIFE, FlowCache, SharedFlows};
pub use learn::OffloadStage;
pub use replay::FastPathStage;
