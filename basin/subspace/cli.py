"""``basin subspace fit|optimise|transfer SPEC`` (torch is imported only when one runs)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add ``basin subspace`` with its three stages to the ``basin`` command's sub-parsers."""
    s = sub.add_parser(
        "subspace",
        help="the unified subspace of delta-tuning solutions (Yi et al. 2022): "
        "fit projections, optimise in the subspace, transfer between methods",
    )
    stages = s.add_subparsers(dest="stage", required=True)
    for stage, what in (
        ("fit", "fit the projections on each task's solutions of each method (stage 1)"),
        (
            "optimise",
            "train a y-vector through one method's frozen up-projection, then decode "
            "it through every method (stages 2 and 3)",
        ),
        (
            "transfer",
            "decode a saved intrinsic vector or a training solution's through "
            "other methods (stage 3)",
        ),
    ):
        p = stages.add_parser(stage, help=what)
        p.add_argument(
            "spec",
            help="spec, .yaml/.yml/.json (see docs/subspace.md); relative paths are relative "
            "to its folder",
        )
        p.add_argument(
            "-o", "--output", help=f"output folder (default: <spec>-{stage} beside the spec)"
        )
        p.add_argument("-q", "--quiet", action="store_true", help="no per-step lines")
        p.set_defaults(func=cmd_subspace)


def cmd_subspace(args: argparse.Namespace) -> int:
    from basin.errors import InvalidSpec
    from basin.resolve import FileResolver
    from basin.subspace import run
    from basin.subspace.spec import load_stage_spec

    path = Path(args.spec)
    if not path.is_file():
        raise InvalidSpec(f"subspace {args.stage} spec file not found: {path}")
    spec = load_stage_spec(args.stage, path)
    resolver = FileResolver(path.resolve().parent)
    out = Path(args.output) if args.output else path.with_name(f"{path.stem}-{args.stage}")

    def on_step(rec: dict[str, Any]) -> None:
        if not args.quiet and (rec["step"] == 1 or rec["step"] % 10 == 0):
            print(json.dumps(rec), file=sys.stderr, flush=True)

    def rel(p: str) -> str:
        q = Path(p)
        return str(q if q.is_absolute() else path.resolve().parent / q)

    if args.stage == "fit":
        report = run.run_fit(spec, resolver, out, on_step=on_step)  # type: ignore[arg-type]
    elif args.stage == "optimise":
        spec = spec.model_copy(update={"projections": rel(spec.projections)})  # type: ignore[attr-defined]
        report = run.run_optimise(spec, resolver, out, on_step=on_step)  # type: ignore[arg-type]
    else:
        upd = {"projections": rel(spec.projections)}  # type: ignore[attr-defined]
        if spec.intrinsic:  # type: ignore[attr-defined]
            upd["intrinsic"] = rel(spec.intrinsic)  # type: ignore[attr-defined]
        report = run.run_transfer(spec.model_copy(update=upd), resolver, out)  # type: ignore[arg-type]
    print(json.dumps({"stage": report["stage"], "out": str(out), "rows": report["rows"]}, indent=2))
    return 0
