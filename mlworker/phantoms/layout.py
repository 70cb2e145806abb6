"""Writing phantoms to disk in the QaTa-COV19 v2 folder layout (cxrio.qata),
byte-for-byte reproducibly.

    OUT/Train Set/Images/<name>.png               every training image, COVID-19 and control
    OUT/Train Set/Ground-truths/mask_<name>.png   the manual mask, only for cases that have one
    OUT/Test Set/Images/...  and  Ground-truths/...
    OUT/labels.csv                                name,label,finding,patient_id,split
    OUT/hidden-truth/mask_<name>.png              the exact masks, for evaluation only
    OUT/phantoms.json                             seed, generator version, per-case parameters

A patient's images all land in one split.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cxrio import qata
from cxrio.masks import mask_to_png_0_255
from mlworker.phantoms.cases import GENERATOR_VERSION, PhantomCase

MANIFEST = "phantoms.json"


def write_image_png(image: np.ndarray, path: Path) -> None:
    """8-bit greyscale PNG with fixed encoder settings and no metadata (no time stamps)."""
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(
        path, format="PNG", optimize=False, compress_level=6
    )


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} is not empty; phantoms are written only into a new or empty folder"
        )


def stratum(label: str, has_manual: bool) -> str:
    return f"{label}:{'manual' if has_manual else 'plain'}"


def assign_splits(patients: Iterable[tuple[str, str]], *, test_fraction: float) -> dict[str, str]:
    """Patient id -> "train" or "test", from (patient_id, stratum) pairs, one per image.

    Within each stratum (e.g. COVID-19 with a manual mask, normal control) the patients are
    put in an order fixed by a hash of their ids and the first round(test_fraction * n) go to
    the test split, so both splits see every kind of case and a patient never straddles them.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be within [0, 1], got {test_fraction!r}")
    strata: dict[str, list[str]] = {}
    seen: set[str] = set()
    for patient_id, kind in patients:
        if patient_id not in seen:  # a patient's first image decides their stratum
            seen.add(patient_id)
            strata.setdefault(kind, []).append(patient_id)
    splits = {}
    for kind in sorted(strata):
        ordered = sorted(strata[kind], key=lambda p: hashlib.sha256(p.encode()).hexdigest())
        n_test = math.floor(test_fraction * len(ordered) + 0.5)
        for i, patient_id in enumerate(ordered):
            splits[patient_id] = "test" if i < n_test else "train"
    return splits


def case_stratum(case: PhantomCase) -> str:
    return stratum(case.label, case.has_manual)


@dataclass
class QataWriter:
    """Writes cases one at a time (so a large cohort never sits in memory), then the indexes."""

    out_dir: Path
    meta: Mapping[str, Any] = field(default_factory=dict)
    rows: list[dict[str, str]] = field(default_factory=list)
    manifest: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        _check_out_dir(self.out_dir)
        for folder in qata.SPLIT_FOLDERS.values():
            (self.out_dir / folder / qata.IMAGES).mkdir(parents=True, exist_ok=True)
            (self.out_dir / folder / qata.GROUND_TRUTHS).mkdir(parents=True, exist_ok=True)
        (self.out_dir / qata.HIDDEN_TRUTH).mkdir(exist_ok=True)

    def add(self, case: PhantomCase, split: str) -> None:
        if split not in qata.SPLIT_FOLDERS:
            raise ValueError(f"split must be one of {', '.join(qata.SPLIT_FOLDERS)}, got {split!r}")
        image_name = f"{case.name}.png"
        image, mask = qata.case_paths(image_name, split=split)
        write_image_png(case.image, self.out_dir / image)
        if case.has_manual:
            (self.out_dir / mask).write_bytes(mask_to_png_0_255(case.manual_mask))
        hidden = self.out_dir / qata.HIDDEN_TRUTH / qata.mask_name(image_name)
        hidden.write_bytes(mask_to_png_0_255(case.true_mask))
        self.rows.append(
            {
                "name": case.name,
                "label": case.label,
                "finding": case.finding or "",
                "patient_id": case.patient_id,
                "split": split,
            }
        )
        self.manifest.append(
            {
                "name": case.name,
                "label": case.label,
                "finding": case.finding,
                "patient_id": case.patient_id,
                "split": split,
                "has_manual": case.has_manual,
                "seed": case.seed,
                "patient_seed": case.patient_seed,
                "params": dict(case.params),
            }
        )

    def close(self) -> None:
        (self.out_dir / qata.LABELS_FILE).write_text(
            qata.labels_text(self.rows), encoding="utf-8", newline=""
        )
        manifest = {
            "generator": "mlworker.phantoms",
            "version": GENERATOR_VERSION,
            "layout": "QaTa-COV19 v2",
            **self.meta,
            "cases": self.manifest,
        }
        text = json.dumps(manifest, indent=1, sort_keys=False, ensure_ascii=True) + "\n"
        (self.out_dir / MANIFEST).write_text(text, encoding="utf-8")


@dataclass(frozen=True)
class LayoutSummary:
    out_dir: Path
    splits: Mapping[str, str]  # case name -> "train" / "test"

    def count(self, split: str) -> int:
        return sum(1 for s in self.splits.values() if s == split)


def write_qata_layout(
    cases: Sequence[PhantomCase],
    out_dir: str | Path,
    *,
    split_fractions: tuple[float, float] = (0.8, 0.2),
    meta: Mapping[str, Any] | None = None,
) -> LayoutSummary:
    """Write `cases` in the QaTa-COV19 v2 layout under `out_dir` (new or empty).

    `split_fractions` is (train, test); patients, not images, are split, stratified by label
    and by whether the case ships a manual mask.
    """
    train, test = (float(f) for f in split_fractions)
    if not (0.0 <= train <= 1.0 and 0.0 <= test <= 1.0 and math.isclose(train + test, 1.0)):
        raise ValueError(
            f"split_fractions must be (train, test) within [0, 1] summing to 1, got {split_fractions!r}"
        )
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise ValueError("case names must be unique")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    by_patient = assign_splits(((c.patient_id, case_stratum(c)) for c in cases), test_fraction=test)
    seeds = {c.params.get("cohort_seed") for c in cases}
    info: dict[str, Any] = {"seed": seeds.pop() if len(seeds) == 1 else None}
    info.update({"size": cases[0].size if cases else None, "split_fractions": [train, test]})
    info.update(meta or {})
    writer = QataWriter(out_dir, meta=info)
    for case in cases:
        writer.add(case, by_patient[case.patient_id])
    writer.close()
    return LayoutSummary(out_dir=out_dir, splits={c.name: by_patient[c.patient_id] for c in cases})
