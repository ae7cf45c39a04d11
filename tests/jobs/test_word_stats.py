"""Word statistics: rankings oriented to fixed classes (on sums worked out by hand), and storage in the
database, so that two web processes with instance folders of their own serve the same statistics."""

from __future__ import annotations

import functools
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from api import create_app
from shared.jobs import word_stats
from shared.jobs.lifecycle import JobSpec
from shared.jobs.queue import stop_embedded_redis
from shared.jobs.removal import delete_job
from shared.jobs.word_stats import (
    View,
    WordIndex,
    WordStats,
    job_word_stats,
    prepare_when_finished,
    version,
)
from shared.store.db import session_factory
from shared.store.models import Job, JobStatus, JobWordStats
from tests.helpers.service import migrated_sqlite, prepare_database, reset_postgres
from tests.ui.conftest import run_job_here

WORDS = np.array(["<pad>", "<start>", "<unk>", "superb", "waste"])


def made_up_stats() -> WordStats:
    """Three reviews of a two-class model, groups (explained, predicted) = target * 2 + predicted:
    A (1, 1): superb LRP +2, SA 0.5; B (0, 0): waste LRP +3, superb LRP -1, SA 1.0 and 0.2;
    C (0, 0): waste LRP +1, SA 3.0."""
    occurrences = np.zeros((4, 5), np.int64)  # (G, V)
    occurrences[3, [1, 3]] = 1
    occurrences[0, [1, 3, 4]] = [2, 1, 2]
    reviews = occurrences.copy()  # each word at most once per review
    lrp = np.zeros((4, 5))  # (G, V)
    lrp[3, 3] = 2.0
    lrp[0, 3], lrp[0, 4] = -1.0, 4.0
    sa = np.zeros((4, 5))  # (G, V)
    sa[3, 3] = 0.5
    sa[0, 3], sa[0, 4] = 0.2, 4.0
    index = WordIndex(
        {}, np.array([], np.str_), np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
    )
    return WordStats(
        2, WORDS, occurrences, reviews, {"lrp": lrp, "sa": sa}, {"lrp": 3.0, "sa": 3.0}, 3, index
    )


def ranked(stats: WordStats, view: View, min_reviews: int = 1) -> list[tuple[str, float, int, int]]:
    return [(w.word, w.mean, w.occurrences, w.reviews) for w in stats.ranking(view, min_reviews, 10)]


def test_signed_methods_are_oriented_toward_each_class() -> None:
    stats = made_up_stats()
    # Toward positive: A as it is, B and C negated. superb: (2 + 1) / 2; waste: -(3 + 1) / 2.
    assert ranked(stats, View("lrp", 1)) == [("superb", 1.5, 2, 2), ("waste", -2.0, 2, 2)]
    assert ranked(stats, View("lrp", 0)) == [("waste", 2.0, 2, 2), ("superb", -1.5, 2, 2)]
    assert stats.view_reviews(View("lrp", 1)) == 3
    assert [w for w, *_ in ranked(stats, View("lrp", 1), min_reviews=3)] == []


def test_sa_is_ranked_per_predicted_class() -> None:
    stats = made_up_stats()
    assert ranked(stats, View("sa", 0)) == [("waste", 2.0, 2, 2), ("superb", 0.2, 1, 1)]
    assert ranked(stats, View("sa", 1)) == [("superb", 0.5, 1, 1)]  # waste: never in a review predicted so
    assert ranked(stats, View("sa", 0), min_reviews=2) == [("waste", 2.0, 2, 2)]
    assert (stats.view_reviews(View("sa", 0)), stats.view_reviews(View("sa", 1))) == (2, 1)
    assert all(w.weak for w in stats.ranking(View("sa", 0), 1, 10))  # in fewer than 10 reviews


def test_more_than_two_classes_count_only_the_reviews_explained_for_each() -> None:
    words = np.array(["<pad>", "<start>", "<unk>", "fine"])
    occurrences = np.zeros((9, 4), np.int64)  # (G, V): three classes
    occurrences[[0, 4, 8], 3] = 1  # "fine" once in a review explained (and predicted) as each class
    lrp = np.zeros((9, 4))  # (G, V)
    lrp[[0, 4, 8], 3] = [1.0, 2.0, 4.0]
    index = WordIndex(
        {}, np.array([], np.str_), np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
    )
    stats = WordStats(3, words, occurrences, occurrences.copy(), {"lrp": lrp}, {"lrp": 4.0}, 3, index)
    assert [ranked(stats, View("lrp", c)) for c in range(3)] == [[("fine", v, 1, 1)] for v in (1.0, 2.0, 4.0)]


def words_body(client: FlaskClient, job_id: int) -> str:
    response = client.get(f"/jobs/{job_id}/words?min_reviews=2")
    assert response.status_code == 200
    return response.get_data(as_text=True)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_web_processes_serve_the_same_stats_from_the_database(
    backend: str,
    tmp_path: Path,
    assets: tuple[Path, Path],
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = migrated_sqlite(tmp_path, assets, batch_size=50)
    if backend == "postgres":
        url = request.getfixturevalue("postgres_url")
        reset_postgres(url)
        settings = replace(settings, database_url=url, secret_key="test")  # a deployment: needs a key
        prepare_database(settings)
    job_id = run_job_here(settings, JobSpec(dataset="imdb-test"))
    first, second = (replace(settings, instance_dir=tmp_path / name) for name in ("host-a", "host-b"))
    for host in (first, second):  # each app starts an embedded Redis under its folder
        request.addfinalizer(functools.partial(stop_embedded_redis, host.instance_dir))
    body = words_body(create_app({"SETTINGS": first, "TESTING": True}).test_client(), job_id)
    assert re.search(r'<table class="word-table" id="words-lrp-1">.*?<td>', body, re.S)
    sessions = session_factory(settings.effective_database_url)
    with sessions() as session:
        job = session.get_one(Job, job_id)
        stored = session.get_one(JobWordStats, job_id)
        assert stored.version == version(job) and len(stored.data) > 0

    # Another process on another host: nothing in memory, an instance folder of its own, and no computing.
    monkeypatch.setattr(word_stats, "_stats", word_stats._Kept(word_stats.STATS_KEPT))
    monkeypatch.setattr(word_stats, "_charts", word_stats._Kept(word_stats.CHARTS_KEPT))
    monkeypatch.setattr(word_stats, "compute", lambda *_: pytest.fail("computed again"))
    other = create_app({"SETTINGS": second, "TESTING": True}).test_client()
    assert words_body(other, job_id) == body
    assert other.get(f"/jobs/{job_id}/words/lrp.png?min_reviews=2").data.startswith(b"\x89PNG")
    assert other.get(f"/api/jobs/{job_id}/words").status_code == 200
    for host in (first, second):  # nothing of the statistics in the instance folders
        assert not [p for p in host.instance_dir.rglob("*") if p.suffix in (".npz", ".png")]
    monkeypatch.undo()

    # The worker's preparation finds them stored; rows that changed afterwards are computed again.
    with sessions() as session:
        assert prepare_when_finished(session, job_id) is False
        session.execute(update(Job).where(Job.id == job_id).values(failed=Job.failed + 1))
        session.commit()
        assert prepare_when_finished(session, job_id) is True
        job = session.get_one(Job, job_id)
        assert session.scalar(select(JobWordStats.version)) == version(job)
        assert job_word_stats(session, settings.effective_database_url, job).review_count == job.done
        session.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.RUNNING))
        session.commit()
        assert prepare_when_finished(session, job_id) is False  # only a job that has succeeded
        delete_job(session, job_id)
        assert session.scalar(select(JobWordStats.job_id)) is None  # deleted with its job
