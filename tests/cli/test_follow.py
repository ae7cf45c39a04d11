"""`relevance submit --wait`'s progress bar shows the job's own rate (the API's), never the burst tqdm would
measure when several batches land between two polls."""

from __future__ import annotations

import io
import re
import sys
from typing import Any

import pytest

from shared.cli import jobs
from shared.cli.jobs import follow


def job(done: int, status: str, rate: float | None, eta: float | None) -> dict[str, Any]:
    return {
        "id": 7,
        "status": status,
        "total": 1000,
        "done": done,
        "failed": 0,
        "reviews_per_second": rate,
        "eta_seconds": eta,
    }


class Polled:
    """What the API answers, poll after poll (a stand-in for jobs.Api in this one function's test)."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers

    def job(self, job_id: int) -> dict[str, Any]:
        assert job_id == 7
        return self.answers.pop(0)


def test_the_bar_shows_the_jobs_own_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [
        job(0, "queued", None, None),
        job(100, "running", 150.0, 6.0),
        job(900, "running", 160.0, 0.6),  # 800 reviews in one poll: tqdm alone would say thousands/s
        job(1000, "succeeded", 155.0, None),
    ]
    err = io.StringIO()
    monkeypatch.setattr(jobs, "POLL_SECONDS", 0.0)
    monkeypatch.setattr(sys, "stderr", err)  # where tqdm draws
    final = follow(Polled(answers), 7)  # type: ignore[arg-type]
    assert final["status"] == "succeeded"
    shown = err.getvalue()
    rates = re.findall(r"([\d.]+)\s*reviews/s", shown)
    assert rates and set(rates) <= {"150", "160", "155"}, shown
    assert "ETA 1 s" in shown and "succeeded, 0 failed" in shown
    assert "it/s" not in shown and "s/ reviews" not in shown
