"""`python -m mlworker evaluate`: score a trained network on a QaTa-COV19-layout folder.

Writes to OUT:
  metrics.json        pixel sensitivity, specificity, precision, F1 (= Dice), F2, IoU, accuracy
                      with 95 % CIs, mean per-image Dice, pixel ROC AUC / AP; with controls
                      present also case detection (COVID-19 when any pixel ≥ threshold)
  per_image.csv       Dice, confusion counts and max probability per case
  pixel_roc, pixel_pr, pixel_confusion (.png/.svg), and case_* when controls are present
  gallery.png         infection maps of the best, median and worst cases by Dice
  gallery/*.png       those infection maps at full working resolution

Cases: every image with a mask in Ground-truths/ (COVID-19), every control named in
labels.csv (empty mask), and COVID-19 cases of labels.csv without a mask (detection only).
Images with neither mask nor label are left out and counted. `--truth DIR` reads the masks
from DIR/mask_<name> instead (e.g. a phantom cohort's hidden-truth/).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from mlworker.cli._shared import fail, load_trained_model, read_folder
from mlworker.data import COVID_LABELS, DataError, mask_file, read_mask


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="trained model (.keras)")
    parser.add_argument("--data", required=True, type=Path, help="QaTa-COV19-layout folder")
    parser.add_argument("--out", required=True, type=Path, help="report folder")
    parser.add_argument(
        "--size",
        type=int,
        help="evaluation resolution (default: the model's input size; e.g. 224 scores a "
        "128-pixel model against 224-pixel masks)",
    )
    parser.add_argument(
        "--names", type=Path, help="file with one image name per line (e.g. splits/valid.txt)"
    )
    parser.add_argument("--truth", type=Path, help="folder of mask_<name> files to score against")
    parser.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--threshold", type=float, default=0.5, help="mask threshold (0.5)")
    parser.add_argument(
        "--mirror",
        action="store_true",
        help="test-time augmentation: average each map with the left-right mirrored image's",
    )
    parser.add_argument(
        "--gallery", type=int, default=3, help="cases per gallery row: best, median, worst (3)"
    )


def read_names(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"--names: no file at {path}")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [name for name in names if name and not name.startswith("#")]
    if not names:
        raise DataError(f"--names: {path} lists no image names")
    if len(set(names)) != len(names):
        raise DataError(f"--names: {path} lists an image more than once")
    return names


def select_cases(cases, truth: Path | None):
    """(cases kept, is_covid, has_mask, left out) from a CaseSet, masks from `truth` if given."""
    is_control = cases.is_control
    has_mask = cases.labelled & ~is_control
    if truth is not None:
        size = cases.images.shape[1:3]
        has_mask = np.zeros(len(cases), bool)
        for i, name in enumerate(cases.names):
            path = mask_file(truth, name)
            if path is not None:
                cases.masks[i] = read_mask(path, size)
                has_mask[i] = not is_control[i]
            elif not is_control[i] and cases.labelled[i]:
                raise DataError(f"--truth: no mask for {name} in {truth}")
        if (cases.masks[is_control]).any():
            raise DataError("--truth gives a control a non-empty infection mask")
    said_covid = np.array([label in COVID_LABELS for label in cases.labels], dtype=bool)
    is_covid = (has_mask | said_covid) & ~is_control
    keep = np.flatnonzero(is_covid | is_control)
    return cases.subset(keep), is_covid[keep], has_mask[keep], len(cases) - len(keep)


def _check(args: argparse.Namespace) -> str | None:
    if not args.model.is_file():
        return f"no model file at {args.model}"
    if not args.data.is_dir():
        return f"{args.data} is not a folder"
    if args.truth is not None and not args.truth.is_dir():
        return f"--truth {args.truth} is not a folder"
    if args.out.resolve() == args.data.resolve():
        return "--out must differ from --data"
    if args.batch < 1 or (args.size is not None and args.size < 1) or args.gallery < 0:
        return "--batch and --size must be positive, --gallery 0 or more"
    if not 0 < args.threshold < 1:
        return f"--threshold must lie in (0, 1), got {args.threshold}"
    return None


def run(args: argparse.Namespace) -> int:
    problem = _check(args)
    if problem:
        return fail(problem)
    try:
        names = read_names(args.names) if args.names is not None else None
    except DataError as exc:
        return fail(str(exc))

    import keras
    from tqdm import tqdm

    from mlworker.evaluate import evaluate_probabilities, predict_cases
    from mlworker.evaluate_report import summary_lines, write_report
    from mlworker.predict import model_input_size

    try:
        model, size = load_trained_model(args.model, args.size)
        cases = read_folder(args.data, size, names)
        cases, is_covid, has_mask, left_out = select_cases(cases, args.truth)
        if not has_mask.any():
            raise DataError(
                f"no COVID-19 case with a ground-truth mask in {args.data}"
                + (f" (read from {args.truth})" if args.truth else "")
            )
    except DataError as exc:
        return fail(str(exc))

    started = time.perf_counter()
    with tqdm(total=len(cases), desc="predicting", unit="img", disable=None) as bar:
        probs = predict_cases(
            model,
            cases.images,
            batch_size=args.batch,
            progress=lambda event: bar.update(event["done"] - bar.n),
            mirror=args.mirror,
        )
    seconds = time.perf_counter() - started
    evaluation = evaluate_probabilities(
        names=cases.names,
        masks=cases.masks,
        probs=probs,
        is_covid=is_covid,
        has_mask=has_mask,
        threshold=args.threshold,
        gallery_per_group=args.gallery,
    )
    context = {
        "model": str(args.model),
        "data": str(args.data),
        "names_file": None if args.names is None else str(args.names),
        "truth": None if args.truth is None else str(args.truth),
        "size": int(size),
        "model_input_size": list(model_input_size(model) or []),
        "backend": keras.config.backend(),
        "left_out_unlabelled": int(left_out),
        "mirror": bool(args.mirror),
        "predict_seconds": round(seconds, 3),
    }
    try:
        write_report(
            evaluation,
            args.out,
            images=cases.images,
            masks=cases.masks,
            probs=probs,
            context=context,
        )
    except OSError as exc:
        return fail(f"cannot write to {args.out}: {exc}")
    for line in summary_lines(evaluation):
        print(line)
    note = f"; {left_out} unlabelled images left out" if left_out else ""
    print(f"wrote {args.out}/metrics.json and figures ({len(cases)} cases at {size}px{note})")
    return 0
