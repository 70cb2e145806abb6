"""How good the demo's candidates are: its Stage I and II trained as the worker trains them,
scored against the phantoms' hidden truth.

    .venv/bin/python bench/demo_quality.py         # the demo's presets (demo-stage-1, -2)
    .venv/bin/python bench/demo_quality.py --stage1 fast-cpu --stage2 fast-cpu-nway  # scratch
    .venv/bin/python bench/demo_quality.py --quick   # the U-Net only
    .venv/bin/python bench/demo_quality.py --epochs 60 --size 128 --networks unet

The cohort is `collabmask demo`'s (seed 2021, 40 COVID-19 + 20 controls at 256², a third of
the COVID-19 cases with the simulated hurried reader's manual mask). Stage I: each network in
k-fold cross-validation over the manual cases (folds grouped by patient), predicting the fold
it did not see. Stage II: each network trained on the manual cases' masks (standing in for
what readers accepted in Stage I, here the manual masks themselves: no better than the
reader who drew them), predicting every other COVID-19 case. Candidates are thresholded at
0.5 at 256², as the worker stores them. Prints pixel F1 (pooled over the stage's cases)
against the hidden truth for each network, and the manual masks' own F1: the ceiling of
learning from them. Training uses the stage's settings (mlworker.train.train_segmenter); the
demo presets start from the demo's start weights (mlworker.demo_weights: phantoms of another
seed, their true masks), made once under var/bench-cache/demo-start-weights and timed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import CACHE_DIR, log  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seed", type=int, default=2021, help="the demo cohort's seed")
    p.add_argument("--covid", type=int, default=40)
    p.add_argument("--control", type=int, default=20)
    p.add_argument(
        "--stage1", default="demo-stage-1", help="Stage I preset (fast-cpu: from scratch)"
    )
    p.add_argument("--stage2", default="demo-stage-2", help="Stage II preset (fast-cpu-nway)")
    p.add_argument("--networks", help="comma-separated archs instead of the preset's")
    p.add_argument("--encoder", help="instead of the preset's")
    p.add_argument("--epochs", type=int)
    p.add_argument("--size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch", type=int)
    p.add_argument("--folds", type=int)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--start-weights", help="a folder of start weights instead of the preset's")
    p.add_argument("--stages", default="1,2")
    p.add_argument(
        "--weights-dir",
        type=Path,
        default=CACHE_DIR / "demo-start-weights",
        help="where the demo's start weights are made and kept",
    )
    p.add_argument("--quick", action="store_true", help="the U-Net only (the test's run)")
    args = p.parse_args(argv)
    if args.quick and not args.networks:
        args.networks = "unet"
    return args


def pooled_f1(preds, truths) -> float:
    tp = sum(int((p & t).sum()) for p, t in zip(preds, truths, strict=True))
    wrong = sum(int((p ^ t).sum()) for p, t in zip(preds, truths, strict=True))
    return 2 * tp / max(2 * tp + wrong, 1)


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


def run(args: argparse.Namespace) -> dict[str, float]:
    """Pixel F1 against the hidden truth of each candidate network ("I unet", "II dla/1")."""
    from annotation.presets import PRESETS
    from mlworker.data import kfold_splits
    from mlworker.phantoms import generate_cohort

    stage1, stage2 = dict(PRESETS[args.stage1]), dict(PRESETS[args.stage2])
    for config in (stage1, stage2):
        for key, value in (
            ("epochs", args.epochs),
            ("image_size", args.size),
            ("learning_rate", args.lr),
            ("batch_size", args.batch),
        ):
            if value is not None:
                config[key] = value
        if args.no_augment:
            config["augment"] = False
        nets = [dict(n) for n in config["networks"]]
        if args.networks:
            nets = [{"arch": a, "encoder": nets[0]["encoder"]} for a in args.networks.split(",")]
        if args.encoder:
            nets = [{**n, "encoder": args.encoder} for n in nets]
        config["networks"] = nets
    if args.folds:
        stage1["folds"] = args.folds

    cases = generate_cohort(seed=args.seed, n_covid=args.covid, n_control=args.control, size=256)
    covid = [c for c in cases if c.label == "covid"]
    manual = [c for c in covid if c.has_manual]
    rest = [c for c in covid if not c.has_manual]
    log(
        f"cohort seed {args.seed}: {len(covid)} COVID-19 ({len(manual)} with a manual mask), "
        f"{args.control} controls"
    )
    ceiling = pooled_f1([c.manual_mask for c in manual], [c.true_mask for c in manual])
    log(f"manual masks vs hidden truth: pixel F1 {ceiling:.3f} (the ceiling of learning from them)")

    if args.start_weights is not None:
        stage1["start_weights"] = stage2["start_weights"] = args.start_weights
    weights_dir = None
    start = stage1.get("start_weights") or stage2.get("start_weights")
    if start == "demo":
        from mlworker.demo_weights import demo_start_weights

        t0 = time.monotonic()
        weights_dir = args.weights_dir
        archs = sorted({n["arch"] for n in stage1["networks"] + stage2["networks"]})
        encoder = stage1["networks"][0]["encoder"]
        demo_start_weights(
            weights_dir, avoid_seed=args.seed, log=log, archs=archs, encoder=encoder,
            image_size=stage1["image_size"],
        )  # fmt: skip
        log(f"start weights ready in {time.monotonic() - t0:.0f} s")
    elif start:
        weights_dir = Path(start)

    results = {}
    stages = {int(s) for s in args.stages.split(",")}
    if 1 in stages:
        folds = kfold_splits(
            [1] * len(manual), [c.patient_id for c in manual], k=stage1["folds"], seed=1
        )
        t0 = time.monotonic()
        for net in stage1["networks"]:
            preds: list[np.ndarray] = [None] * len(manual)
            for train, held in folds:
                probs = _train_predict(
                    stage1, net, [manual[i] for i in train], [manual[i] for i in held], weights_dir
                )
                for i, prob in zip(held, probs, strict=True):
                    preds[i] = prob >= 0.5
            f1 = pooled_f1(preds, [c.true_mask for c in manual])
            results[f"I {net['arch']}"] = f1
            log(f"Stage I  {net['arch']:<7} seed {net.get('seed', 0)}: pixel F1 {f1:.3f}")
        log(f"Stage I training + prediction: {time.monotonic() - t0:.0f} s")
    if 2 in stages:
        t0 = time.monotonic()
        for net in stage2["networks"]:
            probs = _train_predict(stage2, net, manual, rest, weights_dir)
            f1 = pooled_f1([p >= 0.5 for p in probs], [c.true_mask for c in rest])
            results[f"II {net['arch']}/{net.get('seed', 0)}"] = f1
            log(f"Stage II {net['arch']:<7} seed {net.get('seed', 0)}: pixel F1 {f1:.3f}")
        log(f"Stage II training + prediction: {time.monotonic() - t0:.0f} s")
    if results:
        log(
            f"lowest candidate F1 {min(results.values()):.3f}, mean {np.mean(list(results.values())):.3f}"
        )
    return results


def _train_predict(config, net, train_cases, predict_cases, weights_dir):
    from PIL import Image

    from mlworker.predict import predict_probabilities
    from mlworker.train import train_segmenter

    size = config["image_size"]

    def small(a, mode):
        return np.asarray(Image.fromarray(a).resize((size, size), mode))

    images = np.stack([small(c.image, Image.Resampling.BILINEAR) for c in train_cases])
    masks = np.stack(
        [
            small(c.manual_mask.astype(np.uint8) * 255, Image.Resampling.NEAREST) > 127
            for c in train_cases
        ]
    )
    model_config = {"arch": net["arch"], "encoder": net["encoder"], "input_shape": (size, size, 3)}
    if weights_dir is not None and config.get("start_weights"):
        from mlworker.demo_weights import weights_file_name

        model_config["start_weights"] = str(
            weights_dir / weights_file_name(net["arch"], net["encoder"], size)
        )
    result = train_segmenter(
        model_or_config=model_config,
        train_data=(images, masks),
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        lr=config["learning_rate"],
        seed=int(net.get("seed", 0)),
        augment=config["augment"],
    )
    return predict_probabilities(result.model, [np.asarray(c.image) for c in predict_cases])


if __name__ == "__main__":
    raise SystemExit(main())
