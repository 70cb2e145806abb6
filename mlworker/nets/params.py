"""Parameter counts, and the table of all twelve networks (the paper's Table 8)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

import keras
import numpy as np

from mlworker.nets.segmenter import build_segmenter
from mlworker.networks import (
    ARCH_LABELS,
    ARCHS,
    ENCODER_LABELS,
    ENCODERS,
    PAPER_ENCODERS,
    resolve_name,
)


def count_params(model: keras.Model) -> tuple[int, int]:
    """(trainable, non_trainable) parameter counts; BatchNorm moving statistics are non-trainable."""

    def total(variables) -> int:
        return int(sum(int(np.prod(v.shape)) for v in variables))

    return total(model.trainable_weights), total(model.non_trainable_weights)


def param_table(
    *,
    archs: Iterable[str] = ARCHS,
    encoders: Iterable[str] = PAPER_ENCODERS,
    input_shape: Sequence[int] = (224, 224, 3),
    file: TextIO | None = None,
) -> list[dict]:
    """Builds every arch x encoder pair with a frozen and a trainable encoder, prints the counts.

    Slow at 224x224 (24 builds): meant for the bench, not for tests. Returns the rows printed.
    """
    out = file or sys.stdout
    rows = []
    for encoder in (resolve_name(e, ENCODERS, "encoder") for e in encoders):
        for arch in (resolve_name(a, ARCHS, "arch") for a in archs):
            row = {"arch": arch, "encoder": encoder}
            for frozen in (False, True):
                model = build_segmenter(arch, encoder, input_shape=input_shape, frozen=frozen)
                key = "frozen" if frozen else "trainable_encoder"
                row[key] = count_params(model)
                del model
                keras.backend.clear_session()
            rows.append(row)
    header = (
        f"{'Network':<8} {'Encoder':<13} "
        f"{'Trainable':>12} {'Non-trainable':>14}   "
        f"{'Frozen: trainable':>18} {'non-trainable':>14}"
    )
    print(f"Parameters at {tuple(input_shape)} (encoder trainable | encoder frozen)", file=out)
    print(header, file=out)
    print("-" * len(header), file=out)
    for row in rows:
        t, nt = row["trainable_encoder"]
        ft, fnt = row["frozen"]
        print(
            f"{ARCH_LABELS[row['arch']]:<8} {ENCODER_LABELS[row['encoder']]:<13} "
            f"{t:>12,} {nt:>14,}   {ft:>18,} {fnt:>14,}",
            file=out,
        )
    return rows
