"""A small dataset with every kind of provenance, built the way users build one: generated files
imported with the importer, then stages, reader decisions and accepted masks written as rows.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from annotation.models import (
    Candidate,
    Dataset,
    Decision,
    GroundTruth,
    Mask,
    ModelVersion,
    Radiograph,
    ReviewTask,
    Stage,
)
from annotation.services.imports import cxr_import
from annotation.storage import MASKS, blob_read, blob_write, content_path
from cxrio.masks import mask_from_png, mask_to_png, pixel_sha256, resize_nearest
from tests.annotation import cxrfiles
from tests.annotation.importing import rect_mask
from tests.factories import UserFactory

# name: (height, width, label, patient); masks are kept at most 32 px on the longer side, so
# every accepted mask is upscaled on export, by non-integer factors for some.
CASES = {
    "a.png": (48, 64, "covid", "P1"),
    "b.png": (40, 40, "covid", "P2"),
    "c.png": (50, 30, "covid", "P3"),
    "d.png": (36, 44, "covid", "P1"),
    "e.png": (40, 52, "normal", "P4"),
    "f.png": (44, 44, "covid", "P5"),
}


@dataclass
class Scenario:
    dataset: Dataset
    cases: dict[str, Radiograph]
    truths: dict[str, np.ndarray] = field(default_factory=dict)  # accepted, working resolution
    users: dict[str, object] = field(default_factory=dict)
    stages: dict[int, Stage] = field(default_factory=dict)


def write_files(folder: Path, cases: dict, *, splits: dict[str, str] | None = None) -> Path:
    """The cases as a QaTa-style folder with a labels.csv; every COVID-19 case has a mask."""
    (folder / "Images").mkdir(parents=True)
    (folder / "Ground-truths").mkdir()
    rows = ["name,label,patient_id,split"]
    for seed, (name, (height, width, label, patient)) in enumerate(cases.items()):
        (folder / "Images" / name).write_bytes(cxrfiles.png8(height, width))
        if label == "covid":
            mask = rect_mask(height, width, seed)
            (folder / "Ground-truths" / f"mask_{name}").write_bytes(cxrfiles.mask_png(mask))
        rows.append(f"{name},{label},{patient},{(splits or {}).get(name, '')}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def import_dataset(folder: Path, *, name: str = "qata-small", max_side: int = 32) -> Dataset:
    dataset = Dataset.objects.create(name=name, mask_max_side=max_side)
    report = cxr_import(dataset=dataset, paths=[folder])
    assert report.rejected == [], report.rejected
    return dataset


def stored_mask(radiograph: Radiograph, pixels: np.ndarray, *, kind: str, **fields) -> Mask:
    data = mask_to_png(pixels)
    path = content_path(MASKS, pixel_sha256(pixels), "png")
    blob_write(path, data)
    return Mask.objects.create(
        radiograph=radiograph,
        kind=kind,
        png=path,
        pixel_sha256=pixel_sha256(pixels),
        width=pixels.shape[1],
        height=pixels.shape[0],
        area=int(pixels.sum()),
        **fields,
    )


def user(username: str, role: str):
    return UserFactory(username=username, roles=[role])


def _decide(stage, radiograph, reader, *, slot, outcome, mask, candidate=None, kind="review"):
    task = ReviewTask.objects.create(
        stage=stage, radiograph=radiograph, kind=kind, slot=slot, reader=reader, status="done"
    )
    return Decision.objects.create(
        task=task,
        reader=reader,
        outcome=outcome,
        candidate=candidate,
        mask=mask,
        position=1 if candidate else None,
        time_on_screen_ms=1000 + 500 * slot,
        idempotency_key=f"k-{stage.pk}-{radiograph.pk}-{kind}-{slot}",
    )


def _candidate(stage, radiograph, *masks: Mask) -> Candidate:
    candidate = Candidate.objects.create(
        stage=stage, radiograph=radiograph, mask=masks[0], pixel_sha256=masks[0].pixel_sha256
    )
    candidate.sources.set(masks)
    return candidate


def _accept(radiograph, mask, *, stage, source, method, readers, agreement, versions=()):
    truth = GroundTruth.objects.create(
        radiograph=radiograph,
        mask=mask,
        stage=stage,
        source=source,
        method=method,
        agreement=agreement,
    )
    truth.readers.set(readers)
    truth.model_versions.set(versions)
    return truth


def work_mask(radiograph: Radiograph, seed: int) -> np.ndarray:
    return rect_mask(radiograph.work_height, radiograph.work_width, seed + 100)


def provenance_scenario(tmp_path: Path) -> Scenario:
    """a: stage 1 manual (one reader); b: stage 2 network (majority of two); c: stage 2 drawn
    (adjudicated); d: imported as final; e: a control; f: COVID-19 without an accepted mask."""
    dataset = import_dataset(write_files(tmp_path / "source", CASES))
    cases = {r.name: r for r in dataset.radiographs.all()}
    s = Scenario(dataset=dataset, cases=cases)
    s.users = {
        "md1": user("md1", "md"),
        "md2": user("md2", "md"),
        "senior": user("senior", "senior_md"),
    }
    md1, md2, senior = s.users["md1"], s.users["md2"], s.users["senior"]
    s1 = Stage.objects.create(dataset=dataset, number=1, mode="pairwise", status="closed")
    s2 = Stage.objects.create(
        dataset=dataset, number=2, mode="nway", status="reviewing", readers_per_case=2
    )
    s.stages = {1: s1, 2: s2}
    net = ModelVersion.objects.create(
        dataset=dataset, stage=s1, purpose="candidate", arch="unet", encoder="densenet121", fold=0
    )

    a = cases["a.png"]
    manual_a = a.masks.get(kind="manual")
    cand = _candidate(s1, a, manual_a)
    _decide(s1, a, md1, slot=0, outcome="chose", mask=manual_a, candidate=cand)
    _accept(a, manual_a, stage=s1, source="manual", method="single", readers=[md1], agreement=1.0)
    s.truths["a.png"] = mask_from_png(blob_read(manual_a.png.name))

    b = cases["b.png"]
    net_b = stored_mask(b, work_mask(b, 1), kind="network", model_version=net, stage=s2)
    cand = _candidate(s2, b, net_b)
    for slot, reader in enumerate((md1, md2)):
        _decide(s2, b, reader, slot=slot, outcome="chose", mask=net_b, candidate=cand)
    _accept(
        b, net_b, stage=s2, source="network", method="majority", readers=[md1, md2],
        agreement=1.0, versions=[net],
    )  # fmt: skip
    s.truths["b.png"] = work_mask(b, 1)

    c = cases["c.png"]
    net_c = stored_mask(c, work_mask(c, 2), kind="network", model_version=net, stage=s2)
    drawn_c = stored_mask(c, work_mask(c, 3), kind="drawn", author=md2, stage=s2)
    cand = _candidate(s2, c, net_c)
    _decide(s2, c, md1, slot=0, outcome="chose", mask=net_c, candidate=cand)
    _decide(s2, c, md2, slot=1, outcome="drew", mask=drawn_c)
    _decide(s2, c, senior, slot=0, outcome="drew", mask=drawn_c, kind="adjudication")
    _accept(
        c, drawn_c, stage=s2, source="drawn", method="adjudication",
        readers=[md1, md2, senior], agreement=0.5,
    )  # fmt: skip
    s.truths["c.png"] = work_mask(c, 3)

    d = cases["d.png"]
    manual_d = d.masks.get(kind="manual")
    _accept(d, manual_d, stage=None, source="manual", method="imported", readers=[], agreement=None)
    s.truths["d.png"] = mask_from_png(blob_read(manual_d.png.name))
    return s


def full_size(radiograph: Radiograph, work: np.ndarray) -> np.ndarray:
    return resize_nearest(work, width=radiograph.width, height=radiograph.height)


def read_zip(data_or_path) -> zipfile.ZipFile:
    if isinstance(data_or_path, bytes):
        return zipfile.ZipFile(io.BytesIO(data_or_path))
    return zipfile.ZipFile(data_or_path)


def zip_csv(archive: zipfile.ZipFile, name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(archive.read(name).decode("utf-8"))))
