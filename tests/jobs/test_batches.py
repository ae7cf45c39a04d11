"""The batch function the worker task calls (a failing review, a redone batch) and the migrations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.jobs.batches import explanation_values, pending_reviews, run_batch, store_rows
from shared.jobs.faithfulness import review_figures
from shared.jobs.lifecycle import JobSpec, create_job, model_info, parse_target
from shared.relevance.explainer import Explainer
from shared.relevance.tokenizer import Vocabulary
from shared.relevance.weights import load_weights
from shared.settings import PROJECT_ROOT
from shared.store.db import migrate, session_factory
from shared.store.models import Explanation, Job
from tests.helpers.service import reset_postgres, write_model


def test_a_failing_review_is_recorded_with_its_reason_and_the_job_goes_on(tmp_path: Path) -> None:
    # A real mismatch, no mock: the vocabulary yields id 103 for "zebra", the model only knows ids < 50.
    model = write_model(tmp_path / "small.npz", vocab=50)
    explainer = Explainer(load_weights(model), Vocabulary({"good": 1, "zebra": 100}, 10_000))
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    migrate(url)
    sessions = session_factory(url)
    with sessions() as session:
        spec = JobSpec(texts=("good good", "a zebra", "good"))
        job, batches = create_job(
            session, spec, model_info(model), batch_size=10, max_texts=10, max_text_chars=1000
        )
        session.commit()
    assert batches == [[f"texts/{job.id}/{n}" for n in range(3)]]

    assert run(sessions, explainer, job.id, batches[0]) == "stored 3 of 3 rows (1 failed)"
    assert run(sessions, explainer, job.id, batches[0]).startswith("skipped")  # the job is done
    with sessions() as session:
        stored = session.get_one(Job, job.id)
        assert (stored.status, stored.done, stored.failed) == ("succeeded", 2, 1)
        rows = {r.review_id: r for r in session.scalars(select(Explanation))}
    failed = rows[f"texts/{job.id}/1"]
    assert failed.error is not None and "outside" in failed.error and failed.lrp is None
    assert rows[f"texts/{job.id}/0"].error is None and rows[f"texts/{job.id}/0"].lrp is not None


def test_a_batch_redone_while_the_job_runs_adds_nothing(tmp_path: Path) -> None:
    model = write_model(tmp_path / "model.npz")
    explainer = Explainer(load_weights(model), Vocabulary({"good": 1}, 10_000))
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    migrate(url)
    sessions = session_factory(url)
    with sessions() as session:
        job, batches = create_job(
            session,
            JobSpec(texts=("good",) * 5),
            model_info(model),
            batch_size=2,
            max_texts=10,
            max_text_chars=1000,
        )
        session.commit()
    assert run(sessions, explainer, job.id, batches[0]) == "stored 2 of 2 rows (0 failed)"
    assert run(sessions, explainer, job.id, batches[0]) == "nothing to do: all 2 reviews are stored"
    with sessions() as session:
        stored = session.get_one(Job, job.id)
        assert (stored.status, stored.done) == ("running", 2)


def test_a_worker_with_another_model_fails_the_job(tmp_path: Path) -> None:
    model, other = write_model(tmp_path / "a.npz", seed=1), write_model(tmp_path / "b.npz", seed=2)
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    migrate(url)
    sessions = session_factory(url)
    with sessions() as session:
        job, batches = create_job(
            session,
            JobSpec(texts=("good",)),
            model_info(model),
            batch_size=2,
            max_texts=10,
            max_text_chars=1000,
        )
        session.commit()
    explainer = Explainer(load_weights(other), Vocabulary({}, 10_000))
    assert run(sessions, explainer, job.id, batches[0]).startswith("failed")
    with sessions() as session:
        stored = session.get_one(Job, job.id)
        assert stored.status == "failed" and stored.error is not None and "model" in stored.error


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_rows_stored_twice_at_once_are_stored_and_counted_once_with_every_column(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # PostgreSQL stores through COPY into a staging table, SQLite through executemany: both must read back
    # every column as it was explained (arrays, NULLs of a failed review) and count a second store as nothing.
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
        reset_postgres(url)
    model = write_model(tmp_path / "small.npz", vocab=50)
    explainer = Explainer(load_weights(model), Vocabulary({"good": 1, "zebra": 100}, 10_000))
    migrate(url)
    sessions = session_factory(url)
    with sessions() as session:
        spec = JobSpec(texts=("good good", "a zebra", "good"), faithfulness=True, faithfulness_every=1)
        job, (batch,) = create_job(
            session, spec, model_info(model), batch_size=10, max_texts=10, max_text_chars=1000
        )
        session.commit()
        reviews = pending_reviews(session, job.id, batch)
    results = explainer.explain([r.text for r in reviews], parse_target(job.target))
    figures = review_figures(explainer.forward_model, batch, results, every=1)
    rows = [
        explanation_values(job.id, r, result, job.method_list) | extra
        for r, result, extra in zip(reviews, results, figures, strict=True)
    ]

    assert store_rows(sessions, job.id, rows, (1.0, 2.0, 3.0)) == "stored 3 of 3 rows (1 failed)"
    assert store_rows(sessions, job.id, rows, (1.0, 2.0, 3.0)) == "stored 0 of 3 rows (0 failed)"
    with sessions() as session:
        stored = session.get_one(Job, job.id)
        assert (stored.status, stored.done, stored.failed, stored.render_seconds) == ("succeeded", 2, 1, 4.0)
        read = {r.review_id: r for r in session.scalars(select(Explanation))}
    assert rows[0]["deletion_probability"] is not None and rows[1]["lrp"] is None  # both kinds are checked
    for row in rows:
        for name, value in row.items():
            back = getattr(read[row["review_id"]], name)
            if isinstance(value, np.ndarray):
                assert back.dtype.kind == value.dtype.kind and np.array_equal(back, value, equal_nan=True), (
                    name
                )
            else:
                assert back == value or (back is None and value is None), name


def run(sessions: sessionmaker[Session], explainer: Explainer, job_id: int, review_ids: list[str]) -> str:
    """run_batch as the worker calls it; its summary."""
    return run_batch(sessions, explainer, job_id, review_ids, max_deliveries=3).summary


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrations_up_down_and_check(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
        reset_postgres(url)
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
    command.check(config)  # the models and the migrations agree (raises otherwise)
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    command.check(config)
