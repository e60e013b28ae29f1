//! Arbitrary packet sequences through parse → conntrack → ct_commit → xconnect (ports
//! 0 and 1 joined), with a small table (64 connections) so that it fills, and time
//! steps so that entries expire: TCP flag soup, ICMP errors with any quote,
//! fragments. Nothing panics; accounting and slots are checked at every batch
//! boundary (`drive.rs`), and the table never holds more than its capacity.
#![no_main]

use libfuzzer_sys::fuzz_target;

use podplane::buf::PortId;
use podplane::pipeline::{Pipeline, PipelineConfig, Stage};
use podplane::stage::conntrack::{CommitStage, Conntrack, ConntrackStage, CtConfig};
use podplane::stage::{ParseStage, XconnectStage};

#[path = "drive.rs"]
mod drive;

fuzz_target!(|data: &[u8]| {
    let ct = Conntrack::shared(CtConfig { capacity: 64, ..CtConfig::default() });
    let mut x = XconnectStage::new();
    let _ = x.connect(PortId(0), PortId(1));
    let stages: Vec<Box<dyn Stage>> = vec![
        Box::new(ParseStage::new()),
        Box::new(ConntrackStage::new(ct.clone())),
        Box::new(CommitStage::new(ct.clone())),
        Box::new(x),
    ];
    let mut pl = Pipeline::new(stages, PipelineConfig::default(), 1);
    drive::drive(&mut pl, data, 2);
    if let Ok(c) = ct.lock() {
        let (a, b) = c.len();
        assert!(a <= 64 && b <= 64, "table over capacity");
    }
});
