"""Phantom chest X-rays: synthetic CXRs whose COVID-19 infection masks are known exactly.

What it models. A frontal CXR of a thorax (body outline and shoulders, lung fields with round
apices and domed hemidiaphragms, mediastinum, heart, spine and trachea, posterior and anterior
ribs, clavicles, hilar vessels, breast shadows and the gastric bubble), posed and exposed
differently each time (shift, scale, tilt, window, contrast curve, heel effect, noise).
COVID-19 cases add ground-glass opacities: hazy, textured, soft-edged patches of varied size
and contrast, mostly bilateral, peripheral and in the lower zones. Their mask is the threshold
of the very field that is added to the image, so it is exact. Controls are normal, or show a
finding that a detector must not call COVID-19: lobar consolidation, nodules, a basal
effusion, cardiomegaly. A simulated hurried reader outlines the infection with a few polygon
clicks (bias, wobble, lumping, missed small patches): the manual masks a dataset ships.

Why. The collaborative loop (train on manual masks, let doctors pick better candidates,
retrain) can only be shown to approach the truth where the truth is known. Phantoms give
that truth, kept apart from the manual masks, for every test, demo and benchmark, at any
size and count, byte-for-byte reproducible from a seed.

    case = generate_case(seed=7, size=256, label="covid")
    cases = generate_cohort(seed=0, n_covid=40, n_control=20)
    write_qata_layout(cases, "out/phantoms")       # QaTa-COV19 v2 folders + hidden truth
    write_gallery(cases[:24], "out/gallery.png")
"""

from mlworker.phantoms.cases import (
    FINDINGS,
    GENERATOR_VERSION,
    LABELS,
    CaseSpec,
    PhantomCase,
    generate_case,
    generate_cohort,
    plan_cohort,
    render_spec,
)
from mlworker.phantoms.gallery import write_gallery
from mlworker.phantoms.layout import LayoutSummary, QataWriter, assign_splits, write_qata_layout
from mlworker.phantoms.lesions import CONTROL_FINDINGS

__all__ = [
    "CONTROL_FINDINGS",
    "FINDINGS",
    "GENERATOR_VERSION",
    "LABELS",
    "CaseSpec",
    "LayoutSummary",
    "PhantomCase",
    "QataWriter",
    "assign_splits",
    "generate_case",
    "generate_cohort",
    "plan_cohort",
    "render_spec",
    "write_gallery",
    "write_qata_layout",
]
