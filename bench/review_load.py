"""Load on the review screens: N simulated readers over HTTP against gunicorn + PostgreSQL.

    .venv/bin/python bench/review_load.py --readers 8 --cases 120 --workers 4

Creates a scratch database (dropped afterwards unless --keep) on the PostgreSQL server that
--database-url names, seeds a five-way (or pairwise) stage with generated cases, starts gunicorn
on it, and lets every reader log in and work through the queue as a browser would: open the
screen, fetch the image and the masks, ask the review API for the next case ahead, post the
choice to the review API (JSON, session cookie and CSRF token, as review.js does). Some posts
are sent twice with the same key (a network retry) and some again with a fresh key (a second
tab). It prints p50/p95 latency of the review screen, the images and the decision submission,
decisions per second, and checks the database afterwards: every acknowledged decision stored
exactly once, none lost, none duplicated. Exit status 1 if that check fails.
"""

from __future__ import annotations

import argparse
import hashlib
import http.cookiejar
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere
PASSWORD = "bench-reader-password-1"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--readers", type=int, default=8, help="concurrent simulated readers")
    p.add_argument("--cases", type=int, default=120, help="cases in the stage")
    p.add_argument("--readers-per-case", type=int, default=1)
    p.add_argument("--mode", choices=["nway", "pairwise"], default="nway")
    p.add_argument(
        "--size", type=int, default=512, help="image side in pixels (mask at the same size)"
    )
    p.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    p.add_argument("--threads", type=int, default=2, help="gunicorn threads per worker")
    p.add_argument(
        "--retry-rate", type=float, default=0.05, help="posts repeated with the same key"
    )
    p.add_argument(
        "--tab-rate", type=float, default=0.05, help="posts repeated from a 'second tab'"
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/collabmask"),
        help="PostgreSQL server to use; the bench creates its own database there",
    )
    p.add_argument("--port", type=int, default=0, help="gunicorn port (0: a free one)")
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


# --- set-up: scratch database, seeded stage --------------------------------------------------


def scratch_database(url: str) -> tuple[str, str]:
    """(admin URL, scratch URL): a database named collabmask_bench_<pid> on the same server."""
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        sys.exit("review_load needs PostgreSQL (--database-url postgres://…), as in production")
    name = f"collabmask_bench_{os.getpid()}"
    admin = parts._replace(path="/postgres").geturl()
    return admin, parts._replace(path=f"/{name}").geturl()


def admin_sql(admin_url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql)


def seed(args, var_dir: Path) -> tuple[int, list[str]]:
    """Migrate, then a stage with args.cases generated cases; returns (stage id, usernames)."""
    import django

    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    django.setup()
    import numpy as np
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command

    from annotation.demo.review import review_demo_stage
    from annotation.models import Dataset, Radiograph
    from annotation.services.candidates import mask_create
    from annotation.storage import DISPLAY, blob_write, content_path
    from cxrio.images import encode_png

    call_command("migrate", verbosity=0)
    rng = np.random.default_rng(args.seed)
    dataset = Dataset.objects.create(name="review load bench")
    side = args.size
    yy, xx = np.mgrid[0:side, 0:side]
    for i in range(args.cases):
        image = np.clip(
            60
            + 120 * np.exp(-(((xx - side / 2) / (side / 3)) ** 2))
            + rng.normal(0, 8, (side, side)),
            0,
            255,
        )
        data = encode_png(image.astype(np.uint8))
        sha = hashlib.sha256(data).hexdigest()
        path = content_path(DISPLAY, sha, "png")
        blob_write(path, data)
        radiograph = Radiograph.objects.create(
            dataset=dataset, name=f"bench-{i:05d}.png", sha256=sha, original=path, display=path,
            source_format="png", width=side, height=side, bit_depth=8, work_width=side, work_height=side,
        )  # fmt: skip
        cx, cy = rng.uniform(0.3, 0.7, 2) * side
        manual = ((xx - cx) / (0.15 * side)) ** 2 + ((yy - cy) / (0.2 * side)) ** 2 <= 1
        mask_create(radiograph=radiograph, pixels=manual, kind="manual")
    stage = review_demo_stage(
        dataset=dataset,
        mode=args.mode,
        n_networks=4 if args.mode == "nway" else 3,
        readers_per_case=args.readers_per_case,
        seed=args.seed,
    )
    md = Group.objects.get(name="md")
    names = []
    for r in range(args.readers):
        user = get_user_model().objects.create_user(f"bench-md-{r}", password=PASSWORD)
        user.groups.add(md)
        names.append(user.username)
    return stage.pk, names


# --- one simulated reader ---------------------------------------------------------------------


class Reader:
    def __init__(self, base: str, username: str, stage_id: int, args, rng: random.Random):
        self.base, self.username, self.stage_id, self.args, self.rng = (
            base,
            username,
            stage_id,
            args,
            rng,
        )
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.timings: dict[str, list[float]] = {"screen": [], "image": [], "submit": []}
        self.acknowledged: dict[str, str] = {}  # task token -> key of the acknowledged decision
        self.errors: list[str] = []
        self.conflicts = 0

    def request(self, path: str, data: dict | None = None, *, api: dict | None = None, csrf=""):
        """GET `path`; POST a form (`data`), or, with `api`, the review API's JSON body."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        if api is not None:
            body = json.dumps(api).encode()
        req = urllib.request.Request(self.base + path if path.startswith("/") else path, data=body)
        if api is not None:
            req.add_header("Content-Type", "application/json")
            req.add_header("Accept", "application/json")
            req.add_header("X-CSRFToken", csrf)
        start = time.perf_counter()
        try:
            with self.opener.open(req, timeout=60) as response:
                payload = response.read()
                status, url = response.status, response.geturl()
        except urllib.error.HTTPError as exc:
            payload, status, url = exc.read(), exc.code, exc.geturl()
        return status, url, payload, time.perf_counter() - start

    def login(self) -> None:
        _, _, page, _ = self.request("/accounts/login/")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
        status, url, _, _ = self.request(
            "/accounts/login/",
            {"username": self.username, "password": PASSWORD, "csrfmiddlewaretoken": token},
        )
        if "/accounts/login/" in url:
            raise RuntimeError(f"{self.username} could not log in")

    def run(self) -> None:
        self.login()
        url = f"/review/s/{self.stage_id}/next"
        while True:
            start = time.perf_counter()
            # A case's page, or a stage's "next" page that redirects to one (or says none left).
            status, url, html, elapsed = self.request(url)
            if "/review/t/" not in url:
                return
            if status != 200:
                self.errors.append(f"screen {url}: HTTP {status}")
                return
            self.timings["screen"].append(elapsed)
            page = html.decode()
            for image in re.findall(r'data-(?:image|mask)-url="([^"]+)"', page):
                status, _, _, elapsed = self.request(image)
                self.timings["image"].append(elapsed)
                if status != 200:
                    self.errors.append(f"image {image}: HTTP {status}")
            token = url.rstrip("/").split("/")[-1]
            csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
            self.request(f"/api/review/tasks/{token}/ahead/", api={}, csrf=csrf)
            url = self.decide(page, token, start, csrf)
            if url is None:
                return

    def decide(self, page: str, token: str, shown: float, csrf: str) -> str | None:
        key = str(uuid.uuid4())
        think_ms = int((time.perf_counter() - shown) * 1000)
        if 'data-review-screen="pairwise"' in page:
            number = int(re.search(r'name="number" value="(\d+)"', page).group(1))
            path = f"/api/review/tasks/{token}/round/"
            body = {"number": number, "choice": self.rng.choice("AB")}
        else:
            n = len(re.findall(r'name="position" value="\d+"', page))
            path = f"/api/review/tasks/{token}/pick/"
            body = {"position": self.rng.randint(1, n)}
        body.update(idempotency_key=key, time_on_screen_ms=think_ms)
        status, _, payload, elapsed = self.request(path, api=body, csrf=csrf)
        self.timings["submit"].append(elapsed)
        if status not in (200, 201):
            self.errors.append(f"submit {path}: HTTP {status} {payload[:200]!r}")
            return None
        answer = json.loads(payload)
        if self.rng.random() < self.args.retry_rate:  # the network retried: same key
            again = self.request(path, api=body, csrf=csrf)
            if again[0] not in (200, 201):
                self.errors.append(f"retry {path}: HTTP {again[0]}")
        if self.rng.random() < self.args.tab_rate:  # a second tab: a fresh key
            other = self.request(
                path, api={**body, "idempotency_key": str(uuid.uuid4())}, csrf=csrf
            )
            self.conflicts += other[0] == 409
        if answer["decision"] is not None:  # the case is decided (pairwise: its last round)
            self.acknowledged[token] = key
        page_url = answer["page_url"]
        return self.base + page_url if page_url.startswith("/") else page_url


# --- run --------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    args = parse_args()
    admin_url, url = scratch_database(args.database_url)
    admin_sql(admin_url, f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"')
    var_dir = Path(tempfile.mkdtemp(prefix="collabmask-bench-"))
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "MEDIA_ROOT": str(var_dir / "media"),
        "COLLABMASK_VAR_DIR": str(var_dir),
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "MEDIA_ROOT", "COLLABMASK_VAR_DIR")})
    server = None
    try:
        t0 = time.perf_counter()
        stage_id, usernames = seed(args, var_dir)
        print(
            f"seeded {args.cases} cases ({args.mode}, {args.size}² px) in {time.perf_counter() - t0:.1f} s"
        )
        port = args.port or _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}",
             "--workers", str(args.workers), "--threads", str(args.threads), "--log-level", "warning"],
            cwd=REPO, env=env,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        _wait_for(base)
        readers = [
            Reader(base, name, stage_id, args, random.Random(args.seed + i))
            for i, name in enumerate(usernames)
        ]
        started = time.perf_counter()
        with ThreadPoolExecutor(len(readers)) as pool:
            for future in [pool.submit(r.run) for r in readers]:
                future.result()
        wall = time.perf_counter() - started
        return report(args, readers, wall)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        from django.db import connections

        connections.close_all()
        if not args.keep:
            admin_sql(admin_url, f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        else:
            print(f"kept database {url}")


def report(args, readers: list[Reader], wall: float) -> int:
    from annotation.models import Decision, ReviewTask

    timings = {k: [t for r in readers for t in r.timings[k]] for k in ("screen", "image", "submit")}
    acknowledged = {token: key for r in readers for token, key in r.acknowledged.items()}
    errors = [e for r in readers for e in r.errors]
    stored = Decision.objects.filter(revoked_at__isnull=True, task__kind="review")
    by_token = {}
    for token, count in _count_by_token(stored).items():
        by_token[token] = count
    lost = [t for t in acknowledged if by_token.get(t, 0) == 0]
    duplicated = [t for t, n in by_token.items() if n > 1]
    unacknowledged = [t for t in by_token if t not in acknowledged]
    done = ReviewTask.objects.filter(kind="review", status="done").count()
    n = len(acknowledged)
    print(
        f"{len(readers)} readers, gunicorn {args.workers}×{args.threads}, {args.mode}: {n} decisions in {wall:.1f} s = {n / wall:.1f} decisions/s"
    )
    for name in ("screen", "image", "submit"):
        values = [1000 * t for t in timings[name]]
        print(
            f"  {name:<7} p50 {percentile(values, 0.5):6.1f} ms   p95 {percentile(values, 0.95):6.1f} ms   ({len(values)} requests)"
        )
    conflicts = sum(r.conflicts for r in readers)
    print(
        f"  second-tab posts answered 409: {conflicts}; tasks done: {done}; decisions stored: {sum(by_token.values())}"
    )
    print(
        f"  lost: {len(lost)}   duplicated: {len(duplicated)}   stored but never acknowledged: {len(unacknowledged)}   errors: {len(errors)}"
    )
    for error in errors[:10]:
        print("   ", error)
    ok = not lost and not duplicated and not errors and sum(by_token.values()) == n == done
    print("OK" if ok else "FAILED: decisions were lost, duplicated or refused")
    return 0 if ok else 1


def _count_by_token(decisions) -> dict[str, int]:
    counts: dict[str, int] = {}
    for token in decisions.values_list("task__token", flat=True):
        counts[token] = counts.get(token, 0) + 1
    return counts


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/accounts/login/", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    sys.exit("gunicorn did not answer within 60 s")


if __name__ == "__main__":
    sys.exit(main())
