"""End to end through the API with a real Celery worker process, on SQLite + embedded Redis and on
PostgreSQL + the machine's Redis: dataset and texts jobs, cancel, a duplicated batch, single reviews."""

from __future__ import annotations

import csv
import io
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
from click.testing import CliRunner
from sqlalchemy import func, select
from threadpoolctl import threadpool_limits

from shared.cli import main
from shared.jobs.export import jsonl_line, review_record
from shared.jobs.lifecycle import JobSpec, create_job, model_info
from shared.jobs.queue import BULK_QUEUE, EXPLAIN_BATCH
from shared.relevance.explainer import load_explainer
from shared.render.heatmap import render_heatmap
from shared.settings import PROJECT_ROOT
from shared.store.db import session_factory
from shared.store.models import Explanation, Job
from tests.helpers.formats import EXPORT_FIELDS
from tests.helpers.service import Service, cli_env, worker_env


def stored_rows(service: Service, job_id: int) -> int:
    with session_factory(service.settings.effective_database_url)() as session:
        query = select(func.count()).select_from(Explanation).where(Explanation.job_id == job_id)
        return session.scalar(query) or 0


def test_dataset_job_end_to_end(service: Service) -> None:
    response = service.client.post("/api/jobs", json={"dataset": "imdb-test", "limit": 50})
    assert response.status_code == 202
    job_id = response.get_json()["id"]
    assert response.headers["Location"] == f"/api/jobs/{job_id}"

    job = service.wait_for_job(job_id)
    assert job["status"] == "succeeded", job
    assert (job["total"], job["done"], job["failed"], job["percent"]) == (50, 50, 0, 100.0)
    assert job["accuracy"] is not None and 0 <= job["accuracy"] <= 1
    assert job["reviews_per_second"] > 0 and job["finished_at"] is not None
    assert stored_rows(service, job_id) == 50

    lines = service.client.get(f"/api/jobs/{job_id}/export?format=jsonl").data.splitlines()
    records = [orjson.loads(line) for line in lines]
    assert len(records) == 50
    assert all(list(r) == EXPORT_FIELDS for r in records)
    labels = {f"test/{name}/": label for name, label in (("neg", 0), ("pos", 1))}
    assert all(r["true_class"] == labels[r["id"][: r["id"].rindex("/") + 1]] for r in records)
    first = records[0]
    sizes = {len(first[k]) for k in ("tokens", "token_ids", "spans")} | {len(first["relevance"]["lrp"])}
    assert len(sizes) == 1
    assert set(first["relevance"]) == {"lrp", "sa", "gi"}
    assert any(r["truncated"] for r in records)  # the fixture has reviews longer than the model reads

    exported = service.client.get(f"/api/jobs/{job_id}/export?format=csv").text
    table = list(csv.DictReader(io.StringIO(exported)))
    assert len(table) == 50 and table[0]["id"] == first["id"]

    detail = service.client.get(f"/api/jobs/{job_id}/explanations/{first['id']}").get_json()
    assert detail["tokens"] == first["tokens"] and '<span class="tok h' in detail["heatmap_html"]

    page = service.client.get(f"/api/jobs/{job_id}/explanations?sort=-confidence&per_page=10").get_json()
    confidences = [item["confidence"] for item in page["items"]]
    assert page["total"] == 50 and confidences == sorted(confidences, reverse=True)
    wrong = service.client.get(f"/api/jobs/{job_id}/explanations?correct=false&per_page=200").get_json()
    assert wrong["total"] == round(50 * (1 - job["accuracy"]))
    everything = service.client.get(f"/api/jobs/{job_id}/explanations?per_page=200").get_json()["items"]
    middle = service.client.get(f"/api/jobs/{job_id}/explanations?min_confidence=0.5&max_confidence=0.6")
    in_range = sum(0.5 <= item["confidence"] <= 0.6 for item in everything)
    assert 0 < middle.get_json()["total"] == in_range < len(everything)
    assert all(0.5 <= item["confidence"] <= 0.6 for item in middle.get_json()["items"])
    lengths = {r["id"]: len(r["token_ids"]) for r in records}
    by_length = service.client.get(f"/api/jobs/{job_id}/explanations?sort=-tokens&per_page=200").get_json()
    ordered = [lengths[item["review_id"]] for item in by_length["items"]]
    assert ordered == sorted(lengths.values(), reverse=True) and len(set(ordered)) > 1
    by_word = service.client.get(f"/api/jobs/{job_id}/explanations?word=Plot&sort=-word").get_json()
    scores = [item["word_relevance"] for item in by_word["items"]]
    assert by_word["total"] > 0 and scores == sorted(scores, reverse=True)


def test_texts_job_keeps_hostile_text_escaped(service: Service) -> None:
    texts = ["<script>alert(1)</script> great film", '"><img src=x onerror=alert(1)> bad plot', "good"]
    response = service.client.post("/api/jobs", json={"texts": texts, "methods": ["lrp", "gi"], "target": 1})
    assert response.status_code == 202
    job = service.wait_for_job(response.get_json()["id"])
    assert (job["status"], job["done"], job["accuracy"]) == ("succeeded", 3, None)

    for n, text in enumerate(texts):
        detail = service.client.get(f"/api/jobs/{job['id']}/explanations/texts/{job['id']}/{n}").get_json()
        assert detail["text"] == text and detail["target_class"] == 1
        assert set(detail["relevance"]) == {"lrp", "gi"}
        assert "<script" not in detail["heatmap_html"] and "<img" not in detail["heatmap_html"]


def test_cancel_stops_within_a_batch_and_keeps_what_is_done(service: Service) -> None:
    job_id = service.client.post("/api/jobs", json={"dataset": "imdb-test"}).get_json()["id"]  # 35 batches
    cancelled = service.client.post(f"/api/jobs/{job_id}/cancel", json={})
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    rows_after_cancel = stored_rows(service, job_id)
    service.wait_until_idle()

    job = service.client.get(f"/api/jobs/{job_id}").get_json()
    assert job["status"] == "cancelled"
    rows = stored_rows(service, job_id)
    assert rows == job["done"] + job["failed"]  # counters match the rows that stayed
    assert rows < job["total"]
    # Once the cancel is committed, only the batch each of the two processes had already started may finish.
    assert rows - rows_after_cancel <= 2 * service.settings.batch_size
    assert service.client.post(f"/api/jobs/{job_id}/cancel", json={}).status_code == 409


def test_cancel_of_a_queued_job_skips_every_batch(service: Service) -> None:
    celery = service.app.extensions["celery"]
    assert celery.control.cancel_consumer(BULK_QUEUE, reply=True)  # the worker stops taking bulk tasks
    try:
        job_id = service.client.post("/api/jobs", json={"dataset": "imdb-test", "limit": 70}).get_json()["id"]
        assert service.client.post(f"/api/jobs/{job_id}/cancel", json={}).get_json()["status"] == "cancelled"
    finally:
        assert celery.control.add_consumer(BULK_QUEUE, reply=True)
    service.wait_until_idle()  # all ten batches were delivered and skipped
    job = service.client.get(f"/api/jobs/{job_id}").get_json()
    assert (job["status"], job["done"], job["failed"], job["started_at"]) == ("cancelled", 0, 0, None)
    assert stored_rows(service, job_id) == 0


def test_a_batch_delivered_twice_is_stored_once(service: Service) -> None:
    settings = service.settings
    sessions = session_factory(settings.effective_database_url)
    with sessions() as session:
        job, batches = create_job(
            session,
            JobSpec(dataset="imdb-test", limit=30),
            model_info(settings.model_path),
            batch_size=10,
            max_texts=10,
            max_text_chars=1000,
        )
        session.commit()
    celery = service.app.extensions["celery"]
    for batch in [batches[0], batches[0], *batches, batches[-1]]:
        celery.send_task(EXPLAIN_BATCH, args=[job.id, batch], queue=BULK_QUEUE)
    done = service.wait_for_job(job.id)
    assert (done["status"], done["done"], done["failed"]) == ("succeeded", 30, 0)
    service.wait_until_idle()
    assert stored_rows(service, job.id) == 30
    with sessions() as session:
        assert session.get_one(Job, job.id).done == 30


def test_interactive_explain_through_the_worker(service: Service) -> None:
    text = "A <b>great</b> film<br />really"
    response = service.client.post("/api/explain", json={"text": text})
    assert response.status_code == 200
    result = response.get_json()
    assert result["tokens"] == ["<start>", "a", "b", "great", "b", "film", "really"]
    assert len(result["relevance"]["lrp"]) == 7
    assert "<b>" not in result["heatmap_html"] and "<br>" in result["heatmap_html"]
    # The answer is the worker's JSON byte for byte: the record and heatmap made here, as a worker makes them.
    with threadpool_limits(1):
        (explained,) = load_explainer(service.settings.model_path).explain([text], None)
    assert not isinstance(explained, str)
    heatmap = render_heatmap(
        text, explained.tokenized.spans, explained.explanation.lrp, truncated=explained.truncated
    )
    assert response.data == jsonl_line(review_record(None, explained) | {"heatmap_html": heatmap})


def test_only_a_worker_of_the_bulk_queue_alone_runs_at_a_lower_priority(service: Service) -> None:
    def niceness(pid: int) -> list[int]:  # the process's and its pool processes'
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [os.getpriority(os.PRIO_PROCESS, p) for p in [pid, *map(int, children)]]

    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert set(niceness(service.worker.pid)) == {own}  # the fixture's worker serves both queues
    name = f"bulk-only-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    env = worker_env(service.settings, service.log.parent)
    command = [
        "celery",
        "-A",
        "worker",
        "worker",
        "-Q",
        BULK_QUEUE,
        "-c",
        "2",
        "-n",
        name,
        "--without-mingle",
    ]
    worker = subprocess.Popen(
        [sys.executable, "-m", *command], cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL
    )
    try:
        celery = service.app.extensions["celery"]
        service.wait_for(lambda: celery.control.ping([name], timeout=0.5), "the bulk-only worker")
        lowered = niceness(worker.pid)
        assert len(lowered) == 3 and len(set(lowered)) == 1 and lowered[0] > own  # main and pool processes
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_cli_submit_wait_status_and_export_over_http(service: Service, tmp_path: Path) -> None:
    with cli_env(service.app) as env:
        runner = CliRunner()
        submitted = runner.invoke(
            main, ["submit", "--dataset", "imdb-test", "--limit", "20", "--wait"], env=env
        )
        assert submitted.exit_code == 0, submitted.output
        job_id = int(submitted.output.split()[1])
        assert "succeeded, 20/20 done" in submitted.output
        status = runner.invoke(main, ["status", str(job_id)], env=env)
        assert status.exit_code == 0 and f"job {job_id}: succeeded" in status.output
        out = tmp_path / "out.jsonl"
        exported = runner.invoke(main, ["export", str(job_id), "--output", str(out)], env=env)
        assert exported.exit_code == 0, exported.output
        assert [list(orjson.loads(line)) for line in out.read_bytes().splitlines()] == [EXPORT_FIELDS] * 20
        missing = runner.invoke(main, ["status", "99999"], env=env)
        assert missing.exit_code != 0 and "no job 99999 (job_not_found, HTTP 404)" in missing.output


def test_a_killed_worker_process_loses_and_doubles_nothing(service: Service) -> None:
    celery = service.app.extensions["celery"]

    def pool_processes() -> list[int]:  # a loaded machine may answer an inspect call late: ask again
        stats = celery.control.inspect(timeout=2.0).stats() or {}
        return [pid for s in stats.values() for pid in s["pool"]["processes"]]

    children: list[int] = service.wait_for(pool_processes, "the worker's pool processes")
    job_id = service.client.post("/api/jobs", json={"dataset": "imdb-test"}).get_json()["id"]
    url = f"/api/jobs/{job_id}"
    service.wait_for(lambda: service.client.get(url).get_json()["done"] > 0, "a first batch")
    os.kill(children[0], signal.SIGKILL)  # its batch, if it had one, goes back to the queue (acks_late)

    job = service.wait_for_job(job_id)
    assert (job["status"], job["done"], job["failed"]) == ("succeeded", job["total"], 0)
    assert stored_rows(service, job_id) == job["total"]
