"""STAPLE and ensemble candidates: made from a stage's network masks when the stage asks for
them, offered like any candidate, credited to the networks they combine when accepted, and
STAPLE's estimates of each network on the statistics page."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from annotation.models import Candidate, GroundTruth, Mask, ReviewTask
from annotation.presets import StageConfigError, stage_config_validate
from annotation.roles import MD
from annotation.selectors.statistics import stage_statistics
from annotation.services.assignment import review_tasks_create, task_lease_next
from annotation.services.consensus_masks import combined_candidates_offer
from annotation.services.review import decision_record
from annotation.storage import blob_read
from cxrio import masks as maskio
from mlworker.staple import staple
from tests.factories import UserFactory, review_stage

pytestmark = pytest.mark.django_db


def pixels(mask: Mask) -> np.ndarray:
    return maskio.mask_from_png(blob_read(mask.png.name))


def stage_with_combinations(**config):
    stage = review_stage(n_cases=2, n_networks=3, include_manual=False)
    ReviewTask.objects.filter(stage=stage).delete()
    stage.config = {**stage.config, **config}
    stage.save(update_fields=["config"])
    cases = sorted(set(stage.candidates.values_list("radiograph_id", flat=True)))
    return stage, cases


def test_staple_and_ensemble_candidates_combine_the_stage_networks():
    stage, cases = stage_with_combinations(staple=True, ensemble=True)
    assert combined_candidates_offer(stage=stage, radiograph_ids=cases) == 4
    assert combined_candidates_offer(stage=stage, radiograph_ids=cases) == 0  # a rerun
    for case in cases:
        # The masks as made (the candidates show their outline-normalised forms).
        made = Mask.objects.filter(stage=stage, radiograph_id=case, normalised_from__isnull=True)
        networks = list(made.filter(kind="network"))
        arrays = [pixels(m) for m in networks]
        combined = made.get(kind="staple")
        assert np.array_equal(pixels(combined), staple(arrays).mask)
        assert combined.details["sources"] == [m.pk for m in networks]
        assert {r["model_version"] for r in combined.details["raters"]} == {
            m.model_version_id for m in networks
        }
        ensemble = made.get(kind="ensemble")
        # The demo's networks stored no probability maps: their binary masks are averaged.
        assert np.array_equal(pixels(ensemble), np.mean(arrays, axis=0) >= 0.5)
        assert ensemble.probability  # the mean map is kept beside the mask
        offered = Candidate.objects.filter(stage=stage, radiograph_id=case)
        # Identical pixels are offered once: 3 networks + up to 2 combinations.
        assert 3 <= offered.count() <= 5
        assert offered.filter(sources=combined).exists()


def test_off_by_default_and_accepted_combinations_credit_their_networks():
    stage, cases = stage_with_combinations()
    assert combined_candidates_offer(stage=stage, radiograph_ids=cases) == 0
    stage.config["staple"] = True
    stage.save(update_fields=["config"])
    combined_candidates_offer(stage=stage, radiograph_ids=cases)
    review_tasks_create(stage=stage)
    reader = UserFactory(roles=[MD])
    while (task := task_lease_next(stage=stage, reader=reader)) is not None:
        chosen = Candidate.objects.get(
            stage=stage, radiograph=task.radiograph, sources__kind="staple"
        )
        decision_record(
            task=task,
            reader=reader,
            position=task.candidate_order.index(chosen.pk) + 1,
            idempotency_key=str(uuid.uuid4()),
        )
    truths = list(GroundTruth.objects.filter(stage=stage))
    assert len(truths) == 2
    for truth in truths:
        staple_mask = Mask.objects.get(
            stage=stage, radiograph=truth.radiograph, kind="staple", normalised_from__isnull=True
        )
        # The accepted mask is the STAPLE candidate readers saw: its outline-normalised form.
        shown = Mask.objects.get(normalised_from=staple_mask)
        assert truth.mask.pixel_sha256 == shown.pixel_sha256
        # Credited to STAPLE unless a network produced the very same pixels.
        assert truth.source in ("staple", "network")
        assert truth.model_versions.count() == 3
    stats = stage_statistics(stage=stage)
    assert [e.cases for e in stats.staple] == [2, 2, 2]
    assert all(0 <= e.sensitivity <= 1 and 0 <= e.specificity <= 1 for e in stats.staple)
    assert stats.machine_share == 1.0


def test_stage_settings_for_combined_candidates_are_checked():
    five = stage_config_validate(
        {
            "mode": "nway",
            "networks": [{"arch": "unet", "encoder": "tiny", "seed": i} for i in range(5)],
        }
    )
    assert five["staple"] is False and five["ensemble"] is False
    assert stage_config_validate({**five, "staple": True})["staple"] is True
    with pytest.raises(StageConfigError, match="more than the 6 masks"):
        stage_config_validate({**five, "staple": True, "ensemble": True})
    with pytest.raises(StageConfigError, match="true or false"):
        stage_config_validate({**five, "ensemble": "yes"})
