"""The re-queue sweep on its own (a migrated SQLite file, no broker): which jobs count as stalled, which
reviews it re-sends, and that two sweeps at once send a job's batches once."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from shared.jobs.batches import run_batch
from shared.jobs.lifecycle import JobSpec, create_job, model_info
from shared.jobs.recovery import requeue_stalled
from shared.relevance.explainer import load_explainer
from shared.settings import Settings
from shared.store.db import session_factory
from shared.store.models import Job, utcnow
from tests.helpers.service import migrated_sqlite

STALL = 60.0


def submit(sessions: sessionmaker[Session], settings: Settings, spec: JobSpec) -> tuple[int, list[list[str]]]:
    with sessions() as session:
        job, batches = create_job(
            session, spec, model_info(settings.model_path), batch_size=10, max_texts=100, max_text_chars=1000
        )
        session.commit()
        return job.id, batches


def age(sessions: sessionmaker[Session], job_id: int, seconds: float) -> None:
    """Move the job's progress clock back, as if nothing had happened for that long."""
    with sessions.begin() as session:
        clock = utcnow() - timedelta(seconds=seconds)
        session.execute(update(Job).where(Job.id == job_id).values(progressed_at=clock))


def sweep(sessions: sessionmaker[Session]) -> list[tuple[int, list[str]]]:
    sent: list[tuple[int, list[str]]] = []
    requeue_stalled(sessions, lambda job_id, batch: sent.append((job_id, batch)), STALL)
    return sent


def test_a_stalled_job_gets_exactly_its_missing_reviews_again(
    tmp_path: Path, assets: tuple[Path, Path]
) -> None:
    settings = migrated_sqlite(tmp_path, assets, batch_size=10)
    sessions = session_factory(settings.effective_database_url)
    dataset_job, batches = submit(sessions, settings, JobSpec(dataset="imdb-test", limit=35))
    texts_job, _ = submit(sessions, settings, JobSpec(texts=("good", "bad", "great")))
    explainer = load_explainer(settings.model_path)
    run_batch(sessions, explainer, dataset_job, batches[1], max_deliveries=3)  # reviews 10-19 stored

    assert sweep(sessions) == []  # nothing has stalled yet
    age(sessions, dataset_job, STALL + 1)
    age(sessions, texts_job, STALL + 1)
    sent = sweep(sessions)
    missing = batches[0] + batches[2] + batches[3]
    assert sent == [
        (dataset_job, missing[:10]),
        (dataset_job, missing[10:20]),
        (dataset_job, missing[20:]),
        (texts_job, [f"texts/{texts_job}/{n}" for n in range(3)]),
    ]
    assert sweep(sessions) == []  # re-sent jobs have their clock moved: not again before STALL seconds


def test_a_queued_job_waits_while_another_job_makes_progress(
    tmp_path: Path, assets: tuple[Path, Path]
) -> None:
    settings = migrated_sqlite(tmp_path, assets, batch_size=10)
    sessions = session_factory(settings.effective_database_url)
    waiting, _ = submit(sessions, settings, JobSpec(dataset="imdb-test", limit=10))
    working, batches = submit(sessions, settings, JobSpec(dataset="imdb-test", limit=20))
    age(sessions, waiting, STALL + 1)
    run_batch(sessions, load_explainer(settings.model_path), working, batches[0], max_deliveries=3)

    assert sweep(sessions) == []  # its batches are most likely queued behind the other job's
    age(sessions, working, STALL + 1)
    assert sorted({job_id for job_id, _ in sweep(sessions)}) == [waiting, working]  # nothing moves: both


def test_two_sweeps_at_once_send_a_job_once(tmp_path: Path, assets: tuple[Path, Path]) -> None:
    settings = migrated_sqlite(tmp_path, assets, batch_size=10)
    sessions = session_factory(settings.effective_database_url)
    job_id, _ = submit(sessions, settings, JobSpec(dataset="imdb-test", limit=10))
    age(sessions, job_id, STALL + 1)
    inner: list[list[tuple[int, list[str]]]] = []

    def send_while_another_sweep_runs(sent_job: int, batch: list[str]) -> None:
        if not inner:
            inner.append(sweep(sessions))  # a second sweep between this one's claim and its sends

    requeue_stalled(sessions, send_while_another_sweep_runs, STALL)
    assert inner == [[]]
