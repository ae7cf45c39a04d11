"""Fixtures of the web UI tests: the committed trained model reading real IMDB test reviews (so the pages
and screenshots show what users see), a migrated SQLite database with one finished job explained in this
process (the pages need no worker), and for the browser tests a real HTTP server, a real Celery worker and
headless Chromium."""

from __future__ import annotations

import gzip
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import make_server

from api import create_app
from shared.jobs.batches import run_batch
from shared.jobs.lifecycle import JobSpec, create_job, model_info
from shared.jobs.queue import stop_embedded_redis
from shared.relevance.explainer import load_explainer
from shared.settings import DEFAULT_MODEL_PATH, Settings
from shared.store.db import session_factory
from shared.store.imdb import read_split, split_path
from tests.helpers.service import Service, migrated_sqlite, start_service, stop_service


def pytest_addoption(parser: pytest.Parser) -> None:
    """`make screenshots` passes --screenshots docs/screenshots; a plain test run writes no file it keeps."""
    parser.addoption("--screenshots", type=Path, metavar="DIR", help="save the browser tests' pictures here")


REVIEW_STRIDE = 100  # every 100th real test review: 250 reviews, both labels, some longer than 400 tokens
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def write_sample_imdb(source: Path, folder: Path) -> Path:
    """An IMDB_DIR with a spread of the real test reviews (the vocabulary is in the model file)."""
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(split_path(folder, "test"), "wb") as out:
        for review in list(read_split(source, "test"))[::REVIEW_STRIDE]:
            record = {"id": review.id, "text": review.text, "label": review.label, "rating": review.rating}
            out.write(orjson.dumps(record) + b"\n")
    return folder


@pytest.fixture(scope="session")
def ui_assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model file, IMDB folder) shared by every UI test."""
    root = tmp_path_factory.mktemp("ui-assets")
    return DEFAULT_MODEL_PATH, write_sample_imdb(Settings.from_env().imdb_dir, root / "imdb")


def ui_settings(folder: Path, assets: tuple[Path, Path]) -> Settings:
    """A migrated SQLite database of its own with the sample imported; embedded Redis."""
    return migrated_sqlite(folder, assets, batch_size=10)


def run_job_here(settings: Settings, spec: JobSpec) -> int:
    """A job explained in this process with the same batch code the workers run; returns its id."""
    sessions: sessionmaker[Session] = session_factory(settings.effective_database_url)
    with sessions() as session:
        job, batches = create_job(
            session,
            spec,
            model_info(settings.model_path),
            batch_size=settings.batch_size,
            max_texts=settings.max_texts,
            max_text_chars=settings.max_text_chars,
        )
        session.commit()
        job_id = job.id
    explainer = load_explainer(settings.model_path)
    for batch in batches:
        run_batch(sessions, explainer, job_id, batch, max_deliveries=settings.max_deliveries)
    return job_id


@dataclass(frozen=True)
class Site:
    """The app with a finished dataset job, for the test-client tests."""

    settings: Settings
    app: Flask
    job_id: int

    def sessions(self) -> sessionmaker[Session]:
        return session_factory(self.settings.effective_database_url)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory, ui_assets: tuple[Path, Path]) -> Iterator[Site]:
    settings = ui_settings(tmp_path_factory.mktemp("ui-site"), ui_assets)
    job_id = run_job_here(settings, JobSpec(dataset="imdb-test"))
    yield Site(settings, create_app({"SETTINGS": settings, "TESTING": True}), job_id)
    stop_embedded_redis(settings.instance_dir)  # the app started it (the forms queue tasks there)


@pytest.fixture
def client(site: Site) -> FlaskClient:
    return site.app.test_client()


def csrf_token(client: FlaskClient) -> str:
    """The token of the jobs page's forms (the client keeps the session cookie it belongs to)."""
    match = CSRF.search(client.get("/").get_data(as_text=True))
    assert match, "the jobs page has no CSRF token"
    return match.group(1)


@pytest.fixture(scope="session")
def screenshots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests put their pictures: the --screenshots folder, else a temporary one (removed
    with the other temporary folders), so that running the tests leaves docs/screenshots/ alone."""
    chosen: Path | None = request.config.getoption("screenshots", default=None)
    return chosen or tmp_path_factory.mktemp("screenshots")


@dataclass(frozen=True)
class LiveSite:
    """A real HTTP server for the browser, with a real Celery worker behind it."""

    service: Service
    url: str


@pytest.fixture(scope="module")
def live_site(tmp_path_factory: pytest.TempPathFactory, ui_assets: tuple[Path, Path]) -> Iterator[LiveSite]:
    folder = tmp_path_factory.mktemp("ui-live")
    settings = replace(ui_settings(folder, ui_assets), batch_size=25)
    service = start_service("ui", settings, folder)
    server = make_server("127.0.0.1", 0, service.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield LiveSite(service, f"http://127.0.0.1:{server.server_port}")
    server.shutdown()
    thread.join()
    stop_service(service)
