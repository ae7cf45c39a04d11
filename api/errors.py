"""Every error under /api is JSON `{"error": {"code", "message"}}` with its HTTP status."""

from __future__ import annotations

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from shared.jobs.lifecycle import ConflictError, JobRequestError, NotFoundError


class ApiError(Exception):
    """A request the API refuses, with its status and a short code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify(error={"code": code, "message": message}), status


def _http_error(exc: HTTPException) -> tuple[Response, int] | HTTPException:
    """Routing and protocol errors (404, 405, 413, ...) as JSON under /api; pages keep Flask's own."""
    if not request.path.startswith("/api/"):
        return exc
    status = exc.code or 500
    code = (exc.name or "error").lower().replace(" ", "_")
    return error_response(status, code, exc.description or exc.name)


def _unexpected(exc: Exception) -> tuple[Response, int]:
    """A bug, not bad input: logged with its traceback, answered as JSON without internals."""
    current_app.logger.exception("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal_error", "the server failed; see its log")


def register(app: Flask) -> None:
    app.register_error_handler(ApiError, lambda e: error_response(e.status, e.code, e.message))
    app.register_error_handler(NotFoundError, lambda e: error_response(404, e.code, e.message))
    app.register_error_handler(ConflictError, lambda e: error_response(409, e.code, e.message))
    app.register_error_handler(JobRequestError, lambda e: error_response(422, e.code, e.message))
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
