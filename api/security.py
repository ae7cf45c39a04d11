"""App-wide protection, set up by create_app: the session key, security headers (HSTS over HTTPS), trusted
hosts, CSRF for the pages' forms, access tokens and rate limits on writes.

Access: with no API_TOKEN everything is open (the local demo). With API_TOKEN, every write (a POST or DELETE)
needs it: as `Authorization: Bearer <token>` under /api, or once on the login page for the web UI (a session
cookie: HttpOnly, SameSite=Strict, Secure over HTTPS). With API_READ_TOKEN as well, reads need one of the two
tokens too. Tokens are compared in constant time.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from flask import Flask, Response, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_openapi3.models.security_scheme import SecurityScheme
from flask_wtf.csrf import CSRFProtect, generate_csrf
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response as Redirect

from api.context import settings
from api.errors import ApiError
from shared.jobs.queue import broker_url
from shared.settings import Settings

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
HSTS = "max-age=31536000"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
READ_ACCESS, WRITE_ACCESS = "read", "write"
# The spec's security requirements: reads are open unless API_READ_TOKEN is set; writes need the token.
READ: list[dict[str, list[str]]] = [{}, {"bearer": []}]
WRITE: list[dict[str, list[str]]] = [{"bearer": []}]
BEARER_SCHEME: dict[str, SecurityScheme | dict[str, Any]] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "API_TOKEN for writes (when set); API_READ_TOKEN or API_TOKEN for reads (when set)",
    }
}
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="api"'}
# Always open: the login page, the assets every page needs, the API's documentation and the health probes.
OPEN_ENDPOINTS = ("static", "pages.login", "pages.logout", "pages.heatmap_css", "docs.", "health.")


class MissingSecretKeyError(RuntimeError):
    """A deployment (REDIS_URL or PostgreSQL) started without SECRET_KEY: the web process refuses to start."""


def secret_key(s: Settings, instance_dir: Path) -> str:
    """SECRET_KEY from the settings. Only the local demo (embedded Redis, SQLite) may go without: a random
    key kept in its instance folder (shared by its processes, so a form served by one gunicorn worker
    validates in another), written to a temporary file and then linked into place, so no process reads it
    half-written."""
    if s.secret_key:
        return s.secret_key
    if not s.local_demo:
        raise MissingSecretKeyError(
            "SECRET_KEY is not set: a deployment (REDIS_URL or a PostgreSQL DATABASE_URL) needs one shared "
            "by every web process (one: python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    path = instance_dir / "secret_key"
    if not path.is_file():
        instance_dir.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=instance_dir, prefix=".secret_key.")
        try:
            with os.fdopen(descriptor, "w") as out:
                out.write(secrets.token_hex(32))
            with contextlib.suppress(FileExistsError):  # another process linked its key first: use that
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    return path.read_text().strip()


class SessionOverHttps(SecureCookieSessionInterface):
    """The session cookie is marked Secure whenever the request came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(super().get_cookie_secure(app) or request.is_secure)


def same(given: str, expected: str) -> bool:
    """Constant-time comparison (no early exit that would time the matching prefix)."""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def token_access(token: str, s: Settings) -> str | None:
    """What a token grants: "write" (API_TOKEN, which reads too), "read" (API_READ_TOKEN) or nothing."""
    if same(token, s.api_token):
        return WRITE_ACCESS
    if same(token, s.api_read_token):
        return READ_ACCESS
    return None


def allowed(need: str, access: str | None, s: Settings) -> bool:
    if need == READ_ACCESS and not s.api_read_token:
        return True
    if not s.api_token:
        return True
    return access == WRITE_ACCESS or (access == READ_ACCESS and need == READ_ACCESS)


def logged_in() -> bool:
    """Whether the pages' visitor may write (the templates show the write forms only then)."""
    return allowed(WRITE_ACCESS, session.get("access"), settings())


def _check_access() -> Redirect | None:
    """Every request: writes (and reads, with API_READ_TOKEN) need a token; the API says 401, pages log in."""
    endpoint = request.endpoint or ""
    if any(endpoint == e or (e.endswith(".") and endpoint.startswith(e)) for e in OPEN_ENDPOINTS):
        return None
    s = settings()
    need = READ_ACCESS if request.method in SAFE_METHODS else WRITE_ACCESS
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if request.path.startswith("/api/"):
        access = token_access(token.strip(), s) if scheme.lower() == "bearer" else None
        if access is None and need == READ_ACCESS:  # the pages' scripts poll jobs with the session cookie
            access = session.get("access")
        if not allowed(need, access, s):
            message = "this needs Authorization: Bearer <token>" if not token else "the token is not valid"
            raise ApiError(401, "unauthorized", message, CHALLENGE)
        return None
    if allowed(need, session.get("access"), s):
        return None
    back = request.full_path if need == READ_ACCESS else url_for("pages.jobs")
    return redirect(url_for("pages.login", next=back), 303)


def _headers(response: Response) -> Response:
    """Every page (and the API, where the headers do no harm) gets the policy; HSTS over HTTPS."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response


def limits_storage(s: Settings) -> str:
    """The rate limits' counters live in the same Redis as the queue (the `limits` package spells a unix
    socket redis+unix://)."""
    return broker_url(s).replace("redis+socket://", "redis+unix://", 1)


def write_limit() -> str:
    return settings().write_rate_limit


def register(app: Flask) -> None:
    s: Settings = app.config["SETTINGS"]
    app.secret_key = secret_key(s, Path(app.instance_path))
    app.session_interface = SessionOverHttps()
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:  # Flask's default sends it cross-site too
        app.config["SESSION_COOKIE_SAMESITE"] = "Strict"
    app.config["TRUSTED_HOSTS"] = list(s.trusted_hosts) or None
    if s.proxy_hops:  # X-Forwarded-For/-Proto/-Host from that many proxies: the client's address and scheme
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=s.proxy_hops, x_proto=s.proxy_hops, x_host=s.proxy_hops
        )
    app.jinja_env.globals.update(csrf_token=generate_csrf, logged_in=logged_in)
    app.extensions["csrf"] = CSRFProtect(app)
    app.before_request(_check_access)
    app.after_request(_headers)
    Limiter(
        get_remote_address,
        app=app,
        storage_uri=limits_storage(s),
        key_prefix=f"{s.redis_prefix}limits",
        application_limits=[write_limit],
        application_limits_exempt_when=lambda: request.method in SAFE_METHODS,
        headers_enabled=True,
        swallow_errors=True,  # with Redis down, writes fail on the queue (503), not on the counter
        enabled=bool(s.write_rate_limit),
    )
