#!/usr/bin/env python3
"""What fanotify marks cost a warm read of a complete file (issue #19; doc/BENCHMARKS.md).

Usage (root): bench/probes/read_cost_of_marks.py MOUNTPOINT [ALTERNATIONS] [KINDS]
MOUNTPOINT is an ext4, xfs or btrfs mount to write a 512 MiB file into (a loop-mounted image
is best); KINDS is a comma list of: none (no group), precontent-only (a pre-content group
with one inode mark elsewhere on the filesystem, as the daemon always has), dir+child (plus a
notification group marking the file's folder with events on children: Skyfill's folder
watcher), dir-nochild (that folder mark without events on children), dir-nochild+sb (that,
plus a filesystem mark for close-after-write and attribute changes). Each alternation sets up
every kind in turn and times `dd` of the page-cache-hot file with 4 KiB and 1 MiB reads;
prints medians and ratios to "none".
"""
import ctypes, os, subprocess, sys, time, statistics
libc = ctypes.CDLL(None, use_errno=True)
FAN_CLASS_NOTIF=0; FAN_CLASS_PRE_CONTENT=8; FAN_REPORT_FID=0x200; FAN_REPORT_DIR_FID=0x400; FAN_REPORT_NAME=0x800
FAN_UNLIMITED_QUEUE=0x10; FAN_UNLIMITED_MARKS=0x20; FAN_NONBLOCK=2
FAN_MARK_ADD=1; FAN_MARK_FILESYSTEM=0x100; FAN_MARK_INODE=0
FAN_ACCESS=1; FAN_MODIFY=2; FAN_ATTRIB=4; FAN_CLOSE_WRITE=8; FAN_CREATE=0x100; FAN_DELETE=0x200
FAN_DELETE_SELF=0x400; FAN_MOVE_SELF=0x800; FAN_MOVED_FROM=0x40; FAN_MOVED_TO=0x80; FAN_ONDIR=0x40000000; FAN_EVENT_ON_CHILD=0x08000000
FAN_PRE_ACCESS=0x100000
libc.fanotify_mark.argtypes=[ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
def init(flags):
    fd = libc.fanotify_init(flags, os.O_RDONLY)
    if fd < 0: raise OSError(ctypes.get_errno(), "fanotify_init")
    return fd
def mark(fd, flags, mask, path):
    if libc.fanotify_mark(fd, FAN_MARK_ADD|flags, mask, -100, path.encode()) < 0:
        raise OSError(ctypes.get_errno(), f"fanotify_mark {path}")
mnt = sys.argv[1]
fdir = os.path.join(mnt, "d"); os.makedirs(fdir, exist_ok=True)
f = os.path.join(fdir, "f.bin")
if not os.path.exists(f):
    subprocess.run(["dd","if=/dev/urandom",f"of={f}","bs=1M","count=512","status=none"], check=True)
subprocess.run(["cat", f], stdout=subprocess.DEVNULL, check=True)
def dd(bs):
    t=time.perf_counter(); subprocess.run(["dd",f"if={f}","of=/dev/null",f"bs={bs}","status=none"],check=True); return time.perf_counter()-t
DIRMASK_CHILD = FAN_CREATE|FAN_DELETE|FAN_MOVED_FROM|FAN_MOVED_TO|FAN_CLOSE_WRITE|FAN_ATTRIB|FAN_DELETE_SELF|FAN_MOVE_SELF|FAN_ONDIR|FAN_EVENT_ON_CHILD
DIRMASK_NOCHILD = FAN_CREATE|FAN_DELETE|FAN_MOVED_FROM|FAN_MOVED_TO|FAN_DELETE_SELF|FAN_MOVE_SELF|FAN_ONDIR
NOTIF = FAN_CLASS_NOTIF|FAN_REPORT_FID|FAN_REPORT_DIR_FID|FAN_REPORT_NAME|FAN_UNLIMITED_QUEUE|FAN_UNLIMITED_MARKS|FAN_NONBLOCK
def setup(kind):
    fds=[]
    if kind=="none": return fds
    # a pre-content group with a mark elsewhere on the fs, as the daemon has (placeholders)
    g = init(FAN_CLASS_PRE_CONTENT|FAN_UNLIMITED_QUEUE|FAN_UNLIMITED_MARKS|FAN_NONBLOCK); fds.append(g)
    other = os.path.join(mnt, "ph"); open(other, "a").close()
    mark(g, FAN_MARK_INODE, FAN_PRE_ACCESS, other)
    if kind=="precontent-only": return fds
    w = init(NOTIF); fds.append(w)
    if kind=="dir+child": mark(w, FAN_MARK_INODE, DIRMASK_CHILD, fdir)
    elif kind=="dir-nochild": mark(w, FAN_MARK_INODE, DIRMASK_NOCHILD, fdir)
    elif kind=="dir-nochild+sb":
        mark(w, FAN_MARK_INODE, DIRMASK_NOCHILD, fdir)
        mark(w, FAN_MARK_FILESYSTEM, FAN_CLOSE_WRITE|FAN_ATTRIB|FAN_CREATE|FAN_DELETE|FAN_MOVED_FROM|FAN_MOVED_TO|FAN_ONDIR, mnt)
    return fds
kinds = sys.argv[3].split(",") if len(sys.argv)>3 else ["none","precontent-only","dir+child","dir-nochild","dir-nochild+sb"]
alts = int(sys.argv[2]) if len(sys.argv)>2 else 5
res = {k: {"4K":[], "1M":[]} for k in kinds}
for a in range(alts):
    for k in kinds:
        fds = setup(k)
        dd("1M")
        for bs in ("4K","1M"):
            res[k][bs].append(dd(bs))
        for x in fds: os.close(x)
base = {bs: statistics.median(res["none"][bs]) for bs in ("4K","1M")} if "none" in res else None
for k in kinds:
    m = {bs: statistics.median(res[k][bs]) for bs in ("4K","1M")}
    rel = "  ".join(f"{bs} {m[bs]:.3f}s ({base[bs]/m[bs]:.3f}x of none)" for bs in ("4K","1M")) if base else ""
    print(f"{k:18} {rel}")
