"""The database away: a PostgreSQL cluster of the test's own stopped for ~20 s in the middle of a 5,000-review
job, and a batch whose writes the database refuses every time (a trigger raising a deadlock)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from shared.jobs.lifecycle import JobSpec
from tests.faults.harness import (
    Deployment,
    PostgresCluster,
    deployment_settings,
    fresh_database,
    own_postgres,
)
from tests.helpers.service import REDIS_TEST_URL

TOTAL = 5_000
OUTAGE_SECONDS = 20.0


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    with own_postgres() as server:
        yield server


def test_a_job_outlives_a_database_stopped_for_20_seconds(
    tmp_path: Path, model: Path, imdb_5k: Path, cluster: PostgresCluster
) -> None:
    with fresh_database(cluster.admin_url) as url:
        settings = deployment_settings(
            tmp_path, model, imdb_5k, url, REDIS_TEST_URL, batch_size=100, stall_seconds=60, sweep_seconds=2
        )
        deployment = Deployment(settings, tmp_path)
        try:
            deployment.start_beat()
            deployment.start_worker("worker")
            job_id = deployment.submit_until(JobSpec(dataset="imdb-test"), 0.3 * TOTAL)
            cluster.stop()
            stopped = time.monotonic()
            deadline = stopped + OUTAGE_SECONDS
            # The outage itself is the injected fault (not a wait for anything): the workers retry meanwhile.
            time.sleep(max(0.0, deadline - time.monotonic()))
            cluster.start()
            back = time.monotonic()
            job = deployment.wait_for_job(job_id, deadline=120)
            finished = time.monotonic()

            deployment.assert_complete(job_id, TOTAL)
            assert (
                job.done == TOTAL and job.error is None
            )  # no review and no job failed for a transient error
            assert "will be retried" in deployment.log_text()  # the batches did meet the outage
            rows, distinct = deployment.rows(job_id)
            print(
                f"\ndatabase outage: stopped {back - stopped:.1f} s at 30 %; job done "
                f"{finished - back:.1f} s after the database came back; rows {rows}, "
                f"duplicates {rows - distinct}, failed {job.failed}"
            )
        finally:
            deployment.stop()


POISON_TRIGGER = """
CREATE FUNCTION refuse_review() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.review_id = %(review)s AND NEW.error IS NULL THEN
    RAISE EXCEPTION 'injected deadlock' USING ERRCODE = 'deadlock_detected';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_review BEFORE INSERT ON explanations FOR EACH ROW EXECUTE FUNCTION refuse_review();
"""


def test_a_batch_refused_after_every_retry_fails_only_its_reviews(
    tmp_path: Path, model: Path, imdb_5k: Path
) -> None:
    with fresh_database() as url:
        settings = deployment_settings(
            tmp_path, model, imdb_5k, url, REDIS_TEST_URL, batch_size=50, batch_retries=2, stall_seconds=600
        )
        deployment = Deployment(settings, tmp_path)
        with psycopg.connect(url, autocommit=True) as connection:
            refused = connection.execute("SELECT id FROM reviews ORDER BY id OFFSET 120 LIMIT 1").fetchone()
            assert refused is not None
            connection.execute(POISON_TRIGGER % {"review": f"'{refused[0]}'"})
        try:
            deployment.start_worker("worker")
            job_id = deployment.submit(JobSpec(dataset="imdb-test", limit=500))
            job = deployment.wait_for_job(job_id, deadline=60)
            # The batch of 50 holding that review (reviews 100-149) failed; the other nine succeeded.
            deployment.assert_complete(job_id, 500, failed=50)
            assert job.error is None
            with psycopg.connect(url) as connection:
                errors = connection.execute(
                    "SELECT DISTINCT error FROM explanations WHERE job_id = %s AND error IS NOT NULL",
                    [job_id],
                ).fetchall()
            assert (
                len(errors) == 1 and "failed after 2 retries" in errors[0][0] and "deadlock" in errors[0][0]
            )
            assert deployment.log_text().count("will be retried") == 2
        finally:
            deployment.stop()
