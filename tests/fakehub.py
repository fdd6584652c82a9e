"""A stand-in for the Hugging Face Hub on 127.0.0.1, for huggingface_hub to download from.

Only the endpoints `snapshot_download` uses: repo info, the recursive tree, and
HEAD/GET on ``resolve``. Files whose name ends in ``.safetensors`` or ``.bin`` are
served as LFS files (named by their sha256), the others as git files (git blob sha1),
exactly as the Hub does, so huggingface_hub writes its real cache layout.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".npz", ".gguf")


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class FakeHub:
    """Serve repos: ``hub.add("org/name", {"config.json": b"{}"})``; ``hub.endpoint`` is its URL."""

    def __init__(self) -> None:
        self.repos: dict[str, tuple[str, dict[str, bytes]]] = {}
        self.downloads: list[str] = []  # paths of GET requests on files, to prove nothing is fetched twice
        self.throttle: float = 0.0  # seconds to sleep per 64 KiB sent (to kill a download midway)
        self.requests = 0  # every request answered (API, HEAD, GET), for "zero Hub requests" checks
        self.bytes_sent = 0  # file bytes sent (GET bodies), for "bytes moved from the Hub"
        self._count_lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, repo_id: str, files: dict[str, bytes]) -> str:
        """Publish a repo; returns its commit hash."""
        commit = hashlib.sha1(json.dumps(sorted((k, git_sha1(v)) for k, v in files.items())).encode()).hexdigest()
        self.repos[repo_id] = (commit, dict(files))
        return commit

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- request handling --------------------------------------------------------------

    def _send_json(self, req: BaseHTTPRequestHandler, data: Any, status: int = 200) -> None:
        body = json.dumps(data).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(body)))
        if status == 404:
            req.send_header("X-Error-Code", "RepoNotFound")
        req.end_headers()
        req.wfile.write(body)

    def _handle(self, req: BaseHTTPRequestHandler, head: bool) -> None:
        with self._count_lock:
            self.requests += 1
        path = unquote(urlparse(req.path).path)
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"]:
            return self._api(req, parts[2:])
        # /{org}/{name}/resolve/{revision}/{filename...}
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, filename = "/".join(parts[:2]), "/".join(parts[4:])
            if repo_id not in self.repos or filename not in self.repos[repo_id][1]:
                return self._send_json(req, {"error": "not found"}, 404)
            commit, files = self.repos[repo_id]
            data = files[filename]
            req.send_response(200)
            req.send_header("X-Repo-Commit", commit)
            req.send_header("Content-Length", str(len(data)))
            if filename.endswith(LFS_SUFFIXES):
                sha = hashlib.sha256(data).hexdigest()
                req.send_header("X-Linked-Etag", f'"{sha}"')
                req.send_header("X-Linked-Size", str(len(data)))
                req.send_header("ETag", f'"{sha}"')
            else:
                req.send_header("ETag", f'"{git_sha1(data)}"')
            req.end_headers()
            if not head:
                self.downloads.append(f"{repo_id}/{filename}")
                self._send_body(req, data)
            return None
        return self._send_json(req, {"error": "not found"}, 404)

    def _send_body(self, req: BaseHTTPRequestHandler, data: bytes) -> None:
        import time

        step = 1 << 16
        for start in range(0, len(data), step):
            req.wfile.write(data[start : start + step])
            with self._count_lock:
                self.bytes_sent += len(data[start : start + step])
            if self.throttle:
                req.wfile.flush()
                time.sleep(self.throttle)

    def _api(self, req: BaseHTTPRequestHandler, parts: list[str]) -> None:
        # {org}/{name}/revision/{rev}  or  {org}/{name}/tree/{rev}
        repo_id = "/".join(parts[:2])
        if repo_id not in self.repos or len(parts) < 4:
            return self._send_json(req, {"error": f"Repository {repo_id} not found"}, 404)
        commit, files = self.repos[repo_id]
        if parts[2] == "revision":
            return self._send_json(
                req, {"id": repo_id, "sha": commit, "private": False, "siblings": [{"rfilename": f} for f in files]}
            )
        if parts[2] == "tree":
            tree = []
            for name, data in sorted(files.items()):
                item: dict[str, Any] = {"type": "file", "path": name, "size": len(data), "oid": git_sha1(data)}
                if name.endswith(LFS_SUFFIXES):
                    item["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                tree.append(item)
            return self._send_json(req, tree)
        return self._send_json(req, {"error": "not found"}, 404)
