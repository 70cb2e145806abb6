"""The networks by name: canonical architecture and encoder names, how people write them, and
the checks of a network choice (architecture, encoder, input size, training numbers).

The one place both sides take these from: mlworker.nets builds what is named here, and the
review application's forms, screens, reports and stage/detector settings show and check the
same names. Plain Python, no numpy and no Keras, so the web process can import it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

ARCHS: tuple[str, ...] = ("unet", "unetpp", "dla")
ARCH_LABELS = {"unet": "U-Net", "unetpp": "UNet++", "dla": "DLA"}
# The paper's four backbones, then two trained from scratch (no pretrained weights exist):
# slim for CPU-only sites, tiny for tests and demos.
ENCODER_LABELS = {
    "densenet121": "DenseNet-121",
    "chexnet": "CheXNet",
    "inceptionv3": "Inception-v3",
    "resnet50": "ResNet-50",
    "slim": "Slim",
    "tiny": "Tiny",
}
ENCODERS: tuple[str, ...] = tuple(ENCODER_LABELS)
PAPER_ENCODERS: tuple[str, ...] = ENCODERS[:4]
FROM_SCRATCH: tuple[str, ...] = ("slim", "tiny")
# What a person choosing an encoder should know beyond its name.
ENCODER_NOTES = {"slim": "from scratch, CPU", "tiny": "tests, demos"}
# The click-refinement network (mlworker.interactive): one architecture, trained from scratch.
INTERACTIVE = "interactive"
INTERACTIVE_LABEL = "Click refinement (small U-Net)"
# A detector made of a run's networks of one fold (mlworker.detection.ensemble).
ENSEMBLE = "ensemble"
ENSEMBLE_ENCODER = "mean"
ENSEMBLE_LABEL = "Ensemble · mean probability"
# The encoders downsample 32×; Inception-v3's valid-padded stem needs a larger input.
SIZE_MULTIPLE = 32
INCEPTION_MIN_SIZE = 96


def network_label(arch: str, encoder: str) -> str:
    """How screens and reports name a network: "U-Net · DenseNet-121"."""
    if arch == ENSEMBLE:
        return ENSEMBLE_LABEL
    return f"{ARCH_LABELS.get(arch, arch)} · {ENCODER_LABELS.get(encoder, encoder)}"


def encoder_label(encoder: str) -> str:
    return ENCODER_LABELS.get(encoder, encoder)


def network_choices(*, encoder_major: bool = False) -> list[tuple[str, str]]:
    """("arch/encoder", label) for every network, for a form; by encoder first if asked."""
    pairs = (
        [(a, e) for e in ENCODERS for a in ARCHS]
        if encoder_major
        else [(a, e) for a in ARCHS for e in ENCODERS]
    )
    choices = []
    for arch, encoder in pairs:
        note = f" ({ENCODER_NOTES[encoder]})" if encoder in ENCODER_NOTES else ""
        choices.append((f"{arch}/{encoder}", f"{network_label(arch, encoder)}{note}"))
    return choices


def _canonical(text: str) -> str:
    return re.sub(r"[\s_\-]", "", str(text).lower()).replace("++", "pp")


def resolve_name(value: str, valid: tuple[str, ...], what: str) -> str:
    """'DenseNet-121' -> 'densenet121', 'UNet++' -> 'unetpp'; unknown -> ValueError listing the valid ones."""
    key = _canonical(value)
    if key in valid:
        return key
    raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


def whole_number(
    config: dict, key: str, low: int, high: int, error: Callable[[str], Exception]
) -> int:
    """config[key] when it is a whole number from low to high, else `error` saying so."""
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise error(f"{key} must be a whole number from {low} to {high}, not {value!r}")
    return value


def check_networks(networks: Any, error: Callable[[str], Exception]) -> list[dict[str, Any]]:
    """At least one network, each a known architecture with a known encoder; else
    `error(message)`. Stage settings and detector launches check their networks with this."""
    if not isinstance(networks, list) or not networks:
        raise error("choose at least one network")
    for net in networks:
        if (
            not isinstance(net, dict)
            or net.get("arch") not in ARCHS
            or net.get("encoder") not in ENCODERS
        ):
            raise error(
                f"a network is an architecture ({', '.join(ARCHS)}) with an encoder "
                f"({', '.join(ENCODERS)}), not {net!r}"
            )
    return networks


def check_training(
    config: dict[str, Any], networks: list[dict[str, Any]], error: Callable[[str], Exception]
) -> None:
    """epochs, batch_size and an image_size every chosen network can take; else
    `error(message)`."""
    whole_number(config, "epochs", 1, 1000, error)
    whole_number(config, "batch_size", 1, 512, error)
    size = whole_number(config, "image_size", 32, 2048, error)
    if size % SIZE_MULTIPLE:
        raise error(
            f"image_size must be a multiple of {SIZE_MULTIPLE} "
            f"(the encoders downsample {SIZE_MULTIPLE}×), not {size}"
        )
    if any(n["encoder"] == "inceptionv3" for n in networks) and size < INCEPTION_MIN_SIZE:
        raise error(f"Inception-v3 needs image_size of at least {INCEPTION_MIN_SIZE}")
