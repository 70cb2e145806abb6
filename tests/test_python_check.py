"""requirements/python_check.py: the Makefile's Python check and its choice of interpreter."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "requirements" / "python_check.py"
_spec = importlib.util.spec_from_file_location("python_check", SCRIPT)
python_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(python_check)


def test_the_supported_versions_are_pyprojects():
    assert python_check.supported_versions() == [(3, 11), (3, 12), (3, 13)]


@pytest.mark.parametrize("version", [(3, 11, 7), (3, 12, 1), (3, 13, 0)])
def test_supported_versions_pass(version):
    assert python_check.verdict(version, "python3", python_check.supported_versions()) is None


@pytest.mark.parametrize("version", [(3, 10, 13), (3, 14, 0), (2, 7, 18)])
def test_other_versions_get_a_message_naming_the_supported_ones(version):
    message = python_check.verdict(version, "/usr/bin/python3", python_check.supported_versions())
    assert message.startswith("collabmask needs Python 3.11, 3.12 or 3.13;")
    assert f"/usr/bin/python3 is Python {'.'.join(map(str, version))}" in message
    assert "PYTHON=/path/to/python3.13 make run" in message


def _copy_with_pyproject(tmp_path, requires: str):
    (tmp_path / "requirements").mkdir()
    shutil.copy(SCRIPT, tmp_path / "requirements" / SCRIPT.name)
    (tmp_path / "pyproject.toml").write_text(f'[project]\nrequires-python = "{requires}"\n')
    return tmp_path / "requirements" / SCRIPT.name


def test_the_script_refuses_this_interpreter_when_pyproject_does(tmp_path):
    this = sys.version_info
    script = _copy_with_pyproject(tmp_path, f">=3.{this.minor + 1},<3.{this.minor + 3}")
    done = subprocess.run([sys.executable, script], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"collabmask needs Python 3.{this.minor + 1} or 3.{this.minor + 2};"
    )
    ok = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stderr == ""


def _fake_python(folder, name: str, version: str | None) -> None:
    """A command that answers like `python -c "...version..."`, or fails like an unselected
    pyenv shim (version None)."""
    path = folder / name
    body = f"echo {version}" if version else "echo 'pyenv: command not found' >&2; exit 127"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.mark.parametrize(
    ("available", "picked"),
    [
        ({"python3.13": "3.13", "python3.12": "3.12", "python3": "3.11"}, "python3.13"),
        ({"python3.13": None, "python3.12": "3.12", "python3": "3.11"}, "python3.12"),
        ({"python3.11": "3.11", "python3": "3.10"}, "python3.11"),
        ({"python3": "3.12"}, "python3"),
        ({"python3": "3.10"}, None),
    ],
)
def test_pick_takes_the_newest_supported_interpreter_that_runs(tmp_path, available, picked):
    for name, version in available.items():
        _fake_python(tmp_path, name, version)
    done = subprocess.run(
        [sys.executable, SCRIPT, "--pick"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(tmp_path)},
    )
    if picked is None:
        assert done.returncode == 1 and done.stdout == ""
    else:
        assert done.returncode == 0 and done.stdout.strip() == picked


def _real_python_3_10() -> str | None:
    """A real Python 3.10 when the machine has one: on the PATH, or a pyenv build."""
    runs = subprocess.run(["sh", "-c", "python3.10 -c ''"], capture_output=True).returncode == 0
    if runs:
        return "python3.10"
    builds = sorted((Path.home() / ".pyenv" / "versions").glob("3.10*/bin/python3.10"))
    return str(builds[-1]) if builds else None


def test_make_refuses_an_unsupported_python_before_making_a_virtualenv(tmp_path):
    old = _real_python_3_10()
    if old is None:
        pytest.skip("no Python 3.10 on this machine to be refused")
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["make", "install", f"PYTHON={old}", f"VENV={venv}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "collabmask needs Python 3.11, 3.12 or 3.13; " in done.stderr
    assert "is Python 3.10." in done.stderr
    assert not venv.exists()
