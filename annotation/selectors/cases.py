"""The case browser (admins and researchers): every case of a dataset with its manual masks,
candidates and accepted mask, each with where it came from.

Provenance is shown here unblinded, so nothing in this module is for readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from annotation.models import Candidate, Dataset, GroundTruth, Label, Mask, Radiograph, Split
from mlworker.networks import network_label

ACCEPTED_CHOICES = (("", "any"), ("yes", "with an accepted mask"), ("no", "without"))


@dataclass(frozen=True)
class CaseFilters:
    split: str | None = None  # None: any; "" is Split.NONE (unassigned)
    label: str = ""
    accepted: str = ""  # "", "yes", "no"
    stage: int | None = None  # cases with candidates in this stage

    @classmethod
    def from_query(cls, query, dataset: Dataset) -> CaseFilters:
        """Filters from a request's GET; values that name nothing are ignored."""
        split = query.get("split")
        stage = query.get("stage", "")
        stage_id = int(stage) if stage.isdigit() else None
        if stage_id is not None and not dataset.stages.filter(pk=stage_id).exists():
            stage_id = None
        return cls(
            split=split if split in Split.values else None,
            label=query.get("label") if query.get("label") in Label.values else "",
            accepted=query.get("accepted") if query.get("accepted") in ("yes", "no") else "",
            stage=stage_id,
        )


def case_rows(*, dataset: Dataset, filters: CaseFilters) -> QuerySet[Radiograph]:
    """The dataset's cases, filtered, with has_manual, n_candidates and the ground truth."""
    manual = Mask.objects.filter(radiograph=OuterRef("pk"), kind=Mask.Kind.MANUAL)
    rows = (
        Radiograph.objects.filter(dataset=dataset)
        .annotate(
            has_manual=Exists(manual),
            n_candidates=Count("candidates", distinct=True),
        )
        .select_related("ground_truth", "ground_truth__stage")
        .only(
            "id",
            "name",
            "label",
            "split",
            "dataset_id",
            "ground_truth__source",
            "ground_truth__method",
            "ground_truth__stage__number",
        )  # fmt: skip
        .order_by("name", "id")
    )
    if filters.split is not None:
        rows = rows.filter(split=filters.split)
    if filters.label:
        rows = rows.filter(label=filters.label)
    if filters.accepted:
        rows = rows.filter(ground_truth__isnull=filters.accepted == "no")
    if filters.stage is not None:
        rows = rows.filter(
            Exists(Candidate.objects.filter(radiograph=OuterRef("pk"), stage_id=filters.stage))
        )
    return rows


def mask_origin(mask: Mask) -> str:
    """Where one mask came from, in words."""
    if mask.kind == Mask.Kind.MANUAL:
        return f"manual, imported from {mask.source_name}" if mask.source_name else "manual"
    if mask.kind == Mask.Kind.NETWORK and mask.model_version is not None:
        mv = mask.model_version
        fold = f", fold {mv.fold + 1}" if mv.fold is not None else ""
        return f"network {network_label(mv.arch, mv.encoder)}{fold} (model #{mv.pk})"
    who = f" by {mask.author.get_username()}" if mask.author else ""
    return f"{mask.get_kind_display().lower()}{who}"


@dataclass
class CandidateView:
    candidate: Candidate
    stage_number: int
    sources: list[str] = field(default_factory=list)
    accepted: bool = False
    # Outline normalisation: the candidate shows a redrawn mask; `originals` are the masks as
    # drawn or predicted that it was redrawn from (provenance, never shown to readers).
    normalised: bool = False
    originals: list[tuple[Mask, str]] = field(default_factory=list)


def case_detail(*, radiograph: Radiograph) -> dict[str, Any]:
    """Everything the case page shows: manual masks, candidates by stage with their sources,
    and the accepted mask with how it was decided."""
    truth = (
        GroundTruth.objects.select_related("mask", "stage")
        .prefetch_related("model_versions", "readers")
        .filter(radiograph=radiograph)
        .first()
    )
    candidates = []
    for candidate in (
        Candidate.objects.filter(radiograph=radiograph)
        .select_related("stage", "mask")
        .prefetch_related("sources__model_version", "sources__author")
        .order_by("stage__number", "id")
    ):
        sources = [mask_origin(m) for m in candidate.sources.all()] or [mask_origin(candidate.mask)]
        normalised = candidate.mask.normalised_from_id is not None
        candidates.append(
            CandidateView(
                candidate=candidate,
                stage_number=candidate.stage.number,
                sources=sources,
                accepted=truth is not None and truth.mask.pixel_sha256 == candidate.pixel_sha256,
                normalised=normalised,
                originals=[(m, mask_origin(m)) for m in candidate.sources.all()]
                if normalised
                else [],
            )
        )
    # The masks as imported; their outline-normalised forms show as candidates.
    manual = list(
        radiograph.masks.filter(kind=Mask.Kind.MANUAL, normalised_from__isnull=True).order_by("id")
    )
    original: Mask | None = None
    provenance: list[tuple[str, str]] = []
    if truth is not None:
        mask = Mask.objects.select_related(
            "model_version", "author", "normalised_from__model_version", "normalised_from__author"
        ).get(pk=truth.mask_id)
        original = mask.normalised_from
        provenance = [
            ("Source", truth.get_source_display()),
            ("Mask", mask_origin(mask)),
            (
                "Outline",
                f"normalised (the form readers saw); original: mask #{original.pk}, "
                f"{mask_origin(original)}"
                if original is not None
                else "as drawn or predicted",
            ),
            ("Decided by", truth.get_method_display()),
            ("Stage", f"Stage {truth.stage.number}" if truth.stage else "—"),
            (
                "Readers",
                ", ".join(u.get_username() for u in truth.readers.all()) or "—",
            ),
            (
                "Agreement",
                f"{100 * truth.agreement:.0f} % of readers" if truth.agreement is not None else "—",
            ),
            (
                "Networks",
                ", ".join(
                    f"#{mv.pk} {network_label(mv.arch, mv.encoder)}"
                    for mv in truth.model_versions.all()
                )
                or "—",
            ),
            ("Accepted", f"{truth.created_at:%Y-%m-%d %H:%M}"),
        ]
    return {
        "truth": truth,
        "truth_original": original,
        "provenance": provenance,
        "manual": [(m, mask_origin(m)) for m in manual],
        "candidates": candidates,
    }


def case_neighbours(*, radiograph: Radiograph) -> tuple[int | None, int | None]:
    """The previous and next case of the same dataset, in the browser's order."""
    same = Radiograph.objects.filter(dataset_id=radiograph.dataset_id)
    before = same.filter(
        Q(name__lt=radiograph.name) | Q(name=radiograph.name, id__lt=radiograph.pk)
    )
    after = same.filter(Q(name__gt=radiograph.name) | Q(name=radiograph.name, id__gt=radiograph.pk))
    previous = before.order_by("-name", "-id").values_list("id", flat=True).first()
    following = after.order_by("name", "id").values_list("id", flat=True).first()
    return previous, following


def mask_of_dataset_case(mask_id: int) -> Mask | None:
    """A mask with its radiograph, for the case browser's overlay (None if there is none)."""
    return Mask.objects.select_related("radiograph").filter(pk=mask_id).first()
