//! Counters in Prometheus text exposition format (version 0.0.4), and fetching them
//! back for `podplane stats`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context as _, bail};
use podplane::config::NodeSetup;
use podplane::pipeline::CounterSnapshot;

use podplane_tap::PortStats;

fn family(s: &mut String, name: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
}

/// Everything `podplane run` counts: totals, drops by stage and reason, stage events,
/// per-port traffic, and table sizes (gauges).
pub(crate) fn render(
    snap: &CounterSnapshot,
    setup: &NodeSetup,
    ports: &BTreeMap<u16, PortStats>,
    tables: &[(&str, usize)],
    driver: &[(&str, &str, u64)],
) -> String {
    let t = &snap.totals;
    let mut s = String::new();
    for (name, help, v) in driver {
        family(&mut s, name, help);
        let _ = writeln!(s, "{name} {v}");
    }
    for (name, help, v) in [
        ("podplane_rx_packets_total", "Packets received by the pipeline.", t.rx),
        ("podplane_rx_bytes_total", "Bytes received by the pipeline.", t.rx_bytes),
        ("podplane_generated_packets_total", "Packets the node made (ARP, ICMP errors, copies).", t.generated),
        ("podplane_tx_packets_total", "Packets transmitted.", t.tx),
        ("podplane_tx_bytes_total", "Bytes transmitted.", t.tx_bytes),
        ("podplane_host_packets_total", "Packets for the node's own stack.", t.host),
        ("podplane_held_packets_total", "Packets held by a stage (waiting for a neighbour).", t.held),
        ("podplane_released_packets_total", "Held packets released (sent on or dropped).", t.released),
        ("podplane_dropped_packets_total", "Packets dropped, all reasons.", t.dropped),
    ] {
        family(&mut s, name, help);
        let _ = writeln!(s, "{name} {v}");
    }
    family(&mut s, "podplane_drops_total", "Packets dropped, by stage and reason.");
    for d in &snap.drops {
        let _ = writeln!(s, "podplane_drops_total{{stage=\"{}\",reason=\"{}\"}} {}", d.stage, d.reason, d.packets);
    }
    family(&mut s, "podplane_events_total", "Stage events (learned, flooded, replied, routed...).");
    for e in &snap.events {
        let _ = writeln!(s, "podplane_events_total{{stage=\"{}\",event=\"{}\"}} {}", e.stage, e.event, e.count);
    }
    for (name, help, pick) in [
        ("podplane_port_rx_packets_total", "Frames read from a port.", 0),
        ("podplane_port_rx_bytes_total", "Bytes read from a port.", 1),
        ("podplane_port_tx_packets_total", "Frames written to a port.", 2),
        ("podplane_port_tx_bytes_total", "Bytes written to a port.", 3),
        ("podplane_port_tx_errors_total", "Frames a port's device refused.", 4),
        ("podplane_port_rx_super_frames_total", "TCP super-frames (TSO) read from a port and segmented.", 5),
        ("podplane_port_rx_offload_errors_total", "Offloaded frames dropped (bad virtio_net_hdr, no buffer).", 6),
    ] {
        family(&mut s, name, help);
        for p in &setup.ports {
            let c = ports.get(&p.id.0).copied().unwrap_or_default();
            let v = [c.rx, c.rx_bytes, c.tx, c.tx_bytes, c.tx_errors, c.rx_super_frames, c.rx_offload_errors]
                .get(pick)
                .copied()
                .unwrap_or(0);
            let _ = writeln!(s, "{name}{{port=\"{}\"}} {v}", p.name);
        }
    }
    let _ = writeln!(s, "# HELP podplane_table_entries Entries in a table (fdb, neighbours, fib4, fib6).");
    let _ = writeln!(s, "# TYPE podplane_table_entries gauge");
    for (name, n) in tables {
        let _ = writeln!(s, "podplane_table_entries{{table=\"{name}\"}} {n}");
    }
    let _ = writeln!(
        s,
        "# HELP podplane_routes Routes installed beyond the interfaces' own.\n# TYPE podplane_routes gauge"
    );
    let _ = writeln!(s, "podplane_routes {}", setup.routes.len());
    let _ = writeln!(s, "# HELP podplane_peers Other nodes routed to.\n# TYPE podplane_peers gauge");
    let _ = writeln!(s, "podplane_peers {}", setup.peers.len());
    s
}

/// GET /metrics from a running instance; the body.
pub(crate) fn fetch(addr: SocketAddr) -> anyhow::Result<String> {
    get(addr, "/metrics")
}

/// GET `path` from a running instance's `--metrics` address; the body, or the error
/// it answered with.
pub(crate) fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("{addr}: no podplane run serving metrics there"))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut resp = String::new();
    conn.read_to_string(&mut resp).with_context(|| format!("reading {path}"))?;
    let Some((head, body)) = resp.split_once("\r\n\r\n") else { bail!("{addr}: not an HTTP answer") };
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("{addr}{path}: {} {}", head.lines().next().unwrap_or(""), body.trim());
    }
    Ok(body.to_string())
}
