"""Bounded request bodies: every route that takes a body refuses an oversized one (413) on its
Content-Length, before reading it, and changes nothing; a 300 MB post streamed at a real server
leaves its worker's memory as it was."""

from __future__ import annotations

import io
import re
import select
import socket
import threading
import time
import zipfile
from urllib.parse import urlsplit

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from annotation.models import Dataset, Decision, Job
from annotation.services.assignment import task_lease_next
from tests.factories import UserFactory, review_stage

pytestmark = pytest.mark.django_db

MB = 1024 * 1024
BOUNDARY = "collabmask-test-boundary"


def _as(role: str, *, api: bool) -> Client:
    user = UserFactory(roles=[role])
    client = Client()
    if api:
        token, _ = Token.objects.get_or_create(user=user)
        client.defaults["HTTP_AUTHORIZATION"] = f"Token {token.key}"
    else:
        client.force_login(user)
    return client


# (method, path, role, api): the routes that take a body, as their users send them.
ROUTES = [
    ("post", "/api/review/tasks/some-task/drawing/", "md", True),
    ("put", "/api/review/tasks/some-task/draft/", "md", True),
    ("post", "/api/inference/", "researcher", True),
    ("post", "/viewer/", "researcher", False),
    ("post", "/review/t/some-task/pick", "md", False),
    ("post", "/exports/", "researcher", False),
    ("post", "/api/exports/", "researcher", True),
    ("post", "/api/auth/token/", None, True),
    ("post", "/accounts/login/", None, False),
]


@pytest.mark.parametrize(("method", "path", "role", "api"), ROUTES)
def test_an_oversized_body_is_refused_unread(method, path, role, api, settings):
    client = _as(role, api=api) if role else Client()
    claimed = settings.REQUEST_MAX_BYTES + 1
    # The body sent is tiny: only its announced length can have caused the refusal.
    answer = getattr(client, method)(
        path, b"x" * 10, content_type="application/octet-stream", CONTENT_LENGTH=str(claimed)
    )
    assert answer.status_code == 413
    text = answer.content.decode()
    assert re.search(r"the request is \d+ MB; this page takes at most \d+ MB", text)
    assert answer["Connection"] == "close"
    assert not Job.objects.exists()


@pytest.mark.parametrize("method", ["post", "put"])
def test_a_drawing_route_takes_no_more_than_a_drawing(method):
    route = "drawing" if method == "post" else "draft"
    answer = getattr(_as("md", api=True), method)(
        f"/api/review/tasks/some-task/{route}/",
        b"x",
        content_type="image/png",
        CONTENT_LENGTH=str(10 * MB),
    )
    assert answer.status_code == 413
    assert "this page takes at most" in answer.json()["detail"]


def test_the_cxr_upload_takes_more_than_other_routes(settings, broker):
    settings.REQUEST_MAX_BYTES = 8 * 1024
    zipped = io.BytesIO()
    zipped.name = "noise.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("noise.bin", bytes(range(256)) * 100)
    zipped.seek(0)
    form = {"new_dataset": "big", "label": "covid", "files": zipped}
    admin = _as("admin", api=False)
    answer = admin.post("/dashboard/upload", form)
    assert answer.status_code == 302  # stored, its import queued
    assert Job.objects.get().kind == Job.Kind.IMPORT
    zipped.seek(0)
    refused = _as("researcher", api=False).post("/viewer/", {"image": zipped})
    assert refused.status_code == 413
    # The upload's own limit still holds.
    too_big = admin.post(
        "/dashboard/upload",
        b"x",
        content_type="multipart/form-data; boundary=x",
        CONTENT_LENGTH=str(settings.IMPORT_MAX_FILE_BYTES + 2 * MB),
    )
    assert too_big.status_code == 413
    assert Dataset.objects.filter(name="big").count() == 1


def test_a_chunked_body_without_a_length_is_refused():
    client = _as("md", api=True)
    answer = client.put(
        "/api/review/tasks/some-task/draft/",
        b"",
        content_type="image/png",
        HTTP_TRANSFER_ENCODING="chunked",
        CONTENT_LENGTH="",
    )
    assert answer.status_code == 411
    assert "Content-Length" in answer.json()["detail"]


def _multipart(field: str, size: int) -> tuple[bytes, int, bytes]:
    """A form with one file of `size` zero bytes in `field` (and an idempotency key): its
    head, the file's size and its tail, so the file itself can be streamed."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    tail = (
        f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="idempotency_key"\r\n\r\n'
        f"streamed-upload-key\r\n--{BOUNDARY}--\r\n"
    ).encode()
    return head, size, tail


def _stream(url: str, path: str, *, headers: dict, form: tuple[bytes, int, bytes]):
    """POST the form to `path`, its file 64 KiB at a time from a generator (never the whole
    body in memory), watching for an early answer. Returns (the answer's bytes, bytes sent)."""
    head_part, size, tail_part = form
    where = urlsplit(url)
    sock = socket.create_connection((where.hostname, where.port), timeout=10)
    head = [f"POST {path} HTTP/1.1", f"Host: {where.netloc}"]
    head += [f"Content-Length: {len(head_part) + size + len(tail_part)}"]
    head += [f"Content-Type: multipart/form-data; boundary={BOUNDARY}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())

    def chunks():
        yield head_part
        block = b"\0" * (64 * 1024)
        for start in range(0, size, len(block)):
            yield block[: size - start]
        yield tail_part

    sent, answer = 0, b""
    try:
        for chunk in chunks():
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server stopped reading: its answer is waiting in our socket
    sock.settimeout(60)
    try:
        while data := sock.recv(65536):
            answer += data
    except ConnectionResetError:
        pass  # closed by the server with our unread body in its buffer: the answer came first
    finally:
        sock.close()
    return answer, sent


class PeakRSS:
    """The highest resident set size of each of some processes, sampled every few ms."""

    def __init__(self, processes):
        self.processes = processes
        self.before = [p.memory_info().rss for p in processes]
        self.peak = list(self.before)
        self._stop = False
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop:
            for i, process in enumerate(self.processes):
                self.peak[i] = max(self.peak[i], process.memory_info().rss)
            time.sleep(0.005)

    def growth_mb(self) -> float:
        return max(peak - before for peak, before in zip(self.peak, self.before, strict=True)) / MB

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()


@pytest.mark.slow
@pytest.mark.parametrize("route", ["drawing", "inference"])
def test_a_streamed_300_mb_post_leaves_the_worker_memory_alone(web_server, route):
    url, workers = web_server
    if route == "drawing":  # a real case the MD holds, so nothing but the size stops the post
        reader = UserFactory(roles=["md"])
        task = task_lease_next(stage=review_stage(n_cases=1), reader=reader)
        path, field = f"/api/review/tasks/{task.token}/drawing/", "mask"
    else:
        reader = UserFactory(roles=["researcher"])
        path, field = "/api/inference/", "image"
    headers = {"Authorization": f"Token {Token.objects.create(user=reader).key}"}
    # Warm up: the route's code loaded and a small form handled by each worker.
    for _ in range(6):
        _stream(url, path, headers=headers, form=_multipart(field, 1024))
    with PeakRSS(workers) as rss:
        answer, sent = _stream(url, path, headers=headers, form=_multipart(field, 300 * MB))
    growth = rss.growth_mb()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"the request is 300 MB; this page takes at most" in answer
    assert growth < 30, f"worker RSS grew by {growth:.1f} MB (sent {sent / MB:.0f} MB)"
    assert not Decision.objects.exists() and not Job.objects.exists()
