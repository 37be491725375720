#!/usr/bin/env python3
"""A misbehaving HTTP proxy in front of a registry, for tests only.

Usage: flaky_proxy.py PORT UPSTREAM_HOST:PORT MODE [BYTES_PER_SECOND]

MODE "flaky": requests 2, 9 and 17 get 503, request 4 gets 429 with
Retry-After: 1, and requests 6 and 13 have their connection closed without
an answer; the rest are forwarded. MODE "down": every request gets 503. MODE
"norange": the Range header is dropped, so the registry answers 200 with
the whole blob. MODE "redirect": blob GETs are redirected (307) to the
registry itself, as registries redirect to storage. MODE "range416": a
request with a Range header gets 416. MODE "slow": every
request waits 0.5 s, and bodies are sent at BYTES_PER_SECOND (default
1 MiB/s) per connection, so a test can act while a push or pull runs. MODE
"relredirect": blob GETs and HEADs are redirected (307) with a relative
Location, "/redirected" + the path, and requests under /redirected/ are
forwarded without that prefix. MODE "log": every request is forwarded
untouched, only logged (to see which requests a client made). Each request
and what was done with it is logged on stdout.

Registries' refusals (tests/registry_limits.sh); everything else is
forwarded, and a blob PUT's log line ends with its digest:
MODE "ecr": a manifest PUT listing more than LIMIT layers (the 4th argument,
default 500) gets ECR's 405 UNSUPPORTED "Limit on number of layers per
image exceeded". MODE "noname": every request below /v2/<repo>/ gets ECR's
404 NAME_UNKNOWN "The repository with name '<repo>' does not exist in the
registry with id '123456789012'" (as ECR does without create-on-push).
MODE "denied": opening an upload (POST /v2/<repo>/blobs/uploads/) gets 403
DENIED "requested access to the resource is denied", as for an account that
may pull but not push.
MODE "gitlab": a manifest PUT whose config, layers or artifactType use a
media type not on GitLab's kind of list (OCI and docker image types) gets
400 MANIFEST_INVALID "manifest invalid" with detail "unknown media type: X".
"""
import http.client
import http.server
import json
import re
import sys
import threading
import time

PORT, UPSTREAM, MODE = int(sys.argv[1]), sys.argv[2], sys.argv[3]
RATE = int(sys.argv[4]) if len(sys.argv) > 4 else 1 << 20
LIMIT = int(sys.argv[4]) if len(sys.argv) > 4 else 500
GITLAB_TYPES = {
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.config.v1+json",
    "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.oci.empty.v1+json",
    "application/vnd.docker.container.image.v1+json",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
}


def error(status, code, message, detail=None):
    e = {"code": code, "message": message}
    if detail is not None:
        e["detail"] = detail
    return status, json.dumps({"errors": [e]}).encode()


def refusal(method, path, body):
    """(status, body) of the registry MODE imitates, or None to forward"""
    m = re.match(r"/v2/(.+?)/(blobs|manifests|tags)/", path)
    if MODE == "noname" and m:
        return error(404, "NAME_UNKNOWN", f"The repository with name '{m.group(1)}' does not "
                     "exist in the registry with id '123456789012'")
    if MODE == "denied" and method == "POST" and "/blobs/uploads/" in path:
        return error(403, "DENIED", "requested access to the resource is denied")
    if method != "PUT" or not m or m.group(2) != "manifests":
        return None
    doc = json.loads(body or b"{}")
    if MODE == "ecr" and len(doc.get("layers", [])) > LIMIT:
        return error(405, "UNSUPPORTED", "Invalid parameter at 'ImageManifest' failed to satisfy "
                     "constraint: 'Limit on number of layers per image exceeded'")
    if MODE == "gitlab":
        used = [doc.get("config", {}).get("mediaType")] + [l.get("mediaType") for l in doc.get("layers", [])]
        used += [doc["artifactType"]] if "artifactType" in doc else []
        for t in used:
            if t not in GITLAB_TYPES:
                return error(400, "MANIFEST_INVALID", "manifest invalid", f"unknown media type: {t}")
    return None
count = 0
lock = threading.Lock()


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def fault(self):
        global count
        with lock:
            count += 1
            n = count
        if MODE == "log":
            return None
        if MODE == "down":
            return "503"
        if MODE in ("norange", "redirect", "slow", "range416"):
            return MODE
        if MODE == "relredirect":
            return "relredirect-target" if self.path.startswith("/redirected/") else MODE
        # a bounded number of faults, so a client that retries always gets through
        return {2: "503", 4: "429", 6: "drop", 9: "503", 13: "drop", 17: "503"}.get(n)

    def answer(self, status, headers=(), body=b""):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if MODE in ("ecr", "noname", "gitlab", "denied"):
            refused = refusal(self.command, self.path, body)
            digest = re.search(r"digest=(sha256:[0-9a-f]+)", self.path)
            line = " ".join([self.command, self.path.split("?")[0], str(refused[0]) if refused else "forwarded"] +
                            ([digest.group(1)] if digest and self.command == "PUT" else []))
            with lock:  # whole lines, whatever the threads
                print(line, flush=True)
            if refused:
                return self.answer(refused[0], [("Content-Type", "application/json")], refused[1])
            what = None
        else:
            what = self.fault()
        shown = what
        if what == "range416" and not self.headers.get("Range"):
            shown = "forwarded"
        if MODE not in ("ecr", "noname", "gitlab", "denied"):
            print(self.command, self.path.split("?")[0], shown or "forwarded", flush=True)
        if what == "503":
            return self.answer(503, body=b'{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}')
        if what == "429":
            return self.answer(429, [("Retry-After", "1")])
        if what == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if what == "range416" and self.headers.get("Range"):
            return self.answer(416)
        if what == "redirect" and self.command == "GET" and "/blobs/sha256:" in self.path:
            return self.answer(307, [("Location", f"http://{UPSTREAM}{self.path}")])
        if what == "relredirect" and self.command in ("GET", "HEAD") and "/blobs/sha256:" in self.path:
            return self.answer(307, [("Location", "/redirected" + self.path)])
        if what == "relredirect-target":
            self.path = self.path[len("/redirected"):]
        if what == "slow":
            time.sleep(0.5)
        conn = http.client.HTTPConnection(UPSTREAM, timeout=60)
        drop = ("host", "connection", "range") if what == "norange" else ("host", "connection")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in drop}
        headers["Host"] = f"127.0.0.1:{PORT}"
        conn.request(self.command, self.path, body=body if length else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        out = []
        for k, v in resp.getheaders():
            if k.lower() in ("content-length", "connection", "transfer-encoding"):
                continue
            if k.lower() == "location":
                v = v.replace(f"//{UPSTREAM}/", f"//127.0.0.1:{PORT}/")
            out.append((k, v))
        self.send_response(resp.status)
        for k, v in out:
            self.send_header(k, v)
        self.send_header("Content-Length", resp.getheader("Content-Length") or str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and what == "slow":
            for at in range(0, len(data), 1 << 16):
                self.wfile.write(data[at:at + (1 << 16)])
                self.wfile.flush()
                time.sleep((1 << 16) / RATE)
        elif self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_any


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Proxy).serve_forever()
