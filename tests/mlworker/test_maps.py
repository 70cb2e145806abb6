"""Infection maps (issue "mlworker engine", item 6): the paper's jet/HSV overlay."""

from __future__ import annotations

import colorsys
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from matplotlib import cm
from PIL import Image
from scipy import ndimage

from mlworker.maps import infection_map, resize_probability, write_infection_map_png

REPO_ROOT = Path(__file__).resolve().parents[2]


def _reference_pixel(grey_or_rgb: np.ndarray, p: float, eps: float) -> np.ndarray:
    """One pixel the slow way: matplotlib's jet, colorsys HSV, H+S from jet, V from the X-ray."""
    rgb = np.broadcast_to(grey_or_rgb, (3,)).astype(float) / 255.0
    if p < eps:
        return rgb * 255.0
    jr, jg, jb, _ = cm.jet(p)
    h, s, _ = colorsys.rgb_to_hsv(jr, jg, jb)
    _, _, v = colorsys.rgb_to_hsv(*rgb)
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0


def _reference_map(xray: np.ndarray, prob: np.ndarray, eps: float) -> np.ndarray:
    out = np.empty(prob.shape + (3,))
    for i in range(prob.shape[0]):
        for j in range(prob.shape[1]):
            out[i, j] = _reference_pixel(xray[i, j], float(prob[i, j]), eps)
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_it_matches_a_pixel_by_pixel_matplotlib_colorsys_computation(channels):
    rng = np.random.default_rng(6)
    shape = (23, 17) if channels == 1 else (23, 17, 3)
    xray = rng.integers(0, 256, shape, dtype=np.uint8)
    prob = rng.random((23, 17)).astype(np.float32)
    prob[:5] = 0.0  # background: no infection
    prob[5, :4] = [1.0, 0.5, 0.999, 0.0009]  # table edges and just under eps
    out = infection_map(xray, prob, eps=1e-3)
    assert out.shape == (23, 17, 3) and out.dtype == np.uint8
    expected = _reference_map(xray, prob, 1e-3)
    assert np.abs(out.astype(float) - expected).max() <= 1.0


def test_it_shows_the_plain_xray_where_the_probability_is_zero():
    rng = np.random.default_rng(1)
    xray = rng.integers(0, 256, (40, 30), dtype=np.uint8)
    prob = np.zeros((40, 30), np.float32)
    prob[10:20, 5:15] = 0.8
    out = infection_map(xray, prob)
    background = prob == 0
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel][background], xray[background])
    # Infected pixels are coloured (not grey) wherever the X-ray is not black.
    patch = out[10:20, 5:15].astype(int)
    lit = xray[10:20, 5:15] > 20
    assert np.all((patch.max(axis=2) - patch.min(axis=2))[lit] > 0)


def test_it_keeps_the_xray_brightness_as_value():
    xray = np.full((8, 8), 200, np.uint8)
    prob = np.linspace(0.01, 1.0, 64, dtype=np.float32).reshape(8, 8)
    out = infection_map(xray, prob)
    assert np.all(np.abs(out.max(axis=2).astype(int) - 200) <= 1)  # HSV value = max(R, G, B)


def test_it_resizes_a_low_resolution_map_bilinearly_to_the_xray():
    rng = np.random.default_rng(2)
    low = rng.random((14, 14)).astype(np.float32)
    full = resize_probability(low, (56, 56))
    # Half-pixel-centred bilinear with edge clamping, computed independently by scipy.
    expected = ndimage.zoom(low.astype(float), 4, order=1, mode="nearest", grid_mode=True)
    np.testing.assert_allclose(full, expected, atol=1e-5)

    xray = rng.integers(0, 256, (56, 56), dtype=np.uint8)
    out = infection_map(xray, low)
    assert out.shape == (56, 56, 3)
    expected_pixels = _reference_map(xray, full, 1e-3)
    assert np.abs(out.astype(float) - expected_pixels).max() <= 1.0


def test_it_writes_a_full_resolution_png(tmp_path):
    rng = np.random.default_rng(3)
    xray = rng.integers(0, 256, (300, 250), dtype=np.uint8)
    prob = np.zeros((32, 32), np.float32)
    prob[8:20, 8:20] = 0.9
    path = write_infection_map_png(tmp_path / "maps" / "case_map.png", xray, prob)
    with Image.open(path) as image:
        assert image.size == (250, 300) and image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), infection_map(xray, prob))


@pytest.mark.parametrize(
    ("xray", "prob", "error", "message"),
    [
        (np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32), TypeError, "uint8"),
        (np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8), np.float32), ValueError, "HxW"),
        (np.zeros((8, 8), np.uint8), np.full((8, 8), 1.5, np.float32), ValueError, r"\[0, 1\]"),
        (np.zeros((8, 8), np.uint8), np.full((8, 8), np.nan, np.float32), ValueError, "NaN"),
        (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), TypeError, "float"),
        (np.zeros((8, 8), np.uint8), np.zeros((2, 8, 8), np.float32), ValueError, "HxW"),
    ],
)
def test_it_rejects_bad_input_and_writes_nothing(tmp_path, xray, prob, error, message):
    with pytest.raises(error, match=message):
        write_infection_map_png(tmp_path / "out" / "x.png", xray, prob)
    assert not (tmp_path / "out").exists()


def test_a_2048_square_map_takes_well_under_a_second():
    rng = np.random.default_rng(4)
    xray = rng.integers(0, 256, (2048, 2048), dtype=np.uint8)
    prob = rng.random((224, 224)).astype(np.float32)
    infection_map(xray, prob)  # warm the colour table
    start = time.perf_counter()
    infection_map(xray, prob)
    assert time.perf_counter() - start < 0.8


def test_it_draws_a_real_cxr_with_its_mask(shared_data, artifacts_dir):
    folder = shared_data / "real-cxr" / "qata-cov19-sgseg" / "test"
    name = sorted(p.name for p in (folder / "images").glob("*.png"))[0]
    xray = np.asarray(Image.open(folder / "images" / name).convert("L"))
    mask = np.asarray(Image.open(folder / "masks" / f"mask_{name}").convert("L")) > 127
    # A soft probability map from the mask, as a network would give.
    prob = ndimage.gaussian_filter(mask.astype(np.float32), 4)
    prob = (prob / prob.max()).astype(np.float32)
    path = write_infection_map_png(artifacts_dir / "infection_map.png", xray, prob)
    out = np.asarray(Image.open(path))
    assert out.shape == xray.shape + (3,)
    # Red-ish where the mask is (Ŷ high), grey X-ray far from it.
    core = ndimage.binary_erosion(mask, iterations=3) & (xray > 60)
    assert core.any()
    assert np.mean(out[..., 0][core] > out[..., 2][core]) > 0.9
    far = prob < 1e-3
    np.testing.assert_array_equal(out[..., 1][far], xray[far])


def test_maps_detection_metrics_and_plots_import_no_keras():
    # The web process draws maps and tables too; it must not pay for (or need) Keras.
    code = (
        "import sys, mlworker.maps, mlworker.detection.rule, mlworker.metrics, mlworker.curves, "
        "mlworker.plots, mlworker.evaluate; bad = {'keras', 'tensorflow', 'torch', 'django'} & set(sys.modules); "
        "sys.exit(f'imported {sorted(bad)}' if bad else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr or done.stdout
