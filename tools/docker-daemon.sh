#!/bin/bash
# A private dockerd for fvol's Docker volume plugin tests (Debian 12 docker.io 20.10): its state
# lives under $FVOL_DOCKER_DIR, it uses no registry, no bridge network and changes no iptables
# rules, and it launches its own containerd. It finds plugins where every dockerd does:
# /run/docker/plugins/NAME.sock or /etc/docker/plugins/NAME.spec (the tests register a private
# driver name with a spec file of their own, never the host's `fvol`).
#
# Usage: tools/docker-daemon.sh start|stop|status|purge|env
#   start   start dockerd (no-op if ours is running) and wait until it answers (30 s at most)
#   stop    SIGTERM (dockerd kills running containers, 15 s grace), SIGKILL after 40 s
#   purge   stop, unmount anything left under $FVOL_DOCKER_DIR, delete it
#   env     print the export line for clients: eval "$(tools/docker-daemon.sh env)"
# Knobs: FVOL_DOCKER_DIR=/tmp/fvol-docker  FVOL_DOCKER_STORAGE=overlay2 (or vfs; when not set and
#        overlay2 does not work on the filesystem of FVOL_DOCKER_DIR, vfs is tried next)
#
# Left outside $FVOL_DOCKER_DIR by dockerd/containerd (removed by `purge` only if empty):
#   /run/docker/ (legacy plugin sockets live in /run/docker/plugins/NAME.sock)
#   /run/containerd/s/ (shim sockets, hard-coded by containerd-shim-runc-v2)
set -euo pipefail
D=${FVOL_DOCKER_DIR:-/tmp/fvol-docker}
STORAGE=${FVOL_DOCKER_STORAGE:-overlay2}
STORAGE_CHOSEN=${FVOL_DOCKER_STORAGE:+yes}
SOCK=$D/docker.sock
PIDF=$D/docker.pid
export DOCKER_HOST=unix://$SOCK
log() { printf 'docker-daemon: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

pid() { # dockerd pid if ours and alive
    [ -f "$PIDF" ] || return 0
    local p; p=$(cat "$PIDF")
    [ -n "$p" ] && [ -r "/proc/$p/cmdline" ] && tr '\0' ' ' <"/proc/$p/cmdline" | grep -q -- "$SOCK" && echo "$p"
    return 0
}

start() {
    if [ -n "$(pid)" ]; then log "dockerd already running (pid $(pid))"; return; fi
    for cmd in dockerd containerd runc docker; do
        command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' not found: install docker.io (tools/install-deps.sh)"
    done
    [ "$(id -u)" -eq 0 ] || die "dockerd needs root"
    mkdir -p "$D/root-$STORAGE" "$D/exec"
    # Our own daemon.json keeps /etc/docker/daemon.json out of it and moves the libtrust key
    # (20.10 otherwise writes /etc/docker/key.json).
    printf '{ "deprecated-key-path": "%s/key.json" }\n' "$D" >"$D/daemon.json"
    setsid dockerd \
        --config-file "$D/daemon.json" \
        --data-root "$D/root-$STORAGE" \
        --exec-root "$D/exec" \
        --pidfile "$PIDF" \
        -H "unix://$SOCK" \
        --storage-driver "$STORAGE" \
        --exec-opt native.cgroupdriver=cgroupfs \
        --iptables=false --ip-masq=false --bridge=none \
        >>"$D/dockerd.log" 2>&1 </dev/null &
    local child=$! _
    for _ in $(seq 1 300); do
        if docker version >/dev/null 2>&1; then log "dockerd ready (pid $(pid), storage $STORAGE, $SOCK)"; return; fi
        kill -0 "$child" 2>/dev/null || break
        sleep 0.1
    done
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
    if [ -z "$STORAGE_CHOSEN" ] && [ "$STORAGE" = overlay2 ] \
        && grep -q 'graphdriver' "$D/dockerd.log" 2>/dev/null; then
        log "overlay2 does not work here; trying vfs"
        STORAGE=vfs
        start
        return
    fi
    tail -20 "$D/dockerd.log" >&2 || true
    die "dockerd did not come up (log: $D/dockerd.log)"
}

stop() {
    local p; p=$(pid)
    if [ -z "$p" ]; then log "dockerd not running"; return; fi
    kill -TERM "$p"
    local _
    for _ in $(seq 1 400); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then log "dockerd ignored SIGTERM for 40s, SIGKILL"; kill -KILL "$p"; fi
    while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
    log "dockerd stopped (pid $p)"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status)
        p=$(pid)
        if [ -n "$p" ]; then
            echo "dockerd pid=$p"
            docker info --format '{{.ServerVersion}} {{.Driver}} containers={{.Containers}} images={{.Images}}'
        else
            echo "dockerd not running"; exit 1
        fi ;;
    purge)
        stop
        # overlay2/vfs leave no mounts after a clean stop; unmount anything left below $D anyway.
        if [ -d "$D" ]; then
            awk -v d="$D" 'index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
                umount "$m" 2>/dev/null || umount -l "$m" || true
            done
            rm -rf --one-file-system "$D"
        fi
        rmdir /run/containerd/s /run/containerd /run/docker/plugins /run/docker 2>/dev/null || true
        log "purged $D" ;;
    env) echo "export DOCKER_HOST=unix://$SOCK" ;;
    *) echo "usage: $0 start|stop|status|purge|env" >&2; exit 2 ;;
esac
