"""The project's middleware: request bodies bounded before they are read, and who did an
/admin/ edit for its change history.

Every route that takes a body (form posts, drawings, drafts, image uploads, the API) is
checked here, on the Content-Length header, before Django or DRF reads a byte of it: an
oversized body is answered 413 unread, so it never reaches a worker's memory or disk. A
chunked body (no Content-Length) is refused with 411: Django would otherwise read it as empty.
A route that takes more than REQUEST_MAX_BYTES says so with @body_limit.
"""

from __future__ import annotations

from collections.abc import Callable

from auditlog.middleware import AuditlogMiddleware
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from annotation.services.audit import client_ip

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# A form's other fields and multipart boundaries beside the file it carries.
FORM_OVERHEAD = 1024 * 1024


def body_limit(max_bytes: Callable[[], int] | int):
    """Let a view (function or DRF view class) take bodies up to `max_bytes` (or what the
    callable answers when asked, so a setting can change under tests)."""

    def mark(view):
        view.max_body_bytes = max_bytes
        return view

    return mark


def _limit_for(view_func) -> int:
    limit = getattr(view_func, "max_body_bytes", None)
    if limit is None:
        # DRF's as_view() keeps the class on the function.
        limit = getattr(getattr(view_func, "cls", None), "max_body_bytes", None)
    if callable(limit):
        limit = limit()
    return int(limit if limit is not None else settings.REQUEST_MAX_BYTES)


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):,.0f} MB" if n >= 1024 * 1024 else f"{n:,} bytes"


def _refusal(request: HttpRequest, status: int, message: str) -> HttpResponse:
    if request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", ""):
        response = JsonResponse({"detail": message}, status=status)
    else:
        response = render(request, "refused.html", {"message": message}, status=status)
    # The body was not read: the connection cannot carry another request.
    response["Connection"] = "close"
    return response


class RequestBodyLimitMiddleware:
    """413 for a body over the route's limit, 411 for a body without a length."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        if request.method not in BODY_METHODS and not request.META.get("CONTENT_LENGTH"):
            return None
        length = request.META.get("CONTENT_LENGTH") or ""
        if not length:
            if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
                return _refusal(
                    request, 411, "send the body with a Content-Length header, not chunked"
                )
            return None
        try:
            size = int(length)
        except ValueError:
            return _refusal(request, 400, "the Content-Length header is not a number")
        limit = _limit_for(view_func)
        if size > limit:
            return _refusal(
                request,
                413,
                f"the request is {_megabytes(size)}; this page takes at most {_megabytes(limit)}",
            )
        return None


class AuditMiddleware(AuditlogMiddleware):
    """django-auditlog's middleware, taking the client's address by the audit trail's one rule
    (client_ip) rather than from a client-supplied X-Forwarded-For."""

    @staticmethod
    def _get_remote_addr(request):
        return client_ip(request)
