"""The file-manager extension against a real daemon (run by tests/filemanager.rs, as root):
its protocol calls, the emblem chosen per state, the menu offered in and out of sync roots,
menu actions that pin and free real files (bytes checked on disk), states pushed by the
daemon's event stream; then, where python3-nautilus is installed, the module loaded by the
real gi bindings, its extension class built and asked for menu items.

With `--gi FM VERSION SOURCE` (Nemo 3.0, Caja 2.0: the generated variants), only the last part
runs, in a process of its own: each file manager's typelib pins its own GTK version."""

import importlib.util
import os
import sys
import threading
import time

ROOT = os.environ["FM_ROOT"]
OUTSIDE = os.environ["FM_OUTSIDE"]
SRC = os.path.join(os.path.dirname(__file__), "..", "packaging", "filemanagers", "skyfill_nautilus.py")


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


def until(what, f, secs=60):
    end = time.time() + secs
    while time.time() < end:
        if f():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def check_real_bindings(fm, version, src, files):
    """Loads `src` through the real gi bindings of `fm`: the extension class is built, picks the
    emblem of an online-only file and offers the menu in a root and none outside."""
    if sys.modules.get("gi", 0) is None:
        del sys.modules["gi"]
    import gi

    gi.require_version(fm, version)
    real = load(f"skyfill_real_{fm.lower()}", block_gi=False, src=src)
    assert real.FM is not None and real.FM.__name__.endswith(fm), real.FM
    from gi.repository import Gio

    class File:
        def __init__(self, p):
            self.p = p
            self.emblems = []

        def get_location(self):
            return Gio.File.new_for_path(self.p)

        def add_emblem(self, e):
            self.emblems.append(e)

    x = real.SkyfillExtension()
    f = File(files[0])
    x.update_file_info(f)
    assert f.emblems == ["emblem-skyfill-cloud"], f.emblems
    # Nautilus 4.0 passes (files); Nemo, Caja and Nautilus 3.x pass (window, files).
    pick = (lambda fs: (fs,)) if version == "4.0" else (lambda fs: (None, fs))
    items = x.get_file_items(*pick([File(files[0]), File(files[1])]))
    labels = [i.get_property("label") for i in items]
    assert labels == ["Make available offline", "Free up space", "Always keep on this device"], labels
    assert x.get_file_items(*pick([File(OUTSIDE)])) == []
    print(f"loaded by gi ({fm} {version}): emblems and menu items ok")


def docs_files():
    docs = os.path.join(ROOT, "docs")
    return sorted(os.path.join(docs, n) for n in os.listdir(docs))


if len(sys.argv) == 5 and sys.argv[1] == "--gi":
    check_real_bindings(sys.argv[2], sys.argv[3], sys.argv[4], docs_files())
    sys.exit(0)

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

state = ext.State()
docs = os.path.join(ROOT, "docs")
files = docs_files()
st = state.status_of(files[0])
assert st["state"] == "online-only", st
assert ext.emblems_for(st) == ["emblem-skyfill-cloud"], ext.emblems_for(st)
assert state.status_of(OUTSIDE) is None
assert ext.menu_for([None]) == []
assert [a for a, _ in ext.menu_for([st])] == ["hydrate", "free", "pin"]
assert ext.emblems_for({"kind": "file", "state": "local", "sync": "pending"}) == [
    "emblem-skyfill-local", "emblem-synchronizing"]
assert ext.emblems_for({"kind": "file", "state": "pinned", "sync": "conflict"}) == [
    "emblem-skyfill-pinned", "emblem-skyfill-conflict"]
for f in files:
    assert allocated(f) <= 8192, f"{f} is online-only and must take no disk"

# The event stream: states arrive without asking.
pushed = []


def listen():
    for ev in ext.Client().events():
        p = state.apply(ev)
        if p:
            pushed.append(p)


threading.Thread(target=listen, daemon=True).start()
time.sleep(0.5)

# "Always keep on this device" on the folder: every file becomes local.
done, errors = ext.run_action("pin", [docs])
assert not errors, errors
for f in files:
    assert allocated(f) >= os.path.getsize(f), f"{f} not local after pin"
until("pinned states pushed", lambda: all(
    (state.status.get(f) or {}).get("state") == "pinned" for f in files))
assert ext.emblems_for(state.status[files[0]]) == ["emblem-skyfill-pinned"]
folder = state.status_of(docs)
assert folder["setting"] == "pinned", folder
assert [a for a, _ in ext.menu_for([folder])][-1] == "inherit"

# "Free up space": back to online-only, pushed too.
done, errors = ext.run_action("free", [docs])
assert not errors, errors
for f in files:
    assert allocated(f) <= 8192, f"{f} still takes disk after free"
until("online-only states pushed", lambda: all(
    (state.status.get(f) or {}).get("state") == "online-only" for f in files))
assert set(files) <= set(pushed)
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
