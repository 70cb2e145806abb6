"""The layering of docs/architecture.md, checked on the source: which package may import which,
and no import cycle anywhere in the project.

Imports are read with `ast`, so an import inside a function counts as much as one at the top of
a module: a function-level import only delays a cycle, it does not remove it.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("annotation", "collabmask", "config", "cxrio", "mlworker")
ML_FRAMEWORKS = frozenset({"keras", "tensorflow", "torch", "jax"})
WEB_FRAMEWORKS = frozenset(
    {"django", "rest_framework", "celery", "annotation", "config", "collabmask"}
)


@cache
def project_modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
            if "migrations" in parts:
                continue  # generated; they import only Django and each other
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


@cache
def imported_names(module: str) -> frozenset[str]:
    """Every dotted name the module imports, anywhere in its body (a from-import of a name
    counts as `package.name`, which is a module when the name is a submodule)."""
    path = project_modules()[module]
    is_package = path.name == "__init__.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(names)


def project_imports(module: str) -> set[str]:
    """The project modules this module imports (a name inside a module counts as the module)."""
    modules = project_modules()
    found = set()
    for name in imported_names(module):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)
    return found


def top_level(module: str) -> set[str]:
    return {name.split(".")[0] for name in imported_names(module)}


def import_cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    graph = {module: project_imports(module) for module in project_modules()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def modules_of(package: str) -> list[str]:
    return [m for m in project_modules() if m == package or m.startswith(package + ".")]


def test_the_checker_sees_function_level_imports_and_cycles(tmp_path, monkeypatch):
    # The rules below are only as good as this reader of imports: prove it on a tiny tree.
    (tmp_path / "mlworker").mkdir()
    (tmp_path / "mlworker" / "__init__.py").write_text("")
    (tmp_path / "mlworker" / "a.py").write_text("def f():\n    from . import b\n")
    (tmp_path / "mlworker" / "b.py").write_text("import django\nfrom mlworker.a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO_ROOT", tmp_path)
    project_modules.cache_clear()
    imported_names.cache_clear()
    try:
        assert import_cycles() == [["mlworker.a", "mlworker.b"]]
        assert "django" in top_level("mlworker.b")
    finally:
        project_modules.cache_clear()
        imported_names.cache_clear()


def test_there_is_no_import_cycle_between_project_modules():
    assert import_cycles() == []


@pytest.mark.parametrize("module", modules_of("mlworker"))
def test_mlworker_is_pure_ml(module):
    # The machine side takes arrays and paths; the Django side drives it, never the reverse.
    assert not top_level(module) & WEB_FRAMEWORKS


@pytest.mark.parametrize("module", modules_of("cxrio"))
def test_cxrio_needs_neither_django_nor_a_network(module):
    assert not top_level(module) & (WEB_FRAMEWORKS | ML_FRAMEWORKS | {"mlworker"})


@pytest.mark.parametrize(
    "module", modules_of("annotation") + modules_of("config") + modules_of("collabmask")
)
def test_the_django_side_reaches_keras_only_through_mlworker(module):
    assert not top_level(module) & ML_FRAMEWORKS


@pytest.mark.parametrize("module", modules_of("annotation") + modules_of("config"))
def test_the_command_line_is_the_top_nothing_imports_it(module):
    # mlworker and cxrio are kept from it by the rules above.
    assert "collabmask" not in top_level(module)


def test_the_web_process_loads_every_url_without_keras():
    code = f"""
import sys, django
django.setup()
from django.urls import get_resolver
from django.test import Client
import config.wsgi
def walk(patterns):
    for p in patterns:
        if hasattr(p, "url_patterns"):
            walk(p.url_patterns)
        else:
            p.callback
walk(get_resolver().url_patterns)
Client().get("/accounts/login/")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {sorted(ML_FRAMEWORKS)!r})
print("LOADED:", loaded)
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "LOADED: []" in done.stdout, done.stdout
