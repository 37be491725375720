#!/usr/bin/env python3
"""A small HTTP server for download tests (tests/vzsim.sh): serves the files
of --root, honouring "Range: bytes=N-" with 206 and Content-Range, and can
misbehave on purpose:

  --drop-after N --drops K   the first K responses send N body bytes, then
                             close the connection (an interrupted transfer)
  --no-range                 ignore Range: always 200 with the whole file
  --wrong-total              a 206 announces a total one byte too large

Every request is logged to --log as "GET /path range=<header or ->".
The port it listens on (127.0.0.1, chosen by the system) goes to --port-file.
"""
import argparse
import http.server
import os
import re
import socketserver
import threading

A = None
LOCK = threading.Lock()
DROPS = [0]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        rng = self.headers.get("Range")
        with open(A.log, "a") as log:
            log.write("GET %s range=%s\n" % (self.path, rng or "-"))
        path = os.path.join(A.root, os.path.basename(self.path.split("?")[0]))
        if not os.path.isfile(path):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = open(path, "rb").read()
        total, start = len(data), 0
        m = re.match(r"bytes=(\d+)-$", rng or "")
        if m and not A.no_range:
            start = int(m.group(1))
            if start >= total:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % total)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            shown = total + 1 if A.wrong_total else total
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, total - 1, shown))
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with LOCK:
            drop = DROPS[0] < A.drops
            DROPS[0] += 1 if drop else 0
        if drop:
            self.wfile.write(body[:A.drop_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global A
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--drop-after", type=int, default=0)
    p.add_argument("--drops", type=int, default=0)
    p.add_argument("--no-range", action="store_true")
    p.add_argument("--wrong-total", action="store_true")
    A = p.parse_args()
    srv = Server(("127.0.0.1", 0), Handler)
    tmp = A.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, A.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
