"""The paper's loop end to end, with a real Celery worker, over HTTP:

import phantoms → Stage I (pairwise, fast-cpu) → simulated MDs decide → Stage II (five-way) →
simulated MDs decide → final detector → report. The simulated MD picks the candidate closest
to the hidden true mask, with some noise, and rejects all and draws when nothing is close.
The accepted masks must end closer to the hidden truth than the initial manual masks were.
"""

from __future__ import annotations

import io
import random
import uuid
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.demo.reader import SimulatedReader
from annotation.models import Decision, GroundTruth, Job, Mask, Radiograph, ReviewTask, Stage
from annotation.services.detector import detector_launch
from annotation.storage import blob_read
from cxrio.masks import mask_from_png, resize_nearest
from mlworker.metrics import dice
from tests.factories import UserFactory
from tests.support import jobs_and_logs, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.keras]


def _client(*roles: str) -> APIClient:
    user = UserFactory(roles=list(roles))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


class ApiReader:
    """An MD who knows the hidden truth, reads through the review API and judges each
    candidate by its Dice against the truth, as a simulated reader does."""

    def __init__(self, client: APIClient, truth_dir: Path, rng: random.Random):
        self.client, self.truth_dir, self.rng = client, truth_dir, rng
        self.judgement = SimulatedReader(rng)
        self.drawn = 0

    def _get(self, url: str):
        return self.client.get(urlparse(url).path)

    def _truth(self, task_token: str, width: int, height: int) -> np.ndarray:
        radiograph = ReviewTask.objects.get(token=task_token).radiograph
        with Image.open(self.truth_dir / f"mask_{radiograph.name}") as image:
            truth = np.asarray(image) > 0
        return resize_nearest(truth, width=width, height=height)

    def _pane_mask(self, pane: dict) -> np.ndarray:
        answer = self._get(pane["mask_url"])
        assert answer.status_code == 200
        with Image.open(io.BytesIO(answer.content)) as image:
            return np.asarray(image) > 0  # palette index 1 is infection

    def _choose(self, screen: dict) -> int | None:
        """The position picked, or None to reject all and draw."""
        truth = self._truth(screen["task"], screen["mask_width"], screen["mask_height"])
        scores = {p["position"]: dice(self._pane_mask(p), truth) for p in screen["panes"]}
        return self.judgement.choose(scores)

    def _post(self, screen: dict, action: str, **body):
        answer = self.client.post(
            f"/api/review/tasks/{screen['task']}/{action}/",
            {**body, "idempotency_key": uuid.uuid4().hex, "time_on_screen_ms": 800},
            format="json" if action != "drawing" else "multipart",
        )
        assert answer.status_code == 201, answer.content
        return answer.json()

    def _draw(self, screen: dict) -> None:
        # A careful drawing: the truth with a rough edge.
        truth = self._truth(screen["task"], screen["mask_width"], screen["mask_height"])
        from scipy import ndimage

        drawn = ndimage.binary_dilation(truth) if self.rng.random() < 0.5 else truth
        buffer = io.BytesIO()
        Image.fromarray(drawn.astype(np.uint8) * 255).save(buffer, "PNG")
        buffer.seek(0)
        self._post(screen, "drawing", mask=buffer, no_infection="false" if drawn.any() else "true")
        self.drawn += 1

    def read_stage(self, stage: Stage) -> int:
        decided = 0
        while True:
            answer = self.client.post(f"/api/review/stages/{stage.pk}/next/", {}, format="json")
            if answer.status_code == 204:
                return decided
            assert answer.status_code == 200, answer.content
            screen = answer.json()
            while screen is not None:
                if screen["kind"] == "pairwise":
                    best = self._choose(screen)
                    choice = "neither" if best is None else ("A", "B")[best - 1]
                    result = self._post(
                        screen, "round", number=screen["knockout"]["round"], choice=choice
                    )
                    screen = result["screen"]
                elif screen["kind"] == "nway":
                    best = self._choose(screen)
                    if best is None:
                        self._draw(screen)
                    else:
                        self._post(screen, "pick", position=best)
                    screen = None
                elif screen["kind"] == "draw":
                    self._draw(screen)
                    screen = None
                else:
                    pytest.fail(f"unexpected screen {screen['kind']}")
            decided += 1


def _mean_dice_to_truth(masks: dict[int, Mask], truth_dir: Path) -> float:
    scores = []
    for radiograph_id, mask in masks.items():
        radiograph = Radiograph.objects.get(pk=radiograph_id)
        pixels = mask_from_png(blob_read(mask.png.name))
        with Image.open(truth_dir / f"mask_{radiograph.name}") as image:
            truth = resize_nearest(np.asarray(image) > 0, width=mask.width, height=mask.height)
        scores.append(dice(pixels, truth))
    return float(np.mean(scores))


def _run_stage(admin: APIClient, dataset, preset: str, config: dict, worker) -> Stage:
    created = admin.post(
        "/api/stages/", {"dataset": dataset.pk, "preset": preset, "config": config}, format="json"
    )
    assert created.status_code == 201, created.content
    stage_id = created.json()["id"]
    launched = admin.post(f"/api/stages/{stage_id}/launch/", {}, format="json")
    assert launched.status_code in (200, 202), launched.content
    stage = Stage.objects.get(pk=stage_id)

    def reviewing():
        stage.refresh_from_db()
        return stage.status == Stage.Status.REVIEWING

    wait_for(
        reviewing,
        what=f"{preset} to reach review",
        timeout=600,
        every=0.5,
        explain=jobs_and_logs(worker),
    )
    return stage


def test_the_loop_from_phantoms_to_a_detector_improves_the_masks(
    phantom_dataset, worker_process, client
):
    dataset, folder = phantom_dataset(n_covid=16, n_control=6, manual_fraction=0.5, seed=11)
    truth_dir = folder / "hidden-truth"
    manual = {
        m.radiograph_id: m for m in Mask.objects.filter(kind="manual", radiograph__dataset=dataset)
    }
    assert len(manual) == 8
    manual_dice = _mean_dice_to_truth(manual, truth_dir)

    admin = _client("admin")
    reader = ApiReader(_client("md"), truth_dir, random.Random(5))

    # Stage I: manual masks against out-of-fold network masks, pairwise.
    fast = {
        "networks": [{"arch": "unet", "encoder": "tiny"}, {"arch": "dla", "encoder": "tiny"}],
        "epochs": 3,
    }
    stage1 = _run_stage(admin, dataset, "fast-cpu", {**fast, "folds": 2}, worker_process)
    assert reader.read_stage(stage1) == len(manual)
    stage1.refresh_from_db()
    assert stage1.status == "closed"

    # Stage II: five networks on the accepted masks, five-way review of the rest.
    stage2 = _run_stage(admin, dataset, "fast-cpu-nway", {"epochs": 2}, worker_process)
    remaining = Radiograph.objects.filter(
        dataset=dataset, label="covid", ground_truth__isnull=True
    ).count()
    assert remaining == 8 and len(stage2.config["targets"]) == remaining
    assert reader.read_stage(stage2) == remaining
    stage2.refresh_from_db()
    assert stage2.status == "closed"

    # Every COVID-19 case has exactly one accepted mask, from one decision.
    truths = GroundTruth.objects.filter(radiograph__dataset=dataset).select_related("mask")
    assert truths.count() == 16
    assert (
        Decision.objects.filter(revoked_at__isnull=True).count() == ReviewTask.objects.count() == 16
    )
    accepted_on_manual = {t.radiograph_id: t.mask for t in truths if t.radiograph_id in manual}
    accepted_dice = _mean_dice_to_truth(accepted_on_manual, truth_dir)
    all_accepted_dice = _mean_dice_to_truth({t.radiograph_id: t.mask for t in truths}, truth_dir)
    print(
        f"mean Dice to the hidden truth: manual {manual_dice:.3f}, accepted on the same cases "
        f"{accepted_dice:.3f}, all accepted {all_accepted_dice:.3f}; drawn {reader.drawn}"
    )
    assert accepted_dice > manual_dice

    # Final detector: accepted masks plus controls, k-fold, then its report.
    run = detector_launch(
        dataset=dataset,
        config={
            "networks": [{"arch": "unet", "encoder": "tiny"}],
            "folds": 2,
            "epochs": 2,
            "with_classifier": False,
        },
    )

    def trained():
        return (
            not Job.objects.filter(pk__in=[j.pk for j in run.jobs])
            .exclude(state="succeeded")
            .exists()
        )

    wait_for(
        trained,
        what="the detector",
        timeout=600,
        every=0.5,
        explain=jobs_and_logs(worker_process),
    )
    client.force_login(UserFactory(roles=["researcher"]))
    report = client.get(f"/detector/runs/{run.run}/")
    assert report.status_code == 200
    html = report.content.decode()
    assert "Sensitivity" in html and "Specificity" in html and "95" in html
    csv = client.get(f"/detector/runs/{run.run}/report.csv")
    assert csv.status_code == 200 and b"unet" in csv.content
