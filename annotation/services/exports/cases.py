"""Which cases an export holds, and everything the manifest says about each, read in chunks.

A case is exported when it has an accepted mask (GroundTruth) from one of the chosen stages (or
imported as final, when asked), or, when controls are asked for, when it is not labelled
COVID-19 and has no accepted mask: it is exported with an empty mask.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.db.models import Prefetch, Q, QuerySet

from annotation.models import Dataset, Decision, GroundTruth, Label, Radiograph

CHUNK = 200


@dataclass
class ExportCase:
    radiograph: Radiograph
    ground_truth: GroundTruth | None
    decisions: list[Decision] = field(default_factory=list)

    @property
    def is_control(self) -> bool:
        return self.ground_truth is None


def selected_cases(
    *,
    dataset: Dataset,
    stages: list[int] | None,
    include_imported: bool,
    include_controls: bool,
) -> QuerySet[Radiograph]:
    """The radiographs an export with these choices holds (stages are stage numbers; None = all)."""
    accepted = Q(ground_truth__isnull=False)
    if stages is not None:
        accepted &= Q(ground_truth__stage__number__in=stages)
    else:
        accepted &= Q(ground_truth__stage__isnull=False)
    if include_imported:
        accepted |= Q(ground_truth__isnull=False, ground_truth__stage__isnull=True)
    wanted = accepted
    if include_controls:
        wanted |= Q(ground_truth__isnull=True) & ~Q(label=Label.COVID)
    return Radiograph.objects.filter(dataset=dataset).filter(wanted)


def iter_cases(queryset: QuerySet[Radiograph], *, chunk: int = CHUNK) -> Iterator[ExportCase]:
    """Every selected case with its provenance, in id order, CHUNK rows in memory at a time."""
    last = 0
    while True:
        rows = list(
            queryset.filter(id__gt=last)
            .order_by("id")
            .select_related("ground_truth__mask__normalised_from", "ground_truth__stage")
            .prefetch_related("ground_truth__readers", "ground_truth__model_versions")[:chunk]
        )
        if not rows:
            return
        last = rows[-1].pk
        # A case and its accepted mask point at each other through Django's related-object
        # caches: reference cycles that only the cyclic collector frees. Freeing the previous
        # chunk now keeps memory flat instead of growing until Python decides to collect.
        gc.collect()
        decisions = _decisions_for(rows)
        for radiograph in rows:
            truth = getattr(radiograph, "ground_truth", None)
            yield ExportCase(
                radiograph=radiograph,
                ground_truth=truth,
                decisions=decisions.get(radiograph.pk, []),
            )


def _decisions_for(rows: list[Radiograph]) -> dict[int, list[Decision]]:
    """The standing decisions of the accepting stage's tasks, per radiograph."""
    wanted = Q()
    for radiograph in rows:
        truth = getattr(radiograph, "ground_truth", None)
        if truth is not None and truth.stage_id is not None:
            wanted |= Q(task__radiograph_id=radiograph.pk, task__stage_id=truth.stage_id)
    if not wanted:
        return {}
    found: dict[int, list[Decision]] = {}
    decisions = (
        Decision.objects.filter(wanted, revoked_at__isnull=True)
        .select_related("task", "mask", "candidate")
        .prefetch_related(
            Prefetch("candidate__sources", to_attr="source_masks"),
        )
        .order_by("created_at", "id")
    )
    for decision in decisions:
        found.setdefault(decision.task.radiograph_id, []).append(decision)
    return found


def kfold_assign(queryset: QuerySet[Radiograph], *, folds: int, seed: int) -> dict[int, int]:
    """radiograph id -> fold (1-based): stratified by label, one patient never in two folds."""
    from mlworker.data import kfold_splits  # numpy + scikit-learn, no Keras

    rows = list(queryset.order_by("id").only("id", "label", "patient_key"))
    labels = [r.label for r in rows]
    groups = [r.patient_group for r in rows]
    assigned: dict[int, int] = {}
    for fold, (_train, test) in enumerate(kfold_splits(labels, groups, folds, seed), start=1):
        assigned.update((rows[i].pk, fold) for i in test)
    return assigned


def distinct_groups(queryset: QuerySet[Radiograph]) -> int:
    keyed = queryset.exclude(patient_key="").values("patient_key").distinct().count()
    return keyed + queryset.filter(patient_key="").count()
