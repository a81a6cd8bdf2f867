#!/usr/bin/env python3
"""A hostile WebDAV + S3 server for the security tests (tests/security.rs).

Usage: hostile_server.py PORTFILE MODEFILE
Binds 127.0.0.1:0, writes the port to PORTFILE, and answers every request according to the
word in MODEFILE (re-read on each request), so a test can let add-root succeed first and turn
hostile afterwards:

  normal  WebDAV: a collection with one file `a.txt` (PROPFIND Depth 0/1/infinity, GET).
          S3 (GET ?list-type=2): one object `a.txt`, not truncated.
  drip    WebDAV PROPFIND: a valid multistatus that never ends, one small entry every 0.5 s
          (never idle long enough for a read timeout). S3 as normal.
  huge    WebDAV PROPFIND (Depth: infinity): 5,000,000 entries streamed as fast as the client
          reads them (Depth: 1 of any folder stays small: the tree is deep, not wide).
  wide    WebDAV: Depth: infinity refused (403); Depth: 1 of the root lists 100 folders, of
          each folder 1,000 files (100,100 entries in 101 listings).
  loop    S3 listing: always IsTruncated with the same NextContinuationToken.
Every request is appended to PORTFILE.log as "METHOD PATH".
"""
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

PORTFILE, MODEFILE = sys.argv[1], sys.argv[2]
DATA = b"hello from the hostile server\n"
MTIME = "Mon, 02 Nov 2026 10:00:00 GMT"


def mode():
    try:
        with open(MODEFILE) as f:
            return f.read().strip()
    except OSError:
        return "normal"


def dav_entry(href, is_dir, size=0):
    if is_dir:
        props = "<D:resourcetype><D:collection/></D:resourcetype>"
    else:
        props = (
            "<D:resourcetype/><D:getcontentlength>%d</D:getcontentlength>"
            '<D:getetag>"e-%s"</D:getetag>' % (size, abs(hash(href)))
        )
    return (
        "<D:response><D:href>%s</D:href><D:propstat><D:prop>%s"
        "<D:getlastmodified>%s</D:getlastmodified></D:prop>"
        "<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>" % (href, props, MTIME)
    ).encode()


HEAD = b'<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:">'
TAIL = b"</D:multistatus>"


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # bodies end when the connection closes

    def log_message(self, *a):
        pass

    def note(self):
        with open(PORTFILE + ".log", "a") as f:
            f.write("%s %s\n" % (self.command, self.path))

    def start(self, status, ctype, length=None, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()))
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()

    def do_PROPFIND(self):
        self.note()
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        path = urlparse(self.path).path
        depth = self.headers.get("Depth", "infinity")
        base = path if path.endswith("/") else path + "/"
        m = mode()
        if depth == "0":
            if path.rstrip("/").endswith("a.txt"):
                body = HEAD + dav_entry(path, False, len(DATA)) + TAIL
            else:
                body = HEAD + dav_entry(base, True) + TAIL
            self.start(207, "application/xml; charset=utf-8", len(body))
            self.wfile.write(body)
            return
        if m == "wide":
            if depth != "1":
                body = b"finite depth only"
                self.start(403, "text/plain", len(body))
                self.wfile.write(body)
                return
            if path.rstrip("/").endswith("/dav") or path.rstrip("/") == "":
                kids = [dav_entry(base + "d%03d/" % i, True) for i in range(100)]
            else:
                kids = [dav_entry(base + "f%04d.txt" % i, False, 1) for i in range(1000)]
            body = HEAD + dav_entry(base, True) + b"".join(kids) + TAIL
            self.start(207, "application/xml; charset=utf-8", len(body))
            self.wfile.write(body)
            return
        self.start(207, "application/xml; charset=utf-8")
        try:
            self.wfile.write(HEAD + dav_entry(base, True))
            if m == "drip":
                i = 0
                while True:
                    self.wfile.write(dav_entry(base + "drip%09d.txt" % i, False, 1))
                    self.wfile.flush()
                    i += 1
                    time.sleep(0.5)
            elif m == "huge" and depth != "1":
                chunk = []
                for i in range(5_000_000):
                    chunk.append(dav_entry(base + "f%09d.txt" % i, False, 1))
                    if len(chunk) == 2000:
                        self.wfile.write(b"".join(chunk))
                        chunk = []
                self.wfile.write(b"".join(chunk) + TAIL)
            else:
                self.wfile.write(dav_entry(base + "a.txt", False, len(DATA)) + TAIL)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        self.note()
        u = urlparse(self.path)
        q = parse_qs(u.query)
        if "list-type" in q:
            prefix = q.get("prefix", [""])[0]
            m = mode()
            token = "the-same-token-again"
            truncated = m == "loop" and q.get("max-keys", ["1000"])[0] != "1"
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>'
                '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                "<Name>bucket</Name><Prefix>%s</Prefix><KeyCount>1</KeyCount>"
                "<MaxKeys>1000</MaxKeys><IsTruncated>%s</IsTruncated>%s"
                "<Contents><Key>%sa.txt</Key><LastModified>2026-11-02T10:00:00.000Z</LastModified>"
                '<ETag>"e1"</ETag><Size>%d</Size><StorageClass>STANDARD</StorageClass></Contents>'
                "</ListBucketResult>"
                % (
                    prefix,
                    "true" if truncated else "false",
                    "<NextContinuationToken>%s</NextContinuationToken>" % token if truncated else "",
                    prefix,
                    len(DATA),
                )
            ).encode()
            self.start(200, "application/xml", len(body))
            self.wfile.write(body)
            return
        self.start(200, "application/octet-stream", len(DATA), [("ETag", '"e1"'), ("Last-Modified", MTIME)])
        self.wfile.write(DATA)

    def do_HEAD(self):
        self.note()
        self.start(200, "application/octet-stream", len(DATA), [("ETag", '"e1"')])


srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.daemon_threads = True
with open(PORTFILE + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
import os  # noqa: E402

os.rename(PORTFILE + ".tmp", PORTFILE)
srv.serve_forever()
