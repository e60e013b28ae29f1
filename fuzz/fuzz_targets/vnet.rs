//! What a pod's TAP hands the driver with offloads on: a `virtio_net_hdr` and a frame
//! (the first 10 input bytes and the rest). The header is parsed, the partial
//! checksum completed and a TCP super-frame segmented into a small pool. Nothing
//! panics, no slot is lost, and every segment fits its slot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podplane::buf::{BufPool, Owner};
use podplane_tap::vnet::{self, VNET_HDR_LEN, VnetHdr};

fuzz_target!(|data: &[u8]| {
    let Some((h, frame)) = data.split_first_chunk::<VNET_HDR_LEN>() else { return };
    let h = VnetHdr::parse(h);
    let mut copy = frame.to_vec();
    let _ = vnet::complete_checksum(&mut copy, &h);
    let Ok(mut pool) = BufPool::with_slots(72) else { return };
    let mut segs = Vec::new();
    let r = vnet::segment_tcp(frame, &h, &mut pool, Owner::Pipeline, |_, p| segs.push(p));
    if let Ok(n) = r {
        assert_eq!(n, segs.len());
    }
    assert_eq!(pool.available() + segs.len(), 72, "a slot was lost");
    for p in segs {
        assert!(pool.data(p).len() <= pool.slot_size() - pool.default_headroom());
        let _ = pool.free(p);
    }
});
