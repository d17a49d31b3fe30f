"""Drop a new path type into ``basin/paths/`` for a test, and take it out again.

A path type is one module (ARCHITECTURE.md, "One place per idea"): the registry
discovers it and the spec, engine, figures, CLI, API and form all follow. The drop-in
tests prove it by copying an existing module under a new type name and running it
through a front door in a *fresh process* (the registry is built at import), with no
other edit. Reused by the core test (CLI) and meant for the API / browser versions.

    with dropped_in_path("linear") as new_type:
        ...  # subprocesses started here see path type ``new_type``
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path


def paths_package() -> Path:
    """The folder of the ``basin.paths`` that this interpreter imports (the worktree's)."""
    import basin.paths

    return Path(basin.paths.__file__).parent


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def copy_path_module(source: str, new_type: str, folder: Path | None = None) -> Path:
    """Write ``<folder>/<new_type>.py``: ``<source>.py`` with its type and class names renamed.

    Every string literal ``"<source>"`` becomes ``"<new_type>"`` (the ``type`` ClassVar and
    the spec model's ``Literal`` tag), and each class the module defines is renamed
    (``Linear`` → ``LinearCopyTest``, ``LinearPath`` → ``LinearCopyTestPath``) so the
    new spec model has a name of its own in JSON schemas. Returns the new file.
    """
    folder = folder or paths_package()
    src = (folder / f"{source}.py").read_text()
    text = src.replace(f'"{source}"', f'"{new_type}"')
    old_stem, new_stem = _camel(source), _camel(new_type)
    for cls in re.findall(r"^class (\w+)\(", src, flags=re.M):
        new = new_stem + cls[len(old_stem):] if cls.startswith(old_stem) else cls + new_stem
        text = re.sub(rf"\b{cls}\b", new, text)
    if text == src:
        raise ValueError(f"nothing renamed in {source}.py")
    dest = folder / f"{new_type}.py"
    if dest.exists():
        raise FileExistsError(dest)
    dest.write_text(f'# a copy of {source}.py made by tests/dropin.py; delete it if a test left it\n{text}')
    return dest


def remove_path_module(file: Path) -> None:
    """Delete a dropped-in module and its bytecode."""
    file.unlink(missing_ok=True)
    for pyc in (file.parent / "__pycache__").glob(f"{file.stem}.*.pyc"):
        pyc.unlink(missing_ok=True)


@contextlib.contextmanager
def dropped_in_path(source: str = "linear", new_type: str | None = None) -> Iterator[str]:
    """A copy of path type ``source`` under a unique new type name, removed on exit.

    Yields the new type name (default ``<source>_copy_test_<8 hex>``). Only processes
    started inside the block see it: the registry of the current process was built
    when :mod:`basin.paths` was first imported.
    """
    new_type = new_type or f"{source}_copy_test_{uuid.uuid4().hex[:8]}"
    file = copy_path_module(source, new_type)
    try:
        yield new_type
    finally:
        remove_path_module(file)


# ---- tasks ------------------------------------------------------------------------------------


def tasks_package() -> Path:
    """The folder of the ``basin.tasks`` that this interpreter imports (the worktree's)."""
    import basin.tasks

    return Path(basin.tasks.__file__).parent


def copy_task_module(source: str, new_name: str, folder: Path | None = None) -> Path:
    """Write ``<folder>/<new_name>.py``: ``<source>.py`` with its task name renamed.

    Every string literal ``"<source>"`` (the entry's ``name``) becomes ``"<new_name>"``;
    nothing else changes, so the copy reports the same metrics with the same evaluator.
    """
    folder = folder or tasks_package()
    src = (folder / f"{source}.py").read_text()
    text = src.replace(f'"{source}"', f'"{new_name}"')
    if text == src:
        raise ValueError(f"nothing renamed in {source}.py")
    dest = folder / f"{new_name}.py"
    if dest.exists():
        raise FileExistsError(dest)
    dest.write_text(f'# a copy of {source}.py made by tests/dropin.py; delete it if a test left it\n{text}')
    return dest


@contextlib.contextmanager
def dropped_in_task(source: str = "classification", new_name: str | None = None) -> Iterator[str]:
    """A copy of task ``source`` under a unique new name in ``basin/tasks/``, removed on exit.

    Yields the new task name (default ``<source>_copy_test_<8 hex>``); as with
    :func:`dropped_in_path`, only processes started inside the block see it.
    """
    new_name = new_name or f"{source}_copy_test_{uuid.uuid4().hex[:8]}"
    file = copy_task_module(source, new_name)
    try:
        yield new_name
    finally:
        remove_path_module(file)
