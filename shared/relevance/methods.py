"""The relevance methods, named once: every list of methods in the project (engine output fields, table
columns, API enums, CLI choices, page columns) derives from METHODS. Adding one: docs/architecture.md."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """A word-level relevance method: its key (field, column and JSON name), label and sign."""

    key: str
    label: str
    signed: bool  # signed: for (+) or against (-) the explained class; unsigned: how sensitive (>= 0)
    summary: str


ALL = (
    Method("lrp", "LRP", True, "layer-wise relevance propagation (epsilon rule, signal-take-all)"),
    Method("sa", "SA", False, "sensitivity analysis: squared norm of d(target logit)/d(embedding)"),
    Method("gi", "GI", True, "gradient x input: d(target logit)/d(embedding) . embedding"),
)
METHODS = tuple(m.key for m in ALL)  # in the order every output lists them
BY_KEY = {m.key: m for m in ALL}
