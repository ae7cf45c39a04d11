"""Every error, in one place: under /api the JSON envelope `{"error": {"code", "message"}}` with its status,
elsewhere an HTML page with the same status and message.

The rule (also in the spec): 400 when the request is malformed (the body is not JSON or not a JSON object, or
nests too deep), 415 when a JSON endpoint is sent another Content-Type, 422 when it is well-formed but invalid
(a wrong type, a value out of range, an unknown name). Messages name the field and the rule, never internals.
"""

from __future__ import annotations

from typing import Any

import psycopg
from flask import Flask, Response, current_app, jsonify, make_response, render_template, request
from flask_wtf.csrf import CSRFError
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, NotFound, SecurityError

from shared.jobs.lifecycle import ConflictError, JobRequestError, NotFoundError

TITLES = {
    400: "Bad request",
    401: "Log in first",
    404: "Not found",
    422: "Cannot do that",
    429: "Slow down",
    503: "Unavailable",
}
# Errors a pydantic model reports at the top of a body: the body as a whole is not a JSON object.
MALFORMED = {"json_invalid", "model_type", "model_attributes_type", "dict_type"}


class ApiError(Exception):
    """A request the service refuses, with its status and a short code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def wants_json() -> bool:
    return request.path.startswith("/api/")


def error_response(status: int, code: str, message: str, title: str | None = None) -> Response:
    """The JSON envelope under /api, the error page elsewhere."""
    if wants_json():
        response = jsonify(error={"code": code, "message": message})
    else:
        heading = title or TITLES.get(status) or "Error"
        response = make_response(render_template("error.html", status=status, title=heading, message=message))
    response.status_code = status
    return response


def validation_message(error: ValidationError) -> str:
    """Which field broke which rule ("limit: Input should be less than or equal to 1000"); no input echoed."""
    parts = []
    for problem in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in problem["loc"])
        text = problem["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {text}" if where else text)
    return "; ".join(parts)


def invalid(error: ValidationError) -> ApiError:
    """A request a model refused: 400 when the body as a whole is not a JSON object, else 422."""
    if any(not p["loc"] and p["type"] in MALFORMED for p in error.errors()):
        return ApiError(400, "invalid_json", "the body must be a JSON object")
    return ApiError(422, "invalid_request", validation_message(error))


def validation_failed(error: ValidationError) -> Response:
    """flask-openapi3's hook for a request its models refuse."""
    return _refused(invalid(error))


def _refused(exc: ApiError) -> Response:
    response = error_response(exc.status, exc.code, exc.message)
    response.headers.update(exc.headers)
    return response


def _http_error(exc: HTTPException) -> Response:
    """Routing and protocol errors (404, 405, 413, 429, ...), keeping their headers (Allow, Retry-After)."""
    if isinstance(exc, SecurityError):  # an untrusted Host: no URL can be built for a page, so JSON for all
        response = jsonify(error={"code": "bad_request", "message": "this host is not served here"})
        response.status_code = 400
        return response
    status = exc.code or 500
    message = exc.description or exc.name
    if isinstance(exc, NotFound) and not wants_json() and exc.description == NotFound.description:
        message = "There is no such page."  # abort(404, "...") in a page says what is missing instead
    response = error_response(status, (exc.name or "error").lower().replace(" ", "_"), message)
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _unexpected(exc: Exception) -> Response:
    """A bug, not bad input: logged with its traceback, answered without internals."""
    current_app.logger.exception("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    message = (
        "the server failed; see its log" if wants_json() else "The page failed; the server's log says why."
    )
    return error_response(500, "internal_error", message, "Server error")


def unavailable_database(exc: BaseException) -> bool:
    """Whether a database error means the server cannot be reached (down, restarting, a connection cut, no
    connection free): the request may succeed later. Other database errors are bugs."""
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
    return isinstance(exc, PoolTimeout | psycopg.OperationalError | psycopg.InterfaceError)


def _database_error(exc: Exception) -> Response:
    """503 while the database cannot be reached (one log line, no traceback); anything else is a 500."""
    if not unavailable_database(exc):
        return _unexpected(exc)
    current_app.logger.warning("database unavailable on %s %s: %s", request.method, request.path, exc)
    message = (
        "the database cannot be reached; try again shortly"
        if wants_json()
        else "The database cannot be reached just now; try again in a moment."
    )
    response = error_response(503, "database_unavailable", message)
    response.headers["Retry-After"] = "5"
    return response


def register(app: Flask) -> None:
    handlers: list[tuple[type[Exception], Any]] = [
        (ApiError, _refused),
        (NotFoundError, lambda e: error_response(404, e.code, e.message)),
        (ConflictError, lambda e: error_response(409, e.code, e.message)),
        (JobRequestError, lambda e: error_response(422, e.code, e.message)),
        (ValidationError, lambda e: _refused(invalid(e))),
        (
            CSRFError,
            lambda e: error_response(
                400, "csrf", "The form expired or did not come from this site; reload it.", "Form rejected"
            ),
        ),
        (HTTPException, _http_error),
        (DBAPIError, _database_error),
        (PoolTimeout, _database_error),
        (psycopg.Error, _database_error),
        (Exception, _unexpected),
    ]
    for kind, handler in handlers:
        app.register_error_handler(kind, handler)
