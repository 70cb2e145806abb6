"""Small SVG plots of stage statistics (matplotlib, Agg, no files), as images in the page."""

from __future__ import annotations

import base64
import io

import matplotlib
from django.utils.html import format_html

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first

from annotation.selectors.statistics import StageStatistics  # noqa: E402

# Okabe–Ito, as the review screens use.
COLOURS = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999"]


def _svg(fig) -> str:
    """The figure as an <img> of an SVG data URI: matplotlib's SVG styles itself inline, which
    the Content-Security-Policy refuses in the page but allows inside an image."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    title = fig.axes[0].get_title(loc="left") if fig.axes else ""
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return format_html(
        '<img class="plot" alt="{}" src="data:image/svg+xml;base64,{}">', title, data
    )


def _bars(labels, values, *, title: str, xlabel: str, percent: bool = False) -> str:
    plt.rcParams["svg.hashsalt"] = "collabmask"  # stable element ids
    fig, ax = plt.subplots(figsize=(4.6, 0.45 * len(labels) + 0.9))
    positions = range(len(labels))
    ax.barh(positions, values, color=[COLOURS[i % len(COLOURS)] for i in positions])
    ax.set_yticks(list(positions), labels)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel(xlabel, fontsize=9)
    if percent:
        ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)
    return _svg(fig)


def stage_plots(stats: StageStatistics) -> dict[str, str]:
    plots: dict[str, str] = {}
    if stats.sources:
        labels, values = zip(*stats.sources, strict=True)
        plots["sources"] = _bars(labels, values, title="Accepted masks by origin", xlabel="masks")
    if stats.win_rates:
        plots["strength"] = _bars(
            [w.label for w in stats.win_rates],
            [w.strength for w in stats.win_rates],
            title="Bradley–Terry strength in pairwise rounds",
            xlabel="strength (sums to 1)",
        )
    for bias in stats.position:
        if bias.total:
            labels = (
                ["A", "B"]
                if bias.screen.startswith("pairwise")
                else [str(i) for i in range(1, len(bias.counts) + 1)]
            )
            plots.setdefault("position", "")
            plots["position"] += _bars(
                labels,
                bias.shares,
                title=f"Chosen position: {bias.screen}",
                xlabel="share",
                percent=True,
            )
    return plots
