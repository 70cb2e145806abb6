"""Stage settings: the paper's presets, a fast CPU demo, and validation of custom settings."""

from __future__ import annotations

from typing import Any

from mlworker.networks import check_networks, check_training, whole_number

MODES = ("pairwise", "nway")
# Optional extra candidates made from the stage's network masks (annotation.services.
# consensus_masks), off unless a stage asks for them.
COMBINED_CANDIDATES = ("staple", "ensemble")
# The order readers are given cases in (annotation.models.Stage.QueueOrder).
QUEUE_ORDERS = ("random", "informative", "dataset")
# Review settings every stage has unless it says otherwise: today's random queue, and no
# case accepted without a reader.
REVIEW_DEFAULTS: dict[str, Any] = {
    "queue_order": "random",
    # Accept a case without a reader when every pair of its candidates has Dice ≥ threshold
    # (a case with one distinct candidate agrees); `audit_share` of those go to readers anyway.
    "auto_accept": False,
    "agreement_threshold": 0.95,
    "audit_share": 0.05,
}

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
        "queue_order": "random",
        "auto_accept": False,
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
        "queue_order": "random",
        "auto_accept": False,
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

# The demo's stages: fast-cpu, started from networks trained on phantoms of another seed
# (mlworker.demo_weights: the demo's stand-in for ImageNet or a previous study), and so
# fine-tuned at a tenth of the learning rate. From random weights, a dozen manual masks
# give candidates that are mostly noise (bench/demo_quality.py).
DEMO_START_WEIGHTS = "demo"
PRESETS["demo-stage-1"] = {
    **PRESETS["fast-cpu"],
    "learning_rate": 1e-4,
    "start_weights": DEMO_START_WEIGHTS,
}
PRESETS["demo-stage-2"] = {
    **PRESETS["fast-cpu-nway"],
    "learning_rate": 1e-4,
    "start_weights": DEMO_START_WEIGHTS,
}


class StageConfigError(ValueError):
    """Stage settings that cannot work; the message says which and why."""


def _int(config: dict, key: str, low: int, high: int) -> int:
    return whole_number(config, key, low, high, StageConfigError)


def stage_config_validate(config: dict[str, Any]) -> dict[str, Any]:
    """A complete, checked copy of stage settings (defaults from fast-cpu where missing)."""
    merged = {**REVIEW_DEFAULTS, **PRESETS["fast-cpu"], **config}
    if merged["mode"] not in MODES:
        raise StageConfigError(f"mode must be one of {', '.join(MODES)}, not {merged['mode']!r}")
    networks = check_networks(merged["networks"], StageConfigError)
    if merged["mode"] == "nway" and not 2 <= len(networks) <= 6:
        raise StageConfigError("an N-way stage needs 2 to 6 networks (five in the paper)")
    check_training(merged, networks, StageConfigError)
    _int(merged, "folds", 1, 20)
    if merged["mode"] == "pairwise" and merged["folds"] < 2:
        raise StageConfigError(
            "Stage I needs at least 2 folds: each case is predicted by networks that never saw it"
        )
    _int(merged, "readers_per_case", 1, 10)
    lr = merged.get("learning_rate")
    if not isinstance(lr, int | float) or not 0 < lr < 1:
        raise StageConfigError(f"learning_rate must be between 0 and 1, not {lr!r}")
    if merged["queue_order"] not in QUEUE_ORDERS:
        raise StageConfigError(
            f"queue_order must be one of {', '.join(QUEUE_ORDERS)}, not {merged['queue_order']!r}"
        )
    if not isinstance(merged["auto_accept"], bool):
        raise StageConfigError(f"auto_accept must be true or false, not {merged['auto_accept']!r}")
    for key, low in (("agreement_threshold", 0.5), ("audit_share", 0.0)):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= 1:
            raise StageConfigError(f"{key} must be a number from {low} to 1, not {value!r}")
        merged[key] = float(value)
    # Where each network starts: "" random weights; "demo" the demo's phantom-trained
    # networks; else a folder on the workers holding {arch}-{encoder}-{image_size}.keras.
    start = merged.get("start_weights", "")
    if not isinstance(start, str):
        raise StageConfigError(f"start_weights is a folder name or empty, not {start!r}")
    merged["start_weights"] = start.strip()
    merged["frozen"] = bool(merged.get("frozen"))
    merged["augment"] = bool(merged.get("augment", True))
    for extra in COMBINED_CANDIDATES:
        value = merged.get(extra, False)
        if not isinstance(value, bool):
            raise StageConfigError(f"{extra} is true or false, not {value!r}")
        merged[extra] = value
    extras = sum(merged[extra] for extra in COMBINED_CANDIDATES)
    if merged["mode"] == "nway" and len(networks) + extras > 6:
        raise StageConfigError(
            f"{len(networks)} networks and {extras} combined candidate(s) are more than the "
            "6 masks an N-way screen shows"
        )
    if extras and len(networks) < 2:
        raise StageConfigError("STAPLE and ensemble candidates combine two or more networks")
    # Every candidate's outline redrawn in one style (cxrio.outline), so readers cannot tell
    # manual from network masks by their outlines. On unless a stage turns it off.
    merged["normalise_outlines"] = bool(merged.get("normalise_outlines", True))
    return merged
