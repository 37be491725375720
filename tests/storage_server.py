#!/usr/bin/env python3
"""Object storage stand-in for tests only: what a registry's redirect
storage middleware points at (as S3, GCS or Azure behind Harbor or
distribution). Serves the files under ROOT read-only, GET and HEAD, with
"Range: bytes=A-B" / "bytes=A-" answered 206 and Content-Range.

Usage: storage_server.py PORT ROOT LOG [NORANGE_FILE]

Every request is appended to LOG as one line:
  METHOD PATH range=<Range header or -> auth=<yes|no> STATUS
auth says whether an Authorization header came (it never should: the
registry's credentials are not storage's). While NORANGE_FILE exists, Range
is ignored and the whole file is sent with 200, as some storage and caches
do.
"""
import http.server
import os
import re
import sys
import threading

PORT, ROOT, LOG = int(sys.argv[1]), os.path.realpath(sys.argv[2]), sys.argv[3]
NORANGE = sys.argv[4] if len(sys.argv) > 4 else None
lock = threading.Lock()


class Storage(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def log(self, status):
        rng = self.headers.get("Range") or "-"
        auth = "yes" if self.headers.get("Authorization") else "no"
        with lock, open(LOG, "a") as f:
            f.write(f"{self.command} {self.path.split('?')[0]} range={rng} auth={auth} {status}\n")

    def answer(self, status, headers, body=b""):
        self.log(status)
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        path = os.path.realpath(os.path.join(ROOT, self.path.split("?")[0].lstrip("/")))
        if not path.startswith(ROOT + os.sep) or not os.path.isfile(path):
            return self.answer(404, [("Content-Length", "0")])
        data = open(path, "rb").read()
        total = len(data)
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if m and not (NORANGE and os.path.exists(NORANGE)):
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else total - 1, total - 1)
            if start > end:
                return self.answer(416, [("Content-Range", f"bytes */{total}"),
                                         ("Content-Length", "0")])
            return self.answer(206, [("Content-Range", f"bytes {start}-{end}/{total}"),
                                     ("Content-Length", str(end - start + 1)),
                                     ("Content-Type", "application/octet-stream")],
                               data[start:end + 1])
        return self.answer(200, [("Content-Length", str(total)),
                                 ("Content-Type", "application/octet-stream")], data)

    do_HEAD = do_GET


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Storage).serve_forever()
