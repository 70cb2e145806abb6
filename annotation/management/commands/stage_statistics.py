"""python manage.py stage_statistics --stage ID --out DIR [--truth DIR] [--names]

Writes a stage's statistics as the CSV files the statistics page offers, and, given a folder of
true masks (a phantom cohort's hidden-truth/ or a held-back reference set, named mask_<image>),
best_of_n.csv: per case, the Dice against the truth of the best candidate offered and of the mask
accepted, with the means printed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Stage
from annotation.selectors.reader_analytics import best_of_n, reader_rows
from annotation.selectors.statistics import stage_statistics
from annotation.selectors.stats_export import (
    STAGE_TABLES,
    best_of_n_table,
    csv_text,
    readers_table,
)
from cxrio import qata
from cxrio.masks import MaskError, mask_from_png


def truth_folder(folder: Path):
    """truth(image name) → the mask in FOLDER/mask_<name> (or its .png twin), else None."""

    def truth(name: str) -> np.ndarray | None:
        for candidate in qata.mask_names(name):
            path = folder / candidate
            if path.is_file():
                try:
                    return mask_from_png(path.read_bytes())
                except MaskError as exc:
                    raise CommandError(f"{path}: {exc}") from exc
        return None

    return truth


class Command(BaseCommand):
    help = "Write a stage's statistics as CSV files (and best of N against a truth folder)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--stage", type=int, required=True, help="stage id")
        parser.add_argument("--out", type=Path, required=True, help="folder for the CSV files")
        parser.add_argument("--truth", type=Path, help="folder of true masks, mask_<image name>")
        parser.add_argument("--names", action="store_true", help="user names beside the pseudonyms")

    def handle(self, *args, **options) -> None:
        stage = Stage.objects.filter(pk=options["stage"]).first()
        if stage is None:
            raise CommandError(f"no stage with id {options['stage']}")
        truth = options["truth"]
        if truth is not None and not truth.is_dir():
            raise CommandError(f"--truth {truth} is not a folder")
        out: Path = options["out"]
        out.mkdir(parents=True, exist_ok=True)
        stats = stage_statistics(stage=stage)
        files = {name: make(stats) for name, make in STAGE_TABLES.items()}
        files["readers"] = readers_table(reader_rows(stage=stage), names=options["names"])
        if truth is not None:
            rows = best_of_n(stage=stage, truth=truth_folder(truth))
            if not rows:
                raise CommandError(f"no case of stage {stage.number} has a mask in {truth}")
            files["best_of_n"] = best_of_n_table(rows)
            best = np.mean([r.best_dice for r in rows])
            accepted = [r.accepted_dice for r in rows if r.accepted_dice is not None]
            chosen = f", accepted masks {np.mean(accepted):.4f} ({len(accepted)} cases)"
            self.stdout.write(
                f"best of N against the truth: best candidate {best:.4f} ({len(rows)} cases)"
                + (chosen if accepted else ", no accepted mask yet")
            )
        for name, table in files.items():
            (out / f"{name}.csv").write_text(csv_text(table), encoding="utf-8")
        self.stdout.write(f"wrote {', '.join(f'{n}.csv' for n in files)} to {out}")
