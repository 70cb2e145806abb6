"""Radiograph display tools in Chromium: window presets, invert and the loupe on the N-way and the
draw screens, carried to the next case; the brush size in mm when the case's pixel spacing is known."""

from __future__ import annotations

import pytest

from annotation.models import ReviewTask
from annotation.roles import MD
from tests.browser.conftest import login, press_and_follow, wait_ready
from tests.factories import UserFactory, review_stage

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("roles_present")]

SIZE = (320, 384)
LUNG = (85, 170)  # the lung preset's centre and width on the 0–255 display scale

# Grey values of a pane's canvas on a grid over the image (red channel; the image is grey).
SAMPLE = """(sel) => {
  const c = document.querySelector(sel), root = c.closest("[data-cm-viewer],[data-cm-draw]");
  const component = root.hasAttribute("data-cm-draw") ? CM.draw(root) : CM.viewer(root);
  const pane = (component.all || [component.pane]).find((p) => p.canvas === c), t = pane.transform();
  const x0 = Math.max(0, t.ox), y0 = Math.max(0, t.oy);
  const x1 = Math.min(c.width, t.ox + pane.view.w * t.s), y1 = Math.min(c.height, t.oy + pane.view.h * t.s);
  const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data, out = [];
  for (let y = 0.05; y < 0.95; y += 0.05) for (let x = 0.05; x < 0.95; x += 0.05) {
    const px = Math.floor(x0 + x * (x1 - x0)), py = Math.floor(y0 + y * (y1 - y0));
    out.push(data[(py * c.width + px) * 4]);
  }
  return out;
}"""

# Where the image lies on the page (client px): left, top, right, bottom.
IMAGE_BOX = """(sel) => {
  const c = document.querySelector(sel), root = c.closest("[data-cm-viewer],[data-cm-draw]");
  const component = root.hasAttribute("data-cm-draw") ? CM.draw(root) : CM.viewer(root);
  const pane = (component.all || [component.pane]).find((p) => p.canvas === c), t = pane.transform();
  const r = c.getBoundingClientRect(), d = c.width / r.width;
  return [r.left + t.ox / d, r.top + t.oy / d, r.left + (t.ox + pane.view.w * t.s) / d, r.top + (t.oy + pane.view.h * t.s) / d];
}"""

# Loupe pixels against the pane's pixels at the same image point (cursor + offset / zoom) and,
# for contrast, at the same screen offset without magnification: mean absolute differences.
LOUPE_VS_PANE = """([sel, cx, cy]) => {
  const pane = document.querySelector(sel), loupe = document.querySelector(".cm-loupe");
  const zoom = Number(loupe.dataset.zoom), r = pane.getBoundingClientRect();
  const pd = pane.width / r.width, ld = loupe.width / loupe.getBoundingClientRect().width;
  const pix = (c) => c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  const P = pix(pane), L = pix(loupe);
  const at = (data, c, x, y) => { const o = (Math.round(y) * c.width + Math.round(x)) * 4; return [data[o], data[o + 1], data[o + 2]]; };
  const diff = (a, b) => Math.abs(a[0] - b[0]) + Math.abs(a[1] - b[1]) + Math.abs(a[2] - b[2]);
  let magnified = 0, unmagnified = 0, n = 0;
  for (let dy = -90; dy <= 90; dy += 6) for (let dx = -90; dx <= 90; dx += 6) {
    if (Math.hypot(dx, dy) > 90 || Math.hypot(dx, dy) < 16) continue; // inside the lens, off its mark
    const l = at(L, loupe, loupe.width / 2 + dx * ld, loupe.height / 2 + dy * ld);
    magnified += diff(l, at(P, pane, (cx - r.left + dx / zoom) * pd, (cy - r.top + dy / zoom) * pd));
    unmagnified += diff(l, at(P, pane, (cx - r.left + dx) * pd, (cy - r.top + dy) * pd));
    n++;
  }
  return { zoom, magnified: magnified / n, unmagnified: unmagnified / n };
}"""


# The colour at the loupe's centre, inside its mark.
LOUPE_CENTRE = """() => {
  const c = document.querySelector(".cm-loupe");
  return [...c.getContext("2d").getImageData(c.width / 2, c.height / 2, 1, 1).data.slice(0, 3)];
}"""


def lut(v: float, center: float, width: float) -> float:
    """The DICOM linear window of cm-core.js, for checking what the screen shows."""
    return min(255.0, max(0.0, ((v - (center - 0.5)) / (width - 1) + 0.5) * 255))


def median(values) -> float:
    values = sorted(values)
    return values[len(values) // 2]


def tools_state(page) -> dict:
    return page.evaluate(
        """() => {
          const g = document.querySelector("[data-cm-display-tools]");
          return {
            window: g.dataset.cmWindow,
            invert: g.querySelector("[data-cm-control=invert]").getAttribute("aria-pressed"),
            stored: JSON.parse(localStorage.getItem("cm-display") || "null"),
          };
        }"""
    )


def check_lung_and_invert(page, canvas: str, artifacts_dir, name: str) -> None:
    """V to the lung preset, then I: the screen's pixels follow the window, then invert."""
    page.mouse.move(5, 5)  # no cursor decorations on the image
    page.keyboard.press("m")  # masks off: the image's own grey values
    page.wait_for_timeout(100)
    plain = page.evaluate(SAMPLE, canvas)
    page.keyboard.press("v")
    page.wait_for_function(
        "() => document.querySelector('[data-cm-display-tools]').dataset.cmWindow === 'lung'"
    )
    page.wait_for_timeout(100)
    lung = page.evaluate(SAMPLE, canvas)
    assert sum(abs(a - b) for a, b in zip(lung, plain, strict=True)) / len(plain) > 10, (
        "lung preset changed nothing"
    )
    # what the lung window makes of each grey value, within smoothing of the scaled image
    assert median([abs(b - lut(a, *LUNG)) for a, b in zip(plain, lung, strict=True)]) <= 6
    page.keyboard.press("i")
    page.wait_for_function(
        "() => document.querySelector('[data-cm-control=invert]').getAttribute('aria-pressed') === 'true'"
    )
    page.wait_for_timeout(100)
    inverted = page.evaluate(SAMPLE, canvas)
    assert max(abs(a + b - 255) for a, b in zip(lung, inverted, strict=True)) <= 2, (
        "invert is not 255 - value"
    )
    page.keyboard.press("m")  # masks back
    page.screenshot(path=artifacts_dir / f"{name}-lung-inverted.png")
    assert tools_state(page) == {
        "window": "lung",
        "invert": "true",
        "stored": {"preset": "lung", "invert": True},
    }


def check_loupe(page, canvas: str, artifacts_dir, name: str) -> None:
    """Hold Z over the image: a lens under the cursor, showing the image magnified."""
    # upper left of the lungs: texture, and the candidate's edge within reach of the lens
    x0, y0, x1, y1 = page.evaluate(IMAGE_BOX, canvas)
    cx, cy = x0 + 0.3 * (x1 - x0), y0 + 0.3 * (y1 - y0)
    page.mouse.move(cx, cy)
    assert page.locator(".cm-loupe").is_hidden()
    page.keyboard.down("z")
    loupe = page.locator(".cm-loupe")
    loupe.wait_for(state="visible")
    page.wait_for_timeout(100)
    lens = loupe.bounding_box()
    assert (
        abs(lens["x"] + lens["width"] / 2 - cx) <= 1
        and abs(lens["y"] + lens["height"] / 2 - cy) <= 1
    )
    page.screenshot(path=artifacts_dir / f"{name}-loupe.png")
    seen = page.evaluate(LOUPE_VS_PANE, [canvas, cx, cy])
    print(f"\n{name} loupe: {seen}")
    assert 2 <= seen["zoom"] <= 3
    assert seen["magnified"] < 0.5 * seen["unmagnified"], seen
    page.keyboard.up("z")
    loupe.wait_for(state="hidden")


def check_carried(page, canvas: str) -> None:
    """The next screen opens in the lung window, inverted: I shows the image as 255 - value."""
    assert tools_state(page)["window"] == "lung"
    assert tools_state(page)["invert"] == "true"
    page.mouse.move(5, 5)
    page.keyboard.press("m")
    page.wait_for_timeout(100)
    carried = page.evaluate(SAMPLE, canvas)
    page.keyboard.press("i")
    page.wait_for_timeout(100)
    plain = page.evaluate(SAMPLE, canvas)
    assert max(abs(a + b - 255) for a, b in zip(carried, plain, strict=True)) <= 2
    page.keyboard.press("i")
    page.keyboard.press("m")


@pytest.fixture
def md_on_first_case(live_server, page):
    stage = review_stage(n_cases=3, n_networks=4, width=SIZE[0], height=SIZE[1])
    login(page, live_server, UserFactory(roles=[MD]))
    page.goto(f"{live_server.url}/review/s/{stage.pk}/next")
    wait_ready(page)
    return ReviewTask.objects.get(token=page.url.rstrip("/").split("/")[-1])


def test_nway_presets_invert_and_loupe_carry_to_the_next_case(
    md_on_first_case, page, artifacts_dir
):
    focus = ".cm-focus-pane canvas"
    assert tools_state(page) == {"window": "default", "invert": "false", "stored": None}
    candidate = "[data-cm-pane][data-position='2'] canvas"
    before = page.evaluate(SAMPLE, candidate)
    check_lung_and_invert(page, focus, artifacts_dir, "nway")
    # the candidates' panes follow the large view
    after = page.evaluate(SAMPLE, candidate)
    assert sum(abs(a - b) for a, b in zip(before, after, strict=True)) / len(before) > 20
    check_loupe(page, focus, artifacts_dir, "nway")
    page.keyboard.press("?")
    help_text = page.locator("dialog.cm-help").inner_text()
    assert (
        "Window preset" in help_text and "Invert grey values" in help_text and "Loupe" in help_text
    )
    page.keyboard.press("Escape")
    press_and_follow(page, "1")
    assert md_on_first_case.token not in page.url
    check_carried(page, focus)
    page.screenshot(path=artifacts_dir / "nway-next-case.png")
    # the buttons do the same as the keys
    page.click("[data-cm-preset=default]")
    assert tools_state(page)["stored"] == {"preset": "default", "invert": True}
    # A screen already open elsewhere (another tab, a case rendered ahead) follows a change.
    other = page.context.new_page()
    other.goto(page.url)
    wait_ready(other)
    assert tools_state(other)["window"] == "default"
    page.keyboard.press("v")
    other.wait_for_function(
        "() => document.querySelector('[data-cm-display-tools]').dataset.cmWindow === 'lung'"
    )
    other.close()


def test_draw_presets_invert_loupe_and_brush_size_in_mm(md_on_first_case, page, artifacts_dir):
    radiograph = md_on_first_case.radiograph
    radiograph.metadata = {**radiograph.metadata, "pixel_spacing_mm": [0.25, 0.25]}
    radiograph.save(update_fields=["metadata"])
    press_and_follow(page, "r")
    assert "/draw" in page.url
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).ready")
    size = page.locator("[data-cm-control=brush-size] + output")
    # default brush: 10 working pixels (the shorter side / 32) of 0.25 mm
    assert size.inner_text() == "2.5 mm"
    page.keyboard.press("]")
    assert size.inner_text() == "3.0 mm"  # 12 px
    stage = ".cm-stage canvas"
    check_lung_and_invert(page, stage, artifacts_dir, "draw")
    box = page.locator(stage).bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.55, steps=5)
    page.mouse.up()
    check_loupe(page, stage, artifacts_dir, "draw")
    # over the stroke the lens shows the mask too (Okabe-Ito orange over the grey image)
    page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.525)
    page.keyboard.down("Shift")
    page.keyboard.press("z")  # Shift+Z: the loupe stays on
    page.keyboard.up("Shift")
    page.locator(".cm-loupe").wait_for(state="visible")
    page.wait_for_timeout(100)
    red, _green, blue = page.evaluate(LOUPE_CENTRE)
    assert red - blue > 60, (red, blue)
    page.screenshot(path=artifacts_dir / "draw-loupe-on-mask.png")
    page.click("[data-cm-control=loupe]")  # the button switches it off again
    page.locator(".cm-loupe").wait_for(state="hidden")
    with page.expect_navigation():
        page.keyboard.press("Control+Enter")
    wait_ready(page)
    check_carried(page, ".cm-focus-pane canvas")  # the next case, on the N-way screen
    press_and_follow(page, "r")
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).ready")
    # this case has no pixel spacing: the brush size stays in pixels
    assert page.locator("[data-cm-control=brush-size] + output").inner_text() == "10px"
    check_carried(page, stage)
    page.screenshot(path=artifacts_dir / "draw-next-case.png")
