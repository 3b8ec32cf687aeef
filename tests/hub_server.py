"""A loopback Hugging Face hub for tests: a small threaded HTTP server on 127.0.0.1 that answers the
endpoints ``huggingface_hub`` (and through it ``transformers`` and ``datasets``) call when
``HF_ENDPOINT`` points at it.

Endpoints served (what huggingface_hub 1.x/2.x, transformers 5 and datasets 4/5 ask for):

- ``GET /api/{models|datasets}/{repo}[/revision/{rev}]``: repo info (``sha``, ``siblings``);
- ``HEAD|GET /{repo}/resolve/{rev}/{path}`` and ``/datasets/{repo}/resolve/{rev}/{path}``: file
  metadata (``X-Repo-Commit``, ``ETag``, ``Content-Length``) and contents, with ``Range`` support;
  a missing file answers 404 with ``X-Error-Code: EntryNotFound``, a missing repo with ``RepoNotFound``;
- ``GET /api/{models|datasets}/{repo}/tree/{rev}[/{path}]``: the file listing (``recursive``);
- ``POST /api/{models|datasets}/{repo}/paths-info/{rev}``: metadata of given paths.

Every request is recorded in ``hub.requests`` (method, path), so a test can show which calls the real
download code made. No network beyond 127.0.0.1; port 0 picks a free port.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse


@dataclass
class Repo:
    repo_id: str
    kind: str  # "model" or "dataset"
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def sha(self) -> str:
        h = hashlib.sha1()
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        return h.hexdigest()

    def entry(self, path: str) -> dict:
        data = self.files[path]
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        out = {"type": "file", "oid": blob, "size": len(data), "path": path}
        if len(data) > 1024 or path.endswith((".safetensors", ".parquet", ".bin")):
            out["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return out

    def dirs(self) -> set[str]:
        out = set()
        for name in self.files:
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                out.add("/".join(parts[:i]))
        return out


class LoopbackHub:
    """``hub = LoopbackHub(); hub.add_model("org/name", folder); hub.start(); hub.url``."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ content

    def add_model(self, repo_id: str, folder: str | Path) -> Repo:
        return self._add(repo_id, "model", folder)

    def add_dataset(self, repo_id: str, files: dict[str, bytes] | str | Path) -> Repo:
        return self._add(repo_id, "dataset", files)

    def _add(self, repo_id: str, kind: str, source) -> Repo:
        if isinstance(source, dict):
            files = dict(source)
        else:
            root = Path(source)
            files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        files.setdefault(".gitattributes", b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
        repo = Repo(repo_id, kind, files)
        self.repos[(kind, repo_id)] = repo
        return repo

    # ------------------------------------------------------------------ server

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the hub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LoopbackHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


_API = re.compile(r"^/api/(?P<kind>models|datasets)/(?P<rest>.+)$")
_RESOLVE = re.compile(r"^/(?:(?P<kind>datasets)/)?(?P<repo>[^/]+/[^/]+|[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


class _Handler(BaseHTTPRequestHandler):
    hub: LoopbackHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet: tests read hub.requests instead
        pass

    # ------------------------------------------------------------------ helpers

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, head: bool = False) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"}, head=head)

    def _error(self, status: int, code: str, message: str, head: bool = False) -> None:
        self._send(status, json.dumps({"error": message}).encode(),
                   {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message}, head=head)

    def _repo(self, kind: str, repo_id: str) -> Repo | None:
        return self.hub.repos.get(("dataset" if kind.startswith("dataset") else "model", repo_id))

    # ------------------------------------------------------------------ verbs

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch(head=False)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self._dispatch(head=False, body=body)

    def _dispatch(self, head: bool, body: bytes = b"") -> None:
        parsed = urlparse(self.path)
        path = unquote(parsed.path)
        self.hub.requests.append((self.command, self.path))
        m = _RESOLVE.match(path)
        if m and "/api/" not in path[:5]:
            return self._resolve(m.group("kind") or "models", m.group("repo"), m.group("rev"), m.group("path"), head)
        m = _API.match(path)
        if m:
            return self._api(m.group("kind"), m.group("rest"), parse_qs(parsed.query), head, body)
        self._error(404, "EntryNotFound", f"no route for {path}", head=head)

    def _resolve(self, kind: str, repo_id: str, rev: str, path: str, head: bool) -> None:
        repo = self._repo(kind, repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", f"Repository Not Found for url: {self.path}.", head=head)
        if rev not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head=head)
        if path not in repo.files:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}", head=head)
        data = repo.files[path]
        entry = repo.entry(path)
        etag = (entry.get("lfs") or {}).get("oid") or entry["oid"]
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if "lfs" in entry:
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = len(data)
        rng = self.headers.get("Range")
        if rng and not head:
            m = re.match(r"bytes=(\d*)-(\d*)", rng)
            if m:
                start = int(m.group(1)) if m.group(1) else max(0, len(data) - int(m.group(2)))
                end = int(m.group(2)) if m.group(1) and m.group(2) else len(data) - 1
                end = min(end, len(data) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                return self._send(206, data[start:end + 1], headers)
        self._send(200, data, headers, head=head)

    def _api(self, kind: str, rest: str, query: dict, head: bool, body: bytes) -> None:
        # rest: {repo}[/revision/{rev}] | {repo}/tree/{rev}[/{path}] | {repo}/paths-info/{rev}
        m = re.match(r"^(?P<repo>[^/]+(?:/[^/]+)?)"
                     r"(?:/(?P<op>revision|tree|paths-info|refs|parquet)(?:/(?P<rev>[^/]+)(?:/(?P<path>.*))?)?)?$",
                     rest)
        if not m:
            return self._error(404, "EntryNotFound", f"no route for /api/{kind}/{rest}", head=head)
        repo = self._repo(kind, m.group("repo"))
        if repo is None:
            return self._error(404, "RepoNotFound", f"Repository Not Found: {m.group('repo')}", head=head)
        op, rev, sub = m.group("op"), m.group("rev"), (m.group("path") or "").strip("/")
        if rev is not None and rev not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head=head)
        if op in (None, "revision"):
            info = {
                "_id": repo.sha[:24], "id": repo.repo_id, "sha": repo.sha, "private": False, "disabled": False,
                "gated": False, "downloads": 0, "likes": 0, "tags": [], "cardData": {},
                "lastModified": "2024-01-01T00:00:00.000Z", "createdAt": "2024-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": f} for f in sorted(repo.files)],
            }
            if repo.kind == "model":
                info["modelId"] = repo.repo_id
            return self._json(info, head=head)
        if op == "refs":
            return self._json({"branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": repo.sha}],
                               "converts": [], "tags": []}, head=head)
        if op == "tree":
            recursive = (query.get("recursive") or ["false"])[0].lower() in ("1", "true")
            prefix = f"{sub}/" if sub else ""
            if sub and sub not in repo.dirs() and sub not in repo.files:
                return self._error(404, "EntryNotFound", f"{sub} does not exist on {rev}", head=head)
            entries = []
            for d in sorted(repo.dirs()):
                if d.startswith(prefix) and (recursive or "/" not in d[len(prefix):]):
                    oid = hashlib.sha1(d.encode()).hexdigest()
                    entries.append({"type": "directory", "oid": oid, "size": 0, "path": d})
            for f in sorted(repo.files):
                if f.startswith(prefix) and (recursive or "/" not in f[len(prefix):]):
                    entries.append(repo.entry(f))
            return self._json(entries, head=head)
        if op == "paths-info":
            paths: list[str] = []
            text = body.decode() if body else ""
            if text.startswith("{"):
                paths = list(json.loads(text).get("paths") or [])
            else:
                paths = parse_qs(text).get("paths", [])
            out = []
            for p in paths:
                p = p.strip("/")
                if p in repo.files:
                    out.append(repo.entry(p))
                elif p in repo.dirs():
                    out.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p})
            return self._json(out, head=head)
        return self._error(404, "EntryNotFound", f"/api/{kind}/{rest} is not served by the loopback hub", head=head)
