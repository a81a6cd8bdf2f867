#!/usr/bin/env python3
"""What making placeholders costs in the kernel alone, apart from the daemon: N files made
in one folder of DIR the way skyfilld makes each (`hsm/placeholder.rs`: an O_TMPFILE
inode, its size, owner, mode, xattr record, mtime and pre-content mark, then linked under
its name and closed), and the same with fewer steps, timed per step. #18 asks for a folder
of 100,000 to list complete within 2 s of add-root; this says how long its placeholders take
on this machine whoever makes them. Needs root (chown, trusted xattrs, fanotify).

Usage: placeholder_syscalls.py DIR [N]   (DIR on the filesystem to measure; emptied first)
"""

import ctypes
import os
import shutil
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
O_TMPFILE = 0o20000000 | os.O_DIRECTORY
AT_EMPTY_PATH = 0x1000
FAN_CLASS_PRE_CONTENT, FAN_CLOEXEC = 0x08, 0x01
FAN_MARK_ADD, FAN_PRE_ACCESS = 0x01, 0x00100000
AT_FDCWD = -100


def check(r):
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def run(where, n, steps, group):
    d = os.path.join(where, "-".join(steps))
    os.makedirs(d)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    spent = {s: 0.0 for s in steps}
    record = b"\x01" * 48
    t0 = time.perf_counter()
    for i in range(n):
        name = f"scan-{i:06}.pdf".encode()
        t = time.perf_counter()
        fd = os.open(".", O_TMPFILE | os.O_RDWR, 0o600, dir_fd=dfd)
        t1 = time.perf_counter()
        spent["create"] += t1 - t
        for s in steps[1:-2]:
            t = time.perf_counter()
            if s == "size":
                os.ftruncate(fd, 65536)
            elif s == "owner":
                os.fchown(fd, 1000, 1000)
            elif s == "mode":
                os.fchmod(fd, 0o644)
            elif s == "xattr":
                os.setxattr(fd, "trusted.skyfill-probe", record)
            elif s == "mtime":
                os.utime(fd, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
            elif s == "mark":
                check(libc.fanotify_mark(group, FAN_MARK_ADD, ctypes.c_uint64(FAN_PRE_ACCESS), fd, None))
            spent[s] += time.perf_counter() - t
        t = time.perf_counter()
        check(libc.linkat(fd, b"", dfd, name, AT_EMPTY_PATH))
        t1 = time.perf_counter()
        os.close(fd)
        spent["link"] += t1 - t
        spent["close"] += time.perf_counter() - t1
    total = time.perf_counter() - t0
    os.close(dfd)
    return total, spent


def main():
    where = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
    group = check(libc.fanotify_init(FAN_CLASS_PRE_CONTENT | FAN_CLOEXEC, os.O_RDONLY))
    full = ["create", "size", "owner", "mode", "xattr", "mtime", "mark", "link", "close"]
    fewer = ["create", "size", "xattr", "mtime", "mark", "link", "close"]
    least = ["create", "link", "close"]
    print(f"{n} files in one folder of {where}; per file, microseconds:")
    for steps in (full, fewer, least):
        shutil.rmtree(os.path.join(where, "-".join(steps)), ignore_errors=True)
        total, spent = run(where, n, steps, group)
        parts = ", ".join(f"{s} {spent[s] / n * 1e6:.1f}" for s in steps)
        print(f"  {len(steps)} steps: {total / n * 1e6:.1f} us a file ({n / total:,.0f} files/s; "
              f"100,000 in {100_000 * total / n:.1f} s): {parts}")
        shutil.rmtree(os.path.join(where, "-".join(steps)))
    os.close(group)


if __name__ == "__main__":
    main()
