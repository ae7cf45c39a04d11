"""Charts as PNG images (matplotlib, imported only when one is drawn: workers never draw)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from shared.render.colours import AGAINST_RGB, FOR_RGB, hex_colour


@dataclass(frozen=True)
class BarPanel:
    """One panel of horizontal bars, listed top to bottom."""

    title: str
    labels: Sequence[str]
    values: Sequence[float]
    towards: bool  # True: bars in the "for" colour (red), False: the "against" colour (blue)


def bar_panels_png(panels: Sequence[BarPanel], title: str) -> bytes:
    """Panels side by side with a zero line, on the heatmaps' red and blue."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4 * len(panels), 4.8), dpi=100, layout="constrained")
    axes_row = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, panel in zip(axes_row, panels, strict=True):
        colour = hex_colour(FOR_RGB if panel.towards else AGAINST_RGB)
        axes.barh(list(panel.labels)[::-1], list(panel.values)[::-1], color=colour)
        axes.set_title(panel.title)
        axes.axvline(0, color="#444", linewidth=0.8)
        axes.tick_params(labelsize=8)
    figure.suptitle(title, fontsize=10)
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
