"""Logging in: the web UI asks for the token once, before any write (only when API_TOKEN is set)."""

from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as Redirect

from api.context import settings
from api.pages.common import bp
from api.security import token_access


def _next_page() -> str:
    """Where to go afterwards: a path of this site only (never another host)."""
    target = request.values.get("next", "")
    return target if target.startswith("/") and not target.startswith("//") else url_for("pages.jobs")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if not settings().api_token:
        return redirect(_next_page(), 303)
    if request.method == "GET":
        return render_template("login.html", next=_next_page(), refused=False)
    access = token_access(request.form.get("token", ""), settings())
    if access is None:
        return render_template("login.html", next=_next_page(), refused=True), 401
    session.clear()  # a fresh session (and CSRF token) for the new access level
    session["access"] = access
    return redirect(_next_page(), 303)


@bp.post("/logout")
def logout() -> Redirect:
    session.clear()
    return redirect(url_for("pages.jobs"), 303)
