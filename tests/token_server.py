#!/usr/bin/env python3
"""A tiny token server for the registry's bearer flow, for tests only.

Usage: token_server.py PORT KEY.pem CERT.pem USER PASSWORD [OPTION VALUE]...

GET /token?scope=repository:NAME:ACTIONS&service=S with Basic USER:PASSWORD
gets a JWT (RS256, signed with openssl, the certificate in x5c) granting the
asked actions; anything else gets 401. Options:

  --lifetime N       tokens work for N seconds (default 600): "expires_in" N,
                     and for N < 60 an "exp" N - 60 s ahead, because the
                     registry allows 60 s of clock skew, so that it refuses
                     the token N seconds after it was issued
  --refresh-token T  POST /token with a form body grant_type=refresh_token,
                     refresh_token=T (OAuth2, as docker sends an identity
                     token) gets a token as JSON "access_token"; another
                     refresh token gets 401. Without the option a POST gets 404
                     (a token server without OAuth2)
  --password-file F  passwords besides PASSWORD: F's lines "PASSWORD EPOCH"
                     (written by a test's credential helper), each accepted
                     for --password-life seconds after EPOCH (a rotated ECR
                     password), read again on every request
  --password-life S  (default 3600)
  --bind ADDR        listen there (default 127.0.0.1)
  --tls CERT.pem:KEY.pem  speak HTTPS with that certificate

Each request is logged on stdout as one line: the method, the path as
asked (URL-decoded), and for a POST the form's fields, with the refresh
token shown as refresh_token=valid or =invalid; then who asked (user=NAME)
and "issued" or "refused". Passwords and tokens are never logged.
"""
import base64
import http.server
import json
import subprocess
import sys
import time
import urllib.parse

PORT, KEY, CERT, USER, PASSWORD = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
OPTS = dict(zip(sys.argv[6::2], sys.argv[7::2]))
LIFETIME = int(OPTS.get("--lifetime", 600))
REFRESH = OPTS.get("--refresh-token")
PASSWORD_FILE = OPTS.get("--password-file")
PASSWORD_LIFE = float(OPTS.get("--password-life", 3600))
ISSUER, SERVICE = "strata-test-issuer", "strata-test"


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def cert_der_b64():
    der = subprocess.run(["openssl", "x509", "-in", CERT, "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return base64.b64encode(der).decode()


X5C = cert_der_b64()


def make_token(access, sub):
    now = int(time.time())
    exp = now + LIFETIME - 60 if LIFETIME < 60 else now + LIFETIME
    header = {"typ": "JWT", "alg": "RS256", "x5c": [X5C]}
    claims = {"iss": ISSUER, "sub": sub, "aud": SERVICE, "exp": exp, "nbf": now - 10,
              "iat": now, "jti": str(now) + str(time.monotonic_ns()), "access": access}
    signing_input = (b64url(json.dumps(header).encode()) + "." +
                     b64url(json.dumps(claims).encode())).encode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", KEY], input=signing_input,
                         check=True, capture_output=True).stdout
    return signing_input.decode() + "." + b64url(sig)


def access_for(scopes):
    access = []
    for scope in scopes:
        for one in scope.split(" "):  # OAuth2 joins scopes with spaces
            kind, name, actions = one.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
    return access


def password_ok(user, password):
    if user != USER:
        return False
    if password == PASSWORD:
        return True
    if not PASSWORD_FILE:
        return False
    try:
        lines = open(PASSWORD_FILE).read().split("\n")
    except OSError:
        return False
    now = time.time()
    for line in lines:
        parts = line.split(" ")
        if len(parts) == 2 and parts[0] == password and now - float(parts[1]) <= PASSWORD_LIFE:
            return True
    return False


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def answer(self, status, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        user, password = "-", None
        authz = self.headers.get("Authorization") or ""
        if authz.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(authz[6:]).decode().partition(":")
            except ValueError:
                pass
        ok = url.path == "/token" and password_ok(user, password)
        print("GET", urllib.parse.unquote(self.path), f"user={user}",
              "issued" if ok else "refused", flush=True)
        if not ok:
            return self.answer(401)
        q = urllib.parse.parse_qs(url.query)
        token = make_token(access_for(q.get("scope", [])), user)
        self.answer(200, {"token": token, "expires_in": LIFETIME})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode() if length else "")
        shown = []
        for k, vs in sorted(form.items()):
            for v in vs:
                if k == "refresh_token":
                    v = "valid" if v == REFRESH else "invalid"
                elif k == "password":
                    v = "(hidden)"
                shown.append(f"{k}={v}")
        ctype = self.headers.get("Content-Type") or "-"
        if not REFRESH:
            print("POST", urllib.parse.unquote(self.path), *shown, f"type={ctype}", "404",
                  flush=True)
            return self.answer(404)
        ok = (urllib.parse.urlparse(self.path).path == "/token" and
              form.get("grant_type") == ["refresh_token"] and
              form.get("refresh_token") == [REFRESH])
        print("POST", urllib.parse.unquote(self.path), *shown, f"type={ctype}",
              "issued" if ok else "refused", flush=True)
        if not ok:
            return self.answer(401, {"error": "invalid_grant"})
        token = make_token(access_for(form.get("scope", [])), "oauth")
        self.answer(200, {"access_token": token, "expires_in": LIFETIME, "scope": form["scope"][0]})


server = http.server.ThreadingHTTPServer((OPTS.get("--bind", "127.0.0.1"), int(PORT)), Handler)
if "--tls" in OPTS:
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*OPTS["--tls"].split(":"))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
