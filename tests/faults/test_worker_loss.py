"""Workers that die: a pool process SIGKILLed mid-batch, then a whole worker (main process and pool) SIGKILLed
and a fresh one started, in a 25,000-review job on PostgreSQL and the machine's Redis, with beat running."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from shared.jobs.lifecycle import JobSpec
from shared.jobs.queue import EXPLAIN_BATCH
from tests.faults.harness import Deployment, deployment_settings, fresh_database
from tests.helpers.service import REDIS_TEST_URL

TOTAL = 25_000


def busy_pool_pid(deployment: Deployment) -> int | None:
    """The pid of a pool process that has a batch in hand, if any."""
    active = deployment.celery.control.inspect(timeout=0.5).active() or {}
    pids = [
        task["worker_pid"] for tasks in active.values() for task in tasks if task["name"] == EXPLAIN_BATCH
    ]
    return pids[0] if pids else None


def test_killed_pool_process_then_killed_worker_lose_and_double_nothing(
    tmp_path: Path, model: Path, imdb_25k: Path
) -> None:
    with fresh_database() as url:
        settings = deployment_settings(
            tmp_path, model, imdb_25k, url, REDIS_TEST_URL, batch_size=1000, stall_seconds=5, sweep_seconds=1
        )
        deployment = Deployment(settings, tmp_path)
        try:
            deployment.start_beat()
            first = deployment.start_worker("first")
            started = time.monotonic()
            job_id = deployment.submit(JobSpec(dataset="imdb-test"))

            pid = deployment.wait_for(
                lambda: busy_pool_pid(deployment), "a pool process with a batch in hand"
            )
            os.kill(
                pid, signal.SIGKILL
            )  # acks_late + reject_on_worker_lost: its batch goes back to the queue

            def busy_at_30_percent() -> bool:
                return deployment.rows(job_id)[0] >= 0.3 * TOTAL and busy_pool_pid(deployment) is not None

            deployment.wait_for(busy_at_30_percent, "30 % done and batches in hand")
            rows_at_kill, _ = deployment.rows(job_id)
            first.kill_all()
            killed = time.monotonic()
            deployment.start_worker("fresh")
            job = deployment.wait_for_job(job_id, deadline=180)
            finished = time.monotonic()

            deployment.assert_complete(job_id, TOTAL)
            assert job.done == TOTAL
            assert deployment.max_starts(job_id) >= 2  # batches that were in hand were started again
            rows, distinct = deployment.rows(job_id)
            print(
                f"\nworker loss: {TOTAL} reviews in {finished - started:.1f} s; whole worker killed at "
                f"{rows_at_kill} rows, job done {finished - killed:.1f} s later; rows {rows}, "
                f"duplicates {rows - distinct}, most starts of one batch {deployment.max_starts(job_id)}"
            )
        finally:
            deployment.stop()
