"""A local Hub-compatible HTTP server for the tests (test code, not product code).

It speaks the subset of the Hub API that the real `huggingface_hub` client uses to create a repository, commit files
inline ("regular" upload mode) and download them back, so `push_to_hub`, `HfApi.upload_folder`, `Trainer.push_to_hub`
and `from_pretrained(repo_id)` run end to end against 127.0.0.1:

- `POST /api/repos/create`, `POST /api/validate-yaml`
- `POST /api/models/{repo_id}/preupload/{revision}`, `POST /api/models/{repo_id}/commit/{revision}` (NDJSON)
- `GET /api/models/{repo_id}[/revision/{revision}]`
- `HEAD`/`GET /{repo_id}/resolve/{revision}/{filename}` with `X-Repo-Commit`, `ETag` and `X-Error-Code` on 404.

Usage (in a fixture):

```python
with LocalHub() as hub:
    point_client_at(hub, monkeypatch, cache_dir)   # in-process clients (huggingface_hub, transformers)
    env = hub.env(cache_dir)                       # for subprocesses
```

Faults: ``hub.fail_with = 500`` makes every request fail with that status; ``hub.fail_on = {"README.md": 500}`` only
the requests whose path contains a key; ``hub.drip = 1.0`` sends every response (status line and headers included)
one byte per that many seconds, until the server stops. ``hub.url_with_credentials(user, password)`` is the server's
URL with ``user:password@`` in it (the server ignores them), as a user may set ``HF_ENDPOINT``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def at(self, revision: str) -> Commit | None:
        if revision == "main":
            return self.head
        return next((c for c in self.commits if c.oid == revision), None)


class LocalHub:
    """A threaded Hub-compatible server on 127.0.0.1 and a free port; a context manager."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, parsed JSON body or None)
        self.fail_with: int | None = None
        self.fail_on: dict[str, int] = {}
        self.drip: float | None = None
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LocalHub:
        self._thread.start()
        return self

    def url_with_credentials(self, user: str, password: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{user}:{password}@{host}:{port}"

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()  # ends any dripping response
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def env(self, cache_dir: str | Path) -> dict[str, str]:
        """Environment variables that point a subprocess's clients at this server (and a private cache)."""
        return {
            "HF_ENDPOINT": self.url,
            "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_HOME": str(cache_dir),
            "HF_TOKEN": "hf_local_test_token",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }

    # ---------------------------------------------------------------------------------------------- repository ops
    def create(self, repo_id: str, private: bool) -> bool:
        with self._lock:
            if repo_id in self.repos:
                return False
            self.repos[repo_id] = Repo(
                repo_id, private, [Commit(_oid(repo_id, uuid.uuid4().hex), "initial commit", {})]
            )
            return True

    def commit(self, repo_id: str, message: str, added: dict[str, bytes], deleted: list[str]) -> Commit:
        with self._lock:
            repo = self.repos[repo_id]
            files = dict(repo.head.files)
            files.update(added)
            for path in deleted:
                files.pop(path, None)
            commit = Commit(_oid(repo_id, repo.head.oid, uuid.uuid4().hex), message, files)
            repo.commits.append(commit)
            return commit


def _oid(*parts: str) -> str:
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()


def _make_handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
            pass

        # -------------------------------------------------------------------------------------------- helpers
        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            if hub.drip is not None:
                return self._drip(status, body, headers or {})
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if "Content-Type" not in (headers or {}):
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _drip(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            """The whole response, one byte per ``hub.drip`` seconds (until the server stops)."""
            headers = {"Content-Type": "application/json", **headers, "Content-Length": str(len(body))}
            head = f"HTTP/1.1 {status} Status\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            raw = head.encode() + (body if self.command != "HEAD" else b"")
            self.close_connection = True
            for i in range(len(raw)):
                if hub.stopped.wait(hub.drip):
                    return
                try:
                    self.wfile.write(raw[i : i + 1])
                    self.wfile.flush()
                except OSError:  # the client gave up
                    return

        def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(data).encode(), headers)

        def _error(self, status: int, code: str, message: str) -> None:
            self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

        def _repo(self, repo_id: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository not found: {repo_id}")
            return repo

        def _repo_at(self, repo_id: str, revision: str) -> tuple[Repo | None, Any]:
            """The repository and its commit at `revision`; (.., None) after answering 404 when either is missing."""
            repo = self._repo(repo_id)
            if repo is None:
                return None, None
            commit = repo.at(revision)
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return repo, commit

        # ------------------------------------------------------------------------------------------- dispatch
        def _handle(self) -> None:
            path = unquote(urlsplit(self.path).path)
            body = self._body() if self.command in ("POST", "PUT") else b""
            parsed = None
            if (
                body
                and "json" in (self.headers.get("Content-Type") or "")
                and "ndjson" not in self.headers["Content-Type"]
            ):
                parsed = json.loads(body)
            hub.requests.append((self.command, path, parsed))
            if hub.fail_with is not None:
                return self._json(hub.fail_with, {"error": "Internal Error (local test hub)"})
            for fragment, status in hub.fail_on.items():
                if fragment in path:
                    return self._json(status, {"error": f"Internal Error (local test hub, {fragment})"})
            if self.command == "POST" and path == "/api/repos/create":
                return self._create(parsed or {})
            if self.command == "POST" and path == "/api/validate-yaml":
                return self._json(200, {})
            if self.command == "POST" and path.startswith("/api/models/"):
                rest = path[len("/api/models/") :]
                if "/preupload/" in rest:
                    repo_id, _ = rest.split("/preupload/", 1)
                    return self._preupload(repo_id, parsed or {})
                if "/commit/" in rest:
                    repo_id, _ = rest.split("/commit/", 1)
                    return self._commit(repo_id, body)
            if self.command == "GET" and path.startswith("/api/models/"):
                rest = path[len("/api/models/") :]
                repo_id, _, revision = rest.partition("/revision/")
                return self._info(repo_id, revision or "main")
            if self.command in ("GET", "HEAD") and "/resolve/" in path:
                repo_id, rest = path.lstrip("/").split("/resolve/", 1)
                revision, _, filename = rest.partition("/")
                return self._resolve(repo_id, revision, filename)
            return self._error(404, "NotFound", f"No route for {self.command} {path} in the local test hub")

        do_GET = do_HEAD = do_POST = do_PUT = _handle

        # ------------------------------------------------------------------------------------------ endpoints
        def _create(self, payload: dict[str, Any]) -> None:
            name, organization = payload.get("name"), payload.get("organization")
            repo_id = f"{organization}/{name}" if organization else name
            url = f"{hub.url}/{repo_id}"
            private = bool(payload.get("private")) or payload.get("visibility") == "private"
            if not hub.create(repo_id, private):
                return self._json(409, {"error": "You already created this model repo", "url": url})
            return self._json(200, {"url": url, "name": repo_id})

        def _preupload(self, repo_id: str, payload: dict[str, Any]) -> None:
            if self._repo(repo_id) is None:
                return
            files = [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                for f in payload.get("files", [])
            ]
            return self._json(200, {"files": files, "commitOid": hub.repos[repo_id].head.oid})

        def _commit(self, repo_id: str, body: bytes) -> None:
            if self._repo(repo_id) is None:
                return
            message, added, deleted = "", {}, []
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    message = value.get("summary", "")
                elif key == "file":
                    content = value["content"]
                    added[value["path"]] = (
                        base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                    )
                elif key in ("deletedFile", "deletedFolder"):
                    deleted.append(value["path"])
                else:
                    return self._error(400, "BadRequest", f"The local test hub does not support {key!r} entries")
            commit = hub.commit(repo_id, message, added, deleted)
            url = f"{hub.url}/{repo_id}/commit/{commit.oid}"
            return self._json(200, {"commitUrl": url, "commitOid": commit.oid, "pullRequestUrl": None})

        def _info(self, repo_id: str, revision: str) -> None:
            repo, commit = self._repo_at(repo_id, revision)
            if commit is None:
                return
            return self._json(
                200,
                {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": commit.oid,
                    "private": repo.private,
                    "siblings": [{"rfilename": name} for name in sorted(commit.files)],
                    "tags": [],
                },
            )

        def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
            repo, commit = self._repo_at(repo_id, revision)
            if commit is None:
                return
            if filename not in commit.files:
                return self._error(404, "EntryNotFound", f"{filename} does not exist at {revision}")
            content = commit.files[filename]
            headers = {
                "Content-Type": "application/octet-stream",
                "X-Repo-Commit": commit.oid,
                "ETag": f'"{hashlib.sha1(content).hexdigest()}"',
            }
            return self._send(200, content, headers)

    return Handler


def point_client_at(hub: LocalHub, monkeypatch: Any, cache_dir: str | Path, url: str | None = None) -> None:
    """Points the in-process `huggingface_hub` and transformers clients at ``hub`` for one test.

    `HF_ENDPOINT` is read when `huggingface_hub` is imported, so the constants (and the module-level `HfApi`
    behind `create_repo`, `upload_folder`, ... and transformers' shared instance) are patched instead; the download
    cache goes to ``cache_dir``. ``url``: the endpoint to use instead of ``hub.url`` (e.g. with credentials in it).
    """
    import transformers.utils.hub
    from huggingface_hub import constants, hf_api

    url = url or hub.url
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(hf_api.api, "endpoint", url)
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)  # transformers' shared HfApi, built on first use
