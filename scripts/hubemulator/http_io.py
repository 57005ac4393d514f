"""What both origins share: the Answer a route returns, JSON errors, Range handling, and the
request flow with latency, injected faults, paced bodies and cut connections."""
import json
import os
import socket
import struct
import time
from http.server import BaseHTTPRequestHandler


def header_safe(value):
    """A header value that cannot split the response (CR/LF) or fail to encode (latin-1)."""
    text = str(value).replace("\r", " ").replace("\n", " ")
    return text.encode("latin-1", "replace").decode("latin-1")


class Answer:
    """What a route wants to send: status, headers, and a body (bytes or a file range)."""

    def __init__(self, status, headers=None, body=b"", file=None, is_data=False):
        self.status = status
        self.headers = headers or {}
        self.body = body
        self.file = file  # (path, start, length)
        self.is_data = is_data

    @property
    def length(self):
        return self.file[2] if self.file else len(self.body)


def json_answer(status, obj, headers=None):
    body = json.dumps(obj).encode()
    h = {"Content-Type": "application/json; charset=utf-8"}
    h.update(headers or {})
    return Answer(status, h, body)


def error_answer(status, code, message):
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return json_answer(status, {"error": message}, headers)


def parse_range(header, size):
    """('full'|'partial'|'unsatisfiable', start, length); multi-range and junk are ignored (S3-like)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return "full", 0, size
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "unsatisfiable", 0, 0
            start = max(0, size - n)
            return "partial", start, size - start
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return "full", 0, size
    if start >= size:
        return "unsatisfiable", 0, 0
    if start < 0 or end < start:
        return "full", 0, size
    end = min(end, size - 1)
    return "partial", start, end - start + 1


def file_answer(state, path, size, range_header, method, headers, origin):
    """200/206/416 for a file on disk, honouring (or, by knob, ignoring) Range."""
    headers = dict(headers)
    headers["Accept-Ranges"] = "bytes"
    kind, start, length = parse_range(range_header, size)
    if range_header and state.knob("ignore_range"):
        kind, start, length = "full", 0, size
    if kind == "unsatisfiable":
        headers["Content-Range"] = f"bytes */{size}"
        body = b"" if origin == "cdn" else json.dumps({"error": "Requested range not satisfiable"}).encode()
        return Answer(416, headers, body)
    status = 206 if kind == "partial" else 200
    if kind == "partial":
        headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    headers.setdefault("Content-Type", "application/octet-stream")
    return Answer(status, headers, file=(path, start, length), is_data=True)


class BaseHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle's algorithm a small body waited for
    # the client's delayed ACK, 40 ms per response, which no CDN adds.
    disable_nagle_algorithm = True
    server_version = "hub-emulator"
    sys_version = ""
    origin = "hub"

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):  # the request log replaces stderr chatter
        pass

    @property
    def state(self):
        return self.server.state

    def scope_of(self, path):
        return "cdn"

    def do_GET(self):
        self.handle_request("GET")

    def do_HEAD(self):
        self.handle_request("HEAD")

    def do_POST(self):
        self.handle_request("POST")

    def do_PUT(self):
        self.handle_request("PUT")

    def do_DELETE(self):
        self.handle_request("DELETE")

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def handle_request(self, method):
        self.state.begin_request()
        try:
            self.handle_counted_request(method)
        finally:
            self.state.end_request()

    def handle_counted_request(self, method):
        started = time.time()
        raw_path, _, query = self.path.partition("?")
        try:
            request_body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        scope = self.scope_of(raw_path)
        entry = {"time": started, "origin": self.origin, "method": method, "path": raw_path,
                 "query": query, "range": self.headers.get("Range"), "status": None,
                 "bytes_sent": 0, "authorization": "Authorization" in self.headers,
                 "user_agent": self.headers.get("User-Agent"), "scope": scope, "fault": None,
                 "duration_ms": None}
        body_fault = None
        if scope == "admin":
            entry = None  # admin calls are never logged
            answer = self.route(method, raw_path, query, request_body)
        else:
            answer, body_fault, entry["fault"] = self.injected_fault(method, raw_path, scope)
            if answer is None and entry["fault"] != "drop":
                try:
                    answer = self.route(method, raw_path, query, request_body)
                except Exception as e:  # a bug here must show up as a 500, not a hung client
                    answer = error_answer(500, None, f"emulator error: {type(e).__name__}: {e}")
        if entry is not None and entry["fault"] == "drop":
            entry["status"] = 0
            self.state.record(entry)
            self.abort_connection()
        else:
            latency = self.state.knob("latency_ms")
            if latency and entry is not None:
                time.sleep(latency / 1000.0)
            self.send_answer(method, answer, body_fault, entry)
        if entry is not None:
            self.state.finish(entry, round((time.time() - started) * 1000, 3))

    def injected_fault(self, method, path, scope):
        """(answer or None, body fault or None, fault name) for this request."""
        state = self.state
        rule = state.take_fault_rule(self.origin, scope, method, path)
        if rule:
            action = rule.get("action")
            if action == "drop":
                return None, None, "drop"
            if action in ("reset", "truncate", "stall", "ignore_range", "trickle"):
                return None, rule, action
            status = int(rule.get("status", 500))
            headers = {}
            retry_after = rule.get("retry_after")
            if retry_after is not None:
                headers["Retry-After"] = str(retry_after)
            if rule.get("ratelimit"):
                t = int(retry_after if retry_after is not None else 1)
                kind = "api" if scope == "api" else "resolvers"
                headers["RateLimit"] = f'"{kind}";r=0;t={t}'
                headers["RateLimit-Policy"] = f'"fixed window";"{kind}";q=500;w=300'
            answer = json_answer(status, {"error": rule.get("message", f"injected {status}")}, headers)
            return answer, None, f"status {status}"
        wait = state.rate_limited(scope)
        if wait is not None:
            kind = "api" if scope == "api" else "resolvers"
            headers = {"Retry-After": str(wait), "RateLimit": f'"{kind}";r=0;t={wait}',
                       "RateLimit-Policy": f'"fixed window";"{kind}";q=500;w=300'}
            msg = "You have exceeded our hourly quotas for action: %s." % kind
            return json_answer(429, {"error": msg}, headers), None, "rate_limit"
        status = state.random_error_status(scope)
        if status:
            return json_answer(status, {"error": f"injected {status}"}), None, f"random {status}"
        return None, None, None

    def abort_connection(self):
        """Closes with a TCP reset, so the client sees a network error, not a clean end."""
        self.close_connection = True
        try:
            linger_zero = struct.pack("ii", 1, 0)  # l_onoff=1, l_linger=0: close sends RST
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_zero)
            self.connection.close()
        except OSError:
            pass

    def send_answer(self, method, answer, body_fault, entry):
        """Sends the answer. The log entry goes in before the first byte leaves, with the bytes
        the body is meant to carry, so a client that has its answer always finds it logged."""
        if body_fault and body_fault.get("action") == "ignore_range" and answer.file and answer.status == 206:
            path, _, _ = answer.file
            size = os.path.getsize(path)
            answer.status, answer.file = 200, (path, 0, size)
            answer.headers.pop("Content-Range", None)
        has_body = method != "HEAD" and answer.length > 0
        cut_at, cut_kind, stall_at, stall_ms = self.body_faults(answer, body_fault) if has_body else (
            None, None, None, 0)
        planned = 0 if not has_body else (answer.length if cut_at is None else cut_at)
        if entry is not None:
            entry["status"], entry["bytes_sent"] = answer.status, planned
            self.state.record(entry)
        self.send_response(answer.status)
        for k, v in answer.headers.items():
            self.send_header(k, header_safe(v))
        self.send_header("Content-Length", str(answer.length))
        self.end_headers()
        if not has_body:
            return
        rate = body_fault.get("bps", 1) if body_fault and body_fault.get("action") == "trickle" else None
        try:
            sent = self.write_body(answer, cut_at, cut_kind, stall_at, stall_ms, rate)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
            sent = 0
        if entry is not None and sent != planned:
            self.state.correct_bytes_sent(entry, sent)

    def body_faults(self, answer, rule):
        """Where to cut (reset/truncate) and stall this body, from a rule or the random knobs."""
        state, n = self.state, answer.length
        cut_at = cut_kind = stall_at = None
        stall_ms = 0
        if rule:
            after = rule.get("after_bytes")
            at = min(n - 1, int(after)) if after is not None else n // 2
            if rule["action"] == "trickle":
                return None, None, None, 0
            if rule["action"] in ("reset", "truncate"):
                cut_at, cut_kind = max(0, at), rule["action"]
            elif rule["action"] == "stall":
                stall_at, stall_ms = at, int(rule.get("stall_ms", state.knob("stall_ms") or 1000))
            return cut_at, cut_kind, stall_at, stall_ms
        if not answer.is_data:
            return None, None, None, 0
        if state.chance(state.knob("reset_rate")):
            after = state.knob("reset_after_bytes")
            cut_at, cut_kind = (min(n - 1, int(after)) if after is not None else n // 2), "reset"
        elif state.chance(1.0 if state.knob("truncate") is True else state.knob("truncate")):
            cut_at, cut_kind = n // 2, "truncate"
        if state.knob("stall_ms"):
            stall_at, stall_ms = n // 2, int(state.knob("stall_ms"))
        return cut_at, cut_kind, stall_at, stall_ms

    def write_body(self, answer, cut_at, cut_kind, stall_at, stall_ms, rate=None):
        """rate (bytes/s) paces this body alone (a trickle rule); else the bandwidth knob."""
        bandwidth = rate if rate is not None else self.state.knob("bandwidth_bps")
        limit = answer.length if cut_at is None else cut_at
        source = open(answer.file[0], "rb") if answer.file else None
        sent = 0
        try:
            if source and not bandwidth and stall_at is None:
                sent = self.connection.sendfile(source, answer.file[1], limit) if limit else 0
            else:
                if source:
                    source.seek(answer.file[1])
                body = memoryview(answer.body)
                floor = 1 if rate is not None else 1024   # a trickle sends byte by byte
                chunk_size = max(floor, min(1 << 20, int(bandwidth) // 20)) if bandwidth else 1 << 20
                began = time.time()
                while sent < limit:
                    if stall_at is not None and sent >= stall_at:
                        time.sleep(stall_ms / 1000.0)
                        stall_at = None
                    step = min(chunk_size, limit - sent)
                    if stall_at is not None:
                        step = min(step, stall_at - sent)
                    data = source.read(step) if source else body[sent:sent + step]
                    if not data:
                        break
                    if bandwidth:  # hold each chunk until the rate allows all of it to arrive
                        ahead = (sent + len(data)) / float(bandwidth) - (time.time() - began)
                        if ahead > 0:
                            time.sleep(ahead)
                    self.wfile.write(data)
                    sent += len(data)
        finally:
            if source:
                source.close()
        if cut_kind == "reset":
            self.abort_connection()
        elif cut_kind == "truncate":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        return sent
