//! The Kubernetes manifests of deploy/kubernetes validate offline against the Kubernetes API
//! schemas (kubernetes-validate from PyPI, strict: no unknown fields), and the snapshot
//! classes, a CRD kubernetes-validate has no schema for, against the CRD's fields
//! (deploy/volumesnapshotclass.schema.json). tools/install-deps.sh installs kubernetes-validate
//! in /opt/fvol-tools. A broken manifest is shown to fail, so a pass means something.
use std::path::{Path, PathBuf};
use std::process::Command;

fn validator_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FVOL_KUBERNETES_VALIDATE_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new("/opt/fvol-tools/bin/python");
    venv.is_file().then(|| venv.to_owned())
}

fn validate(python: &Path, files: &[PathBuf]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deploy/validate.py");
    let out = Command::new(python)
        .arg(script)
        .args(files)
        .output()
        .expect("run validate.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn manifests_validate_offline() {
    let Some(python) = validator_python() else {
        // tools/test sets FVOL_REQUIRE_FUSE: there the tool must be installed.
        assert!(
            std::env::var_os("FVOL_REQUIRE_FUSE").is_none(),
            "kubernetes-validate is not installed in /opt/fvol-tools: run tools/install-deps.sh"
        );
        eprintln!("skipping manifests_validate_offline: kubernetes-validate is not installed");
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let (ok, text) = validate(&python, &files);
    assert!(ok, "{text}");
    for kind in [
        "CSIDriver/csi.fvol.io",
        "DaemonSet/fvol-csi-node",
        "Deployment/fvol-csi-controller",
        "StorageClass/fvol-local",
        "StorageClass/fvol-tmpfs",
        "StorageClass/fvol-rbd",
        "VolumeSnapshotClass/fvol-local",
        "VolumeSnapshotClass/fvol-tmpfs",
        "VolumeSnapshotClass/fvol-rbd",
    ] {
        assert!(
            text.contains(&format!("{kind}\n")),
            "{kind} not validated:\n{text}"
        );
    }
    // The check bites: a misspelt field, a bad enum value and an unknown kind all fail.
    let bad = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        bad.path(),
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: x\n\
         provisoner: csi.fvol.io\n---\napiVersion: snapshot.storage.k8s.io/v1\n\
         kind: VolumeSnapshotClass\nmetadata:\n  name: y\ndriver: csi.fvol.io\n\
         deletionPolicy: Keep\n---\napiVersion: v1\nkind: Frobnicator\nmetadata:\n  name: z\n",
    )
    .unwrap();
    let (ok, text) = validate(&python, &[bad.path().to_owned()]);
    assert!(!ok, "{text}");
    assert_eq!(text.matches("FAILED").count(), 3, "{text}");
}
