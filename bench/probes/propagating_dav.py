#!/usr/bin/env python3
"""A read-only WebDAV endpoint that answers PROPFIND as Nextcloud and ownCloud do: every
entry carries `oc:fileid` and `oc:permissions`, and a folder's ETag changes when anything
below it changes (ETag propagation). Neither server installs on this machine (see
../shared/servers.md: their extras can only be met through a small fake endpoint), so the
benchmark's root-ETag row (#18: an unchanged pass when the server can say "unchanged")
runs against this one. It is a fake, and only for that row:

- it serves a folder of the local disk under a URL prefix (PROPFIND with Depth 0, 1 and
  infinity, GET of whole files); every other method is refused with 403;
- it reads the tree once at start (sizes, mtimes, inode numbers as file ids) and computes
  each folder's ETag from its children's names and ETags, bottom up, as propagation leaves
  them; changes made to the folder afterwards are not seen (nothing here writes).

Usage: propagating_dav.py DIR PREFIX PORT [LOG]   (prints "ready FILES FOLDERS" once the tree is read;
each PROPFIND is appended to LOG as "DEPTH PATH", so a caller can see what a poll asked for)
"""

import email.utils
import hashlib
import http.server
import os
import socketserver
import sys
import urllib.parse

PERM_FILE, PERM_DIR = "RGDNVW", "RGDNVCK"


def read_tree(top):
    """{folder rel path: [(name, is_dir, size, mtime, etag, fileid)]} sorted by name, and
    the folders' own (mtime, etag, fileid); ETags of folders propagate from below."""
    children, own = {}, {}

    def walk(rel):
        path = os.path.join(top, rel)
        entries = []
        with os.scandir(path) as it:
            found = sorted(it, key=lambda e: e.name)
        for e in found:
            st = e.stat(follow_symlinks=False)
            crel = f"{rel}/{e.name}" if rel else e.name
            if e.is_dir(follow_symlinks=False):
                etag = walk(crel)
                entries.append((e.name, True, 0, st.st_mtime, etag, st.st_ino))
            elif e.is_file(follow_symlinks=False):
                etag = f'"{st.st_mtime_ns:x}{st.st_size:x}"'
                entries.append((e.name, False, st.st_size, st.st_mtime, etag, st.st_ino))
        h = hashlib.md5()
        for name, _, _, _, etag, _ in entries:
            h.update(name.encode() + b"\0" + etag.encode() + b"\0")
        etag = f'"{h.hexdigest()}"'
        st = os.stat(path)
        children[rel] = entries
        own[rel] = (st.st_mtime, etag, st.st_ino)
        return etag

    walk("")
    return children, own


def response_xml(href, is_dir, size, mtime, etag, fileid):
    kind = "<d:resourcetype><d:collection/></d:resourcetype>" if is_dir else (
        f"<d:resourcetype/><d:getcontentlength>{size}</d:getcontentlength>")
    return (f"<d:response><d:href>{href}</d:href><d:propstat><d:prop>{kind}"
            f"<d:getlastmodified>{email.utils.formatdate(mtime, usegmt=True)}</d:getlastmodified>"
            f"<d:getetag>{etag.replace('&', '&amp;').replace('<', '&lt;')}</d:getetag>"
            f"<oc:fileid>{fileid:08d}</oc:fileid>"
            f"<oc:permissions>{PERM_DIR if is_dir else PERM_FILE}</oc:permissions>"
            f"</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def rel(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if not path.startswith(PREFIX.rstrip("/")):
            return None
        rel = path[len(PREFIX.rstrip("/")):].strip("/")
        if any(p in ("..", ".") for p in rel.split("/")):
            return None
        return rel

    def href(self, rel, is_dir):
        return urllib.parse.quote(PREFIX.rstrip("/") + "/" + rel + ("/" if is_dir and rel else ""))

    def refuse(self, code):
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_PROPFIND(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        rel = self.rel()
        depth = self.headers.get("Depth", "infinity")
        if LOG:
            with open(LOG, "a") as f:
                f.write(f"{depth} /{rel}\n")
        if rel is None:
            return self.refuse(404)
        parent, _, name = rel.rpartition("/")
        if rel in CHILDREN:
            mtime, etag, fileid = OWN[rel]
            first = (self.href(rel, True), True, 0, mtime, etag, fileid)
        else:
            hit = [c for c in CHILDREN.get(parent, ()) if c[0] == name and not c[1]]
            if not hit:
                return self.refuse(404)
            _, _, size, mtime, etag, fileid = hit[0]
            first = (self.href(rel, False), False, size, mtime, etag, fileid)
            depth = "0"
        self.send_response(207)
        self.send_header("Content-Type", 'application/xml; charset="utf-8"')
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        out = []

        def put(s):
            out.append(s)
            if len(out) >= 512:
                flush()

        def flush():
            if out:
                data = "".join(out).encode()
                out.clear()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        put('<?xml version="1.0" encoding="utf-8"?>\n'
            '<d:multistatus xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">\n')
        put(response_xml(*first))

        def below(folder, deep):
            for cname, is_dir, size, mtime, etag, fileid in CHILDREN[folder]:
                crel = f"{folder}/{cname}" if folder else cname
                put(response_xml(self.href(crel, is_dir), is_dir, size, mtime, etag, fileid))
                if is_dir and deep:
                    below(crel, True)

        if depth != "0":
            below(rel, depth == "infinity")
        put("</d:multistatus>\n")
        flush()
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self):
        rel = self.rel()
        path = os.path.join(TOP, rel) if rel is not None else None
        if path is None or not os.path.isfile(path):
            return self.refuse(404)
        with open(path, "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def refuse_write(self):
        self.refuse(403)

    do_PUT = do_DELETE = do_MOVE = do_MKCOL = do_COPY = do_PROPPATCH = refuse_write


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    TOP, PREFIX, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    LOG = sys.argv[4] if len(sys.argv) > 4 else None
    CHILDREN, OWN = read_tree(TOP)
    srv = Server(("127.0.0.1", port), Handler)
    files = sum(not c[1] for v in CHILDREN.values() for c in v)
    print("ready", files, len(CHILDREN) - 1, flush=True)
    srv.serve_forever()
