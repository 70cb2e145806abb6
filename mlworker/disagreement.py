"""How much a case's candidate masks disagree: the figures that rank the review queue
(informative cases first) and decide when the networks agree well enough to accept a case
without a reader.

Pure numpy, no Keras: the web process and the benchmarks use it too.

- mean pairwise Dice: the mean Dice (mlworker.metrics.dice) over every pair of distinct
  candidates; two empty masks agree perfectly (Dice 1), and a case with one candidate has
  nothing to disagree about (1).
- disagreement area: the share of the image's pixels where the candidates do not all agree.
- mean entropy: the mean binary entropy, in bits, of the networks' averaged probability map
  (0 where every network is sure, 1 where the average is 0.5). A network without a
  probability map counts with its binary mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from mlworker.metrics import dice


@dataclass(frozen=True)
class Disagreement:
    mean_pairwise_dice: float
    min_pairwise_dice: float
    disagreement_area: float
    mean_entropy: float
    n_candidates: int


def _masks(masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    if not masks:
        raise ValueError("a case needs at least one candidate mask")
    out = [np.asarray(m) != 0 for m in masks]
    shape = out[0].shape
    for m in out[1:]:
        if m.shape != shape:
            raise ValueError(f"candidate masks differ in shape: {shape} and {m.shape}")
    return out


def pairwise_dice(masks: Sequence[np.ndarray]) -> list[float]:
    """Dice of every pair of masks (none for a single mask)."""
    masks = _masks(masks)
    return [dice(a, b) for a, b in combinations(masks, 2)]


def mean_pairwise_dice(masks: Sequence[np.ndarray]) -> float:
    pairs = pairwise_dice(masks)
    return float(np.mean(pairs)) if pairs else 1.0


def disagreement_area(masks: Sequence[np.ndarray]) -> float:
    """Share of pixels where the masks do not all say the same."""
    masks = _masks(masks)
    stack = np.stack(masks)
    differ = stack.any(axis=0) & ~stack.all(axis=0)
    return float(differ.mean())


def as_probability(array: np.ndarray) -> np.ndarray:
    """A map in [0, 1]: booleans as 0/1, 8-bit maps (as stored in probability PNGs) over 255,
    floats as they are."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.float64)
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    prob = array.astype(np.float64)
    if not np.isfinite(prob).all() or prob.min() < 0 or prob.max() > 1:
        raise ValueError("probabilities must be finite and lie in [0, 1]")
    return prob


def mean_entropy(maps: Sequence[np.ndarray]) -> float:
    """Mean binary entropy (bits) of the pixelwise mean of the maps."""
    if not maps:
        raise ValueError("mean_entropy needs at least one map")
    probs = [as_probability(m) for m in maps]
    shape = probs[0].shape
    if any(p.shape != shape for p in probs):
        raise ValueError("probability maps differ in shape")
    p = np.clip(np.mean(probs, axis=0), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return float(np.nan_to_num(h, nan=0.0).mean())


def case_disagreement(
    masks: Sequence[np.ndarray], probabilities: Sequence[np.ndarray] | None = None
) -> Disagreement:
    """Every figure of one case. `masks` are its distinct candidates; `probabilities` the
    networks' maps (or binary masks where a network kept none); default: the masks."""
    masks = _masks(masks)
    pairs = pairwise_dice(masks)
    return Disagreement(
        mean_pairwise_dice=float(np.mean(pairs)) if pairs else 1.0,
        min_pairwise_dice=float(min(pairs)) if pairs else 1.0,
        disagreement_area=disagreement_area(masks),
        mean_entropy=mean_entropy(list(probabilities) if probabilities else masks),
        n_candidates=len(masks),
    )


def medoid(masks: Sequence[np.ndarray]) -> int:
    """Index of the mask with the highest mean Dice to the others (the first on ties): the
    one an agreement rule accepts."""
    masks = _masks(masks)
    if len(masks) == 1:
        return 0
    scores = [
        np.mean([dice(m, other) for j, other in enumerate(masks) if j != i])
        for i, m in enumerate(masks)
    ]
    return int(np.argmax(scores))


def audit_sampled(*, seed: int, case_id: int, share: float) -> bool:
    """Whether an agreeing case goes to readers anyway as an audit sample: a fixed draw per
    (seed, case), so reruns pick the same cases and about `share` of them."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"audit share must lie in [0, 1], not {share}")
    if share == 0.0:
        return False
    # splitmix64 of (seed, case): uniform, stable across Python versions and processes.
    x = (seed * 0x9E3779B97F4A7C15 + case_id + 1) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    return x / 2.0**64 < share


def agree(pairwise: float, threshold: float) -> bool:
    """The agreement rule: every pair at least `threshold` (NaN never agrees)."""
    return not math.isnan(pairwise) and pairwise >= threshold
