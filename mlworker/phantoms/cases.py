"""One phantom case from a seed, and cohorts of them with patients, labels and manual subsets."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from mlworker.metrics import dice
from mlworker.phantoms._raster import F32
from mlworker.phantoms.anatomy import Anatomy, render_thorax
from mlworker.phantoms.imaging import draw_pose, expose
from mlworker.phantoms.lesions import CONTROL_FINDINGS, draw_ggo, render_control_finding, render_ggo
from mlworker.phantoms.manual import draw_manual_mask

GENERATOR_VERSION = "1"
LABELS = ("covid", "normal", "other")
FINDINGS = ("ggo", *CONTROL_FINDINGS)
MIN_SIZE = 32
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True, eq=False)
class PhantomCase:
    """One synthetic CXR with its hidden truth. Arrays are read-only."""

    name: str
    image: np.ndarray  # uint8 (size, size)
    true_mask: np.ndarray  # bool; the exact infection; all False for controls
    manual_mask: np.ndarray  # bool; the hurried reader's outline of it; all False for controls
    lung_mask: np.ndarray  # bool; the lung fields
    opacity: np.ndarray  # float32; the infection opacity added to the attenuation (0 off-mask)
    label: str  # "covid", "normal" or "other"
    finding: str | None  # "ggo", a control finding, or None for a normal control
    patient_id: str
    has_manual: bool  # whether the dataset ships manual_mask (a subset of COVID-19 cases)
    seed: int
    patient_seed: int
    params: Mapping[str, Any] = field(default_factory=dict)  # JSON-ready generation parameters

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    @property
    def manual_dice(self) -> float:
        return dice(self.manual_mask, self.true_mask)

    @property
    def infected_fraction(self) -> float:
        """Share of the lung fields that is infected (a severity score)."""
        return float(self.true_mask.sum()) / max(int(self.lung_mask.sum()), 1)


def derive_seed(seed: int, *key: int) -> int:
    """An independent 63-bit seed for the sub-stream `key` of `seed`."""
    words = np.random.SeedSequence(seed, spawn_key=key).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def patient_id_for(patient_seed: int) -> str:
    return f"PT-{derive_seed(patient_seed, 99) & 0xFFFFFFFFFF:010x}"


def _check_case_args(seed: int, size: int, label: str, finding: str | None) -> str | None:
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(size, int | np.integer) or size < MIN_SIZE:
        raise ValueError(f"size must be an integer of at least {MIN_SIZE} pixels, got {size!r}")
    if label not in LABELS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}; got {label!r}")
    if label == "covid":
        if finding not in (None, "ggo"):
            raise ValueError(f"a covid case shows ground glass ('ggo'), not {finding!r}")
        return "ggo"
    if label == "normal":
        if finding is not None:
            raise ValueError(f"a normal control has no finding, got {finding!r}")
        return None
    if finding is not None and finding not in CONTROL_FINDINGS:
        raise ValueError(
            f"an 'other' control shows one of {', '.join(CONTROL_FINDINGS)}; got {finding!r}"
        )
    return finding


def _json_ready(params: dict) -> dict:
    out = {}
    for k, v in params.items():
        if isinstance(v, float | np.floating):
            out[k] = round(float(v), 6)
        elif isinstance(v, np.integer | np.bool_):
            out[k] = v.item()
        else:
            out[k] = v
    return out


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def generate_case(
    *,
    seed: int,
    size: int = 256,
    label: str = "covid",
    finding: str | None = None,
    patient_seed: int | None = None,
    patient_id: str | None = None,
    name: str | None = None,
    has_manual: bool | None = None,
) -> PhantomCase:
    """One phantom CXR, fully determined by its arguments.

    `patient_seed` fixes the anatomy (two images of one patient share it); by default it is
    `seed`. Everything else (positioning, exposure, noise, lesions, the manual outline) comes
    from `seed`. The same seed with label "covid" and "normal" gives the same radiograph with
    and without the infection.
    """
    finding = _check_case_args(seed, size, label, finding)
    seed = int(seed)
    patient_seed = seed if patient_seed is None else int(patient_seed)
    pose_rng, exposure_rng, lesion_rng, finding_rng, manual_rng, noise_rng = (
        _rng(seed, k) for k in range(6)
    )
    anatomy = Anatomy.draw(_rng(patient_seed, 100))
    if label == "other" and finding is None:
        finding = CONTROL_FINDINGS[int(finding_rng.integers(len(CONTROL_FINDINGS)))]
    params: dict[str, Any] = {}
    if finding == "cardiomegaly":
        heart_scale = finding_rng.uniform(1.28, 1.45)
        anatomy = anatomy.with_heart_scale(heart_scale)
        params["heart_scale"] = heart_scale

    pose = draw_pose(pose_rng)
    x, y = pose.grid(size)
    params.update(
        {
            "shift_x": pose.shift_x,
            "shift_y": pose.shift_y,
            "scale": pose.scale,
            "rotation": pose.turn,
        }
    )
    thorax = render_thorax(x, y, anatomy, _rng(patient_seed, 101))
    att = thorax.attenuation
    opacity = np.zeros((size, size), dtype=F32)
    true_mask = np.zeros((size, size), dtype=bool)
    manual = np.zeros((size, size), dtype=bool)
    if label == "covid":
        blobs, info = draw_ggo(lesion_rng, anatomy)
        ggo = render_ggo(x, y, pose, blobs, thorax.lungs, thorax.lung_soft, lesion_rng)
        opacity, true_mask = ggo.added, ggo.mask
        att = att + opacity
        params.update(info)
    elif finding in ("consolidation", "nodule", "effusion"):
        added, info = render_control_finding(
            finding, x, y, pose, anatomy, thorax.lungs, thorax.lung_soft, finding_rng
        )
        att = att + added
        params.update({f"{finding}_{k}": v for k, v in info.items()})
    image, exposure = expose(att, exposure_rng, noise_rng)
    params.update(exposure)
    lung_mask = thorax.lungs.mask
    if label == "covid":
        manual, info = draw_manual_mask(true_mask, lung_mask, manual_rng)
        params.update({f"manual_{k}": v for k, v in info.items()})
        params["infected_fraction"] = float(true_mask.sum()) / max(int(lung_mask.sum()), 1)
        params["manual_dice"] = dice(manual, true_mask)
    return PhantomCase(
        name=name if name is not None else f"phantom_{seed:05d}",
        image=_frozen(image),
        true_mask=_frozen(true_mask),
        manual_mask=_frozen(manual),
        lung_mask=_frozen(lung_mask),
        opacity=_frozen(opacity),
        label=label,
        finding=finding,
        patient_id=patient_id if patient_id is not None else patient_id_for(patient_seed),
        has_manual=(label == "covid")
        if has_manual is None
        else bool(has_manual and label == "covid"),
        seed=seed,
        patient_seed=patient_seed,
        params=_json_ready(params),
    )


@dataclass(frozen=True)
class CaseSpec:
    """Everything that decides a cohort case before any pixel is drawn."""

    name: str
    label: str
    finding: str | None  # None for a normal control
    seed: int
    patient_seed: int
    patient_id: str
    has_manual: bool
    cohort_seed: int
    stream_index: int  # position among the cohort's COVID-19 cases, or among its controls


_COVID, _CONTROL = 0, 1
_SHARED_PATIENT = 0.35  # chance that two consecutive cases of a stream are one patient


def plan_cohort(
    *, seed: int, n_covid: int, n_control: int, manual_fraction: float = 0.3
) -> list[CaseSpec]:
    """Names, labels, patients and manual subset of a cohort, in name order.

    COVID-19 case k is named phantom_{2k} and control k phantom_{2k+1}. Every decision about
    a case depends only on (seed, its stream, k), so a larger cohort starts with a smaller one.
    """
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for what, n in (("n_covid", n_covid), ("n_control", n_control)):
        if not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"{what} must be a non-negative integer, got {n!r}")
    if not 0.0 <= manual_fraction <= 1.0:
        raise ValueError(f"manual_fraction must be within [0, 1], got {manual_fraction!r}")
    # A Weyl sequence spreads the manual subset evenly over any prefix of the COVID-19 cases.
    start = derive_seed(seed, _COVID, 5) / 2.0**63
    specs = []
    for stream, count in ((_COVID, n_covid), (_CONTROL, n_control)):
        for k in range(count):
            case_seed = derive_seed(seed, stream, 0, k)
            shared = _rng(seed, stream, 1, k // 2).random() < _SHARED_PATIENT
            patient_seed = derive_seed(seed, stream, 2, k // 2) if shared else case_seed
            if stream == _COVID:
                label, finding = "covid", "ggo"
                has_manual = (start + k * _GOLDEN) % 1.0 < manual_fraction
            else:
                # A control patient keeps their finding across images.
                pick = _rng(patient_seed, 102)
                finding = None if pick.random() < 0.5 else CONTROL_FINDINGS[int(pick.integers(4))]
                label, has_manual = ("normal" if finding is None else "other"), False
            specs.append(
                CaseSpec(
                    name=f"phantom_{2 * k + stream:05d}",
                    label=label,
                    finding=finding,
                    seed=case_seed,
                    patient_seed=patient_seed,
                    patient_id=patient_id_for(patient_seed),
                    has_manual=bool(has_manual),
                    cohort_seed=int(seed),
                    stream_index=k,
                )
            )
    return sorted(specs, key=lambda s: (len(s.name), s.name))


def render_spec(spec: CaseSpec, *, size: int = 256) -> PhantomCase:
    case = generate_case(
        seed=spec.seed,
        size=size,
        label=spec.label,
        finding=spec.finding,
        patient_seed=spec.patient_seed,
        patient_id=spec.patient_id,
        name=spec.name,
        has_manual=spec.has_manual,
    )
    params = {"cohort_seed": spec.cohort_seed, "stream_index": spec.stream_index, **case.params}
    return replace(case, params=params)


def generate_cohort(
    *, seed: int, n_covid: int, n_control: int, size: int = 256, manual_fraction: float = 0.3
) -> list[PhantomCase]:
    """A cohort in name order: COVID-19 cases (a `manual_fraction` of them with manual masks)
    and controls (about half normal, half with a non-COVID finding); about a third of the
    images come from patients with two images."""
    specs = plan_cohort(
        seed=seed, n_covid=n_covid, n_control=n_control, manual_fraction=manual_fraction
    )
    return [render_spec(spec, size=size) for spec in specs]
