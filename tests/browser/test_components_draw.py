"""The draw editor (static/js/cm-draw.js) in Chromium: tools, undo, refine, and what toBlob() hands over."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.browser.harness.support import (
    FitGeometry,
    HarnessServer,
    capsule,
    chromium,
    editor_png,
    preset_mask,
)

pytestmark = pytest.mark.browser

IMAGE = (400, 480)
WORK = (200, 240)  # the working resolution is half the image: strokes must land in work pixels


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
    server.reset()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, errors


def open_draw(page, server, *, work=WORK, init: str = "", key: str = "") -> FitGeometry:
    # a fresh draft key: a page closed by the previous test may still flush its draft to the server
    key = key or uuid.uuid4().hex
    q = f"w={IMAGE[0]}&h={IMAGE[1]}&ww={work[0]}&wh={work[1]}&key={key}"
    if init:
        q += "&init=" + init.replace("&", "%26").replace("?", "%3F")
    page.goto(f"{server.url}/harness/draw.html?{q}")
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).ready")
    return FitGeometry(page, ".cm-stage", IMAGE, work)


def drag(page, points, button="left"):
    page.mouse.move(*points[0])
    page.mouse.down(button=button)
    for p in points[1:]:
        page.mouse.move(*p, steps=4)
    page.mouse.up(button=button)


def call(page, js: str):
    return page.evaluate(
        f"(() => {{ const ed = CM.draw(document.querySelector('[data-cm-draw]')); return {js}; }})()"
    )


def assert_binary(mask: np.ndarray, size=WORK):
    assert mask.shape == (size[1], size[0])
    assert set(np.unique(mask)) <= {0, 255}


def test_brush_stroke_sets_the_pixels_under_the_mouse_in_working_resolution(
    page, server, artifacts_dir
):
    g = open_draw(page, server)
    call(page, "ed.setBrushSize(6)")
    a, b = g.screen(100, 150), g.screen(250, 260)  # screen points (CSS px)
    drag(page, [a, b])
    page.screenshot(path=artifacts_dir / "draw-brush.png")
    mask = editor_png(page)
    assert_binary(mask)
    d = capsule(*WORK, g.work(*a), g.work(*b), 3)
    assert (mask[d <= -1] == 255).all(), "the stroke's core must be painted"
    assert (mask[d > 1] == 0).all(), "nothing may be painted away from the stroke"
    assert call(page, "ed.isEmpty()") is False


def test_stroke_follows_the_cursor_when_zoomed_and_panned(page, server):
    g = open_draw(page, server)
    call(page, "ed.setBrushSize(3)")
    p = g.screen(120, 200)
    target = g.work(*p)  # what is under p before zooming
    page.mouse.move(*p)
    for _ in range(3):
        page.mouse.wheel(0, -200)  # zoom in about the cursor
    page.wait_for_function("CM.draw(document.querySelector('[data-cm-draw]')).view.zoom > 2")
    drag(page, [p, (p[0] + 50, p[1] - 30)], button="middle")  # pan: the image follows the mouse
    zoom = call(page, "ed.view.zoom")
    start = (p[0] + 50, p[1] - 30)
    end = (start[0] + 60, start[1])
    drag(page, [start, end])
    mask = editor_png(page)
    assert_binary(mask)
    length = 60 / (g.s * zoom) * WORK[0] / IMAGE[0]  # in work pixels
    d = capsule(*WORK, target, (target[0] + length, target[1]), 1.5)
    assert mask[int(target[1]), int(target[0])] == 255, (
        "the stroke starts where the cursor pointed before zooming"
    )
    assert (mask[d <= -0.9] == 255).all()
    assert (mask[d > 1.2] == 0).all()
    assert length < 20, "zoomed in, the same mouse movement covers fewer mask pixels"


def test_eraser_removes_only_what_it_touches(page, server):
    init = f"/gen/mask.png?w={WORK[0]}&h={WORK[1]}&preset=3&fmt=L"
    g = open_draw(page, server, init=init)
    before = editor_png(page)
    assert (before == preset_mask(3, *WORK) * 255).all()
    page.keyboard.press("e")
    call(page, "ed.setBrushSize(10)")
    a, b = g.screen(0, 240), g.screen(400, 240)
    drag(page, [a, b])
    after = editor_png(page)
    assert_binary(after)
    d = capsule(*WORK, g.work(*a), g.work(*b), 5)
    assert (after[d <= -1] == 0).all()
    assert (after[d > 1] == before[d > 1]).all()
    assert after.sum() < before.sum()


def test_polygon_fills_the_area_it_encloses(page, server, artifacts_dir):
    g = open_draw(page, server)
    page.keyboard.press("p")
    corners = [g.screen(*c) for c in [(60, 60), (300, 90), (340, 380), (120, 420), (80, 250)]]
    for c in corners:
        page.mouse.click(*c)
    page.mouse.move(*g.screen(100, 120))
    page.screenshot(path=artifacts_dir / "draw-polygon-in-progress.png")
    assert call(page, "ed.isEmpty()") is True, "nothing is painted before the polygon closes"
    page.mouse.click(*corners[0])  # a click on the first corner closes it
    mask = editor_png(page)
    assert_binary(mask)
    expected = Image.new("1", WORK)
    ImageDraw.Draw(expected).polygon([g.work(*c) for c in corners], fill=1)
    expected = np.asarray(expected)
    got = mask == 255
    iou = (got & expected).sum() / (got | expected).sum()
    assert iou > 0.97, iou
    perimeter = sum(
        np.hypot(*np.subtract(g.work(*a), g.work(*b)))
        for a, b in zip(corners, corners[1:] + corners[:1], strict=True)
    )
    assert (got ^ expected).sum() < perimeter, "differences only along the edge"


def test_lasso_enter_doubleclick_escape_and_erasing_polygon(page, server):
    g = open_draw(page, server)
    page.keyboard.press("p")
    # a freehand drag that starts a polygon is a lasso: releasing fills it
    o = g.screen(200, 240)
    circle = [(o[0] + 80 * np.cos(t), o[1] + 80 * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 40)]
    drag(page, circle)
    lasso = editor_png(page) == 255
    cx, cy = g.work(*o)
    r = 80 / g.s * WORK[0] / IMAGE[0]
    disk = capsule(*WORK, (cx, cy), (cx, cy), r)
    assert lasso[disk <= -1.5].all() and not lasso[disk > 1.5].any()

    # Escape cancels a polygon in progress
    for c in [(50, 50), (100, 50), (100, 100)]:
        page.mouse.click(*g.screen(*c))
    page.keyboard.press("Escape")
    assert (editor_png(page) == 255).sum() == lasso.sum()
    assert "Escape" in page.evaluate("window.pageKeys"), "the page still hears Escape"

    # Enter closes; with erase mode on, the polygon erases
    page.keyboard.press("x")
    for c in [(170, 210), (230, 210), (230, 270), (170, 270)]:
        page.mouse.click(*g.screen(*c))
    page.keyboard.press("Enter")
    erased = editor_png(page) == 255
    hole = capsule(*WORK, g.work(*g.screen(180, 220)), g.work(*g.screen(220, 260)), 0)
    assert not erased[hole <= 0].any()
    assert erased.sum() < lasso.sum()

    # double-click closes too
    page.keyboard.press("x")
    for c in [(40, 400), (120, 400)]:
        page.mouse.click(*g.screen(*c))
    page.mouse.dblclick(*g.screen(80, 460))
    tri = editor_png(page) == 255
    x, y = (int(v) for v in g.work(*g.screen(80, 415)))
    assert tri[y, x] and tri.sum() > erased.sum()


def test_flood_fill_fills_the_enclosed_region_only(page, server):
    g = open_draw(page, server)
    call(page, "ed.setBrushSize(4)")
    square = [g.screen(*c) for c in [(100, 100), (300, 100), (300, 300), (100, 300), (100, 100)]]
    drag(page, square)
    outline = editor_png(page) == 255
    page.keyboard.press("f")
    page.mouse.click(*g.screen(200, 200))  # inside the square
    filled = editor_png(page) == 255
    x0, y0 = (int(v) + 3 for v in g.work(*square[0]))
    x1, y1 = (int(v) - 3 for v in g.work(*square[2]))
    assert filled[y0:y1, x0:x1].all(), "the inside of the square is filled"
    assert (filled & outline).sum() == outline.sum(), "the outline stays"
    outside = np.ones(filled.shape, bool)
    outside[y0 - 6 : y1 + 6, x0 - 6 : x1 + 6] = False
    assert not filled[outside].any(), "the fill does not leak outside the square"
    # erase mode + fill removes the whole connected blob
    page.keyboard.press("x")
    page.mouse.click(*g.screen(200, 200))
    assert call(page, "ed.isEmpty()") is True


def test_undo_redo_clear_and_fifty_steps(page, server):
    g = open_draw(page, server)
    call(page, "ed.setBrushSize(2)")
    states = [editor_png(page)]
    for i in range(3):
        drag(page, [g.screen(50, 100 + 40 * i), g.screen(300, 100 + 40 * i)])
        states.append(editor_png(page))
    page.keyboard.press("Control+z")
    page.keyboard.press("Control+z")
    assert (editor_png(page) == states[1]).all()
    page.keyboard.press("Control+Shift+z")
    assert (editor_png(page) == states[2]).all()
    page.keyboard.press("Control+y")
    assert (editor_png(page) == states[3]).all()
    page.locator("[data-cm-control=clear]").click()
    assert call(page, "ed.isEmpty()") is True
    page.keyboard.press("Control+z")
    assert (editor_png(page) == states[3]).all(), "clear can be undone"

    call(page, "ed.clear()")
    for i in range(60):
        drag(page, [g.screen(20 + 6 * i, 180), g.screen(20 + 6 * i, 200)])
    full = editor_png(page)
    for _ in range(55):
        call(page, "ed.undo()")
    five = editor_png(page)
    columns = np.nonzero(five.any(0))[0]
    assert 0 < five.sum() < full.sum() and len(columns) < len(np.nonzero(full.any(0))[0]) / 5
    for _ in range(55):
        call(page, "ed.redo()")
    assert (editor_png(page) == full).all()


@pytest.mark.parametrize("fmt", ["1", "P", "L01"])
def test_refine_starts_from_the_candidate_scaled_to_the_working_resolution(page, server, fmt):
    init = f"/gen/mask.png?w=100&h=120&preset=1&fmt={fmt}"  # a quarter of the work size: nearest neighbour
    open_draw(page, server, init=init)
    mask = editor_png(page)
    assert_binary(mask)
    expected = np.kron(preset_mask(1, 100, 120), np.ones((2, 2), bool))
    assert ((mask == 255) == expected).all()


def test_tool_keys_and_controls_are_reachable(page, server):
    open_draw(page, server)
    for key, tool in [("p", "polygon"), ("f", "fill"), ("e", "eraser"), ("b", "brush")]:
        page.keyboard.press(key)
        assert page.get_attribute("[data-cm-draw]", "data-cm-active-tool") == tool
        assert page.get_attribute(f"[data-cm-tool={tool}]", "aria-pressed") == "true"
    size = call(page, "ed.size")
    page.keyboard.press("]")
    assert call(page, "ed.size") > size
    page.keyboard.press("[")
    page.keyboard.press("[")
    assert call(page, "ed.size") < size
    reached = set()
    page.locator("body").focus()
    for _ in range(30):
        page.keyboard.press("Tab")
        reached.add(
            page.evaluate(
                "(a => a.dataset.cmTool || a.dataset.cmControl || a.className)(document.activeElement)"
            )
        )
    for name in [
        "brush",
        "eraser",
        "polygon",
        "fill",
        "erase",
        "brush-size",
        "undo",
        "redo",
        "clear",
        "contour",
        "opacity",
        "masks",
        "help",
    ]:
        assert name in reached, f"{name} is not reachable with Tab"
    assert "cm-stage" in reached
    with pytest.raises(Exception, match="unknown tool"):
        call(page, "ed.setTool('spray')")
