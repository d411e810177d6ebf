"""`make services-stop` (scripts/services.py stop) stops what runs, whatever is down already.

Pure units: the commands that would stop real servers are replaced, since the suite's own
PostgreSQL, Redis and Kafka must stay up.
"""

from __future__ import annotations

from scripts import services


def test_a_postgres_cluster_that_is_not_running_is_left_alone(monkeypatch, capsys):
    ran: list[list[str]] = []
    monkeypatch.setattr(
        services.Postgres, "_cluster_on_port", staticmethod(lambda port: ("15", "x"))
    )
    monkeypatch.setattr(services, "is_listening", lambda host, port, timeout=0.5: False)
    monkeypatch.setattr(services, "run", lambda cmd, **kwargs: ran.append(cmd))

    services.Postgres(url="postgres://u:p@127.0.0.1:5999/db").stop()

    assert ran == []  # pg_ctlcluster stop would fail: the cluster is down
    assert "not running" in capsys.readouterr().out


def test_stop_goes_on_to_the_next_service_when_one_fails(monkeypatch, capsys):
    stopped: list[str] = []

    class Failing:
        def stop(self) -> None:
            raise services.ServiceError("cannot stop")

    class Stoppable:
        def stop(self) -> None:
            stopped.append("stoppable")

    monkeypatch.setattr(services, "SERVICES", {"failing": Failing, "stoppable": Stoppable})

    assert services.main(["stop"]) == 1
    assert stopped == ["stoppable"]
    assert "cannot stop" in capsys.readouterr().err
