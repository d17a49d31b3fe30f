"""Workers without the shared store volume: fetch checkpoints and datasets from the API by id.

A run's spec names store ids (the API resolves names before queueing). A worker whose
own store (``BASIN_STORE``) lacks one of them, and whose ``BASIN_API_URL`` is set,
downloads it::

    GET {api}/api/checkpoints/{ref}          manifest: id, name, tags
    GET {api}/api/checkpoints/{id}/archive   .tar of the model directory, id in a header
    GET {api}/api/datasets/{ref}             manifest: id, name, format, task
    GET {api}/api/datasets/{id}/file         the file, id in a header

Everything lands in a workspace under ``<store>/tmp/`` first. Archive members are
checked while the stream is read, by the checks uploads use (:mod:`service.archives`: flat
file names only, regular files only, no links or devices, bounded count and bytes) and the store's own validation runs on the result
(config loads, safetensors structure, ``.bin`` only with ``weights_only``; nothing is
unpickled). The store then hashes the content with its id function (sha256, see
:mod:`service.store`) and refuses it unless it equals the requested id
(:class:`service.store.ContentMismatch`); only a match is renamed into
``checkpoints/<id>/``. Any failure removes the workspace, so nothing partial stays.
``BASIN_API_TOKEN``, when set, is sent as ``X-Basin-Token``: an API with a token answers
its registry (manifests, archives, dataset files) only to requests that carry it.

A worker with the store volume (no ``api_url``, or the id already present) resolves
exactly as before (:meth:`service.store.Store.resolver`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from basin.errors import BasinError, CheckpointError, DatasetError
from basin.resolve import CheckpointSource
from service.archives import ArchiveLimits, extract_tar_stream
from service.errors import (
    CheckpointMismatch,
    CheckpointNotFound,
    ContentMismatch,
    DatasetMismatch,
    DatasetNotFound,
    NameTaken,
)
from service.store import Store

logger = logging.getLogger(__name__)

CHECKPOINT_ID_HEADER = "X-Basin-Checkpoint-Id"
DATASET_ID_HEADER = "X-Basin-Dataset-Id"
MAX_MEMBERS = 10_000
_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class FetchError(BasinError):
    """A download from the API failed (network, HTTP status, a malformed archive)."""


def store_resolver(store: Store, settings: Any) -> Any:
    """The resolver a worker uses: the store's own, or a :class:`FetchingResolver` when
    ``settings.api_url`` is set."""
    api_url = (getattr(settings, "api_url", "") or "").strip()
    if not api_url:
        return store.resolver()
    return FetchingResolver(store, api_url, token=getattr(settings, "api_token", None))


class _StreamReader:
    """A read-only file object over an ``httpx`` response body, counting bytes (for tarfile)."""

    def __init__(self, response: httpx.Response, limit: int):
        self._it = response.iter_bytes(_CHUNK)
        self._buf = b""
        self.limit = limit
        self.read_bytes = 0

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            chunk = next(self._it, None)
            if chunk is None:
                break
            self.read_bytes += len(chunk)
            if self.read_bytes > self.limit:
                raise FetchError(f"the download is longer than announced ({self.limit} bytes)")
            self._buf += chunk
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


class FetchingResolver:
    """A :class:`~basin.resolve.Resolver` over a local :class:`Store` that downloads what
    the store lacks from the API at ``api_url`` (see the module doc)."""

    def __init__(
        self, store: Store, api_url: str, *, token: str | None = None, timeout: float = 60.0
    ):
        self.store = store
        self.api_url = api_url.rstrip("/")
        self.headers = {"X-Basin-Token": token} if token else {}
        self.timeout = timeout

    # ---------------------------------------------------------------- resolver protocol

    def checkpoint(self, ref: str) -> CheckpointSource:
        """The local files of checkpoint ``ref``, fetched first if this store lacks them."""
        try:
            return self.store.resolver().checkpoint(ref)
        except CheckpointNotFound:
            pass
        ident = self.fetch_checkpoint(ref)
        return self.store.resolver().checkpoint(ident)

    def dataset(self, ref: str) -> Path:
        """The local file of dataset ``ref``, fetched first if this store lacks it."""
        try:
            return self.store.resolver().dataset(ref)
        except DatasetNotFound:
            pass
        ident = self.fetch_dataset(ref)
        return self.store.resolver().dataset(ident)

    # ---------------------------------------------------------------- downloads

    def _client(self) -> httpx.Client:
        return httpx.Client(
            headers=self.headers, timeout=httpx.Timeout(self.timeout), follow_redirects=False
        )

    def _manifest(self, client: httpx.Client, kind: str, ref: str) -> dict[str, Any]:
        url = f"{self.api_url}/api/{kind}s/{quote(ref, safe='')}"
        not_found, err = (
            (CheckpointNotFound, CheckpointError)
            if kind == "checkpoint"
            else (DatasetNotFound, DatasetError)
        )
        r = client.get(url)
        if r.status_code == 404:
            raise not_found(
                f"{kind} {ref!r} is neither in this worker's store nor known to the API at "
                f"{self.api_url}"
            )
        if r.status_code == 401:  # with BASIN_API_TOKEN set, reading the registry needs it
            raise err(
                f"the API at {self.api_url} needs its token to send {kind} {ref!r}: set "
                f"BASIN_API_TOKEN on this worker to the API's"
                + (" (the one set was refused)" if self.headers else "")
            )
        if r.status_code != 200:
            raise err(f"the API at {self.api_url} answered {r.status_code} for {kind} {ref!r}")
        m = r.json()
        if not isinstance(m, dict) or not _ID_RE.match(str(m.get("id", ""))):
            raise err(f"the API at {self.api_url} sent a malformed {kind} manifest for {ref!r}")
        if _ID_RE.match(ref) and m["id"] != ref:
            raise err(f"the API at {self.api_url} answered {kind} {m['id']} for {ref}")
        return m

    def fetch_checkpoint(self, ref: str) -> str:
        """Download checkpoint ``ref`` into the store, verified; returns its id.

        Raises :class:`CheckpointNotFound` if the API does not know it,
        :class:`service.store.CheckpointMismatch` if the files hash to another id, and
        :class:`CheckpointError` for any other failure (network, malformed archive).
        """
        try:
            with self._client() as client:
                m = self._manifest(client, "checkpoint", ref)
                ident = m["id"]
                try:  # known by that id after all (the ref was a name): nothing to fetch
                    return self.store.get_checkpoint(ident)["id"]
                except CheckpointNotFound:
                    pass
                logger.info(
                    "fetching checkpoint %s (%s) from %s", ident[:12], m.get("name"), self.api_url
                )
                with self.store.workspace() as ws:
                    work = ws / "ckpt"
                    work.mkdir()
                    url = f"{self.api_url}/api/checkpoints/{ident}/archive"
                    with client.stream("GET", url) as r:
                        if r.status_code != 200:
                            raise CheckpointError(
                                f"the API answered {r.status_code} for the archive of {ident}"
                            )
                        if r.headers.get(CHECKPOINT_ID_HEADER) != ident:
                            raise CheckpointError(
                                f"the archive is of checkpoint "
                                f"{r.headers.get(CHECKPOINT_ID_HEADER)!r}, not {ident}"
                            )
                        length = int(r.headers.get("content-length") or 0) or 1 << 62
                        reader = _StreamReader(r, length)
                        extract_tar_stream(
                            reader, work, ArchiveLimits(members=MAX_MEMBERS, expanded_bytes=length)
                        )
                    tags = m.get("tags") if isinstance(m.get("tags"), dict) else None
                    self._import(
                        lambda name: self.store.import_checkpoint(
                            work, name=name, tags=tags, mode="move", expect_id=ident
                        ),
                        str(m.get("name") or ident[:12]),
                        ident,
                    )
        except (httpx.HTTPError, FetchError, ValueError) as e:
            raise CheckpointError(
                f"cannot fetch checkpoint {ref} from {self.api_url}: {e}"
            ) from None
        except CheckpointError as e:
            if isinstance(e, CheckpointNotFound):
                raise
            cls = CheckpointMismatch if isinstance(e, ContentMismatch) else CheckpointError
            raise cls(f"fetching checkpoint {ref} from {self.api_url}: {e}") from None
        logger.info("fetched checkpoint %s into %s", ident[:12], self.store.root)
        return ident

    def fetch_dataset(self, ref: str) -> str:
        """Download dataset ``ref`` into the store, verified; returns its id.

        Raises :class:`DatasetNotFound` if the API does not know it,
        :class:`service.store.DatasetMismatch` if the file hashes to another id, and
        :class:`DatasetError` for any other failure.
        """
        try:
            with self._client() as client:
                m = self._manifest(client, "dataset", ref)
                ident = m["id"]
                try:
                    return self.store.get_dataset(ident)["id"]
                except DatasetNotFound:
                    pass
                fmt = str(m.get("format") or "")
                if fmt not in ("jsonl", "csv", "tsv"):
                    raise DatasetError(f"dataset {ident} has an unknown format {fmt!r}")
                logger.info("fetching dataset %s from %s", ident[:12], self.api_url)
                with self.store.workspace() as ws:
                    target = ws / f"data.{fmt}"
                    with client.stream("GET", f"{self.api_url}/api/datasets/{ident}/file") as r:
                        if r.status_code != 200:
                            raise DatasetError(
                                f"the API answered {r.status_code} for the file of {ident}"
                            )
                        if r.headers.get(DATASET_ID_HEADER) != ident:
                            raise DatasetError(
                                f"the file is of dataset {r.headers.get(DATASET_ID_HEADER)!r}, "
                                f"not {ident}"
                            )
                        with open(target, "xb") as out:
                            for chunk in r.iter_bytes(_CHUNK):
                                out.write(chunk)
                    task = m.get("task") if m.get("task") in (m.get("tasks") or []) else None
                    name = str(m.get("name") or f"{ident[:12]}.{fmt}")
                    self._import(
                        lambda n: self.store.import_dataset(
                            target, name=n, task=task, move=True, expect_id=ident
                        ),
                        name,
                        ident,
                    )
        except (httpx.HTTPError, ValueError) as e:
            raise DatasetError(f"cannot fetch dataset {ref} from {self.api_url}: {e}") from None
        except DatasetError as e:
            if isinstance(e, DatasetNotFound):
                raise
            cls = DatasetMismatch if isinstance(e, ContentMismatch) else DatasetError
            raise cls(f"fetching dataset {ref} from {self.api_url}: {e}") from None
        logger.info("fetched dataset %s into %s", ident[:12], self.store.root)
        return ident

    @staticmethod
    def _import(add: Any, name: str, ident: str) -> None:
        """Add under the server's name; if this store uses the name for other content,
        under ``name@<id prefix>`` instead."""
        try:
            add(name)
        except NameTaken:
            add(f"{name}@{ident[:12]}")
