"""A review stage built from a dataset's cases, for demos, browser tests and the load benchmark.

Network candidates are made by deforming each case's manual mask (or a generated blob where
there is none) in a different way per pretend network, so the screens have plausible, distinct
masks to compare without any training. The real stage orchestration creates candidates from
trained networks' predictions instead.
"""

from __future__ import annotations

import math
import random
import uuid

import numpy as np
from django.db import transaction
from django.db.models import Max
from scipy import ndimage

from annotation.demo.reader import SimulatedReader
from annotation.models import Dataset, Label, Mask, ModelVersion, Radiograph, Stage
from annotation.services.assignment import review_tasks_create, task_lease_next
from annotation.services.candidates import candidates_offer, mask_create
from annotation.services.disagreement import case_disagreements_refresh
from annotation.storage import blob_read
from cxrio.masks import mask_from_png, mask_to_png_0_255, pixel_sha256

# (arch, encoder) of the pretend networks, as in the QaTa-COV19 study's candidate generators.
DEMO_NETWORKS = (
    ("unet", "densenet121"),
    ("unetpp", "densenet121"),
    ("fpn", "densenet121"),
    ("unet", "inceptionv3"),
    ("fpn", "inceptionv3"),
    ("unetpp", "resnet50"),
)


def _blob(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    cx, cy = width * rng.uniform(0.3, 0.7), height * rng.uniform(0.3, 0.7)
    rx, ry = width * rng.uniform(0.12, 0.22), height * rng.uniform(0.12, 0.22)
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def _deform(base: np.ndarray, index: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible, distinct variant of a mask: grown, shrunk, shifted or with an extra lobe."""
    step = max(1, min(base.shape) // 40)
    kind = index % 4
    if kind == 0:
        out = ndimage.binary_dilation(base, iterations=step * (1 + index // 4))
    elif kind == 1:
        out = ndimage.binary_erosion(base, iterations=step)
        if not out.any():
            out = base.copy()
    elif kind == 2:
        out = np.roll(base, (step * 2 * (1 + index // 4), -step), axis=(0, 1))
    else:
        out = base | _blob(*base.shape, rng)
    return out.astype(bool)


@transaction.atomic
def review_demo_stage(
    *,
    dataset: Dataset,
    mode: str = Stage.Mode.NWAY,
    n_networks: int = 5,
    include_manual: bool = True,
    readers_per_case: int = 1,
    max_cases: int | None = None,
    seed: int = 0,
) -> Stage:
    """A new stage of `dataset` in review, with candidates for its COVID-19 cases that have no
    accepted mask yet, and open review tasks."""
    if not 1 <= n_networks <= len(DEMO_NETWORKS):
        raise ValueError(f"n_networks must be 1 to {len(DEMO_NETWORKS)}")
    number = (dataset.stages.aggregate(n=Max("number"))["n"] or 0) + 1
    stage = Stage.objects.create(
        dataset=dataset,
        number=number,
        name=f"Review demo {number}",
        mode=mode,
        status=Stage.Status.REVIEWING,
        readers_per_case=readers_per_case,
        config={"demo": True},
    )
    versions = [
        ModelVersion.objects.create(
            dataset=dataset,
            stage=stage,
            purpose=ModelVersion.Purpose.CANDIDATE,
            arch=arch,
            encoder=encoder,
        )
        for arch, encoder in DEMO_NETWORKS[:n_networks]
    ]
    rng = np.random.default_rng(seed)
    cases = Radiograph.objects.filter(
        dataset=dataset, label=Label.COVID, ground_truth__isnull=True
    ).order_by("id")
    if max_cases is not None:
        cases = cases[:max_cases]
    for radiograph in cases:
        manual = (
            radiograph.masks.filter(kind=Mask.Kind.MANUAL, normalised_from__isnull=True)
            .order_by("id")
            .first()
        )
        shape = (radiograph.work_height, radiograph.work_width)
        if manual is not None:
            base = mask_from_png(blob_read(manual.png.name))
        else:
            base = _blob(*shape, rng)
        offered = [manual] if manual is not None and include_manual else []
        seen = {pixel_sha256(base)}
        for index, version in enumerate(versions):
            pixels = _deform(base, index, rng)
            while pixel_sha256(pixels) in seen:
                # Each pretend network must offer something different to compare.
                pixels = ndimage.binary_dilation(pixels)
            seen.add(pixel_sha256(pixels))
            offered.append(
                mask_create(
                    radiograph=radiograph,
                    pixels=pixels,
                    kind=Mask.Kind.NETWORK,
                    model_version=version,
                    stage=stage,
                )
            )
        candidates_offer(stage=stage, radiograph=radiograph, masks=offered)
    case_disagreements_refresh(stage=stage)
    review_tasks_create(stage=stage)
    return stage


def _key() -> str:
    return str(uuid.uuid4())


def review_demo_simulate(
    *,
    stage: Stage,
    readers: list,
    seed: int = 0,
    machine_preference: float = 0.6,
    draw_rate: float = 0.1,
) -> int:
    """Decide every task the readers can take, as pretend readers would (for demos and the
    statistics page only: the stage is marked simulated). Returns the number of decisions.

    machine_preference is about the chance of picking a network's mask over the manual one
    when both are on screen; draw_rate the chance of rejecting all and drawing."""
    from annotation.models import Candidate, ReviewTask
    from annotation.services.review import (
        decision_record,
        decision_record_drawing,
        knockout_state,
        round_record,
    )

    rng = random.Random(seed)
    # No hidden truth here: a network's mask is worth `machine_preference`, another one its
    # complement, seen through noise wide enough that the better one wins only about that often.
    reader_of = SimulatedReader(rng, noise=0.5, draw_below=0.0, draw_rate=draw_rate)
    stage.config = {**stage.config, "simulated": True}
    stage.save(update_fields=["config"])
    quality = {
        c.pk: machine_preference if c.mask.kind == Mask.Kind.NETWORK else 1.0 - machine_preference
        for c in Candidate.objects.filter(stage=stage).select_related("mask")
    }

    def ms() -> int:
        return int(rng.lognormvariate(math.log(6000), 0.5))

    def draw(task: ReviewTask, reader) -> None:
        base = Candidate.objects.get(pk=task.candidate_order[0]).mask
        pixels = ndimage.binary_dilation(mask_from_png(blob_read(base.png.name)), iterations=2)
        decision_record_drawing(
            task=task,
            reader=reader,
            png=mask_to_png_0_255(pixels),
            idempotency_key=_key(),
            time_on_screen_ms=ms(),
        )

    decided = 0
    for reader in readers:
        while (task := task_lease_next(stage=stage, reader=reader)) is not None:
            if stage.mode == Stage.Mode.PAIRWISE and len(task.candidate_order) > 1:
                while (state := knockout_state(task=task)).number is not None:
                    pair = [state.left, state.right]
                    winner = reader_of.choose({i: quality[i] for i in pair})
                    choice = "neither" if winner is None else "AB"[pair.index(winner)]
                    round_record(
                        task=task,
                        reader=reader,
                        number=state.number,
                        choice=choice,
                        idempotency_key=_key(),
                        time_on_screen_ms=ms(),
                    )
                    if winner is None:
                        draw(task, reader)
                        break
            else:
                order = list(task.candidate_order)
                picked = reader_of.choose({i: quality[i] for i in order})
                if picked is None:
                    draw(task, reader)
                else:
                    decision_record(
                        task=task,
                        reader=reader,
                        position=order.index(picked) + 1,
                        idempotency_key=_key(),
                        time_on_screen_ms=ms(),
                    )
            decided += 1
    return decided
