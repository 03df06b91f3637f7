//! The external suites: pjdfstest and fsx, run against a mounted directory.
use std::path::Path;
use std::process::Command;

const PJDFSTEST_CONF: &str = r#"[features]
posix_fallocate = {}
utime_now = {}
utimensat = {}
[settings]
naptime = 0.01
allow_remount = false
[dummy_auth]
entries = [ ["nobody", "nogroup"], ["daemon", "daemon"] ]
"#;

fn tool(name: &str) -> String {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_bin = Path::new(&home).join(".cargo/bin").join(name);
    if cargo_bin.exists() {
        cargo_bin.display().to_string()
    } else {
        name.to_string()
    }
}

/// The result line of a pjdfstest run: (failed, skipped, passed).
pub fn pjdfstest(dir: &Path) -> (u32, u32, u32, String) {
    let work = dir.join("pjd");
    std::fs::create_dir_all(&work).unwrap();
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(conf.path(), PJDFSTEST_CONF).unwrap();
    let out = Command::new(tool("pjdfstest"))
        .arg("-c")
        .arg(conf.path())
        .arg("-p")
        .arg(&work)
        .output()
        .expect("pjdfstest is installed (cargo install pjdfstest)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = text
        .lines()
        .find(|l| l.starts_with("Summary:"))
        .unwrap_or_else(|| panic!("pjdfstest printed no summary:\n{text}"))
        .to_string();
    let count = |word: &str| -> u32 {
        let words: Vec<&str> = summary
            .split([' ', ','])
            .filter(|w| !w.is_empty())
            .collect();
        words
            .iter()
            .position(|w| *w == word)
            .and_then(|i| words.get(i.checked_sub(1)?))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {word} count in {summary:?}"))
    };
    (count("failed"), count("skipped"), count("passed"), text)
}

/// Every operation fsx knows, mmap reads and writes included, equally likely.
const FSX_CONF: &str = r#"[weights]
close_open = 1.0
invalidate = 1.0
mapread = 1.0
mapwrite = 1.0
read = 1.0
write = 1.0
truncate = 1.0
fsync = 1.0
fdatasync = 1.0
posix_fallocate = 1.0
punch_hole = 1.0
sendfile = 1.0
posix_fadvise = 1.0
copy_file_range = 1.0
"#;

/// Runs fsx with every operation enabled for `ops` operations with `seed` on a file in `dir`;
/// Err holds its output.
pub fn fsx(dir: &Path, seed: u32, ops: u32) -> Result<(), String> {
    run_fsx(dir, seed, ops, FSX_CONF.to_string())
}

/// fsx as above on a file of up to `file_len` bytes, with operations of up to `op_len` bytes
/// (fsx's defaults: 256 KiB and 64 KiB).
pub fn fsx_sized(
    dir: &Path,
    seed: u32,
    ops: u32,
    file_len: u32,
    op_len: usize,
) -> Result<(), String> {
    let conf = format!("flen = {file_len}\n\n[opsize]\nmax = {op_len}\n\n{FSX_CONF}");
    run_fsx(dir, seed, ops, conf)
}

fn run_fsx(dir: &Path, seed: u32, ops: u32, conf_text: String) -> Result<(), String> {
    let file = dir.join(format!("fsx-{seed}.dat"));
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(conf.path(), conf_text).unwrap();
    let artifacts = tempfile::tempdir().unwrap();
    let out = Command::new(tool("fsx"))
        .args(["-N", &ops.to_string(), "-S", &seed.to_string()])
        .arg("-f")
        .arg(conf.path())
        .arg("-P")
        .arg(artifacts.path())
        .arg(&file)
        .output()
        .expect("fsx is installed (cargo install fsx)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.contains("All operations completed A-OK!") {
        Ok(())
    } else {
        Err(text)
    }
}
