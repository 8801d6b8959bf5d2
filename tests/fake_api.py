"""A recording JSON API on 127.0.0.1: the plumbing of the stand-in Kubernetes and Kubeflow APIs.

A subclass says what to answer; this records every request and serves on a free port in a thread.

    class MyAPI(FakeJSONAPI):
        def answer(self, method, path, query, body) -> tuple[int, dict]: ...
    with MyAPI() as api:
        ...                                            # a client talking to api.url
        api.requests                                   # [{method, path, query, body}]
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class FakeJSONAPI:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def handle_any(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(size)) if size else None
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                api.requests.append({"method": self.command, "path": url.path, "query": query, "body": body})
                status, obj = api.answer(self.command, url.path, query, body)
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = handle_any

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, method: str, path: str, query: dict[str, str], body: dict | None) -> tuple[int, dict]:
        raise NotImplementedError

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
