"""KafkaErrorLog: a broker outage is told in a few lines, not one per reconnect attempt."""

import logging

import pytest
from confluent_kafka import KafkaError

from infra import logs
from infra.kafka import KafkaErrorLog

TRANSPORT = KafkaError(KafkaError._TRANSPORT, "127.0.0.1:9092/1: Connection refused")
ALL_DOWN = KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: now[0])
    return now


@pytest.fixture
def error_log(caplog) -> KafkaErrorLog:
    caplog.set_level(logging.INFO, logger="tests.kafka")
    return KafkaErrorLog(logging.getLogger("tests.kafka"), "Kafka")


def test_the_first_error_of_each_kind_is_a_warning_at_once(clock, error_log, caplog):
    error_log(TRANSPORT)
    error_log(ALL_DOWN)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"Kafka: {TRANSPORT.str()}"),
        ("WARNING", f"Kafka: {ALL_DOWN.str()}"),
    ]


def test_repeats_are_counted_into_one_line_every_ten_seconds(clock, error_log, caplog):
    for _ in range(25 * 8):  # 25 s of failed reconnects, 8 a second
        error_log(TRANSPORT)
        clock[0] += 0.125
    assert [r.getMessage() for r in caplog.records] == [
        f"Kafka: {TRANSPORT.str()}",
        f"Kafka: {TRANSPORT.str()} (79 more like it in the 10 s before)",
        f"Kafka: {TRANSPORT.str()} (79 more like it in the 10 s before)",
    ]


def test_fatal_errors_are_always_logged_at_error(clock, error_log, caplog):
    fatal = KafkaError(KafkaError._FATAL, "producer fenced", fatal=True)
    error_log(fatal)
    error_log(fatal)
    assert [r.levelname for r in caplog.records] == ["ERROR", "ERROR"]
