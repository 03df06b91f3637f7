#!/usr/bin/env bash
# Installs what fvol's build, tests and benchmark need on a fresh Debian 12, as root.
# Idempotent: packages already installed are not touched, and apt is skipped entirely when nothing is
# missing (so a warm CI machine pays nothing). pjdfstest and fsx are built with cargo only when they are
# not on PATH / in ~/.cargo/bin (about 3 minutes once).
#
#   tools/install-deps.sh            # exit 0 when everything is present afterwards
set -euo pipefail

die() { printf 'install-deps: ERROR: %s\n' "$*" >&2; exit 1; }
say() { printf 'install-deps: %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || die "must run as root (apt-get, /etc/fuse.conf)"

export DEBIAN_FRONTEND=noninteractive
export PATH="${HOME:-/root}/.cargo/bin:$PATH"

# Debian packages. fuse3: fusermount3 and /etc/fuse.conf; libfuse3-dev: headers, and the example
# passthrough_ll.c that tools/bench builds (with gcc) as a FUSE peer;
# acl/libacl1-dev/attr: pjdfstest build and ACL/xattr tests; bindfs: the FUSE peer in tools/bench;
# fio/e2fsprogs: tools/bench; xfsprogs: XFS with reflinks (local snapshots, tools/bench-snapshot);
# jq: JSON from `fvol inspect` and fio; util-linux: losetup/mount;
# docker.io (dockerd, containerd, runc, docker) and busybox-static (the test image): the Docker
# volume plugin tests, which run a private dockerd (tools/docker-daemon.sh).
# Ceph (the rbd driver and its tests; tools/ceph.sh runs a single-node cluster): librados2/librbd1 are
# what fvol loads at run time (dlopen, never linked); ceph-mon/ceph-osd are the daemons (they pull in
# ceph-base: monmaptool, ceph-authtool); ceph-common: the `ceph`, `rados` and `rbd` commands.
# ceph-mgr: librbd needs none, but `ceph df` has space statistics only with one (the CSI test of
# GetCapacity runs its cluster with FVOL_CEPH_MGR=1). About 150 MB of packages, ~1 min to install.
# protobuf-compiler: protoc, which build.rs runs (tonic-build) to generate the CSI code from
# proto/csi.proto; python3-venv: the venv of kubernetes-validate (below).
packages=(fuse3 libfuse3-dev gcc acl libacl1-dev attr bindfs fio e2fsprogs xfsprogs jq pkg-config python3
          protobuf-compiler python3-venv
          ca-certificates util-linux tar procps prometheus tmux
          docker.io busybox-static
          librados2 librbd1 ceph-common ceph-mon ceph-osd ceph-mgr)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$p")
    fi
done

apt_retry() {
    # One retry: a mirror hiccup should not fail a CI run.
    "$@" || { say "retrying: $*"; sleep 5; "$@"; }
}

if [ "${#missing[@]}" -gt 0 ]; then
    say "installing: ${missing[*]}"
    # Installing docker.io must not start the system's dockerd: the tests run their own. A
    # policy-rc.d that says 101 makes invoke-rc.d skip starting services (as in Docker images).
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
    fi
    installed=0
    apt_retry apt-get update -qq \
        && apt_retry apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        && installed=1
    [ "$own_policy" -eq 1 ] && rm -f "$policy"
    [ "$installed" -eq 1 ] || die "apt-get update/install failed for: ${missing[*]}"
else
    say "all ${#packages[@]} Debian packages already installed"
fi

# allow_other for non-root mounters (harmless as root, where it is always allowed).
if [ -f /etc/fuse.conf ] && grep -Eq '^[[:space:]]*user_allow_other[[:space:]]*$' /etc/fuse.conf; then
    :
else
    say "enabling user_allow_other in /etc/fuse.conf"
    printf 'user_allow_other\n' >>/etc/fuse.conf || die "cannot write /etc/fuse.conf"
fi

# The conformance suites, from crates.io (see ../shared/reference/conformance.md).
need_cargo=()
for t in pjdfstest fsx; do
    command -v "$t" >/dev/null 2>&1 || need_cargo+=("$t")
done
if [ "${#need_cargo[@]}" -gt 0 ]; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found; cannot install ${need_cargo[*]}"
    say "cargo install --locked ${need_cargo[*]} (a few minutes, once)"
    cargo install --quiet --locked "${need_cargo[@]}" || die "cargo install ${need_cargo[*]} failed"
else
    say "pjdfstest and fsx already installed"
fi

# kubernetes-validate (PyPI), which checks deploy/kubernetes offline against the bundled
# Kubernetes API schemas (fuse-tests/tests/deploy_manifests.rs), in a venv of its own: Debian's
# python3 refuses system-wide pip installs.
tools_venv=/opt/fvol-tools
kv_version=1.37.0
if ! "$tools_venv/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$kv_version"; then
    say "installing kubernetes-validate $kv_version in $tools_venv"
    python3 -m venv "$tools_venv" || die "python3 -m venv $tools_venv failed"
    apt_retry "$tools_venv/bin/pip" install --quiet "kubernetes-validate==$kv_version" \
        || die "pip install kubernetes-validate failed"
else
    say "kubernetes-validate $kv_version already installed"
fi

# Verify, so that a half-working install fails here and not in the middle of a test.
for cmd in fusermount3 bindfs gcc fio mkfs.ext4 losetup jq python3 setfacl getfattr pjdfstest fsx protoc \
           dockerd containerd runc docker busybox \
           ceph-mon ceph-osd ceph-mgr monmaptool ceph-authtool ceph rados rbd; do
    command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' still missing after install"
done
libs=$(ldconfig -p)  # not `ldconfig -p | grep -q`: grep exits early, SIGPIPE fails the pipe
for lib in librados.so.2 librbd.so.1; do
    grep -q "$lib" <<<"$libs" || die "$lib missing after install (Debian packages librados2, librbd1)"
done
[ -x "$tools_venv/bin/kubernetes-validate" ] || die "kubernetes-validate missing after install"
[ -c /dev/fuse ] || die "/dev/fuse is missing (modprobe fuse, or run the container with --device /dev/fuse)"
say "ok"
