"""Simulated click sessions and the number-of-clicks (NoC) score of interactive segmentation.

A session starts from a mask (blank, or a network's candidate), and a simulated reader
(clicks.next_click) clicks the largest error of the current mask, up to `max_clicks` times;
after each click the model refines the mask from the radiograph, the current mask and every
click so far. NoC@t is the number of clicks after which Dice first reaches t (0 when the
start already does), capped at NOC_CAP (20) when it never does: the RITM / DeepEdit score,
with Dice where those papers use IoU (Dice 0.90 is IoU 0.818).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mlworker.interactive.clicks import Click, next_click
from mlworker.metrics import dice

NOC_CAP = 20
# model_fn(image, current mask, clicks so far, zones) -> refined mask (bool (H, W))
RefineFn = Callable[[np.ndarray, np.ndarray, list[Click], Sequence[str] | None], np.ndarray]


@dataclass
class SessionResult:
    """The clicks of one simulated session and Dice after each: dices[k] after k clicks."""

    clicks: list[Click] = field(default_factory=list)
    dices: list[float] = field(default_factory=list)
    perfect: bool = False  # stopped because no error was left

    def dice_after(self, clicks: int) -> float:
        """Dice after `clicks` clicks; a session that stopped earlier keeps its last mask."""
        return self.dices[min(clicks, len(self.dices) - 1)]

    def noc(self, target: float, cap: int = NOC_CAP) -> int:
        return noc(self.dices, target, cap=cap)


def noc(dices: Sequence[float], target: float, *, cap: int = NOC_CAP) -> int:
    """Clicks until Dice first reaches `target` (dices[k] = Dice after k clicks); `cap` when
    it never does within the first `cap` clicks."""
    if not 0 < target <= 1:
        raise ValueError(f"target Dice must lie in (0, 1], got {target}")
    for k, value in enumerate(dices[: cap + 1]):
        if value >= target:
            return k
    return cap


def simulate_session(
    model_fn: RefineFn,
    image: np.ndarray,
    truth: np.ndarray,
    start_mask: np.ndarray | None = None,
    *,
    max_clicks: int = NOC_CAP,
    target_dice: float | None = None,
    min_clicks: int = 0,
    zones: Sequence[str] | None = None,
    rng: np.random.Generator | None = None,
) -> SessionResult:
    """Click, refine, repeat: at most `max_clicks` clicks, stopping early once Dice reaches
    `target_dice` after at least `min_clicks` clicks, or when the mask equals the truth."""
    if max_clicks < 0 or min_clicks < 0:
        raise ValueError("max_clicks and min_clicks must be at least 0")
    truth = np.asarray(truth, bool)
    mask = np.zeros(truth.shape, bool) if start_mask is None else np.asarray(start_mask, bool)
    if mask.shape != truth.shape:
        raise ValueError(f"start mask shape {mask.shape} differs from truth shape {truth.shape}")
    result = SessionResult(dices=[dice(mask, truth)])
    while len(result.clicks) < max_clicks:
        if (
            target_dice is not None
            and result.dices[-1] >= target_dice
            and len(result.clicks) >= min_clicks
        ):
            break
        click = next_click(mask, truth, rng)
        if click is None:
            result.perfect = True
            break
        result.clicks.append(click)
        mask = np.asarray(model_fn(image, mask, list(result.clicks), zones), bool)
        result.dices.append(dice(mask, truth))
    return result
