"""``basin``: the command line — headless runs, standalone reports, the demo, the dashboard.

::

    basin eval SPEC -o result.json [--device D] [--max-examples N] [--quiet]
    basin plot result.json -o report.html
    basin export result.json -o surface.h5     (Li et al.'s loss-landscape HDF5 layout)
    basin fit FIT_SPEC [-o FOLDER] [--device D] [--quiet]
    basin tune TUNE_SPEC --out DIR [--device D] [--quiet]
    basin forgetting result.json -o forgetting.csv [--dataset PATH] [--format csv|json]
    basin study SPEC -o study.json [--csv DIR] [--device D] [--quiet]
    basin demo [--out DIR] [--report PATH]
    basin up [--port P] [--store DIR] [--no-demo]

Bad input (unknown path type, missing file, mismatched checkpoints, a dataset
without the needed columns, a degenerate plane...) ends with ONE line on stderr,
``basin: error: ...``, and exit code 2 — never a traceback. The core raises
:class:`basin.errors.BasinError` for these; :func:`main` is the one place that maps
them to that line. Output files are written atomically, so a failed run never
leaves a half-written result behind or clobbers an earlier one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from basin.errors import BasinError, InvalidSpec

if TYPE_CHECKING:
    from tqdm import tqdm

logger = logging.getLogger(__name__)

EXIT_USAGE = 2
#: Entry-point group of commands other packages add: ``name = "module:register"``, where
#: ``register(subparsers)`` adds one sub-command (the service layer adds ``up``), so the
#: core names none of them.
COMMANDS_GROUP = "basin.commands"


class CliError(BasinError):
    """A problem with the command line's own input (e.g. a file that is not a result document)."""


# ---- helpers ------------------------------------------------------------------------------


def read_result(path: Path) -> dict[str, Any]:
    """Read a result document (JSON) and check it has the fields ``basin plot`` needs."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CliError(f"cannot read result {path}: {e.strerror}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict) or not isinstance(
        doc.get("points"), list
    ):
        raise CliError(f"{path} is not a Basin result document (needs 'spec' and 'points')")
    return doc


class _Progress:
    """A tqdm bar with ETA on stderr, fed by the engine's ``on_point`` callback.

    Created at the first finished point, so input errors found while opening the run
    (missing files, mismatched tensors) leave stderr with nothing but their one line.
    """

    def __init__(self, total: int, enabled: bool):
        self.total = total
        self.enabled = enabled
        self.bar: tqdm | None = None

    def __call__(self, point: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="pt", desc="basin eval", file=sys.stderr,
                            dynamic_ncols=True, mininterval=0.2)
        m = point.get("metrics", {})
        shown = "loss" if "loss" in m else next(iter(m), None)  # generation runs: their first metric
        if shown is not None and isinstance(m[shown], (int, float)):
            self.bar.set_postfix({shown: f"{m[shown]:.4f}"}, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---- commands -----------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    from basin.spec import load_spec, parse_spec

    spec_path = Path(args.spec)
    if not spec_path.is_file():
        raise InvalidSpec(f"spec file not found: {spec_path}")
    spec = load_spec(spec_path)
    overrides: dict[str, Any] = {}
    if args.device:
        overrides["device"] = args.device
    if args.max_examples:
        overrides["max_examples"] = args.max_examples
    if overrides:
        spec = parse_spec({**spec.model_dump(mode="json"), **overrides})

    from basin import engine
    from basin.errors import CheckpointError, DatasetError
    from basin.resolve import FileResolver, Resolver
    from basin.store_reader import StoreOrFileResolver, StoreReader

    store = getattr(args, "store", None) or os.environ.get("BASIN_STORE") or None
    resolver: Resolver = FileResolver(spec_path.resolve().parent)
    if store:  # a spec copied from the dashboard names store ids: read them from the store
        resolver = StoreOrFileResolver(StoreReader(store), spec_path.resolve().parent)
    bar = _Progress(spec.planned_points, enabled=not args.quiet)
    try:
        result = engine.run(spec, resolver, on_point=bar, progress=False)
    except (CheckpointError, DatasetError) as e:
        if store or "not found" not in str(e):
            raise
        kind = DatasetError if isinstance(e, DatasetError) else CheckpointError
        raise kind(f"{e}. A spec copied from the dashboard names store ids and names: pass "
                      "--store <the server's store folder> (or set BASIN_STORE)") from None
    finally:
        bar.close()
    from basin.report import summarize, write_atomic

    out = Path(args.output)
    write_atomic(out, json.dumps(result, indent=1, allow_nan=True) + "\n")
    if not args.quiet:
        print(summarize(result))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from basin.report import write_report

    result = read_result(Path(args.result))
    out = write_report(result, Path(args.output))
    print(out)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from basin.landscape_h5 import save_surface_h5

    result = read_result(Path(args.result))
    out = save_surface_h5(result, Path(args.output))
    print(out)
    return 0


def _result_dataset(result: dict[str, Any], result_path: Path, given: str | None) -> Path:
    """The run's dataset file: ``--dataset``, else the spec's reference as written (absolute,
    or relative to the result's folder or the working directory)."""
    if given:
        p = Path(given)
        if not p.is_file():
            raise CliError(f"dataset {given} not found")
        return p
    ref = str((result.get("spec") or {}).get("dataset") or "")
    for base in (result_path.resolve().parent, Path.cwd()):
        p = Path(ref).expanduser()
        p = p if p.is_absolute() else base / p
        if ref and p.is_file():
            return p
    raise CliError(f"cannot find the run's dataset {ref!r} (looked beside {result_path.name} and in the "
                   "working directory): pass --dataset PATH")


def cmd_forgetting(args: argparse.Namespace) -> int:
    from basin.analysis.forgetting import dataset_rows, forgetting, forgetting_csv
    from basin.report import write_atomic

    path = Path(args.result)
    result = read_result(path)
    table = forgetting(result)  # first: a run without per-example results fails before any file is read
    rows = dataset_rows(result, _result_dataset(result, path, args.dataset))
    table = forgetting(result, rows)
    text = forgetting_csv(table) if args.format == "csv" else json.dumps(table, indent=1) + "\n"
    write_atomic(Path(args.output), text)
    c = table["counts"]
    print(f"{c['correct_at_start']} of {c['examples']} examples correct at α = {table['start']:g}: "
          f"{c['lost']} lost before α = {table['end']:g}, {c['regained']} of them regained", file=sys.stderr)
    print(args.output)
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from basin.report import write_atomic
    from basin.resolve import FileResolver
    from basin.study.matrix import to_csv
    from basin.study.plan import load_study, parse_study
    from basin.study.run import run_study

    spec_path = Path(args.spec)
    if not spec_path.is_file():
        raise InvalidSpec(f"study spec file not found: {spec_path}")
    spec = load_study(spec_path)
    if spec.where is not None:
        raise InvalidSpec("study spec: 'where' selects checkpoints by the store's tags (the service's "
                          "POST /api/studies); the CLI needs them listed in 'checkpoints'")
    if args.device:
        spec = parse_study({**spec.model_dump(mode="json"), "device": args.device})
    result = run_study(spec, FileResolver(spec_path.resolve().parent), progress=not args.quiet)
    out = Path(args.output)
    write_atomic(out, json.dumps(result, indent=1, allow_nan=True) + "\n")
    if args.csv:
        folder = Path(args.csv)
        folder.mkdir(parents=True, exist_ok=True)
        for table in ("matrix", "clusters", "groups"):
            write_atomic(folder / f"{table}.csv", to_csv(result, table))
    if not args.quiet:
        ev = result["evaluations"]
        print(f"{len(result['checkpoints'])} checkpoints, {len(result['pairs'])} pairs: "
              f"{ev['performed']} points evaluated ({ev['fraction']:.0%} of {ev['full_runs']} for full runs), "
              f"{len(result['clusters'])} cluster(s):")
        for c in result["clusters"]:
            print(f"  {c['id']}: {', '.join(c['names'])}")
    print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from basin.demo import run_demo

    report = run_demo(Path(args.out), report=Path(args.report), progress=not args.quiet)
    print(report)
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    """Fit a curve's control point, save it, then evaluate the line and the fitted curve."""
    from basin.fit import fit, load_fit_spec, parse_fit_spec, save_control

    spec_path = Path(args.spec)
    if not spec_path.is_file():
        raise InvalidSpec(f"fit spec file not found: {spec_path}")
    spec = load_fit_spec(spec_path)
    if args.device:
        spec = parse_fit_spec({**spec.model_dump(mode="json"), "device": args.device})
    from basin.resolve import FileResolver

    resolver = FileResolver(spec_path.resolve().parent)
    out = Path(args.output) if args.output else spec_path.with_name(f"{spec_path.stem}-fit")
    bar: tqdm | None = None

    def on_step(step: int, loss: float, _eta: float | None) -> None:
        nonlocal bar
        if args.quiet:
            return
        if bar is None:  # made at the first step: input errors leave stderr with their one line
            from tqdm import tqdm

            bar = tqdm(total=spec.steps, unit="step", desc=f"basin fit {spec.curve}", file=sys.stderr,
                       dynamic_ncols=True, mininterval=0.2)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        bar.update(1)

    try:
        result = fit(spec, resolver, on_step=on_step)
    finally:
        if bar is not None:
            bar.close()
    from basin.report import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    controls = save_control(result, out / "control")
    write_atomic(out / "fit.json", json.dumps({**result.meta, "losses": result.losses}, indent=1,
                                              allow_nan=True) + "\n")
    print(f"fitted {spec.curve} in {result.meta['timings']['fit_s']:.1f}s ({len(result.losses)} steps), "
          f"training loss {result.losses[0]:.4f} → {result.final_loss:.4f}; control point: {controls[0]}",
          file=sys.stderr)
    ev = result.meta.get("evaluation") or {}
    held = ("held-out " if not ev.get("overlap_with_training") else
            f"(allow_overlap: {ev.get('overlap_with_training')} also trained on) ")
    print(f"trained on {result.meta['dataset']['examples']} examples of {spec.dataset}; evaluating on "
          f"{ev.get('examples')} {held}examples of {spec.eval_dataset or spec.dataset}", file=sys.stderr)

    from basin import engine
    from basin.analysis.barrier import barrier_sentence
    from basin.fit import curve_run_data
    from basin.spec import parse_spec

    runs = [("line", curve_run_data(spec, str(controls[0].resolve()), line=True))]
    if len(controls) == 1:
        runs.append(("curve", curve_run_data(spec, str(controls[0].resolve()))))
    else:
        print(f"the polychain path type evaluates one bend: the {len(controls)}-bend curve is saved "
              "but not evaluated", file=sys.stderr)
    for label, data in runs:
        run_bar = _Progress(spec.eval_points, enabled=not args.quiet)
        try:
            doc = engine.run(parse_spec(data), resolver, on_point=run_bar, progress=False)
        finally:
            run_bar.close()
        write_atomic(out / f"{label}.json", json.dumps(doc, indent=1, allow_nan=True) + "\n")
        b = doc["summary"]["barrier"].get("loss")
        top = max(p["metrics"]["loss"] for p in doc["points"])
        what = "straight line" if label == "line" else f"fitted {spec.curve}"
        # the same words as the run page and the report (interval and verdict, curve-aware)
        words = (barrier_sentence(b, "loss", magnitude=top, path_type=doc["spec"]["path"]["type"])
                 if isinstance(b, dict) else "no barrier (an endpoint was not evaluated)")
        print(f"{what}, loss: {words}; highest loss {top:.4f}")
    print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """Train a family of checkpoints (every member in-process), write family.json, print held-out metrics."""
    from basin.tune.spec import load_tune_spec, members, parse_tune_spec

    spec_path = Path(args.spec)
    if not spec_path.is_file():
        raise InvalidSpec(f"tune spec file not found: {spec_path}")
    spec = load_tune_spec(spec_path)
    if args.device:
        spec = parse_tune_spec({**spec.model_dump(mode="json"), "device": args.device})
    from basin.resolve import FileResolver
    from basin.tune.family import FAMILY_META, run_family

    resolver = FileResolver(spec_path.absolute().parent)  # a linked spec: beside the link
    family = members(spec)
    bar: tqdm | None = None

    def on_step(member, step: int, loss: float, _seen: int) -> None:
        nonlocal bar
        if args.quiet:
            return
        if bar is None:  # made at the first step: input errors leave stderr with their one line
            from tqdm import tqdm

            bar = tqdm(total=spec.total_steps, unit="step", desc="basin tune", file=sys.stderr,
                       dynamic_ncols=True, mininterval=0.2)
        bar.set_postfix(member=f"{member.index + 1}/{len(family)}", loss=f"{loss:.4f}", refresh=False)
        bar.update(1)

    def on_done(r) -> None:
        shown = {k: round(v, 4) for k, v in r.metrics.items()}
        line = (f"{r.member.name}: held-out {shown} ({r.eval_examples} examples), "
                f"{len(r.checkpoints)} checkpoint(s), final {r.final}")
        if bar is not None:
            bar.write(line, file=sys.stdout)
        else:
            print(line)

    out = Path(args.out)
    try:
        run_family(spec, resolver, out, on_step=on_step, on_done=on_done)
    finally:
        if bar is not None:
            bar.close()
    print(f"wrote {out / FAMILY_META}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="basin",
        description="Loss landscapes and mode connectivity of fine-tuned transformers checkpoints.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("eval", help="evaluate a run spec (YAML/JSON) and write the result document")
    e.add_argument("spec", help="run spec, .yaml/.yml/.json; relative paths are relative to its folder")
    e.add_argument("-o", "--output", required=True, help="result document to write (JSON)")
    e.add_argument("--device", help="override the spec's device: cpu, cuda, cuda:N, auto")
    e.add_argument("--max-examples", type=int, help="override the spec's max_examples")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    e.add_argument("--store", help="a Basin store folder (env BASIN_STORE; read only): references that "
                                   "are not paths are store ids, id prefixes or names — the dashboard's "
                                   "copied spec runs as is")
    e.set_defaults(func=cmd_eval)

    pl = sub.add_parser("plot", help="render a result document as one standalone HTML report")
    pl.add_argument("result", help="result document written by `basin eval`")
    pl.add_argument("-o", "--output", required=True, help="HTML file to write")
    pl.set_defaults(func=cmd_plot)

    ex = sub.add_parser("export", help="write a result document's surface as an HDF5 file in the layout of "
                                       "Li et al.'s loss-landscape scripts (plot_2D.py, plot_1D.py, h52vtp.py)")
    ex.add_argument("result", help="result document written by `basin eval` (or exported by the service)")
    ex.add_argument("-o", "--output", required=True, help=".h5 file to write")
    ex.set_defaults(func=cmd_export)

    f = sub.add_parser("fit", help="fit a Bezier/polychain curve between two checkpoints, then evaluate "
                                   "the straight line and the fitted curve")
    f.add_argument("spec", help="fit spec, .yaml/.yml/.json (see docs/fit.md); relative paths are "
                                "relative to its folder")
    f.add_argument("-o", "--output", help="folder for control/, fit.json, line.json, curve.json "
                                          "(default: <spec>-fit beside the spec)")
    f.add_argument("--device", help="override the spec's device: cpu, cuda, cuda:N, auto")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    f.set_defaults(func=cmd_fit)

    t = sub.add_parser("tune", help="train a family of fine-tuned / delta-tuned checkpoints from one base "
                                    "(seeds × data orders × splits × methods × learning rates)")
    t.add_argument("spec", help="tune spec, .yaml/.yml/.json (see docs/tune.md); relative paths are relative "
                                "to its folder")
    t.add_argument("--out", required=True, help="folder for the members' checkpoints and family.json")
    t.add_argument("--device", help="override the spec's device: cpu, cuda, cuda:N, auto")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_tune)

    fg = sub.add_parser("forgetting", help="which examples a 1D path loses and regains (needs a run with "
                        "per_example: true), as CSV or JSON")
    fg.add_argument("result", help="result document written by `basin eval`")
    fg.add_argument("-o", "--output", required=True, help="file to write (CSV or JSON)")
    fg.add_argument("--dataset", help="the run's dataset file (default: the spec's, beside the result or here)")
    fg.add_argument("--format", choices=("csv", "json"), default="csv", help="default: %(default)s")
    fg.set_defaults(func=cmd_forgetting)

    st = sub.add_parser("study", help="barrier matrix, clusters, groups and instability of N checkpoints "
                        "(docs/study.md)")
    st.add_argument("spec", help="study spec, .yaml/.yml/.json; relative paths are relative to its folder")
    st.add_argument("-o", "--output", required=True, help="study result to write (JSON)")
    st.add_argument("--csv", help="also write matrix.csv, clusters.csv and groups.csv into this folder")
    st.add_argument("--device", help="override the spec's device: cpu, cuda, cuda:N, auto")
    st.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    st.set_defaults(func=cmd_study)

    d = sub.add_parser("demo", help="build the MiniLM tweet-sentiment demo (the family of examples/demo-minilm.yaml, "
                       "in-process) and its report")
    d.add_argument("--out", default=os.environ.get("BASIN_DEMO_DIR", "models_store/demo"),
                   help="folder for the demo checkpoints and datasets (default: %(default)s)")
    d.add_argument("--report", default="reports/demo.html", help="HTML report (default: %(default)s)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)

    from basin.subspace.cli import register as register_subspace

    register_subspace(sub)  # `basin subspace fit|optimise|transfer` (torch only when it runs)

    for ep in entry_points(group=COMMANDS_GROUP):  # e.g. `basin up`, from the service layer
        try:
            register = ep.load()
        except ImportError as e:  # its extras are not installed: the core commands still work
            logger.debug("command %s unavailable: %s", ep.name, e)
            continue
        register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``basin`` command; returns the exit code (2 on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return args.func(args)
    except BasinError as e:
        return _fail(str(e))
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return _fail(f"{where}{e.strerror or e}")
    except KeyboardInterrupt:
        print("basin: interrupted", file=sys.stderr)
        return 130


def _fail(message: str) -> int:
    # One line, whatever the message holds: the caller greps stderr, a person reads it.
    line = " ".join(str(message).split())
    print(f"basin: error: {line}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
