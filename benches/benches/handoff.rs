//! The cost of handing a frame to the worker that owns its connection: naming the
//! owner from the frame (`steer::reply_owner` for a masquerade reply, `steer::owner`
//! for a pod's frame in VXLAN, steered by its inner flow), and the hop itself (the frame
//! copied into a 2 KiB message, through a bounded crossbeam channel, and out again),
//! as `podplane run`'s workers do it. Per frame; the rate is in the
//! `podplane_workers_handoff_total` metric.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use podplane::buf::PortId;
use podplane::stage::nat::steer::{owner, reply_owner};
use podplane::stage::nat::{Masquerade, NatConfig};
use podplane::testutil::udp4;

/// A frame as a worker passes it on.
#[derive(Clone, Copy)]
struct Message {
    len: u16,
    bytes: [u8; 2048],
}

fn bench(c: &mut Criterion) {
    let node = Ipv4Addr::new(192, 168, 0, 11);
    let cfg = NatConfig {
        masquerade: Some(Masquerade { sources: vec![], except: vec![] }),
        addresses: vec![(PortId(0), node)],
        worker: (0, 2),
        ..NatConfig::default()
    };
    let frame = udp4(Ipv4Addr::new(1, 1, 1, 1), node, 53, 40000, &[0u8; 64 - 42]);
    // No services: the masquerade-reply path alone.
    let services = podplane::stage::lb::ServiceTable::default();
    let mut g = c.benchmark_group("nat_handoff");
    g.throughput(Throughput::Elements(1));
    g.bench_function("reply_owner_64B", |b| {
        b.iter(|| reply_owner(black_box(&frame), black_box(&cfg), black_box(&services)))
    });
    // A pod's UDP datagram in VXLAN from another node: no NAT rule, the inner flow.
    let inner = udp4(Ipv4Addr::new(10, 244, 2, 2), Ipv4Addr::new(10, 244, 1, 2), 40000, 5201, b"");
    let mut vxlan = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    vxlan.extend_from_slice(&inner);
    let encapsulated = udp4(Ipv4Addr::new(192, 168, 0, 12), node, 33000, 8472, &vxlan);
    let tunnel = podplane::steer::Tunnel::Vxlan { port: 8472, local: node, local6: None };
    g.bench_function("owner_vxlan_inner_flow", |b| {
        b.iter(|| owner(black_box(&encapsulated), black_box(&cfg), black_box(&services), black_box(Some(&tunnel))))
    });
    let (tx, rx) = crossbeam_channel::bounded::<Message>(256);
    let mut out = vec![0u8; 2048];
    g.bench_function("hop_64B_frame", |b| {
        b.iter(|| {
            let f = black_box(&frame);
            let mut m = Message { len: 0, bytes: [0; 2048] };
            m.len = u16::try_from(f.len()).unwrap_or(0);
            m.bytes[..f.len()].copy_from_slice(f);
            let _ = tx.try_send(m);
            if let Ok(m) = rx.try_recv() {
                let n = usize::from(m.len);
                out[..n].copy_from_slice(&m.bytes[..n]);
            }
            black_box(&out);
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
