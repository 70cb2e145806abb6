"""Stage settings: the paper's presets, a fast CPU demo, and validation of custom settings."""

from __future__ import annotations

from typing import Any

ARCHS = ("unet", "unetpp", "dla")
# slim and tiny train from scratch (no pretrained weights): slim for CPU-only sites, tiny for
# tests and demos.
ENCODERS = ("densenet121", "chexnet", "inceptionv3", "resnet50", "slim", "tiny")
MODES = ("pairwise", "nway")

PRESETS: dict[str, dict[str, Any]] = {
    # Stage I of the paper: three networks, 5-fold cross-validation on the manual subset,
    # out-of-fold predictions, pairwise review against the manual mask.
    "paper-stage-1": {
        "mode": "pairwise",
        "networks": [
            {"arch": "unet", "encoder": "densenet121"},
            {"arch": "unetpp", "encoder": "densenet121"},
            {"arch": "dla", "encoder": "densenet121"},
        ],
        "frozen": False,
        "epochs": 50,
        "batch_size": 32,
        "image_size": 224,
        "folds": 5,
        "readers_per_case": 1,
        "learning_rate": 1e-4,
        "augment": True,
    },
    # Stage II: five networks trained on every accepted mask, predicting every COVID-19 case
    # still without one; five-way review.
    "paper-stage-2": {
        "mode": "nway",
        "networks": [
            {"arch": "unet", "encoder": "densenet121"},
            {"arch": "unetpp", "encoder": "densenet121"},
            {"arch": "dla", "encoder": "densenet121"},
            {"arch": "unet", "encoder": "inceptionv3"},
            {"arch": "unetpp", "encoder": "inceptionv3"},
        ],
        "frozen": False,
        "epochs": 50,
        "batch_size": 32,
        "image_size": 224,
        "folds": 1,
        "readers_per_case": 1,
        "learning_rate": 1e-4,
        "augment": True,
    },
    # Small images and tiny encoders: the whole loop completes on a laptop CPU in minutes.
    "fast-cpu": {
        "mode": "pairwise",
        "networks": [
            {"arch": "unet", "encoder": "tiny"},
            {"arch": "unetpp", "encoder": "tiny"},
            {"arch": "dla", "encoder": "tiny"},
        ],
        "frozen": False,
        "epochs": 3,
        "batch_size": 8,
        "image_size": 64,
        "folds": 2,
        "readers_per_case": 1,
        "learning_rate": 1e-3,
        "augment": True,
    },
}
# fast-cpu for Stage II and later: five tiny networks (two architectures twice, with other
# seeds, so they disagree), five-way review.
PRESETS["fast-cpu-nway"] = {
    **PRESETS["fast-cpu"],
    "mode": "nway",
    "folds": 1,
    "networks": [
        *PRESETS["fast-cpu"]["networks"],
        {"arch": "unet", "encoder": "tiny", "seed": 1},
        {"arch": "dla", "encoder": "tiny", "seed": 1},
    ],
}


class StageConfigError(ValueError):
    """Stage settings that cannot work; the message says which and why."""


def _int(config: dict, key: str, low: int, high: int) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise StageConfigError(f"{key} must be a whole number from {low} to {high}, not {value!r}")
    return value


def stage_config_validate(config: dict[str, Any]) -> dict[str, Any]:
    """A complete, checked copy of stage settings (defaults from fast-cpu where missing)."""
    merged = {**PRESETS["fast-cpu"], **config}
    if merged["mode"] not in MODES:
        raise StageConfigError(f"mode must be one of {', '.join(MODES)}, not {merged['mode']!r}")
    networks = merged["networks"]
    if not isinstance(networks, list) or not networks:
        raise StageConfigError("choose at least one network")
    for net in networks:
        if (
            not isinstance(net, dict)
            or net.get("arch") not in ARCHS
            or net.get("encoder") not in ENCODERS
        ):
            raise StageConfigError(
                f"a network is an architecture ({', '.join(ARCHS)}) with an encoder "
                f"({', '.join(ENCODERS)}), not {net!r}"
            )
    if merged["mode"] == "nway" and not 2 <= len(networks) <= 6:
        raise StageConfigError("an N-way stage needs 2 to 6 networks (five in the paper)")
    _int(merged, "epochs", 1, 1000)
    _int(merged, "batch_size", 1, 512)
    size = _int(merged, "image_size", 32, 2048)
    if size % 32:
        raise StageConfigError(
            f"image_size must be a multiple of 32 (the encoders downsample 32×), not {size}"
        )
    if any(n["encoder"] == "inceptionv3" for n in networks) and size < 96:
        raise StageConfigError("Inception-v3 needs image_size of at least 96")
    _int(merged, "folds", 1, 20)
    if merged["mode"] == "pairwise" and merged["folds"] < 2:
        raise StageConfigError(
            "Stage I needs at least 2 folds: each case is predicted by networks that never saw it"
        )
    _int(merged, "readers_per_case", 1, 10)
    lr = merged.get("learning_rate")
    if not isinstance(lr, int | float) or not 0 < lr < 1:
        raise StageConfigError(f"learning_rate must be between 0 and 1, not {lr!r}")
    merged["frozen"] = bool(merged.get("frozen"))
    merged["augment"] = bool(merged.get("augment", True))
    return merged
