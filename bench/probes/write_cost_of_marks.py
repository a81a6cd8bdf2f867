#!/usr/bin/env python3
"""What the folder watcher's marks cost programs that write files (issue #19; doc/BENCHMARKS.md).

Usage (root): bench/probes/write_cost_of_marks.py MOUNTPOINT [FILES] [ALTERNATIONS] [KINDS]
MOUNTPOINT is an ext4, xfs or btrfs mount (a loop-mounted image is best). Each alternation
times a writer (a child process) that creates, writes (4 KiB) and closes FILES files in a
fresh folder and then sets the mtime of each, under each arrangement in turn:

  none          no fanotify group at all
  precontent    a pre-content group with an inode mark elsewhere on the filesystem and its
                ignore-only filesystem mark (the shield): skyfilld at any time
  fs-mark       that, plus a notification group (file handles, names) with a filesystem mark
                for close-after-write and attribute changes, drained as the daemon drains it:
                skyfilld's watcher since #19, for files written anywhere on the filesystem
  dir+child     that pre-content group, plus the notification group marking the writer's
                folder with events on children, drained: the watcher before, for files
                written inside a sync root (files elsewhere cost it nothing)
  fs-undrained  fs-mark with nobody reading the events (the kernel's part alone)
  fs-closeonly  fs-mark asking for close-after-write only (what attribute events add)

KINDS is a comma list of these (default: the first four). The probe's own reader is woken
for every event (as skyfilld's was before its watcher read on a thread of its own), so its
"drained" rows count that too.

       bench/probes/write_cost_of_marks.py write DIR FILES
only runs the writer (create, write 4 KiB, close; no mtime step) in DIR and prints its
time: run it in a folder outside a sync root, with skyfilld running and stopped, to see what
the daemon itself costs writers elsewhere on its filesystem.

Prints the median seconds per arrangement and the ratio to "none", and the events read.
"""
import ctypes, os, select, shutil, statistics, subprocess, sys, threading, time

libc = ctypes.CDLL(None, use_errno=True)
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
FAN_CLASS_NOTIF = 0; FAN_CLASS_PRE_CONTENT = 8; FAN_NONBLOCK = 2
FAN_UNLIMITED_QUEUE = 0x10; FAN_UNLIMITED_MARKS = 0x20
FAN_REPORT_FID = 0x200; FAN_REPORT_DIR_FID = 0x400; FAN_REPORT_NAME = 0x800
FAN_MARK_ADD = 1; FAN_MARK_FILESYSTEM = 0x100; FAN_MARK_IGNORE = 0x400; FAN_MARK_IGNORED_SURV_MODIFY = 0x40
FAN_ATTRIB = 4; FAN_CLOSE_WRITE = 8; FAN_OPEN_EXEC = 0x1000; FAN_CREATE = 0x100; FAN_DELETE = 0x200
FAN_MOVED_FROM = 0x40; FAN_MOVED_TO = 0x80; FAN_DELETE_SELF = 0x400; FAN_MOVE_SELF = 0x800
FAN_ONDIR = 0x40000000; FAN_EVENT_ON_CHILD = 0x08000000; FAN_PRE_ACCESS = 0x100000
NOTIF = FAN_CLASS_NOTIF | FAN_REPORT_FID | FAN_REPORT_DIR_FID | FAN_REPORT_NAME | FAN_UNLIMITED_QUEUE | FAN_UNLIMITED_MARKS | FAN_NONBLOCK
FOLDER = FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_ATTRIB | FAN_DELETE_SELF | FAN_MOVE_SELF | FAN_ONDIR
FILESYSTEM = FAN_CLOSE_WRITE | FAN_ATTRIB | FAN_ONDIR

WRITER = r"""
import os, sys
d, n, mtime = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "mtime"
block = b"x" * 4096
for i in range(n):
    fd = os.open(f"{d}/f{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, block)
    os.close(fd)
for i in range(n if mtime else 0):
    os.utime(f"{d}/f{i}", (1, 1))
"""


def init(flags):
    fd = libc.fanotify_init(flags, os.O_RDONLY)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "fanotify_init (needs root)")
    return fd


def mark(fd, flags, mask, path):
    if libc.fanotify_mark(fd, FAN_MARK_ADD | flags, mask, -100, path.encode()) < 0:
        raise OSError(ctypes.get_errno(), f"fanotify_mark {path}")


def drain(fd, stop, count):
    """Reads events as they come, as the daemon's watcher does."""
    while not stop.is_set():
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                buf = os.read(fd, 65536)
            except BlockingIOError:
                continue
            i = 0
            while i + 4 <= len(buf):
                count[0] += 1
                i += int.from_bytes(buf[i:i + 4], "little")


def run(mnt, kind, files):
    fdir = os.path.join(mnt, "w")
    shutil.rmtree(fdir, ignore_errors=True)
    os.makedirs(fdir)
    subprocess.run(["sync"], check=True)
    fds, stop, count, th = [], threading.Event(), [0], None
    if kind != "none":
        g = init(FAN_CLASS_PRE_CONTENT | FAN_UNLIMITED_QUEUE | FAN_UNLIMITED_MARKS | FAN_NONBLOCK)
        fds.append(g)
        other = os.path.join(mnt, "ph")
        open(other, "a").close()
        mark(g, 0, FAN_PRE_ACCESS, other)
        mark(g, FAN_MARK_FILESYSTEM | FAN_MARK_IGNORE | FAN_MARK_IGNORED_SURV_MODIFY, FAN_OPEN_EXEC, mnt)
    if kind != "none" and kind != "precontent":
        w = init(NOTIF)
        fds.append(w)
        if kind in ("fs-mark", "fs-undrained"):
            mark(w, FAN_MARK_FILESYSTEM, FILESYSTEM, mnt)
        elif kind == "fs-closeonly":
            mark(w, FAN_MARK_FILESYSTEM, FAN_CLOSE_WRITE, mnt)
        else:
            mark(w, 0, FOLDER | FILESYSTEM | FAN_EVENT_ON_CHILD, fdir)
        if kind != "fs-undrained":
            th = threading.Thread(target=drain, args=(w, stop, count))
            th.start()
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", WRITER, fdir, str(files), "mtime"], check=True)
    took = time.perf_counter() - t
    time.sleep(0.2)
    stop.set()
    if th:
        th.join()
    for fd in fds:
        os.close(fd)
    return took, count[0]


def main():
    if sys.argv[1] == "write":
        d, n = sys.argv[2], int(sys.argv[3])
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        subprocess.run(["sync"], check=True)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", WRITER, d, str(n), "no-mtime"], check=True)
        print(f"{n} files created, written (4 KiB), closed in {time.perf_counter() - t:.3f} s")
        return
    mnt = sys.argv[1]
    files = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    alts = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    kinds = sys.argv[4].split(",") if len(sys.argv) > 4 else ["none", "precontent", "fs-mark", "dir+child"]
    res = {k: [] for k in kinds}
    events = {k: 0 for k in kinds}
    for _ in range(alts):
        for k in kinds:
            took, n = run(mnt, k, files)
            res[k].append(took)
            events[k] = n
    base = statistics.median(res[kinds[0]])
    print(f"{files} files created, written (4 KiB), closed, then their mtime set; median of {alts}")
    for k in kinds:
        m = statistics.median(res[k])
        print(f"{k:12s} {m:7.3f} s  x{m / base:5.3f}  {(m - base) / files * 1e6:+6.1f} us/file  events read {events[k]}")


if __name__ == "__main__":
    main()
