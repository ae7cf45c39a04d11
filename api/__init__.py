"""The web process: `flask --app api run` or `gunicorn "api:create_app()"`. JSON API under /api (its spec at
/api/openapi.json, Swagger UI at /api/docs), the probes /healthz and /readyz, the web pages everywhere else.

Outside the local demo (see Settings.local_demo) building the app writes nothing: no instance folder, no key
file, no embedded Redis; without SECRET_KEY it refuses to start (api.security.MissingSecretKeyError)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider
from flask_openapi3.models.info import Info
from flask_openapi3.openapi import OpenAPI

from api import context, docs, errors, health, jobs, pages, security
from api.schemas import MAX_REQUEST_BYTES, ErrorBody
from shared.jobs.queue import make_celery
from shared.settings import Settings
from shared.store.db import session_factory


class StrictJSON(DefaultJSONProvider):
    """Request bodies parsed by orjson: lone surrogates, NaN and nesting past 1,024 levels are malformed
    (400), where the standard parser passes them on to the database or runs out of stack."""

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)


def create_app(test_config: Mapping[str, Any] | None = None) -> OpenAPI:
    """Build the app; `test_config` may replace the settings object ("SETTINGS") and Flask options."""
    config: dict[str, Any] = {"SETTINGS": Settings.from_env(), "MAX_CONTENT_LENGTH": MAX_REQUEST_BYTES}
    config.update(test_config or {})
    settings: Settings = config["SETTINGS"]
    app = OpenAPI(
        __name__,
        instance_path=str(settings.instance_dir),
        info=Info(title="LSTM Relevance", version="1.0.0"),
        security_schemes=security.BEARER_SCHEME,
        validation_error_status=422,
        validation_error_model=ErrorBody,
        validation_error_callback=errors.validation_failed,
        doc_ui=False,  # api.docs serves the spec and Swagger UI itself, under the app's CSP
    )
    app.json = StrictJSON(app)
    app.config.from_mapping(config)
    app.logger.setLevel(settings.log_level.upper())
    app.extensions["sessions"] = session_factory(settings.effective_database_url)
    app.extensions["celery"] = make_celery(settings)

    context.register(app)
    errors.register(app)
    security.register(app)
    app.extensions["csrf"].exempt(jobs.bp)  # JSON only, with a bearer token: no cross-site form reaches it
    app.register_api(jobs.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(pages.bp)
    return app
