"""A Hub that lies: an HTTP proxy in front of the emulator's Hub origin that passes every request
through, except those a test scripted, which it answers itself (a canned answer, or the real one
altered). Every request is recorded with the Host it was sent to and whether it carried a token.

    proxy = HostileProxy(emulator.hub_url)
    proxy.script("GET", "/api/models/o/n/tree/", lambda req: (200, {}, b"[...]"))
    ... mount with --endpoint proxy.url ...

The same server also answers as another origin, proxy.foreign_url (http://localhost:PORT instead
of http://127.0.0.1:PORT: host differs), so a scripted redirect can send the client elsewhere
and the record shows whether the token followed.
"""
import http.client
import http.server
import threading
import urllib.parse

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}


class Request:
    def __init__(self, method, path, query, headers, body):
        self.method, self.path, self.query, self.headers, self.body = method, path, query, headers, body

    @property
    def target(self):
        return self.path + ("?" + self.query if self.query else "")


class HostileProxy:
    def __init__(self, upstream):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.scripts = []          # (method, path prefix, respond)
        self.requests = []         # dicts: host, method, path, authorization (the value or None)
        self.hits = {}             # path prefix of a script -> requests it answered
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length > 0 else b""
                path, _, query = self.path.partition("?")
                request = Request(self.command, path, query, dict(self.headers.items()), body)
                with proxy.lock:
                    proxy.requests.append({"host": self.headers.get("Host"), "method": self.command,
                                           "path": path, "authorization": self.headers.get("Authorization")})
                status, headers, payload = proxy.answer(request)
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                declared = headers.get("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", declared or str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_HEAD = do_POST = handle_any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        self.foreign_url = f"http://localhost:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def script(self, method, path_prefix, respond):
        """respond(request) -> (status, headers dict, body bytes); newest scripts win."""
        self.scripts.insert(0, (method, path_prefix, respond))

    def answer(self, request):
        for method, prefix, respond in self.scripts:
            if method in (None, request.method) and request.path.startswith(prefix):
                with self.lock:
                    self.hits[prefix] = self.hits.get(prefix, 0) + 1
                return respond(request)
        return self.forward(request)

    def forward(self, request, target=None):
        """The upstream's answer to request (or to another target on the upstream)."""
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
            conn.request(request.method, target or request.target, body=request.body or None,
                         headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, dict(resp.getheaders()), body
        finally:
            conn.close()

    def fetch_url(self, url, headers=None):
        """GET of an absolute URL (e.g. the real CDN), without any token."""
        parts = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            conn.request("GET", parts.path + ("?" + parts.query if parts.query else ""),
                         headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
