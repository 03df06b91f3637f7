"""A randomized multi-process filesystem workload (fsstress-style), for usage_drift.rs.

usage: workload.py DIR SEED PROCS OPS [mixed|churn]

mixed (the default): PROCS processes run OPS random operations each on a small shared set of names under DIR, so
that they collide: create, writes at random offsets (sparse, and aligned O_DIRECT), truncate up
and down, every fallocate mode, unlink and rename of open files, renameat2 with NOREPLACE,
EXCHANGE and WHITEOUT, link, symlink, mkdir, rmdir, fifos, xattrs, copy_file_range. Each
process draws from its own generator seeded with SEED and its index, so a seed replays the
same operations (their interleaving is the kernel's).

churn: PROCS processes each write OPS files of up to 4 MiB and delete them again, some while
they are still open, so that the volume keeps filling up to its limit and emptying.

Errors the operations may meet are
expected and counted; any other errno fails the run. Every descriptor is closed before a
process exits. Prints one line of JSON: counts per operation and per errno.
"""
import ctypes
import errno
import json
import mmap
import os
import random
import sys
import traceback

libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]

AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_ZERO_RANGE, FALLOC_FL_INSERT_RANGE = 0x08, 0x10, 0x20
FALLOC_MODES = [
    0,
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_ZERO_RANGE,
    FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_COLLAPSE_RANGE,
    FALLOC_FL_INSERT_RANGE,
]
BLOCK = 4096
# What a random operation on shared names, near a quota, may be refused with.
EXPECTED = {
    errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR, errno.ENOSPC,
    errno.EDQUOT, errno.EINVAL, errno.EOPNOTSUPP, errno.ENODATA, errno.EXDEV, errno.EBUSY,
    errno.EFBIG, errno.ENAMETOOLONG, errno.ENXIO, errno.ESPIPE, errno.E2BIG, errno.EMLINK,
    errno.EPERM, errno.ENODEV, errno.ESTALE, errno.EBADF, errno.ELOOP,
    errno.EACCES,  # a whiteout (a device) on a nodev mount
}

DIRS = ["", "d0", "d1", "d0/e", "d1/e", "d0/e/h"]
NAMES = ["f%d" % i for i in range(12)] + ["g0", "g1", "g2", "g3"]


def check(ret):
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class Worker:
    def __init__(self, root, seed, index):
        self.root = root
        self.rng = random.Random("%d-%d" % (seed, index))
        self.open = []  # descriptors kept across operations (some of them of unlinked files)
        self.buf = mmap.mmap(-1, 256 * 1024)  # page-aligned, for O_DIRECT
        self.ops = {}
        self.errors = {}

    def path(self, dir_only=False):
        d = self.rng.choice(DIRS)
        if dir_only:
            return os.path.join(self.root, d)
        return os.path.join(self.root, d, self.rng.choice(NAMES))

    def size(self):
        # Mostly small, sometimes large; never past 4 MiB.
        return self.rng.choice([1, 100, 4095, 4096, 5000, 65536, 200_000, 1 << 20])

    def offset(self):
        return self.rng.choice([0, 0, 1, 4096, 10_000, 1 << 16, 1 << 20, 3 << 20])

    def fd(self):
        """A descriptor to write through: one kept open, or a fresh one."""
        if self.open and self.rng.random() < 0.5:
            return self.rng.choice(self.open), False
        flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK
        if self.rng.random() < 0.1:
            flags |= os.O_TRUNC
        return os.open(self.path(), flags, 0o644), True

    def done_with(self, fd, fresh):
        if not fresh:
            return
        if len(self.open) < 6 and self.rng.random() < 0.3:
            self.open.append(fd)
        else:
            os.close(fd)

    def op_write(self):
        fd, fresh = self.fd()
        try:
            data = bytes([self.rng.randrange(256)]) * self.size()
            os.pwrite(fd, data, self.offset() + self.rng.randrange(3))
        finally:
            self.done_with(fd, fresh)

    def op_direct_write(self):
        fd = os.open(self.path(), os.O_RDWR | os.O_CREAT | os.O_DIRECT | os.O_NONBLOCK, 0o644)
        try:
            n = self.rng.choice([1, 2, 16, 64]) * BLOCK
            self.buf[:n] = bytes([self.rng.randrange(256)]) * n
            off = self.rng.choice([0, 1, 7, 256, 1000]) * BLOCK
            os.pwritev(fd, [memoryview(self.buf)[:n]], off)
        finally:
            os.close(fd)

    def op_truncate(self):
        fd, fresh = self.fd()
        try:
            os.ftruncate(fd, self.rng.choice([0, 1, 4096, 5000, 1 << 20, 3 << 20]))
        finally:
            self.done_with(fd, fresh)

    def op_fallocate(self):
        fd, fresh = self.fd()
        try:
            mode = self.rng.choice(FALLOC_MODES)
            off, length = self.offset(), self.size()
            if mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE):
                off, length = off // BLOCK * BLOCK, max(length // BLOCK, 1) * BLOCK
            check(libc.fallocate(fd, mode, off, length))
        finally:
            self.done_with(fd, fresh)

    def op_copy(self):
        src = os.open(self.path(), os.O_RDONLY | os.O_NONBLOCK)
        try:
            dst, fresh = self.fd()
            try:
                os.copy_file_range(src, dst, self.size(), self.offset(), self.offset())
            finally:
                self.done_with(dst, fresh)
        finally:
            os.close(src)

    def op_unlink_open(self):
        """Opens a file, removes its name, writes to it, and keeps it open a while."""
        p = self.path()
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o644)
        try:
            os.unlink(p)
            os.pwrite(fd, b"u" * self.size(), self.offset())
        finally:
            self.done_with(fd, True)

    def op_unlink(self):
        os.unlink(self.path())

    def op_rename(self):
        flags = self.rng.choice([0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT])
        a, b = self.path(), self.path()
        if flags == 0:
            os.rename(a, b)
        else:
            check(libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), flags))

    def op_link(self):
        os.link(self.path(), self.path())

    def op_symlink(self):
        target = "t" * self.rng.choice([1, 60, 200, 3000])
        os.symlink(target, self.path())

    def op_mkdir(self):
        os.mkdir(self.path())

    def op_rmdir(self):
        os.rmdir(self.path())

    def op_mkfifo(self):
        os.mkfifo(self.path())

    def op_setxattr(self):
        name = "user.x%d" % self.rng.randrange(3)
        value = b"v" * self.rng.choice([1, 100, 2000, 3900])
        p = self.path()
        os.setxattr(p, name, value, follow_symlinks=False)

    def op_removexattr(self):
        os.removexattr(self.path(), "user.x%d" % self.rng.randrange(3), follow_symlinks=False)

    def op_close(self):
        if self.open:
            os.close(self.open.pop(self.rng.randrange(len(self.open))))

    OPS = [
        ("write", 12), ("direct_write", 3), ("truncate", 3), ("fallocate", 4), ("copy", 1),
        ("unlink_open", 2), ("unlink", 4), ("rename", 5), ("link", 2), ("symlink", 2),
        ("mkdir", 2), ("rmdir", 2), ("mkfifo", 1), ("setxattr", 2), ("removexattr", 1),
        ("close", 3),
    ]

    def refused(self, e):
        """Counts an expected refusal; raises anything else again."""
        if e.errno not in EXPECTED:
            raise e
        key = errno.errorcode.get(e.errno, str(e.errno))
        self.errors[key] = self.errors.get(key, 0) + 1

    def churn(self, count):
        """Writes files of up to 4 MiB in 256 KiB pieces and deletes them (a quarter while
        open), keeping at most three per process."""
        kept = []
        piece = b"c" * (256 << 10)
        for i in range(count):
            p = os.path.join(self.root, self.rng.choice(DIRS), "churn-%d-%d" % (os.getpid(), i))
            self.ops["churn"] = self.ops.get("churn", 0) + 1
            try:
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    for _ in range(self.rng.randrange(1, 17)):
                        os.write(fd, piece)
                except OSError as e:
                    self.refused(e)
                if self.rng.random() < 0.25:
                    os.unlink(p)
                    os.close(fd)
                    continue
                os.close(fd)
            except OSError as e:
                self.refused(e)
                continue
            kept.append(p)
            while len(kept) > 3:
                os.unlink(kept.pop(self.rng.randrange(len(kept))))
        for p in kept:
            os.unlink(p)

    def run(self, count):
        names = [n for n, w in self.OPS for _ in range(w)]
        for _ in range(count):
            name = self.rng.choice(names)
            self.ops[name] = self.ops.get(name, 0) + 1
            try:
                getattr(self, "op_" + name)()
            except OSError as e:
                self.refused(e)
        for fd in self.open:
            os.close(fd)


def main():
    root, seed, procs, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    mode = sys.argv[5] if len(sys.argv) > 5 else "mixed"
    if mode not in ("mixed", "churn"):
        sys.exit("workload.py: unknown mode %r: mixed or churn" % mode)
    for d in DIRS[1:]:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    children = []
    for i in range(procs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            status = 0
            try:
                worker = Worker(root, seed, i)
                if mode == "churn":
                    worker.churn(count)
                else:
                    worker.run(count)
                os.write(w, json.dumps({"ops": worker.ops, "errors": worker.errors}).encode())
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                trace = traceback.format_exc()
                os.write(w, json.dumps({"failed": "%r\n%s" % (e, trace)}).encode())
                status = 1
            os._exit(status)
        os.close(w)
        children.append((pid, r))
    total = {"ops": {}, "errors": {}}
    failed = []
    for pid, r in children:
        chunks = []
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(r)
        os.waitpid(pid, 0)
        report = json.loads(b"".join(chunks) or b'{"failed": "no report"}')
        if "failed" in report:
            failed.append(report["failed"])
            continue
        for k in ("ops", "errors"):
            for name, n in report[k].items():
                total[k][name] = total[k].get(name, 0) + n
    if failed:
        total["failed"] = failed
    print(json.dumps(total, sort_keys=True))
    sys.exit(1 if failed else 0)


main()
