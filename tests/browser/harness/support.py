"""A tiny threaded web server for the component harness, and helpers the browser tests share.

It serves the harness pages, the app's static files (annotation/static/) and generated images
(a chest X-ray phantom and candidate masks). Drafts (/draft/<task token>) go to the real draft endpoint of the
review API, in process, with the session of the reader `serve_drafts_for` names: the tests see
what the browser stored in the database, and can make the server fail on purpose in front of it.
"""

from __future__ import annotations

import base64
import io
import mimetypes
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from tests.conftest import CHROMIUM_ARGS, chromium_path

HARNESS = Path(__file__).resolve().parent
STATIC = HARNESS.parents[2] / "annotation" / "static"
# The CSRF token the harness pages send (base.html puts the real one in hx-headers the same way).
CSRF_TOKEN = "harnesscsrftoken" * 2
# Flat patch of the phantom with a known grey value, to check window/level on screen.
CALIBRATION = {"box": (0.80, 0.04, 0.96, 0.14), "value": 100}
# Candidate masks: ellipses (cx, cy, rx, ry) as fractions of the mask size.
MASK_PRESETS: dict[int, list[tuple[float, float, float, float]]] = {
    1: [(0.30, 0.45, 0.12, 0.20)],
    2: [(0.70, 0.45, 0.12, 0.20)],
    3: [(0.30, 0.50, 0.15, 0.25), (0.70, 0.50, 0.15, 0.25)],
    4: [(0.32, 0.62, 0.10, 0.10)],
    5: [(0.68, 0.35, 0.08, 0.12)],
}


def ellipse(w: int, h: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Pixels whose centre lies inside the ellipse (all in fractions of the image size)."""
    y, x = np.mgrid[0:h, 0:w]
    return ((x + 0.5 - cx * w) / (rx * w)) ** 2 + ((y + 0.5 - cy * h) / (ry * h)) ** 2 <= 1


def preset_mask(preset: int, w: int, h: int) -> np.ndarray:
    out = np.zeros((h, w), bool)
    for e in MASK_PRESETS[preset]:
        out |= ellipse(w, h, *e)
    return out


def phantom_cxr(w: int, h: int) -> np.ndarray:
    """A frontal chest X-ray look-alike: body, two lungs with ribs, spine, heart, burned-in marker."""
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    img = 18 + 14 * y
    img = np.where(ellipse(w, h, 0.5, 0.58, 0.47, 0.52), 150 - 25 * np.abs(x - 0.5), img)
    for cx in (0.30, 0.70):
        lung = ellipse(w, h, cx, 0.47, 0.16, 0.31)
        ribs = 22 * (np.sin((y * 13 + np.abs(x - 0.5) * 2.5) * 2 * np.pi) > 0.55)
        img = np.where(lung, 62 + 30 * y + ribs, img)
    img = np.where((np.abs(x - 0.5) < 0.035) & (y > 0.1), 205 - 20 * y, img)
    img = np.where(ellipse(w, h, 0.56, 0.64, 0.13, 0.13), 172, img)
    img = gaussian_filter(img, sigma=max(w, h) / 220)
    img += np.random.default_rng(7).normal(0, 3, img.shape)
    x0, y0, x1, y1 = CALIBRATION["box"]
    img[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)] = CALIBRATION["value"]
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def mask_png(mask: np.ndarray, fmt: str) -> bytes:
    if fmt == "1":
        return png_bytes(Image.fromarray(mask).convert("1"))
    if fmt == "L01":  # 0/1 values: must still read as a mask
        return png_bytes(Image.fromarray(mask.astype(np.uint8), "L"))
    if fmt == "P":
        im = Image.fromarray(mask.astype(np.uint8), "P")
        im.putpalette([0, 0, 0, 230, 159, 0])
        return png_bytes(im)
    return png_bytes(Image.fromarray(mask.astype(np.uint8) * 255, "L"))


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


class HarnessServer:
    def __init__(self, *, data_root: Path | None = None) -> None:
        self.data_root = data_root
        self.lock = threading.Lock()
        self.reader = None  # whose drafts the real draft endpoint keeps
        self.put_log: list[dict] = []
        self.draft_failure: int | None = None  # e.g. 503 to play "server down"
        self._cache: dict[str, bytes] = {}
        handler = type("Handler", (_Handler,), {"harness": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.reader = None
            self.put_log.clear()
            self.draft_failure = None

    def serve_drafts_for(self, reader) -> None:
        """Send /draft/<token> to the review API's draft endpoint as this reader (a Django
        user; the test needs the database of a live server: transactional_db)."""
        with self.lock:
            self.reader = reader

    def draft_call(self, method: str, token: str, body: bytes, headers) -> tuple[int, bytes, dict]:
        """One request to the real draft view, with the reader's session and the CSRF check."""
        from django.db import connections
        from django.test import Client
        from django.urls import reverse

        with self.lock:
            reader = self.reader
        if reader is None:
            return 404, b"", {}
        client = Client(enforce_csrf_checks=True)
        client.force_login(reader)
        client.cookies["csrftoken"] = CSRF_TOKEN
        extra = {
            f"HTTP_{name.upper().replace('-', '_')}": headers[name]
            for name in ("X-CSRFToken", "X-Draft-Updated")
            if headers.get(name)
        }
        try:
            response = client.generic(
                method,
                reverse("api:review-draft", kwargs={"token": token}),
                body,
                content_type=headers.get("Content-Type") or "",
                **extra,
            )
        finally:
            connections.close_all()  # this thread's connection, before the test's flush
        kept = {k: response[k] for k in ("X-Draft-Updated",) if response.has_header(k)}
        return response.status_code, response.content, kept

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def generated(self, kind: str, q: dict[str, str]) -> bytes:
        key = f"{kind}?{sorted(q.items())}"
        if key not in self._cache:
            w, h = int(q.get("w", 400)), int(q.get("h", 480))
            if kind == "cxr":
                self._cache[key] = png_bytes(Image.fromarray(phantom_cxr(w, h), "L"))
            else:
                self._cache[key] = mask_png(preset_mask(int(q["preset"]), w, h), q.get("fmt", "L"))
        return self._cache[key]


class _Handler(BaseHTTPRequestHandler):
    harness: HarnessServer

    def log_message(self, format, *args):  # noqa: A002 - the base class names it so
        pass

    def send(
        self, status: int, body: bytes = b"", ctype: str = "text/plain", headers: dict | None = None
    ):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def serve_file(self, root: Path | None, rel: str):
        if root is None:
            return self.send(404)
        path = (root / rel).resolve()
        if not path.is_file() or root.resolve() not in path.parents:
            return self.send(404)
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self.send(200, path.read_bytes(), ctype)

    def do_GET(self):  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        p, hs = parts.path, self.harness
        if p.startswith("/harness/"):
            return self.serve_file(HARNESS, p.removeprefix("/harness/"))
        if p.startswith("/static/"):
            return self.serve_file(STATIC, p.removeprefix("/static/"))
        if p.startswith("/data/"):
            return self.serve_file(hs.data_root, p.removeprefix("/data/"))
        if p == "/gen/cxr.png":
            return self.send(200, hs.generated("cxr", q), "image/png")
        if p == "/gen/mask.png":
            return self.send(200, hs.generated("mask", q), "image/png")
        if p.startswith("/draft/"):
            return self.draft()
        self.send(404)

    def do_PUT(self):  # noqa: N802
        self.draft()

    def do_DELETE(self):  # noqa: N802
        self.draft()

    def draft(self):
        """The draw screen's draft URL: the real endpoint, unless the test plays a failure."""
        hs, token = self.harness, urlsplit(self.path).path.removeprefix("/draft/")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with hs.lock:
            failure = hs.draft_failure
        if failure is None:
            status, content, headers = hs.draft_call(self.command, token, body, self.headers)
        else:
            status, content, headers = failure, b"", {}
        if self.command == "PUT":
            with hs.lock:
                hs.put_log.append(
                    {
                        "key": token,
                        "csrf": self.headers.get("X-CSRFToken"),
                        "content_type": self.headers.get("Content-Type"),
                        "size": len(body),
                        "status": status,
                    }
                )
        ctype = "image/png" if status == 200 else "application/json"
        self.send(status, content, ctype, headers)


@contextmanager
def chromium():
    """Debian's Chromium through Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def editor_png(page, selector: str = "[data-cm-draw]") -> np.ndarray:
    """The draw editor's toBlob() output, decoded, after checking it is a true greyscale PNG."""
    b64 = page.evaluate(
        """async (sel) => {
            const blob = await CM.draw(document.querySelector(sel)).toBlob();
            const bytes = new Uint8Array(await blob.arrayBuffer());
            let s = ""; for (const b of bytes) s += String.fromCharCode(b);
            return [blob.type, btoa(s)];
        }""",
        selector,
    )
    assert b64[0] == "image/png"
    image = Image.open(io.BytesIO(base64.b64decode(b64[1])))
    assert image.mode == "L", f"mask PNG must be 8-bit greyscale, got {image.mode}"
    return np.asarray(image)


def canvas_pixels(page, selector: str) -> np.ndarray:
    """RGBA pixels of the first canvas inside `selector`, as the screen shows them."""
    data = page.evaluate(
        """(sel) => {
            const c = document.querySelector(sel).querySelector("canvas");
            const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            let s = ""; for (let i = 0; i < d.length; i += 8192) s += String.fromCharCode.apply(null, d.subarray(i, i + 8192));
            return [c.width, c.height, btoa(s)];
        }""",
        selector,
    )
    w, h, b64 = data
    return np.frombuffer(base64.b64decode(b64), np.uint8).reshape(h, w, 4)


class FitGeometry:
    """Where a pane shows the image before any zoom or pan: fitted and centred (what the user sees)."""

    def __init__(self, page, selector: str, image_size: tuple[int, int], work_size=None) -> None:
        r = page.locator(selector).locator("canvas").first.bounding_box()
        self.w, self.h = image_size
        self.ww, self.wh = work_size or image_size
        self.s = min(r["width"] / self.w, r["height"] / self.h)
        self.ox = r["x"] + r["width"] / 2 - self.w / 2 * self.s
        self.oy = r["y"] + r["height"] / 2 - self.h / 2 * self.s
        self.box = r

    def screen(self, ix: float, iy: float) -> tuple[float, float]:
        return self.ox + ix * self.s, self.oy + iy * self.s

    def work(self, sx: float, sy: float) -> tuple[float, float]:
        """Working-resolution coordinates of a screen point."""
        return (sx - self.ox) / self.s * self.ww / self.w, (
            sy - self.oy
        ) / self.s * self.wh / self.h

    def pixel(self, ix: float, iy: float) -> tuple[int, int]:
        """Canvas pixel (device pixels = CSS pixels here) that shows image point (ix, iy)."""
        sx, sy = self.screen(ix, iy)
        return int(sx - self.box["x"]), int(sy - self.box["y"])


def capsule(w: int, h: int, a, b, radius: float) -> np.ndarray:
    """Distance of every pixel centre to segment a-b (working pixels)."""
    y, x = np.mgrid[0:h, 0:w] + 0.5
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    len2 = dx * dx + dy * dy or 1.0
    t = np.clip(((x - ax) * dx + (y - ay) * dy) / len2, 0, 1)
    return np.hypot(x - ax - t * dx, y - ay - t * dy) - radius
