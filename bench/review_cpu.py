"""CPU cost of the review path per request, in one process, without HTTP or a load generator.

    .venv/bin/python bench/review_cpu.py                       # 60 decisions, SQLite
    .venv/bin/python bench/review_cpu.py --profile screen      # and cProfile's top of one route
    DATABASE_URL=postgres://…/scratch .venv/bin/python bench/review_cpu.py   # on PostgreSQL

One reader works through a five-way stage as review_load.py's readers do (the screen, the
images it names (its radiograph; its masks too when the page does not carry them), the
look-ahead, the submit), through Django's test client with CSRF checks on, the
production middleware, templates and settings. Per route it prints the median and mean CPU
time of the process (time.process_time: what the request costs the web process, whatever else
runs on the machine) and the number of queries. Wall-clock latencies on a shared machine move
with the neighbours' load; CPU time per request hardly does, so before/after comparisons of
the code hold even while others work.

A scratch database (SQLite in a temporary data directory, or the PostgreSQL database that
DATABASE_URL names, which must exist and may be empty: it is migrated and filled) is seeded
like review_load.py's.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
ROUTES = ("screen", "image", "ahead", "submit")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--decisions", type=int, default=60, help="decisions measured")
    p.add_argument("--warmup", type=int, default=5, help="decisions before measuring")
    p.add_argument("--size", type=int, default=512, help="image side in pixels")
    p.add_argument("--mode", choices=["nway", "pairwise"], default="nway")
    p.add_argument("--profile", choices=ROUTES, help="print cProfile's top functions of a route")
    p.add_argument("--top", type=int, default=30, help="functions shown by --profile")
    p.add_argument("--callees", help="with --profile: what this function (a name) calls")
    p.add_argument("--sql", action="store_true", help="print the queries of the last decision")
    p.add_argument(
        "--calls",
        action="store_true",
        help="count the Python function calls of every request (cProfile): a measure of work "
        "that does not move with the machine's speed, for before/after comparisons on a busy "
        "or throttled machine; the CPU times of such a run include the profiler's overhead",
    )
    p.add_argument("--seed", type=int, default=17)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    var_dir = Path(tempfile.mkdtemp(prefix="collabmask-cpu-"))
    os.environ.update(
        COLLABMASK_VAR_DIR=str(var_dir),
        MEDIA_ROOT=str(var_dir / "media"),
        COLLABMASK_MODE="embedded",
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    try:
        return run(args)
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


def run(args) -> int:
    from bench.review_load import PASSWORD, seed

    seeding = argparse.Namespace(
        cases=args.decisions + args.warmup + 2,
        size=args.size,
        mode=args.mode,
        readers=1,
        readers_per_case=1,
        seed=args.seed,
    )
    stage_id, (username,) = seed(seeding, Path(os.environ["COLLABMASK_VAR_DIR"]))
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(enforce_csrf_checks=True, HTTP_HOST="127.0.0.1")
    client.get("/accounts/login/")
    page = client.get("/accounts/login/").content.decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    answer = client.post(
        "/accounts/login/",
        {"username": username, "password": PASSWORD, "csrfmiddlewaretoken": csrf},
    )
    assert answer.status_code == 302 and "/accounts/login/" not in answer.url, "login failed"

    cpu = {r: [] for r in ROUTES}
    nqueries = {r: [] for r in ROUTES}
    ncalls = {r: [] for r in ROUTES}
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    last_sql: dict[str, list[str]] = {}

    def call(route: str, measured: bool, fn):
        with CaptureQueriesContext(connection) as captured:
            if measured and profiler is not None and route == args.profile:
                profiler.enable()
            counter = cProfile.Profile() if measured and args.calls else None
            if counter is not None:
                counter.enable()
            t0 = time.process_time()
            response = fn()
            spent = time.process_time() - t0
            if counter is not None:
                counter.disable()
                ncalls[route].append(pstats.Stats(counter).total_calls)
            if measured and profiler is not None and route == args.profile:
                profiler.disable()
        last_sql[route] = [q["sql"] for q in captured.captured_queries]
        if measured:
            cpu[route].append(1000 * spent)
            nqueries[route].append(len(captured))
        return response

    url = f"/review/s/{stage_id}/next"
    api = {"content_type": "application/json", "HTTP_ACCEPT": "application/json"}
    for i in range(args.warmup + args.decisions):
        measured = i >= args.warmup
        if "/review/s/" in url:
            url = client.get(url).url
        screen = call("screen", measured, lambda u=url: client.get(u))
        assert screen.status_code == 200, screen.status_code
        html = screen.content.decode()
        for image in re.findall(r'data-(?:image|mask)-url="(/[^"]+)"', html):
            got = call("image", measured, lambda u=image: client.get(u))
            assert got.status_code == 200, (image, got.status_code)
        token = url.rstrip("/").split("/")[-1]
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
        call(
            "ahead",
            measured,
            lambda t=token, c=csrf: client.post(
                f"/api/review/tasks/{t}/ahead/", {}, HTTP_X_CSRFTOKEN=c, **api
            ),
        )
        if 'data-review-screen="pairwise"' in html:
            number = re.search(r'data-review-form.*?name="number" value="(\d+)"', html, re.S)
            path, body = (
                f"/api/review/tasks/{token}/round/",
                {"number": int(number.group(1)), "choice": "A"},
            )
        else:
            path, body = f"/api/review/tasks/{token}/pick/", {"position": 1 + i % 5}
        body.update(idempotency_key=str(uuid.uuid4()), time_on_screen_ms=1500)
        got = call(
            "submit",
            measured,
            lambda p=path, b=body, c=csrf: client.post(p, b, HTTP_X_CSRFTOKEN=c, **api),
        )
        assert got.status_code in (200, 201), got.content[:300]
        url = got.json()["page_url"]

    print(f"{connection.vendor}, {args.mode}, {args.size}² px, {args.decisions} decisions measured")
    calls_head = f" {'calls p50':>10}" if args.calls else ""
    print(f"{'route':8} {'n':>5} {'CPU ms p50':>11} {'mean':>7} {'queries':>9}{calls_head}")
    per_decision = calls_per_decision = 0.0
    for route in ROUTES:
        values = cpu[route]
        per = len(values) / args.decisions
        per_decision += statistics.fmean(values) * per
        q = nqueries[route]
        calls = ""
        if args.calls:
            calls_per_decision += statistics.fmean(ncalls[route]) * per
            calls = f" {statistics.median(ncalls[route]):10.0f}"
        print(
            f"{route:8} {len(values):5d} {statistics.median(values):11.2f} "
            f"{statistics.fmean(values):7.2f} {min(q):>4}–{max(q):<4}{calls}"
        )
    print(
        f"per decision (screen + {len(cpu['image']) // args.decisions} images + ahead + submit): "
        f"{per_decision:.1f} CPU-ms"
        + (f", {calls_per_decision:.0f} Python function calls" if args.calls else "")
    )
    if args.sql:
        for route, sqls in last_sql.items():
            print(f"--- {route} ({len(sqls)} queries) ---")
            for sql in sqls:
                print("  " + sql[:300])
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
        stats.print_stats(args.top)
        out.write("\n--- by own time ---\n")
        stats.sort_stats("tottime").print_stats(args.top)
        if args.callees:
            stats.sort_stats("cumulative").print_callees(args.callees)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
