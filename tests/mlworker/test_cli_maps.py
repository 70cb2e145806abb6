"""`python -m mlworker maps` on a tiny saved network whose answer is known."""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest
from PIL import Image

from mlworker.__main__ import main

pytestmark = pytest.mark.keras

INPUT = 32


@pytest.fixture
def model_path(tmp_path):
    """Ŷ = sigmoid((grey − 128) / 4) per pixel: bright pixels infected, dark ones not."""
    inputs = keras.Input((INPUT, INPUT, 3))
    conv = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.full((1, 1, 3, 1), 1 / 12, np.float32), np.array([-32.0], np.float32)])
    path = tmp_path / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "cxr"
    folder.mkdir()
    bright = np.full((96, 80), 40, np.uint8)
    bright[16:48, 16:48] = 230  # a quarter of the width, a third of the height
    Image.fromarray(bright).save(folder / "case_a.png")
    Image.fromarray(np.full((64, 64), 60, np.uint8)).save(folder / "case_b.png")
    return folder


def _read_verdicts(path):
    with open(path, newline="") as handle:
        return {row["name"]: row for row in csv.DictReader(handle)}


def test_it_writes_a_full_resolution_map_and_a_verdict_per_image(model_path, images, tmp_path):
    out = tmp_path / "out"
    code = main(["maps", "--model", str(model_path), "--images", str(images), "--out", str(out)])
    assert code == 0
    with Image.open(out / "case_a_map.png") as image:
        assert image.size == (80, 96) and image.mode == "RGB"
        pixels = np.asarray(image).astype(int)
    assert pixels[30, 30, 0] > pixels[30, 30, 2]  # the bright patch is coloured red-ish
    assert tuple(pixels[80, 70]) == (40, 40, 40)  # far from it: the plain X-ray
    with Image.open(out / "case_b_map.png") as image:
        assert image.size == (64, 64)
    verdicts = _read_verdicts(out / "verdicts.csv")
    assert list(verdicts) == ["case_a", "case_b"]
    assert verdicts["case_a"]["covid"] == "1" and float(verdicts["case_a"]["max_prob"]) > 0.99
    # The patch is 32x32 of 96x80 pixels; the model sees it at 32x32, bilinear edges.
    assert float(verdicts["case_a"]["severity"]) == pytest.approx(32 * 32 / (96 * 80), abs=0.03)
    assert verdicts["case_b"] == {
        "name": "case_b",
        "covid": "0",
        "max_prob": verdicts["case_b"]["max_prob"],
        "severity": "0.000000",
    }
    assert float(verdicts["case_b"]["max_prob"]) < 0.01


def test_the_threshold_changes_the_verdicts(model_path, tmp_path):
    faint = np.full((64, 64), 40, np.uint8)
    faint[16:48, 16:48] = 132  # Ŷ = sigmoid(1) ≈ 0.73 on the patch
    Image.fromarray(faint).save(tmp_path / "faint.png")
    args = ["maps", "--model", str(model_path), "--images", str(tmp_path / "faint.png")]
    for threshold, covid in (("0.5", "1"), ("0.8", "0")):
        out = tmp_path / f"out{threshold}"
        assert main([*args, "--out", str(out), "--threshold", threshold, "--batch-size", "1"]) == 0
        verdict = _read_verdicts(out / "verdicts.csv")["faint"]
        assert verdict["covid"] == covid
        assert float(verdict["max_prob"]) == pytest.approx(1 / (1 + np.exp(-1)), abs=1e-3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing_model", "does not exist"),
        ("bad_model", "cannot load model"),
        ("broken_image", "cannot be read as an image"),
        ("empty_folder", "holds no images"),
        ("threshold", "--threshold"),
    ],
)
def test_bad_input_gets_a_clear_error_and_writes_nothing(
    change, message, model_path, images, tmp_path, capsys
):
    model, folder, extra = model_path, images, []
    if change == "missing_model":
        model = tmp_path / "nope.keras"
    elif change == "bad_model":
        model = tmp_path / "bad.keras"
        model.write_bytes(b"not a model")
    elif change == "broken_image":
        (images / "case_c.png").write_bytes(b"\x89PNG broken")
    elif change == "empty_folder":
        folder = tmp_path / "empty"
        folder.mkdir()
    else:
        extra = ["--threshold", "1.5"]
    out = tmp_path / "out"
    code = main(["maps", "--model", str(model), "--images", str(folder), "--out", str(out), *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
