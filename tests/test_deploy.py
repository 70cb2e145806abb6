"""docker-compose.yml and the Dockerfile name only entry points that exist."""

from __future__ import annotations

import importlib
import json
import re

import pytest
import yaml
from django.core.management import get_commands

from annotation.management.commands.run_embedded import (
    CPU_QUEUES,
    INTERACTIVE_WORKER,
    WORKER_QUEUES,
)
from annotation.models import Job
from annotation.services.interactive import QUEUE as INTERACTIVE_QUEUE
from annotation.services.interactive import REFINE_TASK
from annotation.services.jobs import TASKS
from config.celery_app import app as celery_app
from tests.conftest import REPO_ROOT

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
OUR_IMAGES = {"collabmask:latest", "collabmask:gpu"}
# The job queues, and the click-to-refine queue (its messages are clicks, not jobs).
ROUTED = {queue for _name, queue in TASKS.values()} | {INTERACTIVE_QUEUE}


def _our_services():
    return {
        name: spec
        for name, spec in COMPOSE["services"].items()
        if "build" in spec or spec.get("image") in OUR_IMAGES
    }


def _assert_entry_point(argv: list[str]) -> None:
    program = argv[0]
    if program == "python":
        assert argv[1] == "manage.py", argv
        assert argv[2] in get_commands(), f"no management command {argv[2]!r}"
    elif program == "gunicorn":
        module, _, attr = argv[1].partition(":")
        assert callable(getattr(importlib.import_module(module), attr or "application"))
    elif program == "celery":
        assert argv[1:3] == ["-A", "config"]
        assert importlib.import_module("config").celery_app is celery_app
        assert argv[3] in ("worker", "beat")
        if argv[3] == "beat":
            assert celery_app.conf.beat_schedule, "beat runs but nothing is scheduled"
            return
        queues = set(argv[argv.index("--queues") + 1].split(","))
        assert queues <= ROUTED | {celery_app.conf.task_default_queue}, queues
    else:
        pytest.fail(f"unknown entry point {program!r}")


def test_every_service_command_names_a_real_entry_point():
    services = _our_services()
    assert {"web", "worker-cpu", "worker-gpu0", "migrate", "beat"} <= services.keys()
    for spec in services.values():
        _assert_entry_point(spec["command"])


def _consumed(command: list[str]) -> set[str]:
    return set(command[command.index("--queues") + 1].split(","))


def test_every_routed_queue_has_a_worker_and_every_routed_task_exists():
    # Settings hold no routes of their own: annotation.services.jobs.TASKS is the one table.
    assert not celery_app.conf.task_routes
    workers = [spec["command"] for spec in _our_services().values() if "worker" in spec["command"]]
    consumed = set().union(*map(_consumed, workers))
    assert ROUTED | {celery_app.conf.task_default_queue} <= consumed, consumed
    celery_app.loader.import_default_modules()
    assert {name for name, _queue in TASKS.values()} | {REFINE_TASK} <= set(celery_app.tasks)


def test_clicks_have_a_worker_of_their_own_that_keeps_its_model_in_one_process():
    compose = COMPOSE["services"]["worker-interactive"]["command"]
    for command in (compose, list(INTERACTIVE_WORKER)):
        assert _consumed(command) == {INTERACTIVE_QUEUE}
        assert command[command.index("--pool") + 1] == "solo"


def test_the_embedded_worker_serves_every_routed_queue():
    served = set(WORKER_QUEUES) | _consumed(list(INTERACTIVE_WORKER))
    assert ROUTED | {celery_app.conf.task_default_queue} <= served
    # Without the ML extra it still takes imports and exports.
    assert TASKS[Job.Kind.IMPORT][1] in CPU_QUEUES and TASKS[Job.Kind.EXPORT][1] in CPU_QUEUES


def test_the_gpu_worker_reserves_a_gpu_and_serves_the_gpu_queue_alone():
    gpu = COMPOSE["services"]["worker-gpu0"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    command = gpu["command"]
    assert command[command.index("--queues") + 1] == "gpu"
    assert command[command.index("--concurrency") + 1] == "1"


def test_workers_share_only_database_broker_and_media_settings():
    for name in ("worker-cpu", "worker-gpu0", "web"):
        env = COMPOSE["services"][name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["REDIS_URL"].startswith("redis://")
        assert "MEDIA_S3_BUCKET" in env


def test_the_dockerfile_default_command_is_real():
    cmd = re.search(r"^CMD (\[.*\])$", (REPO_ROOT / "Dockerfile").read_text(), re.M)
    _assert_entry_point(json.loads(cmd.group(1)))
