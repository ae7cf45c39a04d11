"""`make bench-ui`: server time of the web pages with 25,000 stored explanations on PostgreSQL.

Fills a PostgreSQL database of its own once (the IMDB test set, explained in this process with the same batch
code the workers run; kept for the next run), then requests every page kind many times through Flask's test
client (no network in the figure: what the server spends on a page) and prints p50/p95 per page kind and
over all pages. The word statistics' one-time computation is timed on its own.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psycopg
from flask.testing import FlaskClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from shared.jobs.batches import run_batch
from shared.jobs.lifecycle import JobSpec, create_job, model_info
from shared.jobs.word_stats import job_word_stats
from shared.relevance.explainer import load_explainer
from shared.settings import Settings
from shared.store.datasets import dataset_name, find_split, import_reviews
from shared.store.db import migrate, session_factory
from shared.store.models import Explanation, Job, JobStatus

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "relevance_bench_ui"
GOAL_MS = 100.0
BATCH = 500


def ensure_database(name: str) -> str:
    """The bench database's URL, created (empty) if it does not exist."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            admin.execute(f'CREATE DATABASE "{name}"')
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def stored_job(sessions: sessionmaker[Session], rows: int) -> int | None:
    """A finished job with at least `rows` rows from an earlier run, if any."""
    with sessions() as session:
        for job in session.scalars(select(Job).where(Job.status == JobStatus.SUCCEEDED)):
            count = session.scalar(
                select(func.count()).select_from(Explanation).where(Explanation.job_id == job.id)
            )
            if (count or 0) >= rows:
                return job.id
    return None


def fill(settings: Settings, sessions: sessionmaker[Session], limit: int) -> int:
    """Import the test split and explain `limit` reviews of it in this process; returns the job id."""
    started = time.perf_counter()
    source, reviews = find_split(settings.imdb_dir, "test")
    with sessions() as session:
        import_reviews(session, "test", source, reviews)
        job, batches = create_job(
            session,
            JobSpec(dataset=dataset_name("test"), limit=limit),
            model_info(settings.model_path),
            batch_size=BATCH,
            max_texts=settings.max_texts,
            max_text_chars=settings.max_text_chars,
        )
        session.commit()
        job_id = job.id
    explainer = load_explainer(settings.model_path)
    for number, batch in enumerate(batches, start=1):
        run_batch(sessions, explainer, job_id, batch, max_deliveries=settings.max_deliveries)
        print(f"\rfilling: {number * BATCH} of {limit} reviews", end="", flush=True)
    print(f"\rfilled {limit} reviews in {time.perf_counter() - started:.0f} s")
    with sessions() as session:  # what autovacuum does soon after a big job: planner statistics
        session.execute(text("ANALYZE"))
        session.commit()
    return job_id


def timed(client: FlaskClient, url: str) -> float:
    started = time.perf_counter()
    response = client.get(url)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{url}: HTTP {response.status_code}")
    return elapsed


def page_kinds(job_id: int, review_ids: list[str], rng: random.Random) -> dict[str, Callable[[], str]]:
    """Each kind of page a user opens, with the parameters varying between requests."""
    base = f"/jobs/{job_id}"
    return {
        "jobs list": lambda: "/",
        "job, first page": lambda: base,
        "job, random page": lambda: f"{base}?page={rng.randint(1, 500)}",
        "job, wrong & confident": lambda: f"{base}?correct=false&sort=-confidence&page={rng.randint(1, 5)}",
        "job, class + confidence": lambda: (
            f"{base}?true_class=1&predicted_class=1&min_confidence=0.6&max_confidence=0.9"
        ),
        "job, longest first": lambda: f"{base}?sort=-tokens&page={rng.randint(1, 20)}",
        "job, word 'boring' by LRP": lambda: f"{base}?word=boring&sort=-word",
        "job, word 'good' filter": lambda: f"{base}?word=good&page={rng.randint(1, 20)}",
        "review": lambda: f"{base}/reviews/{rng.choice(review_ids)}",
        "review, filtered prev/next": lambda: (
            f"{base}/reviews/{rng.choice(review_ids)}?correct=false&sort=-confidence"
        ),
        "review, job-wide scale": lambda: f"{base}/reviews/{rng.choice(review_ids)}?scale=job",
        "words": lambda: f"{base}/words",
        "words chart": lambda: f"{base}/words/lrp.png",
        "words CSV (every word)": lambda: f"{base}/words.csv",
        "words API": lambda: f"/api/jobs/{job_id}/words",
    }


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=25_000, help="explanations to store (default 25,000)")
    parser.add_argument("--requests", type=int, default=40, help="requests per page kind (default 40)")
    parser.add_argument("--database", default=DATABASE, help=f"PostgreSQL database (default {DATABASE})")
    args = parser.parse_args()

    url = ensure_database(args.database)
    migrate(url)
    with tempfile.TemporaryDirectory() as instance:
        settings = replace(
            Settings.from_env(), database_url=url, instance_dir=Path(instance), secret_key="bench"
        )
        sessions = session_factory(settings.effective_database_url)
        job_id = stored_job(sessions, args.rows) or fill(settings, sessions, args.rows)
        with sessions() as session:
            job = session.get_one(Job, job_id)
            started = time.perf_counter()
            job_word_stats(session, settings.effective_database_url, job)
            print(f"word statistics of job {job_id}, computed once: {time.perf_counter() - started:.1f} s")
            query = select(Explanation.review_id).where(Explanation.job_id == job_id)
            review_ids = list(session.scalars(query))
        client = create_app({"SETTINGS": settings, "TESTING": True}).test_client()
        kinds = page_kinds(job_id, review_ids, random.Random(0))
        for make_url in kinds.values():  # warm-up: connections, template compilation, cached charts
            timed(client, make_url())
        times = {
            name: [timed(client, make_url()) for _ in range(args.requests)]
            for name, make_url in kinds.items()
        }

    print(f"\n{len(review_ids)} stored explanations, {args.requests} requests per page kind (milliseconds)")
    print(f"{'page':32} {'p50':>7} {'p95':>7} {'max':>7}")
    for name, values in times.items():
        print(f"{name:32} {statistics.median(values):7.1f} {p95(values):7.1f} {max(values):7.1f}")
    everything = [v for values in times.values() for v in values]
    overall = p95(everything)
    print(f"{'all pages':32} {statistics.median(everything):7.1f} {overall:7.1f} {max(everything):7.1f}")
    print(f"goal p95 <= {GOAL_MS:.0f} ms: {'met' if overall <= GOAL_MS else 'NOT met'}")


if __name__ == "__main__":
    main()
