"""Click-to-refine in Chromium: on the draw screen a reader clicks, sees the mask the click-to-
refine worker made, shift-clicks, undoes a click, ticks a lung zone, touches up with the brush
and submits; the decision keeps the clicks, the zones and the model version."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from django.core.files.base import ContentFile

from annotation.models import Decision, ModelVersion, Radiograph, ReviewTask
from annotation.roles import MD
from annotation.storage import DISPLAY, blob_write, content_path
from cxrio.images import encode_png
from tests.browser.conftest import login, press_and_follow, wait_ready
from tests.browser.harness.support import FitGeometry, editor_png
from tests.factories import UserFactory, review_stage

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.keras,
    pytest.mark.usefixtures("roles_present"),
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]

SIZE = 64  # the working image, 64 × 64
TRAIN = 32  # the network's own size
# Where every case's radiograph shows its bright square (working pixels).
SQUARE = (slice(20, 40), slice(24, 44))


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Dark noisy images with one bright 10 × 10 square each; the square is the mask."""
    rng = np.random.default_rng(seed)
    images = rng.normal(60, 10, (n, TRAIN, TRAIN))
    masks = np.zeros((n, TRAIN, TRAIN), bool)
    for i in range(n):
        r, c = rng.integers(3, TRAIN - 13, 2)
        masks[i, r : r + 10, c : c + 10] = True
    images[masks] += 120
    return np.clip(images, 0, 255).astype(np.uint8), masks


def trained_model(dataset) -> ModelVersion:
    """A tiny click-to-refine network trained here, registered as the dataset's current one."""
    import keras

    from mlworker.interactive.training import train_interactive
    from mlworker.saved import save_model

    images, masks = blobs(24, seed=0)
    keras.utils.set_random_seed(1)
    result = train_interactive(images, masks, epochs=8, batch_size=4, lr=3e-3, widths=(8, 8, 8))
    from tempfile import TemporaryDirectory

    with TemporaryDirectory() as tmp:
        path = f"{tmp}/clicks.keras"
        save_model(result.model, path)
        data = open(path, "rb").read()  # noqa: SIM115 - read whole, closed at once
    keras.backend.clear_session()
    mv = ModelVersion.objects.create(
        dataset=dataset,
        purpose=ModelVersion.Purpose.INTERACTIVE,
        arch="interactive",
        encoder="w8-8-8",
        deployed=True,
        weights_sha256=hashlib.sha256(data).hexdigest(),
    )
    mv.weights.save(f"models/{mv.pk}.keras", ContentFile(data), save=True)
    return mv


def square_radiographs(dataset) -> None:
    """Every case shows the same dark radiograph with a bright square at SQUARE."""
    rng = np.random.default_rng(5)
    image = np.clip(rng.normal(60, 10, (SIZE, SIZE)), 0, 255)
    image[SQUARE] += 120
    data = encode_png(np.clip(image, 0, 255).astype(np.uint8))
    path = content_path(DISPLAY, hashlib.sha256(data).hexdigest(), "png")
    blob_write(path, data)
    Radiograph.objects.filter(dataset=dataset).update(display=path)


def state(page) -> dict:
    return page.evaluate(
        "(() => { const d = document.querySelector('[data-cm-draw]').dataset;"
        " return {clicks: d.cmClicks, refining: d.cmRefining}; })()"
    )


def wait_clicks(page, n: int, worker=None) -> None:
    """Until the editor holds n clicks and no answer is awaited; says the editor's status (and
    the end of the worker's log) if not."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            "(n) => { const d = document.querySelector('[data-cm-draw]').dataset;"
            " return d.cmClicks === String(n) && !d.cmRefining; }",
            arg=n,
            timeout=60000,  # the first click may wait for the worker to load the model
        )
    except PlaywrightTimeout:
        status = page.locator("[data-cm-draft-status]").text_content()
        log = worker.log_path.read_text()[-3000:] if worker is not None else ""
        pytest.fail(f"no {n} clicks: {state(page)}, status {status!r}\nworker log:\n{log}")


def test_click_shift_click_undo_zone_brush_then_submit(
    live_server, page, start_worker, settings, artifacts_dir, tmp_path
):
    settings.INTERACTIVE_TIMEOUT_S = 60.0
    stage = review_stage(n_cases=2, n_networks=2, width=SIZE, height=SIZE)
    square_radiographs(stage.dataset)
    model = trained_model(stage.dataset)
    worker = start_worker(queues="interactive")
    md = UserFactory(roles=[MD])
    login(page, live_server, md)
    page.goto(f"{live_server.url}/review/s/{stage.pk}/next")
    wait_ready(page)
    task = ReviewTask.objects.get(token=page.url.rstrip("/").split("/")[-1])
    press_and_follow(page, "r")
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).ready")
    assert page.locator("[data-refine-off]").count() == 0
    g = FitGeometry(page, ".cm-stage", (SIZE, SIZE))
    assert not editor_png(page).any()

    page.keyboard.press("k")
    page.mouse.click(*g.screen(34.5, 30.5))  # inside the square
    wait_clicks(page, 1, worker)
    refined = editor_png(page) > 0
    page.screenshot(path=artifacts_dir / "refine-one-click.png")
    assert refined[30, 34], "the click's own pixel is marked"
    inside = np.zeros_like(refined)
    inside[SQUARE] = True
    assert (refined & inside).sum() >= 0.5 * refined.sum(), "mostly the bright square"

    page.keyboard.down("Shift")
    page.mouse.click(*g.screen(5.5, 5.5))  # a negative click far from it
    page.keyboard.up("Shift")
    wait_clicks(page, 2, worker)
    page.get_by_role("button", name="Undo click").click()
    wait_clicks(page, 1, worker)
    assert (editor_png(page) > 0).tolist() == refined.tolist(), "undo brings back its mask"

    page.locator("[data-cm-zone=left_lower]").check()
    wait_clicks(page, 1, worker)
    page.keyboard.press("b")  # the brush touches up afterwards
    page.evaluate("CM.draw(document.querySelector('[data-cm-draw]')).setBrushSize(4)")
    page.mouse.move(*g.screen(55, 55))
    page.mouse.down()
    page.mouse.move(*g.screen(60, 60), steps=4)
    page.mouse.up()
    touched = editor_png(page) > 0
    assert touched[57, 57] and touched[30, 34]
    page.screenshot(path=artifacts_dir / "refine-touched-up.png")
    with page.expect_navigation():
        page.keyboard.press("Control+Enter")
    wait_ready(page)

    decision = Decision.objects.get(task=task)
    assert decision.clicks == [{"x": 34, "y": 30, "positive": True}]
    assert decision.zones == ["left_lower"]
    assert decision.interactive_model == model
    assert decision.outcome_label == "Refined with 1 click"
    page.goto(f"{live_server.url}/review/s/{stage.pk}/cases")
    assert page.get_by_text("Refined with 1 click").count() == 1
