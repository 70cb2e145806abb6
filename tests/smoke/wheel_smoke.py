"""Smoke test of an installed collabmask, run from outside any checkout (CI: .ci/wheel-smoke).

    /tmp/venv/bin/python tests/smoke/wheel_smoke.py

Runs with the Python of the virtualenv the wheel was installed into, and uses only what that
installation provides: `collabmask demo` seeds accounts, `collabmask start` serves the app on a
free port with a temporary data directory until /healthz says OK, a demo account logs in, the
templates and static files come from the package, `collabmask import` brings in phantom CXRs
(written by the installed `python -m mlworker phantoms`) while the app runs, the web API sees
them, `collabmask export` writes a zip whose COCO file and dataset card name the licence, and
SIGINT stops everything: exit code 0, no process left. Not collected by pytest (no test_ name).
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

LICENCE = "CC BY 4.0"
COVID, CONTROL = 3, 3


def step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def fail(message: str) -> None:
    raise SystemExit(f"SMOKE TEST FAILED: {message}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(argv: list[str], *, cwd: Path, expect_rc: int = 0, timeout: int = 300) -> str:
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )
    if done.returncode != expect_rc:
        fail(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


class Server:
    """`collabmask start` as a child process, its console collected by a thread."""

    def __init__(self, argv: list[str], *, cwd: Path) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def console(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.console:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                fail(f"`collabmask start` did not print {text!r}:\n{self.console}")
            time.sleep(0.2)

    def child_pids(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"Started \w+ \(pid (\d+),", self.console)]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail(f"`collabmask start` did not stop within 90 s of SIGINT:\n{self.console}")
        self._reader.join(timeout=10)
        return self.proc.returncode


def processes_using(data: Path) -> list[str]:
    """Processes (other than this one) whose environment names the data directory: what
    `collabmask start` started, grandchildren (gunicorn and Celery pool workers) included."""
    marker = f"COLLABMASK_VAR_DIR={data.resolve()}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        if int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()[:200]!r}")
        except OSError:
            continue  # gone meanwhile, or not ours
    return found


class Browser:
    """A cookie-keeping HTTP client that logs in like the login form does."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.base + path, headers=headers or {})
        try:
            with self.opener.open(request, timeout=30) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def log_in(self, username: str, password: str) -> str:
        status, _ = self.get("/accounts/login/")
        if status != 200:
            fail(f"the login page answered {status}")
        token = next(c.value for c in self.jar if c.name == "csrftoken")
        body = urllib.parse.urlencode(
            {"username": username, "password": password, "csrfmiddlewaretoken": token}
        ).encode()
        request = urllib.request.Request(self.base + "/accounts/login/", data=body)
        with self.opener.open(request, timeout=30) as answer:  # follows the redirect home
            return answer.read().decode()


def wait_healthy(browser: Browser, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        # The checks are for admins and monitoring; anonymous callers learn liveness only.
        status, body = browser.get(
            "/healthz?format=json", headers={"X-Health-Token": os.environ["HEALTH_TOKEN"]}
        )
        report = json.loads(body) if body.startswith(b"{") else {}
        if status == 200 and report.get("status") == "ok":
            return report
        if time.monotonic() > deadline:
            fail(f"/healthz did not turn OK within {timeout:.0f} s: {status} {body[:500]!r}")
        time.sleep(1)


def check_export(archive: Path, *, n_controls: int) -> None:
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        for wanted in ("annotations/instances.json", "README.md", "SHA256SUMS"):
            if wanted not in names:
                fail(f"the export has no {wanted}: {sorted(names)[:20]}")
        coco = json.loads(z.read("annotations/instances.json"))
        card = z.read("README.md").decode()
    if [entry["name"] for entry in coco["licenses"]] != [LICENCE]:
        fail(f"COCO licenses should name {LICENCE!r}: {coco['licenses']}")
    if len(coco["images"]) != n_controls or any(i.get("license") != 1 for i in coco["images"]):
        fail(f"COCO should list the {n_controls} controls under licence 1: {coco['images']}")
    licence_section = card.split("## Licence", 1)[-1].split("##", 1)[0]
    if LICENCE not in licence_section:
        fail(f"the dataset card does not name the licence:\n{card}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    started = time.monotonic()
    bin_dir = Path(sys.executable).parent
    collabmask = str(bin_dir / "collabmask")
    if not Path(collabmask).exists():
        fail(f"no collabmask command beside {sys.executable}: is the wheel installed there?")
    work = Path(tempfile.mkdtemp(prefix="collabmask-smoke-"))
    data = work / "data"
    os.environ.pop("COLLABMASK_VAR_DIR", None)
    for name in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "PYTHONPATH"):
        os.environ.pop(name, None)
    os.environ["HEALTH_TOKEN"] = secrets.token_urlsafe(24)  # what a monitoring probe sends
    try:
        where = run(
            [sys.executable, "-c", "import annotation, config; print(annotation.__file__)"],
            cwd=work,
        ).strip()
        if "site-packages" not in where:
            fail(f"the app is imported from {where}, not from the installed package")
        step(f"collabmask is installed at {Path(where).parent.parent}")
        if "start" not in run([collabmask, "--help"], cwd=work):
            fail("collabmask --help does not list start")
        run([sys.executable, "-m", "collabmask", "--version"], cwd=work)

        step("collabmask demo: accounts and a small phantom dataset")
        run(
            [collabmask, "demo", "--data-dir", str(data), "--covid", "4", "--control", "2"],
            cwd=work,
        )
        accounts = json.loads((data / "demo-accounts.json").read_text())

        port = free_port()
        step(f"collabmask start on port {port}")
        server = Server(
            [collabmask, "start", "--data-dir", str(data), "--port", str(port), "--no-seed"],
            cwd=work,
        )
        stopped = False
        try:
            server.wait_for_line("collabmask is running at", timeout=180)
            if "pip install 'collabmask[ml]'" not in server.console:
                fail(f"without the ML extra, start should say what to install:\n{server.console}")
            browser = Browser(f"http://127.0.0.1:{port}")
            report = wait_healthy(browser, timeout=120)
            step(f"/healthz: {', '.join(report['checks'])} OK")

            home = browser.log_in("demo-md", accounts["demo-md"]["password"])
            if "Welcome, demo-md" not in home:
                fail(f"demo-md did not reach the home page:\n{home[:2000]}")
            for path in ("/static/css/app.css", "/static/js/review.js"):
                status, body = browser.get(path)
                if status != 200 or not body:
                    fail(f"{path} answered {status} with {len(body)} bytes")
            step("demo-md logged in; templates and static files come from the package")

            phantoms = work / "phantoms"
            run(
                [
                    sys.executable, "-m", "mlworker", "phantoms", str(phantoms),
                    "--covid", str(COVID), "--control", str(CONTROL), "--size", "96",
                ],
                cwd=work,
            )  # fmt: skip
            shutil.rmtree(phantoms / "hidden-truth", ignore_errors=True)
            out = run(
                [
                    collabmask, "import", str(phantoms), "--dataset", "Smoke",
                    "--create-dataset", "--licence", LICENCE, "--strict", "--data-dir", str(data),
                ],
                cwd=work,
            )  # fmt: skip
            imported = re.search(r"radiographs imported\s+(\d+)", out)
            if not imported or int(imported.group(1)) != COVID + CONTROL:
                fail(f"collabmask import should import {COVID + CONTROL} radiographs:\n{out}")
            step(f"collabmask import: {imported.group(1)} radiographs")

            researcher = Browser(browser.base)
            researcher.log_in("demo-researcher", accounts["demo-researcher"]["password"])
            status, body = researcher.get("/api/datasets/")
            smoke = [d for d in json.loads(body)["results"] if d["name"] == "Smoke"]
            if status != 200 or not smoke or smoke[0]["licence"] != LICENCE:
                fail(f"the running app does not show the imported dataset: {status} {body[:500]!r}")
            if smoke[0]["n_cases"] != COVID + CONTROL:
                fail(f"the API counts {smoke[0]['n_cases']} cases, not {COVID + CONTROL}")

            archive = work / "smoke-export.zip"
            run(
                [
                    collabmask, "export", "--dataset", "Smoke", "--controls",
                    "--output", str(archive), "--data-dir", str(data),
                ],
                cwd=work,
            )  # fmt: skip
            check_export(archive, n_controls=CONTROL)
            step(
                f"collabmask export: {archive.stat().st_size:,} bytes; COCO and card name {LICENCE}"
            )

            children = server.child_pids()
            if len(children) != 3:
                fail(f"expected redis, worker and web children:\n{server.console}")
            if sys.platform == "linux" and not processes_using(data):
                fail("the processes of `collabmask start` cannot be found by their environment")
            rc = server.stop()
            stopped = True
        finally:
            if not stopped:
                server.stop()  # let it stop its children before anything else
        if rc != 0 or "Stopped." not in server.console:
            fail(f"`collabmask start` exited {rc} after SIGINT:\n{server.console}")
        left = []
        for pid in children:
            try:
                os.kill(pid, 0)
                left.append(pid)
            except ProcessLookupError:
                pass
        if sys.platform == "linux":
            left += processes_using(data)
        if left:
            fail(f"processes still running after the stop: {left}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                fail(f"port {port} still answers after the stop")
        step(f"stopped cleanly (exit 0, no process left) in {time.monotonic() - started:.0f} s")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("SMOKE TEST PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
