"""A forward proxy for tests that records everything a proxy can see.

    with ForwardProxy() as proxy:          # proxy.url = http://127.0.0.1:PORT
        ... HTTPS_PROXY=proxy.url ...
        proxy.heads()                      # [Head(method, target, headers)] in arrival order
        proxy.seen_bytes()                 # every byte that crossed it, both ways, tunnels included

https:// goes through CONNECT tunnels (the proxy relays TLS records it cannot read); http:// comes
as absolute-form requests, each forwarded on a connection of its own ("Connection: close" both
ways, so a client never reuses it for another origin). Threads are daemons, and stop() closes
every socket, so a test never leaves one behind.
"""
import socket
import threading
import urllib.parse

HEAD_MAX = 65536


class Head:
    def __init__(self, method, target, headers):
        self.method, self.target, self.headers = method, target, headers  # headers: [(name, value)]

    def header_names(self):
        return {name.lower() for name, _ in self.headers}

    def __repr__(self):
        return f"Head({self.method} {self.target})"


def parse_head(data):
    lines = data.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:] if ":" in line]
    return Head(method, target, headers)


def read_head(sock):
    """(head bytes without the blank line, the bytes read past it), or (None, b"") at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > HEAD_MAX:
            return None, b""
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def without_connection_headers(head_bytes):
    """The head's lines without Connection / Proxy-Connection / Keep-Alive, plus Connection: close."""
    lines = head_bytes.split(b"\r\n")
    kept = [line for line in lines[1:]
            if line.split(b":", 1)[0].strip().lower() not in (b"connection", b"proxy-connection", b"keep-alive")]
    return b"\r\n".join([lines[0], *kept, b"Connection: close"]) + b"\r\n\r\n"


class ForwardProxy:
    def __init__(self):
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._heads = []
        self._seen = bytearray()
        self._sockets = set()
        self._stopping = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    # -- what it saw ---------------------------------------------------------------------------
    def heads(self):
        with self._lock:
            return list(self._heads)

    def seen_bytes(self):
        with self._lock:
            return bytes(self._seen)

    def clear(self):
        with self._lock:
            self._heads.clear()
            self._seen.clear()

    def _record(self, data, head=None):
        with self._lock:
            self._seen += data
            if head is not None:
                self._heads.append(head)

    # -- life cycle ----------------------------------------------------------------------------
    def start(self):
        self._thread.start()
        return self

    def stop(self):
        with self._lock:
            self._stopping = True
            sockets = list(self._sockets)
        try:
            self._listener.shutdown(socket.SHUT_RDWR)   # wakes accept(); close() alone does not
        except OSError:
            pass
        self._listener.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def _track(self, sock):
        with self._lock:
            if self._stopping:
                sock.close()
                return False
            self._sockets.add(sock)
            return True

    def _untrack(self, *socks):
        for sock in socks:
            if sock is None:
                continue
            with self._lock:
                self._sockets.discard(sock)
            sock.close()

    # -- serving -------------------------------------------------------------------------------
    def _accept_loop(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._track(client):
                threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        upstream = None
        try:
            head_bytes, rest = read_head(client)
            if head_bytes is None:
                return
            head = parse_head(head_bytes)
            self._record(head_bytes + b"\r\n\r\n" + rest, head)
            if head.method == "CONNECT":
                upstream = self._connect(head.target)
                if upstream is None:
                    client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                    return
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    upstream.sendall(rest)
            else:
                upstream = self._forward_plain(client, head, head_bytes, rest)
                if upstream is None:
                    return
            self._relay(client, upstream)
        except OSError:
            pass
        finally:
            self._untrack(client, upstream)

    def _connect(self, host_port):
        host, _, port = host_port.rpartition(":")
        try:
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except (OSError, ValueError):
            return None
        sock.settimeout(None)
        return sock if self._track(sock) else None

    def _forward_plain(self, client, head, head_bytes, rest):
        """Sends an absolute-form request on to its origin, in origin form; returns the socket."""
        url = urllib.parse.urlsplit(head.target)
        if url.scheme != "http" or not url.hostname:
            client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return None
        upstream = self._connect(f"{url.hostname}:{url.port or 80}")
        if upstream is None:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return None
        origin_form = (url.path or "/") + ("?" + url.query if url.query else "")
        first_line, _, others = head_bytes.partition(b"\r\n")
        version = first_line.rsplit(b" ", 1)[1]
        request = f"{head.method} {origin_form} ".encode("latin-1") + version + b"\r\n" + others
        upstream.sendall(without_connection_headers(request) + rest)
        answer_head, answer_rest = read_head(upstream)
        if answer_head is None:
            return upstream
        answer = without_connection_headers(answer_head) + answer_rest
        self._record(answer)
        client.sendall(answer)
        return upstream

    def _relay(self, client, upstream):
        """Copies both ways until either side closes."""
        def pump(source, sink):
            try:
                while True:
                    data = source.recv(65536)
                    if not data:
                        break
                    self._record(data)
                    sink.sendall(data)
            except OSError:
                pass
            for sock in (sink, source):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        back.start()
        pump(client, upstream)
        back.join(30)
