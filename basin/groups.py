"""Parameter groups from a model's module tree: embeddings, each stack of blocks, head, rest.

Every tensor of a built model (parameters and buffers, every alias of a tied tensor)
gets one :class:`Group`, found from the modules that hold it — never from name patterns:

- **stacks**: each outermost ``nn.ModuleList`` whose items hold parameters (inside the
  base model, for a task model) is a stack of blocks (BERT ``encoder.layer``, GPT-2 ``h``, Llama/GPT-NeoX ``layers``, MPT ``blocks``,
  T5 ``encoder.block`` and ``decoder.block``, BART ``encoder.layers`` and
  ``decoder.layers``). Encoder and decoder stacks are kept apart. A stack's *name* is
  ``encoder`` or ``decoder`` when its module path says so, otherwise its path below the
  base model (``h``, ``layers``, ``transformer.layer``); block ``i`` of a stack of
  ``n`` is in third ``min(2, ⌊(i + ½)·3/n⌋)`` (``lower``/``middle``/``upper``).
- **embeddings**: the module behind ``get_input_embeddings()``, every ``nn.Embedding``
  outside the stacks (position / token-type embeddings) and every module outside the
  stacks and the head whose name contains ``embed`` (BERT's ``embeddings`` container
  with its LayerNorm, BART's ``layernorm_embedding``).
- **head**: the module behind ``get_output_embeddings()``, every ``pooler``, and
  everything of a task model outside its base model (``classifier``, ``score``,
  ``lm_head``, ``embed_out``, ``final_logits_bias``).
- **rest**: everything else (final norms such as ``ln_f``, ``norm``, ``final_layer_norm``).

Tied tensors (one tensor reachable under several names, e.g. GPT-2's ``lm_head`` and
``wte``, T5's ``shared``/``encoder.embed_tokens``/``lm_head``) are resolved by identity
with one rule: **a tensor belongs to the first of embeddings, blocks, head, rest that any
of its names falls in** — tied word embeddings are embeddings, whichever name a file
stores them under, and scope ``head`` never moves them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

THIRDS = ("lower", "middle", "upper")
_RANK = {"embeddings": 0, "block": 1, "head": 2, "rest": 3}


@dataclass(frozen=True)
class Group:
    """Where one tensor sits: ``kind`` is ``embeddings``, ``block``, ``head`` or ``rest``.

    Blocks also carry their ``stack`` name, ``index`` in the stack and the stack's ``depth``.
    """

    kind: str
    stack: str | None = None
    index: int | None = None
    depth: int | None = None

    @property
    def third(self) -> str | None:
        """``lower``/``middle``/``upper`` within its stack (blocks only)."""
        if self.index is None or not self.depth:
            return None
        return THIRDS[min(2, int((self.index + 0.5) * 3 / self.depth))]

    def label(self, single_stack: bool = False) -> str:
        """Row name in per-layer tables: ``embeddings``, ``encoder layer 3`` (``layer 3`` when the
        model has one stack), ``head``, ``rest``."""
        if self.kind != "block":
            return self.kind
        return f"layer {self.index}" if single_stack else f"{self.stack} layer {self.index}"


@dataclass
class ModelGroups:
    """Every tensor name of a model → its :class:`Group`, plus the stacks in model order."""

    groups: dict[str, Group]
    stacks: dict[str, int]  # stack name → depth, in module order

    def __getitem__(self, name: str) -> Group:
        return self.groups[name]

    def get(self, name: str) -> Group | None:
        return self.groups.get(name)

    def label(self, name: str) -> str:
        """Per-layer row of a tensor (``rest`` for a name the model does not have)."""
        g = self.groups.get(name)
        return g.label(len(self.stacks) == 1) if g is not None else "rest"

    def row_order(self, label: str) -> tuple[int, int, int]:
        """Sort key of per-layer rows: embeddings, stacks in model order by index, head, rest."""
        if label == "embeddings":
            return (0, 0, 0)
        if label == "head":
            return (2, 0, 0)
        if label == "rest":
            return (3, 0, 0)
        stack, _, idx = label.rpartition(" layer ")
        if label.startswith("layer "):
            stack, idx = next(iter(self.stacks), ""), label.split()[1]
        names = list(self.stacks)
        return (1, names.index(stack) if stack in names else len(names), int(idx))


def _stacks(model: nn.Module) -> dict[str, nn.ModuleList]:
    """Outermost ``ModuleList``s whose items all hold parameters, by module path (model order)."""
    found: dict[str, nn.ModuleList] = {}
    for path, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        if any(path == p or path.startswith(p + ".") for p in found):
            continue
        if all(any(True for _ in m.parameters()) for m in mod):
            found[path] = mod
    return found


def _base_path(model: nn.Module) -> str | None:
    """Module path of the base model inside a task model ('' when the model is its own base)."""
    base = getattr(model, "base_model", model)
    if base is model:
        return ""
    for path, mod in model.named_modules():
        if mod is base:
            return path
    return None


def _stack_names(paths: Iterable[str], base: str | None) -> dict[str, str]:
    """Stack path → name: ``encoder``/``decoder`` when the path says so, else the path below the base."""
    out: dict[str, str] = {}
    for p in paths:
        rel = p[len(base) + 1:] if base and p.startswith(base + ".") else p
        parts = rel.lower().split(".")
        if any("encoder" in c for c in parts):
            out[p] = "encoder"
        elif any("decoder" in c for c in parts):
            out[p] = "decoder"
        else:
            out[p] = rel
    # two stacks with one name (e.g. two encoders): fall back to their paths
    names = list(out.values())
    for p, n in list(out.items()):
        if names.count(n) > 1:
            out[p] = p[len(base) + 1:] if base and p.startswith(base + ".") else p
    return out


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(r == "" or path == r or path.startswith(r + ".") for r in roots)


def model_groups(model: nn.Module) -> ModelGroups:
    """The group of every parameter and buffer name of ``model`` (tied aliases included)."""
    base = _base_path(model)
    # a task model's stacks live in its base model (a ModuleList of heads is not a stack)
    stacks = stack_modules(model)
    stack_names = _stack_names(stacks, base)

    paths_of: dict[int, list[str]] = {}
    for path, mod in model.named_modules(remove_duplicate=False):
        paths_of.setdefault(id(mod), []).append(path)

    def paths(mod: object) -> list[str]:
        return paths_of.get(id(mod), []) if isinstance(mod, nn.Module) else []

    get_in: Any = getattr(model, "get_input_embeddings", None)  # PreTrainedModel methods
    get_out: Any = getattr(model, "get_output_embeddings", None)
    inp = paths(get_in()) if callable(get_in) else []
    out_emb = get_out() if callable(get_out) else None
    head_roots = list(paths(out_emb))
    if base:
        head_roots += [name for name, _ in model.named_children() if name != base.split(".")[0]]
    head_roots += [p for p, _ in model.named_modules(remove_duplicate=False) if p.rsplit(".", 1)[-1] == "pooler"]
    in_stack = list(stacks)
    embed_roots = [
        p for p, m in model.named_modules(remove_duplicate=False)
        if p and not _under(p, in_stack) and not _under(p, head_roots)
        and (isinstance(m, nn.Embedding) or "embed" in p.rsplit(".", 1)[-1].lower())
    ]

    def classify(module_path: str) -> Group:
        for sp, ml in stacks.items():
            if module_path.startswith(sp + "."):
                idx = int(module_path[len(sp) + 1:].split(".", 1)[0])
                return Group("block", stack_names[sp], idx, len(ml))
        if _under(module_path, [p for p in inp if p]):
            return Group("embeddings")
        if _under(module_path, [p for p in head_roots if p]) or (base and module_path == ""):
            return Group("head")
        if _under(module_path, embed_roots):
            return Group("embeddings")
        return Group("rest")

    by_tensor: dict[int, list[tuple[str, Group]]] = {}
    for path, mod in model.named_modules(remove_duplicate=False):
        g = classify(path)
        local = [*mod.named_parameters(recurse=False), *mod.named_buffers(recurse=False)]
        for pname, t in local:
            if t is None:
                continue
            full = f"{path}.{pname}" if path else pname
            by_tensor.setdefault(id(t), []).append((full, g))
    groups: dict[str, Group] = {}
    for entries in by_tensor.values():
        best = min((g for _, g in entries), key=lambda g: _RANK[g.kind])
        for full, _ in entries:
            groups[full] = best
    depth = {stack_names[p]: len(ml) for p, ml in stacks.items()}
    return ModelGroups(groups=groups, stacks=depth)


def stack_modules(model: nn.Module) -> dict[str, nn.ModuleList]:
    """The stacks of blocks :func:`model_groups` finds, by module path, in model order."""
    base = _base_path(model)
    return {p: m for p, m in _stacks(model).items() if not base or _under(p, [base])}


def describe(mg: ModelGroups, names: Iterable[str]) -> dict[str, list[str]]:
    """``{label: [names]}`` — what each group holds (for error messages and docs)."""
    out: dict[str, list[str]] = {}
    for n in names:
        out.setdefault(mg.label(n), []).append(n)
    return out


def out_axis(model: nn.Module) -> Mapping[str, int]:
    """Axis of output neurons for every weight whose storage is not ``(out, in, ...)``.

    ``transformers``' ``Conv1D`` (GPT-2, GPT-J's ancestors) stores its weight ``(in, out)``:
    its output neurons are columns, axis 1. Everything else (``nn.Linear``, convolutions,
    embeddings) keeps them on axis 0 and is left out of the mapping.
    """
    out: dict[str, int] = {}
    for path, mod in model.named_modules(remove_duplicate=False):
        if type(mod).__name__ == "Conv1D" and getattr(mod, "weight", None) is not None and mod.weight.dim() == 2:
            out[f"{path}.weight" if path else "weight"] = 1
    return out
