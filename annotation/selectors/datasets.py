from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from annotation.models import Dataset, Mask


def dataset_overview() -> QuerySet[Dataset]:
    """Datasets with the counts the home and dashboard pages show."""
    return Dataset.objects.annotate(
        n_cases=Count("radiographs", distinct=True),
        n_covid=Count("radiographs", filter=Q(radiographs__label="covid"), distinct=True),
        n_manual=Count(
            "radiographs",
            filter=Q(radiographs__masks__kind=Mask.Kind.MANUAL),
            distinct=True,
        ),
        n_accepted=Count("radiographs__ground_truth", distinct=True),
    ).order_by("name")
