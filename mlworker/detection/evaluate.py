"""A trained detector or Grad-CAM classifier on its test cases: the numbers the paper's
tables are made of, and the milliseconds per sample.

The detector's result is mlworker.evaluate's `Evaluation` (pixel and case outcomes, scored
chunk by chunk so memory stays bounded on large test sets); `evaluation_record` is what
its model version stores. Pure ML: no Django.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from mlworker.augment import to_model_input
from mlworker.detection.rule import DEFAULT_THRESHOLD
from mlworker.detection.train import check_cases
from mlworker.evaluate import Evaluation, EvaluationTally
from mlworker.metrics import Counts, confusion_counts, mean_dice
from mlworker.predict import predict_probabilities

# Probability maps are stored as 8-bit PNGs, so finer pixel-score bins would add nothing.
HISTOGRAM_BINS = 256
EVAL_CHUNK = 64  # cases predicted at once: memory stays bounded on large test sets


def _timed_predict(model: keras.Model, images: np.ndarray, batch_size: int):
    started = time.perf_counter()
    probs = predict_probabilities(model, images, batch_size=batch_size)
    return probs, time.perf_counter() - started


def evaluate_detector(
    model: keras.Model,
    images: np.ndarray,
    masks: np.ndarray,
    covid: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Predict the test cases and count pixel and case outcomes; time the prediction.

    ms_per_sample is the wall time of prediction divided by the cases, measured after one
    warm-up batch (the first call traces and compiles the graph).
    """
    covid = check_cases(images, masks, covid)
    n = len(images)
    _timed_predict(model, images[: min(batch_size, n)], batch_size)  # warm-up
    tally = EvaluationTally(threshold=threshold, bins=HISTOGRAM_BINS)
    elapsed = 0.0
    for start in range(0, n, EVAL_CHUNK):
        stop = min(start + EVAL_CHUNK, n)
        probs, seconds = _timed_predict(model, images[start:stop], batch_size)
        elapsed += seconds
        # Every COVID-19 case here has its mask; controls count with empty ones.
        tally.add(masks[start:stop], probs, is_covid=covid[start:stop], has_mask=covid[start:stop])
        if progress is not None:
            progress(stop, n)
    return tally.result(ms_per_sample=1000.0 * elapsed / n)


def evaluation_record(evaluation: Evaluation) -> dict[str, Any]:
    """What a detector's model version stores of its test cases, JSON-ready: the confusion
    matrices, per-case scores and pixel-score histogram that the run report adds up over
    the folds (pixel: every case; pixel_covid: the COVID-19 cases; case: detection)."""
    per_image, truth = evaluation.counts, evaluation.is_covid
    histogram = evaluation.histogram
    return {
        "pixel": Counts.total(per_image).as_dict(),
        "pixel_covid": Counts.total(per_image[truth]).as_dict(),
        "case": confusion_counts(truth, evaluation.max_probs >= evaluation.threshold).as_dict(),
        "truth": [int(t) for t in truth],
        "max_probs": [round(float(p), 6) for p in evaluation.max_probs],
        "severities": [round(float(s), 6) for s in evaluation.severities],
        "histogram": {
            "bins": histogram.bins,
            "positives": histogram.positives.tolist(),
            "negatives": histogram.negatives.tolist(),
        },
        "mean_dice": round(mean_dice(per_image), 6),
        "ms_per_sample": round(evaluation.ms_per_sample, 3),
        "threshold": evaluation.threshold,
        "n_cases": len(truth),
    }


# --- Grad-CAM classifiers ---------------------------------------------------------------
def classifier_probabilities(
    model: keras.Model, images: np.ndarray, *, batch_size: int = 16
) -> tuple[np.ndarray, float]:
    """P(COVID-19) per image (uint8 (N, H, W) at the model's size) and ms per sample."""
    x = np.stack([to_model_input(img) for img in np.asarray(images)])
    model.predict_on_batch(x[:batch_size])  # warm-up
    started = time.perf_counter()
    out = [
        np.asarray(model.predict_on_batch(x[i : i + batch_size]))[:, 1]
        for i in range(0, len(x), batch_size)
    ]
    ms = 1000.0 * (time.perf_counter() - started) / len(x)
    return np.concatenate(out).astype(np.float64), ms


def evaluate_classifier(
    model: keras.Model, images: np.ndarray, covid: np.ndarray, *, threshold: float = 0.5
) -> dict[str, Any]:
    """Case-level counts of a classifier (COVID-19 when P ≥ threshold), JSON-ready."""
    covid = np.asarray(covid, bool)
    probs, ms = classifier_probabilities(model, images)
    c = confusion_counts(covid, probs >= threshold)
    return {
        "case": c.as_dict(),
        "truth": [int(t) for t in covid],
        "probs": [round(float(p), 6) for p in probs],
        "ms_per_sample": round(ms, 3),
        "threshold": threshold,
        "n_cases": len(covid),
    }
