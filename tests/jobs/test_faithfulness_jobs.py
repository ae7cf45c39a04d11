"""The deletion test and the agreement as part of a job's batches: which rows carry them, the sample that no
batch size changes, a batch delivered twice, and the per-job sums against the stored arrays."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.jobs.batches import explanation_values, pending_reviews, run_batch, store_rows
from shared.jobs.faithfulness import compute, review_figures, sampled, summary
from shared.jobs.lifecycle import (
    DEFAULT_EVERY,
    JobRequestError,
    JobSpec,
    create_job,
    model_info,
    parse_target,
)
from shared.relevance.agreement import PAIRS
from shared.relevance.explainer import Explainer, load_explainer
from shared.relevance.faithfulness import DEFAULT_MAX_DELETED, DIRECTIONS, RANKINGS
from shared.settings import Settings
from shared.store.db import session_factory
from shared.store.models import Explanation, Job

RECORD = len(DIRECTIONS) * len(RANKINGS) * (DEFAULT_MAX_DELETED + 1)


def start(settings: Settings, spec: JobSpec, batch_size: int) -> tuple[int, list[list[str]]]:
    with session_factory(settings.effective_database_url)() as session:
        job, batches = create_job(
            session,
            spec,
            model_info(settings.model_path),
            batch_size=batch_size,
            max_texts=100,
            max_text_chars=10_000,
        )
        session.commit()
        return job.id, batches


def run_all(settings: Settings, spec: JobSpec, batch_size: int = 7) -> int:
    job_id, batches = start(settings, spec, batch_size)
    sessions = session_factory(settings.effective_database_url)
    for batch in batches:
        run_batch(sessions, load_explainer(settings.model_path), job_id, batch, max_deliveries=3)
    return job_id


def rows(settings: Settings, job_id: int) -> dict[str, Explanation]:
    with session_factory(settings.effective_database_url)() as session:
        query = select(Explanation).where(Explanation.job_id == job_id)
        return {r.review_id: r for r in session.scalars(query)}


def job(settings: Settings, job_id: int) -> Job:
    with session_factory(settings.effective_database_url)() as session:
        return session.get_one(Job, job_id)


def test_a_dataset_job_tests_every_nth_review_by_default(sqlite_settings: Settings) -> None:
    job_id = run_all(sqlite_settings, JobSpec(dataset="imdb-test", limit=60))
    stored, finished = rows(sqlite_settings, job_id), job(sqlite_settings, job_id)
    assert (finished.faithfulness, finished.faithfulness_every) == (True, DEFAULT_EVERY)
    tested = {i for i, r in stored.items() if r.deletion_probability is not None}
    assert tested == {i for i in stored if zlib.crc32(i.encode()) % DEFAULT_EVERY == 0}
    assert 0 < len(tested) < len(stored)
    for review_id in tested:
        row = stored[review_id]
        assert row.deletion_probability is not None and row.deletion_predicted is not None
        assert row.probabilities is not None and row.target_class is not None
        assert row.deletion_probability.shape == row.deletion_predicted.shape == (RECORD,)
        assert row.deletion_predicted.dtype == np.int8
        first = row.deletion_probability.reshape(len(DIRECTIONS), len(RANKINGS), -1)[:, :, 0]  # (D, R)
        assert np.allclose(first, row.probabilities[row.target_class], atol=1e-5)  # k = 0: nothing deleted
    assert all(r.deletion_predicted is None for i, r in stored.items() if i not in tested)
    assert all(
        r.agreement_spearman is not None and r.agreement_spearman.shape == (len(PAIRS),)
        for r in stored.values()
    )
    assert finished.faithfulness_seconds > 0


def test_a_texts_job_has_agreement_but_no_deletion_test_unless_asked(sqlite_settings: Settings) -> None:
    texts = ("good film, the actor was great", "boring plot and a bad script", "awful")
    plain = rows(sqlite_settings, run_all(sqlite_settings, JobSpec(texts=texts)))
    assert all(r.deletion_probability is None and r.deletion_predicted is None for r in plain.values())
    assert all(r.agreement_overlap is not None for r in plain.values())
    asked = rows(sqlite_settings, run_all(sqlite_settings, JobSpec(texts=texts, faithfulness=True)))
    assert all(r.deletion_probability is not None for r in asked.values())  # every text: 1 by default
    off = rows(
        sqlite_settings, run_all(sqlite_settings, JobSpec(dataset="imdb-test", limit=20, faithfulness=False))
    )
    assert all(r.deletion_probability is None for r in off.values())


def test_the_sample_and_its_records_do_not_depend_on_the_batch_size(sqlite_settings: Settings) -> None:
    spec = JobSpec(dataset="imdb-test", limit=50, faithfulness_every=3)
    small, large = (rows(sqlite_settings, run_all(sqlite_settings, spec, size)) for size in (4, 50))
    assert small.keys() == large.keys()
    tested = {i for i, r in small.items() if r.deletion_probability is not None}
    assert tested == {i for i, r in large.items() if r.deletion_probability is not None}
    assert tested == {i for i in small if sampled(i, 3)} and tested
    for i in tested:
        a, b = small[i], large[i]
        assert a.deletion_probability is not None and b.deletion_probability is not None
        assert a.agreement_spearman is not None and b.agreement_spearman is not None
        np.testing.assert_allclose(a.deletion_probability, b.deletion_probability, atol=1e-5)
        np.testing.assert_array_equal(a.deletion_predicted, b.deletion_predicted)
        np.testing.assert_allclose(a.agreement_spearman, b.agreement_spearman, atol=1e-6)


def test_a_batch_delivered_twice_counts_its_reviews_once(sqlite_settings: Settings) -> None:
    """The second delivery explains and tests the same reviews again (as one racing the first would); its
    rows are refused by the idempotent insert, so the job's sums stay as they were."""
    url = sqlite_settings.effective_database_url
    sessions: sessionmaker[Session] = session_factory(url)
    explainer: Explainer = load_explainer(sqlite_settings.model_path)
    job_id, batches = start(sqlite_settings, JobSpec(dataset="imdb-test", limit=30, faithfulness_every=1), 10)
    with sessions() as session:  # what the racing delivery read before the first one stored its rows
        reviews = pending_reviews(session, job_id, batches[0])
    for batch in batches:
        run_batch(sessions, explainer, job_id, batch, max_deliveries=3)
    with sessions() as session:
        before = summary(session.get_one(Job, job_id), compute(session, job_id))
        counters = session.get_one(Job, job_id).done

    results = explainer.explain([r.text for r in reviews], parse_target("predicted"))
    figures = review_figures(explainer.forward_model, [r.id for r in reviews], results, 1)
    again = [
        explanation_values(job_id, r, result, ["lrp"]) | extra
        for r, result, extra in zip(reviews, results, figures, strict=True)
    ]
    assert store_rows(sessions, job_id, again, (0.0, 0.0, 0.0)) == "stored 0 of 10 rows (0 failed)"
    with sessions() as session:
        after = summary(session.get_one(Job, job_id), compute(session, job_id))
        assert session.get_one(Job, job_id).done == counters == 30
    assert after["reviews"] == before["reviews"] == 30
    assert (after["curves"], after["aopc"], after["agreement"]) == (
        before["curves"],
        before["aopc"],
        before["agreement"],
    )


@pytest.mark.parametrize("every", [0, -2])
def test_a_sample_rate_below_one_is_refused(sqlite_settings: Settings, every: int) -> None:
    with pytest.raises(JobRequestError, match="faithfulness_every"):
        start(sqlite_settings, JobSpec(dataset="imdb-test", faithfulness_every=every), 7)


def test_sampled_is_a_stable_hash_of_the_id() -> None:
    ids = [f"test/pos/{n}_9" for n in range(400)]
    chosen = [i for i in ids if sampled(i, 4)]
    assert chosen == [i for i in ids if zlib.crc32(i.encode()) % 4 == 0]  # not Python's salted hash
    assert 60 < len(chosen) < 140 and all(sampled(i, 1) for i in ids)
