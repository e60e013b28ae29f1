//! The node file and Kubernetes objects: any bytes, split at the first NUL into the
//! node file and one objects file, must give a setup or errors, never a panic; a
//! setup must build a pipeline and apply onto itself as no change.

#![no_main]

use libfuzzer_sys::fuzz_target;
use podplane::config::{Dataplane, Source, load};

fuzz_target!(|data: &[u8]| {
    let (node, objects) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let node = String::from_utf8_lossy(node);
    let objects = String::from_utf8_lossy(objects);
    let srcs = [Source { name: "nodes.yaml", text: &objects }];
    let Ok(setup) = load(Source { name: "node.yaml", text: &node }, &srcs) else { return };
    let mut dp = Dataplane::new(setup.clone(), 1);
    let applied = dp.apply(setup).expect("a checked setup applies");
    assert!(applied.is_empty(), "applying the same setup changed {applied:?}");
});
