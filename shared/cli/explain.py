"""`relevance explain`."""

from __future__ import annotations

import click


@click.command()
def explain() -> None:
    """Not built yet."""
    raise click.ClickException("not built yet")
