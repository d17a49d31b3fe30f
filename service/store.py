"""The on-disk store: content-addressed checkpoints and datasets, and finished runs.

Layout under ``root``::

    checkpoints/<sha256>/manifest.json   (+ the model files, or a "path" to a registered dir)
    datasets/<sha256>/manifest.json      (+ data.jsonl | data.csv | data.tsv)
    runs/<run_id>.json                   finished result documents
    runs/index.json                      the runs list: one entry per document (rebuilt
                                         from the documents when missing or corrupt)
    tmp/                                 uploads and imports in progress

Everything enters the store the same way: it is validated first, a manifest is
written beside it inside ``tmp/``, and only then is the folder renamed into place
(one atomic ``rename``). A failure at any step removes the temporary folder, so a
refused or aborted import leaves nothing behind.

Identity: a checkpoint id is ``sha256`` over its weight files (sorted by name, each
as ``name \\0 size \\0 bytes``) followed by ``config.json``; a dataset id is the
``sha256`` of its file. The same content added twice is stored once.

References: wherever an id is accepted, so is a name or a unique id prefix of at
least :data:`MIN_PREFIX` hex characters.

This module is part of the core: filesystem only, no web or queue imports. Its parts:
:mod:`service.files` (walking folders on the server's disk), :mod:`service.validation`
(what a checkpoint must pass), :mod:`service.datasets` (dataset formats and scans); the
store's exceptions are in :mod:`service.errors`. Their names stay importable from here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from basin import strict_json
from basin.adapters import (
    ADAPTER_CONFIG,
    adapter_meta,
    adapter_weight_file,
    is_adapter_dir,
    load_adapter_weights,
    validate_adapter,
)
from basin.checkpoints import (
    TOKENIZER_FILES,
    compare_meta,
    inspect_checkpoint,
    tensor_meta,
)
from basin.data import iter_dataset_rows
from basin.errors import BasinError, CheckpointError, DatasetError, IncompatibleCheckpoints
from basin.names import clean_name
from basin.paths import refs_of
from basin.resolve import CheckpointSource, Resolver
from service.datasets import (
    DATASET_FORMATS,
    TASK_COLUMNS,
    detect_dataset_format,
    scan_dataset,
    tasks_error,
)
from service.errors import (  # re-exported: the store's callers import them here too
    CheckpointMismatch,
    CheckpointNotFound,
    Conflict,
    ContentMismatch,
    DatasetMismatch,
    DatasetNotFound,
    NameTaken,
    NotFound,
    QuotaExceeded,
    UnsafeSource,
)
from service.files import (
    MAX_SOURCE_FILES,
    allowed_source,
    copy_source,
    open_regular,
    scan_source,
    used_bytes,
)
from service.validation import (
    checkpoint_digest,
    file_digest,
    parameter_groups,
    validate_config,
    validate_model_dir,
    validate_safetensors,
)

logger = logging.getLogger(__name__)

#: Shortest id prefix accepted as a reference (shorter ones are too easy to mistype).
MIN_PREFIX = 8
#: Files copied next to a bare ``.safetensors`` from its config checkpoint.
CONFIG_FILES = (
    "config.json",
    "generation_config.json",
    "special_tokens_map.json",
    *TOKENIZER_FILES,
)

_NAME_RE = re.compile(r"^[^\x00-\x1f/\\]{1,200}$")
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")
_LOCK_NAME = ".lock"
_SWEPT: set[Path] = set()
_SWEPT_GUARD = threading.Lock()


def _check_expected(ident: str, expect_id: str | None, what: str) -> None:
    if expect_id is not None and ident != expect_id:
        err = CheckpointMismatch if what == "checkpoint" else DatasetMismatch
        raise err(f"the {what}'s content hashes to {ident}, not the requested id {expect_id}")


@dataclass(frozen=True)
class Added:
    """The result of an import: the manifest, and whether it is new (False: deduplicated)."""

    manifest: dict[str, Any]
    created: bool


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _check_name(name: str, what: str) -> str:
    """A checkpoint's or dataset's name, normalised by :func:`basin.names.clean_name` (NFKC,
    no control / zero-width / bidi characters, trimmed, at most 200 characters), no '/' or '\\'."""
    err = CheckpointError if what == "checkpoint" else DatasetError
    name = clean_name(name, f"{what} name", error=err)
    if not _NAME_RE.match(name):
        raise err(f"invalid {what} name {name!r}: 1-200 printable characters, no '/' or '\\'")
    return name


def _check_tags(tags: dict | None, *, allow_null: bool = False) -> dict[str, Any]:
    """Tags are a JSON object; ``seed`` and ``step`` must be integers, ``task`` a string."""
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        raise CheckpointError(f"tags must be a JSON object, got {type(tags).__name__}")
    out: dict[str, Any] = {}
    for k, v in tags.items():
        if not isinstance(k, str) or not k:
            raise CheckpointError(f"tag names must be non-empty strings, got {k!r}")
        if v is None:  # on PATCH a null removes the tag; on creation it means "not set"
            if allow_null:
                out[k] = None
            continue
        if k in ("seed", "step") and (not isinstance(v, int) or isinstance(v, bool)):
            raise CheckpointError(f"tag {k!r} must be an integer, got {v!r}")
        if k == "task" and not isinstance(v, str):
            raise CheckpointError(f"tag 'task' must be a string, got {v!r}")
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError):
            raise CheckpointError(
                f"tag {k!r} is not JSON-serialisable (numbers must be finite: no NaN or Infinity)"
            ) from None
        out[k] = v
    return out


def _merge_tags(old: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge-patch (RFC 7396) on a flat object: ``null`` removes a tag."""
    new = dict(old)
    for k, v in patch.items():
        if v is None:
            new.pop(k, None)
        else:
            new[k] = v
    return new


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            # strict JSON: a diverged point's inf/nan metric is written as null
            f.write(strict_json.dumps(obj, indent=1, sort_keys=False))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _dir_size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        if p.is_file():
            total += p.stat().st_size
    return total


def _files_of(path: Path) -> dict[str, int]:
    """Relative path → size of the files of a folder the store itself wrote."""
    return {
        p.relative_to(path).as_posix(): p.stat().st_size
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != "manifest.json"
    }


# ----------------------------------------------------------------------------- the store


class StoreResolver:
    """A :class:`~basin.resolve.Resolver` over a :class:`Store`: ids, id prefixes or names."""

    def __init__(self, store: Store):
        self.store = store

    def checkpoint(self, ref: str) -> CheckpointSource:
        """The files of a stored checkpoint; ``id`` is its sha256."""
        m = self.store.get_checkpoint(ref)
        if m.get("adapter"):  # a PEFT adapter: the base's files, the adapter's folder
            base = self.checkpoint(m["base"])
            return CheckpointSource(
                weights=base.weights, config_dir=base.config_dir, id=m["id"],
                adapter=Path(m["path"]), base_id=base.id,
            )
        return CheckpointSource(
            weights=Path(m["weights"]), config_dir=Path(m["config_dir"]), id=m["id"]
        )

    def dataset(self, ref: str) -> Path:
        """The data file of a stored dataset."""
        return Path(self.store.get_dataset(ref)["path"])

    def artefact(self, ref: str) -> Path:
        """The folder of a stored artefact (a subspace's projections)."""
        return Path(self.store.get_artefact(ref)["path"])


class Store:
    """Checkpoints, datasets and finished runs under one folder (see the module doc).

    Safe to share between processes: every write is a rename of a complete folder or
    file, and name checks + renames happen under an ``flock`` on ``root/.lock``.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser().resolve()
        self.checkpoints_dir = self.root / "checkpoints"
        self.datasets_dir = self.root / "datasets"
        self.runs_dir = self.root / "runs"
        self.tmp_dir = self.root / "tmp"
        self.artefacts_dir = self.root / "artefacts"
        for d in (self.checkpoints_dir, self.datasets_dir, self.runs_dir, self.tmp_dir, self.artefacts_dir):
            d.mkdir(parents=True, exist_ok=True)
        with _SWEPT_GUARD:  # once per process and store: what a crash left in tmp/ goes
            first = self.root not in _SWEPT
            _SWEPT.add(self.root)
        if first:
            self.sweep_tmp()

    # ------------------------------------------------------------------ helpers

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def workspace(self) -> Iterator[Path]:
        """A fresh folder under ``tmp/``, removed with everything in it on exit.

        While it lives, its process holds an ``flock`` on ``<ws>/.lock``, so
        :meth:`sweep_tmp` in another process leaves it alone. The folder is created as
        ``.new-*``, locked, and only then renamed to ``ws-*``: a ``ws-*`` folder whose lock
        can be taken belongs to nobody (its process died).
        """
        key = uuid.uuid4().hex
        staging = self.tmp_dir / f".new-{key}"
        staging.mkdir()
        fd = os.open(staging / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            ws = self.tmp_dir / f"ws-{key}"
            os.rename(staging, ws)
            try:
                yield ws
            finally:
                shutil.rmtree(ws, ignore_errors=True)
        finally:
            os.close(fd)
            shutil.rmtree(staging, ignore_errors=True)

    def sweep_tmp(self) -> list[str]:
        """Remove what dead processes left in ``tmp/``; returns the names removed.

        A ``ws-*`` workspace goes when its lock can be taken (no live process holds it)
        or it has no lock file; ``del-*`` folders (deletions cut short) always go; a
        ``.new-*`` folder only when its lock can be taken. Run once per process when a
        :class:`Store` over this root is first made (the API's and workers' start).
        """
        removed = []
        for entry in sorted(self.tmp_dir.iterdir()):
            name = entry.name
            if name.startswith("del-"):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(name)
                continue
            if not name.startswith(("ws-", ".new-")) or entry.is_symlink() or not entry.is_dir():
                continue
            try:
                fd = os.open(entry / _LOCK_NAME, os.O_RDWR | os.O_NOFOLLOW)
            except FileNotFoundError:
                if name.startswith("ws-"):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(name)
                continue
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live upload or import in another process (or this one)
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(name)
            finally:
                os.close(fd)
        if removed:
            logger.info("removed %d leftover workspace(s) from %s", len(removed), self.tmp_dir)
        return removed

    def used_bytes(self) -> int:
        """What counts against the quota: the stored checkpoints', datasets' and artefacts' files
        (a folder registered in place counts nothing) plus everything under ``tmp/``."""
        total = used_bytes(self.tmp_dir)
        for base in (self.checkpoints_dir, self.datasets_dir, self.artefacts_dir):
            for d in base.iterdir():
                m = self._read_manifest(d)
                if m is not None and m.get("source") != "register":
                    total += int(m.get("size_bytes") or 0)
        return total

    def free_bytes(self, quota: int | None) -> int | None:
        """Bytes left under ``quota`` (never negative); ``None`` when there is no quota."""
        if quota is None:
            return None
        return max(0, quota - self.used_bytes())

    def _discard(self, path: Path) -> None:
        """Remove a stored folder: rename it away first, so it vanishes at once."""
        trash = self.tmp_dir / f"del-{uuid.uuid4().hex}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def _read_manifests(self, base: Path) -> list[dict[str, Any]]:
        out = []
        for d in base.iterdir():
            m = self._read_manifest(d)
            if m is not None:
                out.append(m)
        out.sort(key=lambda m: m.get("created", ""), reverse=True)
        return out

    def _read_manifest(self, d: Path) -> dict[str, Any] | None:
        try:
            m = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            logger.warning("skipping unreadable manifest in %s: %s", d, e)
            return None
        return self._with_paths(d, m)

    def _with_paths(self, d: Path, m: dict[str, Any]) -> dict[str, Any]:
        """Fill in absolute paths for items stored inside the store (they move with it)."""
        if m.get("kind") == "checkpoint" and m.get("source") != "register":
            m["path"] = str(d)
            m["weights"] = str(d)
            m["config_dir"] = str(d)
        elif m.get("kind") in ("dataset",):
            m["path"] = str(d / m["file"])
        elif m.get("kind") == "artefact":
            m["path"] = str(d / "files")
        return m

    def _find(self, base: Path, ref: str, what: str, not_found: type[BasinError]) -> Path:
        if not isinstance(ref, str) or not ref:
            raise not_found(f"no {what} reference given")
        if _HEX_RE.match(ref) and len(ref) == 64 and (base / ref / "manifest.json").is_file():
            return base / ref
        read = [(d, self._read_manifest(d)) for d in base.iterdir()]
        manifests = [(d, m) for d, m in read if m is not None]
        named = [d for d, m in manifests if m.get("name") == ref]
        if len(named) == 1:
            return named[0]
        if _HEX_RE.match(ref) and len(ref) >= MIN_PREFIX:
            hits = [d for d, _ in manifests if d.name.startswith(ref)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise not_found(
                    f"{what} id prefix {ref!r} is ambiguous: matches {len(hits)} {what}s"
                )
        hint = (
            f" (an id prefix needs at least {MIN_PREFIX} characters)" if _HEX_RE.match(ref) else ""
        )
        raise not_found(f"no {what} named or with id {ref!r}{hint}")

    def _name_owner(self, base: Path, name: str) -> str | None:
        for d in base.iterdir():
            m = self._read_manifest(d)
            if m is not None and m.get("name") == name:
                return d.name
        return None

    # ------------------------------------------------------------------ checkpoints

    def list_checkpoints(self) -> list[dict[str, Any]]:
        """All checkpoint manifests, newest first."""
        return self._read_manifests(self.checkpoints_dir)

    def get_checkpoint(self, ref: str) -> dict[str, Any]:
        """A checkpoint manifest by id, unique id prefix (≥8) or name.

        Raises :class:`CheckpointNotFound` (a :class:`CheckpointError`) if none matches.
        A Hub reference ``hf:org/name@revision`` names the checkpoint fetched from there
        (:meth:`find_hub_checkpoint`: by its pinned commit, or the revision asked).
        """
        if isinstance(ref, str) and ref.startswith("hf:"):
            return self._hub_checkpoint(ref)
        d = self._find(self.checkpoints_dir, ref, "checkpoint", CheckpointNotFound)
        m = self._read_manifest(d)
        if m is None:  # deleted between the lookup and the read
            raise CheckpointNotFound(f"no checkpoint named or with id {ref!r}")
        return m

    def find_hub_checkpoint(self, repo: str, revision: str) -> dict[str, Any] | None:
        """The newest checkpoint fetched from Hub repository ``repo`` (tag ``hub_repo``) whose
        pinned commit (``hub_revision``) is ``revision`` (a full sha, or a prefix of at least 7
        hex digits) or that was asked for as ``revision`` (``hub_ref``: ``main``, a tag)."""
        rev = revision.lower()
        for m in self.list_checkpoints():  # newest first
            t = m.get("tags") or {}
            if t.get("hub_repo") != repo:
                continue
            pinned = str(t.get("hub_revision") or "")
            if pinned == rev or (len(rev) >= 7 and _HEX_RE.match(rev) and pinned.startswith(rev)) \
                    or t.get("hub_ref") == revision:
                return m
        return None

    def _hub_checkpoint(self, ref: str) -> dict[str, Any]:
        from basin.hub import parse_hub_ref

        hub = parse_hub_ref(ref)
        m = self.find_hub_checkpoint(hub.repo, hub.revision)
        if m is None:
            raise CheckpointNotFound(
                f"{ref} is not in the store yet: fetch it first (Checkpoints page → From the Hugging Face Hub, "
                f'or POST /api/checkpoints/hub with {{"ref": "{hub}"}}), then run this spec again'
            )
        return m

    def checkpoint_summary(self, ref: str) -> dict[str, Any]:
        """Parameter summary of a stored checkpoint (:func:`parameter_groups`), headers only."""
        src = self.resolver().checkpoint(ref)
        if src.adapter is not None:  # the adapter's own tensors
            return parameter_groups(adapter_meta(src.adapter))
        return parameter_groups(tensor_meta(src))

    def add_checkpoint_dir(
        self, src: Path, *, name: str, tags: dict | None = None, copy: bool = True
    ) -> dict[str, Any]:
        """Add a Hugging Face model directory; returns its manifest (the existing one if known).

        ``copy=True`` copies the directory into the store; ``copy=False`` registers it
        in place (the manifest points at ``src``; deleting the checkpoint later never
        touches ``src``).
        """
        mode = "copy" if copy else "register"
        return self.import_checkpoint(src, name=name, tags=tags, mode=mode).manifest

    def import_checkpoint(
        self,
        src: Path,
        *,
        name: str,
        tags: dict | None = None,
        mode: str = "copy",
        base: str | None = None,
        expect_id: str | None = None,
        roots: Sequence[Path] | None = None,
        quota: int | None = None,
        source: str | None = None,
    ) -> Added:
        """Validate and add a model directory; ``mode`` is ``copy``, ``move`` or ``register``.

        ``move`` renames ``src`` into the store (it must be on the store's filesystem,
        e.g. an extracted upload under ``tmp/``). Returns :class:`Added` with
        ``created=False`` when the same weights + config are already stored (nothing is
        added then). Raises :class:`CheckpointError` for invalid input,
        :class:`NameTaken` when another checkpoint has ``name``. With ``expect_id`` (a
        download that must be this checkpoint), content hashing to another id is refused
        with :class:`ContentMismatch` before anything enters the store.

        For ``copy`` and ``register`` the folder is scanned first (:func:`scan_source`):
        a link, device, FIFO or socket anywhere in it refuses it (:class:`UnsafeSource`)
        before anything is read or copied, and only its regular files are copied, opened
        without following links, their bytes counted against ``quota`` (the store's total,
        :class:`QuotaExceeded`). A folder with ``adapter_config.json`` is a PEFT adapter: it is
        stored on the base checkpoint ``base`` (a reference; default: the checkpoint named like
        its ``base_model_name_or_path``, :meth:`adapter_base`) after :func:`basin.adapters.validate_adapter`
        checked that its target modules exist in the base and its tensors' names and shapes fit.
        ``roots``: the folders a server allows registering from;
        ``src`` is resolved and must lie inside one (:meth:`allowed_source`).
        ``source``: what the manifest records as its origin instead of ``upload`` (``hub``).
        """
        name = _check_name(name, "checkpoint")
        tags = _check_tags(tags)
        if mode not in ("copy", "move", "register"):
            raise ValueError(f"mode must be copy, move or register, not {mode!r}")
        src = allowed_source(src, roots) if roots is not None else Path(src).resolve()
        if not src.is_dir():
            raise CheckpointError(f"{src} is not a directory")
        source_files = scan_source(src) if mode != "move" else _files_of(src)
        with self.workspace() as ws:
            if mode == "copy":
                need = sum(source_files.values())
                free = self.free_bytes(quota)
                if free is not None and need > free:
                    raise QuotaExceeded(
                        f"the folder holds {need:,} bytes but the store has {free:,} left under "
                        "its quota (BASIN_MAX_STORE_BYTES)"
                    )
                work = ws / "ckpt"
                try:
                    copy_source(src, source_files, work, [free if free is not None else sys.maxsize])
                except OSError as e:
                    raise CheckpointError(f"cannot copy {src.name}: {e.strerror or e}") from None
            else:
                work = src
            if is_adapter_dir(work):  # a PEFT adapter on a stored base (basin.adapters)
                manifest = self._adapter_manifest(work, base, name=name, tags=tags)
                ident = manifest["id"]
                _check_expected(ident, expect_id, "checkpoint")
            else:
                files = validate_model_dir(work)
                ident = checkpoint_digest(files, work / "config.json")
                _check_expected(ident, expect_id, "checkpoint")
                info = inspect_checkpoint(work)
                manifest = {
                    "id": ident,
                    "name": name,
                    "kind": "checkpoint",
                    "architecture": info.architecture,
                    "model_type": info.model_type,
                    "num_parameters": info.num_parameters,
                    "num_tensors": info.num_tensors,
                    "dtype": info.dtype,
                    "format": info.format,
                    "has_tokenizer": info.has_tokenizer,
                    "num_labels": info.num_labels,
                    "tags": tags,
                    "created": _now(),
                    "size_bytes": _dir_size(work),
                    "base": base,
                }
            manifest["source"] = "register" if mode == "register" else (source or "upload")
            manifest["files"] = source_files if mode == "register" else _files_of(work)
            if mode == "register":
                manifest.update(path=str(src), weights=str(src), config_dir=str(src))
                staged = ws / "entry"
                staged.mkdir()
            else:
                staged = work
            _write_json_atomic(staged / "manifest.json", manifest)
            final = self.checkpoints_dir / ident
            with self._lock():
                if (final / "manifest.json").is_file():
                    if mode == "move":
                        (work / "manifest.json").unlink(missing_ok=True)
                    logger.info("checkpoint %s already stored; not added again", ident[:12])
                    return Added(self.get_checkpoint(ident), created=False)
                owner = self._name_owner(self.checkpoints_dir, name)
                if owner is not None:
                    if mode == "move":
                        (work / "manifest.json").unlink(missing_ok=True)
                    raise NameTaken(f"checkpoint name {name!r} is already used by {owner[:12]}")
                base_id = manifest.get("base") if manifest.get("adapter") else None
                if base_id and not (self.checkpoints_dir / base_id / "manifest.json").is_file():
                    # the base was deleted while the adapter was checked (delete_checkpoint
                    # takes this lock too): storing it now would leave an adapter on nothing
                    if mode == "move":
                        (work / "manifest.json").unlink(missing_ok=True)
                    raise Conflict(
                        f"the base checkpoint {manifest.get('base_name') or base_id[:12]!r} was deleted while "
                        "the adapter was being checked: upload the base again, then the adapter"
                    )
                os.rename(staged, final)
        logger.info("added checkpoint %s (%s) as %s", name, mode, ident[:12])
        return Added(self.get_checkpoint(ident), created=True)

    def add_safetensors(
        self, file: Path, *, config_ref: str, name: str, tags: dict | None = None
    ) -> dict[str, Any]:
        """Add a bare ``.safetensors`` state dict with the config of a stored checkpoint.

        Its keys and shapes must match the config checkpoint's
        (:class:`IncompatibleCheckpoints` names the mismatched tensors). The stored
        folder holds ``model.safetensors`` and the config checkpoint's config and
        tokenizer files, so it is a complete model directory.
        """
        return self.import_safetensors(file, config_ref=config_ref, name=name, tags=tags).manifest

    def import_safetensors(
        self,
        file: Path,
        *,
        config_ref: str,
        name: str,
        tags: dict | None = None,
        move: bool = False,
    ) -> Added:
        """Like :meth:`add_safetensors`, returning :class:`Added`; ``move`` renames ``file``."""
        name = _check_name(name, "checkpoint")
        tags = _check_tags(tags)
        file = Path(file)
        validate_safetensors(file)
        base = self.resolver().checkpoint(config_ref)
        with self.workspace() as ws:
            work = ws / "ckpt"
            work.mkdir()
            for f in CONFIG_FILES:  # never through a link swapped into a registered folder
                try:
                    fd = open_regular(base.config_dir, f)
                except FileNotFoundError:
                    continue
                except UnsafeSource as e:
                    raise CheckpointError(
                        f"the config checkpoint {config_ref!r} cannot lend its files: {e}"
                    ) from None
                with os.fdopen(fd, "rb") as src, open(work / f, "xb") as out:
                    shutil.copyfileobj(src, out)
            target = work / "model.safetensors"
            if move:
                os.rename(file, target)
            else:
                shutil.copyfile(file, target)
            mismatches = compare_meta(
                [(base.id[:12], tensor_meta(base)), ("upload", tensor_meta(work))]
            )
            if mismatches:
                head = "; ".join(f"{k}: {why}" for k, why in mismatches[:5])
                raise IncompatibleCheckpoints(
                    f"the weights do not fit the config checkpoint {config_ref!r}: "
                    f"{len(mismatches)} mismatched tensor(s): {head}",
                    mismatches,
                )
            return self.import_checkpoint(work, name=name, tags=tags, mode="move", base=base.id)

    def adapter_base(self, adapter_dir: Path, base: str | None) -> dict[str, Any]:
        """The manifest of the base checkpoint of an adapter folder.

        ``base`` (an id, id prefix or name) when given; else the checkpoint named like the
        adapter's ``base_model_name_or_path`` (in full, or its last path component:
        ``sentence-transformers/all-MiniLM-L6-v2`` → ``all-MiniLM-L6-v2``). A base that is
        itself an adapter is refused.
        """
        from basin.adapters import read_adapter_config

        m: dict[str, Any] | None = None
        if base:
            m = self.get_checkpoint(base)
        else:
            named = read_adapter_config(adapter_dir).get("base_model_name_or_path")
            for cand in ([named, Path(str(named)).name] if isinstance(named, str) and named else []):
                try:
                    m = self.get_checkpoint(cand)
                    break
                except CheckpointNotFound:
                    continue
            if m is None:
                raise CheckpointError(
                    f"the adapter's base_model_name_or_path ({named!r}) names no checkpoint in the store: "
                    "upload its base model first, or pick the base (base=<checkpoint id or name>)"
                )
        assert m is not None
        if m.get("adapter"):
            raise CheckpointError(f"the base {m['name']!r} is itself an adapter: pick a full model checkpoint")
        return m

    def _adapter_manifest(
        self, work: Path, base: str | None, *, name: str, tags: dict[str, Any]
    ) -> dict[str, Any]:
        """Validate an adapter folder against its base and describe it (see :meth:`import_checkpoint`)."""
        weights = adapter_weight_file(work)
        if weights.suffix == ".safetensors":
            validate_safetensors(weights)
        else:
            load_adapter_weights(work)  # torch.load(weights_only=True): a pickle with code is refused
        bm = self.adapter_base(work, base)
        base_src = self.resolver().checkpoint(bm["id"])
        info = validate_adapter(work, base_src, base_name=bm["name"])
        h = hashlib.sha256()
        for f in (weights, work / ADAPTER_CONFIG):
            h.update(f.name.encode() + b"\0" + str(f.stat().st_size).encode() + b"\0")
            h.update(f.read_bytes())
        h.update(b"base\0" + bm["id"].encode())
        adapter = {k: v for k, v in info.to_dict().items() if k != "config"}
        return {
            "id": h.hexdigest(),
            "name": name,
            "kind": "checkpoint",
            "architecture": bm.get("architecture"),
            "model_type": bm.get("model_type"),
            "num_parameters": info.num_parameters,
            "num_tensors": info.num_tensors,
            "dtype": info.dtype,
            "format": f"adapter ({info.format})",
            "has_tokenizer": bm.get("has_tokenizer", False),
            "num_labels": bm.get("num_labels"),
            "tags": tags,
            "created": _now(),
            "size_bytes": _dir_size(work),
            "base": bm["id"],
            "base_name": bm["name"],
            "adapter": adapter,
        }

    def update_checkpoint(
        self, ref: str, *, name: str | None = None, tags: dict | None = None
    ) -> dict[str, Any]:
        """Rename and/or merge tags (a ``None`` tag value removes that tag); returns the manifest."""
        new_name = _check_name(name, "checkpoint") if name is not None else None
        patch = _check_tags(tags, allow_null=True) if tags is not None else None
        with self._lock():
            d = self._find(self.checkpoints_dir, ref, "checkpoint", CheckpointNotFound)
            raw = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
            if new_name is not None and new_name != raw["name"]:
                owner = self._name_owner(self.checkpoints_dir, new_name)
                if owner is not None and owner != d.name:
                    raise NameTaken(f"checkpoint name {new_name!r} is already used by {owner[:12]}")
                raw["name"] = new_name
            if patch is not None:
                raw["tags"] = _merge_tags(raw.get("tags") or {}, patch)
            _write_json_atomic(d / "manifest.json", raw)
        return self.get_checkpoint(d.name)

    def delete_checkpoint(self, ref: str) -> None:
        """Remove a checkpoint; a registered one loses only its entry, never its files."""
        with self._lock():
            d = self._find(self.checkpoints_dir, ref, "checkpoint", CheckpointNotFound)
            users = [m["name"] for m in self._read_manifests(self.checkpoints_dir)
                     if m.get("adapter") and m.get("base") == d.name]
            if users:
                raise Conflict(
                    f"checkpoint {d.name[:12]} is the base of {len(users)} adapter(s) "
                    f"({', '.join(users[:5])}): delete those first"
                )
            self._discard(d)
        logger.info("deleted checkpoint %s", d.name[:12])

    # ------------------------------------------------------------------ artefacts

    def list_artefacts(self) -> list[dict[str, Any]]:
        """All artefact manifests (a subspace's projections, ...), newest first."""
        return self._read_manifests(self.artefacts_dir)

    def get_artefact(self, ref: str) -> dict[str, Any]:
        """An artefact manifest by id, unique id prefix or name; :class:`CheckpointNotFound` if none."""
        d = self._find(self.artefacts_dir, ref, "artefact", CheckpointNotFound)
        m = self._read_manifest(d)
        if m is None:
            raise CheckpointNotFound(f"no artefact named or with id {ref!r}")
        return m

    def import_artefact(self, folder: Path, *, name: str, type: str, tags: dict | None = None) -> dict[str, Any]:
        """Move a folder of plain files (no sub-folders) in as an artefact of ``type``; its id is the
        sha256 over its files (sorted, ``name \\0 size \\0 bytes``); the same content is stored once."""
        name = _check_name(name, "artefact")
        tags = _check_tags(tags)
        files = sorted(p for p in Path(folder).iterdir())
        if not files or any(not p.is_file() or p.is_symlink() for p in files):
            raise CheckpointError(f"an artefact is a folder of plain files; {Path(folder).name} is not")
        h = hashlib.sha256()
        for p in files:
            h.update(p.name.encode() + b"\0" + str(p.stat().st_size).encode() + b"\0")
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        ident = h.hexdigest()
        dest = self.artefacts_dir / ident
        with self._lock():
            if (dest / "manifest.json").is_file():
                return self.get_artefact(ident)
            owner = self._name_owner(self.artefacts_dir, name)
            if owner is not None:
                name = f"{name} {ident[:8]}"
            with self.workspace() as ws:
                stage = ws / ident
                (stage / "files").mkdir(parents=True)
                for p in files:
                    shutil.move(str(p), stage / "files" / p.name)
                manifest = {"id": ident, "kind": "artefact", "type": type, "name": name, "tags": tags,
                            "created": _now(), "size_bytes": sum(p.stat().st_size for p in (stage / "files").iterdir()),
                            "files": sorted(p.name for p in (stage / "files").iterdir())}
                _write_json_atomic(stage / "manifest.json", manifest)
                os.rename(stage, dest)
        return self.get_artefact(ident)

    # ------------------------------------------------------------------ datasets

    def list_datasets(self) -> list[dict[str, Any]]:
        """All dataset manifests, newest first."""
        return self._read_manifests(self.datasets_dir)

    def get_dataset(self, ref: str) -> dict[str, Any]:
        """A dataset manifest by id, unique id prefix (≥8) or name; :class:`DatasetNotFound` if none."""
        d = self._find(self.datasets_dir, ref, "dataset", DatasetNotFound)
        m = self._read_manifest(d)
        if m is None:
            raise DatasetNotFound(f"no dataset named or with id {ref!r}")
        return m

    def add_dataset(self, file: Path, *, name: str, task: str | None = None) -> dict[str, Any]:
        """Validate and copy a ``.jsonl`` / ``.csv`` / ``.tsv`` dataset in; returns its manifest.

        The format comes from ``name``'s suffix (else the file's, else its content).
        ``task``, if given, must be one the columns allow.
        """
        return self.import_dataset(file, name=name, task=task).manifest

    def import_dataset(
        self,
        file: Path,
        *,
        name: str,
        task: str | None = None,
        move: bool = False,
        expect_id: str | None = None,
    ) -> Added:
        """Like :meth:`add_dataset`, returning :class:`Added`; ``move`` renames ``file``.

        With ``expect_id``, a file whose sha256 differs is refused (:class:`ContentMismatch`).
        """
        name = _check_name(name, "dataset")
        file = Path(file)
        if not file.is_file():
            raise DatasetError(f"{file} is not a file")
        fmt = (
            detect_dataset_format(name)
            if Path(name).suffix.lower().lstrip(".") in (*DATASET_FORMATS, "json", "ndjson")
            else detect_dataset_format(file.name, file)
        )
        scan = scan_dataset(file, fmt)
        if not scan["tasks"]:
            raise DatasetError(tasks_error(scan["columns"]))
        if task is not None and task not in scan["tasks"]:
            raise DatasetError(
                f"the dataset cannot serve task {task!r}: {task} needs columns "
                f"{', '.join(TASK_COLUMNS.get(task, ('?',)))}; found {', '.join(scan['columns'])}"
            )
        ident = file_digest(file)
        _check_expected(ident, expect_id, "dataset")
        with self.workspace() as tmp:
            ws = tmp / "entry"
            ws.mkdir()
            data_name = f"data.{fmt}"
            if move:
                os.rename(file, ws / data_name)
            else:
                shutil.copyfile(file, ws / data_name)
            manifest = {
                "id": ident,
                "name": name,
                "kind": "dataset",
                "format": fmt,
                "columns": scan["columns"],
                "rows": scan["rows"],
                "tasks": scan["tasks"],
                "task": task,
                "file": data_name,
                "size_bytes": (ws / data_name).stat().st_size,
                "created": _now(),
            }
            _write_json_atomic(ws / "manifest.json", manifest)
            final = self.datasets_dir / ident
            with self._lock():
                if (final / "manifest.json").is_file():
                    return Added(self.get_dataset(ident), created=False)
                owner = self._name_owner(self.datasets_dir, name)
                if owner is not None:
                    raise NameTaken(f"dataset name {name!r} is already used by {owner[:12]}")
                os.rename(ws, final)
        logger.info("added dataset %s as %s", name, ident[:12])
        return Added(self.get_dataset(ident), created=True)

    def update_dataset(
        self, ref: str, *, name: str | None = None, task: str | None = None
    ) -> dict[str, Any]:
        """Rename a dataset and/or set its default task (one its columns allow)."""
        new_name = _check_name(name, "dataset") if name is not None else None
        with self._lock():
            d = self._find(self.datasets_dir, ref, "dataset", DatasetNotFound)
            raw = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
            if new_name is not None and new_name != raw["name"]:
                owner = self._name_owner(self.datasets_dir, new_name)
                if owner is not None and owner != d.name:
                    raise NameTaken(f"dataset name {new_name!r} is already used by {owner[:12]}")
                raw["name"] = new_name
            if task is not None:
                if task not in raw["tasks"]:
                    raise DatasetError(
                        f"the dataset cannot serve task {task!r}; its columns allow {raw['tasks']}"
                    )
                raw["task"] = task
            _write_json_atomic(d / "manifest.json", raw)
        return self.get_dataset(d.name)

    def delete_dataset(self, ref: str) -> None:
        """Remove a dataset and its file."""
        with self._lock():
            d = self._find(self.datasets_dir, ref, "dataset", DatasetNotFound)
            self._discard(d)
        logger.info("deleted dataset %s", d.name[:12])

    def preview_dataset(self, ref: str, n: int = 10) -> dict[str, Any]:
        """The first ``n`` (1..1000) rows: ``{id, name, columns, rows: [dict], total}``."""
        m = self.get_dataset(ref)
        n = max(1, min(int(n), 1000))
        rows = []
        for row in iter_dataset_rows(Path(m["path"]), m["format"]):
            rows.append(row)
            if len(rows) >= n:
                break
        return {
            "id": m["id"],
            "name": m["name"],
            "columns": m["columns"],
            "rows": rows,
            "total": m["rows"],
        }

    # ------------------------------------------------------------------ resolver

    def resolver(self) -> Resolver:
        """Store references (ids, unique prefixes, names) → checkpoint sources / dataset files."""
        return StoreResolver(self)

    # ------------------------------------------------------------------ runs

    def _run_path(self, run_id: str) -> Path:
        if (not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id)
                or run_id == RUNS_INDEX.removesuffix(".json")):
            raise BasinError(f"invalid run id {run_id!r}")
        return self.runs_dir / f"{run_id}.json"

    @property
    def runs_index_path(self) -> Path:
        return self.runs_dir / RUNS_INDEX

    def save_run(self, run_id: str, doc: dict) -> Path:
        """Write a finished run's result document to ``runs/<run_id>.json`` (atomic replace)
        and its entry to the runs index (under the store lock)."""
        path = self._run_path(run_id)
        _write_json_atomic(path, doc)
        entry = run_index_entry(run_id, doc)
        with self._lock():
            runs = self._read_runs_index()
            if runs is None:
                runs = self._rebuild_runs_index()
            runs[run_id] = entry
            self._write_runs_index(runs)
        return path

    def load_run(self, run_id: str) -> dict | None:
        """A stored run document, or ``None`` if there is none, the id is malformed or the
        document is damaged (logged)."""
        try:
            path = self._run_path(run_id)
        except BasinError:
            return None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            logger.warning("run document %s is unreadable: %s", path.name, e)
            return None
        return doc if isinstance(doc, dict) else None

    def has_run(self, run_id: str) -> bool:
        """Whether a document of ``run_id`` is stored (readable or not)."""
        try:
            return self._run_path(run_id).exists()
        except BasinError:
            return False

    def list_runs(self) -> list[dict[str, Any]]:
        """Index entries of the stored runs, newest first (see :func:`run_index_entry`).

        Read from ``runs/index.json``, not from the documents; the index is rebuilt from
        the documents when it is missing or unreadable, and a document that arrived by
        other means (copied in, a restored backup, an older version) is added to it
        (only file names are compared; an unreadable document is skipped with a warning).
        """
        runs = self._read_runs_index()
        names = self._run_document_names()
        if runs is None or names != runs.keys():
            with self._lock():
                runs = self._read_runs_index()  # another process may have fixed it
                if runs is None:
                    runs = self._rebuild_runs_index()
                elif names != runs.keys():
                    runs = self._reconcile_runs_index(runs)
        out = list(runs.values())
        out.sort(key=lambda r: str(r.get("created") or ""), reverse=True)
        return out

    def _run_document_names(self) -> set[str]:
        return {p.stem for p in self.runs_dir.glob("*.json")
                if p.name != RUNS_INDEX and not p.name.startswith(".") and _RUN_ID_RE.match(p.stem)}

    def _read_run_for_index(self, p: Path) -> dict[str, Any] | None:
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            logger.warning("skipping unreadable run document %s: %s", p.name, e)
            return None
        created = doc.get("created") or datetime.fromtimestamp(p.stat().st_mtime, UTC).isoformat()
        return run_index_entry(p.stem, {**doc, "created": created})

    def _reconcile_runs_index(self, runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Add documents the index lacks, drop entries whose document is gone (lock held)."""
        names = self._run_document_names()
        changed = False
        for gone in set(runs) - names:
            del runs[gone]
            changed = True
        for new in names - set(runs):
            entry = self._read_run_for_index(self.runs_dir / f"{new}.json")
            if entry is not None:
                runs[new] = entry
                changed = True
        if changed:
            self._write_runs_index(runs)
        return runs

    def delete_run(self, run_id: str) -> None:
        """Remove a stored run document and its index entry (no error if there is none)."""
        path = self._run_path(run_id)
        with self._lock():
            path.unlink(missing_ok=True)
            runs = self._read_runs_index()
            if runs is None:
                runs = self._rebuild_runs_index()
            elif run_id in runs:
                del runs[run_id]
            else:
                return
            self._write_runs_index(runs)

    def _read_runs_index(self) -> dict[str, dict[str, Any]] | None:
        """The index's entries by run id, or ``None`` when it is missing or corrupt."""
        try:
            raw = json.loads(self.runs_index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            logger.warning("the runs index %s is unreadable (%s); rebuilding it",
                           self.runs_index_path, e)
            return None
        if (not isinstance(raw, dict) or raw.get("version") != RUNS_INDEX_VERSION
                or not isinstance(raw.get("runs"), dict)):
            logger.warning("the runs index %s is malformed; rebuilding it", self.runs_index_path)
            return None
        return raw["runs"]

    def _write_runs_index(self, runs: dict[str, dict[str, Any]]) -> None:
        _write_json_atomic(self.runs_index_path, {"version": RUNS_INDEX_VERSION, "runs": runs})

    def _rebuild_runs_index(self) -> dict[str, dict[str, Any]]:
        """Read every document once and write the index (the caller holds the lock)."""
        runs: dict[str, dict[str, Any]] = {}
        for name in self._run_document_names():
            entry = self._read_run_for_index(self.runs_dir / f"{name}.json")
            if entry is not None:
                runs[name] = entry
        self._write_runs_index(runs)
        logger.info("rebuilt the runs index: %d runs", len(runs))
        return runs


#: The runs index file under ``runs/`` and its format version.
RUNS_INDEX = "index.json"
RUNS_INDEX_VERSION = 1


def run_index_entry(run_id: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A stored run's line in the runs list: ``{id, type, task, dataset, checkpoints,
    points, status, created, finished, total, error, spec, names}`` (no points)."""
    raw_spec = doc.get("spec")
    spec: dict[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
    raw_path = spec.get("path")
    path: dict[str, Any] = raw_path if isinstance(raw_path, dict) else {}
    n = len(doc.get("points") or [])
    try:
        refs = refs_of(path) if path else []
    except Exception:  # an old or odd document: list it without its checkpoints
        refs = []
    return {
        "id": run_id,
        "type": path.get("type"),
        "task": spec.get("task"),
        "dataset": spec.get("dataset"),
        "checkpoints": refs,
        "points": n,
        "status": doc.get("status", "done"),  # documents before statuses were stored: done
        "created": doc.get("created"),
        "finished": doc.get("finished"),
        "total": int(doc.get("total") or n),
        "error": doc.get("error"),
        "spec": spec,
        "names": doc.get("names") or {},
    }


__all__ = [
    "Added",
    "CheckpointMismatch",
    "CheckpointNotFound",
    "Conflict",
    "ContentMismatch",
    "DatasetMismatch",
    "DatasetNotFound",
    "MIN_PREFIX",
    "NameTaken",
    "NotFound",
    "MAX_SOURCE_FILES",
    "QuotaExceeded",
    "Store",
    "StoreResolver",
    "TASK_COLUMNS",
    "UnsafeSource",
    "allowed_source",
    "DATASET_FORMATS",
    "checkpoint_digest",
    "detect_dataset_format",
    "file_digest",
    "copy_source",
    "open_regular",
    "parameter_groups",
    "scan_dataset",
    "scan_source",
    "tasks_error",
    "validate_config",
    "used_bytes",
    "validate_model_dir",
    "validate_safetensors",
]
