from __future__ import annotations

import uuid

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from scipy import stats as scistats

from annotation.models import Candidate, Mask, Stage
from annotation.roles import ADMIN, MD, RESEARCHER
from annotation.selectors.statistics import stage_statistics
from annotation.selectors.stats_math import bradley_terry, dice, fleiss_kappa, position_bias
from annotation.services.assignment import task_lease_next
from annotation.services.review import decision_record, knockout_state, round_record
from mlworker.networks import network_label
from tests.factories import PASSWORD, DatasetFactory, RadiographFactory, UserFactory, review_stage


def key() -> str:
    return str(uuid.uuid4())


# --- the formulas -----------------------------------------------------------------------------


def test_fleiss_kappa_matches_hand_computed_examples():
    # Two cases, two readers: they agree on the first, split on the second.
    # P̄ = (1 + 0) / 2 = 0.5; p = (3/4, 1/4), Pe = 10/16; κ = (0.5 - 0.625) / 0.375 = -1/3.
    assert fleiss_kappa(np.array([[2, 0], [1, 1]])) == pytest.approx(-1 / 3)
    # Fleiss (1971) style table of 10 subjects × 14 raters × 5 categories: κ = 0.210.
    table = np.array(
        [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ]
    )
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)
    assert fleiss_kappa(np.array([[3, 0], [0, 3]])) == pytest.approx(1.0)
    assert fleiss_kappa(np.array([[2], [2]])) is None  # one category: chance agreement is 1
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(np.array([[2, 0], [1, 2]]))


def test_bradley_terry_recovers_strengths_from_consistent_results():
    truth = np.array([0.6, 0.3, 0.1])
    games = 1000
    wins = np.array(
        [
            [games * truth[i] / (truth[i] + truth[j]) if i != j else 0 for j in range(3)]
            for i in range(3)
        ]
    )
    strength = bradley_terry(wins, prior=0.0)
    assert strength == pytest.approx(truth, abs=1e-4)
    # An entity that never won stays finite and last.
    never = bradley_terry(np.array([[0, 5], [0, 0]]))
    assert 0 < never[1] < never[0]


def test_position_bias_is_a_chi_square_against_uniform():
    bias = position_bias("5-way", [30, 10, 10, 5, 5])
    expected = scistats.chisquare([30, 10, 10, 5, 5])
    assert (bias.chi2, bias.p_value) == pytest.approx((expected.statistic, expected.pvalue))
    assert bias.chi2 == pytest.approx(430 / 12)  # expected 12 each: (18² + 2² + 2² + 7² + 7²) / 12
    assert position_bias("pairwise", [0, 0]).p_value is None


def test_dice():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    a[:2] = True  # 8 pixels
    b[1:3] = True  # 8 pixels, 4 shared
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a & False, b & False) == 1.0


# --- from rows --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_statistics_of_a_pairwise_stage_read_by_two_readers():
    stage = review_stage(n_cases=3, mode=Stage.Mode.PAIRWISE, n_networks=2, readers_per_case=2)
    kinds = {
        c.pk: (c.mask.kind, c.mask.model_version) for c in Candidate.objects.filter(stage=stage)
    }
    first_net = min(v.pk for k, v in kinds.values() if v is not None)
    favourite = {pk for pk, (k, v) in kinds.items() if v is not None and v.pk == first_net}
    readers = [UserFactory(roles=[MD]) for _ in range(2)]
    for reader in readers:
        while (task := task_lease_next(stage=stage, reader=reader)) is not None:
            # Both readers always prefer the first network's mask: full agreement.
            while (state := knockout_state(task=task)).number is not None:
                choice = (
                    "A"
                    if state.left in favourite
                    or state.right not in favourite
                    and state.left < state.right
                    else "B"
                )
                round_record(
                    task=task,
                    reader=reader,
                    number=state.number,
                    choice=choice,
                    idempotency_key=key(),
                    time_on_screen_ms=1000 * state.number,
                )
    s = stage_statistics(stage=stage)
    assert (s.cases, s.tasks, s.tasks_done, s.decisions, s.accepted) == (3, 6, 6, 6, 3)
    version = kinds[next(iter(favourite))][1]
    label = network_label(version.arch, version.encoder)  # as every screen names a network
    assert s.sources == [(label, 3)]
    assert s.machine_share == 1.0
    assert s.win_rates[0].label == label and s.win_rates[0].rate == 1.0
    # It met every case's other masks once or twice per reader, and won every time.
    assert 6 <= s.win_rates[0].rounds <= 12 and s.win_rates[0].wins == s.win_rates[0].rounds
    assert s.kappa == pytest.approx(1.0) and s.kappa_cases == 3
    assert s.mean_dice == 1.0 and s.dice_pairs == 3
    assert s.median_ms == 3000.0  # rounds 1 and 2: 1000 + 2000 ms per decision
    assert s.position[0].total == 12


@pytest.mark.django_db
def test_statistics_of_disagreeing_five_way_readers():
    stage = review_stage(n_cases=2, n_networks=4, readers_per_case=2)
    readers = [UserFactory(roles=[MD]) for _ in range(2)]
    for i, reader in enumerate(readers):
        while (task := task_lease_next(stage=stage, reader=reader)) is not None:
            manual = Candidate.objects.get(
                stage=stage, radiograph=task.radiograph, mask__kind=Mask.Kind.MANUAL
            )
            order = task.candidate_order
            pick = (
                order.index(manual.pk)
                if i == 0
                else order.index(next(c for c in order if c != manual.pk))
            )
            decision_record(task=task, reader=reader, position=pick + 1, idempotency_key=key())
    s = stage_statistics(stage=stage)
    assert s.accepted == 0 and s.adjudication_waiting == 2
    assert s.kappa < 0  # they never agree
    assert s.mean_dice is not None and s.mean_dice < 1.0
    assert s.position[0].screen == "5-way picks (1 … 5)" and s.position[0].total == 4


@pytest.mark.django_db
def test_the_statistics_page_is_for_admins_and_researchers(client):
    stage = review_stage(n_cases=2, n_networks=2)
    reader = UserFactory(roles=[MD])
    while (task := task_lease_next(stage=stage, reader=reader)) is not None:
        decision_record(task=task, reader=reader, position=1, idempotency_key=key())
    url = reverse("stats_stage", kwargs={"stage_id": stage.pk})
    client.login(username=reader.username, password=PASSWORD)
    assert client.get(url).status_code == 403
    for role in (RESEARCHER, ADMIN):
        user = UserFactory(roles=[role])
        client.login(username=user.username, password=PASSWORD)
        html = client.get(url).content.decode()
        assert 'data-stats="sources"' in html and "data:image/svg+xml;base64," in html
        assert "Accepted masks</th><td>2</td>" in html
        fragment = client.get(url, HTTP_HX_REQUEST="true").content.decode()
        assert 'data-stats="progress"' in fragment and "data:image/svg" not in fragment


@pytest.mark.django_db
def test_seed_review_demo_builds_a_stage_and_can_simulate_readers(capsys):
    dataset = DatasetFactory(name="seeded")
    for _ in range(3):
        RadiographFactory(dataset=dataset)
    UserFactory(roles=[MD])
    call_command("seed_review_demo", dataset="seeded", networks=3, simulate=True)
    stage = Stage.objects.get(dataset=dataset)
    assert stage.candidates.count() == 9  # no manual masks here: 3 networks × 3 cases
    assert stage.config["simulated"] is True
    assert stage_statistics(stage=stage).decisions == 3
    assert "9 candidates, 3 review tasks" in capsys.readouterr().out
    with pytest.raises(CommandError, match="no dataset named 'nope'"):
        call_command("seed_review_demo", dataset="nope")
