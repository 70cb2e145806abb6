"""QaTa-COV19: train one architecture x encoder on the train split, evaluate on validation.

    .venv/bin/python bench/qata_benchmark.py --profile cpu             # ≤ 60 min, 2 CPU cores
    .venv/bin/python bench/qata_benchmark.py --profile cpu --quick     # 1-2 min smoke run
    bench/device/run_qata_gpu.sh                                       # gpu profile, device tool

Profiles (every value can be overridden by its flag):

  cpu  U-Net on the slim from-scratch encoder (16, 32, 64, 128, 256) with a light decoder
       (128, 64, 32, 32, 16), about 2 M parameters, 128 x 128, batch 16, all 6,533 training
       distinct images (5,716: byte-identical repeats dropped), as many epochs as fit 56
       minutes, at most 60 (the cosine schedule is fitted to them), Adam
       with a half-epoch warm-up + cosine schedule peaking at 2e-3 (the paper's 1e-4 is slow
       from scratch), a moving average of the weights (momentum 0.999 per step: validation,
       checkpoints and scoring use it), the hybrid focal + Dice loss, the paper's shift/rotation augmentation,
       validation loss on 384 validation images per epoch to pick the checkpoint, then the
       whole validation split (1,429) scored at the native 224 x 224. Post-processing is then
       chosen on the monitored images (the threshold, mirror test-time augmentation, the
       smallest patch kept) and each choice's effect on the whole split is printed.
  gpu  the paper's setting: U-Net on DenseNet-121, 224 x 224, batch 32, Adam 1e-4 constant,
       the paper's augmentation, up to 50 epochs, early stopping on validation loss (patience
       8) and a wall-clock budget so training and evaluation fit one device call, mixed
       bfloat16 precision; data from a pack (bench/device/qata_pack.py).

Encoders start from random weights: no pretrained file can be downloaded here. Pass
`--encoder-weights imagenet|chexnet|FILE` where you have the files (see mlworker/nets/weights.py).
Pixel metrics are those of `python -m mlworker evaluate` (mlworker.evaluate) on the
validation split: F1 is the Dice of the pooled confusion matrix, at threshold 0.5 (the report
folder) and with the post-processing chosen on the monitored images (run.json "postprocess").
Writes OUT/model.keras (float32, no optimizer state: loads under every backend),
OUT/model.json, OUT/report/ (metrics.json, figures, gallery) and OUT/run.json.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import (  # noqa: E402
    BASELINE_F1,
    LVIT_F1,
    PAPER_F1,
    QATA_ROOT,
    REPO,
    Guard,
    build_model,
    cached_cases,
    conv_flops,
    distinct_names,
    first_of_each,
    log,
    qata_split_names,
    qata_train_folder,
    save_portable,
    subset,
    widths,
)

PROFILES = {
    "cpu": {
        "arch": "unet",
        "encoder": "slim",
        "decoder_widths": "128,64,32,32,16",
        "size": 128,
        "batch": 16,
        "epochs": 60,
        "lr": 2e-3,
        "schedule": "cosine",
        "warmup": 0.5,
        "train_limit": None,
        "monitor_limit": 384,
        "budget_min": 56.0,
        "patience": None,
        "precision": "float32",
        "workers": 1,
        "dedup": True,
        "ema": 0.999,
        "lovasz": 0.0,
    },
    "gpu": {
        "arch": "unet",
        "encoder": "densenet121",
        "decoder_widths": "256,128,64,32,16",
        "size": 224,
        "batch": 32,
        "epochs": 50,
        "lr": 1e-4,
        "schedule": "constant",
        "warmup": 0.0,
        "train_limit": None,
        "monitor_limit": None,
        "budget_min": 7.0,
        "patience": 8,
        "precision": "mixed_bfloat16",
        "workers": 8,
        "dedup": True,
        "ema": None,
        "lovasz": 0.0,
    },
}
QUICK = {"train_limit": 48, "monitor_limit": 16, "eval_limit": 24, "epochs": 1}
# Smallest patch kept, in pixels at the scoring resolution (224²: 16 px is 0.03 % of it).
MIN_PATCHES = (0, 16, 64, 256)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    p.add_argument("--data", type=Path, default=QATA_ROOT, help="QaTa-COV19 copy with splits/")
    p.add_argument("--pack", type=Path, help="read a device pack (bench/device) instead of --data")
    p.add_argument("--out", type=Path, help="default bench/out/qata-<profile>")
    p.add_argument("--arch")
    p.add_argument("--encoder")
    p.add_argument("--encoder-weights", help="imagenet, chexnet or a weights file (local only)")
    p.add_argument("--decoder-widths", help="five widths, strides 16..1, e.g. 128,64,32,32,16")
    p.add_argument("--encoder-widths", help="the slim encoder's five widths, e.g. 16,32,64,128,256")
    p.add_argument("--size", type=int, help="training resolution")
    p.add_argument("--eval-size", type=int, default=224, help="scoring resolution (native 224)")
    p.add_argument("--batch", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float, help="Adam learning rate (the schedule's peak)")
    p.add_argument("--schedule", choices=("constant", "cosine"))
    p.add_argument(
        "--ema",
        type=float,
        help="moving average of the weights, this momentum per step (e.g. 0.999); validation, "
        "checkpoints and the scored model use the average",
    )
    p.add_argument(
        "--lovasz",
        type=float,
        help="add this weight of the Lovász-Jaccard loss to the hybrid focal + Dice loss",
    )
    p.add_argument("--warmup", type=float, help="warm-up epochs of the cosine schedule")
    p.add_argument("--train-limit", type=int, help="train on this many images (seeded draw)")
    p.add_argument("--train-match", help="train only on names matching this regex, e.g. ^sub-")
    p.add_argument(
        "--dedup",
        action=argparse.BooleanOptionalAction,
        help="drop byte-identical repeats of a training image (--no-dedup keeps them)",
    )
    p.add_argument("--monitor-limit", type=int, help="validation images scored every epoch")
    p.add_argument("--eval-limit", type=int, help="score this many validation images at the end")
    p.add_argument("--budget-min", type=float, help="stop training this long after start")
    p.add_argument("--patience", type=int, help="early stopping patience in epochs")
    p.add_argument("--precision", help="float32, mixed_bfloat16 or mixed_float16")
    p.add_argument("--workers", type=int, help="threads that augment batches")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-weight-mib", type=float, help="refuse a bigger model before training")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny subset, one epoch")
    args = p.parse_args(argv)
    explicit = {key for key, value in vars(args).items() if value is not None}
    for key, value in PROFILES[args.profile].items():
        if key not in explicit:
            setattr(args, key, value)
    if args.quick:
        for key, value in QUICK.items():
            if key not in explicit:
                setattr(args, key, value)
    args.decoder_widths = widths(args.decoder_widths)
    args.encoder_widths = widths(args.encoder_widths)
    args.out = (
        args.out or REPO / "bench" / "out" / f"qata-{args.profile}{'-quick' if args.quick else ''}"
    )
    return args


def load_data(args: argparse.Namespace):
    """(train images, masks), (monitor images, masks), (eval names, images, masks) and the
    monitored images' positions among the evaluated ones."""
    if args.pack is not None:
        from bench.device.qata_pack import read_pack

        train_names, train_x, train_y = read_pack(
            args.pack, "train", limit=args.train_limit, seed=args.seed
        )
        if args.dedup:
            keep = first_of_each(
                [
                    hashlib.sha256(x.tobytes() + y.tobytes()).digest()
                    for x, y in zip(train_x, train_y, strict=True)
                ]
            )
            train_x, train_y = train_x[keep], train_y[keep]
        valid_names, valid_x, valid_y = read_pack(
            args.pack, "valid", limit=args.eval_limit, seed=args.seed
        )
        train_x, train_y = resize_cases(train_x, train_y, args.size)
        eval_x, eval_y = resize_cases(valid_x, valid_y, args.eval_size)
        monitor = subset(range(len(valid_names)), args.monitor_limit, seed=args.seed + 1)
        mon_x, mon_y = resize_cases(valid_x[monitor], valid_y[monitor], args.size)
        return (train_x, train_y), (mon_x, mon_y), (valid_names, eval_x, eval_y), monitor
    folder = qata_train_folder(args.data)
    train = qata_split_names(args.data, "train")
    if args.train_match:
        train = [name for name in train if re.search(args.train_match, name)]
    if args.dedup:
        train = distinct_names(folder, train)
    train = subset(train, args.train_limit, seed=args.seed)
    valid, monitored = validation_names(args)
    return (
        cached_cases(folder, train, args.size),
        cached_cases(folder, [valid[i] for i in monitored], args.size),
        (valid, *cached_cases(folder, valid, args.eval_size)),
        monitored,
    )


def validation_names(args: argparse.Namespace) -> tuple[list[str], list[int]]:
    """The validation images scored at the end (`--eval-limit`, seeded) and the positions among
    them of those monitored every epoch (`--monitor-limit`), which pick the post-processing."""
    valid = subset(qata_split_names(args.data, "valid"), args.eval_limit, seed=args.seed)
    monitor = subset(valid, args.monitor_limit, seed=args.seed + 1)
    position = {name: i for i, name in enumerate(valid)}
    return valid, [position[name] for name in monitor]


def resize_cases(images: np.ndarray, masks: np.ndarray, size: int):
    if images.shape[1:3] == (size, size):
        return images, masks
    from PIL import Image

    x = np.stack(
        [
            np.asarray(Image.fromarray(i).resize((size, size), Image.Resampling.BILINEAR))
            for i in images
        ]
    )
    y = np.stack(
        [
            np.asarray(Image.fromarray(m).resize((size, size), Image.Resampling.NEAREST))
            for m in masks
        ]
    )
    return x, y.astype(bool)


def drop_small_patches(probs: np.ndarray, threshold: float, min_pixels: int) -> np.ndarray:
    """Maps whose above-threshold patches (8-connected) under `min_pixels` are set to 0."""
    if not min_pixels:
        return probs
    from scipy import ndimage

    out = np.array(probs, dtype=np.float32, copy=True)
    for prob in out:
        labels, n = ndimage.label(prob >= threshold, structure=np.ones((3, 3), bool))
        if n:
            small = np.bincount(labels.ravel()) < min_pixels
            small[0] = False
            prob[small[labels]] = 0.0
    return out


def pixel_scores(masks: np.ndarray, probs: np.ndarray, threshold: float) -> tuple[float, float]:
    """(pooled F1, mean per-image Dice) of `probs` thresholded at `threshold`."""
    from mlworker.metrics import mean_dice, per_image_counts

    rows = per_image_counts(masks, probs, threshold=threshold)
    tp, fp, _, fn = rows.sum(axis=0)
    return float(2 * tp / max(2 * tp + fp + fn, 1)), mean_dice(rows)


def monitored_threshold(masks: np.ndarray, probs: np.ndarray, monitored: list[int]) -> float:
    """The threshold that gives the best pooled F1 on the monitored images only."""
    from mlworker.curves import ScoreHistogram

    histogram = ScoreHistogram()
    for mask, prob in zip(masks[monitored], probs[monitored], strict=True):
        histogram.add(mask, prob)
    return histogram.best_f1_threshold()[0]


def choose_postprocessing(
    masks: np.ndarray, variants: dict[str, np.ndarray], monitored: list[int]
) -> dict:
    """The map variant ("plain" or "mirror"), threshold and smallest patch kept that give the
    best pooled F1 on the monitored images, and one row per single change from the model as
    trained (plain maps, 0.5, every patch kept), scored on all images and on the monitored."""
    mon_y = masks[monitored]

    def best_patch(probs: np.ndarray, threshold: float) -> int:
        def monitored_f1(min_pixels: int) -> float:
            kept = drop_small_patches(probs[monitored], threshold, min_pixels)
            return pixel_scores(mon_y, kept, threshold)[0]

        return -max((monitored_f1(k), -k) for k in MIN_PATCHES)[1]  # ties: the smaller rule

    def row(label: str, variant: str, threshold: float, min_pixels: int) -> dict:
        probs = drop_small_patches(variants[variant], threshold, min_pixels)
        f1, dice = pixel_scores(masks, probs, threshold)
        return {
            "label": label,
            "variant": variant,
            "threshold": round(threshold, 4),
            "min_patch_px": min_pixels,
            "f1": f1,
            "mean_dice": dice,
            "monitored_f1": pixel_scores(mon_y, probs[monitored], threshold)[0],
        }

    combos = []
    for variant, probs in variants.items():
        threshold = monitored_threshold(masks, probs, monitored)
        combos.append(row("", variant, threshold, best_patch(probs, threshold)))
    chosen = max(combos, key=lambda r: r["monitored_f1"])
    plain_threshold = monitored_threshold(masks, variants["plain"], monitored)
    plain_patch = best_patch(variants["plain"], 0.5)
    rows = [
        row("as trained (threshold 0.5)", "plain", 0.5, 0),
        row(
            f"threshold {plain_threshold:.3f} (best on the monitored)", "plain", plain_threshold, 0
        ),
        row("mirror test-time augmentation", "mirror", 0.5, 0),
        row(
            f"patches under {plain_patch} px dropped" if plain_patch else "no patch dropped (best)",
            "plain",
            0.5,
            plain_patch,
        ),
        {**chosen, "label": "all chosen on the monitored images"},
    ]
    return {
        "rows": rows,
        "chosen": {k: chosen[k] for k in ("variant", "threshold", "min_patch_px")},
    }


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    import keras

    import mlworker.train
    from mlworker.augment import CaseBatches
    from mlworker.evaluate import evaluate_probabilities, predict_cases
    from mlworker.evaluate_report import summary_lines, write_report
    from mlworker.nets import count_params

    if args.schedule != "constant" and keras.config.backend() == "jax":
        print(
            "error: the per-batch schedule needs the TensorFlow or PyTorch backend", file=sys.stderr
        )
        return 2
    if args.workers > 1:
        # train_segmenter feeds CaseBatches with Keras' defaults (augmentation in the training
        # thread); on a GPU that starves the device, so the bench asks for threads here.
        mlworker.train.CaseBatches = functools.partial(CaseBatches, workers=args.workers)
    args.out.mkdir(parents=True, exist_ok=True)
    log(
        f"QaTa-COV19 {args.profile} profile on Keras {keras.__version__}/{keras.config.backend()}: {vars(args)}"
    )
    (train_x, train_y), (mon_x, mon_y), (eval_names, eval_x, eval_y), monitored = load_data(args)
    log(
        f"{len(train_x)} training images at {args.size}px, {len(mon_x)} monitored, {len(eval_x)} scored at {args.eval_size}px"
    )

    config = {
        "arch": args.arch,
        "encoder": args.encoder,
        "input_shape": (args.size, args.size, 3),
        "decoder_widths": args.decoder_widths,
        "encoder_weights": args.encoder_weights,
        "encoder_widths": args.encoder_widths,
    }
    keras.utils.set_random_seed(args.seed)
    model = build_model(config, policy=None if args.precision == "float32" else args.precision)
    trainable, frozen = count_params(model)
    flops = conv_flops(model)
    log(
        f"{model.name}: {trainable:,} trainable + {frozen:,} other parameters, {flops / 1e9:.2f} GFLOP per image forward"
    )
    weight_mib = 4 * (trainable + frozen) / 2**20
    if args.max_weight_mib is not None and weight_mib > args.max_weight_mib:
        print(
            f"error: {model.name} weighs {weight_mib:.0f} MiB in float32, over --max-weight-mib "
            f"{args.max_weight_mib:g}: choose a smaller arch/encoder",
            file=sys.stderr,
        )
        return 2
    batches = math.ceil(len(train_x) / args.batch)
    guard = Guard(
        model=model,
        epochs=args.epochs,
        peak_lr=args.lr,
        schedule=args.schedule,
        warmup_epochs=args.warmup,
        deadline=started + 60 * args.budget_min,
        patience=args.patience,
        fit_budget=args.schedule == "cosine",
    )
    train_started = time.monotonic()
    result = mlworker.train.train_segmenter(
        model_or_config=model,
        train_data=(train_x, train_y),
        val_data=(mon_x, mon_y),
        epochs=args.epochs,
        batch_size=args.batch,
        lr=guard.initial_lr(batches),
        seed=args.seed,
        checkpoint_dir=args.out / "checkpoints",
        progress=guard.progress,
        should_cancel=guard.should_cancel,
        mixed_precision=False,
        ema_momentum=args.ema,
        lovasz_weight=args.lovasz,
    )
    train_seconds = time.monotonic() - train_started
    stopped = guard.stopped or "epochs done"
    log(f"trained {result.epochs_done} epochs in {train_seconds / 60:.1f} min ({stopped})")
    if result.best_path is None:
        print("error: no epoch finished within the budget", file=sys.stderr)
        return 1
    import mlworker.nets  # noqa: F401

    best = keras.saving.load_model(result.best_path, compile=False)
    save_portable(best, config, args.out / "model.keras")
    eval_started = time.monotonic()
    probs = predict_cases(best, eval_x, batch_size=args.batch)
    eval_seconds = time.monotonic() - eval_started
    mirrored = predict_cases(best, eval_x, batch_size=args.batch, mirror=True)
    postprocess = choose_postprocessing(eval_y, {"plain": probs, "mirror": mirrored}, monitored)
    evaluation = evaluate_probabilities(
        names=eval_names, masks=eval_y, probs=probs, is_covid=np.ones(len(eval_names), bool)
    )
    run = {
        "profile": args.profile,
        "quick": args.quick,
        "backend": keras.config.backend(),
        "config": {**config, "input_shape": list(config["input_shape"])},
        "precision": args.precision,
        "params_trainable": trainable,
        "gflop_per_image_forward": round(flops / 1e9, 4),
        "batch": args.batch,
        "lr": args.lr,
        "schedule": args.schedule,
        "ema_momentum": args.ema,
        "lovasz_weight": args.lovasz,
        "train_images": len(train_x),
        "dedup": bool(args.dedup),
        "monitor_images": len(mon_x),
        "eval_images": len(eval_x),
        "eval_size": args.eval_size,
        "epochs_done": result.epochs_done,
        "stopped": stopped,
        "best_epoch": int(np.argmin([h.get("val_loss", np.inf) for h in guard.history]) + 1)
        if guard.history
        else None,
        "train_minutes": round(train_seconds / 60, 2),
        "train_ms_per_image_epoch": round(
            1000 * train_seconds / max(result.epochs_done, 1) / len(train_x), 3
        ),
        "eval_ms_per_image": round(1000 * eval_seconds / len(eval_x), 3),
        "total_minutes": None,
        "history": guard.history,
    }
    metrics = write_report(
        evaluation,
        args.out / "report",
        images=eval_x,
        masks=eval_y,
        probs=probs,
        context={"run": run},
    )
    (args.out / "model.json").write_text(
        json.dumps(
            {
                "config": run["config"],
                "epochs": result.epochs_done,
                "batch_size": args.batch,
                "lr": args.lr,
                "seed": args.seed,
                "postprocess": postprocess["chosen"],
            },
            indent=1,
        )
    )
    run["total_minutes"] = round((time.monotonic() - started) / 60, 2)
    run["pixel"] = {
        k: metrics["pixel"][k]["value"]
        for k in ("f1", "sensitivity", "specificity", "precision", "iou", "f2")
    }
    run["mean_dice"] = metrics["pixel"]["mean_dice"]["value"]
    run["mean_dice_quantiles"] = metrics["pixel"]["mean_dice"]["quantiles"]
    run["dice_by_lesion_size"] = metrics["pixel"]["dice_by_lesion_size"]
    run["postprocess"] = postprocess
    (args.out / "run.json").write_text(json.dumps(run, indent=1))
    for line in summary_lines(evaluation):
        log(line)
    log(
        f"post-processing chosen on the {len(monitored)} monitored images, scored on all "
        f"{len(eval_x)}:"
    )
    for row in postprocess["rows"]:
        log(
            f"  {row['label']:<52} pixel F1 {row['f1']:.4f}  mean Dice {row['mean_dice']:.4f}"
            f"  (monitored F1 {row['monitored_f1']:.4f})"
        )
    f1 = postprocess["rows"][-1]["f1"]
    log(
        f"pixel F1 {f1:.4f} (as trained, at 0.5: {run['pixel']['f1']:.4f}) on {len(eval_x)} "
        f"validation images at {args.eval_size}px after "
        f"{run['total_minutes']:.1f} min: {f1 / BASELINE_F1:.3f}x the textbook U-Net's {BASELINE_F1}, "
        f"{f1 / PAPER_F1:.3f}x the paper's {PAPER_F1}, {f1 / LVIT_F1:.3f}x LViT-T's {LVIT_F1}"
    )
    log(f"wrote {args.out}/model.keras, run.json and report/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
