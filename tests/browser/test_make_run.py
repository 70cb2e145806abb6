"""`make run` (`collabmask start`) on a fresh machine: the launcher brings up Redis, a worker
and the web server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from playwright.sync_api import expect, sync_playwright

from annotation.management.commands.run_embedded import redis_answers
from tests.conftest import CHROMIUM_ARGS, REPO_ROOT, chromium_path, free_port
from tests.support import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _start(var_dir, port):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update({"PYTHONUNBUFFERED": "1"})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collabmask",
            "start",
            "--data-dir",
            str(var_dir),
            "--port",
            str(port),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        lines.append(line)
        if "collabmask is running at" in line:
            return proc, "".join(lines)
        if time.monotonic() > deadline:
            break
    proc.kill()
    pytest.fail("the launcher did not come up:\n" + "".join(lines))


def _stop(proc):
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    return out


def test_make_run_serves_login_health_and_demo_accounts(tmp_path, artifacts_dir):
    var_dir = tmp_path / "var"
    port = free_port()
    started = time.monotonic()
    proc, console = _start(var_dir, port)
    first_start_s = time.monotonic() - started
    try:
        url = f"http://127.0.0.1:{port}/"
        assert url in console
        # Demo accounts for every role are printed on the console.
        accounts = json.loads((var_dir / "demo-accounts.json").read_text())
        for username, entry in accounts.items():
            assert re.search(
                rf"{username}\s+{re.escape(entry['password'])}\s+{entry['role']}", console
            )
        assert {entry["role"] for entry in accounts.values()} == {
            "md",
            "senior_md",
            "admin",
            "researcher",
        }

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url)
            expect(page).to_have_url(re.compile(r"/accounts/login/"))
            expect(page.get_by_role("heading", name="Log in")).to_be_visible()
            page.screenshot(path=artifacts_dir / "login.png")

            # The health details are for admins; anonymous callers learn liveness only.
            page.goto(url + "healthz")
            assert json.loads(page.locator("body").inner_text()) == {"status": "ok"}
            admin = next(n for n, e in accounts.items() if e["role"] == "admin")
            page.goto(url)
            page.get_by_label("User name").fill(admin)
            page.get_by_label("Password").fill(accounts[admin]["password"])
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name=f"Welcome, {admin}")).to_be_visible()

            # The worker may still be starting: the health page turns OK once it answers.
            def health() -> dict[str, str]:
                page.goto(url + "healthz")
                return {
                    row.get_attribute("data-check"): row.locator("td").nth(1).inner_text()
                    for row in page.locator("#health tbody tr").all()
                }

            wait_for(
                lambda: health() == {"database": "OK", "broker": "OK", "worker": "OK"},
                what="every health check to say OK",
                timeout=90,
                every=2,
                explain=lambda: f"health page: {health()}",
            )
            page.screenshot(path=artifacts_dir / "healthz.png")

            page.get_by_role("button", name="Log out").click()
            expect(page.get_by_role("heading", name="Log in")).to_be_visible()
            page.goto(url)
            page.get_by_label("User name").fill("demo-md")
            page.get_by_label("Password").fill(accounts["demo-md"]["password"])
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Welcome, demo-md")).to_be_visible()
            expect(page.get_by_role("cell", name="Demo phantoms")).to_be_visible()
            page.screenshot(path=artifacts_dir / "home.png")
            browser.close()
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out
    assert "Stopped." in out
    assert not redis_answers(var_dir / "redis.sock"), "Redis kept running after Ctrl-C"

    # A second start keeps the data and the accounts, and is quick.
    started = time.monotonic()
    proc, console = _start(var_dir, port)
    second_start_s = time.monotonic() - started
    try:
        assert "is already there" in console
        assert json.loads((var_dir / "demo-accounts.json").read_text()) == accounts
    finally:
        _stop(proc)
    print(f"first start {first_start_s:.1f} s, second start {second_start_s:.1f} s")
    # Secrets, database, Redis files, media and logs: the owner's alone.
    shared = [
        f"{path.relative_to(var_dir)} {path.stat().st_mode & 0o777:o}"
        for path in [var_dir, *var_dir.rglob("*")]
        if not path.is_symlink() and path.stat().st_mode & 0o077
    ]
    assert not shared, shared
