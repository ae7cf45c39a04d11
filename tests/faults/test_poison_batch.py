"""A poison batch: one review whose write hangs every time (a trigger sleeping in the database), so each
delivery runs into the task's time limits. After MAX_DELIVERIES starts the batch is split into single reviews;
the poison one is given up and stored as failed, the others are explained, and the job succeeds."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest

from shared.jobs.lifecycle import JobSpec
from shared.jobs.queue import batch_time_limits
from tests.faults.harness import Deployment, deployment_settings, fresh_database
from tests.helpers.service import REDIS_TEST_URL

BATCH_SIZE = 5
HANG_ON_POISON = """
CREATE FUNCTION hang() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.review_id = %(review)s AND NEW.error IS NULL THEN PERFORM pg_sleep(600); END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER hang BEFORE INSERT ON explanations FOR EACH ROW EXECUTE FUNCTION hang();
"""


def kill_while_it_runs(
    deployment: Deployment, review_id: str, stop: threading.Event, kills: list[int]
) -> None:
    """SIGKILL every pool process that has had a batch holding this review for a second."""
    while not stop.is_set():
        with contextlib.suppress(Exception):  # a worker between pool processes answers nothing
            active = deployment.celery.control.inspect(timeout=0.5).active() or {}
            for task in (task for tasks in active.values() for task in tasks):
                if review_id in str(task["args"]) and time.time() - (task["time_start"] or time.time()) > 1:
                    os.kill(task["worker_pid"], signal.SIGKILL)
                    kills.append(task["worker_pid"])
        stop.wait(0.2)


@pytest.mark.parametrize("fate", ["time limit", "SIGKILL"])
def test_a_batch_that_never_finishes_is_given_up_after_max_deliveries(
    tmp_path: Path, model: Path, imdb_5k: Path, fate: str
) -> None:
    """Each delivery of the batch hangs until the soft time limit interrupts it, or the test kills its
    process."""
    with fresh_database() as url:
        settings = deployment_settings(
            tmp_path, model, imdb_5k, url, REDIS_TEST_URL, batch_size=BATCH_SIZE, max_deliveries=2
        )
        deployment = Deployment(settings, tmp_path)
        with psycopg.connect(url, autocommit=True) as connection:
            # The first review of the third batch: the hanging insert holds no other row of its batch.
            found = connection.execute("SELECT id FROM reviews ORDER BY id OFFSET 10 LIMIT 1").fetchone()
            assert found is not None
            poison = str(found[0])
            connection.execute(HANG_ON_POISON % {"review": f"'{poison}'"})
            # A killed worker's session stops at once instead of sleeping on.
            database = url.rsplit("/", 1)[1]
            connection.execute(f'ALTER DATABASE "{database}" SET client_connection_check_interval = 200')
        stop, kills = threading.Event(), list[int]()
        killer = threading.Thread(target=kill_while_it_runs, args=(deployment, poison, stop, kills))
        try:
            deployment.start_worker("worker")
            if fate == "SIGKILL":
                killer.start()
            started = time.monotonic()
            job_id = deployment.submit(JobSpec(dataset="imdb-test", limit=20))
            job = deployment.wait_for_job(job_id, deadline=120)
            elapsed = time.monotonic() - started

            deployment.assert_complete(job_id, 20, failed=1)
            with psycopg.connect(url) as connection:
                failed = connection.execute(
                    "SELECT review_id, error FROM explanations WHERE job_id = %s AND error IS NOT NULL",
                    [job_id],
                ).fetchall()
            assert [review for review, _ in failed] == [poison]
            assert "given up after 2 deliveries" in failed[0][1]
            log = deployment.log_text()
            assert "split into single reviews" in log
            # Two deliveries of the batch, then two of the poison review alone, each cut short.
            cut_short = (
                len(set(kills)) if fate == "SIGKILL" else len(re.findall(r"reviews=\d+ out of time", log))
            )
            assert cut_short == 4
            soft, hard = batch_time_limits(BATCH_SIZE)
            print(
                f"\npoison batch ({fate}; time limits {soft:.1f} s / {hard:.1f} s): {cut_short} deliveries "
                f"cut short, then given up; the job ended {job.status} in {elapsed:.1f} s with {job.failed} "
                f"failed review (the poison) and {job.done} explained"
            )
        finally:
            stop.set()
            if killer.is_alive():
                killer.join()
            deployment.stop()
