"""`python -m mlworker train`: train one segmenter on a QaTa-COV19-layout folder.

Trains on every labelled case (a mask in Ground-truths/, or a control in labels.csv),
validating on fold `--fold` of `--folds` (patient-grouped, stratified), on
`--val-fraction` of the patients, or on labels.csv's `val` split. Checkpoints go to
`<out>.checkpoints/`; running the same command again after a crash or Ctrl-C resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mlworker.cli._shared import fail
from mlworker.data import CaseSet, DataError, kfold_splits, load_qata_folder, train_val_split

VAL_SPLITS = {"val", "valid", "validation"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="QaTa-COV19-layout folder")
    parser.add_argument("--out", required=True, type=Path, help="trained model file (.keras)")
    parser.add_argument("--arch", default="unet", help="unet, unetpp or dla (default: unet)")
    parser.add_argument("--encoder", default="densenet121", help="encoder (default: densenet121)")
    parser.add_argument("--encoder-weights", default=None, help="imagenet, chexnet or a file")
    parser.add_argument("--frozen", action="store_true", help="freeze the encoder")
    parser.add_argument("--size", type=int, default=224, help="working resolution (default 224)")
    parser.add_argument("--epochs", type=int, default=50, help="default 50")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, help="k of a patient-grouped k-fold split")
    parser.add_argument("--fold", type=int, help="which fold (0..k-1) to validate on")
    parser.add_argument("--val-fraction", type=float, help="hold out this share of patients")
    parser.add_argument("--no-augment", action="store_true", help="no shift/rotation")
    parser.add_argument(
        "--no-balance", action="store_true", help="do not repeat COVID-19 cases up to the controls"
    )


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, before anything is read or written."""
    if args.out.suffix != ".keras":
        return f"--out must end in .keras, got {args.out}"
    if not args.out.parent.is_dir():
        return f"the folder of --out does not exist: {args.out.parent}"
    if (args.folds is None) != (args.fold is None):
        return "--folds and --fold go together"
    if args.folds is not None and not 0 <= args.fold < args.folds:
        return f"--fold must lie in 0..{args.folds - 1}"
    if args.folds is not None and args.val_fraction is not None:
        return "choose --folds/--fold or --val-fraction, not both"
    if min(args.size, args.epochs, args.batch) < 1:
        return "--size, --epochs and --batch must be positive"
    return None


def split(cases: CaseSet, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) positions into `cases`."""
    strata = [label or "unknown" for label in cases.labels]
    everything = np.arange(len(cases))
    if args.folds is not None:
        return kfold_splits(strata, cases.patients, args.folds, args.seed)[args.fold]
    if args.val_fraction is not None:
        return train_val_split(
            strata, cases.patients, val_fraction=args.val_fraction, seed=args.seed
        )
    val = np.array([s in VAL_SPLITS for s in cases.splits])
    if val.any() and not val.all():
        return everything[~val], everything[val]
    return everything, everything[:0]


def run(args: argparse.Namespace) -> int:
    problem = check_args(args)
    if problem:
        return fail(problem)
    try:
        with tqdm(desc="reading", unit="img", disable=None, leave=False) as bar:

            def advance(done: int, total: int) -> None:
                bar.total = total
                bar.update(1)

            cases = load_qata_folder(args.data, size=args.size, progress=advance)
        cases = cases.subset(np.flatnonzero(cases.labelled))
        if len(cases) == 0:
            return fail(
                f"no labelled cases in {args.data} (no masks in Ground-truths/, no controls)"
            )
        train_pos, val_pos = split(cases, args)
    except DataError as exc:
        return fail(str(exc))

    from mlworker.augment import balance_by_augmentation
    from mlworker.train import CheckpointMismatch, train_segmenter

    train_set = cases.subset(train_pos)
    indices = None
    controls = np.flatnonzero(train_set.is_control)
    if not args.no_balance and len(controls):
        indices = balance_by_augmentation(
            np.flatnonzero(~train_set.is_control), controls, seed=args.seed
        )
    config = {
        "arch": args.arch,
        "encoder": args.encoder,
        "input_shape": (args.size, args.size, 3),
        "encoder_weights": args.encoder_weights,
        "frozen": args.frozen,
    }
    val_data = (cases.images[val_pos], cases.masks[val_pos]) if len(val_pos) else None
    n_train = len(train_set) if indices is None else len(indices)
    print(
        f"training {args.arch}/{args.encoder} at {args.size}px on {n_train} cases "
        f"({len(train_set)} distinct), validating on {len(val_pos)}",
        file=sys.stderr,
    )
    ckpt_dir = args.out.with_suffix(".checkpoints")
    bar = tqdm(unit="batch", disable=None)

    def report(event: dict) -> None:
        if event["event"] == "batch":
            if event["batch"] == 1:
                bar.reset(total=event["batches"])
                bar.set_description(f"epoch {event['epoch']}/{event['epochs']}")
            bar.update(1)
            bar.set_postfix(loss=f"{event['loss']:.4f}", dice=f"{event.get('dice', 0):.3f}")
        else:
            shown = [k for k in ("loss", "dice", "val_loss", "val_dice") if k in event]
            tqdm.write(
                f"epoch {event['epoch']}/{event['epochs']}: "
                + " ".join(f"{k} {event[k]:.4f}" for k in shown),
                file=sys.stderr,
            )

    try:
        result = train_segmenter(
            model_or_config=config,
            train_data=(train_set.images, train_set.masks),
            val_data=val_data,
            epochs=args.epochs,
            batch_size=args.batch,
            lr=args.lr,
            seed=args.seed,
            checkpoint_dir=ckpt_dir,
            progress=report,
            augment=not args.no_augment,
            train_indices=indices,
        )
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted; run the same command again to resume from {ckpt_dir}", file=sys.stderr)
        return 130
    except (CheckpointMismatch, ValueError) as exc:
        bar.close()
        return fail(str(exc))
    bar.close()

    tmp = args.out.with_name(f".tmp-{args.out.name}")
    shutil.copyfile(result.best_path, tmp)
    os.replace(tmp, args.out)
    names = sorted(train_set.names)
    info = {
        "config": config,
        "epochs": result.epochs_done,
        "batch_size": args.batch,
        "lr": args.lr,
        "seed": args.seed,
        "folds": args.folds,
        "fold": args.fold,
        "train_cases": len(train_set),
        "train_controls": len(controls),
        "train_positions": n_train,  # with COVID-19 repeats when balanced against controls
        "val_cases": int(len(val_pos)),
        "train_set_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
        "history": result.history,
    }
    args.out.with_suffix(".json").write_text(json.dumps(info, indent=1))
    print(
        f"wrote {args.out} (epoch {result.epochs_done}); checkpoints in {ckpt_dir}", file=sys.stderr
    )
    return 0
