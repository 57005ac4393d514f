#!/usr/bin/env python3
"""A local Hugging Face Hub for tests and benchmarks: the Hub's HTTP API, resolve and a signed-URL
CDN on another origin, with knobs for latency, bandwidth and faults. Standard library only.

    hub_emulator.py import ROOT ORG/NAME SRC_DIR [--type model|dataset] [--branch main]
                           [--tag T] [--private] [--gated]
    hub_emulator.py serve ROOT [--port 0] [--cdn-port 0] [--ready-file F] [--log F]
                          [--page-size 1000] [--token T]... [--external-cdn URL] [--KNOB VALUE]

See scripts/README.md for the store format, the endpoints and the knobs.
"""
import argparse
import hashlib
import json
import os
import signal
import socket
import sys
import threading
from http.server import ThreadingHTTPServer

from hubemulator.cdn import CdnHandler
from hubemulator.hub_api import HubHandler
from hubemulator.state import DEFAULT_KNOBS, EmulatorState
from hubemulator.store import REPO_TYPES, import_repo, write_json_atomic


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class Server6(Server):
    address_family = socket.AF_INET6


def start_server(handler, host, port, state, server_class=Server):
    server = server_class((host, port), handler)
    server.state = state
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


def serve(args):
    knobs = dict(DEFAULT_KNOBS)
    for name in DEFAULT_KNOBS:
        value = getattr(args, name, None)
        if value is not None:
            knobs[name] = value
    secret = hashlib.sha256(f"hub-emulator-cdn-{args.secret}".encode()).digest()
    state = EmulatorState(args.root, args.token or [], knobs, args.external_cdn, args.log, secret)
    hub = start_server(HubHandler, "127.0.0.1", args.port, state)
    cdn = start_server(CdnHandler, "127.0.0.1", args.cdn_port, state)
    cdn_port = cdn.server_address[1]
    try:  # also answer on ::1 in case "localhost" resolves there first
        start_server(CdnHandler, "::1", cdn_port, state, Server6)
    except OSError:
        pass
    state.hub_url = f"http://127.0.0.1:{hub.server_address[1]}"
    state.cdn_url = f"http://localhost:{cdn_port}"
    ready = {"hub": state.hub_url, "cdn": state.cdn_url, "pid": os.getpid()}
    if args.ready_file:
        write_json_atomic(args.ready_file, ready)
    print(json.dumps(ready), flush=True)
    parent = os.getppid()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            if args.exit_with_parent and os.getppid() != parent:
                break
    except KeyboardInterrupt:
        pass
    state.drain(timeout_s=2.0)
    return 0


def parse_knob_value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="add a directory as a new commit of a repo")
    imp.add_argument("root")
    imp.add_argument("repo_id", metavar="ORG/NAME")
    imp.add_argument("src_dir")
    imp.add_argument("--type", default="model", choices=REPO_TYPES)
    imp.add_argument("--branch", default="main")
    imp.add_argument("--tag")
    imp.add_argument("--private", action="store_true", default=None)
    imp.add_argument("--gated", action="store_true", default=None)
    srv = sub.add_parser("serve", help="serve ROOT over HTTP")
    srv.add_argument("root")
    srv.add_argument("--port", type=int, default=0)
    srv.add_argument("--cdn-port", type=int, default=0)
    srv.add_argument("--ready-file")
    srv.add_argument("--log", help="also append each request as a JSON line to this file")
    srv.add_argument("--token", action="append", help="a token the Hub accepts (repeatable)")
    srv.add_argument("--external-cdn", help="redirect LFS files to URL/<path relative to ROOT>")
    srv.add_argument("--secret", default="0", help="seed of the CDN URL signing key")
    srv.add_argument("--exit-with-parent", action="store_true",
                     help="stop when the process that started us goes away (test harnesses)")
    for name, default in DEFAULT_KNOBS.items():
        srv.add_argument("--" + name.replace("_", "-"), dest=name, type=parse_knob_value, default=None,
                         help=f"knob (JSON value; default {json.dumps(default)})")
    args = parser.parse_args(argv)
    if args.command == "import":
        try:
            sha = import_repo(args.root, args.repo_id, args.src_dir, repo_type=args.type,
                              branch=args.branch, tag=args.tag, private=args.private, gated=args.gated)
        except (ValueError, OSError) as e:
            print(f"hub_emulator import: {e}", file=sys.stderr)
            return 2
        print(sha)
        return 0
    if not os.path.isdir(args.root):
        print(f"hub_emulator serve: {args.root} is not a directory (import a repo first)", file=sys.stderr)
        return 2
    try:
        return serve(args)
    except ValueError as e:
        print(f"hub_emulator serve: {e}", file=sys.stderr)
    except OSError as e:
        print(f"hub_emulator serve: cannot listen: {e.strerror or e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
