"""Skyfill for Nautilus (nautilus-python; API 4.0, and the 3.0 API of older Nautilus).

Emblems show each file's state (online-only, partly here, on this device, always on this
device, waiting to sync, conflict, error); the right-click menu offers, inside sync folders
only: Make available offline, Free up space, Always keep on this device / back to default, for
one or many files and folders. The extension speaks the daemon's socket protocol (doc/IPC.md)
itself: states come from the daemon (a folder listing, then the pushed event stream), so files
are never re-queried one by one and never opened, which would download them.

The same source serves Nemo and Caja: `packaging/filemanagers/generate` writes their variants.
"""

import json
import os
import socket
import threading

PROTOCOL_VERSION = 1
FILE_MANAGER = "Nautilus"

EMBLEMS = {
    "online-only": "emblem-skyfill-cloud",
    "partial": "emblem-skyfill-partial",
    "local": "emblem-skyfill-local",
    "pinned": "emblem-skyfill-pinned",
}
SYNC_EMBLEMS = {
    "pending": "emblem-synchronizing",
    "uploading": "emblem-synchronizing",
    "conflict": "emblem-skyfill-conflict",
    "error": "emblem-important",
}


def socket_path():
    return os.environ.get("SKYFILL_SOCKET", "/run/skyfill/skyfill.sock")


class DaemonError(Exception):
    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Client:
    """One connection to skyfilld: handshake, then one request at a time (or events)."""

    def __init__(self, path=None, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path or socket_path())
        self.reader = self.sock.makefile("rb")
        self.next = 1
        self.hello = self.call("hello", version=PROTOCOL_VERSION, client=f"skyfill-{FILE_MANAGER.lower()}")
        if self.hello.get("version") != PROTOCOL_VERSION:
            raise DaemonError("version", f"daemon speaks protocol {self.hello.get('version')}")

    def close(self):
        try:
            self.reader.close()
            self.sock.close()
        except OSError:
            pass

    def _line(self):
        line = self.reader.readline()
        if not line:
            raise ConnectionError("the daemon closed the connection")
        return json.loads(line)

    def call(self, op, **args):
        rid = self.next
        self.next += 1
        self.sock.sendall((json.dumps({"id": rid, "op": op, **args}) + "\n").encode())
        while True:
            msg = self._line()
            if msg.get("id") != rid:
                continue  # job progress lines and events of earlier requests
            if "event" in msg and "ok" not in msg:
                continue
            if msg.get("ok"):
                return msg.get("result")
            err = msg.get("error") or {}
            raise DaemonError(err.get("code", "internal"), err.get("message", "failed"))

    def events(self):
        """Subscribes, then yields every event dict the daemon pushes."""
        self.call("subscribe")
        self.sock.settimeout(None)
        while True:
            msg = self._line()
            if "event" in msg:
                yield msg


def emblems_for(status):
    """The emblems a file or folder gets for its `status` (a PathStatus dict)."""
    if not status:
        return []
    out = []
    if status.get("kind") == "file":
        e = EMBLEMS.get(status.get("state"))
        if e:
            out.append(e)
    elif status.get("setting") == "pinned":
        out.append(EMBLEMS["pinned"])
    s = SYNC_EMBLEMS.get(status.get("sync"))
    if s:
        out.append(s)
    return out


def menu_for(statuses):
    """(action id, label) pairs for a selection (a list of statuses; None = not in a root)."""
    if not statuses or any(s is None for s in statuses):
        return []
    items = [("hydrate", "Make available offline"), ("free", "Free up space")]
    if all(s.get("setting") == "pinned" for s in statuses):
        items.append(("inherit", "Don't always keep on this device"))
    else:
        items.append(("pin", "Always keep on this device"))
    return items


REQUESTS = {
    "hydrate": lambda p: ("hydrate", {"path": p, "recursive": True}),
    "free": lambda p: ("free", {"path": p, "recursive": True}),
    "pin": lambda p: ("pin", {"path": p, "setting": "pinned", "recursive": True}),
    "inherit": lambda p: ("pin", {"path": p, "setting": "inherit", "recursive": True}),
}


def run_action(action, paths, client_factory=Client):
    """Carries out a menu action on every path; returns (done, errors)."""
    c = client_factory()
    done, errors = [], []
    try:
        for p in paths:
            op, args = REQUESTS[action](p)
            try:
                done.append(c.call(op, **args))
            except DaemonError as e:
                errors.append((p, e.message))
    finally:
        c.close()
    return done, errors


# Entries per `list_page` request (the daemon's most).
PAGE = 1000


class State:
    """What the file manager shows: roots and statuses, from folder listings and events."""

    def __init__(self, client_factory=Client):
        self.factory = client_factory
        self.lock = threading.Lock()
        self.roots = None
        self.status = {}  # path -> PathStatus
        self.listed = set()  # folders listed to their end
        self.reached = {}  # folder -> how many of its entries were fetched so far
        self.paged = True  # the daemon answers list_page (older ones: whole listings)

    def _client(self):
        return self.factory()

    def load_roots(self):
        c = self._client()
        try:
            roots = [r["local"] for r in c.call("roots")]
        finally:
            c.close()
        with self.lock:
            self.roots = roots
        return roots

    def root_of(self, path):
        roots = self.roots if self.roots is not None else self.load_roots()
        for r in roots:
            if path == r or path.startswith(r.rstrip("/") + "/"):
                return r
        return None

    def status_of(self, path):
        """The status of `path` (None outside roots); lists its folder once."""
        if not path or self.root_of(path) is None:
            return None
        with self.lock:
            if path in self.status:
                return self.status[path]
        parent = os.path.dirname(path)
        if self.root_of(parent) is not None and parent not in self.listed:
            found = self._list_until(parent, path)
            if found is not None:
                return found
        c = self._client()
        try:
            st = c.call("status", path=path)
        except DaemonError:
            st = None
        finally:
            c.close()
        with self.lock:
            self.status[path] = st
        return st

    def _list_until(self, parent, path):
        """Fetches `parent`'s entries a page at a time (the file manager asks in the order it
        shows, so the first rows need the first page only) until `path` is among them or the
        folder is done; returns its status, or None."""
        c = self._client()
        try:
            while True:
                with self.lock:
                    if path in self.status:
                        return self.status[path]
                    if parent in self.listed:
                        return None
                    offset = self.reached.get(parent, 0)
                if self.paged:
                    try:
                        page = c.call("list_page", path=parent, offset=offset, limit=PAGE)
                    except DaemonError as e:
                        if e.code != "bad_request":
                            raise
                        self.paged = False
                        continue
                    except OSError:  # an older daemon closes on a request it does not know
                        self.paged = False
                        c.close()
                        c = self._client()
                        continue
                    entries, done = page["entries"], offset + len(page["entries"]) >= page["total"]
                else:
                    entries, done = c.call("list", path=parent), True
                with self.lock:
                    for e in entries:
                        self.status[e["path"]] = e
                    self.reached[parent] = offset + len(entries)
                    if done or not entries:
                        self.listed.add(parent)
        finally:
            c.close()

    def apply(self, event):
        """Folds a pushed event in; returns the path whose emblems changed, or None."""
        kind = event.get("event")
        if kind == "state":
            p = event["path"]
            with self.lock:
                old = self.status.get(p) or {"path": p, "kind": "file", "setting": "inherit"}
                self.status[p] = {**old, "state": event["state"], "sync": event["sync"],
                                  "size": event["size"], "local_bytes": event["local_bytes"]}
            return p
        # A root's own state (a pass starting or ending) changes no file's emblem.
        if kind == "lagged" or (kind == "root" and event.get("change") != "state"):
            with self.lock:
                self.roots = None
                self.status.clear()
                self.listed.clear()
                self.reached.clear()
        return None


STATE = State()

# ---------------------------------------------------------------- the file manager side

try:
    import gi

    for _v in ("4.0", "3.0", "2.0"):  # Nautilus 43+, Nautilus 3.x and Nemo, Caja
        try:
            gi.require_version(FILE_MANAGER, _v)
            break
        except ValueError:
            continue
    from gi.repository import GLib, GObject

    FM = getattr(__import__("gi.repository", fromlist=[FILE_MANAGER]), FILE_MANAGER)
except (ImportError, ValueError, AttributeError):  # not inside a file manager
    FM = None


def _path_of(info):
    loc = info.get_location()
    return loc.get_path() if loc is not None else None


if FM is not None:

    class SkyfillExtension(GObject.GObject, FM.InfoProvider, FM.MenuProvider):
        def __init__(self):
            super().__init__()
            self.files = {}  # path -> the file manager's file object (to refresh)
            threading.Thread(target=self._listen, daemon=True).start()

        def _listen(self):
            import time

            while True:
                try:
                    c = Client()
                    for ev in c.events():
                        p = STATE.apply(ev)
                        f = self.files.get(p) if p else None
                        if f is not None:
                            GLib.idle_add(f.invalidate_extension_info)
                except (OSError, ConnectionError, DaemonError, ValueError):
                    pass
                time.sleep(3)

        def update_file_info(self, info):
            path = _path_of(info)
            try:
                st = STATE.status_of(path)
            except (OSError, ConnectionError, DaemonError, ValueError):
                return
            if st is None:
                return
            self.files[path] = info
            for e in emblems_for(st):
                info.add_emblem(e)

        def get_file_items(self, *args):
            # API 4.0: (files); 3.0: (window, files).
            files = args[-1]
            paths = [_path_of(f) for f in files]
            try:
                statuses = [STATE.status_of(p) for p in paths]
            except (OSError, ConnectionError, DaemonError, ValueError):
                return []
            items = []
            for action, label in menu_for(statuses):
                item = FM.MenuItem(name=f"Skyfill::{action}", label=label, tip=label)
                item.connect("activate", self._activate, action, paths)
                items.append(item)
            return items

        def get_background_items(self, *args):
            return []

        def _activate(self, _item, action, paths):
            threading.Thread(target=run_action, args=(action, paths), daemon=True).start()
