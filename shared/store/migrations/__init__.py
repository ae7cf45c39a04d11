"""Alembic's migrations (`env.py`, `versions/`), shipped inside the package: alembic.ini and
`shared.store.db.migrate` name them `shared.store:migrations`, so an installed package migrates too."""
