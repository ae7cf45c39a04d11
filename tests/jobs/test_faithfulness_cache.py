"""A running job's faithfulness sums are recomputed at most every RUNNING_REFRESH_SECONDS per process (a
unit test of the one memo function, with the clock and the computation replaced)."""

from __future__ import annotations

import pytest

from shared.jobs import faithfulness


def test_a_running_jobs_value_is_reused_within_the_refresh_window(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(faithfulness.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(faithfulness, "_running", {})
    made: list[int] = []

    def make() -> int:
        made.append(len(made))
        return len(made)

    assert faithfulness._while_running("db", 1, "sums", make) == 1
    clock[0] += faithfulness.RUNNING_REFRESH_SECONDS / 2
    assert faithfulness._while_running("db", 1, "sums", make) == 1  # reused
    assert faithfulness._while_running("db", 2, "sums", make) == 2  # another job: its own value
    clock[0] += faithfulness.RUNNING_REFRESH_SECONDS + 1
    assert faithfulness._while_running("db", 1, "sums", make) == 3  # stale: recomputed
    assert set(faithfulness._running) == {("db", 1, "sums")}  # the stale entry of job 2 was dropped
