#!/usr/bin/env python3
"""A tiny HTTP server that answers every request with `204 No Content` after a fixed delay.

nginx consults it through `auth_request` before serving each request of the WAN profile, so
every response (ranged read, HEAD or directory listing) starts DELAY ms late while nginx still
sends the body itself with sendfile: the delay adds no copy to the data path. Keep-alive
connections are served so that the check costs no TCP handshake.
"""
import argparse
import asyncio
import os
import sys

MAX_HEADER_BYTES = 64 * 1024
RESPONSE = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


async def serve_connection(reader, writer, delay_s):
    try:
        while True:
            # nginx sends no body with the subrequest (proxy_pass_request_body off).
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(delay_s)
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def run(delay_ms, port_file):
    delay_s = delay_ms / 1000.0
    server = await asyncio.start_server(lambda r, w: serve_connection(r, w, delay_s),
                                        "127.0.0.1", 0, limit=MAX_HEADER_BYTES)
    port = server.sockets[0].getsockname()[1]
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, port_file)
    async with server:
        await server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--port-file", required=True, help="where to write the port once listening")
    args = parser.parse_args()
    try:
        asyncio.run(run(args.delay_ms, args.port_file))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
