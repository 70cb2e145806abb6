"""Liveness of the parts the app needs: database, broker, at least one worker."""

from __future__ import annotations

from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from config.celery_app import app as celery_app


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


@never_cache
def healthz(request):
    checks = {"database": _check_database(), **_check_broker_and_workers()}
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
