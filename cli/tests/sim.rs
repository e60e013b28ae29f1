//! `podplane sim --scenario`: the example scenario runs, every flow succeeds, the
//! captures are written and (where tshark is installed) read back.
#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::path::Path;
use std::process::Command;

#[test]
fn the_example_scenario_runs_and_captures_every_link() {
    let dir = std::env::temp_dir().join(format!("podplane-sim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/scenario.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_podplane"))
        .args(["sim", "--scenario"])
        .arg(&scenario)
        .arg("--capture")
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let flows = text.lines().filter(|l| l.contains("->")).count();
    let ok = text.lines().filter(|l| l.contains("->") && l.contains(" ok ")).count();
    assert_eq!((flows, ok), (6, 6), "{text}");
    assert!(text.contains("traceroute node-a-pod-0->node-b-pod-1 trace ok"), "{text}");
    // The same scenario, the same run: the event-log hash line is identical.
    let again =
        Command::new(env!("CARGO_BIN_EXE_podplane")).args(["sim", "--scenario"]).arg(&scenario).output().unwrap();
    let hash = |t: &str| t.lines().find(|l| l.contains("event-log hash")).map(str::to_string);
    assert_eq!(hash(&text), hash(&String::from_utf8_lossy(&again.stdout)));
    let mut pcaps: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    pcaps.sort();
    assert_eq!(
        pcaps,
        [
            "node-a_node-a-pod-0.pcap",
            "node-a_node-a-pod-1.pcap",
            "node-b_node-b-pod-0.pcap",
            "node-b_node-b-pod-1.pcap",
            "underlay.pcap"
        ]
    );
    if Command::new("tshark").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let o = Command::new("tshark").arg("-r").arg(dir.join("underlay.pcap")).output().unwrap();
        assert!(o.status.success());
        assert!(String::from_utf8_lossy(&o.stdout).contains("10.244.1.2"), "the underlay carries pod traffic");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_scenario_says_where() {
    let dir = std::env::temp_dir().join(format!("podplane-sim-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.yaml");
    std::fs::write(&f, "nodes:\n  - {name: a, pods: 1}\nflows:\n  - {kind: ping, from: a-pod-0, to: nobody}\n")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_podplane")).args(["sim", "--scenario"]).arg(&f).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(r#"no pod named "nobody""#), "{err}");
    std::fs::write(&f, "nodes:\n  - {name: a, pods: 1, extra: 2}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_podplane")).args(["sim", "--scenario"]).arg(&f).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2 column") && err.contains("unknown field `extra`"), "{err}");
}
