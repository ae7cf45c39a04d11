"""`relevance bench`."""

from __future__ import annotations

import click


@click.command()
def bench() -> None:
    """Not built yet."""
    raise click.ClickException("not built yet")
