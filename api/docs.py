"""The API's documentation: the generated spec at /api/openapi.json and Swagger UI at /api/docs, its assets
served from the flask-openapi3-swagger package by this app (so the pages' strict CSP holds: no CDN, no inline
script)."""

from __future__ import annotations

from importlib.resources import files
from typing import cast

from flask import Blueprint, Response, current_app, render_template
from flask_openapi3.openapi import OpenAPI

SWAGGER_ASSETS = str(files("flask_openapi3_swagger") / "templates" / "swagger")

bp = Blueprint(
    "docs", __name__, url_prefix="/api", static_folder=SWAGGER_ASSETS, static_url_path="/docs/assets"
)


@bp.get("/openapi.json")
def spec() -> Response:
    """The OpenAPI 3.1 document, generated from the routes and their pydantic models."""
    return cast(Response, current_app.json.response(cast(OpenAPI, current_app).api_doc))


@bp.get("/docs")
def page() -> str:
    return render_template("docs.html")
