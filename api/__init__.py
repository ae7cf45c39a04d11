"""The web process: `flask --app api run` or `gunicorn "api:create_app()"`. JSON API under /api."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, g

from api import errors, jobs, ui
from shared.jobs.queue import make_celery
from shared.settings import Settings
from shared.store.db import session_factory

MAX_REQUEST_BYTES = 64 * 1024 * 1024


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app; `test_config` may replace the settings object ("SETTINGS") and Flask options."""
    config: dict[str, Any] = {"SETTINGS": Settings.from_env(), "MAX_CONTENT_LENGTH": MAX_REQUEST_BYTES}
    config.update(test_config or {})
    settings: Settings = config["SETTINGS"]
    app = Flask(__name__, instance_path=str(settings.instance_dir))
    app.config.from_mapping(config)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["sessions"] = session_factory(settings.effective_database_url)
    app.extensions["celery"] = make_celery(settings)

    @app.teardown_appcontext
    def close_session(_: BaseException | None) -> None:
        session = g.pop("session", None)
        if session is not None:
            session.close()

    errors.register(app)
    app.register_blueprint(jobs.bp)
    ui.register(app)
    return app
