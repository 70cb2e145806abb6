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
at the native 224². The gain is the ensemble's F1 minus the best member's. Writes
OUT/ensemble.json.
"""

from __future__ import annotations

import argparse
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
    qata_split_names,
    qata_train_folder,
    subset,
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


def scores(masks: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    from mlworker.metrics import mean_dice, per_image_counts

    rows = per_image_counts(masks, probs, threshold=0.5)
    tp, fp, _, fn = rows.sum(axis=0)
    return {"f1": float(2 * tp / max(2 * tp + fp + fn, 1)), "mean_dice": mean_dice(rows)}


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

    eval_limit = qata_benchmark.QUICK["eval_limit"] if args.quick else args.eval_limit
    valid = subset(qata_split_names(args.data, "valid"), eval_limit, seed=args.seed)
    images, masks = cached_cases(qata_train_folder(args.data), valid, 224)
    members = {
        arch: keras.saving.load_model(args.out / arch / "model.keras", compile=False)
        for arch in args.archs
    }
    for arch, model in members.items():
        model.name = arch  # unique names inside the combined network
    table: dict[str, dict[str, float]] = {}
    for arch, model in members.items():
        table[arch] = scores(masks, predict_cases(model, images))
        log(f"{arch:<9} pixel F1 {table[arch]['f1']:.4f}  mean Dice {table[arch]['mean_dice']:.4f}")
    ensemble = mean_ensemble(list(members.values()))
    table["ensemble"] = scores(masks, predict_cases(ensemble, images))
    best = max(args.archs, key=lambda a: table[a]["f1"])
    gain = table["ensemble"]["f1"] - table[best]["f1"]
    log(
        f"ensemble  pixel F1 {table['ensemble']['f1']:.4f}  mean Dice "
        f"{table['ensemble']['mean_dice']:.4f}: {gain:+.4f} F1 over the best member ({best}), "
        f"{len(valid)} validation images, {(time.monotonic() - started) / 60:.1f} min in all"
    )
    (args.out / "ensemble.json").write_text(
        json.dumps(
            {
                "images": len(valid),
                "members": args.archs,
                "scores": table,
                "best": best,
                "gain": gain,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
