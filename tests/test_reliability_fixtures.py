"""The fault-injection fixtures themselves work: private services stop, crash and come back."""

import psycopg
import pytest
from confluent_kafka import Producer

from tests.faults import create_topics, read_topics


def test_private_postgres_survives_a_crash_and_restart(private_postgres):
    url = private_postgres.create_database("faults_probe")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE probe (n int); INSERT INTO probe VALUES (1)")
    conn = psycopg.connect(url, autocommit=True)

    private_postgres.stop("immediate")
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    private_postgres.start()

    with psycopg.connect(url) as fresh:
        assert fresh.execute("SELECT n FROM probe").fetchall() == [(1,)]


@pytest.mark.slow
def test_three_broker_cluster_keeps_acks_all_writes_with_one_broker_down(kafka_cluster):
    topic = "faults-probe"
    create_topics(kafka_cluster.bootstrap, [topic], partitions=3, replication=3)
    producer = Producer({"bootstrap.servers": kafka_cluster.bootstrap, "acks": "all"})
    failures = []

    def send(n: int) -> None:
        for i in range(n):
            producer.produce(topic, key=str(i), value=b"{}", on_delivery=_collect(failures))
        assert producer.flush(60) == 0

    send(100)
    kafka_cluster.nodes[0].stop(hard=True)
    send(100)

    messages = read_topics(kafka_cluster.bootstrap, [topic], lambda m: len(m) >= 200, 60)
    assert (len(messages), failures) == (200, [])


def _collect(failures: list):
    return lambda err, _msg: err and failures.append(err)
