"""`python -m mlworker interactive-train` on a tiny QaTa-COV19-layout folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlworker.__main__ import main
from mlworker.interactive.model import prompt_spec, refine
from mlworker.saved import load_model
from tests.mlworker.test_data import write_qata_folder

pytestmark = [
    pytest.mark.keras,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]


def test_interactive_train_writes_a_network_that_refines(tmp_path):
    write_qata_folder(tmp_path / "data", n=5, size=48, unlabelled=1, controls=1)
    out = tmp_path / "clicks.keras"
    code = main(
        [
            "interactive-train",
            "--data", str(tmp_path / "data"),
            "--out", str(out),
            "--candidates", str(tmp_path / "data" / "Ground-truths"),
            "--size", "32", "--epochs", "1", "--batch", "4",
        ]
    )  # fmt: skip
    assert code == 0
    info = json.loads(out.with_suffix(".json").read_text())
    # Only the five masked images train: the unlabelled one and the control are left out.
    assert info["train_cases"] == 5 and len(info["train_names"]) == 5
    assert info["kind"] == "interactive" and info["zones"] is True and info["epochs"] == 1
    assert info["with_candidates"] is True
    model = load_model(out)
    assert prompt_spec(model)[0] == 32
    mask = refine(model, np.zeros((48, 48), np.uint8), None, [(24, 24, "positive")])
    assert mask.shape == (48, 48) and mask.dtype == bool


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "model.h5"], "must end in .keras"),
        (["--size", "40"], "multiple of 16"),
        (["--batch", "1"], "--batch at least 2"),
    ],
)
def test_interactive_train_refuses_bad_arguments_before_reading(tmp_path, capsys, extra, message):
    args = ["interactive-train", "--data", str(tmp_path), "--out", str(tmp_path / "m.keras")]
    if extra[0] == "--out":
        extra = ["--out", str(tmp_path / extra[1])]
    assert main(args + extra) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
