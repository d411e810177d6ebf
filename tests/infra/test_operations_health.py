"""/healthz, /readyz and the check functions, against the real services and a dead port."""

import subprocess
import sys

import pytest
from django.conf import settings

from infra import health
from scripts.service_tools import free_ports
from tests.support.processes import process_env


def _closed_port() -> int:
    return free_ports(1)[0]


@pytest.fixture
def kafka_unreachable(settings):
    settings.KAFKA_CLIENT_CONFIG = {"bootstrap.servers": f"127.0.0.1:{_closed_port()}"}


@pytest.fixture
def redis_unreachable(settings):
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": f"redis://127.0.0.1:{_closed_port()}/0",
        }
    }


def test_healthz_answers_without_touching_dependencies(client, kafka_unreachable):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.stack
@pytest.mark.django_db
def test_readyz_reports_every_part_up(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis", "kafka"}
    for part in body["checks"].values():
        assert part["ok"] is True
        assert part["latency_ms"] >= 0
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.stack
@pytest.mark.django_db
def test_readyz_is_503_and_names_the_part_that_is_down(client, kafka_unreachable):
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["ok"] and checks["redis"]["ok"]
    assert checks["kafka"] == {
        "ok": False,
        "latency_ms": checks["kafka"]["latency_ms"],
        "error": "KafkaException",
    }


@pytest.mark.timeout(60)  # a hang fails here; how fast it fails is a figure, not a test
def test_check_kafka_gives_up_at_its_timeout(kafka_unreachable):
    result = health.check_kafka(timeout=1.0)
    assert not result.ok
    assert "KafkaException" in result.detail
    assert result.latency_ms >= 900  # it used the timeout given (a bound no load can break)


@pytest.mark.stack
def test_check_kafka_ok_names_the_brokers():
    result = health.check_kafka()
    assert result.ok, result.detail
    assert "1 broker(s)" in result.detail


def test_check_redis_down(redis_unreachable):
    result = health.check_redis()
    assert not result.ok
    assert "ConnectionError" in result.detail


@pytest.mark.django_db
def test_check_database_names_the_database():
    result = health.check_database()
    assert result.ok
    assert result.detail == f"postgresql {settings.DATABASES['default']['NAME']}"


def test_readyz_refuses_writes(client):
    assert client.post("/readyz").status_code == 405


@pytest.mark.django_db
def test_readyz_can_be_narrowed_to_the_parts_a_process_needs(client, kafka_unreachable):
    response = client.get("/readyz?check=database")
    assert response.status_code == 200
    assert set(response.json()["checks"]) == {"database"}


def test_readyz_rejects_an_unknown_check(client):
    response = client.get("/readyz?check=database&check=mongodb")
    assert response.status_code == 400
    assert "mongodb" in response.json()["error"]


def test_check_database_down():
    """In a process of its own: this one's connection must stay on the test database."""
    probe = (
        "import django; django.setup(); from infra.health import check_database; "
        "r = check_database(); print(r.ok, r.detail.split(':')[0], r.latency_ms < 5000)"
    )
    env = process_env(f"postgres://countstream:countstream@127.0.0.1:{_closed_port()}/nope")
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.split() == ["False", "OperationalError", "True"], result.stderr
