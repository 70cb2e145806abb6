"""`collabmask demo`: accounts, phantoms and a draft Stage I whose networks start from the
demo's start weights."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from annotation.demo.seed import DEMO_DATASET, demo_dataset_ensure
from annotation.models import Dataset, Stage

pytestmark = pytest.mark.django_db


def test_the_demo_comes_with_a_draft_stage_one_from_the_demo_preset(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    out = StringIO()
    call_command("seed_demo", "--covid", "6", "--control", "2", stdout=out)
    stage = Stage.objects.get(dataset__name=DEMO_DATASET)
    assert (stage.number, stage.status, stage.preset) == (1, "draft", "demo-stage-1")
    assert stage.config["start_weights"] == "demo"
    assert "demo-stage-1" in out.getvalue()
    # A second run changes nothing.
    call_command("seed_demo", "--covid", "6", "--control", "2", stdout=StringIO())
    assert Stage.objects.count() == 1


def test_the_demo_cohort_is_never_the_start_weights_phantoms(tmp_path):
    from mlworker.demo_weights import PRETRAIN_SEED

    with pytest.raises(ValueError, match="would leak"):
        demo_dataset_ensure(workdir=tmp_path, n_covid=4, n_control=2, seed=PRETRAIN_SEED)
    assert not Dataset.objects.exists()


def test_a_network_starts_from_the_file_of_its_arch_encoder_and_size(settings, tmp_path):
    from annotation.worker.tasks.segmentation import _start_weights

    settings.VAR_DIR = tmp_path
    made = tmp_path / "demo" / "start-weights" / "dla-tiny-64.keras"
    made.parent.mkdir(parents=True)
    made.write_bytes(b"made before")  # already there: nothing is trained
    net = {"arch": "dla", "encoder": "tiny"}
    assert _start_weights(None, "demo", net, 64) == made
    assert _start_weights(None, str(tmp_path / "study"), net, 128) == (
        tmp_path / "study" / "dla-tiny-128.keras"
    )
