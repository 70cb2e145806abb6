"""Per-reader figures and the "best of N" comparison, for researchers (never shown to readers).

Readers are pseudonymous: "Reader 1", "Reader 2" … in the order of their first decision in
the stage, so a table can be shared without naming anyone; admins also see the user name.

Per reader: decisions, median time on screen, agreement with the accepted mask (the share of
their decisions, on cases accepted in the stage, whose mask has the accepted mask's pixels), and
a position-bias estimate: the first-position excess, the mean over their choices of
[chose the first position] − 1/n (n = options on screen; pairwise rounds count with n = 2),
which is 0 for a reader who ignores the layout, with its 95 % CI (normal approximation).

"Best of N" needs a truth (a phantom cohort's hidden truth, or a held-back reference set): per
case, the Dice against the truth of the best candidate offered and of the mask accepted.
"""

from __future__ import annotations

import math
import statistics as pystats
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from annotation.models import Candidate, Decision, GroundTruth, PairwiseRound, Stage
from annotation.storage import blob_read
from cxrio import masks as maskio
from mlworker.metrics import Z_95, dice


@dataclass(frozen=True)
class ReaderRow:
    pseudonym: str
    username: str
    decisions: int
    median_ms: float | None
    agreed: int  # decisions on accepted cases whose mask is the accepted one
    judged: int  # decisions on cases accepted in the stage
    first_position_excess: float | None
    first_position_ci: float | None
    choices: int  # choices the position estimate is made of

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.judged if self.judged else None


def _excess(terms: list[float]) -> tuple[float | None, float | None]:
    if not terms:
        return None, None
    mean = float(np.mean(terms))
    ci = Z_95 * float(np.std(terms, ddof=1)) / math.sqrt(len(terms)) if len(terms) > 1 else None
    return mean, ci


def reader_rows(*, stage: Stage) -> list[ReaderRow]:
    decisions = list(
        Decision.objects.filter(task__stage=stage, task__kind="review", revoked_at__isnull=True)
        .select_related("task", "mask", "reader")
        .order_by("created_at", "id")
    )
    truths = dict(
        GroundTruth.objects.filter(stage=stage).values_list("radiograph_id", "mask__pixel_sha256")
    )
    rounds_by_reader: dict[int, list[float]] = defaultdict(list)
    for reader_id, left_id, winner_id in PairwiseRound.objects.filter(
        task__stage=stage, winner__isnull=False
    ).values_list("task__reader_id", "left_id", "winner_id"):
        rounds_by_reader[reader_id].append((left_id == winner_id) - 0.5)
    by_reader: dict[int, list[Decision]] = {}
    for d in decisions:
        by_reader.setdefault(d.reader_id, []).append(d)
    rows = []
    for number, (reader_id, mine) in enumerate(by_reader.items(), start=1):
        terms = list(rounds_by_reader.get(reader_id, []))
        if stage.mode == Stage.Mode.NWAY:
            for d in mine:
                n = len(d.task.candidate_order)
                if d.outcome == Decision.Outcome.CHOSE and d.position and n > 1:
                    terms.append((d.position == 1) - 1 / n)
        judged = [d for d in mine if d.task.radiograph_id in truths]
        excess, ci = _excess(terms)
        rows.append(
            ReaderRow(
                pseudonym=f"Reader {number}",
                username=mine[0].reader.get_username(),
                decisions=len(mine),
                median_ms=float(pystats.median(d.time_on_screen_ms for d in mine)),
                agreed=sum(d.mask.pixel_sha256 == truths[d.task.radiograph_id] for d in judged),
                judged=len(judged),
                first_position_excess=excess,
                first_position_ci=ci,
                choices=len(terms),
            )
        )
    return rows


@dataclass(frozen=True)
class BestOfN:
    case: str
    candidates: int
    best_dice: float  # the best candidate's Dice against the truth
    accepted_dice: float | None  # the accepted mask's, when the case was accepted in the stage


def _dice_to(mask, true: np.ndarray) -> float:
    pixels = maskio.mask_from_png(blob_read(mask.png.name))
    height, width = true.shape
    return dice(maskio.resize_nearest(pixels, width=width, height=height), true)


def best_of_n(*, stage: Stage, truth: Callable[[str], np.ndarray | None]) -> list[BestOfN]:
    """Cases of the stage with a truth: `truth(radiograph name)` gives the true mask at any
    size (brought to the working resolution here), or None where there is none."""
    accepted = {
        t.radiograph_id: t.mask
        for t in GroundTruth.objects.filter(stage=stage).select_related("mask")
    }
    by_case: dict[int, list[Candidate]] = defaultdict(list)
    for candidate in (
        Candidate.objects.filter(stage=stage).select_related("mask", "radiograph").order_by("id")
    ):
        by_case[candidate.radiograph_id].append(candidate)
    rows = []
    for radiograph_id, candidates in by_case.items():
        radiograph = candidates[0].radiograph
        true = truth(radiograph.name)
        if true is None:
            continue
        size = {"width": radiograph.work_width, "height": radiograph.work_height}
        true = maskio.resize_nearest(np.asarray(true, bool), **size)

        mask = accepted.get(radiograph_id)
        rows.append(
            BestOfN(
                case=radiograph.name,
                candidates=len(candidates),
                best_dice=max(_dice_to(c.mask, true) for c in candidates),
                accepted_dice=None if mask is None else _dice_to(mask, true),
            )
        )
    return rows
