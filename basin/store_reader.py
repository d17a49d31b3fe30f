"""Reading a Basin store from the core, read-only: ``basin eval --store`` runs a copied spec.

The dashboard's "Copy spec (YAML for basin eval)" writes checkpoints and datasets as store
ids (each with its name as a comment). :class:`StoreReader` resolves such references —
a 64-hex id, a unique id prefix of at least :data:`MIN_PREFIX` digits, or a name — against
the store's folder (``checkpoints/<sha256>/manifest.json``, ``datasets/<sha256>/...``, the
layout :mod:`service.store` writes), without importing any service code and without
writing anything. :class:`StoreOrFileResolver` tries a spec's reference as a path first
(relative to the spec's folder, as plain ``basin eval`` does) and then in the store, so a
spec that mixes both runs too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from basin.errors import CheckpointError, DatasetError
from basin.resolve import CheckpointSource, FileResolver

#: Shortest id prefix accepted as a reference (as the service's store).
MIN_PREFIX = 8
_HEX = re.compile(r"^[0-9a-f]+$")


class StoreReader:
    """Checkpoints and datasets of the store at ``root``, by id, unique id prefix or name."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        if not (self.root / "checkpoints").is_dir() and not (self.root / "datasets").is_dir():
            raise CheckpointError(
                f"{self.root} is not a Basin store (no checkpoints/ or datasets/ folder in it)"
            )

    def _manifests(self, kind: str) -> list[tuple[Path, dict[str, Any]]]:
        base = self.root / kind
        out = []
        for d in sorted(base.iterdir()) if base.is_dir() else []:
            try:
                m = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(m, dict):
                out.append((d, m))
        return out

    def _find(
        self, kind: str, ref: str, what: str, error: type[Exception]
    ) -> tuple[Path, dict[str, Any]]:
        base = self.root / kind
        if _HEX.match(ref) and len(ref) == 64 and (base / ref / "manifest.json").is_file():
            return base / ref, json.loads(
                (base / ref / "manifest.json").read_text(encoding="utf-8")
            )
        items = self._manifests(kind)
        named = [(d, m) for d, m in items if m.get("name") == ref]
        if len(named) == 1:
            return named[0]
        if _HEX.match(ref) and len(ref) >= MIN_PREFIX:
            hits = [(d, m) for d, m in items if d.name.startswith(ref)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise error(
                    f"{what} id prefix {ref!r} is ambiguous in the store {self.root}: "
                    f"it matches {len(hits)} {what}s"
                )
        raise error(f"no {what} named or with id {ref!r} in the store {self.root}")

    def checkpoint(self, ref: str) -> CheckpointSource:
        """The files of a stored checkpoint (registered ones where they were registered from)."""
        d, m = self._find("checkpoints", ref, "checkpoint", CheckpointError)
        ident = str(m.get("id") or d.name)
        registered = m.get("source") == "register"
        if m.get("adapter"):  # a PEFT adapter: its base's files, the adapter's own folder
            base = self.checkpoint(str(m["base"]))
            return CheckpointSource(
                weights=base.weights,
                config_dir=base.config_dir,
                id=ident,
                adapter=Path(m["path"]) if registered else d,
                base_id=base.id,
            )
        if registered:
            return CheckpointSource(
                weights=Path(m["weights"]), config_dir=Path(m["config_dir"]), id=ident
            )
        return CheckpointSource(weights=d, config_dir=d, id=ident)

    def dataset(self, ref: str) -> Path:
        """The data file of a stored dataset."""
        d, m = self._find("datasets", ref, "dataset", DatasetError)
        p = d / str(m.get("file") or "")
        if not m.get("file") or not p.is_file():
            raise DatasetError(f"dataset {ref!r} in the store {self.root} has no data file")
        return p

    def names(self) -> dict[str, str]:
        """Every stored checkpoint and dataset: id → name (for the result document)."""
        return {
            str(m.get("id") or d.name): str(m.get("name") or d.name[:12])
            for kind in ("checkpoints", "datasets")
            for d, m in self._manifests(kind)
        }


class StoreOrFileResolver:
    """A reference is a path (relative to ``base_dir``) when it names one; else a store reference."""

    def __init__(self, store: StoreReader, base_dir: str | Path | None = None):
        self.files = FileResolver(base_dir)
        self.store = store

    def checkpoint(self, ref: str) -> CheckpointSource:
        try:
            return self.files.checkpoint(ref)
        except CheckpointError as file_error:
            try:
                return self.store.checkpoint(ref)
            except CheckpointError as store_error:
                raise CheckpointError(f"{store_error}; as a path: {file_error}") from None

    def dataset(self, ref: str) -> Path:
        try:
            return self.files.dataset(ref)
        except DatasetError as file_error:
            try:
                return self.store.dataset(ref)
            except DatasetError as store_error:
                raise DatasetError(f"{store_error}; as a path: {file_error}") from None
