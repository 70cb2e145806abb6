"""Evaluation figures (issue "mlworker engine", items 8 and 9): PNG + SVG that read well."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mlworker.curves import precision_recall_curve, roc_curve
from mlworker.maps import infection_map
from mlworker.metrics import Counts
from mlworker.plots import (
    confusion_matrix_figure,
    map_and_gradcam_figure,
    pr_figure,
    roc_figure,
    save_figure,
)


def _texts(figure) -> list[str]:
    texts = [t.get_text() for t in figure.findobj(match=lambda a: hasattr(a, "get_text"))]
    return [t for t in texts if t]


def _models():
    rng = np.random.default_rng(0)
    truth = rng.random(500) < 0.3
    good = np.clip(truth * 0.4 + rng.random(500) * 0.6, 0, 1)
    weak = np.clip(truth * 0.15 + rng.random(500) * 0.85, 0, 1)
    return truth, {"U-Net": good, "FPN": weak}


def test_the_confusion_matrix_figure_shows_counts_and_row_shares(artifacts_dir):
    counts = Counts(tp=2802, fp=141, tn=116224, fn=149)
    figure = confusion_matrix_figure(counts, title="Detection, 5 folds")
    texts = "\n".join(_texts(figure))
    for cell in ("2,802", "141", "116,224", "149", "94.95 %"):
        assert cell in texts
    png, svg = save_figure(figure, artifacts_dir / "confusion")
    assert png.suffix == ".png" and svg.suffix == ".svg"
    with Image.open(png) as image:
        assert image.width > 400 and image.height > 400


def test_roc_and_pr_figures_put_several_models_on_one_axis(artifacts_dir):
    truth, models = _models()
    rocs = {name: roc_curve(truth, score) for name, score in models.items()}
    prs = {name: precision_recall_curve(truth, score) for name, score in models.items()}
    roc = roc_figure(rocs)
    pr = pr_figure(prs)
    roc_legend = [t.get_text() for t in roc.axes[0].get_legend().get_texts()]
    assert roc_legend == [f"{name} (AUC {rocs[name].auc:.4f})" for name in models]
    pr_legend = [t.get_text() for t in pr.axes[0].get_legend().get_texts()]
    assert pr_legend == [f"{name} (AP {prs[name].average_precision:.4f})" for name in models]
    save_figure(roc, artifacts_dir / "roc")
    save_figure(pr, artifacts_dir / "pr")
    with pytest.raises(TypeError, match="RocCurve"):
        roc_figure(prs)
    with pytest.raises(ValueError, match="at least one"):
        pr_figure({})


def test_saving_the_same_figure_twice_gives_the_same_bytes(tmp_path):
    truth, models = _models()
    curves = {name: roc_curve(truth, score) for name, score in models.items()}
    first = save_figure(roc_figure(curves), tmp_path / "a" / "roc")
    second = save_figure(roc_figure(curves), tmp_path / "b" / "roc")
    for one, two in zip(first, second, strict=True):
        assert one.read_bytes() == two.read_bytes(), one.name
    svg = first[1].read_text()
    assert svg.lstrip().startswith("<?xml") and "<dc:date>" not in svg


def test_the_map_and_gradcam_figure_shows_three_panels(artifacts_dir):
    yy, xx = np.mgrid[0:128, 0:128]
    xray = (60 + 120 * np.exp(-((xx - 64) ** 2 + (yy - 64) ** 2) / 3000)).astype(np.uint8)
    prob = np.exp(-((xx - 40) ** 2 + (yy - 50) ** 2) / 200).astype(np.float32)
    cam = np.exp(-((xx - 70) ** 2 + (yy - 60) ** 2) / 900)
    mask = prob > 0.5
    figure = map_and_gradcam_figure(xray, infection_map(xray, prob), cam, mask=mask, title="case")
    titles = [ax.get_title() for ax in figure.axes[:3]]
    assert titles == ["CXR + ground truth", "Infection map", "Grad-CAM (COVID-19)"]
    png, _ = save_figure(figure, artifacts_dir / "map_gradcam")
    with Image.open(png) as image:
        assert image.width > 2 * image.height


def test_bad_figure_input_is_refused(tmp_path):
    xray = np.zeros((32, 32), np.uint8)
    with pytest.raises(ValueError, match="Grad-CAM shape"):
        map_and_gradcam_figure(xray, np.zeros((32, 32, 3), np.uint8), np.zeros((16, 16)))
    with pytest.raises(ValueError, match="unsupported"):
        save_figure(confusion_matrix_figure(Counts(1, 1, 1, 1)), tmp_path / "x", formats=["jpg"])
    assert not any(tmp_path.iterdir())
