"""A real HTTP server on 127.0.0.1 for download tests (run in a thread by the ``server`` fixture)."""
from __future__ import annotations

import http.server
import threading
import time
from collections import Counter


class Server:
    """Serves ``routes[path] = (body, mode)``; mode 'ok', 'short' (lies about length) or 'slow'.

    Other paths get 404, or *default* when it is given (e.g. a mirror for every zoo file).
    """

    def __init__(self, default: bytes | None = None) -> None:
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.gets: Counter[str] = Counter()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.gets[self.path] += 1
                if self.path in outer.routes:
                    body, mode = outer.routes[self.path]
                elif default is not None:
                    body, mode = default, "ok"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body) + (1000 if mode == "short" else 0)))
                self.end_headers()
                if mode == "slow":
                    step = len(body) // 8 + 1
                    for i in range(0, len(body), step):
                        self.wfile.write(body[i:i + step])
                        self.wfile.flush()
                        time.sleep(0.05)
                else:
                    self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def add(self, path: str, body: bytes, mode: str = "ok") -> str:
        self.routes[path] = (body, mode)
        return self.base + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
