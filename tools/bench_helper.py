#!/usr/bin/env python3
"""Helpers for tools/bench.

  bench_helper.py meta DIR N      create, stat (cold), unlink N empty files in DIR (one directory);
                                  prints JSON {"create": files/s, "stat": files/s, "unlink": files/s}
  bench_helper.py mktar OUT N SEED
                                  writes a deterministic tarball of N small files (1-8 KiB of seeded
                                  random bytes) spread over about N/100 directories; prints JSON stats
  bench_helper.py table ROWS.tsv  prints the markdown results table; each row of ROWS.tsv is
                                  label, lower_is_better (0/1), decimals, ext4, fvol, bindfs;
                                  a value cell holds one value per repetition, space-separated:
                                  printed as median (min–max); words such as FAIL as they are
  bench_helper.py table2 ROWS.tsv A B RATIO
                                  the same for two columns A and B: metric | A | B | RATIO, where
                                  RATIO is the header of the column B/A;
                                  each row of ROWS.tsv is label, lower_is_better, decimals, a, b
  bench_helper.py ratio A B        prints median(B) / median(A) of two such cells, or "–"
  bench_helper.py fill DIR MIB FILE_MIB
                                  writes MIB MiB of random bytes (os.urandom, so nothing can be
                                  deduplicated or compressed) into DIR, in files of FILE_MIB MiB,
                                  1 MiB per write(), each file fsynced; prints JSON stats
  bench_helper.py stall FILE STOPFILE
                                  writes 4 KiB and fsyncs, nonstop, at the end of FILE until
                                  STOPFILE exists; prints JSON {"writes": N, "errors": N,
                                  "first_error": "..." or "", "gaps": [[before, after], ...]}, the
                                  completion times (epoch seconds) around every pause over 20 ms
  bench_helper.py control FVOL ROOT ROUNDS
                                  with a daemon serving ROOT: starts `fvol create -d rbd` of a
                                  volume whose monitor is a loopback listener that accepts and never
                                  answers; once it has connected, times ROUNDS rounds of create, ls,
                                  inspect and mount of local volumes (one CLI call each), then waits
                                  for the rbd create to give up; prints JSON: milliseconds per call
                                  kind and overall (p50, p99, max), failures, and whether the rbd
                                  create was still waiting when the last call answered
  bench_helper.py flood KIND DIR CAP
                                  makes up to CAP of KIND in DIR until the filesystem refuses:
                                  xattrs (64 KiB user xattrs on one file) or files (empty files);
                                  prints JSON {"made": N, "errno": "ENOSPC" (what stopped it, or
                                  "" if CAP did), "seconds": S}

"meta" drops the page, dentry and inode caches (needs root) between create and stat, so that the
stat phase is cold on every filesystem, FUSE ones included (their kernel inodes are forgotten too).
"""
import errno
import io
import json
import os
import random
import sys
import tarfile
import time


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def meta(directory, n):
    os.makedirs(directory, exist_ok=False)
    names = [os.path.join(directory, "f%07d" % i) for i in range(n)]
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
    out = {}

    t0 = time.perf_counter()
    for p in names:
        os.close(os.open(p, flags, 0o644))
    out["create"] = n / (time.perf_counter() - t0)

    drop_caches()  # not timed
    t0 = time.perf_counter()
    for p in names:
        os.lstat(p)
    out["stat"] = n / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    for p in names:
        os.unlink(p)
    out["unlink"] = n / (time.perf_counter() - t0)

    os.rmdir(directory)
    print(json.dumps(out))


def mktar(out_path, n, seed):
    rng = random.Random(seed)
    ndirs = max(1, n // 100)
    mtime = 1_700_000_000  # fixed, so the tarball is byte-identical for the same N and SEED
    total = 0
    with tarfile.open(out_path, "w", format=tarfile.GNU_FORMAT) as tar:
        for d in range(ndirs):
            ti = tarfile.TarInfo("tree/d%04d" % d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            ti.mtime = mtime
            tar.addfile(ti)
        for i in range(n):
            size = rng.randint(1024, 8192)
            data = rng.randbytes(size)
            ti = tarfile.TarInfo("tree/d%04d/f%06d" % (rng.randrange(ndirs), i))
            ti.size = size
            ti.mode = 0o644
            ti.mtime = mtime
            tar.addfile(ti, io.BytesIO(data))
            total += size
    print(json.dumps({"files": n, "dirs": ndirs, "bytes": total}))


def fill(directory, mib, file_mib):
    os.makedirs(directory, exist_ok=True)
    chunk = 1 << 20
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
    nfiles = -(-mib // file_mib)
    left = mib
    t0 = time.perf_counter()
    for i in range(nfiles):
        this = min(file_mib, left)
        fd = os.open(os.path.join(directory, "r%05d" % i), flags, 0o644)
        try:
            for _ in range(this):
                buf = os.urandom(chunk)
                view = memoryview(buf)
                while view:
                    view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        left -= this
    secs = time.perf_counter() - t0
    print(json.dumps({"files": nfiles, "bytes": mib * chunk, "seconds": round(secs, 3)}))


def flood(kind, directory, cap):
    os.makedirs(directory, exist_ok=True)
    made, err = 0, ""
    value = b"v" * (64 << 10)
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
    t0 = time.perf_counter()
    try:
        if kind == "xattrs":
            target = os.path.join(directory, "x")
            os.close(os.open(target, flags, 0o644))
            while made < cap:
                os.setxattr(target, "user.f%08d" % made, value)
                made += 1
        elif kind == "files":
            while made < cap:
                os.close(os.open(os.path.join(directory, "f%08d" % made), flags, 0o644))
                made += 1
        else:
            raise SystemExit("flood: unknown kind %r (xattrs, files)" % kind)
    except OSError as e:
        err = errno.errorcode.get(e.errno, str(e.errno))
    secs = time.perf_counter() - t0
    print(json.dumps({"made": made, "errno": err, "seconds": round(secs, 3)}))


def _percentile(values, p):
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def control(fvol, root, rounds):
    import socket
    import subprocess
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    held, reached = [], threading.Event()

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)  # kept open, never answered
            reached.set()

    threading.Thread(target=accept, daemon=True).start()
    conf = os.path.join(root, "silent-ceph.conf")
    with open(conf, "w") as f:
        f.write("[global]\nmon_host = 127.0.0.1:%d\nauth_cluster_required = none\n"
                "auth_service_required = none\nauth_client_required = none\n" % port)

    def cli(*args):
        return subprocess.run([fvol, "--root", root, *args], capture_output=True, text=True,
                              timeout=120)

    hang = subprocess.Popen([fvol, "--root", root, "create", "-d", "rbd", "-o", "conf=" + conf,
                             "-o", "size=64M", "hang"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not reached.wait(60):
        hang.kill()
        _, err = hang.communicate()
        print(json.dumps({"error": "the rbd create never reached the monitor: " + err.strip()}))
        return
    kinds = ("create", "ls", "inspect", "mount")
    ms = {k: [] for k in kinds}
    failures = []
    for i in range(rounds):
        name = "ctl%d" % i
        for kind, args in (("create", ["create", name, "-o", "size=16M"]), ("ls", ["ls"]),
                           ("inspect", ["inspect", name]), ("mount", ["mount", name])):
            t = time.monotonic()
            r = cli(*args)
            ms[kind].append((time.monotonic() - t) * 1000)
            if r.returncode != 0:
                failures.append("%s %s: %s" % (kind, name, r.stderr.strip()))
    still_waiting = hang.poll() is None
    try:
        _, err = hang.communicate(timeout=120)
        ended = "exit %d: %s" % (hang.returncode, err.strip())
    except subprocess.TimeoutExpired:
        hang.kill()
        hang.communicate()
        ended = "killed after 120 s more"
    for i in range(rounds):
        cli("unmount", "ctl%d" % i)
        cli("rm", "ctl%d" % i)  # also takes away the volume's guard mount
    every = [v for k in kinds for v in ms[k]]

    def stats(values):
        return {"calls": len(values), "p50": _percentile(values, 50),
                "p99": _percentile(values, 99), "max": max(values)}

    print(json.dumps({"kinds": {k: stats(ms[k]) for k in kinds}, "all": stats(every),
                      "failures": failures[:5], "failed": len(failures),
                      "create_still_waiting": still_waiting, "create_ended": ended}))


def _num(v):
    try:
        return float(v)
    except ValueError:
        return None


def _cell(v):
    """A cell holds space-separated values, one per repetition (numbers, FAIL, skipped, ...).
    Returns (median or None, text of the non-numeric values, min, max, count of numbers)."""
    toks = v.split()
    nums = sorted(x for x in (_num(t) for t in toks) if x is not None)
    other = " ".join(sorted({t for t in toks if _num(t) is None}))
    if not nums:
        return None, other or "–", None, None, 0
    mid = len(nums) // 2
    med = nums[mid] if len(nums) % 2 else (nums[mid - 1] + nums[mid]) / 2
    return med, other, nums[0], nums[-1], len(nums)


def _fmt(v, decimals):
    med, other, lo, hi, n = _cell(v)
    if med is None:
        return other
    text = f"{med:,.{decimals}f}"
    if n > 1:
        text += f" ({lo:,.{decimals}f}–{hi:,.{decimals}f})"
    if other:
        text += f" + {other}"
    return text


def _ratio(a, b):
    x, y = _cell(a)[0], _cell(b)[0]
    if x is None or y is None or y == 0:
        return "–"
    return f"{x / y:.2f}×"


def table(rows_path):
    lines = [
        "| metric | ext4 | fvol | passthrough_ll | bindfs | fvol/ext4 | fvol/passthrough_ll | fvol/bindfs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with open(rows_path) as f:
        for raw in f:
            raw = raw.rstrip("\n")
            if not raw:
                continue
            label, lower, decimals, ext4, fvol, ptll, bindfs = raw.split("\t")
            if lower == "1":
                label += " ↓"
            d = int(decimals)
            lines.append(
                f"| {label} | {_fmt(ext4, d)} | {_fmt(fvol, d)} | {_fmt(ptll, d)} | {_fmt(bindfs, d)} "
                f"| {_ratio(fvol, ext4)} | {_ratio(fvol, ptll)} | {_ratio(fvol, bindfs)} |"
            )
    print("\n".join(lines))


def table2(rows_path, col_a, col_b, ratio):
    lines = [
        f"| metric | {col_a} | {col_b} | {ratio} |",
        "|---|---:|---:|---:|",
    ]
    with open(rows_path) as f:
        for raw in f:
            raw = raw.rstrip("\n")
            if not raw:
                continue
            label, lower, decimals, a, b = raw.split("\t")
            if lower == "1":
                label += " ↓"
            d = int(decimals)
            lines.append(f"| {label} | {_fmt(a, d)} | {_fmt(b, d)} | {_ratio(b, a)} |")
    print("\n".join(lines))


def stall(path, stop):
    """A writer that must see no error across restarts of the filesystem's daemon."""
    block = os.urandom(4096)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    writes = errors = 0
    first_error = ""
    gaps = []
    last = time.time()
    while not os.path.exists(stop):
        try:
            os.write(fd, block)
            os.fsync(fd)
            writes += 1
        except OSError as e:
            errors += 1
            first_error = first_error or "%s after %d writes" % (e, writes)
            time.sleep(0.01)
            continue
        now = time.time()
        if now - last > 0.02:
            gaps.append([last, now])
        last = now
    try:
        os.close(fd)
    except OSError as e:
        errors += 1
        first_error = first_error or "close: %s" % e
    print(json.dumps({"writes": writes, "errors": errors, "first_error": first_error,
                      "gaps": gaps}))


def main(argv):
    if len(argv) == 4 and argv[1] == "meta":
        meta(argv[2], int(argv[3]))
    elif len(argv) == 5 and argv[1] == "mktar":
        mktar(argv[2], int(argv[3]), int(argv[4]))
    elif len(argv) == 3 and argv[1] == "table":
        table(argv[2])
    elif len(argv) == 6 and argv[1] == "table2":
        table2(argv[2], argv[3], argv[4], argv[5])
    elif len(argv) == 4 and argv[1] == "ratio":
        print(_ratio(argv[3], argv[2]))
    elif len(argv) == 5 and argv[1] == "fill":
        fill(argv[2], int(argv[3]), int(argv[4]))
    elif len(argv) == 4 and argv[1] == "stall":
        stall(argv[2], argv[3])
    elif len(argv) == 5 and argv[1] == "control":
        control(argv[2], argv[3], int(argv[4]))
    elif len(argv) == 5 and argv[1] == "flood":
        flood(argv[2], argv[3], int(argv[4]))
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
