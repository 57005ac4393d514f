"""HTTPS as sites run it, for tests: a certificate authority made here with `openssl`, and nginx
terminating TLS + HTTP/2 in front of the Hub emulator, for the Hub and the CDN alike.

    ca = TestCA(work, "site CA")
    cert = ca.issue("server", ["DNS:localhost", "IP:127.0.0.1"])
    with TlsFront(work, ca_cert=cert, ...) as front:     # see TlsSite below
        ...

TlsSite puts it together: the emulator's Hub behind https://127.0.0.1:HUB_PORT, its CDN behind
https://localhost:CDN_PORT (another origin, as on the Hub; the emulator's 302s point there), and a
third server with a certificate for another name. nginx logs each request with the protocol it
came in on ($server_protocol) and, at level info, each TLS handshake a client broke off.
"""
import os
import re
import shutil
import subprocess

import hubemu
from nginx import NginxProcess, free_port, nginx_version  # noqa: F401 (free_port: for the tests)

OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = ${ENV::HUBFS_TEST_SAN}
"""


def _openssl(work, *args, san="DNS:unused"):
    env = dict(os.environ, HUBFS_TEST_SAN=san)
    result = subprocess.run(["openssl", *args], cwd=work, env=env, capture_output=True, text=True,
                            timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


class TestCA:
    """A CA of its own (EC P-256, valid two days): ca.pem is what a client is told to trust."""

    __test__ = False  # not a pytest class

    def __init__(self, work, name):
        self.work = work
        self.slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        self.config = os.path.join(work, "openssl.cnf")
        if not os.path.exists(self.config):
            with open(self.config, "w") as f:
                f.write(OPENSSL_CONFIG)
        self.key = os.path.join(work, self.slug + ".key")
        self.pem = os.path.join(work, self.slug + ".pem")
        _openssl(work, "req", "-x509", "-new", "-config", self.config, "-extensions", "ca_ext",
                 "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", self.key, "-out", self.pem, "-days", "2", "-subj", f"/CN=hubfs {name}")
        self._serial = 1

    def issue(self, name, subject_alt_names):
        """(certificate, key) paths of a server certificate for the names, signed by this CA."""
        base = os.path.join(self.work, f"{self.slug}-{name}")
        _openssl(self.work, "req", "-new", "-config", self.config, "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", base + ".key",
                 "-out", base + ".csr", "-subj", f"/CN={name}")
        self._serial += 1
        _openssl(self.work, "x509", "-req", "-in", base + ".csr", "-CA", self.pem, "-CAkey", self.key,
                 "-set_serial", str(self._serial), "-days", "2", "-extfile", self.config,
                 "-extensions", "server_ext", "-out", base + ".pem", san=",".join(subject_alt_names))
        return base + ".pem", base + ".key"

    def hashed_directory(self, file_name="ca.pem"):
        """A directory holding ca.pem as file_name, and under its subject hash as `openssl
        rehash` lays it out (what a CA path, /etc/ssl/certs among them, looks like)."""
        directory = os.path.join(self.work, f"{self.slug}-dir-{file_name}")
        if not os.path.isdir(directory):
            os.makedirs(directory)
            shutil.copy(self.pem, os.path.join(directory, file_name))
            _openssl(directory, "rehash", directory)
        return directory


def listen_directives(port):
    """`listen` with TLS and HTTP/2: nginx 1.25.1 moved http2 into a directive of its own."""
    if nginx_version() >= (1, 25, 1):
        return f"listen 127.0.0.1:{port} ssl;\n        http2 on;"
    return f"listen 127.0.0.1:{port} ssl http2;"


NGINX_CONFIG = """\
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log info;

events {{
    worker_connections 512;
}}

http {{
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    log_format tls '$server_port $server_protocol $ssl_protocol $status $request_method "$uri"';
    access_log {work}/access.log tls;

    ssl_protocols TLSv1.2 TLSv1.3;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    proxy_request_buffering off;

    upstream hub {{
        server 127.0.0.1:{emulator_hub_port};
        keepalive 16;
    }}
    upstream cdn {{
        server 127.0.0.1:{emulator_cdn_port};
        keepalive 16;
    }}
{servers}
}}
"""

NGINX_SERVER = """
    server {{
        {listen}
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://{upstream};
        }}
    }}
"""


class NginxLogs:
    """What nginx wrote: requests (port, protocol, status, method, path) and broken handshakes,
    all of them or those since a mark()."""

    def __init__(self, work):
        self.work = work

    def mark(self):
        """The current ends of both logs."""
        return tuple(os.path.getsize(os.path.join(self.work, name)) for name in ("access.log", "error.log"))

    def _lines(self, name, offset):
        with open(os.path.join(self.work, name), "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace").splitlines()

    def requests(self, since=(0, 0)):
        out = []
        for line in self._lines("access.log", since[0]):
            port, protocol, tls, status, method, path = line.split(" ", 5)
            out.append({"port": int(port), "protocol": protocol, "tls": tls, "status": int(status),
                        "method": method, "path": path.strip('"')})
        return out

    def broken_handshakes(self, port, since=(0, 0)):
        """TLS handshakes with the server on port that the client broke off (for a refused
        certificate, an alert; for CAs it could not load, a connection closed early)."""
        return [line for line in self._lines("error.log", since[1])
                if "while SSL handshaking" in line and line.endswith(f"server: 127.0.0.1:{port}")]


class TlsSite:
    """The emulator serving root, behind nginx with TLS + HTTP/2 and a certificate of ca:
    hub_url (https://127.0.0.1:P), cdn_url (https://localhost:Q, where the Hub's 302s point),
    wrong_name_url (the Hub again, with a certificate of ca for another host name)."""

    def __init__(self, work, root, ca, tokens=()):
        self.work = os.path.join(work, "nginx")
        os.makedirs(os.path.join(self.work, "tmp"), exist_ok=True)
        self.root, self.ca, self.tokens = root, ca, tokens
        self.emulator = self.nginx = None
        self.logs = NginxLogs(self.work)

    def start(self):
        if shutil.which("nginx") is None:
            raise RuntimeError("nginx is not installed: run scripts/install-deps.sh")
        self.hub_port, self.cdn_port, self.wrong_name_port = free_port(), free_port(), free_port()
        self.hub_url = f"https://127.0.0.1:{self.hub_port}"
        self.cdn_url = f"https://localhost:{self.cdn_port}"
        self.wrong_name_url = f"https://127.0.0.1:{self.wrong_name_port}"
        self.emulator = hubemu.Emulator(self.root, tokens=self.tokens, external_cdn=self.cdn_url).start()
        cert, key = self.ca.issue("site", ["DNS:localhost", "IP:127.0.0.1"])
        wrong_cert, wrong_key = self.ca.issue("elsewhere", ["DNS:elsewhere.invalid"])
        servers = "".join(NGINX_SERVER.format(listen=listen_directives(port), cert=c, key=k, upstream=u)
                          for port, c, k, u in ((self.hub_port, cert, key, "hub"),
                                                (self.cdn_port, cert, key, "cdn"),
                                                (self.wrong_name_port, wrong_cert, wrong_key, "hub")))
        conf = NGINX_CONFIG.format(work=self.work, servers=servers,
                                   emulator_hub_port=self.emulator.port,
                                   emulator_cdn_port=self.emulator.cdn_port)
        conf_path = os.path.join(self.work, "nginx.conf")
        with open(conf_path, "w") as f:
            f.write(conf)
        for name in ("access.log", "error.log"):
            open(os.path.join(self.work, name), "a").close()
        self.nginx = NginxProcess(["nginx", "-c", conf_path, "-p", self.work],
                                  pid_file=os.path.join(self.work, "nginx.pid"),
                                  stderr_path=os.path.join(self.work, "nginx.err"))
        try:
            self.nginx.start()
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self):
        if self.nginx is not None:
            self.nginx.stop()
            self.nginx = None
        if self.emulator is not None:
            self.emulator.close()
            self.emulator = None

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()
        return False
