"""How close the demo's candidates are to the phantoms' hidden truth, per stage and network.

Reads the network candidates the workers stored (as predicted, before outline normalisation)
and the true masks `seed_demo` wrote beside the phantoms; prints pixel F1 pooled over each
network's cases, and the manual masks' own F1 (what learning from them can reach).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from PIL import Image

from annotation.demo.seed import DEMO_DATASET
from annotation.models import Dataset, Mask
from annotation.storage import blob_read
from cxrio.masks import mask_from_png, resize_nearest
from mlworker.networks import network_label


def _f1(tp: int, wrong: int) -> float:
    return 2 * tp / max(2 * tp + wrong, 1)


class Command(BaseCommand):
    help = "Pixel F1 of the demo's candidates against the phantoms' hidden truth."

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=2021, help="the demo cohort's seed")
        parser.add_argument("--truth", type=Path, help="the hidden-truth folder, if elsewhere")

    def handle(self, *args, seed: int, truth: Path | None, **options):
        dataset = Dataset.objects.filter(name=DEMO_DATASET).first()
        if dataset is None:
            raise CommandError(f"no dataset {DEMO_DATASET!r}: run seed_demo first")
        folder = truth or settings.VAR_DIR / "demo" / f"phantoms-seed{seed}" / "hidden-truth"
        if not folder.is_dir():
            raise CommandError(f"no hidden truth in {folder}")
        cache: dict[int, np.ndarray] = {}

        def true_mask(radiograph, width: int, height: int) -> np.ndarray:
            if radiograph.pk not in cache:
                with Image.open(folder / f"mask_{radiograph.name}") as image:
                    cache[radiograph.pk] = np.asarray(image) > 0
            return resize_nearest(cache[radiograph.pk], width=width, height=height)

        def tally(masks) -> tuple[int, int, int]:
            tp = wrong = n = 0
            for mask in masks:
                pixels = mask_from_png(blob_read(mask.png.name)) > 0
                truth_pixels = true_mask(mask.radiograph, mask.width, mask.height)
                tp += int((pixels & truth_pixels).sum())
                wrong += int((pixels ^ truth_pixels).sum())
                n += 1
            return tp, wrong, n

        base = Mask.objects.filter(
            radiograph__dataset=dataset, normalised_from__isnull=True
        ).select_related("radiograph")
        tp, wrong, n = tally(base.filter(kind=Mask.Kind.MANUAL, radiograph__label="covid"))
        self.stdout.write(f"manual masks: pixel F1 {_f1(tp, wrong):.3f} over {n} cases")
        for stage in dataset.stages.order_by("number"):
            # One network of the stage: its arch, encoder and seed (Stage I: one model per
            # fold, which together predict every case of the stage).
            groups: dict[tuple, list] = {}
            for mask in base.filter(stage=stage, kind=Mask.Kind.NETWORK).select_related(
                "model_version__job"
            ):
                mv = mask.model_version
                job_params = mv.job.params if mv.job_id else {}
                seed_of = int(job_params.get("network", {}).get("seed", 0))
                groups.setdefault((mv.arch, mv.encoder, seed_of), []).append(mask)
            if not groups:
                self.stdout.write(f"Stage {stage.number}: no network candidates yet")
            for (arch, encoder, seed_of), masks in sorted(groups.items()):
                tp, wrong, n = tally(masks)
                self.stdout.write(
                    f"Stage {stage.number} {network_label(arch, encoder)} (seed {seed_of}): "
                    f"pixel F1 {_f1(tp, wrong):.3f} over {n} candidates"
                )
