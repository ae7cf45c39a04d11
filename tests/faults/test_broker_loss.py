"""The broker lost: a redis-server of the test's own, without persistence, killed at 30 % of a job and
started again empty. The database knows which reviews are still to do; beat's sweep, or a worker that starts,
re-queues them."""

from __future__ import annotations

import time
from pathlib import Path

from shared.jobs.lifecycle import JobSpec
from tests.faults.harness import Deployment, RedisServer, deployment_settings, fresh_database

TOTAL = 5_000
STALL_SECONDS = 4.0


def test_beat_requeues_a_job_whose_broker_restarted_empty(tmp_path: Path, model: Path, imdb_5k: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    with fresh_database() as url:
        settings = deployment_settings(
            tmp_path,
            model,
            imdb_5k,
            url,
            server.url,
            batch_size=100,
            stall_seconds=STALL_SECONDS,
            sweep_seconds=1,
        )
        deployment = Deployment(settings, tmp_path)
        try:
            deployment.start_beat()
            deployment.start_worker("worker")
            job_id = deployment.submit_until(JobSpec(dataset="imdb-test"), 0.3 * TOTAL)
            server.kill()
            lost = time.monotonic()
            rows_at_kill, _ = deployment.rows(job_id)
            server.start()  # empty: the queued batches are gone
            restarted = time.monotonic()
            # The job's remaining batches are gone with the broker: only the sweep brings them back.
            job = deployment.wait_for_job(job_id, deadline=90)
            finished = time.monotonic()
            deployment.assert_complete(job_id, TOTAL)
            assert job.done == TOTAL
            rows, distinct = deployment.rows(job_id)
            print(
                f"\nbroker lost: Redis killed at {rows_at_kill} rows, back after {restarted - lost:.1f} s; "
                f"job done {finished - lost:.1f} s after the kill (stall {STALL_SECONDS:.0f} s); "
                f"rows {rows}, duplicates {rows - distinct}"
            )
        finally:
            deployment.stop()
            server.kill()


def test_a_worker_that_starts_requeues_a_stalled_job(tmp_path: Path, model: Path, imdb_5k: Path) -> None:
    """The machine died with the broker: no worker, no beat. The first worker to start re-sends the job."""
    server = RedisServer(tmp_path)
    server.start()
    with fresh_database() as url:
        settings = deployment_settings(
            tmp_path, model, imdb_5k, url, server.url, batch_size=100, stall_seconds=STALL_SECONDS
        )
        deployment = Deployment(settings, tmp_path)
        try:
            first = deployment.start_worker("first")
            job_id = deployment.submit_until(JobSpec(dataset="imdb-test", limit=2_000), 600)
            first.kill_all()
            server.kill()
            rows_at_kill, _ = deployment.rows(job_id)
            server.start()
            assert deployment.job(job_id).status == "running" and rows_at_kill < 2_000

            def stalled() -> bool:
                age = time.time() - deployment.job(job_id).progressed_at.timestamp()
                return age > STALL_SECONDS

            deployment.wait_for(stalled, "the job to stall")
            started = time.monotonic()
            deployment.start_worker("second")
            deployment.wait_for_job(job_id, deadline=60)
            deployment.assert_complete(job_id, 2_000)
            print(
                f"\nworker start-up sweep: machine lost at {rows_at_kill} of 2000 rows; job done "
                f"{time.monotonic() - started:.1f} s after a new worker was started"
            )
        finally:
            deployment.stop()
            server.kill()
