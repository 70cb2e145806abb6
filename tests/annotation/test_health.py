import asyncio
import json
import re
import statistics
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest
from django.core.cache import cache

from tests.conftest import HEALTH_TOKEN
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

TOKEN = "monitoring-secret"


@pytest.fixture(autouse=True)
def _fresh_checks(settings):
    settings.HEALTH_TOKEN = TOKEN
    cache.clear()
    yield
    cache.clear()


def _details(client, **extra):
    return client.get("/healthz?format=json", HTTP_X_HEALTH_TOKEN=TOKEN, **extra)


def test_anonymous_callers_learn_liveness_only(client, monkeypatch):
    from config.celery_app import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    for answer in (client.get("/healthz"), client.get("/healthz?format=json")):
        assert answer.status_code == 200
        assert answer.json() == {"status": "ok"}  # no parts, hosts or error texts
    wrong = client.get("/healthz", HTTP_X_HEALTH_TOKEN="guess")
    assert wrong.json() == {"status": "ok"}
    md = UserFactory(roles=["md"])
    client.force_login(md)
    assert client.get("/healthz").json() == {"status": "ok"}


def test_it_reports_an_unreachable_broker_as_degraded(client, monkeypatch):
    from config.celery_app import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    response = _details(client)
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["ok"] is True
    assert checks["broker"]["ok"] is False
    assert checks["worker"] == {"ok": False, "detail": "broker unreachable"}


def test_it_says_when_no_worker_answers(client, celery_broker):
    response = _details(client)
    checks = response.json()["checks"]
    assert checks["broker"]["ok"] is True
    # No worker runs in this test.
    assert checks["worker"] == {"ok": False, "detail": "no worker answered"}
    assert response.status_code == 503


def test_admins_see_the_checks_on_the_page(client, monkeypatch):
    from config.celery_app import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    client.force_login(UserFactory(roles=["admin"]))
    page = client.get("/healthz")
    assert page.status_code == 503
    assert 'data-check="broker"' in page.content.decode()


def test_the_checks_are_cached_for_a_few_seconds(client, monkeypatch, settings):
    from annotation.views import health

    calls = []
    monkeypatch.setattr(health, "_check_database", lambda: calls.append(1) or (True, "sqlite"))
    monkeypatch.setattr(
        health,
        "_check_broker_and_workers",
        lambda: {"broker": (True, "reachable"), "worker": (True, "w1@host")},
    )
    for _ in range(3):
        assert _details(client).json()["status"] == "ok"
    assert len(calls) == 1
    cache.clear()  # what the end of HEALTH_CACHE_SECONDS does
    assert _details(client).json()["checks"]["worker"]["detail"] == "w1@host"
    assert len(calls) == 2


@pytest.mark.integration
def test_it_is_ok_with_a_live_worker(client, worker_process):
    client.force_login(UserFactory(roles=["admin"]))
    response = client.get("/healthz")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count(">OK<") == 3
    assert worker_process.hostname in html


async def _poll(host: str, port: int, times: int, seconds: list[float], bodies: set) -> None:
    """One monitoring client: a kept-alive connection, GET /healthz as fast as it answers."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for _ in range(times):
            started = time.perf_counter()
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            body = await reader.readexactly(length)
            seconds.append(time.perf_counter() - started)
            bodies.add((head.split(b" ", 2)[1], body))
    finally:
        writer.close()


async def _clients(url: str, *, clients: int, times: int) -> tuple[list[float], set]:
    where = urlsplit(url)
    seconds: list[float] = []
    bodies: set = set()
    await asyncio.gather(
        *(_poll(where.hostname, where.port, times, seconds, bodies) for _ in range(clients))
    )
    return seconds, bodies


@pytest.mark.slow
def test_24_concurrent_anonymous_clients_get_liveness_fast(web_server):
    url, _workers = web_server
    asyncio.run(_clients(url, clients=24, times=10))  # warm up: code loaded, connections made
    # Up to three rounds of 24 × 40 requests: a round slowed by another process on a shared
    # machine is measured again; a slow endpoint fails all three.
    rounds = []
    for _ in range(3):
        seconds, bodies = asyncio.run(_clients(url, clients=24, times=40))
        assert bodies == {(b"200", b'{"status": "ok"}')}
        times_ms = sorted(1000 * t for t in seconds)
        p95 = times_ms[int(0.95 * len(times_ms)) - 1]
        rounds.append(
            f"{len(times_ms)} requests: p50 {statistics.median(times_ms):.1f} ms, "
            f"p95 {p95:.1f} ms, max {times_ms[-1]:.1f} ms"
        )
        if p95 < 20:
            break
    assert p95 < 20, "; ".join(rounds)
    # The monitoring token still gets the details from the live server.
    request = urllib.request.Request(f"{url}/healthz?format=json")
    request.add_header("X-Health-Token", HEALTH_TOKEN)
    try:
        answer = urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as degraded:  # no broker for this server: 503
        answer = degraded
    assert set(json.loads(answer.read())["checks"]) == {"database", "broker", "worker"}
