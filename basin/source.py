"""Where one checkpoint's files live: :class:`CheckpointSource`, a leaf type.

:mod:`basin.resolve` turns a spec's references into sources; :mod:`basin.checkpoints`
and :mod:`basin.adapters` read them. The type lives apart from all three so that none
needs another to name it (``basin.resolve`` re-exports it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Separates a bare weights file from its config directory in a file reference:
#: ``weights.safetensors::path/to/config_dir``.
CONFIG_SEP = "::"


@dataclass(frozen=True)
class CheckpointSource:
    """Where one checkpoint's weights and config live.

    ``weights`` is a Hugging Face model directory (``model.safetensors``, sharded
    safetensors with ``model.safetensors.index.json``, or ``pytorch_model.bin``) or a
    bare ``.safetensors`` state-dict file. ``config_dir`` holds ``config.json`` (and
    possibly a tokenizer); for a model directory it is the directory itself. ``id``
    is a stable identity (the store's sha256, or the resolved absolute path): caches
    and point keys use it.
    """

    weights: Path
    config_dir: Path
    id: str
    #: A PEFT adapter folder on this base (``weights``/``config_dir`` are the base's; see
    #: :mod:`basin.adapters`); ``base_id`` is the base's own id.
    adapter: Path | None = None
    base_id: str | None = None

    def base_source(self) -> CheckpointSource:
        """The base checkpoint of an adapter source (itself for a full checkpoint)."""
        if self.adapter is None:
            return self
        ident = self.base_id or CheckpointSource.from_path(self.weights, self.config_dir).id
        return CheckpointSource(weights=self.weights, config_dir=self.config_dir, id=ident)

    @classmethod
    def of_adapter(cls, adapter: str | Path, base: CheckpointSource) -> CheckpointSource:
        """A source for a local adapter folder on ``base``; ``id`` is ``<adapter path>@<base id>``."""
        a = Path(adapter).expanduser().resolve()
        return cls(
            weights=base.weights,
            config_dir=base.config_dir,
            id=f"{a}@{base.id}",
            adapter=a,
            base_id=base.id,
        )

    @classmethod
    def from_path(
        cls, weights: str | Path, config_dir: str | Path | None = None
    ) -> CheckpointSource:
        """A source for a local directory or file; ``id`` is the resolved absolute path."""
        w = Path(weights).expanduser().resolve()
        c = Path(config_dir).expanduser().resolve() if config_dir is not None else None
        if c is None:
            c = w if w.is_dir() else w.parent
        ident = str(w) if c == w else f"{w}{CONFIG_SEP}{c}"
        return cls(weights=w, config_dir=c, id=ident)
