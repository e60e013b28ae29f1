//! Text summaries of a simulation: flows, node counters, links. Shared by the cluster
//! demo and `podplane sim --scenario`.

use core::fmt::Write as _;

use crate::engine::Sim;
use crate::workload::{FlowKind, FlowResult};

/// One row per flow, with a header: name, kind, result, bytes, time, retransmissions.
pub fn flows(sim: &Sim) -> String {
    let mut s = String::new();
    let flows = sim.flows();
    let w = flows.iter().map(|f| f.name.len()).max().unwrap_or(0).max(14);
    let _ = writeln!(
        s,
        "{:<w$} {:<5} {:<6} {:>9} {:>12} {:>7}  detail",
        "flow", "kind", "result", "bytes", "time", "retrans"
    );
    for f in &flows {
        let _ = writeln!(s, "{}", flow_row(f, w));
    }
    s
}

/// One flow's row, its name padded to `w`.
pub fn flow_row(f: &FlowResult, w: usize) -> String {
    #[allow(clippy::cast_precision_loss)]
    let time = f.duration().map_or("-".to_owned(), |d| format!("{:.1} ms", d.as_nanos() as f64 / 1e6));
    let kind = match f.kind {
        FlowKind::TcpBulk => "tcp",
        FlowKind::Http => "http",
        FlowKind::UdpQuery => "udp",
        FlowKind::Ping => "icmp",
        FlowKind::Traceroute => "trace",
    };
    let result = if f.ok {
        "ok"
    } else if f.done {
        "FAIL"
    } else {
        "open"
    };
    let retrans = if f.tcp.is_some() { f.retransmissions.to_string() } else { "-".into() };
    format!("{:<w$} {kind:<5} {result:<6} {:>9} {time:>12} {retrans:>7}  {}", f.name, f.bytes, f.detail)
}

/// Every node's totals, drops (with their meaning) and stage events.
pub fn nodes(sim: &Sim) -> String {
    let mut s = String::new();
    for node in sim.nodes() {
        let _ = writeln!(s, "\n{} counters:", node.name());
        let snap = node.pipeline().counters().snapshot();
        let t = snap.totals;
        let _ = writeln!(
            s,
            "  rx {}  generated {} (flood copies, ARP requests)  tx {}  to host {}  dropped {}",
            t.rx, t.generated, t.tx, t.host, t.dropped
        );
        for d in &snap.drops {
            let what = format!("{}/{}", d.stage, d.reason);
            let _ = writeln!(
                s,
                "  drop  {what:<28} {:>6} packets {:>8} bytes  {}",
                d.packets,
                d.bytes,
                d.reason.description()
            );
        }
        for e in &snap.events {
            let _ = writeln!(s, "  event {:<28} {:>6}", format!("{}/{}", e.stage, e.event), e.count);
        }
    }
    s
}

/// Sent / delivered / lost / corrupted for the named links (in order).
pub fn links<'a>(sim: &Sim, names: impl IntoIterator<Item = &'a str>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<20} {:>7} {:>9} {:>6} {:>9}", "link", "sent", "delivered", "lost", "corrupted");
    for name in names {
        if let Some(st) = sim.link_id(name).and_then(|l| sim.link_stats(l)) {
            let _ =
                writeln!(s, "{name:<20} {:>7} {:>9} {:>6} {:>9}", st.sent, st.delivered, st.dropped_loss, st.corrupted);
        }
    }
    s
}
