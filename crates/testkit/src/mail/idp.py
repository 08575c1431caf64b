#!/usr/bin/env python3
"""Stand-in OAuth2 identity provider for deskmail tests (stdlib only).
usage: idp.py PORTFILE      binds 127.0.0.1:0, writes the port to PORTFILE, serves until killed.
  POST /token       grant_type=refresh_token&refresh_token=R[&client_id=..]
                    -> 200 {"access_token","expires_in","refresh_token"(rotated),"token_type":"Bearer","scope"}
                    -> 400 {"error":"invalid_grant"} for an unknown / already used refresh token
  POST /introspect  token=T (RFC 7662; what Dovecot's introspection_mode = post sends)
                    -> 200 {"active":true,"email":USER,"exp",..} only while T is a live access token
                    -> 200 {"active":false} otherwise
  test control (not part of any real IdP):
  POST /test/issue  user=U[&expires_in=S]  -> same JSON as /token, for a fresh grant
  POST /test/expire token=T                -> the access token T expires now
  POST /test/ttl    expires_in=S           -> lifetime of access tokens issued from now on
  GET  /test/stats                         -> {"introspect": n, "token": n}
"""
import json, secrets, sys, threading, time, urllib.parse
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

LOCK = threading.Lock()
ACCESS = {}          # access token -> [user, expires_at]
REFRESH = {}         # refresh token -> user (single use: rotated on every refresh)
STATE = {"ttl": 3600, "introspect": 0, "token": 0}
SCOPE = "https://mail.google.com/"


def issue(user, ttl):
    at, rt = "at-" + secrets.token_urlsafe(24), "rt-" + secrets.token_urlsafe(24)
    ACCESS[at] = [user, time.time() + ttl]
    REFRESH[rt] = user
    return {"access_token": at, "expires_in": ttl, "refresh_token": rt,
            "token_type": "Bearer", "scope": SCOPE}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"          # keep-alive: Dovecot's http client reuses the connection

    def log_message(self, fmt, *args):
        sys.stderr.write("%.3f %s\n" % (time.time(), fmt % args))

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def form(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n).decode() if n else ""
        return {k: v[0] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}

    def do_GET(self):
        if self.path == "/test/stats":
            return self.reply(200, {k: STATE[k] for k in ("introspect", "token")})
        self.reply(404, {"error": "not_found"})

    def do_POST(self):
        path, f = self.path.split("?")[0], self.form()
        with LOCK:
            if path == "/introspect":
                STATE["introspect"] += 1
                ent = ACCESS.get(f.get("token", ""))
                if ent and ent[1] > time.time():
                    return self.reply(200, {"active": True, "email": ent[0], "username": ent[0],
                                            "exp": int(ent[1]), "scope": SCOPE, "token_type": "Bearer"})
                return self.reply(200, {"active": False})
            if path == "/token":
                STATE["token"] += 1
                if f.get("grant_type") != "refresh_token":
                    return self.reply(400, {"error": "unsupported_grant_type"})
                user = REFRESH.pop(f.get("refresh_token", ""), None)
                if user is None:
                    return self.reply(400, {"error": "invalid_grant",
                                            "error_description": "Token has been expired or revoked."})
                return self.reply(200, issue(user, STATE["ttl"]))
            if path == "/test/issue":
                return self.reply(200, issue(f["user"], int(f.get("expires_in", STATE["ttl"]))))
            if path == "/test/expire":
                if f.get("token") in ACCESS:
                    ACCESS[f["token"]][1] = 0
                return self.reply(200, {})
            if path == "/test/ttl":
                STATE["ttl"] = int(f["expires_in"])
                return self.reply(200, {})
        self.reply(404, {"error": "not_found"})


if __name__ == "__main__":
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    with open(sys.argv[1] + ".tmp", "w") as fh:
        fh.write(str(srv.server_address[1]))
    import os
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])   # atomic: the port file appears only when bound
    srv.serve_forever()
