"""One delta-tuning method's solutions as flat vectors, and its task loss as a function of them.

A *method* (``adapter``, ``prefix``, ``lora``, … — the name is the user's) is a set of
PEFT adapter checkpoints of one layout (one ``peft_type``, rank, target modules, virtual
tokens) on one base. :class:`Method` builds that layout once on the frozen base with
``peft`` (checked first, :func:`basin.adapters.peft_config`), and gives:

- :meth:`Method.flatten`: an adapter folder's stored tensors as one vector θₜ, in a fixed
  order (its stored tensor names, sorted);
- :meth:`Method.loss`: the task loss L_task(θₜ | θ0) of any vector, differentiable in the
  vector (``torch.func.functional_call`` over ``peft``'s model: the base frozen, the
  adapter's own parameters replaced by views of the vector);
- :meth:`Method.save`: a vector as a PEFT adapter folder (``peft``'s ``save_pretrained``,
  safetensors), which ``peft`` and Basin's resolver load.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from basin.errors import CheckpointError, IncompatibleCheckpoints, InvalidSpec

if TYPE_CHECKING:
    from basin.data import Dataset
    from basin.source import CheckpointSource

#: the stored name of a prompt-learning adapter's virtual-token table (peft's own)
PROMPT_KEY = "prompt_embeddings"


@dataclass(frozen=True)
class Layout:
    """The stored tensors of a method's solutions: names (sorted) and shapes."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def size(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Layout:
        return cls(tuple(d["names"]), tuple(tuple(int(x) for x in s) for s in d["shapes"]))


def layout_of(weights: Mapping[str, torch.Tensor]) -> Layout:
    names = tuple(sorted(weights))
    return Layout(names, tuple(tuple(weights[n].shape) for n in names))


class Method:
    """A delta-tuning method on a frozen base: ``peft``'s model of one adapter layout.

    Build it from a solution (:meth:`from_adapter`) or from a config and layout saved with a
    subspace (:meth:`from_config`); either way the config is checked
    (:mod:`basin.untrusted`) before ``peft`` builds anything. ``base_sd``: the base's
    tensors (stored names). Dropout is off (``eval`` mode), so the loss of a vector is a
    deterministic function of it.
    """

    def __init__(
        self,
        name: str,
        clean: Mapping[str, Any],
        layout: Layout,
        base: CheckpointSource,
        base_sd: Mapping[str, torch.Tensor],
        task: str = "classification",
    ):
        from basin.adapters import TASK_OF_PEFT, _build_base, _inject, config_object
        from basin.space import key_mapper, load_weights, rename

        self.name = name
        self.base = base
        self.clean = dict(clean)
        self.cfg = config_object(clean)
        self.peft_type = str(clean["peft_type"])
        ptask = TASK_OF_PEFT.get(str(clean.get("task_type")))
        if ptask is not None and ptask != task:
            raise InvalidSpec(
                f"method {name!r}: its adapters were trained for task {ptask!r}, not {task!r}"
            )
        model = _build_base(base.config_dir, task, meta=False)
        load_weights(model, rename(base_sd, key_mapper(model)(base_sd)), task)
        self.pm = _inject(model, self.cfg, f"method {name!r} ({self.peft_type})")
        self.pm.eval()
        trainable = [(n, p) for n, p in self.pm.named_parameters() if p.requires_grad]
        self.pm.requires_grad_(False)
        self.layout = layout
        self.param_of = self._map_names(dict(trainable))
        self.task = task

    @classmethod
    def from_adapter(
        cls,
        name: str,
        src: CheckpointSource,
        base_sd: Mapping[str, torch.Tensor],
        task: str = "classification",
    ) -> Method:
        """The method of the adapter folder ``src.adapter`` (its config checked against the base)."""
        from basin.adapters import check_shapes, clean_config, load_adapter_weights

        assert src.adapter is not None
        clean = check_shapes(src.adapter, src.config_dir, clean_config(src.adapter))
        return cls(
            name,
            clean,
            layout_of(load_adapter_weights(src.adapter)),
            src.base_source(),
            base_sd,
            task,
        )

    @classmethod
    def from_config(
        cls,
        name: str,
        raw: Any,
        layout: Layout,
        base: CheckpointSource,
        base_sd: Mapping[str, torch.Tensor],
        task: str = "classification",
    ) -> Method:
        """The method of a saved config and layout (a subspace's meta: untrusted, so re-checked)."""
        from basin.adapters import TASK_OF_PEFT, _build_base
        from basin.untrusted import check_adapter_shapes, clean_adapter_config

        clean = clean_adapter_config(raw)
        skeleton = _build_base(
            base.config_dir, TASK_OF_PEFT.get(str(clean.get("task_type"))), meta=True
        )
        check_adapter_shapes(
            clean,
            dict(zip(layout.names, layout.shapes, strict=True)),
            skeleton,
            f"base {base.config_dir.name}",
        )
        return cls(name, clean, layout, base, base_sd, task)

    def _map_names(self, trainable: dict[str, torch.nn.Parameter]) -> dict[str, str]:
        """Stored tensor name → the peft model's parameter name (same storage; the prompt table
        by its role, since peft saves it as ``prompt_embeddings``)."""
        import peft

        saved = peft.get_peft_model_state_dict(self.pm)
        by_ptr = {p.data_ptr(): n for n, p in trainable.items()}
        out: dict[str, str] = {}
        for k, t in saved.items():
            n = by_ptr.get(t.data_ptr())
            if n is None and k == PROMPT_KEY:
                n = next(
                    (
                        m
                        for m in trainable
                        if m.endswith("embedding.weight") and "prompt_encoder" in m
                    ),
                    None,
                )
            if n is None:
                raise CheckpointError(
                    f"method {self.name!r}: cannot place the adapter tensor {k!r} in the model"
                )
            out[k] = n
        missing = sorted(set(self.layout.names) ^ set(out))
        if missing:
            raise IncompatibleCheckpoints(
                f"method {self.name!r}: the adapter's stored tensors differ from what peft builds for its config: "
                f"{missing[:5]}",
                [(k, "stored vs built") for k in missing],
            )
        return out

    # ---- vectors -------------------------------------------------------------------------

    def flatten(self, src: CheckpointSource) -> torch.Tensor:
        """The adapter's stored tensors as one fp32 vector in the method's layout."""
        from basin.adapters import load_adapter_weights

        assert src.adapter is not None
        w = load_adapter_weights(src.adapter)
        lay = layout_of(w)
        if lay != self.layout:
            diff = [
                n
                for n in sorted(set(lay.names) | set(self.layout.names))
                if n not in w
                or n not in self.layout.names
                or tuple(w[n].shape) != self.layout.shapes[self.layout.names.index(n)]
            ]
            raise IncompatibleCheckpoints(
                f"method {self.name!r}: adapter {src.adapter.name} does not have the layout of the method's first "
                f"solution (one peft type, rank, target modules and virtual tokens per method); differing tensors: "
                f"{diff[:5]}",
                [(n, "differs") for n in diff],
            )
        return torch.cat([w[n].detach().to(torch.float32).reshape(-1) for n in self.layout.names])

    def unflatten(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stored name → a view of ``vec`` shaped as that tensor."""
        if vec.ndim != 1 or vec.numel() != self.layout.size:
            raise ValueError(
                f"method {self.name!r}: a vector of {self.layout.size} numbers, not {tuple(vec.shape)}"
            )
        out, i = {}, 0
        for n, s in zip(self.layout.names, self.layout.shapes, strict=True):
            k = math.prod(s)
            out[n] = vec[i : i + k].view(s)
            i += k
        return out

    # ---- task loss -----------------------------------------------------------------------

    def forward(self, vec: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> Any:
        from torch.func import functional_call

        params = {self.param_of[k]: t for k, t in self.unflatten(vec).items()}
        return functional_call(self.pm, params, args=(), kwargs=dict(batch), strict=False)

    def loss(self, vec: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy of the model with the adapter ``vec`` on ``batch`` (with ``labels``)."""
        return self.forward(vec, batch).loss

    @torch.no_grad()
    def evaluate(
        self, vec: torch.Tensor, batches: Sequence[Mapping[str, torch.Tensor]]
    ) -> dict[str, float]:
        """Loss and accuracy of the adapter ``vec`` over the batches (example-weighted)."""
        total, correct, n = 0.0, 0, 0
        for b in batches:
            out = self.forward(vec, b)
            k = int(b["labels"].shape[0])
            total += float(out.loss) * k
            correct += int((out.logits.argmax(-1) == b["labels"]).sum())
            n += k
        return {"loss": total / max(n, 1), "accuracy": correct / max(n, 1), "n": n}

    # ---- output --------------------------------------------------------------------------

    def save(
        self, vec: torch.Tensor, out: str | Path, provenance: Mapping[str, Any] | None = None
    ) -> Path:
        """Write ``vec`` as a PEFT adapter folder (``adapter_config.json`` +
        ``adapter_model.safetensors``) with ``peft``'s ``save_pretrained``; ``provenance``
        (how it was made) goes to ``subspace.json`` beside them."""
        import json

        out = Path(out)
        live = dict(self.pm.named_parameters())
        saved = {n: live[p].detach().clone() for n, p in self.param_of.items()}
        with torch.no_grad():
            for k, t in self.unflatten(vec.detach().to(torch.float32)).items():
                live[self.param_of[k]].copy_(t)
        try:
            self.pm.peft_config["default"].base_model_name_or_path = str(self.base.config_dir)
            self.pm.save_pretrained(str(out), safe_serialization=True)
        finally:
            with torch.no_grad():
                for k, t in saved.items():
                    live[self.param_of[k]].copy_(t)
        if provenance is not None:
            (out / "subspace.json").write_text(
                json.dumps(dict(provenance), indent=2, sort_keys=True)
            )
        return out


def batches(
    tokenizer: Any,
    data: Dataset,
    batch_size: int,
    max_length: int,
    order: Sequence[int] | None = None,
) -> list[dict[str, torch.Tensor]]:
    """The dataset (texts, labels) tokenised in batches of ``batch_size`` (padded per batch)."""
    texts, labels = data.columns["text"], data.columns["label"]
    idx = list(order) if order is not None else list(range(len(texts)))
    out = []
    for i in range(0, len(idx), batch_size):
        part = idx[i : i + batch_size]
        enc = tokenizer(
            [texts[j] for j in part],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        enc = {
            k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        enc["labels"] = torch.tensor([labels[j] for j in part], dtype=torch.long)
        out.append(enc)
    return out


def stored_name(live: str) -> str:
    """The stored adapter tensor name of a live adapter-space parameter (``basin.adapters.AdapterSpace``
    names): peft's saving rule (adapter name and ``modules_to_save.default`` dropped; the
    virtual-token table saved as ``prompt_embeddings``)."""
    if live.startswith("prompt_encoder.") and live.endswith(".embedding.weight"):
        return PROMPT_KEY
    full = live if live.startswith("base_model.") else "base_model.model." + live
    return full.replace(".modules_to_save.default", "").replace(".default", "")
