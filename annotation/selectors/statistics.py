"""Stage statistics for admins and researchers (never shown to readers: it names sources).

Computed from rows on request: progress, where accepted masks came from, per-network win rates
in pairwise rounds (Bradley–Terry), position bias, inter-reader agreement (Fleiss' κ on the
choices, mean Dice between readers' masks) and time per decision.
"""

from __future__ import annotations

import statistics as pystats
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from annotation.models import (
    Candidate,
    Decision,
    GroundTruth,
    Mask,
    ModelVersion,
    PairwiseRound,
    ReviewTask,
    Stage,
)
from annotation.selectors.stats_math import (
    PositionBias,
    bradley_terry,
    dice,
    fleiss_kappa,
    position_bias,
)
from annotation.services.candidates import outlines_normalised
from annotation.services.consensus import option_key
from annotation.storage import blob_read
from cxrio import masks as maskio
from cxrio.outline import outline_features, source_auc
from mlworker.networks import network_label

MANUAL = "manual"
COMBINED_LABELS = {
    Mask.Kind.STAPLE: Mask.Kind.STAPLE.label,
    Mask.Kind.ENSEMBLE: Mask.Kind.ENSEMBLE.label,
}
MACHINE_SOURCES = (
    GroundTruth.Source.NETWORK,
    GroundTruth.Source.STAPLE,
    GroundTruth.Source.ENSEMBLE,
)


def version_label(version: ModelVersion) -> str:
    """Folds of one architecture count as one network."""
    return network_label(version.arch, version.encoder) + (" (frozen)" if version.frozen else "")


@dataclass
class WinRate:
    label: str
    wins: int
    rounds: int
    strength: float  # Bradley–Terry, sums to 1 over the entities

    @property
    def rate(self) -> float:
        return self.wins / self.rounds if self.rounds else 0.0


@dataclass(frozen=True)
class StapleEstimate:
    """A network's mean sensitivity and specificity as STAPLE estimated them, over cases."""

    label: str
    cases: int
    sensitivity: float
    specificity: float


@dataclass
class StageStatistics:
    stage: Stage
    cases: int = 0
    accepted: int = 0
    tasks: int = 0
    tasks_done: int = 0
    decisions: int = 0
    adjudication_waiting: int = 0
    adjudicated: int = 0
    sources: list[tuple[str, float]] = field(default_factory=list)  # accepted masks by origin
    machine_share: float | None = None
    win_rates: list[WinRate] = field(default_factory=list)
    position: list[PositionBias] = field(default_factory=list)
    kappa: float | None = None
    kappa_cases: int = 0
    mean_dice: float | None = None
    dice_pairs: int = 0
    median_ms: float | None = None
    median_ms_by_outcome: dict[str, float] = field(default_factory=dict)
    # Decisions made with click-to-refine, and their clicks.
    click_refined: int = 0
    click_counts: list[int] = field(default_factory=list)
    staple: list[StapleEstimate] = field(default_factory=list)


def _candidate_labels(stage: Stage) -> dict[int, set[str]]:
    """Which sources (manual, each network) produced each candidate's pixels."""
    labels: dict[int, set[str]] = {}
    for candidate in Candidate.objects.filter(stage=stage).select_related("mask__model_version"):
        names = labels.setdefault(candidate.pk, set())
        for mask in [candidate.mask, *candidate.sources.select_related("model_version")]:
            if mask.kind == Mask.Kind.MANUAL:
                names.add(MANUAL)
            elif mask.kind in COMBINED_LABELS:
                names.add(COMBINED_LABELS[mask.kind])
            elif mask.model_version_id:
                names.add(version_label(mask.model_version))
    return labels


def _sources(stats: StageStatistics, truths: list[GroundTruth]) -> None:
    credit: Counter[str] = Counter()
    for truth in truths:
        if truth.source == GroundTruth.Source.NETWORK:
            names = sorted({version_label(v) for v in truth.model_versions.all()}) or ["network"]
            for name in names:  # identical masks from several networks share the credit
                credit[name] += 1 / len(names)
        else:
            credit[COMBINED_LABELS.get(truth.source, truth.source)] += 1
    stats.sources = sorted(credit.items(), key=lambda kv: (-kv[1], kv[0]))
    if truths:
        machine = sum(1 for t in truths if t.source in MACHINE_SOURCES)
        stats.machine_share = machine / len(truths)


def _win_rates(stats: StageStatistics, stage: Stage, labels: dict[int, set[str]]) -> None:
    rounds = PairwiseRound.objects.filter(task__stage=stage, winner__isnull=False)
    pairs = list(rounds.values_list("left_id", "right_id", "winner_id"))
    names = sorted({name for ids in labels.values() for name in ids})
    if not pairs or len(names) < 2:
        return
    index = {name: i for i, name in enumerate(names)}
    wins = np.zeros((len(names), len(names)))
    for left, right, winner in pairs:
        loser = right if winner == left else left
        for a in labels[winner] - labels[loser]:
            for b in labels[loser] - labels[winner]:
                wins[index[a], index[b]] += 1
    strength = bradley_terry(wins)
    played = wins + wins.T
    stats.win_rates = sorted(
        (
            WinRate(name, int(wins[i].sum()), int(played[i].sum()), float(strength[i]))
            for name, i in index.items()
            if played[i].sum() > 0
        ),
        key=lambda w: -w.strength,
    )


def _position(stats: StageStatistics, stage: Stage, decisions: list[Decision]) -> None:
    rounds = PairwiseRound.objects.filter(task__stage=stage, winner__isnull=False)
    sides = list(rounds.values_list("left_id", "winner_id"))
    if sides:
        a = sum(1 for left, winner in sides if left == winner)
        stats.position.append(position_bias("pairwise rounds (A / B)", [a, len(sides) - a]))
    by_n: dict[int, list[int]] = defaultdict(list)
    for d in decisions:
        n = len(d.task.candidate_order)
        if stage.mode == Stage.Mode.NWAY and d.outcome == Decision.Outcome.CHOSE and n > 1:
            by_n[n].append(d.position)
    for n, positions in sorted(by_n.items()):
        counts = [positions.count(p) for p in range(1, n + 1)]
        stats.position.append(position_bias(f"{n}-way picks (1 … {n})", counts))


def _agreement(stats: StageStatistics, stage: Stage, decisions: list[Decision]) -> None:
    by_case: dict[int, list[Decision]] = defaultdict(list)
    for d in decisions:
        by_case[d.task.radiograph_id].append(d)
    full = [ds for ds in by_case.values() if len(ds) == stage.readers_per_case >= 2]
    if full:
        categories = sorted({option_key(d) for ds in full for d in ds})
        column = {c: j for j, c in enumerate(categories)}
        table = np.zeros((len(full), len(categories)))
        for i, ds in enumerate(full):
            for d in ds:
                table[i, column[option_key(d)]] += 1
        stats.kappa = fleiss_kappa(table)
        stats.kappa_cases = len(full)
    cache: dict[int, np.ndarray] = {}

    def pixels(mask: Mask) -> np.ndarray:
        if mask.pk not in cache:
            cache[mask.pk] = maskio.mask_from_png(blob_read(mask.png.name))
        return cache[mask.pk]

    scores = []
    for ds in by_case.values():
        for a, b in combinations(ds, 2):
            # The same mask needs no decoding: it agrees with itself.
            scores.append(1.0 if a.mask_id == b.mask_id else dice(pixels(a.mask), pixels(b.mask)))
    if scores:
        stats.mean_dice = float(np.mean(scores))
        stats.dice_pairs = len(scores)


def _staple_estimates(stats: StageStatistics, stage: Stage) -> None:
    per_version: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for details in Mask.objects.filter(
        stage=stage, kind=Mask.Kind.STAPLE, normalised_from__isnull=True
    ).values_list("details", flat=True):
        for rater in details.get("raters", []):
            if rater.get("model_version") is not None:
                per_version[rater["model_version"]].append(
                    (rater["sensitivity"], rater["specificity"])
                )
    by_label: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for version in ModelVersion.objects.filter(pk__in=per_version):
        by_label[version_label(version)] += per_version[version.pk]
    stats.staple = sorted(
        (
            StapleEstimate(
                label,
                len(rows),
                float(np.mean([r[0] for r in rows])),
                float(np.mean([r[1] for r in rows])),
            )
            for label, rows in by_label.items()
        ),
        key=lambda e: e.label,
    )


def stage_statistics(*, stage: Stage) -> StageStatistics:
    stats = StageStatistics(stage=stage)
    reviews = ReviewTask.objects.filter(stage=stage, kind=ReviewTask.Kind.REVIEW)
    stats.cases = reviews.values("radiograph_id").distinct().count()
    stats.tasks = reviews.exclude(status=ReviewTask.Status.CANCELLED).count()
    stats.tasks_done = reviews.filter(status=ReviewTask.Status.DONE).count()
    adjudications = ReviewTask.objects.filter(stage=stage, kind=ReviewTask.Kind.ADJUDICATION)
    stats.adjudication_waiting = adjudications.filter(
        status__in=[ReviewTask.Status.OPEN, ReviewTask.Status.LEASED]
    ).count()
    stats.adjudicated = adjudications.filter(status=ReviewTask.Status.DONE).count()
    truths = list(
        GroundTruth.objects.filter(stage=stage).prefetch_related("model_versions").order_by("id")
    )
    stats.accepted = len(truths)
    _sources(stats, truths)
    decisions = list(
        Decision.objects.filter(task__in=reviews, revoked_at__isnull=True)
        .select_related("task", "mask")
        .order_by("id")
    )
    stats.decisions = len(decisions)
    labels = _candidate_labels(stage)
    _win_rates(stats, stage, labels)
    _position(stats, stage, decisions)
    _agreement(stats, stage, decisions)
    _staple_estimates(stats, stage)
    if decisions:
        stats.median_ms = float(pystats.median(d.time_on_screen_ms for d in decisions))
        for outcome in Decision.Outcome.values:
            times = [d.time_on_screen_ms for d in decisions if d.outcome == outcome]
            if times:
                stats.median_ms_by_outcome[outcome] = float(pystats.median(times))
        stats.click_counts = [len(d.clicks) for d in decisions if d.clicks]
        stats.click_refined = len(stats.click_counts)
    return stats


# --- blinding by outline ------------------------------------------------------------------

# Fewer masks of either kind than this and the AUC is noise: the page says so instead.
IDENTIFICATION_MIN_MASKS = 10
# At most this many masks of each kind are measured (a fixed sample), to keep the page quick.
IDENTIFICATION_MAX_MASKS = 300


@dataclass
class Identification:
    """How well an outline-only classifier tells the stage's manual candidates from its
    network candidates (cross-validated ROC AUC; 0.5 is chance, i.e. the blinding held)."""

    manual: int = 0
    network: int = 0
    auc_shown: float | None = None  # the masks readers were shown
    auc_original: float | None = None  # the same candidates' masks as drawn or predicted
    normalised: bool = True

    @property
    def enough(self) -> bool:
        return min(self.manual, self.network) >= IDENTIFICATION_MIN_MASKS


def _sample(items: list, limit: int) -> list:
    if len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def stage_identification(*, stage: Stage) -> Identification:
    """The source-identification test (cxrio.outline) on a stage's candidates.

    A candidate counts as manual when only manual masks produced its pixels, as network when
    only networks did (candidates both produced, and drawn ones, are left out). Each is
    measured twice: the mask readers were shown, and its original (the first source)."""
    result = Identification(normalised=outlines_normalised(stage))
    rows: dict[int, list[tuple[Candidate, Mask]]] = {1: [], 0: []}
    candidates = Candidate.objects.filter(stage=stage).select_related("mask").order_by("id")
    for candidate in candidates.prefetch_related("sources"):
        sources = sorted(candidate.sources.all(), key=lambda m: m.pk) or [candidate.mask]
        kinds = {m.kind for m in sources}
        if kinds == {Mask.Kind.MANUAL}:
            rows[1].append((candidate, sources[0]))
        elif kinds == {Mask.Kind.NETWORK}:
            rows[0].append((candidate, sources[0]))
    result.manual, result.network = len(rows[1]), len(rows[0])
    if not result.enough:
        return result
    features: dict[str, list[np.ndarray]] = {"shown": [], "original": []}
    labels, groups = [], []
    for label, items in rows.items():
        for candidate, original in _sample(items, IDENTIFICATION_MAX_MASKS):
            for key, mask in (("shown", candidate.mask), ("original", original)):
                pixels = maskio.mask_from_png(blob_read(mask.png.name))
                features[key].append(outline_features(pixels))
            labels.append(label)
            groups.append(candidate.radiograph_id)
    for key, attr in (("shown", "auc_shown"), ("original", "auc_original")):
        auc = source_auc(np.stack(features[key]), labels, groups=groups)
        setattr(result, attr, None if np.isnan(auc) else auc)
    return result
