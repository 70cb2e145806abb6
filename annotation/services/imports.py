"""Import chest X-rays (and their manual masks) from folders and zip archives.

Each case is decoded and validated completely in memory first; only then are its blobs written
and its rows created, in one transaction. A case that fails leaves nothing behind: its rows roll
back and the blobs this import created for it, unreferenced, are deleted. Content is addressed
by sha256, so importing the same files again changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q

from annotation import storage
from annotation.models import Dataset, Label, Mask, Radiograph, Split
from annotation.services.audit import audit_record
from cxrio.dicom import deidentify_dicom
from cxrio.images import (
    DICOM,
    EXTENSIONS,
    DecodedImage,
    ImageError,
    decode_image,
    encode_png,
)
from cxrio.layout import Case, ImportInputError, Source, discover
from cxrio.masks import binary_mask, mask_to_png, pixel_sha256, resize_nearest, working_size

__all__ = ["ImportInputError", "ImportReport", "Rejection", "cxr_import", "patient_key_for"]

# The reasons a failed import's message lists; the job's result keeps every one.
REASONS_SHOWN = 50

ProgressCallback = Callable[[int, int, str], None]  # (cases done, cases in all, current file)

# BIMCV-COVID19+ names in QaTa-COV19: sub-S<subject>_ses-E<session>_…; the subject is the patient.
_BIMCV_SUBJECT = re.compile(r"^(sub-[a-z0-9]+)_ses-", re.IGNORECASE)


class _Rejected(Exception):
    def __init__(self, where: str, reason: str) -> None:
        super().__init__(reason)
        self.where, self.reason = where, reason


@dataclass(frozen=True)
class Rejection:
    name: str
    reason: str

    def __post_init__(self) -> None:
        # One line per file in the summary, whatever a decoder's message looked like.
        object.__setattr__(self, "reason", " ".join(self.reason.split()))


@dataclass
class ImportReport:
    dataset: str
    dry_run: bool
    imported: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    masks_imported: list[str] = field(default_factory=list)
    mask_duplicates: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def nothing_imported(self) -> bool:
        """Whether the import found nothing to keep: no image or mask, new or already there."""
        return not (self.imported or self.duplicates or self.masks_imported or self.mask_duplicates)

    def failure_message(self) -> str:
        """What an import that kept nothing says: why each file was refused, or that none was
        an image."""
        if self.rejected:
            shown = self.rejected[:REASONS_SHOWN]
            lines = [f"{r.name}: {r.reason}" for r in shown]
            if len(self.rejected) > len(shown):
                lines.append(f"… and {len(self.rejected) - len(shown)} more (listed in the result)")
            n = len(self.rejected)
            return f"nothing imported: {n} file{'s' if n != 1 else ''} rejected\n" + "\n".join(
                lines
            )
        if self.skipped:
            return (
                "nothing imported: no chest X-ray (PNG, JPEG or DICOM) among the files; "
                f"skipped {', '.join(self.skipped[:20])}"
            )
        return "nothing imported: the upload held no files"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for Job.result."""
        return {
            "dataset": self.dataset,
            "dry_run": self.dry_run,
            "imported": len(self.imported),
            "duplicates": len(self.duplicates),
            "masks_imported": len(self.masks_imported),
            "mask_duplicates": len(self.mask_duplicates),
            "skipped": len(self.skipped),
            "rejected": [{"name": r.name, "reason": r.reason} for r in self.rejected],
        }


def patient_key_for(identifier: str) -> str:
    """Salted one-way key of a patient identifier (HMAC-SHA256); the identifier is not kept."""
    salt = settings.PATIENT_KEY_SALT.encode()
    return hmac.new(salt, identifier.strip().encode(), hashlib.sha256).hexdigest()


def stored_name(name: str, *, source_format: str, sha256: str) -> str:
    """The name a case is kept, shown and exported under. A DICOM file is usually named after
    its instance UID, which a PACS can trace back to the patient: it gets a pseudonym made
    from its content instead."""
    if source_format == DICOM:
        return f"cxr-{sha256[:16]}.dcm"
    return name[:255]


def _patient_identifier(case: Case, decoded: DecodedImage | None) -> str | None:
    if case.patient_id:
        return case.patient_id
    if decoded is not None and decoded.patient_id:
        return decoded.patient_id
    if match := _BIMCV_SUBJECT.match(case.image.name):
        return match.group(1).lower()  # the QaTa copy mixes sub-S… and sub-s… for one subject
    return None


@dataclass
class _Prepared:
    """Everything one case will write, computed before anything is written."""

    sha256: str
    existing: Radiograph | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    original: bytes = b""
    display_png: bytes = b""
    mask_png: bytes = b""
    mask_fields: dict[str, Any] | None = None


class _Importer:
    def __init__(self, *, dataset: Dataset, dry_run: bool, label: str) -> None:
        self.dataset, self.dry_run, self.label = dataset, dry_run, label
        self.max_pixels = int(settings.IMPORT_MAX_PIXELS)
        self.max_bytes = int(settings.IMPORT_MAX_FILE_BYTES)
        self.report = ImportReport(dataset=dataset.name, dry_run=dry_run)
        # Content seen in this run: a dry run has no rows to find duplicates with.
        self.seen: dict[str, tuple[int, int, int, int]] = {}
        self.seen_masks: set[tuple[str, str]] = set()

    def _read(self, source: Source) -> bytes:
        try:
            return source.read(max_bytes=self.max_bytes)
        except Exception as exc:  # zip CRC errors, I/O errors, size limit
            raise _Rejected(source.where, f"cannot be read: {exc}") from exc

    def _decode(self, case: Case, data: bytes) -> DecodedImage:
        try:
            return decode_image(data, max_pixels=self.max_pixels)
        except ImageError as exc:
            raise _Rejected(case.image.where, str(exc)) from exc
        except Exception as exc:  # a decoder's own failure on hostile input is still per file
            raise _Rejected(
                case.image.where, f"cannot be decoded ({type(exc).__name__}: {exc})"
            ) from exc

    def _case_fields(self, case: Case) -> tuple[str, str]:
        label = case.label or self.label
        if label not in Label.values:
            raise _Rejected(
                case.image.where,
                f"labels.csv gives label {label!r}; use one of {', '.join(Label.values)}",
            )
        if case.split not in Split.values:
            raise _Rejected(
                case.image.where, f"labels.csv gives split {case.split!r}; use train or test"
            )
        return label, case.split

    def prepare(self, case: Case) -> _Prepared:
        label, split = self._case_fields(case)
        data = self._read(case.image)
        prepared = _Prepared(sha256=hashlib.sha256(data).hexdigest())
        if self.dataset.pk is not None:
            prepared.existing = Radiograph.objects.filter(
                dataset=self.dataset, sha256=prepared.sha256
            ).first()
        if (e := prepared.existing) is not None:
            sizes = (e.width, e.height, e.work_width, e.work_height)
        else:
            sizes = self.seen.get(prepared.sha256)
        if sizes is None:
            decoded = self._decode(case, data)
            width, height = decoded.width, decoded.height
            work = working_size(width, height, max_side=self.dataset.mask_max_side)
            sizes = (width, height, *work)
            self._prepare_new(prepared, case, data, decoded, label, split, sizes)
        if case.mask is not None:
            try:
                self._prepare_mask(prepared, case.mask, sizes)
            except _Rejected as rejected:
                if prepared.fields:
                    rejected.reason += f"; {case.image.name} was not imported either"
                raise
        return prepared

    def _prepare_new(self, prepared, case, data, decoded, label, split, sizes) -> None:
        sha = prepared.sha256
        metadata = dict(decoded.metadata)
        if case.finding:
            metadata["finding"] = case.finding[:200]
        identifier = _patient_identifier(case, decoded)
        ext = EXTENSIONS[decoded.source_format]
        if decoded.source_format == DICOM:
            # The stored original keeps the image and its acquisition facts, never the patient.
            salt = b"dicom-uid:" + settings.PATIENT_KEY_SALT.encode()
            prepared.original = deidentify_dicom(data, salt=salt)
        else:
            prepared.original = data
        prepared.display_png = encode_png(decoded.display)
        prepared.fields = {
            "name": stored_name(case.image.name, source_format=decoded.source_format, sha256=sha),
            "original": storage.content_path(storage.ORIGINALS, sha, ext),
            "source_format": decoded.source_format,
            "display": storage.content_path(storage.DISPLAY, sha, "png"),
            "width": sizes[0],
            "height": sizes[1],
            "bit_depth": decoded.bit_depth,
            "work_width": sizes[2],
            "work_height": sizes[3],
            "label": label,
            "patient_key": patient_key_for(identifier) if identifier else "",
            "split": split,
            "metadata": metadata,
        }

    def _prepare_mask(self, prepared: _Prepared, source: Source, sizes) -> None:
        data = self._read(source)
        width, height, work_width, work_height = sizes
        try:
            mask = binary_mask(data, max_pixels=self.max_pixels, expected_size=(width, height))
        except ImageError as exc:
            raise _Rejected(source.where, str(exc)) from exc
        except Exception as exc:
            raise _Rejected(
                source.where, f"cannot be decoded ({type(exc).__name__}: {exc})"
            ) from exc
        work = resize_nearest(mask, width=work_width, height=work_height)
        pixel_sha = pixel_sha256(work)
        prepared.mask_png = mask_to_png(work)
        prepared.mask_fields = {
            "pixel_sha256": pixel_sha,
            "png": storage.content_path(storage.MASKS, pixel_sha, "png"),
            "width": work_width,
            "height": work_height,
            "area": int(np.count_nonzero(work)),
            "source_name": source.name[:255],
        }

    def _mask_exists(self, prepared: _Prepared) -> bool:
        key = (prepared.sha256, prepared.mask_fields["pixel_sha256"])
        if key in self.seen_masks:
            return True
        return prepared.existing is not None and (
            prepared.existing.masks.filter(
                kind=Mask.Kind.MANUAL, pixel_sha256=key[1], normalised_from__isnull=True
            ).exists()
        )

    def commit(self, prepared: _Prepared, case: Case) -> None:
        new_image = prepared.existing is None and prepared.sha256 not in self.seen
        new_mask = prepared.mask_fields is not None and not self._mask_exists(prepared)
        if not self.dry_run and (new_image or new_mask):
            created_image, created_mask = self._write(prepared, new_image, new_mask)
        else:
            created_image, created_mask = new_image, new_mask
        (self.report.imported if created_image else self.report.duplicates).append(case.image.where)
        if prepared.mask_fields is not None:
            (self.report.masks_imported if created_mask else self.report.mask_duplicates).append(
                case.mask.where
            )
            self.seen_masks.add((prepared.sha256, prepared.mask_fields["pixel_sha256"]))
        f = prepared.fields
        if new_image:
            self.seen[prepared.sha256] = (
                f["width"],
                f["height"],
                f["work_width"],
                f["work_height"],
            )

    def _write(self, prepared: _Prepared, new_image: bool, new_mask: bool) -> tuple[bool, bool]:
        writer = storage.BlobWriter()
        try:
            if new_image:
                writer.write(prepared.fields["original"], prepared.original)
                writer.write(prepared.fields["display"], prepared.display_png)
            if new_mask:
                writer.write(prepared.mask_fields["png"], prepared.mask_png)
            with transaction.atomic():
                radiograph, created_image = prepared.existing, False
                if radiograph is None:
                    # get_or_create: a concurrent import of the same file finds the winner's row.
                    radiograph, created_image = Radiograph.objects.get_or_create(
                        dataset=self.dataset, sha256=prepared.sha256, defaults=prepared.fields
                    )
                created_mask = False
                if new_mask:
                    fields = dict(prepared.mask_fields)
                    _, created_mask = Mask.objects.get_or_create(
                        radiograph=radiograph,
                        kind=Mask.Kind.MANUAL,
                        pixel_sha256=fields.pop("pixel_sha256"),
                        normalised_from__isnull=True,
                        defaults=fields,
                    )
        finally:
            # After a failure nothing references the new blobs; after success this deletes none.
            writer.discard_unreferenced(blob_is_referenced)
        return created_image, created_mask


def blob_is_referenced(path: str) -> bool:
    """Whether any row points at this stored file."""
    return (
        Radiograph.objects.filter(Q(original=path) | Q(display=path)).exists()
        or Mask.objects.filter(Q(png=path) | Q(probability=path)).exists()
    )


def cxr_import(
    *,
    dataset: Dataset,
    paths: Iterable[str | Path],
    dry_run: bool = False,
    label: str = Label.COVID,
    progress: ProgressCallback | None = None,
    by: AbstractBaseUser | None = None,
    client_ip: str | None = None,
) -> ImportReport:
    """Import every radiograph (and manual mask) under the given folders, zips and files.

    Bad files are reported per file in the returned report and leave nothing behind. A dry run
    decodes and validates everything and writes nothing; `dataset` may then be unsaved.
    Raises ImportInputError before doing anything when a path does not exist.
    """
    if label not in Label.values:
        raise ImportInputError(f"label {label!r} is not one of {', '.join(Label.values)}")
    importer = _Importer(dataset=dataset, dry_run=dry_run, label=label)
    with ExitStack() as stack:
        layout = discover(paths, stack=stack)
        report = importer.report
        report.skipped = list(layout.skipped)
        report.rejected.extend(Rejection(where, reason) for where, reason in layout.problems)
        total = len(layout.cases)
        for done, case in enumerate(layout.cases, start=1):
            try:
                importer.commit(importer.prepare(case), case)
            except _Rejected as rejected:
                report.rejected.append(Rejection(rejected.where, rejected.reason))
            if progress is not None:
                progress(done, total, case.image.where)
    if not dry_run:
        # Counts only: file names may carry identifiers (a DICOM file's instance UID).
        counts = report.as_dict()
        counts["rejected"] = len(report.rejected)
        del counts["dataset"], counts["dry_run"]
        audit_record(
            action="import", actor=by, ip=client_ip, target=dataset, dataset=dataset, new=counts
        )
    return report
