"""Alembic's migrations (`env.py`, `versions/`), a package of the distribution beside `shared`: alembic.ini
and `shared.store.db.migrate` name them `migrations:.`, so an installed `relevance` migrates too."""
