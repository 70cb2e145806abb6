"""manage.py export_dataset: the same export as the browser's, run in the foreground."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Export
from annotation.storage import blob_read
from tests.annotation.exporting import provenance_scenario, read_zip

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("export_dataset", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_it_exports_records_the_export_and_copies_the_zip(tmp_path):
    scenario = provenance_scenario(tmp_path)
    target = tmp_path / "out.zip"
    out = run(
        "--dataset", scenario.dataset.name, "--stages", "1,2", "--controls", "--formats",
        "qata,coco", "--user", "md1", "--output", str(target), "--licence", "CC0",
    )  # fmt: skip

    export = Export.objects.get()
    assert export.job.state == "succeeded" and export.job.progress == 1.0
    assert export.created_by == scenario.users["md1"]
    assert export.params["stages"] == [1, 2] and export.params["formats"] == ["qata", "coco"]
    assert target.read_bytes() == blob_read(export.file.name)
    assert f"Export #{export.pk}: 5 cases" in out and export.sha256 in out
    names = read_zip(target).namelist()
    assert "annotations/instances.json" in names and "manifest.csv" not in names
    # Stages 1 and 2 (a, b, c), imported as final (d) and the control (e); f has no mask.
    assert {n for n in names if n.startswith("Images/")} == {f"Images/{c}.png" for c in "abcde"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "nope"], "dataset 'nope' does not exist"),
        (["--stages", "one"], "--stages takes stage numbers"),
        (["--stages", "9"], "has no stage 9"),
        (["--formats", "png"], "formats must be"),
        (["--user", "ghost"], "user 'ghost' does not exist"),
    ],
)
def test_bad_options_stop_it_with_a_reason(tmp_path, args, message):
    scenario = provenance_scenario(tmp_path)
    if "--dataset" not in args:
        args = ["--dataset", scenario.dataset.name, *args]
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert Export.objects.count() == 0
