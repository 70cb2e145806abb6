"""Blinding by outline: can a mask's outline alone tell a manual mask from a network's?

    .venv/bin/python bench/shape_blinding.py            # 5 seeds x 120 phantoms, a few CPU minutes
    .venv/bin/python bench/shape_blinding.py --quick    # 2 seeds x 30 phantoms: it runs end to end
    .venv/bin/python bench/shape_blinding.py --sweep --cases 80   # AUC vs Dice, several settings

For each seed, COVID-19 phantoms (mlworker.phantoms) at the working resolution (224²) give
two masks per case: the hurried reader's manual mask (a few polygon clicks) and a
network-style mask. No network is trained here (a CPU fast-preset model takes far longer than
a few minutes to give sharp masks), so network masks are simulated, the way a network's
probability map is thresholded:

- `manual-trained` (default; Stage I, where the networks learn from the manual masks): the
  share of 8 independent hurried readers whose polygon covers each pixel (what a network
  trained on such masks estimates), majority-thresholded, then blurred by a Gaussian of 2 px
  per 256 px (a network's limited resolution), perturbed by smooth noise of amplitude 0.2 and
  thresholded at 0.5: a smooth, wavy blob with the manual masks' content;
- `exact` (a network trained on exact masks): the same blur and noise on the exact infection
  mask: smooth blobs that follow the lesions' lobes, which hurried readers' convex polygons
  never do, so content as well as style differs.

cxrio.outline.outline_features() describes each outline (curvature and straightness
histograms, corner density, roughness at three scales, area / perimeter);
cxrio.outline.source_auc() is the 5-fold cross-validated ROC AUC (both masks of a case in one
fold) of a logistic regression telling manual from network. Measured with normalisation off
(the raw masks) and on (both passed through cxrio.outline.normalise_outline()), with the Dice
of each normalised mask to its original. Means over seeds with 95 % CIs (t, n-1).
Target (issue 19): AUC ≤ 0.60 with normalisation on, mean Dice ≥ 0.97.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from cxrio.outline import (  # noqa: E402
    BEND,
    FILL,
    ROUNDING,
    dice,
    normalise_outline,
    outline_features,
    source_auc,
)
from mlworker.phantoms import generate_case  # noqa: E402
from mlworker.phantoms.manual import draw_manual_mask  # noqa: E402

TARGET_AUC, TARGET_DICE = 0.60, 0.97
# Two-sided 95 % t quantiles by degrees of freedom.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def network_style(true_mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A network-like prediction of `true_mask`: blurred, smoothly perturbed, thresholded."""
    size = max(true_mask.shape)
    blurred = ndimage.gaussian_filter(true_mask.astype(np.float64), 2.0 * size / 256.0)
    noise = ndimage.gaussian_filter(rng.standard_normal(true_mask.shape), 6.0 * size / 256.0)
    noise /= np.abs(noise).max() or 1.0
    out = blurred + 0.2 * noise > 0.5
    return out if out.any() else true_mask.copy()


def network_from_manual(case, rng: np.random.Generator, readers: int = 8) -> np.ndarray:
    """What a network trained on manual masks predicts: the share of hurried readers whose
    polygon covers each pixel (what such a network estimates), perturbed and thresholded."""
    true_mask, lung = np.asarray(case.true_mask), np.asarray(case.lung_mask)
    votes = np.zeros(true_mask.shape)
    for _ in range(readers):
        votes += draw_manual_mask(true_mask, lung, rng)[0]
    return network_style(votes / readers > 0.5, rng)


def masks_for_seed(
    seed: int, n_cases: int, size: int, stand_in: str = "manual-trained"
) -> tuple[list, list, list]:
    """(masks, labels 1=manual 0=network, case groups) of n_cases COVID-19 phantoms."""
    rng = np.random.default_rng(seed)
    masks, labels, groups = [], [], []
    k = 0
    while len(groups) < 2 * n_cases:
        case = generate_case(seed=seed * 100_000 + k, size=size, label="covid")
        k += 1
        if not case.manual_mask.any() or not case.true_mask.any():
            continue
        if stand_in == "manual-trained":
            network = network_from_manual(case, rng)
        else:
            network = network_style(np.asarray(case.true_mask), rng)
        masks += [np.asarray(case.manual_mask), network]
        labels += [1, 0]
        groups += [k, k]
    return masks, labels, groups


# The trade-off curve (--sweep): (bend, fill, rounding, other keyword arguments) of
# normalise_outline, the old style (opening and closing by the same share, no rounding) first,
# the default last; the two rows with other arguments are the minimum-patch rule at 0.2 % of
# the image (100 px at 224²) and the full restyle kept down to Dice 0.8 per patch.
SWEEP = (
    (0.3, 0.3, 0.0, {}),
    (0.3, 1.0, 0.0, {}),
    (0.2, 1.0, 0.0, {}),
    (0.2, 1.0, 0.15, {}),
    (0.25, 1.0, 0.15, {}),
    (0.3, 1.0, 0.2, {}),
    (BEND, FILL, ROUNDING, {"min_area": 100}),
    (BEND, FILL, ROUNDING, {"min_dice": 0.8}),
    (BEND, FILL, ROUNDING, {}),
)


def sweep(seed: int, n_cases: int, size: int, stand_in: str) -> list[dict[str, float]]:
    """AUC on and mean Dice of each SWEEP setting on one seed's masks."""
    masks, labels, groups = masks_for_seed(seed, n_cases, size, stand_in)
    rows = []
    for bend, fill, rounding, other in SWEEP:
        normalised = [
            normalise_outline(m, bend=bend, fill=fill, rounding=rounding, **other) for m in masks
        ]
        features = np.stack([outline_features(m) for m in normalised])
        dices = [dice(a, b) for a, b in zip(masks, normalised, strict=True)]
        rows.append(
            {
                "auc_on": source_auc(features, labels, groups=groups, seed=seed),
                "dice": float(np.mean(dices)),
            }
        )
    return rows


def measure(seed: int, n_cases: int, size: int, stand_in: str) -> dict[str, float]:
    masks, labels, groups = masks_for_seed(seed, n_cases, size, stand_in)
    normalised = [normalise_outline(m) for m in masks]
    raw = np.stack([outline_features(m) for m in masks])
    norm = np.stack([outline_features(m) for m in normalised])
    dices = np.array([dice(a, b) for a, b in zip(masks, normalised, strict=True)])
    labels_arr = np.array(labels)
    return {
        "auc_off": source_auc(raw, labels, groups=groups, seed=seed),
        "auc_on": source_auc(norm, labels, groups=groups, seed=seed),
        "dice": float(dices.mean()),
        "dice_manual": float(dices[labels_arr == 1].mean()),
        "dice_network": float(dices[labels_arr == 0].mean()),
        "dice_min": float(dices.min()),
        "never_empty": float(all(m.any() for m in normalised)),
    }


def mean_ci(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    if len(arr) < 2:
        return float(arr.mean()), float("nan")
    half = _T95.get(len(arr) - 1, 1.96) * arr.std(ddof=1) / math.sqrt(len(arr))
    return float(arr.mean()), float(half)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--cases", type=int, default=120, help="COVID-19 phantoms per seed")
    p.add_argument("--size", type=int, default=224, help="working resolution (pixels)")
    p.add_argument(
        "--stand-in",
        choices=("manual-trained", "exact"),
        default="manual-trained",
        help="network masks of a network trained on manual masks (Stage I), or on exact masks",
    )
    p.add_argument("--quick", action="store_true", help="2 seeds x 30 phantoms")
    p.add_argument(
        "--sweep",
        action="store_true",
        help="the trade-off curve: AUC on and mean Dice for several normalisation settings",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.cases = 2, 30
    return args


def main_sweep(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    per_seed = [sweep(seed, args.cases, args.size, args.stand_in) for seed in range(args.seeds)]
    print(
        f"{args.seeds} seeds x {args.cases} COVID-19 phantoms at {args.size}², "
        f"network stand-in: {args.stand_in}, {time.perf_counter() - start:.0f} s\n"
    )
    print(
        "| bend | fill | rounding | other | AUC on (mean ± 95 % CI) | mean Dice (mean ± 95 % CI) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for k, (bend, fill, rounding, other) in enumerate(SWEEP):
        auc, auc_half = mean_ci([rows[k]["auc_on"] for rows in per_seed])
        dice_mean, dice_half = mean_ci([rows[k]["dice"] for rows in per_seed])
        print(
            f"| {bend} | {fill} | {rounding} "
            f"| {', '.join(f'{key}={value}' for key, value in other.items()) or '-'} "
            f"| {auc:.3f} ± {auc_half:.3f} "
            f"| {dice_mean:.4f} ± {dice_half:.4f} |"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sweep:
        return main_sweep(args)
    start = time.perf_counter()
    rows = []
    for seed in range(args.seeds):
        row = measure(seed, args.cases, args.size, args.stand_in)
        rows.append(row)
        print(
            f"seed {seed}: AUC off {row['auc_off']:.3f}  on {row['auc_on']:.3f}  "
            f"Dice {row['dice']:.4f} (min {row['dice_min']:.4f})",
            flush=True,
        )
    print(
        f"\n{args.seeds} seeds x {args.cases} COVID-19 phantoms at {args.size}², "
        f"network stand-in: {args.stand_in}, "
        f"{2 * args.cases} masks per seed, {time.perf_counter() - start:.0f} s\n"
    )
    print("| measure (mean ± 95 % CI over seeds) | value |")
    print("| --- | --- |")
    for key, title in (
        ("auc_off", "identification AUC, normalisation off"),
        ("auc_on", "identification AUC, normalisation on"),
        ("dice", "mean Dice, normalised vs original (all masks)"),
        ("dice_manual", "mean Dice, manual masks"),
        ("dice_network", "mean Dice, network-style masks"),
        ("dice_min", "lowest Dice of any mask"),
    ):
        mean, half = mean_ci([r[key] for r in rows])
        digits = 3 if key.startswith("auc") else 4
        print(f"| {title} | {mean:.{digits}f} ± {half:.{digits}f} |")
    auc_on = mean_ci([r["auc_on"] for r in rows])[0]
    dice_mean = mean_ci([r["dice"] for r in rows])[0]
    empty = not all(r["never_empty"] for r in rows)
    print(
        f"\ntarget AUC on ≤ {TARGET_AUC}: {'met' if auc_on <= TARGET_AUC else 'NOT met'}; "
        f"mean Dice ≥ {TARGET_DICE}: {'met' if dice_mean >= TARGET_DICE else 'NOT met'}; "
        f"a non-empty mask emptied: {'yes' if empty else 'never'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
