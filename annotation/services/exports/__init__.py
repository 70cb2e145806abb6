"""Exports of the ground-truth dataset: requested by a researcher or admin, built by a job.

`export_request` checks the choices and creates an Export with its queued Job; the Celery task
(or `manage.py export_dataset`) claims the job and calls `export_build`, which writes the zip
case by case into a temporary file (memory does not grow with the dataset), stores it in the
default storage and records file, size, sha256 and case count once. A finished export never
changes.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from itertools import chain
from pathlib import Path, PurePosixPath
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils.text import slugify

from annotation.models import Dataset, Export, Job, Radiograph, Stage
from annotation.services.audit import audit_record
from annotation.services.exports import qata
from annotation.services.exports.archive import SUMS_NAME, HashingZip
from annotation.services.exports.audit import AUDIT_FILE, audit_lines
from annotation.services.exports.card import dataset_card
from annotation.services.exports.cases import (
    distinct_groups,
    iter_cases,
    kfold_assign,
    selected_cases,
)
from annotation.services.exports.coco import CocoWriter
from annotation.services.exports.manifest import (
    CSV_COLUMNS,
    StageStats,
    case_record,
    csv_line,
    csv_row,
    json_item,
    stats_key,
)
from annotation.services.jobs import job_enqueue
from annotation.storage import file_sha256
from cxrio.masks import mask_to_png_0_255
from cxrio.qata import LABEL_COLUMNS, LABELS_FILE

log = logging.getLogger(__name__)

FORMATS = ("qata", "coco", "manifest")
# Where the manifest's provenance keeps the masks as drawn or predicted of normalised masks.
ORIGINALS_DIR = "provenance/original-masks"
SPLITS = ("none", "stored", "kfold")
MAX_FOLDS = 20
ProgressCallback = Callable[[int, int], bool]  # (cases done, cases in all) -> stop?


class ExportError(ValueError):
    """The export cannot be made as asked; the message says why."""


class ExportCancelled(Exception):
    """The export's job was cancelled while it ran."""


def _check(
    *,
    dataset: Dataset,
    stages: list[int] | None,
    include_imported: bool,
    include_controls: bool,
    formats: list[str],
    split: str,
    folds: int,
) -> int:
    """Raise ExportError unless these choices make a non-empty export; returns its case count."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ExportError(f"formats must be one or more of {', '.join(FORMATS)}")
    if split not in SPLITS:
        raise ExportError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if stages is not None:
        known = set(Stage.objects.filter(dataset=dataset).values_list("number", flat=True))
        if missing := sorted(set(stages) - known):
            raise ExportError(
                f"dataset {dataset.name!r} has no stage {', '.join(map(str, missing))}"
            )
    cases = selected_cases(
        dataset=dataset,
        stages=stages,
        include_imported=include_imported,
        include_controls=include_controls,
    )
    n_cases = cases.count()
    if n_cases == 0:
        raise ExportError("nothing to export: no case has an accepted mask in the chosen stages")
    if split == "stored" and (unassigned := cases.filter(split="").count()):
        raise ExportError(
            f"{unassigned} of the chosen cases have no train/test split; "
            "choose the split 'none' or 'kfold'"
        )
    if split == "kfold":
        if not 2 <= folds <= MAX_FOLDS:
            raise ExportError(f"folds must be 2 to {MAX_FOLDS}, not {folds}")
        if (groups := distinct_groups(cases)) < folds:
            raise ExportError(
                f"{folds} folds need at least {folds} patients; the chosen cases have {groups}"
            )
    return n_cases


def export_request(
    *,
    dataset: Dataset,
    created_by: AbstractBaseUser | None,
    stages: list[int] | None = None,
    include_imported: bool = True,
    include_controls: bool = False,
    formats: list[str] | tuple[str, ...] = FORMATS,
    split: str = "none",
    folds: int = 5,
    seed: int = 0,
    licence: str = "",
    citation: str = "",
    enqueue: bool = True,
    client_ip: str | None = None,
) -> Export:
    """Create an export and its queued job; the job is sent once the transaction commits.

    Stages are stage numbers of the dataset (None: every stage); an empty licence means the
    dataset's. Raises ExportError, creating nothing, when the choices are invalid or select no
    case.
    """
    formats = list(dict.fromkeys(formats))
    stages = sorted(set(stages)) if stages is not None else None
    _check(
        dataset=dataset,
        stages=stages,
        include_imported=include_imported,
        include_controls=include_controls,
        formats=formats,
        split=split,
        folds=folds,
    )
    params: dict[str, Any] = {
        "stages": stages,
        "include_imported": include_imported,
        "include_controls": include_controls,
        "formats": formats,
        "split": split,
        "folds": folds if split == "kfold" else None,
        "seed": seed if split == "kfold" else None,
        "licence": licence.strip() or dataset.licence.strip(),
        "citation": citation.strip(),
    }
    with transaction.atomic():
        job = job_enqueue(
            kind=Job.Kind.EXPORT,
            params=params,
            dataset=dataset,
            created_by=created_by,
            send=enqueue,
        )
        export = Export.objects.create(
            dataset=dataset, job=job, created_by=created_by, params=params
        )
        audit_record(
            action="export.request",
            actor=created_by,
            ip=client_ip,
            target=export,
            dataset=dataset,
            new={"job": job.pk, **params},
        )
    return export


def export_build(*, export: Export, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Write the export's zip to the default storage and record it on the Export, once.

    Returns the job result (export id, file, size, sha256, n_cases). A rerun of a finished
    export changes nothing. Raises ExportError when the data no longer allow the export, and
    ExportCancelled when `progress` returns True (or whatever `progress` raises): nothing is
    stored then.
    """
    export.refresh_from_db()
    if export.file:
        return _result(export)
    p, dataset = export.params, export.dataset
    options = {
        "stages": p.get("stages"),
        "include_imported": bool(p.get("include_imported", True)),
        "include_controls": bool(p.get("include_controls", False)),
    }
    _check(
        dataset=dataset,
        formats=p["formats"],
        split=p["split"],
        folds=p.get("folds") or 0,
        **options,
    )
    cases = selected_cases(dataset=dataset, **options)
    with (
        tempfile.TemporaryDirectory(prefix="collabmask-export-") as tmp,
        open(Path(tmp) / "export.zip", "w+b") as target,
    ):
        n_cases = _write_zip(export, cases, target=target, tmp=tmp, progress=progress)
        sha256, size = file_sha256(target)
        name = default_storage.save(
            f"exports/export-{export.pk:06d}-{slugify(dataset.name) or 'dataset'}.zip",
            File(target),
        )
    with transaction.atomic():
        # file="" guards immutability: a finished export is never written again.
        stored = Export.objects.filter(pk=export.pk, file="").update(
            file=name, size=size, sha256=sha256, n_cases=n_cases
        )
        if stored == 1:
            audit_record(
                action="export.build",
                actor=export.created_by,
                target=export,
                dataset=dataset,
                old={"file": None},
                new={"file": name, "size": size, "sha256": sha256, "n_cases": n_cases},
            )
    if stored != 1:
        default_storage.delete(name)  # another run finished first; keep its file
    export.refresh_from_db()
    return _result(export)


def export_download(*, export: Export, by: AbstractBaseUser, client_ip: str | None = None) -> File:
    """The finished export's zip, opened for a download that the audit trail records."""
    if not export.file:
        raise ExportError(f"export #{export.pk} is not ready: its job is {export.job.state}")
    audit_record(
        action="export.download",
        actor=by,
        ip=client_ip,
        target=export,
        dataset=export.dataset_id,
        new={"file": export.file.name, "sha256": export.sha256},
    )
    return export.file.open("rb")


def _result(export: Export) -> dict[str, Any]:
    """What the job records as its result."""
    return {
        "export": export.pk,
        "file": export.file.name,
        "size": export.size,
        "sha256": export.sha256,
        "n_cases": export.n_cases,
    }


def _write_zip(export: Export, cases, *, target, tmp: str, progress) -> int:
    p = export.params
    formats, split = set(p["formats"]), p["split"]
    folds = kfold_assign(cases, folds=p["folds"], seed=p["seed"] or 0) if split == "kfold" else {}
    total = cases.count()
    stats: dict[int | str, StageStats] = defaultdict(StageStats)
    splits: Counter = Counter()
    namer = qata.Namer()
    with ExitStack() as stack:
        spools = {
            name: stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8", dir=tmp))
            for name in ("csv", "json", "labels", "folds")
        }
        spools["csv"].write(csv_line(CSV_COLUMNS))
        spools["labels"].write(",".join(LABEL_COLUMNS) + "\n")
        spools["folds"].write("image,mask,label,patient_key,fold\n")
        coco = None
        if "coco" in formats:
            coco = CocoWriter(
                spool_dir=tmp,
                description=export.dataset.name,
                created=export.created_at,
                licence=p.get("licence") or "",
            )
            stack.callback(coco.close)
        archive = HashingZip(target, date_time=export.created_at, spool_dir=tmp)
        stack.push(lambda kind, *_: archive.abort() if kind is not None else None)
        done = 0
        for done, case in enumerate(iter_cases(cases), start=1):
            record = _write_case(
                archive, coco, case, namer, split=split, fold=folds.get(case.radiograph.pk),
                with_masks="qata" in formats, with_provenance="manifest" in formats,
                image_id=done,
            )  # fmt: skip
            _spool_case(spools, record, case.radiograph, first=done == 1)
            stats[stats_key(record)].add(record)
            splits[_split_label(record, split)] += 1
            if progress is not None and progress(done, total):
                raise ExportCancelled
        files = _write_metadata(
            archive, coco, spools, dataset=export.dataset, formats=formats, split=split,
            folds=p, stats=stats,
        )  # fmt: skip
        card = dataset_card(
            dataset=export.dataset,
            export_id=export.pk,
            created_at=export.created_at.strftime("%Y-%m-%d %H:%M UTC"),
            created_by=export.created_by.get_username() if export.created_by else "a command",
            params=p,
            stats=stats,
            files=[*files, "README.md", SUMS_NAME],
            totals={"n_cases": done, "splits": splits},
        )
        archive.write_bytes("README.md", card.encode(), compress=True)
        archive.close()
    return done


def _write_case(
    archive, coco, case, namer, *, split, fold, with_masks, with_provenance, image_id
) -> dict:
    r = case.radiograph
    paths = qata.case_paths(namer.name_for(r), split=qata.split_of(r, split_mode=split))
    image_sha = archive.write_bytes(paths.image, qata.display_png(r))
    truth = case.ground_truth
    mask = qata.full_size_mask(r, truth.mask.png.name if truth is not None else None)
    mask_sha = archive.write_bytes(paths.mask, mask_to_png_0_255(mask)) if with_masks else None
    normalised = truth is not None and truth.mask.normalised_from_id is not None
    original_path = original_sha = None
    if normalised and with_provenance:
        # The accepted mask is the outline-normalised one readers saw; the mask as drawn or
        # predicted is kept beside the manifest, in the same format.
        original = qata.full_size_mask(r, truth.mask.normalised_from.png.name)
        original_path = f"{ORIGINALS_DIR}/{PurePosixPath(paths.mask).name}"
        original_sha = archive.write_bytes(original_path, mask_to_png_0_255(original))
    if coco is not None:
        coco.add(
            image_id=image_id,
            file_name=paths.image,
            mask=mask,
            extra={
                "label": r.label,
                "split": r.split or None,
                "fold": fold,
                "mask_normalised": normalised,
            },
        )
    return case_record(
        case,
        image=paths.image,
        mask=paths.mask if with_masks else None,
        image_sha256=image_sha,
        mask_sha256=mask_sha,
        mask_area=int(mask.sum()),
        fold=fold,
        original_mask=original_path,
        original_mask_sha256=original_sha,
    )


def _spool_case(spools, record: dict, radiograph: Radiograph, *, first: bool) -> None:
    spools["csv"].write(csv_line(csv_row(record)))
    spools["json"].write(json_item(record, first=first))
    name = record["image"].rsplit("/", 1)[-1]
    finding = (radiograph.metadata or {}).get("finding", "")
    # patient_id: the key is re-hashed on import, which keeps one patient's cases together.
    spools["labels"].write(
        csv_line([name, radiograph.label, finding, radiograph.patient_key, radiograph.split])
    )
    if record["fold"] is not None:
        spools["folds"].write(
            csv_line(
                [
                    record["image"],
                    record["mask"] or "",
                    record["label"],
                    record["patient_key"] or "",
                    record["fold"],
                ]
            )  # fmt: skip
        )


def _split_label(record: dict, split: str) -> str:
    if split == "kfold":
        return f"fold {record['fold']}"
    return f"split {record['split'] or 'unassigned'}"


def _write_metadata(archive, coco, spools, *, dataset, formats, split, folds, stats) -> list[str]:
    """labels.csv, COCO, manifests and split files; returns the top-level layout for the card."""
    files = ["Train Set/, Test Set/" if split == "stored" else "Images/"]
    if "qata" in formats:
        files[0] += " (Images/ and Ground-truths/)" if split == "stored" else ", Ground-truths/"
    archive.write_file(LABELS_FILE, _binary(spools["labels"]))
    files.append(f"{LABELS_FILE} ({', '.join(LABEL_COLUMNS)}: read by import_cxr)")
    archive.write_chunks(AUDIT_FILE, audit_lines(dataset=dataset))
    files.append(
        f"{AUDIT_FILE} (the dataset's audit trail, one event a line, readers pseudonymous)"
    )
    if coco is not None:
        archive.write_chunks("annotations/instances.json", coco.chunks())
        files.append("annotations/instances.json (COCO, RLE masks)")
    if "manifest" in formats:
        archive.write_file("manifest.csv", _binary(spools["csv"]))
        json_chunks = chain([b"["], _chunks(spools["json"]), [b"\n]\n"])
        archive.write_chunks("manifest.json", json_chunks)
        files.append("manifest.csv, manifest.json (per case: files, sha256, provenance)")
        if any(s.normalised for s in stats.values()):
            files.append(
                f"{ORIGINALS_DIR}/ (the masks as drawn or predicted, where the accepted mask "
                "is their outline-normalised form)"
            )
    if split == "kfold":
        archive.write_file("splits/folds.csv", _binary(spools["folds"]))
        for fold in range(1, folds["folds"] + 1):
            for part in ("train", "test"):
                lines = _fold_lines(spools["folds"], fold=fold, test=part == "test")
                archive.write_chunks(f"splits/fold-{fold}/{part}.txt", lines)
        files.append("splits/ (folds.csv; fold-<k>/train.txt and test.txt: image paths)")
    return files


def _chunks(spool):
    spool.seek(0)
    for chunk in iter(lambda: spool.read(1 << 20), ""):
        yield chunk.encode("utf-8")


class _binary:
    """A text spool read back as UTF-8 bytes, for HashingZip.write_file."""

    def __init__(self, spool) -> None:
        self._spool = spool

    def seek(self, offset: int) -> None:
        self._spool.seek(offset)

    def read(self, size: int) -> bytes:
        return self._spool.read(size).encode("utf-8")


def _fold_lines(spool, *, fold: int, test: bool):
    import csv

    spool.seek(0)
    rows = csv.reader(spool)
    next(rows)
    for row in rows:
        if (int(row[4]) == fold) == test:
            yield (row[0] + "\n").encode("utf-8")
