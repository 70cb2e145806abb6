"""One CXR as the viewer and live inference show it: the detector's probability map and
infection map, the detection rule's verdict and severity, and with a classifier its
Grad-CAM map of the COVID-19 class (Degerli et al. 2021, the Grad-CAM comparison).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np
from PIL import Image

from mlworker.augment import to_model_input
from mlworker.detection.rule import DEFAULT_THRESHOLD, Detection, detect
from mlworker.maps import infection_map, resize_probability
from mlworker.predict import model_input_size, predict_probabilities


@dataclass
class CaseAnalysis:
    prob: np.ndarray  # float32 (H, W) at the X-ray's resolution
    infection_map: np.ndarray  # uint8 (H, W, 3)
    detection: Detection
    gradcam: np.ndarray | None  # float32 (H, W) in [0, 1], None without a classifier
    classifier_prob: float | None
    ms: dict[str, float]


def _resize_grey(xray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if xray.shape == size:
        return xray
    return np.asarray(Image.fromarray(xray).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def analyse_case(
    detector: keras.Model,
    xray: np.ndarray,
    *,
    classifier: keras.Model | None = None,
    encoder: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> CaseAnalysis:
    """Infection map, verdict and severity of one CXR (uint8 (H, W)); with a classifier
    (and its encoder's name) also its Grad-CAM map of the COVID-19 class."""
    xray = np.asarray(xray)
    if xray.dtype != np.uint8 or xray.ndim != 2:
        raise ValueError(
            f"xray must be a uint8 greyscale (H, W) image, got {xray.dtype} {xray.shape}"
        )
    ms: dict[str, float] = {}
    started = time.perf_counter()
    prob = predict_probabilities(detector, [xray], batch_size=1)[0]
    ms["detector"] = 1000.0 * (time.perf_counter() - started)
    result = CaseAnalysis(
        prob=prob,
        infection_map=infection_map(xray, prob),
        detection=detect(prob, threshold=threshold),
        gradcam=None,
        classifier_prob=None,
        ms=ms,
    )
    if classifier is not None:
        from mlworker.gradcam import gradcam
        from mlworker.nets import feature_layer_name

        if encoder is None:
            raise ValueError("Grad-CAM needs the classifier's encoder name")
        started = time.perf_counter()
        size = model_input_size(classifier) or xray.shape
        x = to_model_input(_resize_grey(xray, size))[None]
        result.classifier_prob = float(np.asarray(classifier.predict_on_batch(x))[0, 1])
        cam = gradcam(classifier, x, layer_name=feature_layer_name(encoder))[0]
        result.gradcam = resize_probability(cam, xray.shape)
        ms["classifier"] = 1000.0 * (time.perf_counter() - started)
    return result


def gradcam_overlay(xray: np.ndarray, cam: np.ndarray, *, opacity: float = 0.5) -> np.ndarray:
    """A Grad-CAM map drawn as the usual jet overlay on the CXR: uint8 (H, W, 3)."""
    from matplotlib import colormaps

    xray = np.asarray(xray)
    if xray.ndim != 2 or np.asarray(cam).shape != xray.shape:
        raise ValueError(f"cam {np.shape(cam)} must match the greyscale CXR {xray.shape}")
    jet = colormaps["jet"](np.clip(cam, 0.0, 1.0))[..., :3] * 255.0
    grey = np.repeat(xray[..., None].astype(np.float64), 3, axis=-1)
    return np.rint((1 - opacity) * grey + opacity * jet).astype(np.uint8)
