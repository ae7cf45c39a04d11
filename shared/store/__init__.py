"""Storage: the settings-bound database engine and sessions, the SQLAlchemy tables, the IMDB data files and
their import into the database. May import `shared.settings` and `shared.relevance`, nothing above."""
