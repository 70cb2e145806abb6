"""The candidate viewer (static/js/cm-viewer.js) in Chromium, judged by the pixels it puts on screen."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.browser.harness.support import (
    CALIBRATION,
    FitGeometry,
    HarnessServer,
    canvas_pixels,
    chromium,
    preset_mask,
)

pytestmark = pytest.mark.browser

IMAGE = (400, 480)
ORANGE = np.array([230, 159, 0])
PANE1, PANE2, FOCUS = (
    '[data-cm-pane][data-position="1"]',
    '[data-cm-pane][data-position="2"]',
    "[data-cm-focus]",
)
MASK1_CENTRE = (0.30 * IMAGE[0], 0.45 * IMAGE[1])  # preset 1
PATCH = (
    (CALIBRATION["box"][0] + CALIBRATION["box"][2]) / 2 * IMAGE[0],
    (CALIBRATION["box"][1] + CALIBRATION["box"][3]) / 2 * IMAGE[1],
)


@pytest.fixture(scope="module")
def server():
    s = HarnessServer()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, errors


def open_viewer(page, server, query: str = "n=3") -> None:
    page.goto(f"{server.url}/harness/viewer.html?w={IMAGE[0]}&h={IMAGE[1]}&{query}")
    page.evaluate("CM.viewer(document.querySelector('[data-cm-viewer]')).ready")


def settle(page) -> None:
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def api(page, js: str):
    result = page.evaluate(
        f"(() => {{ const v = CM.viewer(document.querySelector('[data-cm-viewer]')); return {js}; }})()"
    )
    settle(page)
    return result


def rgb_at(page, selector: str, image_point) -> np.ndarray:
    x, y = FitGeometry(page, selector, IMAGE).pixel(*image_point)
    return canvas_pixels(page, selector)[y, x, :3].astype(int)


def lut(value: float, center: float, width: float) -> int:
    y = ((value - (center - 0.5)) / max(1, width - 1) + 0.5) * 255
    return int(np.floor(min(255, max(0, y)) + 0.5))


def test_fill_and_contour_show_the_mask_differently(page, server, artifacts_dir):
    open_viewer(page, server)
    fill = rgb_at(page, PANE1, MASK1_CENTRE)
    api(page, "v.setMasksVisible(false)")
    grey = rgb_at(page, PANE1, MASK1_CENTRE)
    api(page, "v.setMasksVisible(true)")
    assert grey[0] == grey[1] == grey[2]
    assert np.abs(fill - (grey * 0.55 + ORANGE * 0.45)).max() <= 2, (
        "translucent fill at the default 45 %"
    )
    page.screenshot(path=artifacts_dir / "viewer-fill.png")

    page.locator("[data-cm-control=contour]").click()
    settle(page)
    assert page.get_attribute("[data-cm-control=contour]", "aria-pressed") == "true"
    assert (rgb_at(page, PANE1, MASK1_CENTRE) == grey).all(), "a contour leaves the inside clear"
    g = FitGeometry(page, PANE1, IMAGE)
    pixels = canvas_pixels(page, PANE1)[..., :3].astype(int)
    y = g.pixel(*MASK1_CENTRE)[1]
    x_edge = g.pixel(MASK1_CENTRE[0] - 0.12 * IMAGE[0], 0)[0]
    row = pixels[y, x_edge - 6 : x_edge + 6]
    assert (row[:, 0] - row[:, 2] > 90).any(), "an orange line on the mask's edge"
    assert (row.sum(1) < grey.sum() * 0.6).any(), (
        "with a dark rim that keeps it visible on bright lung"
    )
    api(page, "v.setOpacity(1)")
    page.keyboard.press("+")
    page.keyboard.press("+")
    settle(page)
    page.screenshot(path=artifacts_dir / "viewer-contour-zoomed.png")
    page.keyboard.press("c")
    settle(page)
    assert page.get_attribute("[data-cm-control=contour]", "aria-pressed") == "false"


def test_opacity_slider_and_keys(page, server):
    open_viewer(page, server)
    slider = page.locator("[data-cm-control=opacity]")
    assert page.get_by_label("Opacity").count() == 1, "the slider has a label"
    slider.focus()
    page.keyboard.press("End")
    settle(page)
    assert (rgb_at(page, PANE1, MASK1_CENTRE) == ORANGE).all()
    page.keyboard.press("Home")
    settle(page)
    c = rgb_at(page, PANE1, MASK1_CENTRE)
    assert c[0] == c[1] == c[2], "opacity 0 shows the image alone"
    page.locator("body").focus()
    for _ in range(4):
        page.keyboard.press("]")
    settle(page)
    assert slider.input_value() == "20"
    page.keyboard.press(",")
    assert slider.input_value() == "15"


def test_masks_hide_while_space_is_held(page, server):
    open_viewer(page, server)
    shown = rgb_at(page, PANE1, MASK1_CENTRE)
    assert shown[0] - shown[2] > 40
    page.keyboard.down("Space")
    settle(page)
    held = rgb_at(page, PANE1, MASK1_CENTRE)
    assert held[0] == held[1] == held[2]
    assert (rgb_at(page, FOCUS, MASK1_CENTRE)[0] == rgb_at(page, FOCUS, MASK1_CENTRE)).all()
    assert page.get_attribute("[data-cm-control=masks]", "aria-pressed") == "false"
    page.keyboard.up("Space")
    settle(page)
    assert (rgb_at(page, PANE1, MASK1_CENTRE) == shown).all()
    assert page.evaluate("window.scrollY") == 0, "Space does not scroll the page"


def window_setting(page) -> tuple[float, float]:
    label = page.get_attribute(
        "[data-cm-control=window]", "aria-label"
    )  # "Window W, level L; reset"
    m = re.match(r"Window (-?[\d.]+), level (-?[\d.]+);", label)
    return float(m[2]), float(m[1])


def test_window_level_changes_the_displayed_grey_values(page, server):
    open_viewer(page, server)
    assert (rgb_at(page, PANE1, PATCH) == CALIBRATION["value"]).all(), "identity window by default"
    api(page, "v.setWindow(100, 50)")
    assert (rgb_at(page, PANE2, PATCH) == lut(CALIBRATION["value"], 100, 50)).all()
    page.keyboard.press("w")
    page.keyboard.press(";")
    settle(page)
    center, width = window_setting(page)
    assert (center, width) != (100, 50)
    assert (rgb_at(page, PANE1, PATCH) == lut(CALIBRATION["value"], center, width)).all()
    # right-drag: left-right is the window, up-down the level
    x, y = FitGeometry(page, PANE2, IMAGE).screen(200, 240)
    page.mouse.move(x, y)
    page.mouse.down(button="right")
    page.mouse.move(x + 40, y - 20, steps=4)
    page.mouse.up(button="right")
    settle(page)
    assert window_setting(page) == (center - 20, width + 40)
    assert (rgb_at(page, FOCUS, PATCH) == lut(CALIBRATION["value"], center - 20, width + 40)).all()
    page.keyboard.press("l")
    settle(page)
    assert (rgb_at(page, PANE1, PATCH) == CALIBRATION["value"]).all()


def test_zoom_and_pan_stay_in_sync_across_panes(page, server):
    open_viewer(page, server)
    api(page, "v.setMasksVisible(false)")
    before = canvas_pixels(page, PANE1)
    g1, g2 = FitGeometry(page, PANE1, IMAGE), FitGeometry(page, PANE2, IMAGE)
    page.mouse.move(*g1.screen(*PATCH))
    for _ in range(4):
        page.mouse.wheel(0, -150)  # zoom about the calibration patch in pane 1
    settle(page)
    assert (rgb_at(page, PANE1, PATCH) == CALIBRATION["value"]).all(), (
        "the point under the cursor stays put"
    )
    p1, p2 = canvas_pixels(page, PANE1), canvas_pixels(page, PANE2)
    assert (p1 == p2).all(), "pane 2 shows exactly what pane 1 shows"
    assert not (p1 == before).all()
    # pan in pane 2 so that the patch comes to the middle: every pane, the focus view too, follows
    start = g2.screen(*PATCH)
    box = g2.box
    middle = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*middle, steps=6)
    page.mouse.up()
    settle(page)
    for sel in (PANE1, PANE2, FOCUS):
        c = canvas_pixels(page, sel)
        assert (c[c.shape[0] // 2, c.shape[1] // 2, :3] == CALIBRATION["value"]).all(), sel
    assert (canvas_pixels(page, PANE1) == canvas_pixels(page, PANE2)).all()
    page.keyboard.press("0")
    settle(page)
    assert (canvas_pixels(page, PANE1) == before).all(), "0 fits the image again"


def test_mask_smaller_than_the_image_is_scaled_with_nearest_neighbour(page, server):
    open_viewer(page, server, "n=1&mw=100&mh=120")
    api(page, "v.setOpacity(1)")
    g = FitGeometry(page, FOCUS, IMAGE)
    px = canvas_pixels(page, FOCUS)[..., :3].astype(int)
    h, w = px.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    ix, iy = (xs + g.box["x"] - g.ox) / g.s, (ys + g.box["y"] - g.oy) / g.s
    inside = (ix >= 0) & (iy >= 0) & (ix < IMAGE[0]) & (iy < IMAGE[1])
    mask = preset_mask(1, 100, 120)
    expected = np.zeros((h, w), bool)
    expected[inside] = mask[
        (iy[inside] * 120 / IMAGE[1]).astype(int), (ix[inside] * 100 / IMAGE[0]).astype(int)
    ]
    orange = (px == ORANGE).all(-1)
    grey = (px[..., 0] == px[..., 1]) & (px[..., 1] == px[..., 2])
    assert (orange | grey).all(), "no blended edge pixels: the mask is not smoothed"
    assert (orange == expected).mean() > 0.995, "the mask lies where it belongs on the image"
    page.mouse.move(*g.screen(*MASK1_CENTRE))
    for _ in range(5):
        page.mouse.wheel(0, -200)
    settle(page)
    px = canvas_pixels(page, FOCUS)[..., :3].astype(int)
    orange = (px == ORANGE).all(-1)
    assert orange.mean() > 0.2
    assert (orange | ((px[..., 0] == px[..., 1]) & (px[..., 1] == px[..., 2]))).all()


def test_every_control_and_pane_is_reachable_with_tab_and_announces_focus(page, server):
    open_viewer(page, server, "n=5")
    page.locator("body").focus()
    seen = []
    for _ in range(20):
        page.keyboard.press("Tab")
        seen.append(
            page.evaluate(
                "(a => a.dataset.cmControl || (a.hasAttribute('data-cm-focus') ? 'focus-view' : a.dataset.position && 'pane-' + a.dataset.position) || a.tagName)(document.activeElement)"
            )
        )
    for name in [
        "contour",
        "opacity",
        "masks",
        "window",
        "fit",
        "help",
        "pane-1",
        "pane-3",
        "pane-5",
        "focus-view",
    ]:
        assert name in seen, f"{name} not reachable with Tab: {seen}"
    assert page.evaluate("window.cmEvents").count(3) >= 1, "focusing pane 3 dispatched cm:focus"
    page.locator(PANE2).click()
    assert page.evaluate("window.cmEvents")[-1] == 2
    assert page.get_attribute(PANE2, "aria-current") == "true"
    assert page.inner_text(f"{FOCUS} figcaption") == "B"
    assert page.inner_text(f"{PANE2} figcaption") == "B", "panes show their label"
    api(page, "v.focus(4)")
    assert page.inner_text(f"{FOCUS} figcaption") == "D"


def test_help_overlay_opens_with_question_mark_and_keeps_keys_from_the_page(
    page, server, artifacts_dir
):
    open_viewer(page, server, "n=5")
    page.keyboard.press("?")
    dialog = page.locator("dialog.cm-help")
    assert dialog.is_visible()
    text = dialog.inner_text()
    for phrase in [
        "Zoom in",
        "Hide masks while held",
        "fill / contour",
        "Window",
        "Level",
        "opacity",
    ]:
        assert phrase.lower() in text.lower(), phrase
    page.screenshot(path=artifacts_dir / "viewer-help.png")
    page.evaluate("window.pageKeys.length = 0")
    page.keyboard.press("Escape")
    assert not dialog.is_visible()
    assert "Escape" not in page.evaluate("window.pageKeys"), (
        "Escape closed the help, not the page's action"
    )
    page.locator("[data-cm-control=help]").click()
    assert dialog.is_visible()


def test_the_page_choice_keys_are_left_alone(page, server):
    open_viewer(page, server)
    state = "[v.display.mode, v.display.opacity, v.display.center, v.display.width, v.view.zoom, v.display.showMasks]"
    before = api(page, state)
    for key in ["1", "2", "a", "b", "r", "n", "Enter", "ArrowLeft", "ArrowRight", "Escape"]:
        page.keyboard.press(key)
    assert api(page, state) == before
    assert page.evaluate("window.pageKeys") == [
        "1",
        "2",
        "a",
        "b",
        "r",
        "n",
        "Enter",
        "ArrowLeft",
        "ArrowRight",
        "Escape",
    ]


def test_real_radiograph_screenshot(page, server, shared_data, artifacts_dir):
    root = shared_data / "real-cxr" / "qata-cov19-sgseg" / "train"
    image = sorted((root / "images").glob("*.png"))[0]
    server.data_root = shared_data
    rel = image.relative_to(shared_data).as_posix()
    mask = (root / "masks" / f"mask_{image.name}").relative_to(shared_data).as_posix()
    other = sorted((root / "masks").glob("*.png"))[-1].relative_to(shared_data).as_posix()
    page.goto(
        f"{server.url}/harness/viewer.html?w=224&h=224&n=2&image=/data/{rel}&mask1=/data/{mask}&mask2=/data/{other}"
    )
    page.evaluate("CM.viewer(document.querySelector('[data-cm-viewer]')).ready")
    settle(page)
    page.screenshot(path=artifacts_dir / "viewer-real-fill.png")
    page.keyboard.press("c")
    settle(page)
    page.screenshot(path=artifacts_dir / "viewer-real-contour.png")
    px = canvas_pixels(page, FOCUS)[..., :3].astype(int)
    assert ((px[..., 0] - px[..., 2]) > 90).any(), "the contour of the real mask shows"
