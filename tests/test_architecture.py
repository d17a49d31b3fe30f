"""The core library stays free of web, queue and UI code (ARCHITECTURE.md: "what each may import")."""

from __future__ import annotations

import ast
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
