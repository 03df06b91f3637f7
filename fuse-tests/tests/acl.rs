//! POSIX ACLs behave as on ext4 (issue 12), on every driver (all keep xattrs): default ACLs are
//! inherited by new files and directories, the umask applies only without one, an ACL change
//! shows in the mode at once (the kernel's cached attributes go with it), a chmod changes the
//! ACL mask, named entries grant and deny access, malformed values are refused, and an ACL
//! counts toward the quota as any xattr of its size does.
//!
//! Each case is a shell script run on a fresh ext4 filesystem (a loop device) and on a volume
//! of each driver; the volume must print exactly what ext4 printed. A few lines of the ext4
//! output are also checked, so the reference itself is known to have ACLs.
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use fuse_tests::daemon::fuse_or_skip;
use fuse_tests::loopfs::LoopFs;
use fuse_tests::{Backend, TestSession};

const BACKENDS: [Backend; 3] = [Backend::Local, Backend::Tmpfs, Backend::Image];

/// Shell helpers every case has: `show PATH...` prints each path's mode and owner, then its
/// ACLs; `as_nobody CMD...` runs a command as uid and gid 65534 without other groups and
/// prints its last error line without the program's name.
const PRELUDE: &str = r#"
show() {
    for p in "$@"; do
        printf '%s %s\n' "$p" "$(stat -c '%A %u:%g' "$p")"
        getfacl -cp "$p" 2>&1 | sed '/^$/d; s/^/  /'
    done
}
as_nobody() {
    setpriv --reuid=65534 --regid=65534 --clear-groups "$@" 2>&1 | sed 's/.*: //'
}
"#;

/// Runs `script` in a new directory `dir` (mode 0755) and returns what it printed, stdout and
/// stderr together.
fn run_in(dir: &Path, script: &str) -> String {
    std::fs::create_dir(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{PRELUDE}\ncd \"$1\" || exit 1\n{script}"))
        .arg("sh")
        .arg(dir)
        .output()
        .expect("sh");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text.push_str(&format!("exit: {}\n", out.status.code().unwrap_or(-1)));
    text
}

/// Runs `script` on ext4 and on every driver; each must print what ext4 printed. Returns the
/// ext4 output, for the caller's own checks of the reference.
fn same_as_ext4(test: &str, script: &str) -> Option<String> {
    if !fuse_or_skip(test) {
        return None;
    }
    let ext4 = LoopFs::ext4(32);
    let want = run_in(&ext4.path().join("case"), script);
    let mut wrong = Vec::new();
    for backend in BACKENDS {
        let s = TestSession::with(backend, Some(64 << 20), None);
        let got = run_in(&s.path("case"), script);
        if got != want {
            wrong.push(format!("--- {backend:?} printed:\n{got}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{test}: ext4 printed:\n{want}\n{}",
        wrong.join("\n")
    );
    Some(want)
}

/// Checks that the ext4 reference printed `line`.
fn reference_has(want: &str, line: &str) {
    assert!(
        want.lines().any(|l| l == line),
        "ext4 did not print {line:?}:\n{want}"
    );
}

#[test]
fn default_acls_are_inherited_by_new_nodes() {
    let script = r#"
umask 022
mkdir d
setfacl -d -m u::r,g::r,o::- d
touch d/f
mkdir d/sub
mkfifo d/fifo
ln -s f d/link
python3 -c 'import os; os.close(os.open("d/explicit", os.O_CREAT | os.O_WRONLY, 0o600))'
show d d/f d/sub d/fifo d/explicit
stat -c '%A' d/link
mkdir e
setfacl -d -m u::rwx,g::rx,o::-,u:65534:rwx,g:65534:r e
touch e/f
mkdir e/sub
mkdir -m 0700 e/sub700
python3 -c 'import os; os.close(os.open("e/x", os.O_CREAT | os.O_WRONLY, 0o755))'
mkdir e/sub/deeper
touch e/sub/deeper/f
show e/f e/sub e/sub700 e/x e/sub/deeper e/sub/deeper/f
"#;
    if let Some(want) = same_as_ext4("default_acls_are_inherited_by_new_nodes", script) {
        reference_has(&want, "d/f -r--r----- 0:0");
        reference_has(&want, "e/f -rw-rw---- 0:0");
        reference_has(&want, "  default:user:nobody:rwx");
    }
}

#[test]
fn the_umask_applies_only_without_a_default_acl() {
    let script = r#"
mkdir d plain
setfacl -d -m u::rwx,g::rwx,o::rx d
for mask in 000 022 027 077 777; do
    (umask $mask; touch d/f$mask plain/f$mask; mkdir d/d$mask plain/d$mask; mkfifo d/p$mask plain/p$mask)
    stat -c '%n %A' d/f$mask plain/f$mask d/d$mask plain/d$mask d/p$mask plain/p$mask
done
"#;
    if let Some(want) = same_as_ext4("the_umask_applies_only_without_a_default_acl", script) {
        reference_has(&want, "d/f077 -rw-rw-r--");
        reference_has(&want, "plain/f077 -rw-------");
    }
}

#[test]
fn an_acl_change_shows_in_the_mode_at_once() {
    // Each stat comes right after the change, with the attributes cached from the stat before.
    let script = r#"
touch s
stat -c '%A' s
setfacl -m u::r,g::r,o::- s
stat -c '%A' s
ls -l s | cut -c1-10
setfacl -m u:65534:rw s
stat -c '%A' s
ls -l s | cut -c1-10
setfacl -m m::r s
stat -c '%A' s
setfacl -b s
stat -c '%A' s
show s
mkdir d
stat -c '%A' d
setfacl -m u::rwx,g::-,o::x d
stat -c '%A' d
touch g g2
chown 65534:0 g g2
chmod 2775 g g2
stat -c '%A' g
as_nobody setfacl -m u::rwx,g::rx,o::r g
stat -c '%A' g
setfacl -m u::rwx,g::rx,o::r g2
stat -c '%A' g2
"#;
    if let Some(want) = same_as_ext4("an_acl_change_shows_in_the_mode_at_once", script) {
        reference_has(&want, "-r--rw----");
        reference_has(&want, "-rwxr-xr--");
        reference_has(&want, "-rwxr-sr--");
    }
}

#[test]
fn chmod_updates_the_acl_mask() {
    let script = r#"
touch c
setfacl -m u:65534:rwx,g::rw c
stat -c '%A' c
chmod 640 c
stat -c '%A' c
show c
chmod 770 c
show c
chmod u=r c
show c
mkdir d
setfacl -m g:65534:rwx d
setfacl -d -m u:65534:rx d
chmod 700 d
show d
"#;
    if let Some(want) = same_as_ext4("chmod_updates_the_acl_mask", script) {
        reference_has(&want, "  mask::r--");
    }
}

#[test]
fn named_entries_grant_and_deny_access() {
    // Every check follows the change before it, with the ACL the kernel cached at the last.
    let script = r#"
echo secret > a
chmod 600 a
as_nobody cat a
setfacl -m u:65534:r a
as_nobody cat a
setfacl -m m::- a
as_nobody cat a
setfacl -m m::r,u:65534:- a
as_nobody cat a
setfacl -x u:65534 a
setfacl -m g:65534:r a
as_nobody cat a
setfacl -m o::r,g:65534:- a
as_nobody cat a
chmod 600 a
as_nobody cat a
mkdir ad
chmod 700 ad
as_nobody touch ad/n
setfacl -m u:65534:rwx ad
as_nobody sh -c 'echo hi > ad/n && cat ad/n'
setfacl -m u:65534:rx ad
as_nobody rm ad/n
as_nobody ls ad
mkdir inherit
setfacl -m u:65534:rwx inherit
setfacl -d -m u:65534:rw inherit
chmod 700 inherit
echo inherited > inherit/f
chmod 600 inherit/f
as_nobody cat inherit/f
as_nobody sh -c 'echo more >> inherit/f'
show inherit/f
"#;
    if let Some(want) = same_as_ext4("named_entries_grant_and_deny_access", script) {
        reference_has(&want, "secret");
        reference_has(&want, "Permission denied");
    }
}

#[test]
fn malformed_and_misplaced_acls_are_refused() {
    let script = r#"
touch m
mkdir d
ln -s m link
python3 - <<'PY'
import errno, os

def entry(tag, perm, id=0xffffffff):
    return tag.to_bytes(2, "little") + perm.to_bytes(2, "little") + id.to_bytes(4, "little")

v2 = (2).to_bytes(4, "little")
base = entry(1, 6) + entry(4, 4) + entry(0x20, 4)
values = {
    "header only": v2,
    "short": v2[:3],
    "ragged": v2 + entry(1, 6)[:5],
    "version 1": (1).to_bytes(4, "little") + base,
    "owner only": v2 + entry(1, 6),
    "no group": v2 + entry(1, 6) + entry(0x20, 4),
    "bad bits": v2 + entry(1, 8) + entry(4, 4) + entry(0x20, 4),
    "named without mask": v2 + entry(1, 6) + entry(2, 4, 7) + entry(4, 4) + entry(0x20, 4),
    "out of order": v2 + entry(4, 4) + entry(1, 6) + entry(0x20, 4),
    "unknown tag": v2 + entry(1, 6) + entry(4, 4) + entry(0x40, 4) + entry(0x20, 4),
    "twice the owner": v2 + entry(1, 6) + entry(1, 6) + entry(4, 4) + entry(0x20, 4),
    "valid": v2 + base,
}

def attempt(what, call):
    try:
        call()
        print(what, "ok")
    except OSError as e:
        print(what, errno.errorcode[e.errno])

for what, value in values.items():
    for name in ["system.posix_acl_access", "system.posix_acl_default"]:
        for path in ["m", "d"]:
            attempt(f"{what} {name[17:]} {path}",
                    lambda: os.setxattr(path, name, value))
attempt("on a symlink", lambda: os.setxattr("link", "system.posix_acl_access", v2 + base,
                                            follow_symlinks=False))
for name in ["system.posix_acl_access", "system.posix_acl_default"]:
    for path in ["m", "d"]:
        attempt(f"remove absent {name[17:]} {path}", lambda: os.removexattr(path, name))
print(sorted(os.listxattr("m")), sorted(os.listxattr("d")))
PY
show m d
"#;
    if let Some(want) = same_as_ext4("malformed_and_misplaced_acls_are_refused", script) {
        reference_has(&want, "named without mask access m EINVAL");
        reference_has(&want, "valid default m EACCES");
    }
}

/// An ACL value (the kernel's xattr format) with `named` named-user entries.
fn acl_value(named: u32) -> Vec<u8> {
    let entry = |tag: u16, perm: u16, id: u32| {
        let mut e = tag.to_le_bytes().to_vec();
        e.extend_from_slice(&perm.to_le_bytes());
        e.extend_from_slice(&id.to_le_bytes());
        e
    };
    let mut v = 2u32.to_le_bytes().to_vec();
    v.extend(entry(0x01, 6, u32::MAX));
    for i in 0..named {
        v.extend(entry(0x02, 4, 1000 + i));
    }
    v.extend(entry(0x04, 4, u32::MAX));
    v.extend(entry(0x10, 4, u32::MAX));
    v.extend(entry(0x20, 0, u32::MAX));
    v
}

/// `setfattr -n NAME -v VALUE PATH`: whether it worked, and its error line without the path.
fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), String> {
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new("setfattr")
        .args(["-n", name, "-v", &format!("0x{hex}")])
        .arg(path)
        .output()
        .expect("setfattr");
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr)
            .rsplit(": ")
            .next()
            .unwrap_or("")
            .trim()
            .to_string()),
    }
}

fn blocks(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks()
}

#[test]
fn acls_count_toward_the_quota_as_other_xattrs_do() {
    if !fuse_or_skip("acls_count_toward_the_quota_as_other_xattrs_do") {
        return;
    }
    // 400 named entries: 3,236 bytes, an xattr block of its own on ext4 and a page on tmpfs.
    let acl = acl_value(400);
    for backend in BACKENDS {
        let s = TestSession::with(backend, Some(8 << 20), None);
        let file = |name: &str| {
            let p = s.path(name);
            std::fs::write(&p, b"").unwrap();
            p
        };
        let (with_acl, with_xattr) = (file("acl"), file("xattr"));
        set_xattr(&with_acl, "system.posix_acl_access", &acl).unwrap();
        set_xattr(&with_xattr, "user.same_size", &acl).unwrap();
        assert_eq!(
            blocks(&with_acl),
            blocks(&with_xattr),
            "{backend:?}: an ACL takes what an xattr of its size takes"
        );
        // Inherited: a default ACL's copy costs what a same-size xattr costs.
        std::fs::create_dir(s.path("d")).unwrap();
        set_xattr(&s.path("d"), "system.posix_acl_default", &acl_value(3)).unwrap();
        std::fs::write(s.path("d/inherits"), b"").unwrap();
        let plain = file("plain");
        set_xattr(&plain, "user.same_size", &acl_value(3)).unwrap();
        assert_eq!(blocks(&s.path("d/inherits")), blocks(&plain), "{backend:?}");
        // Fill the volume: an ACL that needs room is refused as such an xattr is.
        let (acl_file, xattr_file) = (file("acl2"), file("xattr2"));
        let _ = std::fs::write(s.path("fill"), vec![1u8; 8 << 20]);
        let acl_outcome = set_xattr(&acl_file, "system.posix_acl_access", &acl);
        let xattr_outcome = set_xattr(&xattr_file, "user.same_size", &acl);
        assert_eq!(acl_outcome, xattr_outcome, "{backend:?}: on a full volume");
        // The image keeps xattrs in its metadata region, outside the byte quota.
        let counted = !matches!(backend, Backend::Image);
        assert_eq!(
            acl_outcome.is_err(),
            counted,
            "{backend:?}: {acl_outcome:?}"
        );
        if let Err(e) = &acl_outcome {
            assert_eq!(e, "No space left on device", "{backend:?}");
            let mode = std::fs::metadata(&acl_file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o644, "{backend:?}: a refused ACL changes nothing");
        }
        assert_eq!(
            s.used_bytes(),
            s.du(),
            "{backend:?}: usage is what du counts"
        );
    }
}
