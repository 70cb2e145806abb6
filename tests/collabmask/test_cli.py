"""The `collabmask` command: help for every command, clear argument errors, and the commands
themselves on a data directory of their own (in a subprocess, as a user runs them)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import pytest

from collabmask import cli
from tests.annotation import cxrfiles
from tests.conftest import REPO_ROOT

COMMANDS = ("start", "import", "export", "worker", "demo", "manage")


def collabmask(*args: str, data_dir=None, cwd=None, env=None) -> subprocess.CompletedProcess:
    """`python -m collabmask ARGS` on the embedded defaults (no DATABASE_URL / REDIS_URL)."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "COLLABMASK_VAR_DIR", "DJANGO_SETTINGS_MODULE")
    }
    clean["PYTHONPATH"] = str(REPO_ROOT)
    clean.update(env or {})
    argv = [sys.executable, "-m", "collabmask", *args]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    return subprocess.run(
        argv, cwd=cwd or REPO_ROOT, env=clean, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def data_dir_env(monkeypatch, tmp_path):
    # main() points COLLABMASK_VAR_DIR at its data directory; keep that out of other tests.
    monkeypatch.setenv("COLLABMASK_VAR_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_help_lists_every_command_and_needs_no_data_directory(tmp_path):
    # Wide enough that argparse does not wrap the path.
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "COLUMNS": "400"}
    done = collabmask("--help", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name in COMMANDS:
        assert f"    {name}" in done.stdout
    assert "--data-dir" in done.stdout and str(tmp_path / "xdg" / "collabmask") in done.stdout
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the data directory


@pytest.mark.parametrize(
    ("command", "mentions"),
    [
        ("start", ["--port", "--host", "--no-seed"]),
        ("import", ["PATH", "--dataset", "--create-dataset", "--licence", "--dry-run"]),
        ("export", ["--dataset", "--formats", "--output", "--licence"]),
        ("worker", ["--queues", "--concurrency", "collabmask[ml]"]),
        ("demo", ["--covid", "--control"]),
    ],
)
def test_each_command_explains_its_arguments(command, mentions, capsys, data_dir_env):
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"usage: collabmask {command}")
    for word in [*mentions, "--data-dir"]:
        assert word in shown, word


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["serve"], "invalid choice: 'serve'"),
        (["import", "--dataset", "x"], "the following arguments are required: PATH"),
        (["import", "folder"], "the following arguments are required: --dataset"),
        (["start", "--port", "eighty"], "argument --port: invalid int value: 'eighty'"),
        (["export", "--dataset", "x", "--split", "halves"], "argument --split: invalid choice"),
        (["demo", "--colour", "red"], "unrecognized arguments: --colour red"),
        (["worker", "--concurrency", "0"], "--concurrency must be at least 1"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys, data_dir_env):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_worker_without_the_ml_extra_says_what_to_install(monkeypatch, capsys, data_dir_env):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "keras" else real(name, *a)
    )
    assert cli.main(["worker"]) == 1
    err = capsys.readouterr().err
    # keras, and its backend too where that is missing as well
    assert err.startswith("collabmask worker: error: keras ") and " not installed; " in err
    assert "pip install 'collabmask[ml]'" in err


def test_a_worker_without_a_running_app_says_to_start_it(
    capsys, data_dir_env, monkeypatch, settings
):
    monkeypatch.setattr("mlworker.extra.ml_missing", lambda: None)
    settings.EMBEDDED_REDIS_SOCKET = data_dir_env / "redis.sock"  # nothing answers there
    settings.REDIS_URL = f"redis+socket://{settings.EMBEDDED_REDIS_SOCKET}"
    assert cli.main(["worker"]) == 1
    assert "run `collabmask start --data-dir" in capsys.readouterr().err


def test_python_m_collabmask_is_the_same_command():
    done = collabmask("--version")
    assert done.returncode == 0 and done.stdout.startswith("collabmask ")


def test_import_then_export_on_a_fresh_data_directory(tmp_path):
    data = tmp_path / "data"
    images = tmp_path / "scans"
    images.mkdir()
    for i in range(2):
        (images / f"control_{i}.png").write_bytes(cxrfiles.png8(40 + i, 48))

    done = collabmask(
        "import", str(images), "--dataset", "Clinic", "--create-dataset", "--label", "normal",
        "--licence", "CC BY 4.0", data_dir=data, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert ["radiographs", "imported", "2"] in [line.split() for line in done.stdout.splitlines()]
    assert (data / "db.sqlite3").exists() and (data / "media").is_dir()

    archive = tmp_path / "clinic.zip"
    done = collabmask(
        "export", "--dataset", "Clinic", "--controls", "--formats", "coco", "--output",
        str(archive), data_dir=data, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    coco = json.loads(zipfile.ZipFile(archive).read("annotations/instances.json"))
    assert len(coco["images"]) == 2 and coco["licenses"][0]["name"] == "CC BY 4.0"


def test_a_command_error_exits_1_and_changes_nothing(tmp_path):
    data = tmp_path / "data"
    done = collabmask("import", str(tmp_path), "--dataset", "Nowhere", data_dir=data)
    assert done.returncode == 1
    assert "collabmask import: error: dataset 'Nowhere' does not exist; add --create-dataset" in (
        done.stderr
    )
    done = collabmask(
        "manage", "shell", "-c",
        "from annotation.models import Dataset; print('datasets:', Dataset.objects.count())",
        data_dir=data,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "datasets: 0" in done.stdout
