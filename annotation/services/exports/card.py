"""The dataset card (README.md) of an export: what is in it and how its masks were made."""

from __future__ import annotations

from collections import Counter
from typing import Any

from annotation.models import Dataset, ModelVersion, Stage
from annotation.services.exports.manifest import CONTROL, IMPORTED, StageStats

METHOD_CITATION = (
    "Degerli, A., Ahishali, M., Yamac, M., Kiranyaz, S., Chowdhury, M. E. H., Hameed, K., "
    "Hamid, T., Mazhar, R., Gabbouj, M. (2021). COVID-19 infection map generation and "
    "detection from chest X-ray images. Health Information Science and Systems, 9, 15."
)
_SOURCE_WORDS = {
    "manual": "the manual mask",
    "network": "a network's mask",
    "drawn": "drawn by the reader",
    "refined": "a candidate refined by the reader",
}
_METHOD_WORDS = {
    "single": "single reader",
    "majority": "majority",
    "adjudication": "adjudicated",
    "imported": "imported as final",
}


def _counts(counter: Counter, words: dict[str, str] | None = None) -> str:
    if not counter:
        return "none"
    return ", ".join(f"{(words or {}).get(k, k)}: {n}" for k, n in sorted(counter.items()))


def _stage_section(stage: Stage, stats: StageStats) -> list[str]:
    mode = stage.get_mode_display().lower()
    lines = [
        f"### Stage {stage.number}{f' — {stage.name}' if stage.name else ''}",
        "",
        f"- Review: {mode}, {stage.readers_per_case} reader(s) per case; status {stage.status}.",
        f"- Accepted masks in this export: {stats.cases} "
        f"(source — {_counts(stats.sources, _SOURCE_WORDS)}).",
        f"- Consensus: {_counts(stats.methods, _METHOD_WORDS)}"
        + (
            f"; mean agreement {stats.mean_agreement:.2f}."
            if stats.mean_agreement is not None
            else "."
        ),
        f"- Reader decisions: {stats.decisions} by {len(stats.readers)} reader(s)"
        + (
            f", {stats.mean_decision_seconds:.1f} s on screen on average."
            if stats.mean_decision_seconds is not None
            else "."
        ),
    ]
    trained = (
        ModelVersion.objects.filter(stage=stage, purpose=ModelVersion.Purpose.CANDIDATE)
        .values_list("arch", "encoder")
        .order_by("arch", "encoder")
    )
    nets = Counter(f"{arch}/{encoder}" for arch, encoder in trained)
    if nets:
        lines.append(
            "- Networks trained in this stage (versions): "
            + ", ".join(f"{k} ×{n}" for k, n in sorted(nets.items()))
            + "."
        )
    if stats.networks:
        lines.append("- Networks credited in accepted masks: " + _counts(stats.networks) + ".")
    return [*lines, ""]


def dataset_card(
    *,
    dataset: Dataset,
    export_id: int,
    created_at: str,
    created_by: str,
    params: dict[str, Any],
    stats: dict[int | str, StageStats],
    files: list[str],
    totals: dict[str, Any],
) -> str:
    """README.md text."""
    labels: Counter = Counter()
    for s in stats.values():
        labels.update(s.labels)
    lines = [
        f"# {dataset.name} — COVID-19 infection masks for chest X-rays",
        "",
        f"Export #{export_id} of dataset “{dataset.name}”, made with collabmask on "
        f"{created_at} by {created_by}.",
        "",
        "## Contents",
        "",
        "| | cases |",
        "| --- | ---: |",
        f"| all | {totals['n_cases']} |",
    ]
    lines += [f"| label {label} | {n} |" for label, n in sorted(labels.items())]
    lines += [
        f"| with an accepted mask | {totals['n_cases'] - (stats[CONTROL].cases if CONTROL in stats else 0)} |",
        f"| controls (empty mask) | {stats[CONTROL].cases if CONTROL in stats else 0} |",
    ]
    for split, n in sorted(totals["splits"].items()):
        lines.append(f"| {split} | {n} |")
    lines += ["", "Files:", ""] + [f"- {f}" for f in files] + [""]
    stage_keys = sorted(k for k in stats if isinstance(k, int))
    lines += [
        "## How the masks were made",
        "",
        "The masks were built by collaborative human–machine annotation (the QaTa-COV19 "
        "method): networks propose masks, medical doctors choose among blinded candidates or "
        "draw their own, and networks retrain on the accepted masks, stage after stage. "
        "Chosen stages: "
        + (", ".join(str(k) for k in stage_keys) or "none")
        + (". Masks imported as final are included." if params.get("include_imported") else "."),
        "",
    ]
    stages = {s.number: s for s in Stage.objects.filter(dataset=dataset, number__in=stage_keys)}
    for number in stage_keys:
        lines += _stage_section(stages[number], stats[number])
    if IMPORTED in stats:
        s = stats[IMPORTED]
        lines += [
            "### Imported as final",
            "",
            f"- {s.cases} mask(s) were imported as final ground truth "
            f"(source — {_counts(s.sources, _SOURCE_WORDS)}). No readers and no reader "
            "decisions are recorded for them; the manifest leaves those fields empty.",
            "",
        ]
    if CONTROL in stats:
        lines += [
            "### Controls",
            "",
            f"- {stats[CONTROL].cases} case(s) not labelled COVID-19 and without an accepted "
            "mask, exported with an empty mask.",
            "",
        ]
    lines += [
        "## Images and masks",
        "",
        "- Images are the 8-bit greyscale display PNGs the readers saw, at full resolution. "
        "16-bit PNG and DICOM originals are not part of this export (the QaTa-COV19 layout has "
        "8-bit images); `original_sha256` in the manifest identifies each original file.",
        f"- Masks were accepted at a working resolution (longer side at most "
        f"{dataset.mask_max_side} px) and are written at the image's full size by "
        "nearest-neighbour upscaling, as 8-bit PNGs with values 0 (background) and 255 "
        "(infection).",
        _normalised_note(stats, params),
        "- Readers are named by stable pseudonyms (reader-<n>); patients by a salted one-way "
        "key (`patient_key`), so cases of one patient can be grouped.",
        f"- Options: {_options(params)}.",
        "",
        "## Licence",
        "",
        params.get("licence") or "Not specified. Set a licence before sharing this dataset.",
        "",
        "## Citation",
        "",
        params.get("citation") or "Not specified. Add how this dataset should be cited.",
        "",
        "Method: " + METHOD_CITATION,
        "",
        "## Checksums",
        "",
        "`sha256sum -c SHA256SUMS` checks every file of this export.",
        "",
    ]
    return "\n".join(lines)


def _options(params: dict[str, Any]) -> str:
    split = params.get("split", "none")
    if split == "kfold":
        split = f"{params.get('folds')}-fold split (seed {params.get('seed')})"
    return (
        f"formats {', '.join(params.get('formats', []))}; split {split}; "
        f"controls {'included' if params.get('include_controls') else 'not included'}"
    )


def _normalised_note(stats: dict, params: dict[str, Any]) -> str:
    normalised = sum(s.normalised for s in stats.values())
    if not normalised:
        return "- No accepted mask was outline-normalised: each is the mask as chosen or drawn."
    kept = (
        "the masks as drawn or predicted are kept under `provenance/original-masks/` "
        "(`original_mask` in the manifest)"
        if "manifest" in params.get("formats", [])
        else "the masks as drawn or predicted are not part of this export (add the manifest "
        "format to keep them)"
    )
    return (
        f"- {normalised} accepted mask(s) are outline-normalised: every candidate readers "
        "compared was redrawn in one outline style (the stage's `normalise_outlines` "
        "setting), so manual and network masks could not be told apart by their outlines; "
        f"`mask_normalised` in the manifest marks them, and {kept}."
    )
