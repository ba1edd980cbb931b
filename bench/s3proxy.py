"""A counting HTTP reverse proxy for S3 (standard library only).

Every contender talks to the local S3 server through this proxy, which forwards each
request byte for byte (the Host header included, so SigV4 signatures stay valid) and
counts requests and body bytes by S3 request class. That gives the same counts for
every library, whatever its client (boto3, the AWS C++ SDK in pyarrow, Rust
object_store/opendal in delta-rs, slatedb and pypaimon-rust).

Classes: GET (object reads, ranged or not), HEAD, LIST (GET on a bucket or the service),
PUT (object and part uploads, bucket creation), COPY (PUT with x-amz-copy-source), POST
(multipart initiate/complete, multi-object delete), DELETE. Bytes: request bodies for
PUT/POST, response bodies for GET/LIST.

Control (never forwarded; "__bench__" is not a valid bucket name):
  GET  /__bench__/stats   {"requests": {class: n}, "bytes": {class: n}, "errors": {status: n}}
  POST /__bench__/reset   zero the counters

Usage: python -m bench.s3proxy --upstream http://127.0.0.1:8333 [--port 0] [--port-file F]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import socket
import socketserver
import sys
import threading
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs, urlsplit

CLASSES = ("GET", "HEAD", "LIST", "PUT", "COPY", "POST", "DELETE", "OTHER")
CHUNK = 1 << 16
CONTINUE_WAIT_S = 1.0  # how long to wait for the server's "100 Continue" (clients wait ~1 s)


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.requests = dict.fromkeys(CLASSES, 0)
            self.bytes = dict.fromkeys(CLASSES, 0)
            self.errors: dict[str, int] = {}

    def add(self, cls: str, nbytes: int, status: int) -> None:
        with self.lock:
            self.requests[cls] += 1
            self.bytes[cls] += nbytes
            if status >= 400:
                self.errors[str(status)] = self.errors.get(str(status), 0) + 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return {
                "requests": {k: v for k, v in self.requests.items() if v},
                "bytes": {k: v for k, v in self.bytes.items() if v},
                "errors": dict(self.errors),
            }


COUNTERS = Counters()


def request_class(method: str, target: str, headers: dict[str, str]) -> str:
    """The S3 request class of one request (path-style addressing)."""
    parts = urlsplit(target)
    path = parts.path.strip("/")
    query = parse_qs(parts.query, keep_blank_values=True)
    if method == "HEAD":
        return "HEAD"
    if method == "GET":
        return "LIST" if "/" not in path or "list-type" in query else "GET"
    if method == "PUT":
        return "COPY" if "x-amz-copy-source" in headers else "PUT"
    if method in ("POST", "DELETE"):
        return method
    return "OTHER"


def read_head(stream: BinaryIO) -> tuple[bytes, list[bytes], dict[str, str]] | None:
    """(start line, raw header lines, lower-cased header dict); None at end of stream."""
    line = stream.readline(65537)
    while line in (b"\r\n", b"\n"):
        line = stream.readline(65537)
    if not line:
        return None
    raw: list[bytes] = []
    headers: dict[str, str] = {}
    while True:
        h = stream.readline(65537)
        if h in (b"\r\n", b"\n", b""):
            break
        raw.append(h)
        name, _, value = h.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return line, raw, headers


def relay_body(
    src: BinaryIO, dst: socket.socket, headers: dict[str, str], until_close: bool
) -> int:
    """Copy one message body verbatim; return its payload bytes."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        total = 0
        while True:
            size_line = src.readline(65537)
            if not size_line:
                raise ConnectionError("eof in chunked body")
            dst.sendall(size_line)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = src.readline(65537)
                    dst.sendall(trailer)
                    if trailer in (b"\r\n", b"\n", b""):
                        return total
            remaining = size + 2  # the chunk and its CRLF
            while remaining:
                data = src.read(min(CHUNK, remaining))
                if not data:
                    raise ConnectionError("eof in chunk")
                dst.sendall(data)
                remaining -= len(data)
            total += size
    if "content-length" in headers:
        remaining = total = int(headers["content-length"])
        while remaining:
            data = src.read(min(CHUNK, remaining))
            if not data:
                raise ConnectionError("eof in body")
            dst.sendall(data)
            remaining -= len(data)
        return total
    if not until_close:
        return 0
    total = 0
    while data := src.read1(CHUNK) if hasattr(src, "read1") else src.read(CHUNK):
        dst.sendall(data)
        total += len(data)
    return total


def status_of(line: bytes) -> int:
    try:
        return int(line.split()[1])
    except (IndexError, ValueError):
        return 0


class Handler(socketserver.StreamRequestHandler):
    upstream_addr: tuple[str, int] = ("127.0.0.1", 0)

    def handle(self) -> None:
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upstream: socket.socket | None = None
        try:
            while True:
                head = read_head(self.rfile)
                if head is None:
                    return
                line, raw, headers = head
                method, target = line.decode("latin-1").split()[:2]
                if target.startswith("/__bench__/"):
                    self.control(method, target)
                    continue
                if upstream is None:
                    upstream = socket.create_connection(self.upstream_addr)
                    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    ufile = upstream.makefile("rb")
                if not self.forward(upstream, ufile, line, raw, headers, method, target):
                    return
        except (ConnectionError, OSError, ValueError):
            return
        finally:
            if upstream is not None:
                upstream.close()

    def forward(
        self,
        upstream: socket.socket,
        ufile: BinaryIO,
        line: bytes,
        raw: list[bytes],
        headers: dict[str, str],
        method: str,
        target: str,
    ) -> bool:
        """Forward one exchange; False when either side closes the connection after it."""
        upstream.sendall(line + b"".join(raw) + b"\r\n")
        response = None
        if headers.get("expect", "").lower() == "100-continue":
            ready, _, _ = select.select([upstream], [], [], CONTINUE_WAIT_S)
            if ready:
                response = read_head(ufile)
                if response is None:
                    raise ConnectionError("upstream closed")
                if status_of(response[0]) == 100:
                    self.connection.sendall(response[0] + b"".join(response[1]) + b"\r\n")
                    response = None
                else:  # a final answer before the body: relay it and drop the connection
                    self.relay_response(ufile, response, method, target, headers, 0)
                    return False
        sent = relay_body(self.rfile, upstream, headers, until_close=False)
        if response is None:
            response = read_head(ufile)
            while response is not None and 100 <= status_of(response[0]) < 200:
                response = read_head(ufile)
            if response is None:
                raise ConnectionError("upstream closed")
        keep = self.relay_response(ufile, response, method, target, headers, sent)
        return keep and headers.get("connection", "").lower() != "close"

    def relay_response(
        self,
        ufile: BinaryIO,
        response: tuple[bytes, list[bytes], dict[str, str]],
        method: str,
        target: str,
        req_headers: dict[str, str],
        sent: int,
    ) -> bool:
        line, raw, headers = response
        status = status_of(line)
        self.connection.sendall(line + b"".join(raw) + b"\r\n")
        received = 0
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        framed = "content-length" in headers or "chunked" in headers.get("transfer-encoding", "")
        if not no_body:
            received = relay_body(ufile, self.connection, headers, until_close=not framed)
        cls = request_class(method, target, req_headers)
        COUNTERS.add(cls, sent if method in ("PUT", "POST") else received, status)
        return framed or no_body

    def control(self, method: str, target: str) -> None:
        if target.startswith("/__bench__/reset"):
            COUNTERS.reset()
            body = b"{}"
        else:
            body = json.dumps(COUNTERS.snapshot()).encode()
        self.connection.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="http://host:port of the S3 server")
    parser.add_argument("--port", type=int, default=0, help="listen port on 127.0.0.1 (0: free)")
    parser.add_argument("--port-file", help="write the chosen port here once listening")
    args = parser.parse_args(argv)
    up = urlsplit(args.upstream)
    Handler.upstream_addr = (up.hostname or "127.0.0.1", up.port or 80)
    server = Server(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]
    if args.port_file:
        tmp = Path(args.port_file + ".tmp")
        tmp.write_text(str(port))
        tmp.replace(args.port_file)
    print(f"s3proxy on 127.0.0.1:{port} -> {args.upstream}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
