"""The web UI: server-rendered pages over the job service's tables, grouped by what they show (jobs, one job's
reviews, words, logging in). One blueprint, `pages`; app-wide safety (CSP, CSRF, access) is set up by
create_app (api.security), errors by api.errors."""

from __future__ import annotations

from api.pages import jobs, login, review, words
from api.pages.common import bp

__all__ = ["bp", "jobs", "login", "review", "words"]
