#!/usr/bin/python3
"""Kernel memory and read coverage of each way to mark online-only placeholders (issue #19).

What it measures: for each way of marking N sparse placeholder files spread over F folders
with fanotify pre-content marks, how much `Slab:` (/proc/meminfo) grows per file once the
kernel's caches are dropped, how long placing the marks takes, and whether a read of a
placeholder still raises a FAN_PRE_ACCESS event (the daemon could hydrate it) or not (the
reader gets zeros):
  none              a group with no marks (baseline; shows the noise of the measurement)
  inode             one FAN_PRE_ACCESS inode mark per file (what skyfilld does today)
  folder            one FAN_PRE_ACCESS|FAN_EVENT_ON_CHILD mark per folder, none on files
  evictable         one FAN_PRE_ACCESS inode mark per file with FAN_MARK_EVICTABLE
  folder+evictable  folder and evictable together
Read cases, each on a fresh placeholder marked the option's way in the same group:
  (i) read in place; (ii) drop_caches (inode evicted), then read in place; (iii) rename the
  file into an unmarked folder, then read; (iv) hard-link it into an unmarked folder, read
  through the link. A second table repeats (iii) and (iv) with a drop_caches before the read;
  a third shows which /proc/slabinfo caches the Slab difference sits in.

How: a fresh ext4 image (mkfs.ext4 with default options; sparse, 2 GiB or more when the
default 16 KiB per inode needs more) is loop-mounted in /var/tmp; N placeholders (ftruncate
to 64 KiB, no data) are made in F folders. For each option: close any previous group,
`sync; echo 3 > drop_caches` (twice, as bench.py case 13 does), median of 3 `Slab:` readings
one second apart (taken after waiting, up to --max-wait s, for 3 s of idle CPUs, and taken
again when the 3 readings spread over more than 1 MiB: other work on the machine moves Slab
by tens of MiB); then a fresh group (fanotify_init with the daemon's flags:
FAN_CLASS_PRE_CONTENT|FAN_CLOEXEC|FAN_NONBLOCK|FAN_UNLIMITED_QUEUE|FAN_UNLIMITED_MARKS,
event fds O_RDWR|O_LARGEFILE|O_CLOEXEC), marks placed the daemon's way (fanotify_mark with a
folder fd and the file's name, FAN_MARK_DONT_FOLLOW), the same Slab reading again; the
difference over N is the cost per file. This round is done --repeat times (default 3), each
in a new group; the median is reported with every round's value. The marks alive afterwards
are counted in the group's /proc/self/fdinfo. Reads are made by a child process; a thread of this one reads the group,
records each event's inode and answers FAN_ALLOW. Everything it made (mount, loop device,
image) is removed at the end, also on error, Ctrl-C or SIGTERM.

Run (root, Linux >= 6.14, Python 3 standard library only):
  /usr/bin/python3 bench/probes/marks.py [--files 200000] [--folders 2000] [--repeat 3]
                                  [--max-wait 20] [--only inode,folder]
Prints the kernel version and Markdown tables on stdout, progress on stderr.
"""

import argparse
import ctypes
import os
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

# Values from include/uapi/linux/fanotify.h (see ../shared/kernel-facts.md section 1).
FAN_CLOEXEC, FAN_NONBLOCK = 0x1, 0x2
FAN_CLASS_PRE_CONTENT = 0x8
FAN_UNLIMITED_QUEUE, FAN_UNLIMITED_MARKS = 0x10, 0x20
FAN_MARK_ADD, FAN_MARK_DONT_FOLLOW, FAN_MARK_EVICTABLE = 0x1, 0x4, 0x200
FAN_PRE_ACCESS = 0x0010_0000
FAN_EVENT_ON_CHILD = 0x0800_0000
FAN_ALLOW = 0x1
FAN_NOFD = -1
# The daemon's group (src/hsm/fanotify.rs, Group::new).
INIT_FLAGS = FAN_CLASS_PRE_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE | FAN_UNLIMITED_MARKS
EVENT_F_FLAGS = os.O_RDWR | os.O_LARGEFILE | os.O_CLOEXEC

META = struct.Struct("=IBBHQii")  # struct fanotify_event_metadata (24 bytes)
RESPONSE = struct.Struct("=iI")  # struct fanotify_response {fd, response}

OPTIONS = ("none", "inode", "folder", "evictable", "folder+evictable")
FILE_SIZE = 64 * 1024
MiB, GiB = 1 << 20, 1 << 30
INODE_RATIO = 16384  # /etc/mke2fs.conf default for ext4 images of this size

libc = ctypes.CDLL(None, use_errno=True)
libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
libc.fanotify_init.restype = ctypes.c_int
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
libc.fanotify_mark.restype = ctypes.c_int


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r.stdout


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def cpu_busy(seconds=1.0):
    """The share of all CPUs' time spent busy (not idle, not iowait) over `seconds`."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def wait_quiet(max_wait):
    """Waits (up to `max_wait` s) for 3 seconds in a row with the CPUs under 10% busy: other
    work on the machine (builds, tests) moves Slab by tens of MiB. Returns the seconds waited
    and whether it was quiet."""
    t = time.monotonic()
    calm = 0
    while time.monotonic() - t < max_wait:
        calm = calm + 1 if cpu_busy() < 0.10 else 0
        if calm >= 3:
            return time.monotonic() - t, True
    return time.monotonic() - t, False


def meminfo_slab():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Slab: in /proc/meminfo")


class Slab:
    """One settled Slab reading: after a quiet moment, `sync` and drop_caches (twice, half a
    second apart, as bench.py case 13 does), the median of 3 readings one second apart; done
    again (up to 3 times, after a shorter wait) while those 3 readings spread over more than
    1 MiB."""

    def __init__(self, max_wait):
        self.waited, self.tries, self.quiet = 0.0, 0, True
        for self.tries in range(1, 4):
            w, q = wait_quiet(max_wait if self.tries == 1 else max_wait / 4)
            self.waited += w
            self.quiet = self.quiet and q
            subprocess.run(["sync"], check=True)
            for _ in range(2):
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("3\n")
                time.sleep(0.5)
            vals = []
            for i in range(3):
                if i:
                    time.sleep(1)
                vals.append(meminfo_slab())
            self.spread = max(vals) - min(vals)
            if self.spread <= MiB:
                break
        self.value = statistics.median(vals)
        self.caches = slabinfo()

    def note(self):
        return (f"waited {self.waited:.0f} s{'' if self.quiet else ' (never quiet)'}, {self.tries} tries, "
                f"spread {self.spread / 1024:.0f} KiB")


def slabinfo():
    """Bytes of slab pages per cache (num_slabs * pagesperslab pages), from /proc/slabinfo:
    only to show which caches a Slab difference comes from."""
    caches = {}
    with open("/proc/slabinfo") as f:
        for line in f:
            if line.startswith(("slabinfo", "#")):
                continue
            w = line.split()
            caches[w[0]] = int(w[14]) * int(w[5]) * os.sysconf("SC_PAGE_SIZE")
    return caches


def top_caches(before, after, n, k=3):
    """The `k` caches that grew most, as 'name +B/file'."""
    d = sorted(((after.get(c, 0) - before.get(c, 0), c) for c in set(before) | set(after)), reverse=True)
    return ", ".join(f"{c} {v / n:+.0f}" for v, c in d[:k] if v > 0) or "-"


def fan_init():
    g = libc.fanotify_init(INIT_FLAGS, EVENT_F_FLAGS)
    if g < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"fanotify_init(0x{INIT_FLAGS:x}, 0x{EVENT_F_FLAGS:x}): {os.strerror(e)}")
    return g


def fan_mark(g, flags, mask, dirfd, name):
    """fanotify_mark; returns 0 or the errno."""
    if libc.fanotify_mark(g, FAN_MARK_ADD | flags, mask, dirfd, name) < 0:
        return ctypes.get_errno()
    return 0


def fdinfo_marks(g):
    """The inode marks the group holds now, as the kernel lists them."""
    with open(f"/proc/self/fdinfo/{g}") as f:
        return sum(1 for line in f if line.startswith("fanotify ino:"))


class Marker:
    """Places one option's marks on folders (dir fds under `parent_fd`) and their files."""

    def __init__(self, g, option):
        self.g = g
        self.folder = option in ("folder", "folder+evictable")
        self.files = option in ("inode", "evictable", "folder+evictable")
        self.file_flags = FAN_MARK_DONT_FOLLOW | (FAN_MARK_EVICTABLE if "evictable" in option else 0)
        self.placed = 0
        self.errors = {}  # errno -> (count, first call)

    def _one(self, flags, mask, dirfd, name, what):
        e = fan_mark(self.g, flags, mask, dirfd, name)
        if e:
            n, first = self.errors.get(e, (0, what))
            self.errors[e] = (n + 1, first)
        else:
            self.placed += 1

    def mark(self, parent_fd, folder, names):
        """Marks `folder` (a name in `parent_fd`) and/or its files `names`."""
        if self.folder:
            self._one(FAN_MARK_DONT_FOLLOW, FAN_PRE_ACCESS | FAN_EVENT_ON_CHILD, parent_fd, folder,
                      f"folder {folder!r}")
        if self.files:
            dfd = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=parent_fd)
            try:
                for name in names:
                    self._one(self.file_flags, FAN_PRE_ACCESS, dfd, name, f"file {folder!r}/{name!r}")
            finally:
                os.close(dfd)

    def error_text(self):
        return "; ".join(f"{os.strerror(e)} (errno {e}) x{n}, first on {first}"
                         for e, (n, first) in self.errors.items())


class EventReader(threading.Thread):
    """Reads the group's events, records the inode of each, answers FAN_ALLOW, closes the fd."""

    def __init__(self, g):
        super().__init__(daemon=True)
        self.g = g
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.seen = {}  # (dev, ino) -> list of (mask, pid)
        self.nofd = 0
        self.error = None

    def run(self):
        p = select.poll()
        p.register(self.g, select.POLLIN)
        try:
            while not self.stop.is_set():
                if not p.poll(100):
                    continue
                try:
                    buf = os.read(self.g, 64 * 1024)
                except BlockingIOError:
                    continue
                off = 0
                while off + META.size <= len(buf):
                    ev_len, _vers, _res, _mlen, mask, fd, pid = META.unpack_from(buf, off)
                    if ev_len < META.size:
                        break
                    off += ev_len
                    if fd == FAN_NOFD or fd < 0:
                        self.nofd += 1
                        continue
                    try:
                        st = os.fstat(fd)
                        with self.lock:
                            self.seen.setdefault((st.st_dev, st.st_ino), []).append((mask, pid))
                        os.write(self.g, RESPONSE.pack(fd, FAN_ALLOW))
                    finally:
                        os.close(fd)
        except Exception as e:  # noqa: BLE001 - reported in the results
            self.error = e

    def saw(self, key):
        with self.lock:
            return any(m & FAN_PRE_ACCESS for m, _ in self.seen.get(key, []))


READER = "import os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nos.read(fd,1)\nos.close(fd)\n"


def read_case(ev, path, children):
    """A child reads 1 byte of `path`: "seen" when a FAN_PRE_ACCESS event arrived for its
    inode within 2 s, else "NOT seen" (the thread answers at once, and a read without an event
    just returns the sparse file's zero, so the read completes either way)."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino)
    child = subprocess.Popen([sys.executable, "-S", "-c", READER, path])
    children.add(child)
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        return "HUNG"
    finally:
        children.discard(child)
    if child.returncode != 0:
        return f"reader failed ({child.returncode})"
    deadline = time.monotonic() + 2
    while not ev.saw(key) and time.monotonic() < deadline:
        time.sleep(0.02)
    return "seen" if ev.saw(key) else "NOT seen"


CASES = ("i", "ii", "iii", "iv", "iii+drop", "iv+drop")


def correctness(g, option, check_root, children):
    """The read cases on fresh placeholders in `check_root/<option>/in` (marked the option's
    way), `check_root/<option>/out` being an unmarked folder of the same filesystem."""
    base = os.path.join(check_root, option.replace("+", "_"))
    indir, outdir = os.path.join(base, "in"), os.path.join(base, "out")
    marker = Marker(g, option)
    pfd = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def mark(case):
        """Marks the case's file (and the folder `in`) just before the case, so a drop_caches
        of an earlier case cannot have evicted its evictable mark."""
        marker.mark(pfd, b"in", [case.encode()])
        if marker.errors:
            raise OSError("mark failed: " + marker.error_text())

    def drop():
        drop_caches()
        time.sleep(0.5)

    ev = EventReader(g)
    ev.start()
    res = {}
    try:
        mark("i")
        res["i"] = read_case(ev, os.path.join(indir, "i"), children)
        mark("ii")
        drop()
        res["ii"] = read_case(ev, os.path.join(indir, "ii"), children)
        for case, move in (("iii", os.rename), ("iv", os.link)):
            mark(case)
            move(os.path.join(indir, case), os.path.join(outdir, case))
            res[case] = read_case(ev, os.path.join(outdir, case), children)
            case += "+drop"
            mark(case)
            move(os.path.join(indir, case), os.path.join(outdir, case))
            drop()
            res[case] = read_case(ev, os.path.join(outdir, case), children)
    except OSError as e:
        res = {c: res.get(c, str(e)) for c in CASES}
    finally:
        os.close(pfd)
        ev.stop.set()
        ev.join()
    if ev.error:
        res = {c: f"{res.get(c, '-')} (event thread: {ev.error})" for c in CASES}
    if ev.nofd:
        log(f"   {option}: {ev.nofd} events without fd (overflow)")
    return res


def placeholder(dfd, name):
    fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=dfd)
    os.ftruncate(fd, FILE_SIZE)
    os.close(fd)


class Image:
    """A loop-mounted ext4 image in /var/tmp; `close` removes all of it."""

    def __init__(self, inodes):
        self.dir = tempfile.mkdtemp(prefix="skyfill-marks-", dir="/var/tmp")
        self.img = os.path.join(self.dir, "ext4.img")
        self.mnt = os.path.join(self.dir, "mnt")
        self.loop = None
        self.mounted = False
        try:
            os.mkdir(self.mnt)
            # 2 GiB, or more when mkfs.ext4's default 16 KiB per inode would not give enough inodes.
            need = int(inodes * 1.1) * INODE_RATIO
            self.size = max(2 * GiB, -(-need // (256 * MiB)) * 256 * MiB)
            with open(self.img, "wb") as f:
                f.truncate(self.size)
            run(["mkfs.ext4", "-q", "-F", self.img])
            self.loop = run(["losetup", "--find", "--show", self.img]).strip()
            # noinit_itable: no background zeroing of inode tables while Slab is read.
            run(["mount", "-t", "ext4", "-o", "noinit_itable", self.loop, self.mnt])
            self.mounted = True
        except BaseException:
            # Half made: whatever exists goes (the caller never gets an object to close).
            for e in self.close():
                print(f"marks.py: cleanup: {e}", file=sys.stderr)
            raise

    def close(self):
        errs = []
        if self.mounted:
            for i in range(10):
                r = subprocess.run(["umount", self.mnt], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                if r.returncode == 0:
                    self.mounted = False
                    break
                time.sleep(0.5)
            else:
                errs.append(f"umount {self.mnt}: {r.stdout.strip()}")
        if self.loop and not self.mounted:
            r = subprocess.run(["losetup", "-d", self.loop], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if r.returncode == 0:
                self.loop = None
            else:
                errs.append(f"losetup -d {self.loop}: {r.stdout.strip()}")
        if not self.mounted and not self.loop:
            shutil.rmtree(self.dir, ignore_errors=True)
        return errs


def measure(option, img, folders, names, n, check_root, children, repeat, max_wait):
    """`repeat` rounds of: Slab with no group, a fresh group with the option's marks, Slab again;
    the read cases run in the last round's group. The row carries the median round."""
    rounds = []
    row = {"option": option}
    for rnd in range(repeat):
        time.sleep(1)  # let the previous group's marks be destroyed (deferred work)
        before = Slab(max_wait)
        g = fan_init()
        try:
            marker = Marker(g, option)
            t = time.perf_counter()
            if option != "none":
                pfd = os.open(img.mnt, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    for d in folders:
                        marker.mark(pfd, d, names)
                finally:
                    os.close(pfd)
            took = time.perf_counter() - t
            after = Slab(max_wait)
            r = dict(before=before.value, after=after.value, per_file=(after.value - before.value) / n,
                     time=took, placed=marker.placed, errors=marker.error_text(), alive=fdinfo_marks(g),
                     caches=top_caches(before.caches, after.caches, n))
            rounds.append(r)
            log(f"   {option} round {rnd + 1}: {r['placed']} marks in {took:.2f} s, {r['alive']} alive after "
                f"drop_caches; Slab {before.value / MiB:.1f} -> {after.value / MiB:.1f} MiB = "
                f"{r['per_file']:.0f} B per file (slabinfo, B/file: {r['caches']}); "
                f"before: {before.note()}; after: {after.note()}"
                + (f"; ERRORS: {r['errors']}" if r["errors"] else ""))
            if rnd == repeat - 1:
                row["cases"] = correctness(g, option, check_root, children)
                log(f"   {option}: " + ", ".join(f"({c}) {v}" for c, v in row["cases"].items()))
        finally:
            os.close(g)
    mid = sorted(rounds, key=lambda r: r["per_file"])[(len(rounds) - 1) // 2]
    row.update(mid)
    row["all"] = [r["per_file"] for r in rounds]
    row["time"] = statistics.median(r["time"] for r in rounds)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200_000)
    ap.add_argument("--folders", type=int, default=2_000)
    ap.add_argument("--only", default=",".join(OPTIONS), help="comma-separated options to run")
    ap.add_argument("--repeat", type=int, default=3, help="rounds per option (median reported)")
    ap.add_argument("--max-wait", type=float, default=20,
                    help="seconds to wait for a quiet machine before each Slab reading")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("marks.py needs root (loop mounts, drop_caches, fanotify pre-content groups)")
    options = [o for o in a.only.split(",") if o]
    for o in options:
        if o not in OPTIONS:
            sys.exit(f"unknown option {o!r}; known: {', '.join(OPTIONS)}")
    per = a.files // a.folders
    if per * a.folders != a.files:
        sys.exit("--files must be a multiple of --folders (files are spread evenly)")

    # SIGTERM/SIGHUP unwind like Ctrl-C, so the finally below cleans up.
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    img = None
    children = set()
    rows = []
    try:
        img = Image(a.files + a.folders + 200)
        log(f"== ext4 image {img.img} ({img.size / GiB:.2f} GiB sparse) on {img.loop} at {img.mnt}")
        folders = [f"d{i:05}".encode() for i in range(a.folders)]
        names = [f"f{j:05}".encode() for j in range(per)]
        t = time.perf_counter()
        root = os.open(img.mnt, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for d in folders:
                os.mkdir(d, dir_fd=root)
                dfd = os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root)
                try:
                    for name in names:
                        placeholder(dfd, name)
                finally:
                    os.close(dfd)
        finally:
            os.close(root)
        check_root = os.path.join(img.mnt, "check")
        for o in options:
            b = os.path.join(check_root, o.replace("+", "_"))
            os.makedirs(os.path.join(b, "in"))
            os.makedirs(os.path.join(b, "out"))
            dfd = os.open(os.path.join(b, "in"), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                for c in CASES:
                    placeholder(dfd, c)
            finally:
                os.close(dfd)
        os.sync()
        log(f"== {a.files} placeholders ({FILE_SIZE // 1024} KiB sparse) in {a.folders} folders made in "
            f"{time.perf_counter() - t:.1f} s")
        for o in options:
            log(f"== {o}")
            rows.append(measure(o, img, folders, names, a.files, check_root, children, a.repeat, a.max_wait))
    finally:
        for c in list(children):
            c.kill()
            c.wait()
        if img is not None:
            errs = img.close()
            for e in errs:
                log(f"CLEANUP FAILED: {e}")
        left_loop = [l for l in run(["losetup", "-a"]).splitlines() if "skyfill-marks-" in l]
        left_mnt = [l for l in run(["mount"]).splitlines() if "/var/tmp" in l]
        log(f"== cleanup: losetup -a shows {len(left_loop)} of our loop devices, mount shows "
            f"{len(left_mnt)} mounts under /var/tmp" + "".join(f"\n   {l}" for l in left_loop + left_mnt))

    print(f"Kernel {os.uname().release}; {a.files} placeholders of {FILE_SIZE // 1024} KiB (sparse) in "
          f"{a.folders} folders on ext4 (loop image {img.size / GiB:.2f} GiB, mkfs.ext4 defaults).")
    print()
    print(f"Slab per file: median of {a.repeat} rounds (each: Slab after marking minus Slab just before, "
          f"no group, both after drop_caches), divided by {a.files}.")
    print()
    print("| option | marks (placed / alive after drop_caches) | Slab per file (bytes) | mark time "
          "| (i) in place | (ii) after drop_caches | (iii) renamed out | (iv) hard link out |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        c = r["cases"]
        marks = f"{r['placed']} / {r['alive']}" + (f" (errors: {r['errors']})" if r["errors"] else "")
        rounds = ", ".join(f"{x:.0f}" for x in r["all"])
        print(f"| {r['option']} | {marks} | {r['per_file']:.0f} (rounds: {rounds}) "
              f"| {r['time']:.2f} s | {c['i']} | {c['ii']} | {c['iii']} | {c['iv']} |")
    print()
    print("Extra: (iii) and (iv) with a drop_caches between the move/link and the read.")
    print()
    print("| option | (iii) renamed out, then drop_caches | (iv) hard link out, then drop_caches |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['option']} | {r['cases']['iii+drop']} | {r['cases']['iv+drop']} |")
    print()
    print("Where the Slab difference of the median round sits (/proc/slabinfo, the 3 caches that grew")
    print("most, bytes per file; merged caches show under the name slabinfo gives them):")
    print()
    print("| option | Slab before -> after (MiB) | caches |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['option']} | {r['before'] / MiB:.1f} -> {r['after'] / MiB:.1f} | {r['caches']} |")


if __name__ == "__main__":
    main()
