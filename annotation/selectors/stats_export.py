"""A stage's statistics as CSV tables: the statistics page's downloads and
`manage.py stage_statistics` write the same files. Columns are documented in
docs/statistics.md; a number that cannot be computed is an empty cell.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable

from annotation.selectors.reader_analytics import BestOfN, ReaderRow
from annotation.selectors.statistics import StageStatistics

Table = tuple[list[str], Iterable[list]]


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _progress(stats: StageStatistics) -> Table:
    rows = [
        ["cases", stats.cases],
        ["accepted", stats.accepted],
        ["tasks", stats.tasks],
        ["tasks_done", stats.tasks_done],
        ["decisions", stats.decisions],
        ["adjudication_waiting", stats.adjudication_waiting],
        ["adjudicated", stats.adjudicated],
        ["median_ms", stats.median_ms],
        *([f"median_ms_{k}", v] for k, v in stats.median_ms_by_outcome.items()),
        ["machine_share", stats.machine_share],
        ["fleiss_kappa", stats.kappa],
        ["kappa_cases", stats.kappa_cases],
        ["mean_dice_between_readers", stats.mean_dice],
        ["dice_pairs", stats.dice_pairs],
    ]
    return ["metric", "value"], rows


def _sources(stats: StageStatistics) -> Table:
    return ["origin", "masks", "share"], (
        [label, count, count / stats.accepted if stats.accepted else None]
        for label, count in stats.sources
    )


def _win_rates(stats: StageStatistics) -> Table:
    return ["source", "wins", "rounds", "win_rate", "bradley_terry_strength"], (
        [w.label, w.wins, w.rounds, w.rate, w.strength] for w in stats.win_rates
    )


def _position(stats: StageStatistics) -> Table:
    return ["screen", "position", "chosen", "share", "chi2", "p_value"], (
        [b.screen, i, count, b.shares[i - 1] if b.total else None, b.chi2, b.p_value]
        for b in stats.position
        for i, count in enumerate(b.counts, start=1)
    )


def _staple(stats: StageStatistics) -> Table:
    return ["network", "cases", "staple_sensitivity", "staple_specificity"], (
        [e.label, e.cases, e.sensitivity, e.specificity] for e in stats.staple
    )


def readers_table(readers: list[ReaderRow], *, names: bool) -> Table:
    columns = ["reader", *(["username"] if names else [])]
    columns += [
        "decisions",
        "median_ms",
        "agreement",
        "agreement_cases",
        "first_position_excess",
        "first_position_ci95",
        "position_choices",
    ]
    rows = (
        [
            r.pseudonym,
            *([r.username] if names else []),
            r.decisions,
            r.median_ms,
            r.agreement,
            r.judged,
            r.first_position_excess,
            r.first_position_ci,
            r.choices,
        ]
        for r in readers
    )
    return columns, rows


def best_of_n_table(rows: list[BestOfN]) -> Table:
    return ["case", "candidates", "best_candidate_dice", "accepted_dice"], (
        [r.case, r.candidates, r.best_dice, r.accepted_dice] for r in rows
    )


STAGE_TABLES: dict[str, Callable[[StageStatistics], Table]] = {
    "progress": _progress,
    "sources": _sources,
    "win_rates": _win_rates,
    "position": _position,
    "staple": _staple,
}


def csv_text(table: Table) -> str:
    columns, rows = table
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_cell(v) for v in row] for row in rows)
    return out.getvalue()
