#!/bin/bash
# Builds fvol's container image, the one deploy/kubernetes runs (fvol:latest, or TAG), with no
# registry and no network: the files of this host's installed Debian 12 packages that fvol
# needs at run time, and the fvol binary. The image's entrypoint is fvol, so a pod's `args` are
# fvol's (`--root /var/lib/fvol daemon`, `csi ...`).
#
# What the image holds, and why:
#   /usr/bin/fvol                 the binary (FVOL_BIN, default target/release/fvol)
#   librados2, librbd1            rbd volumes (fvol loads them with dlopen at run time)
#   coreutils, tar                `cp` for snapshots and clones of local volumes, `tar` for
#                                 export and import
#   ceph-common                   the `ceph` command, which CSI GetCapacity asks for an rbd
#                                 pool's free space (FVOL_IMAGE_CEPH_CLI=0 leaves it out: the
#                                 image is then about 90 MiB instead of 250 MiB)
#   util-linux                    `unshare`, which a stage in a private mount namespace uses
# and every package these depend on (`apt-cache depends --recurse`), without documentation.
#
# Usage: tools/fvol-image.sh [TAG]     (DOCKER_HOST chooses the dockerd, as for `docker`)
# Load it on a Kubernetes node with `docker save TAG | ctr -n k8s.io images import -`, or push
# it to your registry and set `image:` in deploy/kubernetes/*.yaml.
set -euo pipefail
TAG=${1:-fvol:latest}
HERE=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FVOL_BIN:-$HERE/target/release/fvol}
die() { printf 'fvol-image: ERROR: %s\n' "$*" >&2; exit 1; }

[ -x "$BIN" ] || die "$BIN not found: run cargo build --release first, or set FVOL_BIN"
command -v docker >/dev/null || die "docker not found: install docker.io (tools/install-deps.sh)"
command -v dpkg-query >/dev/null || die "dpkg-query not found: this script needs a Debian host"
WANT=(libc6 libgcc-s1 coreutils tar util-linux librados2 librbd1)
[ "${FVOL_IMAGE_CEPH_CLI:-1}" = 0 ] || WANT+=(ceph-common)
for p in "${WANT[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
        || die "package $p is not installed: run tools/install-deps.sh"
done

# The installed packages the wanted ones need, the wanted ones included.
mapfile -t PACKAGES < <(apt-cache depends --recurse --installed --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances "${WANT[@]}" 2>/dev/null \
    | grep -v '^ ' | tr -d '<>' | sort -u \
    | while read -r p; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' && echo "$p"
    done)

R=$(mktemp -d /tmp/fvol-image-rootfs.XXXXXX)
LIST=$(mktemp /tmp/fvol-image-files.XXXXXX)
trap 'rm -rf "$R" "$LIST"' EXIT
# Every file and symlink of those packages (directories come with them), docs left out.
dpkg-query -L "${PACKAGES[@]}" \
    | grep -Ev '^/usr/share/(doc|man|info|locale|lintian|bug)(/|$)' \
    | while read -r f; do
        if [ -L "$f" ] || [ -f "$f" ]; then printf '%s\n' "${f#/}"; fi
    done | sort -u >"$LIST"
# Debian 12 merges /bin, /sbin and /lib into /usr, and packages list the old paths too: the
# image gets the same links before the files land.
mkdir -p "$R"/usr/{bin,sbin,lib,lib64}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$R/$d"; done
tar -C / --no-recursion -cf - -T "$LIST" | tar -C "$R" -xf -
install -m 0755 "$BIN" "$R/usr/bin/fvol"
mkdir -p "$R"/{dev,proc,sys,run,tmp,etc/ceph,etc/fvol,var/lib/fvol,root}
chmod 1777 "$R/tmp"
echo 'root:x:0:0:root:/root:/usr/sbin/nologin' >"$R/etc/passwd"
echo 'root:x:0:' >"$R/etc/group"
# The binary must start in the image: its libraries and the loader are all there.
chroot "$R" /usr/bin/fvol --version >/dev/null \
    || die "fvol does not run in the image's files (missing libraries?)"
VERSION=$(chroot "$R" /usr/bin/fvol --version)
tar -C "$R" -c . | docker import \
    -c 'ENV PATH=/usr/sbin:/usr/bin' \
    -c 'ENTRYPOINT ["/usr/bin/fvol"]' \
    -c "LABEL org.opencontainers.image.title=fvol org.opencontainers.image.version=\"${VERSION#fvol }\"" \
    - "$TAG" >/dev/null
echo "$TAG"
