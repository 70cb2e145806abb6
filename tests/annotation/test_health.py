import pytest

pytestmark = pytest.mark.django_db


def test_it_reports_an_unreachable_broker_as_degraded(client, monkeypatch):
    from config.celery_app import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    response = client.get("/healthz", HTTP_ACCEPT="application/json")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["ok"] is True
    assert checks["broker"]["ok"] is False
    assert checks["worker"] == {"ok": False, "detail": "broker unreachable"}


def test_it_says_when_no_worker_answers(client, celery_broker):
    response = client.get("/healthz?format=json")
    checks = response.json()["checks"]
    assert checks["broker"]["ok"] is True
    # No worker runs in this test.
    assert checks["worker"] == {"ok": False, "detail": "no worker answered"}
    assert response.status_code == 503


@pytest.mark.integration
def test_it_is_ok_with_a_live_worker(client, worker_process):
    response = client.get("/healthz")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count(">OK<") == 3
    assert worker_process.hostname in html
