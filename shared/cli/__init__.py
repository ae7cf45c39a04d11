"""The `relevance` command line: one click group, one module per theme."""

from __future__ import annotations

import click

from shared.cli.data import import_imdb
from shared.cli.explain import explain
from shared.cli.jobs import delete, export, faithfulness, status, submit
from shared.cli.train import train


@click.group()
def main() -> None:
    """Explain an IMDB LSTM sentiment classifier word by word (LRP, SA, GI)."""


main.add_command(explain)
main.add_command(train)
main.add_command(import_imdb)
main.add_command(submit)
main.add_command(status)
main.add_command(export)
main.add_command(delete)
main.add_command(faithfulness)
