"""The benchmark plumbing: the result line format, percentiles and the collector of bench/run.py."""

import json

import pytest

from bench import run
from bench.common import emit, percentile, summary


def test_emit_prints_one_json_line_with_the_agreed_fields(capsys):
    emit("demo", {"rate": 10}, {"rate": "ops/s"}, baseline="nothing", ratio=2 / 3)
    line = capsys.readouterr().out
    assert line.count("\n") == 1
    assert json.loads(line) == {
        "name": "demo",
        "figures": {"rate": 10},
        "units": {"rate": "ops/s"},
        "baseline": "nothing",
        "ratio": 0.6667,
    }


def test_percentiles_are_nearest_rank():
    samples = list(range(1, 101))
    assert percentile(samples, 50) == 50
    assert percentile(samples, 99) == 99
    assert percentile([7.0], 99) == 7.0
    assert summary([3, 1, 2]) == {"p50": 2, "p99": 3, "max": 3}


def test_run_collects_result_lines_and_ignores_other_output():
    stdout = "\n".join(
        [
            "warming up",
            json.dumps({"name": "a", "figures": {}, "units": {}, "baseline": "", "ratio": None}),
            json.dumps({"not": "a result"}),
            "[1, 2]",
        ]
    )
    assert [result["name"] for result in run.result_lines(stdout)] == ["a"]


@pytest.mark.parametrize("code, error", [(0, "printed no result"), (3, "exit status 3")])
def test_run_reports_a_failing_benchmark(tmp_path, code, error):
    script = tmp_path / "bench_broken.py"
    script.write_text(f"import sys\nprint('no json here')\nsys.exit({code})\n")
    assert run.run_one(script) == ([], error)
