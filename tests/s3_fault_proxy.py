"""A fault-injecting HTTP proxy on loopback in front of an S3 server (moto): it forwards every request, but
while a fault is armed it answers PUTs (whole objects and multipart parts) to matching keys with S3's own
500 InternalError, the way S3 answers during an incident. The cluster's workers reach S3 through it
(`cluster.py up --worker-s3-endpoint`); the test process holds it and arms it.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

# Not forwarded: they describe one hop, or (Expect) were answered here already.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}
INTERNAL_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    "<Message>We encountered an internal error. Please try again.</Message><RequestId>injected</RequestId></Error>"
).encode()


class S3FaultProxy:
    def __init__(self, upstream: str):
        parsed = urlparse(upstream)
        self._upstream = (parsed.hostname, parsed.port)
        self._lock = threading.Lock()
        self._pattern: re.Pattern | None = None
        self._seconds: float | None = None
        self._until: float | None = None
        self._count: int | None = None
        self.failed: list[str] = []  # the paths of the PUTs answered with 500, in order
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_puts(self, key_pattern: str, *, seconds: float | None = None, count: int | None = None) -> None:
        """Answer PUTs whose key matches `key_pattern` with 500: for `seconds` from the first such PUT, or
        the first `count` of them, or (neither given) until `clear()`."""
        with self._lock:
            self._pattern, self._seconds, self._until, self._count = re.compile(key_pattern), seconds, None, count
            self.failed = []

    def clear(self) -> None:
        with self._lock:
            self._pattern = None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _fails(self, method: str, path: str) -> bool:
        with self._lock:
            if method != "PUT" or self._pattern is None or not self._pattern.search(unquote(urlparse(path).path)):
                return False
            now = time.monotonic()
            if self._until is None and self._seconds is not None:
                self._until = now + self._seconds  # the window opens at the first matching put
            if self._until is not None and now >= self._until or self._count is not None and len(self.failed) >= self._count:
                return False
            self.failed.append(path)
            return True

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, and `Expect: 100-continue` is answered

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response_only(status, reason)
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                length = next((v for n, v in headers if n.lower() == "content-length"), None)
                self.send_header("Content-Length", length if self.command == "HEAD" and length else str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _forward(self) -> None:
                body = self._body()
                if proxy._fails(self.command, self.path):
                    self._answer(500, "Internal Server Error", [("Content-Type", "application/xml")], INTERNAL_ERROR)
                    return
                upstream = http.client.HTTPConnection(*proxy._upstream, timeout=120)
                try:
                    upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for name, value in self.headers.items():
                        if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                            upstream.putheader(name, value)
                    if body or self.command in ("PUT", "POST"):
                        upstream.putheader("Content-Length", str(len(body)))
                    upstream.endheaders(body or None)
                    response = upstream.getresponse()
                    answer = response.read()
                    self._answer(response.status, response.reason, response.getheaders(), answer)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler
