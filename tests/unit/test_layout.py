"""The package's layout holds: library code never imports a command module, and no module imports another
module's private names (read from the source with ``ast``, nothing imported)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "csplade_pyserini"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))}


def is_command(name: str, tree: ast.Module) -> bool:
    """A ``python -m`` face: a ``__main__`` module, or a module that runs ``run_cli`` under ``__main__``."""
    if name.endswith(".__main__"):
        return True
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and "run_cli" in ast.unparse(node):
            return True
    return False


def imports(tree: ast.Module):
    """``(module, names)`` of every ``from csplade_pyserini... import names`` and ``import csplade_pyserini...``,
    at any depth (function-level imports count too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("csplade_pyserini"):
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("csplade_pyserini"):
                    yield alias.name, []


def test_library_code_imports_no_command_module():
    trees = modules()
    commands = {name for name, tree in trees.items() if is_command(name, tree)}
    assert {"csplade_pyserini.index.__main__", "csplade_pyserini.search.__main__", "csplade_pyserini.encode"} <= commands
    offending = []
    for name, tree in trees.items():
        if name in commands:
            continue
        for target, names in imports(tree):
            full = {target} | {f"{target}.{n}" for n in names}
            if full & commands:
                offending.append(f"{name} imports {sorted(full & commands)}")
    assert offending == []


def test_no_module_imports_another_modules_private_names():
    offending = [f"{name}: from {target} import {n}" for name, tree in modules().items()
                 for target, names in imports(tree) for n in names
                 if n.startswith("_") and not n.startswith("__") and target != name]
    assert offending == []


def test_the_benchmarks_are_not_part_of_the_package():
    assert not (PACKAGE / "benchmarks").exists()
    assert (PACKAGE.parent / "benchmarks" / "zero_shot.py").is_file()


def test_each_command_is_its_package_face():
    """``train`` and ``evaluate`` are packages whose ``__main__`` is the command, as ``index``, ``search``,
    ``runs`` and ``repro``: no command module beside a library package of a near name (``train.py`` beside
    ``training/``)."""
    for name in ("train", "evaluate", "index", "search", "runs", "repro"):
        assert (PACKAGE / name / "__main__.py").is_file(), name
    assert not [p.name for p in PACKAGE.iterdir() if p.name in ("training", "evaluation", "train.py", "evaluate.py")]


def test_docs_and_code_name_only_files_that_exist():
    """A path the docs or the code name (``docs/...``, ``tests/...``, ``csplade_pyserini/...``) is in the
    repository: files move, and a stale name sends a newcomer nowhere. History (``CHANGELOG.md``) and the
    dated reports in ``eval/results/`` keep the names of their day."""
    import re
    import subprocess

    import pytest

    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    pattern = re.compile(r"(?<![\w/.-])((?:csplade_pyserini|tests|docs|benchmarks|scripts)/[\w./-]+\.(?:py|md|yaml))")
    listed = subprocess.run(["git", "ls-files", "*.md", "*.py", "*.yaml", "Makefile"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.split()
    missing = []
    for name in listed:
        if name == "CHANGELOG.md" or name.startswith("eval/results/"):
            continue
        for number, line in enumerate((REPO / name).read_text(encoding="utf-8").splitlines(), 1):
            missing += [f"{name}:{number}: {path}" for path in pattern.findall(line)
                        if not (REPO / path.rstrip(".")).exists()]
    assert missing == []
