#!/usr/bin/env python3
"""What fanotify pre-content marks pin in kernel memory per online-only file (issue #19;
doc/BENCHMARKS.md, "Kernel memory per online-only file").

Usage (root): bench/probes/kernel_memory_of_marks.py MOUNTPOINT [FILES] [PER_FOLDER]
MOUNTPOINT is an empty ext4, xfs or btrfs mount (a loop-mounted image). FILES empty sparse
files (default 200,000) are made in folders of PER_FOLDER (default 100). For each option, a
pre-content group is made, the option's marks added, then `sync` and `drop_caches`, and the
growth of `Slab` in /proc/meminfo over the same with no group is printed per file:
  inode        a FAN_PRE_ACCESS inode mark on every file (what skyfilld does)
  evictable    the same marks with FAN_MARK_EVICTABLE (they vanish when the inode is evicted,
               so a file not read for a while is no longer covered: not safe, measured only)
  folder       a FAN_PRE_ACCESS|FAN_EVENT_ON_CHILD mark on every folder, none on files (a file
               moved or linked out of its folder is no longer covered)
Each option also checks that a read of a file raises an event (so the marks do cover it).
"""
import ctypes, os, select, subprocess, sys, time

libc = ctypes.CDLL(None, use_errno=True)
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
FAN_CLASS_PRE_CONTENT, FAN_UNLIMITED_QUEUE, FAN_UNLIMITED_MARKS, FAN_NONBLOCK = 8, 0x10, 0x20, 2
FAN_MARK_ADD, FAN_MARK_EVICTABLE = 1, 0x200
FAN_PRE_ACCESS, FAN_EVENT_ON_CHILD = 0x100000, 0x08000000


def slab():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    time.sleep(1)
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Slab in /proc/meminfo")


def mark(g, flags, mask, path):
    if libc.fanotify_mark(g, FAN_MARK_ADD | flags, mask, -100, path.encode()) < 0:
        raise OSError(ctypes.get_errno(), f"fanotify_mark {path}")


def covered(g, path):
    """A read of `path` (from a child, as the group's owner cannot wait on itself) raises an
    event on `g`; the child is let go by closing the group afterwards."""
    pid = os.fork()
    if pid == 0:
        try:
            os.close(g)
            with open(path, "rb") as f:
                f.read(1)
        finally:
            os._exit(0)
    r, _, _ = select.select([g], [], [], 5)
    return pid, bool(r)


def main():
    mnt = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    per = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    folders = [os.path.join(mnt, f"d{i:05}") for i in range(n // per)]
    files = []
    for d in folders:
        os.makedirs(d, exist_ok=True)
        for j in range(per):
            p = os.path.join(d, f"f{j:03}")
            if not os.path.exists(p):
                with open(p, "wb") as f:
                    f.truncate(4096)
            files.append(p)
    print(f"{len(files)} files in {len(folders)} folders on {mnt}")
    base = slab()
    for opt in ("inode", "evictable", "folder"):
        g = libc.fanotify_init(FAN_CLASS_PRE_CONTENT | FAN_UNLIMITED_QUEUE | FAN_UNLIMITED_MARKS | FAN_NONBLOCK,
                               os.O_RDONLY)
        if g < 0:
            raise OSError(ctypes.get_errno(), "fanotify_init (root and Linux >= 6.14 needed)")
        t = time.time()
        if opt == "folder":
            for d in folders:
                mark(g, 0, FAN_PRE_ACCESS | FAN_EVENT_ON_CHILD, d)
        else:
            for p in files:
                mark(g, FAN_MARK_EVICTABLE if opt == "evictable" else 0, FAN_PRE_ACCESS, p)
        took = time.time() - t
        s = slab()
        pid, ok = covered(g, files[len(files) // 2])
        os.close(g)
        os.waitpid(pid, 0)
        print(f"{opt:10} marks added in {took:5.1f} s; Slab +{(s - base) / 2**20:7.1f} MiB = "
              f"{(s - base) / len(files):6.0f} B per file; a read after drop_caches raised an event: {ok}")
        base = min(base, slab())


if __name__ == "__main__":
    main()
