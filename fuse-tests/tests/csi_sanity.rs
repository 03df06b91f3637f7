//! csi-sanity (kubernetes-csi/csi-test v5.3.1, the Kubernetes CSI conformance suite) against
//! `fvol csi` and a real daemon, when the tool is on this machine: `$FVOL_CSI_SANITY`, else
//! `csi-sanity` on PATH. CI cannot fetch it, so without it this test says so and passes;
//! docs/csi.md says how to build it and what it reported.
use std::path::PathBuf;
use std::process::Command;

use fuse_tests::csi::TestCsi;
use fuse_tests::daemon::{TestDaemon, TestRoot, fuse_or_skip};

fn csi_sanity() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FVOL_CSI_SANITY") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("csi-sanity"))
        .find(|p| p.is_file())
}

#[test]
fn csi_sanity_passes() {
    let Some(tool) = csi_sanity() else {
        eprintln!(
            "skipping csi_sanity_passes: no csi-sanity binary (set FVOL_CSI_SANITY or put it \
             on PATH; docs/csi.md, csi-sanity, says how to build v5.3.1)"
        );
        return;
    };
    if !fuse_or_skip("csi_sanity_passes") {
        return;
    }
    let root = TestRoot::new();
    let _d = TestDaemon::start_at(&root);
    let csi = TestCsi::start(&root, "sanity-node");
    // ControllerModifyVolume is tested with a real change: the inode quota.
    let mutable = root.base().join("mutable.yaml");
    std::fs::write(&mutable, "inodes: \"100000\"\n").unwrap();
    let out = Command::new(&tool)
        .arg(format!("--csi.endpoint=unix://{}", csi.socket.display()))
        .arg(format!(
            "--csi.mountdir={}",
            root.scratch().join("csi-mount").display()
        ))
        .arg(format!(
            "--csi.stagingdir={}",
            root.scratch().join("csi-staging").display()
        ))
        .arg(format!(
            "--csi.testvolumemutableparameters={}",
            mutable.display()
        ))
        .arg("--ginkgo.no-color")
        .output()
        .expect("run csi-sanity");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("Passed") && l.contains("Failed"))
        .collect();
    eprintln!("csi-sanity: {}", summary.join(" / "));
    assert!(
        out.status.success(),
        "csi-sanity failed ({})\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
