#!/bin/bash
# Builds the registry-free image busybox:local (or TAG) from the static busybox of Debian's
# busybox-static, for the Docker plugin tests. Needs DOCKER_HOST (default: the private dockerd of
# tools/docker-daemon.sh). Does nothing if the image already exists.
# Usage: tools/docker-image.sh [TAG]
set -euo pipefail
TAG=${1:-busybox:local}
: "${DOCKER_HOST:=unix://${FVOL_DOCKER_DIR:-/tmp/fvol-docker}/docker.sock}"
export DOCKER_HOST
BUSYBOX=/bin/busybox
die() { printf 'docker-image: ERROR: %s\n' "$*" >&2; exit 1; }

if docker image inspect "$TAG" >/dev/null 2>&1; then echo "$TAG"; exit 0; fi
[ -x "$BUSYBOX" ] || die "$BUSYBOX not found: install busybox-static (tools/install-deps.sh)"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked; the image needs the static one of busybox-static"
fi
R=$(mktemp -d /tmp/fvol-busybox-rootfs.XXXXXX)
trap 'rm -rf "$R"' EXIT
mkdir -p "$R"/{bin,dev,proc,sys,etc,tmp,root,data}
chmod 1777 "$R/tmp"
cp "$BUSYBOX" "$R/bin/busybox"
for a in $("$R/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$R/etc/passwd"
echo 'root:x:0:' >"$R/etc/group"
tar -C "$R" -c . | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$TAG" >/dev/null
echo "$TAG"
