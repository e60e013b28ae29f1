//! `podplane check`: a good configuration prints what it would install and exits 0; a
//! bad one prints every error, each naming file, object and field, and exits 1.
#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::path::Path;
use std::process::Command;

fn check(config: &Path, objects: &Path) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_podplane"))
        .args(["check", "--config"])
        .arg(config)
        .arg("--objects")
        .arg(objects)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn the_example_checks_and_a_broken_one_is_explained() {
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/replay");
    let (ok, out, _) = check(&ex.join("node.yaml"), &ex.join("nodes.yaml"));
    assert!(ok, "{out}");
    assert!(
        out.contains("pipeline: fastpath -> parse -> source_check -> bridge -> conntrack -> dnat -> route -> snat -> ct_commit -> arp -> egress -> offload"),
        "{out}"
    );
    assert!(
        out.contains("nat: masquerade 10.244.0.0/16 except [10.244.0.0/16], fully-random ports 1024-65535, hairpin on, 0 dnat rules; conntrack max 131072"),
        "{out}"
    );
    assert!(out.contains("peer worker-2: pods 10.244.2.0/24 via 192.168.0.12"), "{out}");
    assert!(out.contains("10.244.2.0/24 via 192.168.0.12 dev eth0  (Node/worker-2)"), "{out}");
    assert!(out.trim_end().ends_with("ok"), "{out}");

    let dir = std::env::temp_dir().join(format!("podplane-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let node = dir.join("node.yaml");
    let text = std::fs::read_to_string(ex.join("node.yaml")).unwrap().replace("ip: 10.244.1.3", "ip: 10.244.9.3");
    std::fs::write(&node, text).unwrap();
    let nodes = dir.join("nodes.yaml");
    std::fs::write(
        &nodes,
        std::fs::read_to_string(ex.join("nodes.yaml")).unwrap().replace("10.244.2.0/24", "10.244.300.0/24"),
    )
    .unwrap();
    let (ok, _, err) = check(&node, &nodes);
    assert!(!ok);
    let n = node.display();
    let o = nodes.display();
    assert!(
        err.contains(&format!(r#"{n}: Port/pod-b: ip "10.244.9.3": not inside the node's podCIDR 10.244.1.0/24"#)),
        "{err}"
    );
    assert!(
        err.contains(&format!(r#"{o}: Node/worker-2: spec.podCIDRs[0] "10.244.300.0/24": invalid address"#)),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
