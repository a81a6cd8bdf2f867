"""The file-manager integrations against a real daemon (run by tests/filemanager.rs, as root).

Without arguments: the Nautilus extension's protocol calls, the emblem chosen per state, the
menu offered in and out of sync roots, menu actions that pin and free real files (bytes checked
on disk), states pushed by the daemon's event stream; then the module loaded by the real gi
bindings of python3-nautilus (see `--gi`).

With `--gi FM VERSION SOURCE` (Nautilus 4.0; Nemo 3.0, Caja 2.0: the generated variants), in a
process of its own (each file manager's typelib pins its own GTK version): SOURCE loaded by that
file manager's gi bindings; its extension class built and handed file objects that implement
the file manager's own FileInfo GObject interface (every call the extension makes goes through
the interface's C entry points); its real MenuItems activated, which must download and free
real files (bytes on disk, the CLI's status), and the daemon's pushed events must invalidate
the file objects so the new emblems show. A file manager's own file objects (NautilusFile,
NemoFile, CajaFile) exist only inside the file manager: `FileInfo.create` outside it
dereferences a table only the file manager fills and crashes (SIGSEGV, checked here), so the
interface implementation is the closest a test outside the file manager can get.

With `--menus DESKTOP UCA`: the Dolphin service menu (DESKTOP) and the Thunar custom actions
(UCA), the files the .deb installs, executed as those file managers execute them: each Exec= /
<command> line expanded the way KIO (Desktop Entry field codes) and Thunar (g_shell_quote'd
%f/%F..., then g_shell_parse_argv) expand it, for a selection of a folder and a file whose
name holds spaces, quotes and a `$`, run with `skyfill` from PATH; the effect of each action
is checked on disk (allocated bytes) and with `skyfill status`.

Every wait polls its condition with a generous deadline and fails saying what never held."""

import fnmatch
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.environ["FM_ROOT"]
OUTSIDE = os.environ["FM_OUTSIDE"]
SRC = os.path.join(os.path.dirname(__file__), "..", "packaging", "filemanagers", "skyfill_nautilus.py")
# An online-only placeholder may hold its record in one xattr block on ext4.
PLACEHOLDER_MAX = 8192


def load(name, block_gi, src=SRC):
    if block_gi:
        sys.modules["gi"] = None  # as outside a file manager
    elif sys.modules.get("gi", 0) is None:
        del sys.modules["gi"]
    spec = importlib.util.spec_from_file_location(name, src)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def allocated(p):
    return os.stat(p).st_blocks * 512


def until(what, f, secs=60, detail=None, pump=None):
    """Polls `f` until it holds; fails after `secs` saying `what` never held (and `detail()`).
    `pump` runs between polls (a GLib main-context iteration for idle callbacks)."""
    end = time.time() + secs
    while True:
        if pump:
            pump()
        if f():
            return
        if time.time() > end:
            raise AssertionError(f"timed out after {secs} s waiting for {what}"
                                 + (f"; last seen: {detail()}" if detail else ""))
        time.sleep(0.1)


def cli_status(paths):
    """`skyfill --json status` of each path (the CLI on PATH, the daemon of SKYFILL_SOCKET)."""
    r = subprocess.run(["skyfill", "--json", "status", *paths], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"skyfill status {paths} failed ({r.returncode}): {r.stdout}{r.stderr}"
    out = {}
    for line in r.stdout.splitlines():
        if line.strip():
            st = json.loads(line)
            out[st["path"]] = st
    return out


def is_local(p):
    return allocated(p) >= os.path.getsize(p) > 0


def is_freed(p):
    return allocated(p) <= PLACEHOLDER_MAX


def disk_detail(paths):
    return lambda: {os.path.basename(p): (allocated(p), os.path.getsize(p)) for p in paths}


def docs_files():
    docs = os.path.join(ROOT, "docs")
    return sorted(os.path.join(docs, n) for n in os.listdir(docs))


# ---------------------------------------------------------------- the real gi bindings

def check_real_bindings(fm, version, src, files):
    """Loads `src` through the real gi bindings of `fm` and drives it with file objects that
    implement `fm`'s FileInfo interface: emblems, menus in and out of a root, menu items
    activated against the daemon, pushed events invalidating the file objects."""
    if sys.modules.get("gi", 0) is None:
        del sys.modules["gi"]
    import gi

    gi.require_version(fm, version)
    real = load(f"skyfill_real_{fm.lower()}", block_gi=False, src=src)
    assert real.FM is not None and real.FM.__name__.endswith(fm), real.FM
    from gi.repository import Gio, GLib, GObject

    # Outside the file manager its own file objects cannot be made (see the module doc):
    # prove that in a child, so the claim in the report stays true.
    probe = subprocess.run(
        [sys.executable, "-c",
         f"import gi; gi.require_version({fm!r}, {version!r}); from gi.repository import {fm}, Gio; "
         f"{fm}.FileInfo.create(Gio.File.new_for_path({files[0]!r}))"],
        capture_output=True, timeout=60)
    assert probe.returncode != 0, f"{fm}.FileInfo.create works outside {fm} now: use it instead of the interface"

    class File(GObject.Object, real.FM.FileInfo):
        """A file object implementing the file manager's FileInfo interface: the extension's
        calls (get_location, add_emblem, invalidate_extension_info) reach these through
        the interface's C functions, as they reach NautilusFile inside the file manager."""

        def __init__(self, p):
            super().__init__()
            self.p = p
            self.emblems = []
            self.invalidated = 0

        def do_get_location(self):
            return Gio.File.new_for_path(self.p)

        def do_get_uri(self):
            return Gio.File.new_for_path(self.p).get_uri()

        def do_add_emblem(self, e):
            self.emblems.append(e)

        def do_invalidate_extension_info(self):
            self.invalidated += 1

    # The extension's event listener must be subscribed before anything changes, or a pushed
    # state could be missed: learn when its `subscribe` was answered.
    subscribed = threading.Event()

    class Client(real.Client):
        def call(self, op, **args):
            r = super().call(op, **args)
            if op == "subscribe":
                subscribed.set()
            return r

    real.Client = Client
    ctx = GLib.MainContext.default()

    def pump():  # the file manager's main loop: runs the extension's idle callbacks
        while ctx.iteration(False):
            pass

    x = real.SkyfillExtension()
    assert subscribed.wait(60), f"{fm}: the extension's event listener never subscribed"

    def emblems_of(p):
        f = File(p)
        x.update_file_info(f)
        return f.emblems

    for p in files[:2]:
        assert emblems_of(p) == ["emblem-skyfill-cloud"], (p, emblems_of(p))
    # Nautilus 4.0 passes (files); Nemo, Caja and Nautilus 3.x pass (window, files).
    pick = (lambda fs: (fs,)) if version == "4.0" else (lambda fs: (None, fs))

    def menu(paths):
        items = x.get_file_items(*pick([File(p) for p in paths]))
        for i in items:
            assert isinstance(i, real.FM.MenuItem), i
        return {i.get_property("label"): i for i in items}

    sel = files[:2]
    items = menu(sel)
    assert list(items) == ["Make available offline", "Free up space", "Always keep on this device"], list(items)
    assert x.get_file_items(*pick([File(OUTSIDE)])) == []
    assert x.get_file_items(*pick([File(files[0]), File(OUTSIDE)])) == []

    # The file objects the extension saw, to be invalidated by pushed events.
    watched = [File(p) for p in sel]
    for f in watched:
        x.update_file_info(f)

    # "Make available offline", activated as the file manager does: the selection downloads.
    items["Make available offline"].activate()
    until(f"{fm}: 'Make available offline' to download the selection", lambda: all(is_local(p) for p in sel),
          detail=disk_detail(sel), pump=pump)
    st = cli_status(sel)
    assert all(st[p]["state"] == "local" for p in sel), st
    until(f"{fm}: pushed states to invalidate the file objects", lambda: all(f.invalidated for f in watched),
          detail=lambda: [(f.p, f.invalidated) for f in watched], pump=pump)
    until(f"{fm}: the emblems to show the files local",
          lambda: all(emblems_of(p) == ["emblem-skyfill-local"] for p in sel),
          detail=lambda: [emblems_of(p) for p in sel], pump=pump)

    # "Free up space": back to placeholders, and the emblems follow. (update_file_info made
    # the newest object of each path the one to invalidate: hand it the watched ones again.)
    for f in watched:
        f.invalidated = 0
        x.update_file_info(f)
    menu(sel)["Free up space"].activate()
    until(f"{fm}: 'Free up space' to free the selection", lambda: all(is_freed(p) for p in sel),
          detail=disk_detail(sel), pump=pump)
    st = cli_status(sel)
    assert all(st[p]["state"] == "online-only" for p in sel), st
    until(f"{fm}: pushed states to invalidate the file objects again",
          lambda: all(f.invalidated for f in watched),
          detail=lambda: [(f.p, f.invalidated) for f in watched], pump=pump)
    until(f"{fm}: the emblems to show the files online-only",
          lambda: all(emblems_of(p) == ["emblem-skyfill-cloud"] for p in sel),
          detail=lambda: [emblems_of(p) for p in sel], pump=pump)
    print(f"loaded by gi ({fm} {version}): FileInfo objects, emblems, menu items activated against the daemon ok")


# ---------------------------------------------------------------- Dolphin and Thunar

def desktop_groups(path):
    """A Desktop Entry file's groups: {group: {key: value}} (comments and blanks skipped)."""
    groups, cur = {}, None
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            cur = groups.setdefault(line[1:-1], {})
            continue
        assert cur is not None and "=" in line, f"{path}: not a Desktop Entry line: {line!r}"
        k, v = line.split("=", 1)
        cur[k.strip()] = v.strip()
    return groups


def desktop_exec_argv(value, files, name, icon, desktop):
    """An Exec= value expanded as KIO's DesktopExecParser does for local files: string escapes,
    then the spec's quoting, then field codes (%F: one argument per file)."""
    # String-level escapes of the Desktop Entry spec.
    s, i, out = value, 0, []
    esc = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s) and s[i + 1] in esc:
            out.append(esc[s[i + 1]])
            i += 2
        else:
            out.append(s[i])
            i += 1
    s = "".join(out)
    # Arguments: split at unquoted spaces; "..." with \" \` \$ \\ inside.
    args, cur, quoted, i, inq = [], [], False, 0, False
    while i < len(s):
        c = s[i]
        if inq:
            if c == "\\" and i + 1 < len(s) and s[i + 1] in '"`$\\':
                cur.append(s[i + 1])
                i += 2
                continue
            if c == '"':
                inq = False
            else:
                cur.append(c)
        elif c == '"':
            inq, quoted = True, True
        elif c == " ":
            if cur or quoted:
                args.append(("".join(cur), quoted))
            cur, quoted = [], False
        else:
            assert c not in "\t\n'><~|&;$*?#()`", f"Exec={value!r}: reserved character {c!r} must be quoted"
            cur.append(c)
        i += 1
    assert not inq, f"Exec={value!r}: unterminated quote"
    if cur or quoted:
        args.append(("".join(cur), quoted))
    # Field codes.
    argv = []
    uris = ["file://" + p for p in files]  # (paths here are plain ASCII)
    for a, quoted in args:
        if not quoted and a in ("%F", "%U", "%f", "%u", "%i", "%c", "%k"):
            argv += {"%F": files, "%U": uris, "%f": files[:1], "%u": uris[:1],
                     "%i": ["--icon", icon] if icon else [], "%c": [name], "%k": [desktop]}[a]
            continue
        assert "%" not in a.replace("%%", ""), f"Exec={value!r}: field code inside {a!r} (KIO refuses it)"
        argv.append(a.replace("%%", "%"))
    return argv


def thunar_command_argv(command, files):
    """A custom action's <command> expanded as thunar-uca does: %f/%F (paths), %u/%U (URIs),
    %d/%D (folders), %n/%N (names), each g_shell_quote'd and joined by spaces; the line then
    split by g_shell_parse_argv (no shell runs it)."""
    from gi.repository import GLib

    q = GLib.shell_quote
    sub = {
        "f": q(files[0]), "F": " ".join(q(p) for p in files),
        "u": q("file://" + files[0]), "U": " ".join(q("file://" + p) for p in files),
        "d": q(os.path.dirname(files[0])), "D": " ".join(q(os.path.dirname(p)) for p in files),
        "n": q(os.path.basename(files[0])), "N": " ".join(q(os.path.basename(p)) for p in files),
        "%": "%",
    }
    out, i = [], 0
    while i < len(command):
        if command[i] == "%" and i + 1 < len(command):
            assert command[i + 1] in sub, f"<command>{command}: unknown parameter %{command[i + 1]}"
            out.append(sub[command[i + 1]])
            i += 2
        else:
            out.append(command[i])
            i += 1
    ok, argv = GLib.shell_parse_argv("".join(out))
    assert ok, command
    return argv


def execute(fm, label, argv, cwd):
    """Runs one menu command as the file manager would (PATH lookup, the folder as cwd)."""
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{fm} '{label}': {argv} exited {r.returncode}:\n{r.stdout}{r.stderr}"
    return r


def check_menus(desktop, uca):
    from xml.etree import ElementTree

    want = os.environ.get("FM_SKYFILL")
    found = shutil.which("skyfill")
    assert found and want and os.path.samefile(found, want), \
        f"the menus call `skyfill` from PATH: found {found}, the build under test is {want}"
    docs = os.path.join(ROOT, "docs")
    odd = os.path.join(ROOT, "more", os.environ["FM_ODD_NAME"])
    assert os.path.exists(odd), f"{odd} is missing: the test's server data did not arrive"
    selection = [docs, odd]  # a folder and a file, as right-clicked together
    targets = docs_files() + [odd]

    def expect(fm, label, ok_disk, state, setting=None):
        until(f"{fm} '{label}': every file {state}", lambda: all(ok_disk(p) for p in targets),
              detail=disk_detail(targets))

        def states():
            st = cli_status(targets + [docs])
            bad = {p: st[p]["state"] for p in targets if st[p]["state"] != state}
            if setting is not None and st[docs]["setting"] != setting:
                bad[docs] = f"setting {st[docs]['setting']}"
            return bad

        until(f"{fm} '{label}': `skyfill status` to say {state}"
              + (f" and the folder {setting}" if setting else ""), lambda: not states(), detail=states)

    # What each action must do, by what its label promises.
    effects = {
        "Make available offline": (is_local, "local", None),
        "Free up space": (is_freed, "online-only", "inherit"),
        "Always keep on this device": (is_local, "pinned", "pinned"),
        "Don't always keep on this device": (is_local, "local", "inherit"),
    }
    for p in targets:
        assert is_freed(p), f"{p} must start online-only"

    # Dolphin (KIO service menu).
    g = desktop_groups(desktop)
    entry = g["Desktop Entry"]
    assert entry.get("Type") == "Service" and "KonqPopupMenu/Plugin" in entry.get("X-KDE-ServiceTypes", ""), entry
    mimes = entry["MimeType"].rstrip(";").split(";")
    assert "inode/directory" in mimes and "application/octet-stream" in mimes, mimes
    counts = {int(n) for n in entry["X-KDE-RequiredNumberOfUrls"].split(",")}
    assert len(selection) in counts and 1 in counts, counts
    actions = [a for a in entry["Actions"].rstrip(";").split(";") if a]
    ran = []
    by_label = {}
    for a in actions:
        act = g[f"Desktop Action {a}"]
        by_label[act["Name"]] = act
    assert set(by_label) == set(effects), f"Dolphin actions {sorted(by_label)} vs expected {sorted(effects)}"
    # Each action once, in an order where each one changes something.
    for label in ["Make available offline", "Free up space", "Always keep on this device",
                  "Don't always keep on this device", "Free up space"]:
        act = by_label[label]
        argv = desktop_exec_argv(act["Exec"], selection, act["Name"], act.get("Icon"), desktop)
        assert argv[-len(selection):] == selection, f"Dolphin '{label}': {argv} does not end with the selection"
        execute("Dolphin", label, argv, os.path.dirname(selection[0]))
        expect("Dolphin", label, *effects[label])
        ran.append(label)
    print(f"Dolphin service menu: {len(ran)} actions executed against the daemon ok ({', '.join(ran)})")

    # Thunar (custom actions).
    tree = ElementTree.parse(uca)
    ran = []
    thunar = {}
    for action in tree.getroot().findall("action"):
        name = action.findtext("name")
        label = name.removesuffix(" (Skyfill)")
        assert label in effects, f"Thunar action {name!r} promises nothing this test knows"
        # Offered for this selection: a folder needs <directories/>, a binary file
        # <other-files/>, and every name must match one of the patterns.
        pats = (action.findtext("patterns") or "").split(";")
        assert action.find("directories") is not None and action.find("other-files") is not None, name
        assert all(any(fnmatch.fnmatchcase(os.path.basename(p), x) for x in pats) for p in selection), (name, pats)
        thunar[label] = action.findtext("command")
    assert {"Make available offline", "Free up space", "Always keep on this device"} <= set(thunar), sorted(thunar)
    order = ["Make available offline", "Free up space", "Always keep on this device"]
    # Freeing a pinned folder unpins it: Thunar's way back.
    order += ["Don't always keep on this device"] if "Don't always keep on this device" in thunar else []
    order += ["Free up space"]
    for label in order:
        argv = thunar_command_argv(thunar[label], selection)
        assert argv[-len(selection):] == selection, f"Thunar '{label}': {argv} does not end with the selection"
        execute("Thunar", label, argv, os.path.dirname(selection[0]))
        expect("Thunar", label, *effects[label])
        ran.append(label)
    print(f"Thunar custom actions: {len(ran)} actions executed against the daemon ok ({', '.join(ran)})")


# ---------------------------------------------------------------- modes

if len(sys.argv) == 5 and sys.argv[1] == "--gi":
    check_real_bindings(sys.argv[2], sys.argv[3], sys.argv[4], docs_files())
    sys.exit(0)
if len(sys.argv) == 4 and sys.argv[1] == "--menus":
    check_menus(sys.argv[2], sys.argv[3])
    sys.exit(0)
assert len(sys.argv) == 1, f"usage: {sys.argv[0]} [--gi FM VERSION SOURCE | --menus DESKTOP UCA]"

ext = load("skyfill_ext", block_gi=True)
assert ext.FM is None

# Protocol: handshake, roots.
c = ext.Client()
assert c.hello["version"] == 1, c.hello
assert ROOT in [r["local"] for r in c.call("roots")]
try:
    c.call("status", path="/etc/passwd")
    raise AssertionError("status outside a root must fail")
except ext.DaemonError as e:
    assert e.code == "not_a_root", e.code
c.close()

# A root's own state change (a pass starting or ending) keeps the cached emblems; any other
# root change (paused, removed, ...) drops them.
probe = ext.State()
probe.status["/x/a"] = {"path": "/x/a", "state": "local"}
assert probe.apply({"event": "root", "local": "/x", "change": "state"}) is None
assert "/x/a" in probe.status, "a pass starting dropped the emblem cache"
probe.apply({"event": "root", "local": "/x", "change": "paused"})
assert "/x/a" not in probe.status, "a paused root kept its cached emblems"

state = ext.State()
docs = os.path.join(ROOT, "docs")
files = docs_files()
st = state.status_of(files[0])
assert st["state"] == "online-only", st
assert ext.emblems_for(st) == ["emblem-skyfill-cloud"], ext.emblems_for(st)
assert state.status_of(OUTSIDE) is None
# A folder is fetched a page at a time (list_page): the first row needs only the first page,
# and every row is found.
ext.PAGE = 2
paged = ext.State()
assert paged.status_of(files[0])["state"] == "online-only"
assert paged.reached[docs] == 2 and docs not in paged.listed, (paged.reached, paged.listed)
for f in files:
    assert paged.status_of(f)["path"] == f, f
assert docs in paged.listed and paged.reached[docs] == len(files), (paged.reached, len(files))
ext.PAGE = 1000
assert ext.menu_for([None]) == []
assert [a for a, _ in ext.menu_for([st])] == ["hydrate", "free", "pin"]
assert ext.emblems_for({"kind": "file", "state": "local", "sync": "pending"}) == [
    "emblem-skyfill-local", "emblem-synchronizing"]
assert ext.emblems_for({"kind": "file", "state": "pinned", "sync": "conflict"}) == [
    "emblem-skyfill-pinned", "emblem-skyfill-conflict"]
for f in files:
    assert is_freed(f), f"{f} is online-only and must take no disk"

# The event stream: states arrive without asking. The listener counts as started once the
# daemon has answered its `subscribe` (events after that reach it).
pushed = []
subscribed = threading.Event()
listener_error = []


class Subscribing(ext.Client):
    def call(self, op, **args):
        r = super().call(op, **args)
        if op == "subscribe":
            subscribed.set()
        return r


def listen():
    try:
        for ev in Subscribing().events():
            p = state.apply(ev)
            if p:
                pushed.append(p)
    except Exception as e:  # shown by the waits below
        listener_error.append(repr(e))


threading.Thread(target=listen, daemon=True).start()
assert subscribed.wait(60), f"the event listener never subscribed: {listener_error}"


def state_detail():
    return {"states": {os.path.basename(f): (state.status.get(f) or {}).get("state") for f in files},
            "listener": listener_error}


# "Always keep on this device" on the folder: every file becomes local.
done, errors = ext.run_action("pin", [docs])
assert not errors, errors
for f in files:
    assert allocated(f) >= os.path.getsize(f), f"{f} not local after pin"
until("pinned states pushed", lambda: all(
    (state.status.get(f) or {}).get("state") == "pinned" for f in files), detail=state_detail)
assert ext.emblems_for(state.status[files[0]]) == ["emblem-skyfill-pinned"]
folder = state.status_of(docs)
assert folder["setting"] == "pinned", folder
assert [a for a, _ in ext.menu_for([folder])][-1] == "inherit"

# "Free up space": back to online-only, pushed too.
done, errors = ext.run_action("free", [docs])
assert not errors, errors
for f in files:
    assert is_freed(f), f"{f} still takes disk after free"
until("online-only states pushed", lambda: all(
    (state.status.get(f) or {}).get("state") == "online-only" for f in files), detail=state_detail)
assert set(files) <= set(pushed), (files, pushed)
print(f"extension against the daemon: ok ({len(files)} files pinned and freed)")

# The real bindings, where python3-nautilus is installed.
sys.modules.pop("gi", None)
try:
    import gi

    gi.require_version("Nautilus", "4.0")
    from gi.repository import Nautilus  # noqa: F401

    have = True
except (ImportError, ValueError):
    have = False
if os.environ.get("FM_REQUIRE_NAUTILUS") and not have:
    raise AssertionError("python3-nautilus is required here but not importable")
if have:
    check_real_bindings("Nautilus", "4.0", SRC, files)
