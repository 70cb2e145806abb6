"""The package rooms of ARCHITECTURE.md: the web never loads Keras; mlworker needs no Django."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

ML_MODULES = ("keras", "tensorflow", "torch", "jax")


def _imports(path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _python_files(package: str):
    return sorted((REPO_ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _python_files("annotation") + _python_files("config"), ids=str)
def test_the_web_side_never_imports_ml_frameworks(path):
    assert not _imports(path) & set(ML_MODULES), (
        f"{path} imports {_imports(path) & set(ML_MODULES)}"
    )


@pytest.mark.parametrize(
    "path",
    [p for p in _python_files("mlworker") if "tasks" not in p.relative_to(REPO_ROOT).parts[:2]],
    ids=str,
)
def test_mlworker_outside_tasks_never_imports_django(path):
    assert not _imports(path) & {"django", "annotation", "config", "rest_framework", "celery"}


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
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {ML_MODULES!r})
print("LOADED:", loaded)
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "LOADED: []" in done.stdout, done.stdout
