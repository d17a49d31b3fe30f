"""The core library stays free of web, queue and UI code (ARCHITECTURE.md: "what each may import")."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_CORE = {
    "fastapi", "starlette", "uvicorn", "celery", "kombu", "redis", "dash", "flask", "a2wsgi",
    "service", "backend", "workers", "frontend",
}
FORBIDDEN_IN_SERVICE = {"backend", "workers", "frontend", "fastapi", "starlette", "dash", "flask"}
FORBIDDEN_IN_FRONTEND = {"backend", "workers", "celery", "redis", "torch", "transformers"}


def _imports(package: Path) -> list[tuple[Path, int, str]]:
    """Every absolute import (top-level or inside functions) in a package: (file, line, module)."""
    found = []
    for file in sorted(package.rglob("*.py")):
        tree = ast.parse(file.read_text(), filename=str(file))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(file, node.lineno, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((file, node.lineno, node.module))
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("basin", FORBIDDEN_IN_CORE),
        ("service", FORBIDDEN_IN_SERVICE),
        ("frontend", FORBIDDEN_IN_FRONTEND | {"service"}),
        ("backend", {"workers"}),
        ("workers", {"backend"}),
    ],
)
def test_package_imports_only_what_its_layer_may(package: str, forbidden: set[str]) -> None:
    bad = [
        f"{f.relative_to(ROOT)}:{line} imports {mod}"
        for f, line, mod in _imports(ROOT / package)
        if mod.split(".")[0] in forbidden
    ]
    assert not bad, "layering broken:\n" + "\n".join(bad)


def test_importing_the_core_pulls_in_no_service_module() -> None:
    code = (
        "import sys, basin.spec, basin.engine, basin.drive, basin.cli;"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN_IN_CORE)!r});"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "", f"core import pulled in: {out.stdout.strip()}"


def test_the_dashboard_builds_without_torch_or_service_code() -> None:
    """The frontend imports the status vocabulary, the figures and the registries from
    ``basin`` and talks to the API over HTTP: building every page loads no torch,
    transformers, peft, service, queue or backend module (lint-imports only sees direct
    imports of the frontend; this sees what they pull in)."""
    code = (
        "import sys; from frontend.app import create_dash_app; create_dash_app();"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'peft',"
        " 'service', 'backend', 'workers', 'redis', 'celery'}); print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"the dashboard pulled in: {out.stdout.strip()}"


PACKAGES = ("basin", "service", "backend", "workers", "frontend")


def _graph():
    grimp = pytest.importorskip("grimp")  # installed with import-linter (the dev extra)
    # every import counts: module level, inside functions, and under TYPE_CHECKING
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def test_no_import_cycles_among_the_five_packages() -> None:
    """A module never imports (directly or through others) a module that imports it back."""
    graph = _graph()
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if imported in graph.modules and graph.chain_exists(importer=imported, imported=importer):
                back = graph.find_shortest_chain(importer=imported, imported=importer) or ()
                cycles.append(" → ".join([importer, *back]))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize(
    ("leaf", "may_import"),
    [
        ("basin.formats", {"basin.errors", "basin.strict_json"}),  # file formats: core and store
        ("basin.source", set()),  # where a checkpoint's files live
        ("basin.status", set()),  # the status vocabulary: the frontend reads it without torch
        ("service.errors", {"basin.errors"}),  # the service's exceptions
        ("service.archives", {"basin.errors", "service.errors"}),  # archive safety
    ],
)
def test_leaf_modules_import_only_what_they_may(leaf: str, may_import: set[str]) -> None:
    graph = _graph()
    ours = {m for m in graph.find_modules_directly_imported_by(leaf) if m.split(".")[0] in PACKAGES}
    assert ours <= may_import, f"{leaf} imports {sorted(ours - may_import)}"


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    return {id(n.body[0].value) for n in nodes if n.body and isinstance(n.body[0], ast.Expr)}


def test_every_redis_key_is_spelled_in_keys_py_only() -> None:
    """A key written out elsewhere drifts from the layout (``service/runstate/keys.py``)."""
    key = re.compile(r"\bbasin:[a-z_{]")
    bad = []
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            if file == ROOT / "service" / "runstate" / "keys.py":
                continue
            tree = ast.parse(file.read_text(), filename=str(file))
            docs = _docstrings(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                    if key.search(node.value):
                        bad.append(f"{file.relative_to(ROOT)}:{node.lineno}: {node.value[:60]!r}")
    assert not bad, "Redis keys spelled outside keys.py:\n" + "\n".join(bad)


def test_the_image_copies_every_package_the_project_installs() -> None:
    """The Dockerfile copies each top-level package pyproject installs (``service/`` was
    missing: the image's API and workers failed at their first import of the service layer)."""
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in include}
    copied = set(re.findall(r"^COPY\s+(\w+)\s+\./\1\s*$", (ROOT / "Dockerfile").read_text(), re.M))
    assert packages <= copied, f"the Dockerfile does not copy {sorted(packages - copied)}"
def test_every_lua_script_lives_in_a_file_and_reads_the_one_status_vocabulary() -> None:
    """Lua in files (``service/runstate/lua/*.lua``, issue 22): fits once kept theirs as
    inline strings beside the runs' files. No string in the five packages holds a Redis
    script, each ``.eval(`` runs one read by ``script(name)`` (the status prelude + the file),
    and each name it reads is a file."""
    from basin.status import lua_prelude
    from service.runstate.queue import LUA_DIR, script

    lua = re.compile(r"redis\.p?call\s*\(")
    bad, names = [], set()
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(file.read_text(), filename=str(file))
            for node in ast.walk(tree):
                where = f"{file.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and lua.search(node.value):
                    bad.append(f"{where}: inline Lua")
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args
                        and node.func.attr in ("eval", "evalsha", "register_script")):  # not model.eval()
                    arg = node.args[0]
                    if not (isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name)
                            and arg.func.id == "script" and isinstance(arg.args[0], ast.Constant)):
                        bad.append(f"{where}: .{node.func.attr}() of something other than script('<name>')")
                    else:
                        names.add(arg.args[0].value)
    assert not bad, "Lua outside service/runstate/lua:\n" + "\n".join(bad)
    assert names and names <= {p.stem for p in LUA_DIR.glob("*.lua")}, names
    assert all(script(n).startswith(lua_prelude()) for n in names)  # the statuses of basin.status
