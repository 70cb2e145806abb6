"""Trained networks are registered from the file a worker wrote, and read back only intact."""

from __future__ import annotations

import hashlib

import pytest
from django.core.files.base import ContentFile

from annotation.models import Job
from annotation.services.model_versions import (
    model_version_register,
    model_version_weights_fetch,
)
from tests.factories import DatasetFactory

pytestmark = pytest.mark.django_db


def _register(tmp_path):
    weights = tmp_path / "final.keras"
    weights.write_bytes(b"pretend weights")
    job = Job.objects.create(
        kind=Job.Kind.TRAIN,
        dataset=DatasetFactory(),
        params={"frozen": True, "fold": 1, "epochs": 3, "training": [[5, 50], [4, 40]]},
    )
    mv = model_version_register(
        job=job,
        weights=weights,
        purpose="candidate",
        arch="unet",
        encoder="tiny",
        training=job.params["training"],
        metrics={"epochs": 3},
        params_trainable=10,
        params_non_trainable=2,
    )
    return job, mv


def test_a_registered_network_records_its_job_weights_and_training_set(tmp_path):
    job, mv = _register(tmp_path)
    assert mv.job == job and (mv.frozen, mv.fold) == (True, 1)
    assert mv.config == {"frozen": True, "fold": 1, "epochs": 3}  # case lists are not config
    assert mv.training_set == [5, 4]
    assert mv.weights_sha256 == hashlib.sha256(b"pretend weights").hexdigest()
    assert mv.weights.read() == b"pretend weights"


def test_weights_that_changed_in_storage_are_refused(tmp_path):
    _job, mv = _register(tmp_path)
    target = tmp_path / "fetched.keras"
    assert model_version_weights_fetch(model_version=mv, target=target).read_bytes() == (
        b"pretend weights"
    )
    mv.weights.save("tampered.keras", ContentFile(b"other weights"), save=True)
    with pytest.raises(ValueError, match="do not match their sha256"):
        model_version_weights_fetch(model_version=mv, target=target)
