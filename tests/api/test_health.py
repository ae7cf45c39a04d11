"""The probes, the secret key rule, and 503 while the database is away: a PostgreSQL cluster of the test's own
stopped and started again under a running app."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from api import create_app
from api.security import MissingSecretKeyError
from shared.settings import Settings
from tests.faults.harness import PostgresCluster, fresh_database, own_postgres
from tests.helpers.service import REDIS_TEST_URL, prepare_database


def test_a_deployment_without_secret_key_refuses_to_start_and_the_demo_writes_its_key_once(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(MissingSecretKeyError, match="SECRET_KEY is not set"):
        create_app({"SETTINGS": replace(sqlite_settings, redis_url=REDIS_TEST_URL)})
    assert not (sqlite_settings.instance_dir / "secret_key").exists()
    keys: list[str] = []
    threads = [
        threading.Thread(target=lambda: keys.append(create_app({"SETTINGS": sqlite_settings}).secret_key))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 4 and len(set(keys)) == 1 and len(keys[0]) == 64  # never read half-written
    assert [p.name for p in sqlite_settings.instance_dir.glob("*secret_key*")] == ["secret_key"]


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    with own_postgres() as server:
        yield server


def test_every_request_answers_503_while_the_database_is_stopped(
    cluster: PostgresCluster, tmp_path: Path, assets: tuple[Path, Path]
) -> None:
    model, imdb = assets
    with fresh_database(cluster.admin_url) as url:
        settings = Settings(
            model_path=model,
            imdb_dir=imdb,
            instance_dir=tmp_path / "instance",
            database_url=url,
            redis_url=REDIS_TEST_URL,
            redis_prefix=f"health-{tmp_path.name}:",
            secret_key="test",
        )
        prepare_database(settings)
        client = create_app({"SETTINGS": settings, "TESTING": True}).test_client()
        job = client.post("/api/jobs", json={"dataset": "imdb-test", "limit": 20}).get_json()
        api = ["/api/jobs", f"/api/jobs/{job['id']}", f"/api/jobs/{job['id']}/explanations"]
        pages = ["/", f"/jobs/{job['id']}"]
        assert client.get("/readyz").get_json() == {
            "status": "ready",
            "checks": {"database": "ok", "broker": "ok"},
        }
        assert all(client.get(path).status_code == 200 for path in api + pages)

        cluster.stop()
        for _ in range(3):  # connections of the pool and new ones alike
            for path in api:
                answer = client.get(path)
                assert answer.status_code == 503, (path, answer.status_code)
                assert answer.get_json()["error"]["code"] == "database_unavailable"
                assert "127.0.0.1" not in answer.get_data(as_text=True) and answer.headers["Retry-After"]
            posted = client.post("/api/jobs", json={"dataset": "imdb-test", "limit": 2})
            assert posted.status_code == 503
            for path in pages:
                answer = client.get(path)
                assert answer.status_code == 503 and answer.mimetype == "text/html"
                assert "The database cannot be reached" in answer.get_data(as_text=True)
        assert client.get("/healthz").status_code == 200  # the process is alive
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503 and not_ready.get_json()["checks"]["database"] == "unreachable"

        cluster.start()
        assert all(client.get(path).status_code == 200 for path in api + pages)
        assert client.get("/readyz").status_code == 200
