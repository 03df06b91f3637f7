//! Records the git commit the binary is built from (FVOL_GIT_COMMIT, for `fvol version` and
//! the fvol_build_info metric); "unknown" outside a git checkout. A commit given in the
//! environment (a packaging build from a tarball) wins.
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    // The CSI messages and services (src/csi, docs/csi.md): protoc from $PROTOC or PATH
    // (Debian's protobuf-compiler, tools/install-deps.sh).
    println!("cargo:rerun-if-changed=proto/csi.proto");
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["proto/csi.proto"], &["proto"])
        .expect("generating the CSI code from proto/csi.proto (needs protoc: apt-get install protobuf-compiler)");
    println!("cargo:rerun-if-env-changed=FVOL_GIT_COMMIT");
    let commit = std::env::var("FVOL_GIT_COMMIT").ok().or_else(|| {
        // Rebuilt when HEAD moves (a commit, a checkout).
        if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
            println!("cargo:rerun-if-changed={dir}/HEAD");
            println!("cargo:rerun-if-changed={dir}/logs/HEAD");
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    println!(
        "cargo:rustc-env=FVOL_GIT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
}
