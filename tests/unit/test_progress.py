"""The terminal progress bar: its text, its painting, and silence when disabled."""

from __future__ import annotations

import io
import threading
import time

from tests.unit.fakes import FakeClock, hammer
from tracker.dump.progress import ProgressBar, combine, render


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_render_midway() -> None:
    # 1.2 GB in 12 s = 100 MB/s; 0.9 GB left = 9 s
    text = render(6, 10, 1_200_000_000, 2_100_000_000, elapsed=12.0)
    assert text == "[###########---------] 57%  6/10 units  1.2/2.1 GB  100 MB/s  ETA 0:09"


def test_render_long_eta_and_small_sizes() -> None:
    text = render(0, 3, 500_000, 900_000_000, elapsed=10.0)
    assert text == "[--------------------] 0%  0/3 units  0.5/900.0 MB  50 kB/s  ETA 4:59:50"


def test_render_caps_at_99_until_every_unit_is_done() -> None:
    text = render(9, 10, 3_000_000_000, 2_000_000_000, elapsed=10.0)
    assert " 99%  9/10 units  3.0/2.0 GB " in text and text.endswith("ETA -:--")
    assert render(10, 10, 1_000_000_000, 2_000_000_000, elapsed=10.0).startswith("[" + "#" * 20 + "] 100%")


def test_render_before_anything_moved() -> None:
    assert render(0, 0, 0, 0, elapsed=0.0) == "[####################] 100%  0/0 units  0.0/0.0 B  0 B/s  ETA 0:00"
    assert render(0, 4, 0, 0, elapsed=1.0).endswith("0 B/s  ETA -:--")


def test_enabled_bar_paints_over_one_line_and_ends_it() -> None:
    clock = FakeClock(50.0)
    stream = io.StringIO()
    with ProgressBar(2, 2_000_000, stream=stream, enabled=True, interval=3600, clock=clock) as bar:
        clock.now += 1
        bar.add(1_000_000)
        bar.unit_done()
        bar.paint()
        clock.now += 1
        bar.add(1_000_000)
        bar.unit_done()
    assert stream.getvalue() == (
        "\r[##########----------] 50%  1/2 units  1.0/2.0 MB  1 MB/s  ETA 0:01"
        "\r[####################] 100%  2/2 units  2.0/2.0 MB  1 MB/s  ETA 0:00\n"
    )


def test_shorter_line_blanks_the_rest_of_the_longer_one() -> None:
    clock = FakeClock(50.0)
    stream = io.StringIO()
    bar = ProgressBar(1, 10_000_000, stream=stream, enabled=True, clock=clock)
    clock.now += 10_000
    bar.add(1)  # a very long ETA
    bar.paint()
    first = stream.getvalue()
    bar.add(9_999_999)
    bar.unit_done()
    bar.paint()
    second = stream.getvalue()[len(first) :]
    assert len(second) == len(first), (first, second)
    assert second.rstrip(" ").endswith("ETA 0:00")


def test_enabled_bar_repaints_from_its_thread() -> None:
    stream = io.StringIO()
    with ProgressBar(1, 100, stream=stream, enabled=True, interval=0.01) as bar:
        deadline = time.monotonic() + 5
        while stream.getvalue().count("\r") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.getvalue().count("\r") >= 2
    assert stream.getvalue().endswith("\n")
    assert bar._thread is None


def test_disabled_bar_writes_nothing_and_starts_no_thread() -> None:
    stream = Tty()
    before = threading.active_count()
    with ProgressBar(3, 100, stream=stream, enabled=False, interval=0.001) as bar:
        assert threading.active_count() == before
        bar.add(100)
        bar.unit_done()
        assert bar.meter() is None
    assert stream.getvalue() == ""


def test_enabled_only_on_a_terminal_by_default() -> None:
    assert not ProgressBar(1, 1, stream=io.StringIO()).enabled
    assert ProgressBar(1, 1, stream=Tty()).enabled


def test_add_counts_from_many_threads() -> None:
    bar = ProgressBar(1, 8_000, stream=io.StringIO(), enabled=True)

    hammer(lambda: bar.add(1))
    assert " 8.0/8.0 kB " in bar.text()


def test_combine_feeds_every_meter_in_order() -> None:
    seen: list[tuple[str, int]] = []

    def first(nbytes: int) -> None:
        seen.append(("a", nbytes))

    def second(nbytes: int) -> None:
        seen.append(("b", nbytes))

    assert combine() is None and combine(None, None) is None
    assert combine(None, first) is first
    both = combine(first, None, second)
    assert both is not None
    both(7)
    assert seen == [("a", 7), ("b", 7)]


def test_units_taken_by_another_host_leave_the_totals() -> None:
    clock = FakeClock(50.0)
    bar = ProgressBar(total_units=4, total_bytes=4000, stream=Tty(), enabled=True, clock=clock)
    bar.drop(1000)
    bar.add(3000)
    for _ in range(3):
        bar.unit_done()
    assert bar.text().startswith("[" + "#" * (len(bar.text().split("]")[0]) - 1) + "] 100%  3/3 units")
