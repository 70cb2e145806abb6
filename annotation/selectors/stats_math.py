"""The numbers behind stage statistics: Bradley–Terry, Fleiss' κ, Dice, position bias.

Plain numpy/scipy on small tables; no Django.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from mlworker.metrics import dice  # noqa: F401  (statistics takes Dice with the other numbers)


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' κ of a subjects × categories table of how many raters put each subject in each
    category. Every subject must have the same number of raters (≥ 2). None when undefined
    (no subjects, or every rating in one category so chance agreement is already perfect)."""
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[0] == 0:
        return None
    raters = counts.sum(axis=1)
    if raters.min() != raters.max() or raters[0] < 2:
        raise ValueError("every subject needs the same number (≥ 2) of ratings")
    n = raters[0]
    per_subject = ((counts**2).sum(axis=1) - n) / (n * (n - 1))
    p_bar = per_subject.mean()
    p_j = counts.sum(axis=0) / counts.sum()
    p_e = float((p_j**2).sum())
    if np.isclose(p_e, 1.0):
        return None
    return float((p_bar - p_e) / (1 - p_e))


def bradley_terry(
    wins: np.ndarray, *, iterations: int = 500, prior: float = 0.1, tol: float = 1e-10
) -> np.ndarray:
    """Strengths p (summing to 1) with P(i beats j) = p_i / (p_i + p_j), by Hunter's MM updates.

    wins[i, j] = how often i beat j. A small prior win each way for every pair that met keeps
    strengths finite for an entity that never (or always) won."""
    wins = np.asarray(wins, dtype=float)
    k = wins.shape[0]
    games = wins + wins.T
    met = games > 0
    wins = wins + prior * met
    games = wins + wins.T
    p = np.full(k, 1.0 / k)
    total_wins = wins.sum(axis=1)
    for _ in range(iterations):
        denom = np.where(met, games / (p[:, None] + p[None, :] + 1e-300), 0.0).sum(axis=1)
        new = np.where(denom > 0, total_wins / np.where(denom > 0, denom, 1), p)
        new = new / new.sum()
        if np.abs(new - p).max() < tol:
            p = new
            break
        p = new
    return p


@dataclass(frozen=True)
class PositionBias:
    screen: str  # "pairwise (A/B)" or "N-way (N)"
    counts: tuple[int, ...]  # how often each position was chosen
    chi2: float | None
    p_value: float | None

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def shares(self) -> tuple[float, ...]:
        return tuple(c / self.total for c in self.counts) if self.total else ()

    @property
    def small_sample(self) -> bool:
        """Expected counts under 5: the chi-square approximation is rough."""
        return self.total / max(len(self.counts), 1) < 5


def position_bias(screen: str, counts: list[int]) -> PositionBias:
    """Chi-square goodness of fit of chosen positions against a uniform choice."""
    if sum(counts) == 0 or len(counts) < 2:
        return PositionBias(screen, tuple(counts), None, None)
    result = stats.chisquare(counts)
    return PositionBias(screen, tuple(counts), float(result.statistic), float(result.pvalue))
