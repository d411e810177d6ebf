"""Production settings: refuse unsafe starts, harden HTTP, take every credential from the env.

Each case imports the real `config.settings` in a fresh interpreter, because the checks run
at import time and the test process has its settings loaded already.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PRODUCTION_ENV = {
    "COUNTSTREAM_ENV": "production",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DATABASE_URL": "postgres://app:db-s3cret@db.internal:6432/countstream_prod",
    "REDIS_URL": "redis://:redis-s3cret@cache.internal:6380/2",
    "CELERY_BROKER_URL": "redis://:redis-s3cret@cache.internal:6380/3",
    "KAFKA_BOOTSTRAP_SERVERS": "kafka-1.internal:9094,kafka-2.internal:9094",
    "METRICS_TOKEN": secrets.token_urlsafe(32),
}

DUMP_SETTINGS = """
import json, django
django.setup()
from django.conf import settings as s
from infra.kafka import client_config
db = s.DATABASES["default"]
print(json.dumps({
    "db": [db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]],
    "cache": s.CACHES["default"]["LOCATION"],
    "celery": s.CELERY_BROKER_URL,
    "kafka": client_config(),
    "debug": s.DEBUG,
    "secret_key": s.SECRET_KEY,
    "secure": [s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE,
               s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS],
    "redirect_exempt": s.SECURE_REDIRECT_EXEMPT,
}))
"""


def run_python(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Run Python in the project with only `env` configuring it (no inherited settings)."""
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "KAFKA_", "COUNTSTREAM_"))
        and key not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "METRICS_TOKEN"}
    }
    clean |= {"DJANGO_SETTINGS_MODULE": "config.settings", **env}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60
    )


def dump_settings(**env: str) -> dict:
    result = run_python("-c", DUMP_SETTINGS, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"DJANGO_SECRET_KEY": ""}, "needs DJANGO_SECRET_KEY set"),
        ({"DJANGO_SECRET_KEY": "short-and-guessable"}, "at least 50 random characters"),
        ({"DJANGO_DEBUG": "true"}, "refuses DJANGO_DEBUG on"),
        (
            {"DATABASE_URL": "", "REDIS_URL": "", "KAFKA_BOOTSTRAP_SERVERS": ""},
            "needs DATABASE_URL, REDIS_URL, KAFKA_BOOTSTRAP_SERVERS set",
        ),
        ({"METRICS_TOKEN": ""}, "needs METRICS_TOKEN set"),
    ],
    ids=["no-secret-key", "weak-secret-key", "debug-on", "service-defaults", "no-metrics-token"],
)
def test_production_refuses_to_start_unsafely(change, message):
    result = run_python("manage.py", "check", **{**PRODUCTION_ENV, **change})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_production_passes_djangos_deployment_checklist():
    result = run_python(
        "manage.py", "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION_ENV
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_hardens_http_and_reads_every_credential_from_the_environment():
    loaded = dump_settings(**PRODUCTION_ENV)

    assert loaded["db"] == ["app", "db-s3cret", "db.internal", 6432, "countstream_prod"]
    assert loaded["cache"] == PRODUCTION_ENV["REDIS_URL"]
    assert loaded["celery"] == PRODUCTION_ENV["CELERY_BROKER_URL"]
    assert loaded["kafka"]["bootstrap.servers"] == PRODUCTION_ENV["KAFKA_BOOTSTRAP_SERVERS"]
    assert loaded["secret_key"] == PRODUCTION_ENV["DJANGO_SECRET_KEY"]
    assert loaded["debug"] is False
    assert loaded["secure"] == [True, True, True, 365 * 24 * 3600, True]
    assert {"^healthz$", "^readyz$"} <= set(loaded["redirect_exempt"])


SERVE_REQUESTS = """
import json, django
django.setup()
from django.test import Client
client = Client()
plain, probe = client.get("/api/counts/"), client.get("/healthz")
secure = client.get("/healthz", secure=True)
print(json.dumps({
    "plain": [plain.status_code, plain.get("Location")],
    "probe": probe.status_code,
    "hsts": secure.get("Strict-Transport-Security"),
}))
"""


def test_production_redirects_to_https_sends_hsts_and_lets_probes_in_over_http():
    result = run_python("-c", SERVE_REQUESTS, **PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr

    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served == {
        "plain": [301, "https://testserver/api/counts/"],
        "probe": 200,
        "hsts": "max-age=31536000; includeSubDomains",
    }


KAFKA_SECURITY_ENV = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "countstream-relay",
    "KAFKA_SASL_PASSWORD": "kafka-s3cret",
}


def self_signed_pem(directory: Path) -> dict[str, str]:
    """A CA certificate and a client key pair for librdkafka's ssl.* settings."""
    key, cert = directory / "client.key", directory / "client.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=countstream-test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return {
        "KAFKA_SSL_CA_LOCATION": str(cert),
        "KAFKA_SSL_CERTIFICATE_LOCATION": str(cert),
        "KAFKA_SSL_KEY_LOCATION": str(key),
    }


BUILD_KAFKA_CLIENTS = """
import json, django
django.setup()
from confluent_kafka import Consumer, Producer
from infra.kafka import admin_client, client_config
config = client_config()
Producer(config)  # librdkafka rejects unknown or inconsistent settings right here
Consumer(client_config(**{"group.id": "security-test"})).close()
admin_client()
print(json.dumps(config))
"""


def test_kafka_sasl_and_tls_settings_reach_librdkafka(tmp_path):
    env = {**KAFKA_SECURITY_ENV, **self_signed_pem(tmp_path)}
    result = run_python("-c", BUILD_KAFKA_CLIENTS, **env)
    assert result.returncode == 0, result.stderr

    config = json.loads(result.stdout.strip().splitlines()[-1])
    assert config == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "countstream-relay",
        "sasl.password": "kafka-s3cret",
        "ssl.ca.location": env["KAFKA_SSL_CA_LOCATION"],
        "ssl.certificate.location": env["KAFKA_SSL_CERTIFICATE_LOCATION"],
        "ssl.key.location": env["KAFKA_SSL_KEY_LOCATION"],
    }


def test_development_keeps_plaintext_kafka_and_loopback_defaults():
    loaded = dump_settings()
    assert loaded["kafka"] == {"bootstrap.servers": "127.0.0.1:9092"}
    assert loaded["db"][2] == "127.0.0.1"
    assert loaded["debug"] is True
