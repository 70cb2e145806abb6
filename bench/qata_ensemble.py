"""QaTa-COV19: what the loop's ensemble (the mean probability of a stage's networks) adds over
its best member, on the validation split.

    .venv/bin/python bench/qata_ensemble.py                     # U-Net, UNet++, DLA; see below
    .venv/bin/python bench/qata_ensemble.py --quick             # smoke run: tiny subsets
    .venv/bin/python bench/qata_ensemble.py --archs unet,dla --budget-min 20 --size 128

Each architecture is trained by bench/qata_benchmark.py (the cpu profile, its flags passed
through: the same training images, seed, schedule and wall-clock budget per network) into
OUT/<arch>/model.keras. The script then predicts the validation images with every member,
averages their probability maps (mlworker.detection.ensemble.mean_ensemble: the network a
stage's ensemble candidate and the detector ensemble run) and scores members and ensemble
alike: pooled pixel F1 (Dice of the pooled confusion matrix) and mean per-image Dice at 0.5,
at the native 224². The gain is the ensemble's F1 minus the best member's. Every smaller
combination of two or more members is scored too (the mean of their maps), and every row also
at the threshold chosen on the monitored validation images (as qata_benchmark.py chooses it)
and on the validation images never monitored. Writes OUT/ensemble.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import (  # noqa: E402
    QATA_ROOT,
    REPO,
    cached_cases,
    log,
    qata_train_folder,
)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--archs", default="unet,unetpp,dla", help="comma-separated architectures")
    p.add_argument("--data", type=Path, default=QATA_ROOT)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "qata-ensemble")
    p.add_argument("--budget-min", type=float, default=18.0, help="wall-clock budget per network")
    p.add_argument("--eval-limit", type=int, help="score this many validation images")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny subsets, one epoch")
    p.add_argument("--seed", type=int, default=0)
    args, rest = p.parse_known_args(argv)
    args.archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    if len(args.archs) < 2:
        p.error("an ensemble needs at least two architectures")
    return args, rest


def ensemble_table(
    masks: np.ndarray, members: dict[str, np.ndarray], monitored: list[int]
) -> dict[str, dict[str, float]]:
    """Scores of every member and of every combination of two or more (the mean of their
    probability maps; `members` may hold the whole ensemble's maps as computed by its network
    under the key "+".join(all names)), each at 0.5 and at the threshold that is best on the
    `monitored` images, on all images and on those never monitored."""
    from bench.qata_benchmark import monitored_threshold, pixel_scores

    names = [name for name in members if "+" not in name]
    unmonitored = np.setdiff1d(np.arange(len(masks)), monitored)
    table: dict[str, dict[str, float]] = {}
    for size in range(1, len(names) + 1):
        for combo in itertools.combinations(names, size):
            key = "+".join(combo)
            probs = members.get(key)
            if probs is None:
                probs = np.mean([members[name] for name in combo], axis=0)
            threshold = monitored_threshold(masks, probs, monitored)
            f1, dice = pixel_scores(masks, probs, 0.5)
            f1_t, dice_t = pixel_scores(masks, probs, threshold)
            row = {"f1": f1, "mean_dice": dice, "threshold": threshold}
            row.update(f1_at_threshold=f1_t, mean_dice_at_threshold=dice_t)
            if len(unmonitored):
                rest_y, rest = masks[unmonitored], probs[unmonitored]
                row["f1_unmonitored"] = pixel_scores(rest_y, rest, 0.5)[0]
                row["f1_unmonitored_at_threshold"] = pixel_scores(rest_y, rest, threshold)[0]
            table[key] = row
    return table


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args, passed = parse_args(argv)
    from bench import qata_benchmark

    common = ["--profile", "cpu", "--data", str(args.data), "--seed", str(args.seed), *passed]
    common += ["--budget-min", str(args.budget_min)]
    if args.eval_limit is not None:
        common += ["--eval-limit", str(args.eval_limit)]
    if args.quick:
        common.append("--quick")
    for arch in args.archs:
        if (args.out / arch / "model.keras").is_file():
            log(f"{arch}: trained already, {args.out / arch / 'model.keras'}")
            continue
        log(f"training {arch}")
        code = qata_benchmark.main([*common, "--arch", arch, "--out", str(args.out / arch)])
        if code:
            return code

    import keras

    import mlworker.nets  # noqa: F401  (registers the custom layers)
    from mlworker.detection.ensemble import mean_ensemble
    from mlworker.evaluate import predict_cases

    resolved = qata_benchmark.parse_args([*common, "--arch", args.archs[0]])
    valid, monitored = qata_benchmark.validation_names(resolved)
    images, masks = cached_cases(qata_train_folder(args.data), valid, resolved.eval_size)
    masks = np.asarray(masks)
    members = {
        arch: keras.saving.load_model(args.out / arch / "model.keras", compile=False)
        for arch in args.archs
    }
    for arch, model in members.items():
        model.name = arch  # unique names inside the combined network
    probs = {arch: predict_cases(model, images) for arch, model in members.items()}
    # The whole ensemble through the network a stage's ensemble candidate runs.
    whole = "+".join(args.archs)
    probs[whole] = predict_cases(mean_ensemble(list(members.values())), images)
    table = ensemble_table(masks, probs, monitored)
    best = max(args.archs, key=lambda a: table[a]["f1"])
    gain = table[whole]["f1"] - table[best]["f1"]
    log(
        f"{len(valid)} validation images at {resolved.eval_size}px; threshold chosen on the "
        f"{len(monitored)} monitored, F1 also on the {len(valid) - len(monitored)} never monitored"
    )
    head = f"{'networks':<20} {'F1 at 0.5':>9} {'mean Dice':>9} {'threshold':>9} {'F1 at it':>9}"
    log(f"{head}  unmonitored F1 (0.5 / chosen)")
    for key, row in table.items():
        unmonitored = (
            f"{row['f1_unmonitored']:.4f} / {row['f1_unmonitored_at_threshold']:.4f}"
            if "f1_unmonitored" in row
            else "-"
        )
        log(
            f"{key:<20} {row['f1']:9.4f} {row['mean_dice']:9.4f} {row['threshold']:9.3f} "
            f"{row['f1_at_threshold']:9.4f}  {unmonitored}"
        )
    combos = [key for key in table if "+" in key]
    best_combo = max(combos, key=lambda k: table[k]["f1"])
    log(
        f"ensemble of all {len(args.archs)}: pixel F1 {table[whole]['f1']:.4f}, {gain:+.4f} over "
        f"the best member ({best}); best combination {best_combo} "
        f"{table[best_combo]['f1'] - table[best]['f1']:+.4f}; "
        f"{(time.monotonic() - started) / 60:.1f} min in all"
    )
    (args.out / "ensemble.json").write_text(
        json.dumps(
            {
                "images": len(valid),
                "monitored": len(monitored),
                "members": args.archs,
                "scores": table,
                "best": best,
                "gain": gain,
                "best_combination": best_combo,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
