"""The metrics textfile: merge rules, the exposition format, and concurrent writers."""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tracker import metrics
from tracker.metrics import CommandMeter, Observed, merge, parse, record, render

RUN = (("command", "run"), ("namespace", "main"))


def key(name: str, labels=RUN, **extra: str):
    return name, tuple(sorted(labels + tuple(extra.items())))


def client_samples(text: str) -> dict:
    """What the Prometheus client library reads from ``text``."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_success_then_failure_keeps_the_last_success(tmp_path: Path) -> None:
    path = tmp_path / "tracker.prom"
    record(path, "main", "run", status=0, finished_at=1000.5, duration=12, observed=Observed(units={"done": 3, "skipped": 2}, rows=30, bytes=300, replica_lag_seconds=4))
    record(path, "main", "run", status=1, finished_at=2000, duration=5, observed=Observed(units={"done": 1, "failed": 2}, rows=10, bytes=100))
    got = client_samples(path.read_text())
    assert got[key("tracker_last_success_timestamp_seconds")] == 1000.5
    assert got[key("tracker_last_run_timestamp_seconds")] == 2000
    assert got[key("tracker_last_exit_status")] == 1
    assert got[key("tracker_run_duration_seconds")] == 5
    assert got[key("tracker_units_total", result="done")] == 4
    assert got[key("tracker_units_total", result="failed")] == 2
    assert got[key("tracker_units_total", result="skipped")] == 2
    assert got[key("tracker_rows_total")] == 40 and got[key("tracker_bytes_total")] == 400
    assert key("tracker_replica_lag_seconds") not in got  # unknown this time: not stale


def test_a_failure_before_any_success_says_never(tmp_path: Path) -> None:
    path = tmp_path / "tracker.prom"
    record(path, "main", "verify", status=2, finished_at=50, duration=0.1, observed=Observed())
    got = client_samples(path.read_text())
    verify = (("command", "verify"), ("namespace", "main"))
    assert got[key("tracker_last_success_timestamp_seconds", verify)] == 0
    assert got[key("tracker_last_run_timestamp_seconds", verify)] == 50
    assert not any(name == "tracker_units_total" for name, _ in got)  # nothing counted, nothing made up


def test_a_failure_that_counted_nothing_carries_the_counters_on() -> None:
    first = merge({}, "main", "run", status=0, finished_at=1, duration=1, observed=Observed(units={"done": 5}, rows=7, bytes=9))
    second = merge(first, "main", "run", status=1, finished_at=2, duration=1, observed=Observed())
    for name in ("tracker_rows_total", "tracker_bytes_total"):
        assert second[key(name)] == first[key(name)]
    for result in metrics.RESULTS:
        assert second[key("tracker_units_total", result=result)] == first[key("tracker_units_total", result=result)]


def test_other_commands_and_namespaces_are_left_alone() -> None:
    other_ns = (("command", "run"), ("namespace", "other"))
    dump = (("command", "dump"), ("namespace", "main"))
    series = merge({}, "other", "run", status=0, finished_at=10, duration=1, observed=Observed(units={"done": 1}))
    series = merge(series, "main", "dump", status=0, finished_at=11, duration=1, observed=Observed(units={"done": 2}))
    before = dict(series)
    series = merge(series, "main", "run", status=0, finished_at=12, duration=1, observed=Observed(units={"done": 3}))
    for labels in (other_ns, dump):
        mine = {k: v for k, v in series.items() if dict(k[1]).items() >= dict(labels).items()}
        assert mine == {k: v for k, v in before.items() if dict(k[1]).items() >= dict(labels).items()}
    assert series[key("tracker_units_total", result="done")] == 3


def test_verify_gauges() -> None:
    verify = (("command", "verify"), ("namespace", "main"))
    series = merge({}, "main", "verify", status=1, finished_at=5, duration=1, observed=Observed(tables_incomplete=3, objects_bad=2))
    assert series[key("tracker_tables_incomplete", verify)] == 3
    assert series[key("tracker_objects_bad", verify)] == 2
    series = merge(series, "main", "verify", status=0, finished_at=6, duration=1, observed=Observed(tables_incomplete=0))
    assert series[key("tracker_tables_incomplete", verify)] == 0
    assert key("tracker_objects_bad", verify) not in series  # no --deep this time


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    """Each writer adds one unit under the file's lock; every addition must survive."""
    path = tmp_path / "tracker.prom"
    writers, rounds = 6, 5

    def write(n: int) -> None:
        for _ in range(rounds):
            record(path, "main", "run", status=0, finished_at=n, duration=0, observed=Observed(units={"done": 1}))
            record(path, f"ns{n}", "dump", status=0, finished_at=n, duration=0, observed=Observed(units={"done": 1}))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = client_samples(path.read_text())
    assert got[key("tracker_units_total", result="done")] == writers * rounds
    for n in range(writers):
        assert got[key("tracker_units_total", (("command", "dump"), ("namespace", f"ns{n}")), result="done")] == rounds
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tracker.prom", "tracker.prom.lock"]  # no temporaries left


label_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


labels_strategy = st.lists(
    st.tuples(st.sampled_from(["namespace", "command", "result"]), label_text), max_size=3, unique_by=lambda p: p[0]
).map(lambda pairs: tuple(sorted(pairs)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(metrics.METRICS)), labels_strategy, finite), max_size=8))
def test_render_then_parse_gives_the_same_series(raw) -> None:
    series = {(name, labels): value for name, labels, value in raw}
    text = render(series)
    assert parse(text) == series
    assert client_samples(text) == series  # the Prometheus client library agrees


def test_special_values_and_unknown_lines(caplog: pytest.LogCaptureFixture) -> None:
    series = {key("tracker_replica_lag_seconds"): math.inf, key("tracker_run_duration_seconds"): 1e20}
    assert parse(render(series)) == series
    with caplog.at_level(logging.WARNING, logger="tracker.metrics"):
        assert parse("garbage line here\nok_metric 1\n") == {("ok_metric", ()): 1.0}
    assert "event=metrics_line_dropped" in caplog.text


# --- CommandMeter: what the CLI drives ----------------------------------------------


def test_meter_writes_once_with_the_bound_namespace(tmp_path: Path) -> None:
    path = tmp_path / "tracker.prom"
    clock = iter([100.0, 130.0])
    meter = CommandMeter("dump", clock=lambda: 1000.0, monotonic=lambda: next(clock))
    meter.bind(path, "main")
    meter.count(done=2, failed=1, rows=20, nbytes=200)
    meter.finish(1)
    meter.finish(0)  # a second finish changes nothing
    got = client_samples(path.read_text())
    dump = (("command", "dump"), ("namespace", "main"))
    assert got[key("tracker_run_duration_seconds", dump)] == 30
    assert got[key("tracker_last_exit_status", dump)] == 1
    assert got[key("tracker_last_success_timestamp_seconds", dump)] == 0
    assert got[key("tracker_units_total", dump, result="failed")] == 1


def test_meter_writes_nothing_without_a_file_when_disabled_or_for_other_commands(tmp_path: Path) -> None:
    path = tmp_path / "tracker.prom"
    unbound = CommandMeter("run")
    unbound.finish(0)  # no metrics_file configured (or the config did not load)
    disabled = CommandMeter("run")
    disabled.bind(path, "main")
    disabled.disable()
    disabled.finish(0)
    cat = CommandMeter("cat")
    cat.bind(path, "main")
    cat.finish(0)
    assert not path.exists()


def test_a_metrics_file_that_cannot_be_written_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    meter = CommandMeter("run")
    meter.bind(tmp_path / "no-such-dir" / "tracker.prom", "main")
    with caplog.at_level(logging.WARNING, logger="tracker.metrics"):
        meter.finish(0)
    assert "event=metrics_write_failed" in caplog.text
