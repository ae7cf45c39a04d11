"""Deleting a job: DELETE /api/jobs/<id> and `relevance delete JOB` (through a real HTTP server) remove the
job, its explanation rows and its submitted texts; a running job is cancelled first."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update
from werkzeug.serving import make_server

from api import create_app
from shared.cli import main
from shared.settings import Settings
from shared.store.db import session_factory
from shared.store.models import Explanation, Job, JobStatus, Review

TOKEN = "delete-test-token"


def counts(settings: Settings, job_id: int) -> tuple[int, int, int]:
    """(jobs, explanation rows, submitted texts) of the job."""
    with session_factory(settings.effective_database_url)() as session:
        jobs = session.scalar(select(func.count()).select_from(Job).where(Job.id == job_id)) or 0
        rows = session.scalar(select(func.count()).where(Explanation.job_id == job_id)) or 0
        texts = session.scalar(select(func.count()).where(Review.id.startswith(f"texts/{job_id}/"))) or 0
    return jobs, rows, texts


@pytest.fixture
def server(sqlite_settings: Settings) -> Iterator[tuple[Settings, str]]:
    settings = replace(sqlite_settings, api_token=TOKEN)
    app = create_app({"SETTINGS": settings, "TESTING": True})
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield settings, f"http://127.0.0.1:{http.server_port}"
    http.shutdown()
    thread.join()


def test_delete_removes_the_job_and_its_rows(server: tuple[Settings, str]) -> None:
    settings, url = server
    client = create_app({"SETTINGS": settings, "TESTING": True}).test_client()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    job = client.post("/api/jobs", json={"texts": ["good film", "bad plot", "#"]}, headers=bearer).get_json()
    with session_factory(settings.effective_database_url).begin() as session:  # two rows stored: running
        session.execute(update(Job).where(Job.id == job["id"]).values(status=JobStatus.RUNNING))
        for n in range(2):
            session.add(Explanation(job_id=job["id"], review_id=f"texts/{job['id']}/{n}", error="stored"))
    assert counts(settings, job["id"]) == (1, 2, 3)
    assert client.get(f"/api/jobs/{job['id']}").get_json()["status"] == "running"

    env = {"RELEVANCE_API_URL": url, "API_TOKEN": "wrong"}
    refused = CliRunner().invoke(main, ["delete", str(job["id"])], env=env)
    assert refused.exit_code != 0 and "401" in refused.output
    result = CliRunner().invoke(main, ["delete", str(job["id"])], env={**env, "API_TOKEN": TOKEN})
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"job {job['id']} deleted"
    assert counts(settings, job["id"]) == (0, 0, 0)
    gone = client.delete(f"/api/jobs/{job['id']}", headers=bearer, content_type="application/json")
    assert gone.status_code == 404
    other = client.get("/api/datasets").get_json()["datasets"]
    assert other[0]["reviews"] == 240  # the dataset's reviews stay
