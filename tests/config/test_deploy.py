"""deploy/ cannot run here (no Docker, no cluster): validate it offline against schemas,
and check that it agrees with the code (settings it sets exist, topics match settings)."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys

import jsonschema
import kubernetes_validate
import pytest
import yaml
from django.conf import settings

from counts.events import TOPICS
from scripts.procfile import procfile_commands
from tests.support.paths import ROOT

DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.33.0"
STRIMZI = json.loads((DEPLOY / "schemas" / "strimzi-v1beta2.schema.json").read_text())


def manifests() -> list[tuple[str, dict]]:
    return [
        (f"{path.name}#{n}", doc)
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for n, doc in enumerate(yaml.safe_load_all(path.read_text()))
        if doc
    ]


def of_kind(kind: str) -> list[dict]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def settings_env_names() -> set[str]:
    """Every environment variable config/settings.py reads."""
    source = (ROOT / "config" / "settings.py").read_text()
    return set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]*)"', source))


def test_compose_file_is_valid_against_the_compose_spec():
    schema = ["--builtin-schema", "vendor.compose-spec"]
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", *schema, str(DEPLOY / "docker-compose.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name, doc", manifests(), ids=[name for name, _ in manifests()])
def test_kubernetes_manifest_is_valid(name, doc):
    if doc["apiVersion"].startswith("kafka.strimzi.io/"):
        jsonschema.Draft202012Validator(STRIMZI).validate(doc)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_strimzi_schema_catches_mistakes():
    topic = of_kind("KafkaTopic")[0]
    broken = {**topic, "spec": {**topic["spec"], "partitons": 6}}
    with pytest.raises(jsonschema.ValidationError, match="partitons"):
        jsonschema.Draft202012Validator(STRIMZI).validate(broken)


def test_kubernetes_validation_catches_mistakes():
    deployment = of_kind("Deployment")[0]
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kafka_topics_match_the_topics_and_layout_in_settings():
    config = of_kind("ConfigMap")[0]["data"]
    assert config["KAFKA_TOPIC_REPLICATION_FACTOR"] == "3"
    topics = {doc["metadata"]["name"]: doc["spec"] for doc in of_kind("KafkaTopic")}
    assert set(topics) == {*TOPICS, settings.KAFKA_DEAD_LETTER_TOPIC}
    for spec in topics.values():
        assert spec["partitions"] == int(config["KAFKA_TOPIC_PARTITIONS"])
        assert spec["replicas"] == int(config["KAFKA_TOPIC_REPLICATION_FACTOR"])
        assert {key: str(value) for key, value in spec["config"].items()} == {
            "cleanup.policy": "delete",
            "retention.ms": str(settings.KAFKA_TOPIC_RETENTION_MS),
            "retention.bytes": str(settings.KAFKA_TOPIC_RETENTION_BYTES),
            "min.insync.replicas": config["KAFKA_TOPIC_MIN_INSYNC_REPLICAS"],
        }
    pool = of_kind("KafkaNodePool")[0]["spec"]
    assert pool["replicas"] >= int(config["KAFKA_TOPIC_REPLICATION_FACTOR"])


def test_every_variable_deploy_sets_is_one_the_settings_read():
    known = settings_env_names()
    assert {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "METRICS_TOKEN"} <= known
    configmap = set(of_kind("ConfigMap")[0]["data"])
    compose_env = {
        name
        for service in compose()["services"].values()
        if service.get("image", "").startswith("countstream")
        for name in service.get("environment", {})
    }
    assert configmap - known == set()
    assert compose_env - known == set()


def test_compose_and_kubernetes_run_the_same_processes():
    commands = {
        " ".join(container["command"][:4])
        for deployment in of_kind("Deployment")
        for container in deployment["spec"]["template"]["spec"]["containers"]
    }
    compose_commands = {
        " ".join(service["command"][:4])
        for name, service in compose()["services"].items()
        if service.get("image", "").startswith("countstream") and name != "setup"
    }
    assert commands == compose_commands
    assert len(commands) == 5  # web, relay, consumer, celery worker, celery beat


def deployment(component: str) -> dict:
    (found,) = [
        doc
        for doc in of_kind("Deployment")
        if doc["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return found


def web_commands() -> dict[str, list[str]]:
    """The web command of the Procfile, the image, compose and Kubernetes."""
    procfile = procfile_commands()
    dockerfile = (DEPLOY / "Dockerfile").read_text().replace("\\\n", "")
    return {
        "Procfile": procfile["web"].split(),
        "Dockerfile": json.loads(re.search(r"^CMD (.+)$", dockerfile, re.MULTILINE)[1]),
        "compose": compose()["services"]["web"]["command"],
        "k8s": deployment("web")["spec"]["template"]["spec"]["containers"][0]["command"],
    }


def test_web_closes_open_streams_two_seconds_into_a_shutdown_everywhere():
    for where, argv in web_commands().items():
        assert argv[argv.index("--timeout-graceful-shutdown") + 1] == "2", where


def web_pod_env() -> dict[str, str]:
    container = deployment("web")["spec"]["template"]["spec"]["containers"][0]
    return {variable["name"]: variable["value"] for variable in container["env"]}


def test_web_runs_several_worker_processes_everywhere():
    procfile = web_commands()["Procfile"]
    assert procfile[procfile.index("--workers") + 1] == "${WEB_CONCURRENCY:-$(nproc)}"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert int(re.search(r"^ENV WEB_CONCURRENCY=(\d+)$", dockerfile, re.MULTILINE)[1]) > 1
    assert compose()["services"]["web"]["environment"]["WEB_CONCURRENCY"]
    assert int(web_pod_env()["WEB_CONCURRENCY"]) > 1


def test_the_kubernetes_web_takes_at_most_half_of_postgres_default_connections():
    """Every pod's workers, each with its pool and one wake-up connection, whatever the load."""
    config = of_kind("ConfigMap")[0]["data"]
    pool = int(config.get("DATABASE_POOL_MAX_SIZE", settings.DATABASE_POOL_MAX_SIZE))
    workers = int(web_pod_env()["WEB_CONCURRENCY"])
    assert deployment("web")["spec"]["replicas"] * workers * (pool + 1) <= 100 // 2


@pytest.mark.parametrize(
    ("component", "port", "address_setting"),
    [
        ("relay", settings.RELAY_METRICS_PORT, "RELAY_METRICS_HOST"),
        ("consumer", settings.CONSUMER_METRICS_PORT, "CONSUMER_METRICS_HOST"),
    ],
)
def test_relay_and_consumer_metrics_can_be_scraped(component, port, address_setting):
    assert of_kind("ConfigMap")[0]["data"][address_setting] == "0.0.0.0"
    pod = deployment(component)["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert {"name": "metrics", "containerPort": port} in pod["spec"]["containers"][0]["ports"]
    service = compose()["services"][component]
    assert service["environment"][address_setting] == "0.0.0.0"
    assert f"127.0.0.1:{port}:{port}" in service["ports"]


def test_production_settings_accept_the_kubernetes_config():
    """The ConfigMap plus the documented secrets pass Django's deployment checks."""
    env = {
        "PATH": "/usr/bin:/bin",
        **of_kind("ConfigMap")[0]["data"],
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "DATABASE_URL": "postgres://countstream:pw@db.internal:5432/countstream",
        "METRICS_TOKEN": secrets.token_urlsafe(32),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


def exposed_metric_names() -> set[str]:
    """Every series name web, relay and consumer can expose."""
    import prometheus_client

    import dashboard.consuming.metrics  # noqa: F401  (registers the consumer's metrics)
    import outbox.metrics  # noqa: F401  (registers the relay's metrics)
    from config.metrics import REGISTRY as WEB_REGISTRY

    return {
        f"{family.name}{suffix}"
        for registry in (prometheus_client.REGISTRY, WEB_REGISTRY)
        for family in registry.collect()
        for suffix in SUFFIXES.get(family.type, ("",))
    }


@pytest.mark.django_db
def test_alert_rules_use_only_metrics_the_processes_expose():
    rules = [
        rule
        for group in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    ]
    exposed = exposed_metric_names()
    for rule in rules:
        used = set(re.findall(r"countstream_[a-z_]+", rule["expr"]))
        assert used - exposed == set(), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s"))
    assert len({rule["alert"] for rule in rules}) == len(rules)
