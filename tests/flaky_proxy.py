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
untouched, only logged (to see which requests a client made). MODE
"cutblob": the first answer to each blob GET with a Range header is cut
after half its body (the connection closed), as a link that drops. MODE
"corrupt": answers to blob GETs with a Range header have their fifth byte
from the end flipped (tests/tart_pull.sh: compressed bytes that differ but
still decode). Each request
and what was done with it is logged on stdout.

Upload modes (tests/registry_upload.sh, bench/push_link.sh); each logs
"METHOD PATH ACTION STATUS BODY_BYTES SECONDS [detail]", PATH with the
upload session's id so a test can follow a session, SECONDS the time from
the request's headers to its answer (or its cut):
MODE "mount202": a cross-repository mount (POST ?mount=) is declined the way
the spec allows: 202 with a fresh upload session (logged "mount-declined
UUID"). MODE "mount404": a mount is declined with 404. MODE "nochunk": PATCH
is refused with 405 UNSUPPORTED, as Google's registries take no chunked
upload. MODE "minchunk": like ECR, a PATCH is answered 201 (not 202), and
the closing PUT is refused with 400 if a part other than the session's last
(the PATCHes, then the PUT's body if any) carried fewer than 5 MiB. MODE
"cut": a throttled link: request bodies of all connections together arrive at BYTES_PER_SECOND (default 1 MiB/s), and a
request still sending after CUT_SECONDS (the fifth argument, default 60) is
cut: its connection closed without an answer, the bytes received passed on
to the registry (a PATCH's as a shorter PATCH), so the registry holds a
partial chunk as a real one would. With a sixth argument "once", the first
PATCH of more than 64 KiB is also cut after half its body whatever the time.
Upload sessions are kept on the proxy's side (the newest upstream Location
per session id), as registries other than distribution do, so a client may
ask the state of a session whose last answer it never got.

A wide-area link (bench/lazy.sh): MODE "wan": every request waits
LATENCY_MS (the fifth argument, default 20) before it is forwarded, as one
round trip would, and request and response bodies of all connections
together pass a link of BYTES_PER_SECOND (default 1 MiB/s; 25000000 is
200 Mbit/s), the response streamed as the registry sends it, so a client
sees its first bytes early. Nothing else is changed. Each request is logged,
once answered, as "METHOD PATH wan STATUS BYTES_SENT START END" (unix times),
so a caller can count the bytes a client had received by a moment (also
when the client dropped the connection before the end of the body).

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
CUT_SECONDS = float(sys.argv[5]) if len(sys.argv) > 5 else 60.0
CUT_ONCE = len(sys.argv) > 6 and sys.argv[6] == "once"
UPLOAD_MODES = ("mount202", "mount404", "nochunk", "minchunk", "cut")
ECR_MIN_PART = 5 << 20
LIMIT = int(sys.argv[4]) if len(sys.argv) > 4 else 500
WAN_LATENCY = float(sys.argv[5]) / 1000 if MODE == "wan" and len(sys.argv) > 5 else 0.02
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
sessions = {}  # upload id -> newest upstream Location (path?query)
patch_sizes = {}  # upload id -> sizes of its PATCH bodies (minchunk)
cut_done = [False]


class Link:
    """One token bucket for all connections: a link of RATE bytes/s."""

    def __init__(self, rate):
        self.rate, self.at, self.mu = rate, time.monotonic(), threading.Lock()

    def take(self, n):
        with self.mu:
            now = time.monotonic()
            self.at = max(self.at, now) + n / self.rate
            wait = self.at - now
        if wait > 0:
            time.sleep(wait)


link = Link(RATE)


def upload_id(path):
    p = path.split("?")[0]
    if "/blobs/uploads/" not in p:
        return None
    return p.rsplit("/blobs/uploads/", 1)[1] or None


got_paths = set()


def first_get(path):
    """True the first time path is asked for (cutblob)"""
    with lock:
        first = path not in got_paths
        got_paths.add(path)
    return first


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def fault(self):
        global count
        with lock:
            count += 1
            n = count
        if MODE in ("log", "cutblob", "corrupt"):
            return None
        if MODE == "down":
            return "503"
        if MODE in ("norange", "redirect", "slow", "range416") + UPLOAD_MODES:
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
        if MODE in UPLOAD_MODES:
            return self.handle_upload()
        if MODE == "wan":
            return self.handle_wan()
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
        if MODE not in ("ecr", "noname", "gitlab", "denied"):  # one string: whole lines
            # in log mode a ranged GET shows its range: how a client coalesces
            rng = self.headers.get("Range") if MODE == "log" else None
            print(f"{self.command} {self.path.split('?')[0]} {shown or 'forwarded'}" + (f" {rng}" if rng else ""),
                  flush=True)
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
        ranged_blob = self.command == "GET" and "/blobs/sha256:" in self.path and self.headers.get("Range")
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
        elif self.command != "HEAD" and ranged_blob and MODE == "cutblob" and first_get(self.path):
            self.wfile.write(data[:len(data) // 2])  # then the connection dies
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
        elif self.command != "HEAD" and ranged_blob and MODE == "corrupt" and len(data) > 16:
            # the last block's last literal byte: the LZ4 stream still decodes
            self.wfile.write(data[:-5] + bytes([data[-5] ^ 1]) + data[-4:])
        elif self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    # ---- a wide-area link ----

    def handle_wan(self):
        began = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        link.take(len(body))
        time.sleep(WAN_LATENCY)
        conn = http.client.HTTPConnection(UPSTREAM, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        headers["Host"] = f"127.0.0.1:{PORT}"
        conn.request(self.command, self.path, body=body if length else None, headers=headers)
        resp = conn.getresponse()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() in ("content-length", "connection", "transfer-encoding"):
                continue
            if k.lower() == "location":
                v = v.replace(f"//{UPSTREAM}/", f"//127.0.0.1:{PORT}/")
            self.send_header(k, v)
        size = resp.getheader("Content-Length")
        data = None
        if size is None:  # chunked upstream: whole, then sent at the link's pace
            data = resp.read()
            size = str(len(data))
        self.send_header("Content-Length", size)
        self.end_headers()
        sent = 0
        try:
            while self.command != "HEAD":
                piece = (data[sent:sent + (1 << 16)] if data is not None else resp.read(1 << 16))
                if not piece:
                    break
                link.take(len(piece))
                self.wfile.write(piece)
                sent += len(piece)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            # the client dropped the connection (it had the range it wanted
            # of a whole body): logged as usual, with the bytes it was sent
            self.close_connection = True
        conn.close()
        print(f"{self.command} {self.path.split('?')[0]} wan {resp.status} {sent} {began:.3f} {time.time():.3f}",
              flush=True)

    # ---- the upload modes ----

    def log_up(self, action, status, nbytes, detail=""):
        took = time.monotonic() - self.began
        # one string, one write: the lines of concurrent requests must not interleave
        line = f"{self.command} {self.path.split('?')[0]} {action} {status} {nbytes} {took:.2f} {detail}"
        print(line, flush=True)

    def read_body(self, length):
        """The body, through the link in cut mode: (bytes, cut?)"""
        if MODE != "cut":
            return (self.rfile.read(length) if length else b""), False
        start, got = time.monotonic(), []
        n, half = 0, -1
        with lock:
            if (CUT_ONCE and not cut_done[0] and self.command == "PATCH"
                    and length > 64 << 10):
                cut_done[0] = True
                half = length // 2
        while n < length:
            piece = self.rfile.read(min(1 << 14, length - n, half - n if half > n else 1 << 14))
            if not piece:
                break
            link.take(len(piece))
            got.append(piece)
            n += len(piece)
            if n == half or (n < length and time.monotonic() - start > CUT_SECONDS):
                return b"".join(got), True
        return b"".join(got), n < length

    def upstream(self, method, path, body=None, extra=None):
        uid = upload_id(path)
        with lock:
            newest = sessions.get(uid) if uid else None
        if newest:  # the newest state, with the client's other parameters (digest=)
            mine = [kv for kv in path.partition("?")[2].split("&") if kv and not kv.startswith("_state=")]
            path = newest + ("&" if "?" in newest else "?") * bool(mine) + "&".join(mine)
        conn = http.client.HTTPConnection(UPSTREAM, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection", "content-length")}
        headers.update(extra or {})
        headers["Host"] = f"127.0.0.1:{PORT}"
        if body is not None:
            headers["Content-Length"] = str(len(body))
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        loc = resp.getheader("Location")
        if loc:
            rel = "/" + loc.split("://", 1)[1].split("/", 1)[1] if "://" in loc else loc
            lid = upload_id(rel)
            if lid:
                with lock:
                    sessions[lid] = rel
        return resp, data

    def relay(self, resp, data, status=None):
        self.send_response(status or resp.status)
        for k, v in resp.getheaders():
            if k.lower() in ("content-length", "connection", "transfer-encoding"):
                continue
            if k.lower() == "location":
                v = v.replace(f"//{UPSTREAM}/", f"//127.0.0.1:{PORT}/")
            self.send_header(k, v)
        size = resp.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", size or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_upload(self):
        self.began = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body, cut = self.read_body(length)
        uid = upload_id(self.path)
        if MODE in ("mount202", "mount404") and self.command == "POST" and "mount=" in self.path:
            if MODE == "mount404":
                self.log_up("mount-declined", 404, 0)
                return self.answer(404, body=b'{"errors":[{"code":"BLOB_UNKNOWN","message":"not mounted"}]}')
            resp, data = self.upstream("POST", self.path.split("?")[0], b"")
            loc = resp.getheader("Location") or ""
            self.log_up("mount-declined", resp.status, 0, upload_id(loc.split("//")[-1]) or "")
            return self.relay(resp, data)
        if MODE == "nochunk" and self.command == "PATCH":
            self.log_up("refused", 405, len(body))
            return self.answer(405, body=b'{"errors":[{"code":"UNSUPPORTED","message":"chunked upload is not supported"}]}')
        if MODE == "minchunk" and self.command == "PUT" and uid:
            sizes = patch_sizes.pop(uid, []) + ([len(body)] if body else [])
            if any(n < ECR_MIN_PART for n in sizes[:-1]):
                self.log_up("refused", 400, len(body), "parts " + ",".join(map(str, sizes)))
                return self.answer(400, body=b'{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"Layer part size must be at least 5 MiB"}]}')
        if cut:
            if self.command == "PATCH" and body:
                rng = self.headers.get("Content-Range", "0-0")
                start = int(rng.split("-")[0])
                extra = {"Content-Range": f"{start}-{start + len(body) - 1}"}
                resp, _ = self.upstream("PATCH", self.path, body, extra)
                self.log_up("cut", resp.status, len(body), f"registry holds {rng.split('-')[0]}+{len(body)}")
            else:
                self.log_up("cut", 0, len(body))
            self.close_connection = True
            self.connection.shutdown(2)
            return
        resp, data = self.upstream(self.command, self.path, body if (length or self.command in ("PUT", "POST", "PATCH")) else None)
        if MODE == "minchunk" and self.command == "PATCH" and uid and resp.status == 202:
            patch_sizes.setdefault(uid, []).append(len(body))
            self.log_up("forwarded", 201, len(body), self.headers.get("Content-Range", ""))
            return self.relay(resp, data, 201)
        detail = self.headers.get("Content-Range", "") if self.command == "PATCH" else resp.getheader("Range") or ""
        self.log_up("forwarded", resp.status, len(body), detail)
        self.relay(resp, data)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_any


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Proxy).serve_forever()
