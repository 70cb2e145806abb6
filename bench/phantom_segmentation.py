"""Phantom chest X-rays: train a segmenter on CPU, score held-out phantoms against the truth.

    .venv/bin/python bench/phantom_segmentation.py            # the 20-minute profile, 2 cores
    .venv/bin/python bench/phantom_segmentation.py --quick    # about a minute: it runs end to end

Profile: 1,500 phantoms (750 COVID-19, 750 controls: normal, or consolidation, nodules, basal
effusion, cardiomegaly) rendered at 128 x 128 by mlworker.phantoms; patients split 75 / 25
(stratified by label, a patient's images in one split); U-Net on the slim from-scratch encoder
(16 ... 256) with a light decoder (128, 64, 32, 16, 16), about 2 M parameters; the exact
infection masks (controls empty); the hybrid focal + Dice loss; the paper's shift/rotation
augmentation; batch 16; Adam with a one-epoch warm-up to 1e-3 and cosine decay, over as many
epochs (at most 80) as finish 19 minutes after the start; the last epoch is scored (no
validation split is held back).

Prints pixel sensitivity, specificity, precision, F1 (Dice) and IoU over the held-out
COVID-19 phantoms (mlworker.evaluate, threshold 0.5), the case detection figures at the
paper's rule (COVID-19 when any pixel ≥ 0.5), and the best sensitivity reachable at
specificity ≥ 0.95 on the case ROC curve. Targets (issue 4): pixel F1 ≥ 0.80,
sensitivity ≥ 0.95 at specificity ≥ 0.95, within 20 minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import CACHE_DIR, REPO, Guard, build_model, conv_flops, log, widths  # noqa: E402

TARGET_F1, TARGET_SENS, TARGET_SPEC = 0.80, 0.95, 0.95


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--covid", type=int, default=750)
    p.add_argument("--control", type=int, default=750)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--arch", default="unet")
    p.add_argument("--encoder", default="slim")
    p.add_argument("--decoder-widths", default="128,64,32,16,16")
    p.add_argument("--encoder-widths", help="the slim encoder's five widths, e.g. 16,32,64,128,256")
    p.add_argument("--epochs", type=int, default=80, help="at most; as many as fit")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="peak of the warm-up + cosine schedule")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up epochs")
    p.add_argument(
        "--masks",
        choices=("truth", "manual"),
        default="truth",
        help="train on the exact masks, or on the hurried reader's outlines",
    )
    p.add_argument("--budget-min", type=float, default=19.0, help="stop training by then")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "phantoms")
    p.add_argument("--quick", action="store_true", help="60 phantoms, 2 epochs")
    args = p.parse_args(argv)
    if args.quick:
        args.covid, args.control, args.epochs = 40, 20, 2
        args.out = args.out.with_name(args.out.name + "-quick")
    args.decoder_widths = widths(args.decoder_widths)
    args.encoder_widths = widths(args.encoder_widths)
    return args


def cohort(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Images, truth and manual masks, labels and patients, cached under var/bench-cache.

    The cache is keyed by the generator's source too, so a changed generator renders afresh.
    """
    source = sorted((REPO / "mlworker" / "phantoms").glob("*.py"))
    version = hashlib.sha256(b"".join(f.read_bytes() for f in source)).hexdigest()[:12]
    path = CACHE_DIR / f"phantoms-{args.seed}-{args.covid}-{args.control}-{args.size}-{version}.npz"
    if path.is_file():
        return dict(np.load(path))
    from mlworker.phantoms import plan_cohort, render_spec

    started = time.perf_counter()
    specs = plan_cohort(seed=args.seed, n_covid=args.covid, n_control=args.control)
    cases = [render_spec(spec, size=args.size) for spec in specs]
    data = {
        "names": np.array([c.name for c in cases]),
        "images": np.stack([c.image for c in cases]),
        "truth": np.stack([c.true_mask for c in cases]),
        "manual": np.stack([c.manual_mask for c in cases]),
        "covid": np.array([c.label == "covid" for c in cases]),
        "has_manual": np.array([c.has_manual for c in cases]),
        "patients": np.array([c.patient_id for c in cases]),
        "labels": np.array([c.finding or c.label for c in cases]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    log(f"rendered {len(cases)} phantoms at {args.size}px in {time.perf_counter() - started:.0f} s")
    return data


def sensitivity_at_specificity(evaluation, specificity: float) -> tuple[float, float]:
    """Best (sensitivity, threshold) on the case ROC curve with specificity ≥ `specificity`."""
    roc = evaluation.case_roc
    ok = (1 - roc.fpr) >= specificity
    best = int(np.argmax(np.where(ok, roc.tpr, -1)))
    return float(roc.tpr[best]), float(roc.thresholds[best])


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    import keras

    from mlworker.augment import balance_by_augmentation  # noqa: F401  (documents the choice)
    from mlworker.data import train_val_split
    from mlworker.evaluate import evaluate_probabilities, predict_cases
    from mlworker.evaluate_report import summary_lines, write_report
    from mlworker.train import train_segmenter

    data = cohort(args)
    strata = np.where(data["covid"], "covid", "control")
    train, test = train_val_split(
        strata, data["patients"], val_fraction=args.test_fraction, seed=args.seed
    )
    masks = data["truth"] if args.masks == "truth" else data["manual"]
    if args.masks == "manual":  # only the cases the dataset ships a manual mask for, and controls
        train = train[data["has_manual"][train] | ~data["covid"][train]]
    log(
        f"{len(train)} training phantoms ({int(data['covid'][train].sum())} COVID-19), "
        f"{len(test)} held out ({int(data['covid'][test].sum())} COVID-19) at {args.size}px; "
        f"training on {args.masks} masks"
    )
    config = {
        "arch": args.arch,
        "encoder": args.encoder,
        "input_shape": (args.size, args.size, 3),
        "decoder_widths": args.decoder_widths,
        "encoder_widths": args.encoder_widths,
    }
    keras.utils.set_random_seed(args.seed)
    model = build_model(config)
    log(
        f"{model.name}: {model.count_params():,} parameters, {conv_flops(model) / 1e9:.2f} GFLOP/image"
    )
    guard = Guard(
        model=model,
        epochs=args.epochs,
        peak_lr=args.lr,
        schedule="cosine",
        warmup_epochs=args.warmup,
        deadline=started + 60 * args.budget_min,
        fit_budget=True,
    )
    batches = math.ceil(len(train) / args.batch)
    result = train_segmenter(
        model_or_config=model,
        train_data=(data["images"][train], masks[train]),
        epochs=args.epochs,
        batch_size=args.batch,
        lr=guard.initial_lr(batches),
        seed=args.seed,
        progress=guard.progress,
        should_cancel=guard.should_cancel,
        mixed_precision=False,
    )
    train_minutes = (time.monotonic() - started) / 60
    probs = predict_cases(result.model, data["images"][test], batch_size=32)
    evaluation = evaluate_probabilities(
        names=data["names"][test].tolist(),
        masks=data["truth"][test],
        probs=probs,
        is_covid=data["covid"][test],
    )
    sens, threshold = sensitivity_at_specificity(evaluation, TARGET_SPEC)
    minutes = (time.monotonic() - started) / 60
    run = {
        "profile": {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in vars(args).items()
            if k not in ("out",)
        },
        "train_phantoms": len(train),
        "test_phantoms": len(test),
        "epochs_done": result.epochs_done,
        "stopped": guard.stopped or "epochs done",
        "train_minutes": round(train_minutes, 2),
        "total_minutes": round(minutes, 2),
        "sensitivity_at_specificity_0.95": sens,
        "threshold_at_specificity_0.95": threshold,
        "history": guard.history,
    }
    metrics = write_report(
        evaluation,
        args.out,
        images=data["images"][test],
        masks=data["truth"][test],
        probs=probs,
        context={"run": run},
    )
    for line in summary_lines(evaluation):
        log(line)
    f1 = metrics["pixel"]["f1"]["value"]
    det = metrics["detection"]
    log(
        f"pixel F1 {f1:.4f} (target {TARGET_F1}: {f1 / TARGET_F1:.3f}x); detection at 0.5: "
        f"sensitivity {det['sensitivity']['value']:.4f}, specificity {det['specificity']['value']:.4f}; "
        f"best sensitivity at specificity ≥ {TARGET_SPEC}: {sens:.4f} (threshold {threshold:.3f}); "
        f"{result.epochs_done} epochs, {minutes:.1f} min in all (target 20)"
    )
    (args.out / "run.json").write_text(json.dumps(run, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
