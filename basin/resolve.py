"""Turning the references written in a spec into files.

A spec names checkpoints and datasets by *reference*: a filesystem path for the CLI,
a store id or name for the service. A :class:`Resolver` maps a reference to a
:class:`CheckpointSource` (where the weights and the config live, plus a stable
identity) or to a dataset file. :class:`FileResolver` is the CLI's resolver over
plain paths; the service provides its own over the content-addressed store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from basin.errors import CheckpointError, DatasetError

# re-exported: most callers import these here (the type lives in basin.source)
from basin.source import CONFIG_SEP as CONFIG_SEP
from basin.source import CheckpointSource as CheckpointSource


@runtime_checkable
class Resolver(Protocol):
    """Maps spec references to files. Raise :class:`CheckpointError` / :class:`DatasetError`."""

    def checkpoint(self, ref: str) -> CheckpointSource: ...

    def dataset(self, ref: str) -> Path: ...


class FileResolver:
    """References are filesystem paths, relative to ``base_dir`` (default: the working dir).

    A checkpoint reference is a model directory, or a bare ``.safetensors`` file whose
    config is the file's own directory or is given after ``::``
    (``step3.safetensors::../base``). A PEFT adapter folder (``adapter_config.json``)
    names its base model after ``::`` (``lora_s1::../base``), or the base is the
    adapter's ``base_model_name_or_path`` when that is a local model directory.
    """

    def __init__(self, base_dir: str | Path | None = None):
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()

    def _path(self, ref: str) -> Path:
        p = Path(ref).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def checkpoint(self, ref: str) -> CheckpointSource:
        """Resolve a checkpoint path; raises :class:`CheckpointError` if it does not exist.
        ``hf:org/name@revision`` is a Hugging Face Hub checkpoint, fetched (checked against the
        Hub's hashes, safetensors only) into the local cache once (:func:`basin.hub.snapshot`)."""
        if ref.startswith("hf:"):
            from basin.hub import snapshot

            return CheckpointSource.from_path(snapshot(ref))
        wref, _, cref = ref.partition(CONFIG_SEP)
        w = self._path(wref)
        if not w.exists():
            raise CheckpointError(f"checkpoint {ref!r} not found (looked at {w})")
        if w.is_dir() and (w / "adapter_config.json").is_file():
            return self._adapter(ref, w, cref)
        c = self._path(cref) if cref else None
        if c is not None and not (c / "config.json").is_file():
            raise CheckpointError(f"config directory {c} for checkpoint {ref!r} has no config.json")
        if c is None and w.is_file() and not (w.parent / "config.json").is_file():
            raise CheckpointError(
                f"checkpoint {ref!r} is a bare weights file with no config.json beside it; "
                f"name its config directory as '{wref}{CONFIG_SEP}<config_dir>'"
            )
        return CheckpointSource.from_path(w, c)

    def _adapter(self, ref: str, adapter: Path, base_ref: str) -> CheckpointSource:
        from basin.adapters import read_adapter_config

        if not base_ref:
            named = read_adapter_config(adapter).get("base_model_name_or_path")
            local = self._path(str(named)) if isinstance(named, str) and named else None
            if local is None or not (local / "config.json").is_file():
                raise CheckpointError(
                    f"adapter {ref!r}: its base_model_name_or_path ({named!r}) is not a local model directory; "
                    f"name the base as '{ref}{CONFIG_SEP}<base model dir>'"
                )
            base_ref = str(local)
        base = self.checkpoint(base_ref)
        if base.adapter is not None:
            raise CheckpointError(f"adapter {ref!r}: its base {base_ref!r} is itself an adapter")
        return CheckpointSource.of_adapter(adapter, base)

    def artefact(self, ref: str) -> Path:
        """Resolve a folder artefact (a subspace's ``projections/``); :class:`CheckpointError` if
        it is not a folder."""
        p = self._path(ref)
        if not p.is_dir():
            raise CheckpointError(f"artefact {ref!r} not found (looked for a folder at {p})")
        return p.resolve()

    def dataset(self, ref: str) -> Path:
        """Resolve a dataset path; raises :class:`DatasetError` if it is not a file."""
        p = self._path(ref)
        if not p.is_file():
            raise DatasetError(f"dataset {ref!r} not found (looked at {p})")
        return p.resolve()
