from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from annotation.models import Dataset, Mask


def dataset_overview(*, with_provenance: bool = True) -> QuerySet[Dataset]:
    """Datasets with the counts the home and dashboard pages show. Without provenance (what a
    reader may see) there is no count of manual masks: it tells which cases have one."""
    counts = {
        "n_cases": Count("radiographs", distinct=True),
        "n_covid": Count("radiographs", filter=Q(radiographs__label="covid"), distinct=True),
        "n_accepted": Count("radiographs__ground_truth", distinct=True),
    }
    if with_provenance:
        counts["n_manual"] = Count(
            "radiographs", filter=Q(radiographs__masks__kind=Mask.Kind.MANUAL), distinct=True
        )
    return Dataset.objects.annotate(**counts).order_by("name")
