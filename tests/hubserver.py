"""A local Hugging Face Hub-compatible endpoint for tests: a small HTTP server on 127.0.0.1
and a free port that serves model repositories built from folders (tiny real models made by
:mod:`tests.factories`), with what ``huggingface_hub`` reads from the real Hub:

- ``GET /api/models/{org}/{name}/revision/{rev}`` (``?blobs=True``): the model info JSON —
  ``id``, ``sha`` (the commit), ``siblings`` with ``rfilename``, ``size``, ``blobId`` (git
  blob sha1) and, for LFS files (weights), ``lfs: {size, sha256, pointerSize}``;
- ``HEAD`` / ``GET /{org}/{name}/resolve/{rev}/{file}``: the bytes, with ``X-Repo-Commit``,
  ``ETag`` (an LFS file's sha256 / a small file's blob id), ``X-Linked-Etag`` and
  ``X-Linked-Size`` for LFS files, ``Content-Length``;
- errors as the Hub writes them: ``X-Error-Code: RepoNotFound`` (404, or 401 for a private
  repository without the right ``Authorization: Bearer``), ``RevisionNotFound``,
  ``EntryNotFound``.

A repository can be private (a token needed) and can serve one file's bytes *corrupted*
(its advertised hash stays the true one), to test the client's checks. Every request's path
and ``Authorization`` header is recorded (``server.requests``).

::

    with HubServer() as hub:
        hub.add("org/tiny", folder, revisions={"main": ...})
        os.environ["HF_ENDPOINT"] = hub.url
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: Files the Hub stores with Git LFS (what ``.gitattributes`` marks in a real repository).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".h5", ".msgpack", ".model")


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str
    private_token: str | None = None
    corrupt: set[str] = field(default_factory=set)
    branches: dict[str, str] = field(default_factory=dict)  # name → commit

    def sibling(self, name: str) -> dict:
        data = self.files[name]
        entry: dict = {"rfilename": name, "size": len(data), "blobId": _blob_id(data)}
        if name.endswith(LFS_SUFFIXES):
            entry["lfs"] = {
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "pointerSize": 134,
            }
        return entry


class HubServer:
    """See the module doc. ``add`` a repository from a folder, then point ``HF_ENDPOINT`` at ``url``."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        #: Called with the path of each file download (``GET .../resolve/...``) before it is
        #: served: a test acts at an exact moment of a fetch (cancels it, say).
        self.on_download = None
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_HEAD(self):
                hub._serve(self, body=False)

            def do_GET(self):
                hub._serve(self, body=True)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def add(
        self,
        repo_id: str,
        folder: Path | None = None,
        *,
        files: dict[str, bytes] | None = None,
        private_token: str | None = None,
        corrupt: set[str] | None = None,
    ) -> Repo:
        """Serve ``folder``'s top-level files (or ``files``) as ``repo_id`` at branch ``main``;
        the commit is a sha1 over the content (a new content: a new commit)."""
        data = dict(files or {})
        if folder is not None:
            data.update(
                {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
            )
        commit = hashlib.sha1(
            json.dumps(
                {k: hashlib.sha256(v).hexdigest() for k, v in sorted(data.items())}
            ).encode(),
            usedforsecurity=False,
        ).hexdigest()
        repo = Repo(
            files=data,
            commit=commit,
            private_token=private_token,
            corrupt=set(corrupt or ()),
            branches={"main": commit},
        )
        self.repos[repo_id] = repo
        return repo

    def auths(self, needle: str) -> list[str | None]:
        """The ``Authorization`` headers of the requests whose path contains ``needle``."""
        return [a for _, p, a in self.requests if needle in p]

    # ---------------------------------------------------------------- serving

    def _error(
        self, h: BaseHTTPRequestHandler, status: int, code: str, message: str, body: bool
    ) -> None:
        payload = json.dumps({"error": message}).encode()
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", message)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if body:
            h.wfile.write(payload)

    def _repo(self, h: BaseHTTPRequestHandler, repo_id: str, body: bool) -> Repo | None:
        repo = self.repos.get(repo_id)
        auth = h.headers.get("Authorization")
        if repo is None or (repo.private_token and auth != f"Bearer {repo.private_token}"):
            # the Hub answers a private repository without access like a missing one
            status = 401 if repo is not None or not auth else 404
            self._error(h, status, "RepoNotFound", "Repository not found", body)
            return None
        return repo

    def _commit(self, h: BaseHTTPRequestHandler, repo: Repo, rev: str, body: bool) -> str | None:
        if rev in repo.branches:
            return repo.branches[rev]
        if len(rev) >= 7 and repo.commit.startswith(rev):
            return repo.commit
        self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}", body)
        return None

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        self.requests.append((h.command, path, h.headers.get("Authorization")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and "revision" in parts:
            i = parts.index("revision")
            repo_id, rev = "/".join(parts[2:i]), "/".join(parts[i + 1 :])
            repo = self._repo(h, repo_id, body)
            if repo is None:
                return
            commit = self._commit(h, repo, rev, body)
            if commit is None:
                return
            info = {
                "id": repo_id,
                "modelId": repo_id,
                "sha": commit,
                "private": bool(repo.private_token),
                "siblings": [repo.sibling(n) for n in sorted(repo.files)],
            }
            payload = json.dumps(info).encode()
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            if body:
                h.wfile.write(payload)
            return
        if "resolve" in parts:
            i = parts.index("resolve")
            repo_id, rev, name = "/".join(parts[:i]), parts[i + 1], "/".join(parts[i + 2 :])
            repo = self._repo(h, repo_id, body)
            if repo is None:
                return
            commit = self._commit(h, repo, rev, body)
            if commit is None:
                return
            if name not in repo.files:
                self._error(h, 404, "EntryNotFound", f"{name} does not exist", body)
                return
            data = repo.files[name]
            sib = repo.sibling(name)
            if name in repo.corrupt:  # same length, one byte flipped: only a hash can tell
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            if body and self.on_download is not None:
                self.on_download(path)
            h.send_response(200)
            h.send_header("X-Repo-Commit", commit)
            if "lfs" in sib:
                h.send_header("ETag", f'"{sib["lfs"]["sha256"]}"')
                h.send_header("X-Linked-Etag", f'"{sib["lfs"]["sha256"]}"')
                h.send_header("X-Linked-Size", str(len(data)))
            else:
                h.send_header("ETag", f'"{sib["blobId"]}"')
            h.send_header("Content-Type", "application/octet-stream")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            if body:
                h.wfile.write(data)
            return
        self._error(h, 404, "RepoNotFound", f"no route {path}", body)
