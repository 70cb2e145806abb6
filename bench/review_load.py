"""Load on the review screens: N simulated readers over HTTP against gunicorn, on the embedded
default (SQLite in a scratch data directory) or on PostgreSQL.

    .venv/bin/python bench/review_load.py --readers 8 --cases 120                 # PostgreSQL
    .venv/bin/python bench/review_load.py --database sqlite --readers 8           # embedded
    .venv/bin/python bench/review_load.py --matrix                                # both, 1/8/32/64
    .venv/bin/python bench/review_load.py --matrix --readers-list 1,4 --cases 30  # quick

Each reader keeps one HTTP/1.1 connection open, as a browser does (--no-keep-alive: one per
request). Every run prints where the machine's CPU went per decision: the web processes, the
PostgreSQL server's processes, this client, and the whole machine (neighbours included), with
the decisions per second the machine's cores could give at that cost.

--matrix runs every (database, readers) pair one after the other, each in a fresh process with
a fresh database, and prints one table: latencies, decisions per second, the web processes'
memory (RSS of the gunicorn master and workers at the end) and CPU-seconds per decision, and
what a cold review screen transfers (the page and its static files, compressed as a browser
asks for them; the images apart). Exit status 1 if any run lost, duplicated or refused a
decision.

With PostgreSQL, a scratch database (dropped afterwards unless --keep) is created on the server
that --database-url names; with SQLite, a scratch data directory. Gunicorn runs as deployed:
PostgreSQL with --workers × --threads (4 × 2), the embedded default as `collabmask start`
runs it (2 × 4). Static files are collected and compressed once (var/bench-static, again only
when they change). The bench seeds a five-way (or pairwise) stage with generated cases, starts gunicorn
on it, and lets every reader log in and work through the queue as a browser would: open the
screen, fetch the image and the masks it names (a page carries small masks itself, as data:
URIs, which a browser does not request), ask the review API for the next case ahead, post the
choice to the review API (JSON, session cookie and CSRF token, as review.js does). Some posts
are sent twice with the same key (a network retry) and some again with a fresh key (a second
tab). Readers sign in before the clock starts (a password hash per session is not part of a
decision). It prints p50/p95 latency of the review screen, the images and the decision submission,
decisions per second, and checks the database afterwards: every acknowledged decision stored
exactly once, none lost, none duplicated. Exit status 1 if that check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import http.cookies
import json
import os
import random
import re
import shutil
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
# The round the pairwise choice form answers (the bar's undo form names another number).
ROUND_NUMBER = re.compile(r'data-review-form.*?name="number" value="(\d+)"', re.DOTALL)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    p.add_argument(
        "--database",
        choices=["postgres", "sqlite"],
        default="postgres",
        help="postgres (--database-url) or the embedded default, SQLite",
    )
    p.add_argument("--workers", type=int, help="gunicorn worker processes (postgres 4, sqlite 2)")
    p.add_argument("--threads", type=int, help="gunicorn threads per worker (postgres 2, sqlite 4)")
    p.add_argument(
        "--no-keep-alive",
        dest="keep_alive",
        action="store_false",
        help="a new connection per request (browsers keep one open per host)",
    )
    p.add_argument("--matrix", action="store_true", help="every database × --readers-list")
    p.add_argument(
        "--readers-list", default="1,8,32,64", help="reader counts of --matrix (comma-separated)"
    )
    p.add_argument(
        "--databases", default="sqlite,postgres", help="databases of --matrix (comma-separated)"
    )
    p.add_argument("--json", help="write this run's figures to this file (used by --matrix)")
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
    args = p.parse_args(argv)
    if args.workers is None:
        args.workers = 4 if args.database == "postgres" else 2
    if args.threads is None:
        args.threads = 2 if args.database == "postgres" else 4
    return args


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
    """One reader's browser: a persistent HTTP/1.1 connection (as browsers keep one per host;
    `--no-keep-alive` opens one per request), its cookies, redirects followed."""

    def __init__(self, base: str, username: str, stage_id: int, args, rng: random.Random):
        self.base, self.username, self.stage_id, self.args, self.rng = (
            base,
            username,
            stage_id,
            args,
            rng,
        )
        parts = urllib.parse.urlsplit(base)
        self.host, self.port = parts.hostname, parts.port
        self.conn: http.client.HTTPConnection | None = None
        self.cookies: dict[str, str] = {}
        self.timings: dict[str, list[float]] = {"screen": [], "image": [], "submit": []}
        self.acknowledged: dict[str, str] = {}  # task token -> key of the acknowledged decision
        self.errors: list[str] = []
        self.conflicts = 0
        self.logged_in = False

    def request(
        self, path: str, data: dict | None = None, *, api: dict | None = None, csrf="", headers=None
    ):
        """GET `path`; POST a form (`data`), or, with `api`, the review API's JSON body.
        Returns (status, final URL, body, seconds), redirects followed."""
        path = path[len(self.base) :] if path.startswith(self.base) else path
        method, body, head = "GET", None, dict(headers or {})
        if data is not None:
            method, body = "POST", urllib.parse.urlencode(data).encode()
            head["Content-Type"] = "application/x-www-form-urlencoded"
        if api is not None:
            method, body = "POST", json.dumps(api).encode()
            head.update({"Content-Type": "application/json", "Accept": "application/json"})
            head["X-CSRFToken"] = csrf
        start = time.perf_counter()
        for _ in range(5):
            status, location, payload = self._exchange(method, path, body, head)
            if status not in (301, 302, 303, 307, 308) or not location:
                break
            path = urllib.parse.urlsplit(urllib.parse.urljoin(self.base + path, location))
            path = path.path + (f"?{path.query}" if path.query else "")
            if status in (301, 302, 303):
                method, body = "GET", None
                head.pop("Content-Type", None)
        return status, self.base + path, payload, time.perf_counter() - start

    def _exchange(self, method: str, path: str, body: bytes | None, head: dict):
        head = dict(head)
        if self.cookies:
            head["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if not self.args.keep_alive:
            head["Connection"] = "close"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.conn.request(method, path, body=body, headers=head)
                response = self.conn.getresponse()
                payload = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle kept-alive connection before reading the request;
                # a browser opens a new one and sends it again (the submit carries its key).
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        for header in response.headers.get_all("Set-Cookie") or []:
            morsel = http.cookies.SimpleCookie(header)
            for name, value in morsel.items():
                if value["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = value.value
        if response.will_close:
            self.conn.close()
            self.conn = None
        return response.status, response.headers.get("Location"), payload

    def login(self) -> None:
        _, _, page, _ = self.request("/accounts/login/")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
        status, url, _, _ = self.request(
            "/accounts/login/",
            {"username": self.username, "password": PASSWORD, "csrfmiddlewaretoken": token},
        )
        if "/accounts/login/" in url:
            raise RuntimeError(f"{self.username} could not log in")
        self.logged_in = True

    def cold_screen(self, stage_id: int) -> dict:
        """What a browser with an empty cache transfers for its first review screen: the page
        (with the masks it carries), its static files (asking for gzip or Brotli, as browsers
        do) and, apart, the images it names.
        Leaves the case leased to this reader, who starts with it."""
        self.login()
        _, url, html, _ = self.request(f"/review/s/{stage_id}/next")
        page = html.decode()
        static = 0
        for path in set(re.findall(r'(?:src|href)="(/static/[^"]+)"', page)):
            asked = {"Accept-Encoding": "gzip, deflate, br"}
            static += len(self.request(path, headers=asked)[2])
        images = sum(
            len(self.request(u)[2]) for u in re.findall(r'data-(?:image|mask)-url="(/[^"]+)"', page)
        )
        return {"page_kb": len(html) / 1024, "static_kb": static / 1024, "images_kb": images / 1024}

    def run(self) -> None:
        if not self.logged_in:
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
            for image in re.findall(r'data-(?:image|mask)-url="(/[^"]+)"', page):
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
            number = int(re.search(ROUND_NUMBER, page).group(1))
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
    if args.matrix:
        return matrix(args)
    return single_run(args)


def single_run(args) -> int:
    var_dir = Path(tempfile.mkdtemp(prefix="collabmask-bench-"))
    env = {
        **os.environ,
        "MEDIA_ROOT": str(var_dir / "media"),
        "COLLABMASK_VAR_DIR": str(var_dir),
        "COLLABMASK_MODE": "embedded",
        "LOG_LEVEL": "WARNING",
        "STATIC_ROOT": str(STATIC_ROOT),
        "STATIC_COLLECTED": "1",
    }
    admin_url = url = None
    if args.database == "postgres":
        admin_url, url = scratch_database(args.database_url)
        admin_sql(admin_url, f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"')
        env["DATABASE_URL"] = url
    else:
        env.pop("DATABASE_URL", None)
        os.environ.pop("DATABASE_URL", None)
    collect_static(env)
    os.environ.update(
        {k: env[k] for k in env if k.startswith(("COLLABMASK_", "STATIC_", "MEDIA_", "DATABASE_"))}
    )
    server = None
    try:
        t0 = time.perf_counter()
        stage_id, usernames = seed(args, var_dir)
        print(
            f"seeded {args.cases} cases ({args.mode}, {args.size}² px) in {time.perf_counter() - t0:.1f} s"
        )
        from django.db import connections

        connections.close_all()  # SQLite: the web processes write now
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
        cold = readers[0].cold_screen(stage_id)
        # Readers sign in before the clock starts: a sign-in is a password hash (PBKDF2, about
        # 0.6 CPU-s by design), once per session, not part of a decision. Counted inside the
        # window, 31 sign-ins at 32 readers took more CPU than 120 decisions.
        signin_started = time.perf_counter()
        with ThreadPoolExecutor(len(readers)) as pool:
            list(pool.map(lambda r: r.logged_in or r.login(), readers))
        signin_s = time.perf_counter() - signin_started
        web = WebProcesses(server.pid)
        started = time.perf_counter()
        with ThreadPoolExecutor(len(readers)) as pool:
            for future in [pool.submit(r.run) for r in readers]:
                future.result()
        wall = time.perf_counter() - started
        figures = report(args, readers, wall)
        figures.update(web.since_start(figures["decisions"]), cold=cold, signin_s=signin_s)
        print(
            f"  CPU-ms per decision: web {figures['cpu_ms_per_decision']:.1f}, database server "
            f"{figures['database_cpu_ms_per_decision']:.1f}, client {figures['client_cpu_ms_per_decision']:.1f}; "
            f"whole machine {figures['machine_cpu_ms_per_decision']:.1f} "
            f"({figures['cores']} cores: at most {1000 * figures['cores'] / max(1e-9, figures['machine_cpu_ms_per_decision']):.0f} "
            f"decisions/s at this cost); connections {'kept alive' if args.keep_alive else 'one per request'}"
        )
        print(
            f"  web processes: {figures['rss_mb']:.0f} MB RSS, {figures['cpu_ms_per_decision']:.1f} "
            f"CPU-ms per decision; cold screen {cold['page_kb'] + cold['static_kb']:.1f} KB "
            f"(page {cold['page_kb']:.1f}, static {cold['static_kb']:.1f}) + images {cold['images_kb']:.1f} KB; "
            f"readers signed in before the clock, in {signin_s:.1f} s"
        )
        if args.json:
            Path(args.json).write_text(json.dumps(figures))
        return 0 if figures["ok"] else 1
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        from django.db import connections

        connections.close_all()
        if admin_url is not None:
            if not args.keep:
                admin_sql(
                    admin_url, f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'
                )
            else:
                print(f"kept database {url}")
        if args.keep:
            print(f"kept data directory {var_dir}")
        else:
            shutil.rmtree(var_dir, ignore_errors=True)


STATIC_ROOT = REPO / "var" / "bench-static"


def collect_static(env: dict) -> None:
    """The static files collected and compressed as deployed, once per version of them."""
    stamp = STATIC_ROOT / ".collected"
    code = (
        "import django; django.setup(); "
        "from annotation.management.commands.run_embedded import static_fingerprint; "
        "print(static_fingerprint())"
    )
    quiet = {**env, "DJANGO_SETTINGS_MODULE": "config.settings"}
    run = subprocess.run(
        [sys.executable, "-c", code], env=quiet, cwd=REPO, capture_output=True, text=True
    )
    fingerprint = run.stdout.strip()
    if run.returncode == 0 and stamp.is_file() and stamp.read_text() == fingerprint:
        return
    print("collecting and compressing static files …", flush=True)
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--clear", "-v0"],
        env=quiet,
        cwd=REPO,
        check=True,
    )
    stamp.write_text(fingerprint)


class WebProcesses:
    """CPU time and memory of the gunicorn master and its workers, and where the rest of the
    machine's CPU went in the same window: this client (the readers' threads), the PostgreSQL
    server's processes, and the whole machine (neighbours included)."""

    def __init__(self, pid: int):
        import psutil

        self.psutil = psutil
        self.master = psutil.Process(pid)
        self.cpu0 = self.cpu()
        self.client0 = time.process_time()
        self.database0 = self.database_cpu()
        self.machine0 = self.machine_cpu()

    def processes(self):
        return [self.master, *self.master.children(recursive=True)]

    @staticmethod
    def _seconds(proc) -> float:
        times = proc.cpu_times()
        return times.user + times.system

    def cpu(self) -> float:
        return sum(self._seconds(proc) for proc in self.processes())

    def database_cpu(self) -> dict[int, float]:
        """CPU-seconds of each PostgreSQL server process now (its backends and helpers)."""
        seconds = {}
        for proc in self.psutil.process_iter(["name"]):
            if (proc.info["name"] or "").startswith(("postgres", "postmaster")):
                with contextlib.suppress(self.psutil.Error):
                    seconds[proc.pid] = self._seconds(proc)
        return seconds

    def machine_cpu(self) -> float:
        times = self.psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def since_start(self, decisions: int) -> dict:
        cpu = self.cpu() - self.cpu0
        client = time.process_time() - self.client0
        database = sum(
            seconds - self.database0.get(pid, 0.0) for pid, seconds in self.database_cpu().items()
        )
        machine = self.machine_cpu() - self.machine0
        rss = sum(p.memory_info().rss for p in self.processes())
        per = 1000 / max(1, decisions)
        return {
            "rss_mb": rss / 2**20,
            "web_cpu_s": cpu,
            "cpu_ms_per_decision": per * cpu,
            "client_cpu_ms_per_decision": per * client,
            "database_cpu_ms_per_decision": per * database,
            "machine_cpu_ms_per_decision": per * machine,
            "cores": self.psutil.cpu_count(),
        }


def matrix(args) -> int:
    """Every (database, readers) pair, each in its own process and database; one table."""
    rows, failed = [], []
    out = Path(tempfile.mkdtemp(prefix="collabmask-bench-matrix-"))
    for database in args.databases.split(","):
        for readers in [int(n) for n in args.readers_list.split(",")]:
            cases = max(args.cases, 4 * readers)
            target = out / f"{database}-{readers}.json"
            argv = [
                sys.executable, __file__, "--database", database, "--readers", str(readers),
                "--cases", str(cases), "--mode", args.mode, "--size", str(args.size),
                "--readers-per-case", str(args.readers_per_case), "--seed", str(args.seed),
                "--retry-rate", str(args.retry_rate), "--tab-rate", str(args.tab_rate),
                "--database-url", args.database_url, "--json", str(target),
            ] + ([] if args.keep_alive else ["--no-keep-alive"])  # fmt: skip
            print(f"\n=== {database}, {readers} readers, {cases} cases", flush=True)
            done = subprocess.run(argv, cwd=REPO)
            if done.returncode != 0 or not target.is_file():
                failed.append(f"{database}/{readers}")
            if target.is_file():
                rows.append(json.loads(target.read_text()))
    print_table(rows)
    if failed:
        print("FAILED runs:", ", ".join(failed))
        return 1
    print("all runs OK: 0 lost, 0 duplicated, 0 unacknowledged")
    return 0


def print_table(rows: list[dict]) -> None:
    head = (
        "| deployment | gunicorn | readers | screen p50/p95 ms | image p50/p95 ms | submit p50/p95 ms "
        "| decisions/s | web RSS MB | web CPU-ms/decision | cold screen KB (+images) "
        "| lost/dup/unack |"
    )
    print()
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    for r in rows:
        t = r["latency_ms"]
        cold = r["cold"]
        print(
            f"| {r['database']} | {r['workers']}×{r['threads']} | {r['readers']} "
            f"| {t['screen'][0]:.1f} / {t['screen'][1]:.1f} | {t['image'][0]:.1f} / {t['image'][1]:.1f} "
            f"| {t['submit'][0]:.1f} / {t['submit'][1]:.1f} | {r['decisions_per_s']:.1f} "
            f"| {r['rss_mb']:.0f} | {r['cpu_ms_per_decision']:.1f} "
            f"| {cold['page_kb'] + cold['static_kb']:.1f} (+{cold['images_kb']:.0f}) "
            f"| {r['lost']}/{r['duplicated']}/{r['unacknowledged']} |"
        )


def report(args, readers: list[Reader], wall: float) -> dict:
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
        f"{len(readers)} readers, {args.database}, gunicorn {args.workers}×{args.threads}, {args.mode}: {n} decisions in {wall:.1f} s = {n / wall:.1f} decisions/s"
    )
    latency = {}
    for name in ("screen", "image", "submit"):
        values = [1000 * t for t in timings[name]]
        latency[name] = (percentile(values, 0.5), percentile(values, 0.95))
        print(
            f"  {name:<7} p50 {latency[name][0]:6.1f} ms   p95 {latency[name][1]:6.1f} ms   ({len(values)} requests)"
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
    ok = (
        not lost
        and not duplicated
        and not unacknowledged
        and not errors
        and sum(by_token.values()) == n == done
    )
    print("OK" if ok else "FAILED: decisions were lost, duplicated or refused")
    return {
        "database": args.database,
        "workers": args.workers,
        "threads": args.threads,
        "readers": len(readers),
        "cases": args.cases,
        "decisions": n,
        "wall_s": wall,
        "decisions_per_s": n / wall,
        "latency_ms": latency,
        "lost": len(lost),
        "duplicated": len(duplicated),
        "unacknowledged": len(unacknowledged),
        "errors": len(errors),
        "ok": ok,
    }


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
