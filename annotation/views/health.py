"""/healthz: liveness for anyone; the parts the app needs (database, broker, at least one
worker) for admins and for monitoring that sends HEALTH_TOKEN.

Anonymous callers learn only that the web process answers: no host names, no error texts,
and no work behind it, so a crowd of them costs nothing. The full checks ping the workers
(a second or so); their answer is cached for HEALTH_CACHE_SECONDS.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.cache import never_cache

from annotation.roles import ADMIN, has_role
from config.celery_app import app as celery_app

TOKEN_HEADER = "X-Health-Token"
CACHE_KEY = "healthz:checks"


def _check_database() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return True, connection.vendor
    except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
        return False, f"{type(exc).__name__}: {exc}"


def _check_broker_and_workers() -> dict[str, tuple[bool, str]]:
    # A fresh connection, not the pool: the answer must reflect the broker as it is now.
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            broker = (True, "reachable")
            replies = celery_app.control.ping(timeout=1.0, connection=conn) or []
    except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
        failed = (False, f"{type(exc).__name__}: {exc}")
        if "broker" not in locals():
            return {"broker": failed, "worker": (False, "broker unreachable")}
        return {"broker": broker, "worker": failed}
    names = sorted(name for reply in replies for name in reply)
    worker = (True, ", ".join(names)) if names else (False, "no worker answered")
    return {"broker": broker, "worker": worker}


def _anonymous(request) -> bool:
    """No monitoring token and no session cookie: liveness is all this caller may learn."""
    return (
        TOKEN_HEADER not in request.headers and settings.SESSION_COOKIE_NAME not in request.COOKIES
    )


def _may_see_details(request) -> bool:
    sent = request.headers.get(TOKEN_HEADER, "")
    if sent and settings.HEALTH_TOKEN:
        return hmac.compare_digest(sent.encode(), settings.HEALTH_TOKEN.encode())
    if _anonymous(request):
        return False
    return request.user.is_staff or has_role(request.user, ADMIN)


def _alive() -> JsonResponse:
    response = JsonResponse({"status": "ok"})
    add_never_cache_headers(response)
    response["Content-Length"] = str(len(response.content))
    return response


class LivenessMiddleware:
    """Answers an anonymous /healthz before sessions, CSRF, the URL resolver and the rest run:
    a crowd of monitoring probes must cost the web workers next to nothing."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info == "/healthz" and _anonymous(request):
            return _alive()
        return self.get_response(request)


def _checks() -> dict[str, tuple[bool, str]]:
    checks = cache.get(CACHE_KEY)
    if checks is None:
        checks = {"database": _check_database(), **_check_broker_and_workers()}
        if settings.HEALTH_CACHE_SECONDS:
            cache.set(CACHE_KEY, checks, settings.HEALTH_CACHE_SECONDS)
    return checks


@never_cache
def healthz(request):
    if not _may_see_details(request):
        return _alive()
    checks = _checks()
    ok = all(passed for passed, _ in checks.values())
    status = 200 if ok else 503
    payload = {
        "status": "ok" if ok else "degraded",
        "checks": {
            name: {"ok": passed, "detail": detail} for name, (passed, detail) in checks.items()
        },
    }
    wants_json = (
        "application/json" in request.headers.get("Accept", "")
        or request.GET.get("format") == "json"
    )
    if wants_json:
        return JsonResponse(payload, status=status)
    return render(request, "health.html", payload, status=status)
