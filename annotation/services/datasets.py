"""Datasets: what describes one beyond its cases (its licence)."""

from __future__ import annotations

from annotation.models import Dataset

LICENCE_MAX_LENGTH = Dataset._meta.get_field("licence").max_length


class DatasetError(ValueError):
    """The value cannot be set on the dataset."""


def dataset_licence_check(licence: str) -> str:
    """The licence as it would be stored; raises DatasetError when it cannot be."""
    licence = licence.strip()
    if len(licence) > LICENCE_MAX_LENGTH:
        raise DatasetError(f"a licence is at most {LICENCE_MAX_LENGTH} characters")
    return licence


def dataset_licence_set(*, dataset: Dataset, licence: str) -> Dataset:
    """Set the licence exports name (COCO `licenses`, the dataset card); blank clears it.

    Exports already made keep the licence they were made with."""
    licence = dataset_licence_check(licence)
    if dataset.licence != licence:
        dataset.licence = licence
        dataset.save(update_fields=["licence"])
    return dataset
