"""The demo's start weights: each network of the fast CPU stages trained on phantoms of
another seed with their exact masks.

Real projects start Stage I from networks that already know something: ImageNet or CheXNet
encoders, or the networks of a previous study. The `tiny` encoder of the fast CPU presets
has no such weights, and a dozen manual masks cannot teach a network from random weights
to find ground glass in a few CPU minutes (bench/demo_quality.py: pixel F1 near 0 against
the hidden truth). So the demo plays the previous study: `demo_start_weights` trains each
network on phantoms of a seed the demo cohort does not use, with their true masks, and the
demo's stages start from those files (stage setting `start_weights`). The demo cohort's own
hidden truth is never trained on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# Phantoms of this seed stand in for the previous study; the demo cohort uses another.
PRETRAIN_SEED = 7
DEFAULTS: dict[str, Any] = {
    "archs": ("unet", "unetpp", "dla"),
    "encoder": "tiny",
    "image_size": 64,
    "n_covid": 150,
    "n_control": 50,
    "epochs": 30,
    "batch_size": 8,
    "learning_rate": 3e-3,
}
MANIFEST = "manifest.json"


def weights_file_name(arch: str, encoder: str, image_size: int) -> str:
    """The file a start-weights folder holds for one network at one input size."""
    return f"{arch}-{encoder}-{image_size}.keras"


def _phantom_arrays(seed: int, n_covid: int, n_control: int, size: int):
    from PIL import Image

    from mlworker.phantoms import generate_cohort

    cases = generate_cohort(seed=seed, n_covid=n_covid, n_control=n_control, size=256)

    def small(array: np.ndarray, resample) -> np.ndarray:
        return np.asarray(Image.fromarray(array).resize((size, size), resample))

    # As the worker loads a case: the 256² image resized bilinearly, the mask nearest.
    images = np.stack([small(c.image, Image.Resampling.BILINEAR) for c in cases])
    masks = np.stack(
        [small(c.true_mask.astype(np.uint8), Image.Resampling.NEAREST) > 0 for c in cases]
    )
    return images, masks


def demo_start_weights(
    folder: str | os.PathLike,
    *,
    seed: int = PRETRAIN_SEED,
    avoid_seed: int | None = None,
    log: Callable[[str], None] = print,
    **settings: Any,
) -> dict[str, Path]:
    """One start-weights file per network in `folder` ({arch: path}); files already there
    (from the same settings) are kept, so a second call trains nothing.

    `avoid_seed` is the demo cohort's seed: training on it would leak its hidden truth.
    """
    from mlworker.train import build_for_training, fit_segmenter

    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown start-weights settings: {', '.join(sorted(unknown))}")
    if avoid_seed is not None and seed == avoid_seed:
        raise ValueError(f"start weights must come from phantoms of another seed than {seed}")
    config = {**DEFAULTS, **settings, "seed": seed}
    archs = list(config.pop("archs"))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / MANIFEST
    # What each file was made with: a file made with other settings is made anew.
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    size = config["image_size"]
    paths: dict[str, Path] = {}
    arrays = None
    for arch in archs:
        path = folder / weights_file_name(arch, config["encoder"], size)
        paths[arch] = path
        if path.is_file() and manifest.get(path.name, {}).get("settings") == config:
            continue
        if arrays is None:
            arrays = _phantom_arrays(seed, config["n_covid"], config["n_control"], size)
        started = time.monotonic()
        result = fit_segmenter(
            build=_cosine_build(arch, config, len(arrays[0]), build_for_training),
            config={"arch": arch, "encoder": config["encoder"], "image_size": size},
            train_data=arrays,
            epochs=config["epochs"],
            batch_size=config["batch_size"],
            lr=config["learning_rate"],
            seed=0,
        )
        tmp = path.with_name(f".tmp-{path.name}")
        result.model.save(tmp)
        os.replace(tmp, path)
        seconds = round(time.monotonic() - started, 1)
        manifest[path.name] = {
            "settings": config,
            "seconds": seconds,
            "final_loss": round(float(result.history["loss"][-1]), 4),
        }
        manifest_path.write_text(json.dumps(manifest, indent=1))
        log(
            f"start weights {path.name}: {config['epochs']} epochs on "
            f"{config['n_covid'] + config['n_control']} phantoms of seed {seed}, {seconds:.0f} s"
        )
    return paths


def _cosine_build(arch: str, config: dict[str, Any], n_cases: int, build_for_training):
    """The network compiled with the learning rate decaying from its peak to zero (cosine)."""
    import keras

    def build():
        model = build_for_training(
            {
                "arch": arch,
                "encoder": config["encoder"],
                "input_shape": (config["image_size"], config["image_size"], 3),
            },
            lr=config["learning_rate"],
            mixed_precision=False,
        )
        steps = config["epochs"] * -(-n_cases // config["batch_size"])
        schedule = keras.optimizers.schedules.CosineDecay(config["learning_rate"], steps)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=schedule),
            loss=model.loss,
            metrics=[keras.metrics.BinaryIoU(target_class_ids=[1], threshold=0.5, name="iou")],
        )
        return model

    return build
