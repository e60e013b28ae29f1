//! `podplane conntrack list|flush`: the connections of a running instance, read and
//! cleared over its `--metrics` address (`GET /conntrack`, `GET /conntrack/flush?..`),
//! one line each as `conntrack -L` prints them, or JSON.
//!
//! Listing locks each worker's table while it is copied: the only time anything but
//! that worker takes the lock, so an operator's listing can delay a worker's batch
//! (by about a millisecond per 10,000 connections), never the other way round.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context as _, bail};
use podplane::stage::conntrack::{Filter, Listing, SharedConntrack};

/// The filter flags `podplane conntrack flush` takes (as `conntrack -D`'s).
#[derive(clap::Args, Debug, Default, Clone)]
pub(crate) struct FilterArgs {
    /// Protocol: tcp, udp, icmp, icmpv6 or a number.
    #[arg(long, short = 'p')]
    pub proto: Option<String>,
    /// Original source address.
    #[arg(long)]
    pub orig_src: Option<IpAddr>,
    /// Original destination address (a service's).
    #[arg(long)]
    pub orig_dst: Option<IpAddr>,
    /// Original destination port.
    #[arg(long)]
    pub orig_port_dst: Option<u16>,
    /// The endpoint destination NAT chose.
    #[arg(long)]
    pub dst_nat: Option<IpAddr>,
}

fn proto_number(s: &str) -> anyhow::Result<u8> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" => 58,
        "sctp" => 132,
        n => n.parse().with_context(|| format!("--proto {s}: not a protocol name or number"))?,
    })
}

impl FilterArgs {
    /// The core filter.
    pub(crate) fn filter(&self) -> anyhow::Result<Filter> {
        Ok(Filter {
            proto: self.proto.as_deref().map(proto_number).transpose()?,
            orig_src: self.orig_src,
            orig_dst: self.orig_dst,
            orig_dport: self.orig_port_dst,
            dst_nat: self.dst_nat,
        })
    }

    /// As a query string.
    fn query(&self) -> String {
        let mut q = Vec::new();
        if let Some(p) = &self.proto {
            q.push(format!("proto={p}"));
        }
        for (k, v) in [("orig-src", self.orig_src), ("orig-dst", self.orig_dst), ("dst-nat", self.dst_nat)] {
            if let Some(v) = v {
                q.push(format!("{k}={v}"));
            }
        }
        if let Some(p) = self.orig_port_dst {
            q.push(format!("orig-port-dst={p}"));
        }
        q.join("&")
    }

    /// From a query string.
    fn from_query(q: &str) -> anyhow::Result<FilterArgs> {
        let mut f = FilterArgs::default();
        for kv in q.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').with_context(|| format!("{kv}: expected key=value"))?;
            let ip = || v.parse::<IpAddr>().with_context(|| format!("{k}={v}: not an address"));
            match k {
                "proto" => f.proto = Some(v.to_string()),
                "orig-src" => f.orig_src = Some(ip()?),
                "orig-dst" => f.orig_dst = Some(ip()?),
                "dst-nat" => f.dst_nat = Some(ip()?),
                "orig-port-dst" => f.orig_port_dst = Some(v.parse().with_context(|| format!("{k}={v}"))?),
                _ => bail!("{k}: unknown filter"),
            }
        }
        Ok(f)
    }
}

/// One connection as a JSON object.
pub(crate) fn json(l: &Listing) -> serde_json::Value {
    let tuple = |k: &podplane::wire::flow::FlowKey| serde_json::json!({"src": k.src_addr().to_string(), "dst": k.dst_addr().to_string(), "sport": k.src_port, "dport": k.dst_port});
    serde_json::json!({
        "proto": l.proto,
        "timeout": l.ttl_secs,
        "state": l.state,
        "original": tuple(&l.original),
        "reply": tuple(&l.reply),
        "unreplied": l.unreplied,
        "assured": l.assured,
        "src_nat": l.src_nat,
        "dst_nat": l.dst_nat,
    })
}

/// Render listings as lines or as one JSON array.
pub(crate) fn render(list: &[Listing], as_json: bool) -> String {
    if as_json {
        let v: Vec<serde_json::Value> = list.iter().map(json).collect();
        format!("{}\n", serde_json::Value::Array(v))
    } else {
        list.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// Answer a request for `path` from the workers' tables: `None` when the path is
/// not ours.
pub(crate) fn serve(path: &str, tables: &[SharedConntrack]) -> Option<Result<String, String>> {
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    match p {
        "/conntrack" => {
            let mut all = Vec::new();
            for t in tables {
                if let Ok(ct) = t.lock() {
                    all.extend(ct.list(ct.last_seen()));
                }
            }
            Some(Ok(render(&all, q == "json")))
        }
        "/conntrack/flush" => Some(match FilterArgs::from_query(q).and_then(|f| f.filter()) {
            Ok(filter) => {
                let mut n = 0;
                for t in tables {
                    if let Ok(mut ct) = t.lock() {
                        let now = ct.last_seen();
                        n += ct.flush(&filter, now);
                    }
                }
                Ok(format!("{n} flow entries have been deleted.\n"))
            }
            Err(e) => Err(format!("{e:#}")),
        }),
        _ => None,
    }
}

/// `podplane conntrack list` against a running instance.
pub(crate) fn list(addr: SocketAddr, as_json: bool) -> anyhow::Result<String> {
    crate::metrics::get(addr, if as_json { "/conntrack?json" } else { "/conntrack" })
}

/// `podplane conntrack flush` against a running instance.
pub(crate) fn flush(addr: SocketAddr, f: &FilterArgs) -> anyhow::Result<String> {
    f.filter()?;
    crate::metrics::get(addr, &format!("/conntrack/flush?{}", f.query()))
}
