"""The relay's failure policy against real Kafka errors (issue 15, item 7).

Only a refusal of the message itself (too large, invalid, corrupt) counts toward parking a
row. Errors of the cluster never park however long they last; a refused authorization
parks nothing; a fatal producer error gets a new producer instead of ending the relay.
The authorization cases need a broker with an authorizer: a private one, with a SASL
listener for the relay's user (`relay`) and a plain one for the test, a super user.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from secrets import token_urlsafe

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)
from django.conf import settings
from django.db import transaction
from django.test import override_settings

from counts import events
from infra.kafka import admin_client
from infra.topics import ensure_topics, topic_name
from outbox.relay import Relay, RelayOptions
from outbox.services import Event, enqueue
from scripts.kafka_node import KafkaNode
from scripts.service_tools import free_ports
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.stack,
    pytest.mark.usefixtures("count_topics"),
]

RELAY_USER, RELAY_PASSWORD = "relay", "relay-secret"
_PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"

# Appended to the node's server.properties (a later key wins): a SASL/PLAIN listener for the
# relay, ACLs enforced, and everyone on the plain listeners (ANONYMOUS) a super user.
_ACL_PROPERTIES = """
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port},SASL://127.0.0.1:{sasl_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL://127.0.0.1:{sasl_port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL:SASL_PLAINTEXT
sasl.enabled.mechanisms=PLAIN
listener.name.sasl.plain.sasl.jaas.config={jaas}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
allow.everyone.if.no.acl.found=true
"""


@dataclass
class AclKafkaNode(KafkaNode):
    sasl_port: int = 0

    def _write_config(self) -> None:
        super()._write_config()
        extra = _ACL_PROPERTIES.format(
            port=self.port,
            controller_port=self.controller_port,
            sasl_port=self.sasl_port,
            jaas=f'{_PLAIN_LOGIN} required user_{RELAY_USER}="{RELAY_PASSWORD}";',
        )
        with open(self.home / "server.properties", "a") as properties:
            properties.write(extra)


@dataclass
class AclBroker:
    node: AclKafkaNode

    @property
    def admin_config(self) -> dict:
        return {"bootstrap.servers": f"127.0.0.1:{self.node.port}"}

    @property
    def relay_config(self) -> dict:
        return {
            "bootstrap.servers": f"127.0.0.1:{self.node.sasl_port}",
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": RELAY_USER,
            "sasl.password": RELAY_PASSWORD,
        }

    def deny(self, *bindings: tuple[ResourceType, str, AclOperation]) -> list[AclBinding]:
        acls = [
            AclBinding(
                kind,
                name,
                ResourcePatternType.LITERAL,
                f"User:{RELAY_USER}",
                "*",
                operation,
                AclPermissionType.DENY,
            )
            for kind, name, operation in bindings
        ]
        admin = admin_client()  # kept alive until its futures are done
        for future in admin.create_acls(acls).values():
            future.result(30)
        return acls

    def allow_again(self) -> None:
        everything = AclBindingFilter(
            ResourceType.ANY,
            None,
            ResourcePatternType.ANY,
            None,
            None,
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        admin = admin_client()
        for future in admin.delete_acls([everything]).values():
            future.result(30)


@pytest.fixture
def acl_kafka(tmp_path_factory) -> Iterator[AclKafkaNode]:
    port, controller_port, sasl_port = free_ports(3)
    home = tmp_path_factory.mktemp("acl-kafka")
    node = AclKafkaNode(
        port=port, controller_port=controller_port, home=home, heap="384m", sasl_port=sasl_port
    )
    node.start()
    yield node
    node.stop(hard=True)


@pytest.fixture
def acl_broker(acl_kafka) -> Iterator[AclBroker]:
    """The test process administers the private broker; the relay is `User:relay` there."""
    broker = AclBroker(acl_kafka)
    with override_settings(KAFKA_CLIENT_CONFIG=broker.admin_config):
        ensure_topics(list(events.TOPICS))
        yield broker


def run_once(**options) -> int:
    return Relay(RelayOptions(once=True, **options)).run()


def _count_event(key: str) -> Event:
    return Event(topic=events.COUNT_VALUE_UPDATED, key=key, value={"blob": "x"})


def test_failures_of_the_cluster_do_not_count_toward_parking(new_topic):
    """A row meets an unreachable cluster first, then one refusal: one refusal of two."""
    small = new_topic(**{"max.message.bytes": "1000"})
    with transaction.atomic():
        (row,) = enqueue(Event(topic=small, key="refused", value={"blob": token_urlsafe(5000)}))

    unreachable = {**settings.KAFKA_CLIENT_CONFIG, "bootstrap.servers": "127.0.0.1:1"}
    quick_timeout = {**settings.KAFKA_PRODUCER_CONFIG, "message.timeout.ms": 500}
    with override_settings(KAFKA_CLIENT_CONFIG=unreachable, KAFKA_PRODUCER_CONFIG=quick_timeout):
        assert run_once(max_attempts=2) == 1
    row.refresh_from_db()
    assert row.state == "pending" and "timed out" in row.last_error.lower()

    run_once(max_attempts=2)  # the broker refuses it: the first refusal
    row.refresh_from_db()
    assert "too large" in row.last_error.lower()
    assert (row.state, row.attempts) == ("pending", 1)


def test_a_refused_authorization_parks_no_row(acl_broker):
    denied_topic = topic_name(events.COUNT_INFO_UPDATED)
    acl_broker.deny((ResourceType.TOPIC, denied_topic, AclOperation.WRITE))
    with transaction.atomic():
        denied, healthy = enqueue(
            Event(topic=events.COUNT_INFO_UPDATED, key="denied", value={"blob": "x"}),
            _count_event("healthy"),
        )

    with override_settings(KAFKA_CLIENT_CONFIG=acl_broker.relay_config):
        for _ in range(2):
            run_once(max_attempts=1)
    denied.refresh_from_db(), healthy.refresh_from_db()
    assert "authoriz" in denied.last_error.lower()
    assert (denied.state, denied.attempts, healthy.state) == ("pending", 0, "published")

    acl_broker.allow_again()
    with override_settings(KAFKA_CLIENT_CONFIG=acl_broker.relay_config):
        assert run_once(max_attempts=1) == 0
    denied.refresh_from_db()
    assert denied.state == "published"


def test_a_fatal_producer_error_gets_a_new_producer_and_the_relay_goes_on(acl_broker, caplog):
    """Without the right to write anywhere, the idempotent producer's InitProducerId fails
    with CLUSTER_AUTHORIZATION_FAILED, which librdkafka makes a fatal error. (An ACL on the
    cluster also stops this broker from taking ACL changes, so the denial stays.)"""
    acl_broker.deny(
        (ResourceType.BROKER, "kafka-cluster", AclOperation.IDEMPOTENT_WRITE),
        (ResourceType.TOPIC, "*", AclOperation.WRITE),
    )
    with transaction.atomic():
        (row,) = enqueue(_count_event("after-a-fatal-error"))

    caplog.set_level(logging.ERROR, logger="outbox")
    with override_settings(KAFKA_CLIENT_CONFIG=acl_broker.relay_config):
        relay = Relay(RelayOptions(max_attempts=1))
        serving = threading.Thread(target=relay.run)
        serving.start()
        try:
            wait_for(
                lambda: caplog.text.count("starting a new one") >= 2 or not serving.is_alive(),
                60,
                "two fatal producer errors",
            )
            assert serving.is_alive(), "the relay ended on a fatal producer error"
        finally:
            relay.stop()
            serving.join(60)
    assert not serving.is_alive()
    row.refresh_from_db()
    assert (row.state, row.attempts) == ("pending", 0)
    assert "authorization" in row.last_error.lower()
