"""A local HTTP server for the zoo tests: serves a folder laid out like the real hosts, answers
Range requests, can be slowed down (so a download can be killed midway) and counts requests.
`routes` makes it misbehave on purpose: a path there is answered by its function instead."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class ZooServer:
    root: Path
    url: str = ""
    delay: float = 0.0  # seconds between 64 kB chunks
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = field(default_factory=dict)


def serve(root: Path) -> tuple[ZooServer, ThreadingHTTPServer]:
    state = ZooServer(root)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            state.requests.append((self.path, self.headers.get("Range")))
            if self.path in state.routes:
                state.routes[self.path](self)
                return
            path = state.root / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404, "Not Found")
                return
            data = path.read_bytes()
            start = 0
            ranged = self.headers.get("Range")
            if ranged and ranged.startswith("bytes="):
                start = int(ranged[len("bytes=") :].split("-")[0])
                if start >= len(data):
                    self.send_error(416, "Range Not Satisfiable")
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            for offset in range(start, len(data), 65536):
                try:
                    self.wfile.write(data[offset : offset + 65536])
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return
                time.sleep(state.delay)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return state, httpd
