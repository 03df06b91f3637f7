#!/usr/bin/env bash
# A single-node Ceph cluster for the rbd driver's development and tests: one mon (a), one OSD (0,
# bluestore on a sparse file), a mgr (x) only when asked, one size-1 pool initialised for RBD, bound
# to 127.0.0.1 only.
# Debian 12's packages (pacific 16.2.x; tools/install-deps.sh installs them). Everything (config,
# data, logs, sockets, pid files) lives under one directory; nothing is installed as a service.
#
# Usage: tools/ceph.sh start|stop|status|purge|env
#   start   bootstrap on first use, otherwise (re)start whichever daemons are not running; returns
#           once the pool takes I/O. Idempotent: on a running cluster it only checks it.
#   stop    SIGTERM the daemons (pid file, checked against /proc/PID/cmdline), wait, then SIGKILL
#   status  pids and RSS of the daemons, then `ceph -s`; exit 0 when all its daemons run, else 3
#   purge   kill the daemons (SIGKILL: the data goes anyway), then remove the directory, only if
#           this script made it
#   env     print `export CEPH_CONF=...` for clients (ceph, rados, rbd, librados/librbd, fvol)
#
# Knobs (environment; read at bootstrap, then remembered in the directory's ceph.conf):
#   FVOL_CEPH_DIR=/tmp/fvol-ceph
#   FVOL_CEPH_AUTH=none          none | cephx (cephx: client.admin's key is in $FVOL_CEPH_DIR/keyring,
#                                which ceph.conf names, so CEPH_CONF alone is enough for clients)
#   FVOL_CEPH_POOL=rbd
#   FVOL_CEPH_SIZE=10G           bluestore block file (sparse; uses only what is written)
#   FVOL_CEPH_MON_PORT=3300      the mon's only port (msgr2; msgr1 is off). Pick another when
#                                several clusters share a host: two mons cannot share a port. The OSD
#                                takes free ports in 6800-7300 by itself.
#   FVOL_CEPH_MGR=0              1: also run a ceph-mgr (Debian's ceph-mgr), which keeps the space
#                                statistics `ceph df` reports (the CSI driver's GetCapacity of rbd
#                                needs them). Off by default: the mgr adds its always-on modules
#                                (and their device_health_metrics pool) and ~300 MiB of memory.
#
# Clients need only CEPH_CONF=$FVOL_CEPH_DIR/ceph.conf. Python clients (`import rados, rbd`) must use
# /usr/bin/python3: a pyenv python3 on PATH does not see /usr/lib/python3/dist-packages.
set -euo pipefail

D=${FVOL_CEPH_DIR:-/tmp/fvol-ceph}
AUTH=${FVOL_CEPH_AUTH:-none}
POOL=${FVOL_CEPH_POOL:-rbd}
SIZE=${FVOL_CEPH_SIZE:-10G}
PORT=${FVOL_CEPH_MON_PORT:-3300}
MGR=${FVOL_CEPH_MGR:-0}
CONF=$D/ceph.conf
MARK=$D/.fvol-ceph # written first at bootstrap: purge only ever removes a directory that has it
export CEPH_CONF=$CONF
CEPH=(ceph -c "$CONF" --connect-timeout 10)

T0=${EPOCHREALTIME/./}
log() { local t=$(( ${EPOCHREALTIME/./} - T0 )); printf '[%3d.%02ds] ceph.sh: %s\n' $((t / 1000000)) $((t % 1000000 / 10000)) "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "$AUTH" in none | cephx) ;; *) die "FVOL_CEPH_AUTH must be none or cephx, not '$AUTH'" ;; esac

# pid of a daemon of ours, or nothing (pid file + liveness + its cmdline must name our conf, so a
# recycled pid or another cluster's daemon is never taken for ours)
daemon_pid() {
    local f=$D/run/ceph-$1.pid p
    [ -f "$f" ] || return 0
    p=$(cat "$f" 2>/dev/null || true)
    [ -n "$p" ] && [ -r "/proc/$p/cmdline" ] || return 0
    if tr '\0' ' ' <"/proc/$p/cmdline" | grep -qF -- "$CONF"; then echo "$p"; fi
    return 0
}

wait_for() { # wait_for TIMEOUT_S DESCRIPTION CMD...
    local t=$1 what=$2
    shift 2
    local end=$(($(date +%s) + t))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || die "timeout (${t}s) waiting for $what (logs: $D/log)"
        sleep 0.3 # the ceph CLI is a python program: polling faster only burns the 2 cores
    done
    log "$what: ok"
}

# not `... | grep -q` under pipefail: grep exits at the first match and the writer's SIGPIPE
# would fail the pipe
mon_up() { "${CEPH[@]}" mon stat >/dev/null 2>&1; }
osd_up() { local s; s=$("${CEPH[@]}" osd stat -f json 2>/dev/null) && [[ $s == *'"num_up_osds":1'* ]]; }
mgr_up() { local s; s=$("${CEPH[@]}" mgr stat -f json 2>/dev/null) && [[ $s == *'"available":true'* ]]; }
# `ceph df` counts the OSD once the mgr has its statistics (until then it shows no OSDs)
df_ready() { local s; s=$("${CEPH[@]}" df -f json 2>/dev/null) && [[ $s == *'"num_osds":1'* ]]; }

start_mgr() {
    [ "$MGR" = 1 ] || return 0
    start_daemon mgr x
    wait_for 60 "mgr.x active" mgr_up
    wait_for 60 "space statistics (ceph df)" df_ready
}
# a real object read on the pool: answers (ENOENT) only once the PG is active. `ceph -s` may say
# HEALTH_OK earlier than that, and librbd calls block until the PG peers.
pool_io() {
    local out
    out=$(timeout 5 rados -c "$CONF" -p "$POOL" stat fvol-probe-nonexistent 2>&1) || true
    [[ $out == *'No such file'* ]]
}

write_conf() {
    local fsid=$1 bytes
    bytes=$(numfmt --from=iec "$SIZE") || die "FVOL_CEPH_SIZE '$SIZE' is not a size"
    mkdir -p "$D"/{run,log,mon,osd,mgr,crash}
    cat >"$CONF" <<EOF
# made by fvol's tools/ceph.sh; a single-node cluster for tests
[global]
fsid = $fsid
# msgr2 only, loopback only: one port per cluster, nothing reachable from outside
mon host = v2:127.0.0.1:$PORT
ms bind msgr1 = false
ms bind ipv6 = false
public addr = 127.0.0.1
public network = 127.0.0.0/8
cluster network = 127.0.0.0/8
auth cluster required = $AUTH
auth service required = $AUTH
auth client required = $AUTH
auth allow insecure global id reclaim = false
keyring = $D/keyring
run dir = $D/run
log file = $D/log/\$cluster-\$name.log
pid file = $D/run/\$cluster-\$name.pid
admin socket = $D/run/\$cluster-\$name.asok
crash dir = $D/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
# the data dir is on whatever /tmp is; never refuse to run because the host disk is nearly full
mon data avail warn = 1
mon data avail crit = 1
mon cluster log file = $D/log/\$cluster.\$channel.log
# without a mgr the mon raises "MGR_DOWN: no active mgr" as HEALTH_ERR 120 s after mkfs (I/O keeps
# working). With this set from the start it is not raised at all; bootstrap also mutes it.
mon mgr mkfs grace = 1000000000
[client]
# one socket per client connection (the pid alone collides when a process opens several, e.g. the
# tests), otherwise a long-running client blocks the others' asok
admin socket = $D/run/\$cluster-\$name.\$pid.\$cctid.asok
[mon]
mon data = $D/mon/\$cluster-\$id
keyring = $D/mon/\$cluster-\$id/keyring
[mgr]
mgr data = $D/mgr/\$cluster-\$id
keyring = $D/mgr/\$cluster-\$id/keyring
[osd]
osd data = $D/osd/\$cluster-\$id
keyring = $D/osd/\$cluster-\$id/keyring
osd objectstore = bluestore
# fewer op shards: 2 vCPUs, and every shard re-opens the bluestore block file at start (~0.3 s each)
osd op num shards = 1
osd op num threads per shard = 2
bluestore block create = true
bluestore block size = $bytes
bluestore fsck on mkfs = false
osd memory target = 1073741824
EOF
}

start_daemon() { # type id
    local t=$1 i=$2 p
    p=$(daemon_pid "$t.$i")
    if [ -n "$p" ]; then log "ceph-$t.$i already running (pid $p)"; return; fi
    rm -f "$D/run/ceph-$t.$i.pid" "$D/run/ceph-$t.$i.asok"
    # the daemons fork into the background and write their pid file themselves
    "ceph-$t" -c "$CONF" -i "$i" >>"$D/log/ceph-$t.$i.stdout" 2>&1 \
        || die "ceph-$t -i $i failed, see $D/log/ceph-$t.$i.log and .stdout"
    wait_for 30 "ceph-$t.$i pid file" test -s "$D/run/ceph-$t.$i.pid"
}

bootstrap() {
    log "bootstrapping a new cluster in $D (auth=$AUTH pool=$POOL size=$SIZE port=$PORT)"
    mkdir -p "$D"
    touch "$MARK"
    local fsid uuid id
    fsid=$(cat /proc/sys/kernel/random/uuid)
    write_conf "$fsid"
    echo "$AUTH" >"$D/auth"
    echo "$POOL" >"$D/pool"
    echo "$MGR" >"$D/with-mgr"
    monmaptool --create --addv a "[v2:127.0.0.1:$PORT]" --fsid "$fsid" "$D/monmap" >/dev/null
    local kr=()
    if [ "$AUTH" = cephx ]; then
        ceph-authtool --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
        ceph-authtool "$D/keyring" --gen-key -n client.admin \
            --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
        kr=(--keyring "$D/keyring")
    fi
    mkdir -p "$D/mon/ceph-a"
    ceph-mon -c "$CONF" --mkfs -i a --monmap "$D/monmap" "${kr[@]}" >>"$D/log/mkfs.log" 2>&1 \
        || die "ceph-mon --mkfs failed (see $D/log/mkfs.log)"
    start_daemon mon a
    wait_for 30 "mon quorum" mon_up

    uuid=$(cat /proc/sys/kernel/random/uuid)
    mkdir -p "$D/osd/ceph-0"
    if [ "$AUTH" = cephx ]; then
        # the key must exist before mkfs: `ceph-osd --mkfs --mkkey` fails with
        # "failed to fetch mon config" because it needs to authenticate to the mon first
        local key
        key=$(ceph-authtool --gen-print-key)
        printf '[osd.0]\n\tkey = %s\n' "$key" >"$D/osd/ceph-0/keyring"
        printf '{"cephx_secret": "%s"}\n' "$key" >"$D/osd/ceph-0/new.json"
        id=$("${CEPH[@]}" osd new "$uuid" -i "$D/osd/ceph-0/new.json")
        rm -f "$D/osd/ceph-0/new.json"
    else
        id=$("${CEPH[@]}" osd new "$uuid")
    fi
    [ "$id" = 0 ] || die "expected osd id 0, got '$id'"
    ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$uuid" >>"$D/log/mkfs.log" 2>&1 \
        || die "ceph-osd --mkfs failed (see $D/log/mkfs.log, $D/log/ceph-osd.0.log)"
    log "osd.0 mkfs done"
    start_daemon osd 0
    wait_for 60 "osd.0 up" osd_up

    "${CEPH[@]}" health mute MGR_DOWN --sticky >/dev/null 2>&1 || true
    "${CEPH[@]}" osd pool create "$POOL" 8 8 >/dev/null 2>&1 || die "cannot create pool $POOL"
    rbd -c "$CONF" pool init "$POOL" || die "rbd pool init $POOL failed"
    wait_for 60 "pool $POOL usable" pool_io
    if [ "$MGR" = 1 ]; then
        mkdir -p "$D/mgr/ceph-x"
        if [ "$AUTH" = cephx ]; then
            "${CEPH[@]}" auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' \
                mds 'allow *' >"$D/mgr/ceph-x/keyring" || die "cannot make mgr.x's key"
        fi
        start_mgr
    fi
    touch "$D/bootstrapped"
}

cmd_start() {
    if [ ! -f "$D/bootstrapped" ]; then
        if [ -f "$MARK" ]; then
            # an earlier bootstrap died half-way (or was killed): nothing in it is worth keeping
            log "$D holds a half-made cluster; removing it and starting over"
            cmd_stop KILL
            rm -rf --one-file-system "$D"
        elif [ -e "$D" ] && [ -n "$(ls -A "$D" 2>/dev/null)" ]; then
            die "$D exists, is not empty and was not made by tools/ceph.sh; choose another FVOL_CEPH_DIR"
        fi
        bootstrap
    else
        POOL=$(cat "$D/pool")
        MGR=$(cat "$D/with-mgr" 2>/dev/null || echo 0)
        log "starting the existing cluster in $D"
        start_daemon mon a
        wait_for 30 "mon quorum" mon_up
        start_daemon osd 0
        wait_for 60 "osd.0 up" osd_up
        wait_for 60 "pool $POOL usable" pool_io
        start_mgr
    fi
    log "cluster ready: export CEPH_CONF=$CONF"
}

# a process that still runs; a zombie has let go of its ports and files, and its reaping is up to
# whoever pid 1 is (in some containers that takes seconds), so it counts as gone
alive() {
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    [ "${st%% *}" != Z ]
}

stop_one() { # name (mon.a, osd.0, mgr.x) [signal: TERM, or KILL when the data is thrown away anyway]
    local n=$1 sig=${2:-TERM} p i
    p=$(daemon_pid "$n")
    if [ -z "$p" ]; then rm -f "$D/run/ceph-$n.pid"; return 0; fi
    kill "-$sig" "$p" 2>/dev/null || true
    for i in $(seq 1 300); do alive "$p" || break; sleep 0.1; done
    if alive "$p"; then
        log "$n ($p) ignored SIGTERM for 30s, sending SIGKILL"
        kill -KILL "$p" 2>/dev/null || true
    fi
    while alive "$p"; do sleep 0.1; done
    rm -f "$D/run/ceph-$n.pid" "$D/run/ceph-$n.asok"
    log "stopped $n (pid $p)"
}

cmd_stop() { # [signal]
    [ -d "$D" ] || return 0
    # the reverse of start: the OSD, then the mon. A clean stop takes 2-7 s (the OSD umounts
    # bluestore); bluestore also survives SIGKILL (rocksdb replays its WAL at the next start).
    local osd mon i
    osd=$(daemon_pid osd.0) mon=$(daemon_pid mon.a)
    stop_one mgr.x "${1:-TERM}"
    stop_one osd.0 "${1:-TERM}"
    stop_one mon.a "${1:-TERM}"
    # give pid 1 up to 5 s to reap the zombies, so `pgrep ceph` is empty when stop returns
    for i in $(seq 1 50); do
        [ -e "/proc/${osd:-none}" ] || [ -e "/proc/${mon:-none}" ] || break
        sleep 0.1
    done
}

cmd_status() {
    local n p rc=0 names=(mon.a osd.0)
    [ "$(cat "$D/with-mgr" 2>/dev/null)" = 1 ] && names+=(mgr.x)
    for n in "${names[@]}"; do
        p=$(daemon_pid "$n")
        if [ -n "$p" ]; then
            echo "$n pid=$p rss_kib=$(awk '/VmRSS/{print $2}' "/proc/$p/status")"
        else
            echo "$n not running"
            rc=3
        fi
    done
    if [ -n "$(daemon_pid mon.a)" ]; then "${CEPH[@]}" -s || rc=3; fi
    return "$rc"
}

cmd_purge() {
    [ -e "$D" ] || return 0
    if [ ! -f "$MARK" ] && [ -n "$(ls -A "$D" 2>/dev/null)" ]; then
        die "$D was not made by tools/ceph.sh (no $MARK); not removing it"
    fi
    cmd_stop KILL # nothing of the data is kept, so no need to wait for a clean shutdown
    rm -rf --one-file-system "$D"
    log "purged $D"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    purge) cmd_purge ;;
    env) echo "export CEPH_CONF=$CONF" ;;
    *) echo "usage: $0 start|stop|status|purge|env" >&2; exit 2 ;;
esac
