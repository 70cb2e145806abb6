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


def test_demo_quality_prints_each_networks_f1_against_the_hidden_truth(settings, tmp_path):
    import numpy as np
    from PIL import Image

    from annotation.models import ModelVersion, Radiograph
    from annotation.services.model_versions import prediction_record
    from cxrio.masks import mask_to_png_0_255, resize_nearest

    settings.VAR_DIR = tmp_path
    call_command("seed_demo", "--covid", "6", "--control", "2", stdout=StringIO())
    stage = Stage.objects.get()
    truth_dir = tmp_path / "demo" / "phantoms-seed2021" / "hidden-truth"
    perfect, blank = (
        ModelVersion.objects.create(
            dataset=stage.dataset, stage=stage, purpose="candidate", arch=arch, encoder="tiny"
        )
        for arch in ("unet", "dla")
    )
    for radiograph in Radiograph.objects.filter(label="covid"):
        with Image.open(truth_dir / f"mask_{radiograph.name}") as image:
            truth = resize_nearest(
                np.asarray(image) > 0, width=radiograph.work_width, height=radiograph.work_height
            )
        for model_version, pixels in ((perfect, truth), (blank, np.zeros_like(truth))):
            prediction_record(
                stage=stage, radiograph=radiograph, model_version=model_version,
                pixels=pixels, probability_png=mask_to_png_0_255(pixels),
            )  # fmt: skip
    out = StringIO()
    call_command("demo_quality", stdout=out)
    printed = out.getvalue()
    assert "Stage 1 U-Net · Tiny (seed 0): pixel F1 1.000 over 6 candidates" in printed
    assert "Stage 1 DLA · Tiny (seed 0): pixel F1 0.000 over 6 candidates" in printed
    assert "manual masks: pixel F1 0." in printed
