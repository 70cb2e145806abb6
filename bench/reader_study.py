"""A simulated reader study: does an informative-first queue (and the agreement rule) give
better accepted masks for the same number of MD decisions?

    .venv/bin/python bench/reader_study.py --out bench/out/reader_study.png           # full, ~2 CPU-min
    .venv/bin/python bench/reader_study.py --quick --out bench/out/reader_study.png   # seconds

Cases. COVID-19 phantoms (mlworker.phantoms) with their exact infection mask as the hidden
truth, rendered at --size pixels.

Candidates. Five pretend networks stand in for a Stage II preset's five (paper-stage-2, or
fast-cpu-nway): no training, the truth is perturbed instead. Each network thresholds the
lightly blurred truth plus smooth noise at two scales (missed or extra patches, wobbly
borders) and a grow/shrink bias. The noise of a case scales with its difficulty (drawn per
case) times the network's own error level (drawn per network and seed), and half of it is
shared by all networks (they learn from the same masks, so they err alike): hard cases give
worse and more different candidates, and agreeing candidates are usually, not always, right.
Identical candidates are offered once, as the app does.

Disagreement. mlworker.disagreement, as the app computes it: mean pairwise Dice of the
distinct candidates (the queue key), and the agreement rule (every pair's Dice ≥ 0.95).

Readers. annotation.demo.reader.SimulatedReader, the app's perceived-Dice reader: it sees
each candidate's true Dice through Gaussian noise (sd 0.05) and picks the best it sees, so
near-equal candidates get confused; when even the best is under 0.35 it rejects all and
draws (its drawing is the phantom's hurried manual outline). Each case's reader outcome is
drawn once per seed, so every queue order faces the same readers.

Budget. B = 25 %, 50 %, 100 % of the cases' count in MD decisions (one reader per case).
The queue is random (the app's default), or informative first (lowest mean pairwise Dice
first, ties by case). A case reviewed within the budget gets the reader's mask; a case not
reviewed gets the networks' first candidate (network 1's), or, with auto-accept, the
candidate the agreement rule accepts when its candidates agree. With auto-accept, agreeing
cases leave the queue except a 5 % audit sample (mlworker.disagreement.audit_sampled),
which stays in it and costs decisions like any case.

Prints the mean Dice of all accepted masks against the truth per condition and budget, with
95 % confidence intervals over the seeds (t distribution), and the share of MD decisions
informative-first needs to reach the random queue's quality at a 100 % budget.
Target (issue 14): at most 60 %. Writes the curves as a PNG to --out.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from scipy import ndimage, stats  # noqa: E402

from annotation.demo.reader import SimulatedReader  # noqa: E402  (Django-free)
from mlworker.disagreement import agree, audit_sampled, case_disagreement, medoid  # noqa: E402
from mlworker.metrics import dice  # noqa: E402
from mlworker.phantoms import generate_cohort  # noqa: E402

TARGET_SHARE = 0.60
BUDGETS = (0.25, 0.50, 1.00)
N_NETWORKS = 5
THRESHOLD = 0.95  # the app's default agreement threshold
AUDIT_SHARE = 0.05  # the app's default audit sample
TOLERANCE = 0.005  # "equal quality" within half a Dice point, besides exactly equal
CONDITIONS = (
    ("random", False),
    ("informative", False),
    ("random", True),
    ("informative", True),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="few small cases: runs end to end")
    p.add_argument("--cases", type=int, help="COVID-19 phantoms per seed (400; quick 40)")
    p.add_argument("--seeds", type=int, help="independent repetitions (10; quick 5)")
    p.add_argument("--size", type=int, help="phantom side in pixels (96; quick 64)")
    p.add_argument("--out", type=Path, default=Path("bench/out/reader_study.png"))
    args = p.parse_args(argv)
    quick = {"cases": 40, "seeds": 5, "size": 64}
    full = {"cases": 400, "seeds": 10, "size": 96}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.cases < 2 or args.seeds < 2 or args.size < 32:
        p.error("need at least 2 cases, 2 seeds and 32 pixels")
    return args


@dataclass
class Case:
    case_id: int
    q_first: float  # Dice of network 1's candidate
    q_reader: float  # Dice of the mask the reader accepts when it reviews the case
    q_auto: float | None  # Dice of the agreement rule's candidate, None when they disagree
    mean_pairwise_dice: float
    audit: bool  # agreeing, but sent to readers anyway


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (field.std() + 1e-12)


def candidates_for(
    truth: np.ndarray, difficulty: float, levels: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    """The pretend networks' masks of one case (see the module's docstring)."""
    shape = truth.shape
    scale = max(shape) / 96
    base = ndimage.gaussian_filter(truth.astype(np.float64), 1.5 * scale)
    shared = 0.6 * _noise(rng, shape, 2 * scale) + 0.8 * _noise(rng, shape, 6 * scale)
    shared_bias = rng.normal(0, 0.12)
    masks = []
    for level in levels:
        own = 0.6 * _noise(rng, shape, 2 * scale) + 0.8 * _noise(rng, shape, 6 * scale)
        amplitude = 0.5 * difficulty * level
        bias = difficulty * level * (shared_bias + rng.normal(0, 0.12))
        field = base + amplitude * (0.5 * shared + 0.5 * own) + bias
        masks.append(field > 0.5)
    return masks


def simulate_seed(seed: int, n_cases: int, size: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    reader = SimulatedReader(__import__("random").Random(seed))
    phantoms = generate_cohort(seed=seed, n_covid=n_cases, n_control=0, size=size)
    levels = rng.uniform(0.6, 1.4, N_NETWORKS)  # each network's error level this seed
    cases = []
    for index, phantom in enumerate(phantoms):
        truth = phantom.true_mask
        difficulty = rng.beta(2.0, 2.5)
        masks = candidates_for(truth, difficulty, levels, rng)
        distinct: dict[bytes, np.ndarray] = {}
        for m in masks:
            distinct.setdefault(np.packbits(m).tobytes(), m)
        offered = list(distinct.values())
        figures = case_disagreement(offered)
        quality = {i: dice(m, truth) for i, m in enumerate(offered)}
        picked = reader.choose(quality)
        q_reader = dice(phantom.manual_mask, truth) if picked is None else quality[picked]
        agreed = agree(figures.min_pairwise_dice, THRESHOLD)
        cases.append(
            Case(
                case_id=index,
                q_first=quality[0],
                q_reader=q_reader,
                q_auto=quality[medoid(offered)] if agreed else None,
                mean_pairwise_dice=figures.mean_pairwise_dice,
                audit=agreed and audit_sampled(seed=seed, case_id=index, share=AUDIT_SHARE),
            )
        )
    return cases


def accepted_dice(
    cases: list[Case], order: str, auto: bool, share: float, rng: np.random.Generator
) -> float:
    """Mean Dice of every case's accepted mask with `share` × cases MD decisions."""
    budget = int(round(share * len(cases)))
    accepted = {}
    queue = []
    for case in cases:
        if auto and case.q_auto is not None and not case.audit:
            accepted[case.case_id] = case.q_auto
        else:
            queue.append(case)
    if order == "informative":
        queue.sort(key=lambda c: (c.mean_pairwise_dice, c.case_id))
    else:
        queue = [queue[i] for i in rng.permutation(len(queue))]
    for position, case in enumerate(queue):
        if position < budget:
            accepted[case.case_id] = case.q_reader
        else:
            accepted[case.case_id] = (
                case.q_auto if auto and case.q_auto is not None else case.q_first
            )
    return float(np.mean(list(accepted.values())))


def ci95(values: np.ndarray) -> tuple[float, float]:
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, math.nan
    half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    return mean, float(half)


def label(order: str, auto: bool) -> str:
    return ("informative first" if order == "informative" else "random") + (
        " + auto-accept" if auto else ""
    )


def share_to_reach(curve: np.ndarray, grid: np.ndarray, level: float) -> float | None:
    """The least budget share whose mean (over seeds) reaches `level`, linearly interpolated
    between grid points; None if it never does."""
    means = curve.mean(axis=1)
    for i, value in enumerate(means):
        if value >= level - 1e-12:
            if i == 0:
                return float(grid[0])
            lo, hi = means[i - 1], value
            t = (level - lo) / (hi - lo) if hi > lo else 1.0
            return float(grid[i - 1] + t * (grid[i] - grid[i - 1]))
    return None


def plot(path: Path, grid: np.ndarray, curves: dict, reference: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for (order, auto), curve in curves.items():
        means = curve.mean(axis=1)
        halves = np.array([ci95(row)[1] for row in curve])
        style = "-" if order == "informative" else "--"
        (line,) = ax.plot(100 * grid, means, style, label=label(order, auto))
        ax.fill_between(
            100 * grid, means - halves, means + halves, alpha=0.2, color=line.get_color()
        )
    ax.axhline(reference, color="grey", lw=0.8, ls=":", label="random, 100 % reviewed")
    ax.axvline(100 * TARGET_SHARE, color="grey", lw=0.8, ls="-.", label="target: 60 % of decisions")
    ax.set_xlabel("MD decisions (% of cases)")
    ax.set_ylabel("mean Dice of accepted masks vs truth")
    ax.set_title("Simulated reader study (95 % CI over seeds)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.process_time()
    grid = np.round(np.linspace(0, 1, 21 if args.quick else 101), 4)
    grid = np.union1d(grid, BUDGETS)
    curves = {key: np.zeros((len(grid), args.seeds)) for key in CONDITIONS}
    agreeing = np.zeros(args.seeds)
    first_dice = np.zeros(args.seeds)
    for s in range(args.seeds):
        cases = simulate_seed(s, args.cases, args.size)
        agreeing[s] = np.mean([c.q_auto is not None for c in cases])
        first_dice[s] = np.mean([c.q_first for c in cases])
        for key in CONDITIONS:
            for g, share in enumerate(grid):
                # The same random queue for every budget of a seed: budgets nest.
                rng = np.random.default_rng(10_000 + s)
                curves[key][g, s] = accepted_dice(cases, key[0], key[1], share, rng)
    reference = float(curves[("random", False)][-1].mean())

    print(
        f"\nSimulated reader study: {args.seeds} seeds x {args.cases} COVID-19 phantoms at "
        f"{args.size}px, {N_NETWORKS} pretend networks; agreement rule Dice >= {THRESHOLD}, "
        f"audit sample {AUDIT_SHARE:.0%}"
    )
    print(
        f"cases whose candidates agree: {agreeing.mean():.1%}; networks' first candidate "
        f"alone: mean Dice {first_dice.mean():.4f}\n"
    )
    header = "| queue | " + " | ".join(f"{b:.0%} of cases decided" for b in BUDGETS) + " |"
    print(header)
    print("|" + "---|" * (len(BUDGETS) + 1))
    table = {}
    for key in CONDITIONS:
        cells = []
        for b in BUDGETS:
            g = int(np.flatnonzero(np.isclose(grid, b))[0])
            mean, half = ci95(curves[key][g])
            table[(key, b)] = (mean, half)
            cells.append(f"{mean:.4f} ± {half:.4f}")
        print(f"| {label(*key)} | " + " | ".join(cells) + " |")
    print()
    base = curves[("random", False)]
    for b in BUDGETS[:-1]:
        g = int(np.flatnonzero(np.isclose(grid, b))[0])
        diff, half = ci95(curves[("informative", False)][g] - base[g])
        print(
            f"informative first minus random at {b:.0%} (paired by seed): {diff:+.4f} ± {half:.4f}"
        )
    print()
    reach = {}
    for tolerance in (0.0, TOLERANCE):
        level = reference - tolerance
        what = "exactly" if tolerance == 0 else f"within {tolerance} Dice of it"
        print(f"reaching random's 100 % quality ({reference:.4f}), {what}:")
        for key in CONDITIONS:
            share = share_to_reach(curves[key], grid, level)
            reach[(key, tolerance)] = share
            said = "never" if share is None else f"{share:.0%} of the decisions"
            saved = "" if share is None else f" (saves {1 - share:.0%})"
            print(f"  {label(*key)}: {said}{saved}")
    g = int(np.flatnonzero(np.isclose(grid, TARGET_SHARE))[0]) if TARGET_SHARE in grid else None
    if g is not None:
        print(f"\nat {TARGET_SHARE:.0%} of the decisions:")
        for key in CONDITIONS:
            mean, half = ci95(curves[key][g])
            print(f"  {label(*key)}: {mean:.4f} ± {half:.4f}")
    informative = reach[(("informative", False), 0.0)]
    met = informative is not None and informative <= TARGET_SHARE + 1e-9
    print(
        f"\ntarget: informative first at <= {TARGET_SHARE:.0%} of the decisions (exactly): "
        f"{'met' if met else 'NOT met'}"
    )
    plot(args.out, grid, curves, reference)
    print(f"plot: {args.out}   CPU time: {time.process_time() - started:.1f} s")
    return {"table": table, "reach": reach, "reference": reference, "target_met": met}


if __name__ == "__main__":
    main()
