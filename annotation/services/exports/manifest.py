"""What an export says about each case: the manifest record, its CSV row, and the running
per-stage statistics that the dataset card reports.

Missing data stay missing: a mask imported as final has no readers and no decisions, and the
record says so rather than inventing them. Readers appear as stable pseudonyms (reader-<id>).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from annotation.models import Decision, GroundTruth, Mask
from annotation.services.exports.cases import ExportCase

CONTROL = "control"
IMPORTED = "imported"
CSV_COLUMNS = [
    "image",
    "mask",
    "image_sha256",
    "mask_sha256",
    "original_sha256",
    "original_format",
    "width",
    "height",
    "mask_area",
    "mask_normalised",
    "original_mask",
    "original_mask_sha256",
    "label",
    "split",
    "fold",
    "patient_key",
    "stage",
    "provenance",
    "method",
    "agreement",
    "model_versions",
    "readers",
    "n_decisions",
    "decisions",
    "accepted_at",
    "notes",
]


def reader_name(user_id: int) -> str:
    return f"reader-{user_id}"


def _model_version(version) -> dict[str, Any]:
    return {
        "id": version.pk,
        "arch": version.arch,
        "encoder": version.encoder,
        "fold": version.fold,
        "frozen": version.frozen,
        "purpose": version.purpose,
    }


def _decision(decision: Decision, truth: GroundTruth) -> dict[str, Any]:
    mask: Mask = decision.mask
    # A candidate lists every mask with its pixels (the manual mask and networks alike).
    sources = sorted(
        {m.kind for m in getattr(decision.candidate, "source_masks", [])} | {mask.kind}
    )
    return {
        "reader": reader_name(decision.reader_id),
        "task": decision.task.kind,
        "outcome": decision.outcome,
        "chosen_mask": {
            "kind": mask.kind,
            "model_version": mask.model_version_id,
            "candidate_sources": sources if decision.candidate_id else [],
            "normalised": mask.normalised_from_id is not None,
        },
        "position": decision.position,
        "time_on_screen_ms": decision.time_on_screen_ms,
        "decided_at": decision.created_at.isoformat(),
        "accepted": decision.mask_id == truth.mask_id,
    }


def case_record(
    case: ExportCase,
    *,
    image: str,
    mask: str | None,
    image_sha256: str,
    mask_sha256: str | None,
    mask_area: int,
    fold: int | None,
    original_mask: str | None = None,
    original_mask_sha256: str | None = None,
) -> dict[str, Any]:
    """The manifest.json record of one case.

    `mask_normalised`: the accepted mask is the outline-normalised form readers were shown
    (cxrio.outline); the mask as drawn or predicted is then `original_mask` (a file under
    provenance/ when the archive holds one)."""
    r, truth = case.radiograph, case.ground_truth
    record: dict[str, Any] = {
        "image": image,
        "mask": mask,
        "image_sha256": image_sha256,
        "mask_sha256": mask_sha256,
        "original_sha256": r.sha256,
        "original_format": r.source_format,
        "bit_depth": r.bit_depth,
        "width": r.width,
        "height": r.height,
        "work_width": r.work_width,
        "work_height": r.work_height,
        "mask_area": mask_area,
        "mask_normalised": bool(truth is not None and truth.mask.normalised_from_id is not None),
        "original_mask": original_mask,
        "original_mask_sha256": original_mask_sha256,
        "label": r.label,
        "split": r.split or None,
        "fold": fold,
        "patient_key": r.patient_key or None,
    }
    if truth is None:
        record.update(
            provenance=CONTROL,
            ground_truth=None,
            decisions=[],
            notes="control case: not labelled COVID-19, exported with an empty mask",
        )
        return record
    stage = truth.stage
    record.update(
        provenance=truth.source,
        ground_truth={
            "stage": stage.number if stage else None,
            "stage_mode": stage.mode if stage else None,
            "source": truth.source,
            "method": truth.method,
            "agreement": truth.agreement,
            "model_versions": [_model_version(v) for v in truth.model_versions.all()],
            "readers": [reader_name(u.pk) for u in truth.readers.all()],
            "accepted_at": truth.created_at.isoformat(),
        },
        decisions=[_decision(d, truth) for d in case.decisions],
        notes=_notes(case),
    )
    return record


def _notes(case: ExportCase) -> str:
    truth = case.ground_truth
    if truth.method == GroundTruth.Method.IMPORTED or truth.stage_id is None:
        return "imported as final: no readers and no reader decisions are recorded"
    if not case.decisions:
        return "accepted in a stage, but no standing reader decision is recorded"
    return ""


def csv_row(record: dict[str, Any]) -> list[Any]:
    truth = record["ground_truth"] or {}
    versions = ";".join(
        f"{v['arch']}/{v['encoder']}#{v['id']}" for v in truth.get("model_versions", [])
    )
    decisions = ";".join(
        f"{d['reader']}:{d['task']}:{d['outcome']}:{d['chosen_mask']['kind']}:"
        f"{d['time_on_screen_ms']}ms" + (":accepted" if d["accepted"] else "")
        for d in record["decisions"]
    )
    values = {
        **record,
        "stage": truth.get("stage"),
        "method": truth.get("method"),
        "agreement": truth.get("agreement"),
        "model_versions": versions,
        "readers": ";".join(truth.get("readers", [])),
        "n_decisions": len(record["decisions"]),
        "decisions": decisions,
        "accepted_at": truth.get("accepted_at"),
    }
    return ["" if values.get(c) is None else values[c] for c in CSV_COLUMNS]


def csv_line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def json_item(record: dict[str, Any], *, first: bool) -> str:
    return ("\n" if first else ",\n") + json.dumps(record, separators=(",", ":"))


@dataclass
class StageStats:
    """Running statistics of the exported cases accepted in one stage (or imported / controls)."""

    cases: int = 0
    sources: Counter = field(default_factory=Counter)
    methods: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)
    agreement_sum: float = 0.0
    agreement_n: int = 0
    decisions: int = 0
    decision_ms: int = 0
    readers: set[str] = field(default_factory=set)
    networks: Counter = field(default_factory=Counter)
    normalised: int = 0

    def add(self, record: dict[str, Any]) -> None:
        self.cases += 1
        self.labels[record["label"]] += 1
        self.normalised += int(bool(record.get("mask_normalised")))
        truth = record["ground_truth"]
        if truth is None:
            return
        self.sources[truth["source"]] += 1
        self.methods[truth["method"]] += 1
        if truth["agreement"] is not None:
            self.agreement_sum += truth["agreement"]
            self.agreement_n += 1
        self.readers.update(truth["readers"])
        for version in truth["model_versions"]:
            self.networks[f"{version['arch']}/{version['encoder']}"] += 1
        for decision in record["decisions"]:
            self.decisions += 1
            self.decision_ms += decision["time_on_screen_ms"]

    @property
    def mean_agreement(self) -> float | None:
        return self.agreement_sum / self.agreement_n if self.agreement_n else None

    @property
    def mean_decision_seconds(self) -> float | None:
        return self.decision_ms / self.decisions / 1000 if self.decisions else None


def stats_key(record: dict[str, Any]) -> int | str:
    truth = record["ground_truth"]
    if truth is None:
        return CONTROL
    return truth["stage"] if truth["stage"] is not None else IMPORTED
