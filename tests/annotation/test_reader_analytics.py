"""Reader analytics for researchers: pseudonymous per-reader figures, CSV downloads of every
statistics table, and "best of N" against a truth folder."""

from __future__ import annotations

import csv
import io
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from annotation.models import Candidate, GroundTruth, Mask
from annotation.roles import ADMIN, MD, RESEARCHER
from annotation.selectors.reader_analytics import reader_rows
from annotation.services.assignment import task_lease_next
from annotation.services.review import decision_record
from annotation.storage import blob_read
from cxrio import masks as maskio
from cxrio import qata
from tests.factories import PASSWORD, UserFactory, review_stage


def read_all(stage, reader, pick):
    """The reader works through the queue; pick(task) gives the 1-based position chosen."""
    while (task := task_lease_next(stage=stage, reader=reader)) is not None:
        decision_record(
            task=task,
            reader=reader,
            position=pick(task),
            idempotency_key=str(uuid.uuid4()),
            time_on_screen_ms=2000,
        )


def manual_position(task) -> int:
    manual = Candidate.objects.get(
        stage=task.stage, radiograph=task.radiograph, mask__kind=Mask.Kind.MANUAL
    )
    return task.candidate_order.index(manual.pk) + 1


@pytest.mark.django_db
def test_per_reader_agreement_and_first_position_excess():
    stage = review_stage(n_cases=4, n_networks=4, readers_per_case=2)
    always_first, manual_lover = UserFactory(roles=[MD]), UserFactory(roles=[MD])
    read_all(stage, always_first, lambda task: 1)
    read_all(stage, manual_lover, manual_position)
    rows = reader_rows(stage=stage)
    assert [r.pseudonym for r in rows] == ["Reader 1", "Reader 2"]
    assert [r.username for r in rows] == [always_first.username, manual_lover.username]
    first, second = rows
    assert first.decisions == second.decisions == 4 and first.median_ms == 2000.0
    # Always position 1 of 5: excess 1 − 1/5 for every choice, no spread.
    assert first.first_position_excess == pytest.approx(0.8) and first.choices == 4
    # Where the two disagreed the case waits for adjudication; where they agreed it was
    # accepted with the mask both chose: each agreed with every accepted case.
    accepted = GroundTruth.objects.filter(stage=stage).count()
    assert first.judged == second.judged == accepted
    assert first.agreement == (1.0 if accepted else None)


@pytest.mark.django_db
def test_statistics_tables_download_as_csv_with_pseudonyms_for_researchers(client):
    stage = review_stage(n_cases=2, n_networks=2)
    reader = UserFactory(roles=[MD], username="dr-house")
    read_all(stage, reader, lambda task: 1)
    url = reverse("stats_stage_csv", kwargs={"stage_id": stage.pk, "table": "readers"})
    client.login(username=reader.username, password=PASSWORD)
    assert client.get(url).status_code == 403  # readers never see statistics
    researcher = UserFactory(roles=[RESEARCHER])
    client.login(username=researcher.username, password=PASSWORD)
    page = client.get(reverse("stats_stage", kwargs={"stage_id": stage.pk})).content.decode()
    assert 'data-stats="readers"' in page and "Reader 1" in page and "dr-house" not in page
    response = client.get(url)
    assert (
        response["Content-Disposition"]
        == f'attachment; filename="stage-{stage.number}-readers.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert rows[0]["reader"] == "Reader 1" and "username" not in rows[0]
    assert rows[0]["decisions"] == "2" and rows[0]["first_position_excess"] == "0.666667"  # 1 − 1/3
    for table in ("progress", "sources", "win_rates", "position"):
        text = client.get(
            reverse("stats_stage_csv", kwargs={"stage_id": stage.pk, "table": table})
        ).content.decode()
        assert text.splitlines()[0]  # a header row
    progress = dict(
        csv.reader(
            io.StringIO(
                client.get(
                    reverse("stats_stage_csv", kwargs={"stage_id": stage.pk, "table": "progress"})
                ).content.decode()
            )
        )
    )
    assert progress["accepted"] == "2" and progress["decisions"] == "2"
    missing = reverse("stats_stage_csv", kwargs={"stage_id": stage.pk, "table": "nope"})
    assert client.get(missing).status_code == 404
    admin = UserFactory(roles=[ADMIN])
    client.login(username=admin.username, password=PASSWORD)
    assert "dr-house" in client.get(url).content.decode()


@pytest.mark.django_db
def test_best_of_n_against_a_truth_folder(tmp_path, capsys):
    stage = review_stage(n_cases=2, n_networks=3)
    reader = UserFactory(roles=[MD])
    read_all(stage, reader, manual_position)
    truth = tmp_path / "truth"
    truth.mkdir()
    # The truth of each case is its manual mask: the best candidate and the accepted mask (the
    # manual one, chosen) both score Dice 1.
    for radiograph_id, name in stage.candidates.values_list(
        "radiograph_id", "radiograph__name"
    ).distinct():
        # The manual mask as readers saw it (outline-normalised).
        manual = Mask.objects.get(
            radiograph_id=radiograph_id, kind=Mask.Kind.MANUAL, normalised_from__isnull=False
        )
        pixels = maskio.mask_from_png(blob_read(manual.png.name))
        (truth / qata.mask_name(name)).write_bytes(maskio.mask_to_png_0_255(pixels))
    out = tmp_path / "out"
    call_command("stage_statistics", stage=stage.pk, out=out, truth=truth)
    assert (
        "best candidate 1.0000 (2 cases), accepted masks 1.0000 (2 cases)"
        in capsys.readouterr().out
    )
    rows = list(csv.DictReader((out / "best_of_n.csv").open()))
    assert len(rows) == 2 and {r["best_candidate_dice"] for r in rows} == {"1"}
    assert {p.name for p in out.iterdir()} >= {"readers.csv", "progress.csv", "position.csv"}
    with pytest.raises(CommandError, match="no case of stage"):
        call_command("stage_statistics", stage=stage.pk, out=out, truth=tmp_path / "out")
    with pytest.raises(CommandError, match="no stage with id"):
        call_command("stage_statistics", stage=999999, out=out)
