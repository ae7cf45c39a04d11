"""Charts as PNG images (matplotlib, imported only when one is drawn: workers never draw)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from shared.render.colours import FOR_RGB, UNSIGNED_RGB, hex_colour

PALE = 1 / 3


@dataclass(frozen=True)
class BarPanel:
    """One panel of horizontal bars, listed top to bottom."""

    title: str
    labels: Sequence[str]
    values: Sequence[float]
    signed: bool  # True: toward a class, in the heatmaps' "for" colour (red); False: no sign (purple)
    weak: Sequence[bool]  # bars of weak evidence, drawn pale


def pale_rgb(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """The colour a third of the way from white: for bars that are weak evidence."""
    r, g, b = (round(255 - (255 - c) * PALE) for c in rgb)
    return r, g, b


def bar_panels_png(panels: Sequence[BarPanel], title: str) -> bytes:
    """Panels side by side with a zero line, in the heatmaps' colours."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4 * len(panels), 4.8), dpi=100, layout="constrained")
    axes_row = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, panel in zip(axes_row, panels, strict=True):
        rgb = FOR_RGB if panel.signed else UNSIGNED_RGB
        pale = hex_colour(pale_rgb(rgb))
        colours = [pale if weak else hex_colour(rgb) for weak in panel.weak]
        axes.barh(list(panel.labels)[::-1], list(panel.values)[::-1], color=colours[::-1])
        axes.set_title(panel.title)
        axes.axvline(0, color="#444", linewidth=0.8)
        axes.tick_params(labelsize=8)
    figure.suptitle(title, fontsize=10)
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


@dataclass(frozen=True)
class Series:
    """One line of a panel; a floor (a baseline such as a random ranking) is drawn grey and dashed."""

    label: str
    values: Sequence[float]
    floor: bool = False


@dataclass(frozen=True)
class LinePanel:
    """One panel of lines over shared x values."""

    title: str
    x: Sequence[float]
    series: Sequence[Series]
    xlabel: str
    ylabel: str


def line_panels_png(panels: Sequence[LinePanel], title: str) -> bytes:
    """Panels side by side, one marked line per series and a legend."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5 * len(panels), 4), dpi=100, layout="constrained")
    axes_row = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, panel in zip(axes_row, panels, strict=True):
        for series in panel.series:
            style = {"color": "#888", "linestyle": "--"} if series.floor else {}
            axes.plot(
                list(panel.x), list(series.values), marker="o", markersize=3, label=series.label, **style
            )
        axes.set_title(panel.title, fontsize=10)
        axes.set_xlabel(panel.xlabel)
        axes.set_ylabel(panel.ylabel)
        axes.grid(alpha=0.3)
        axes.tick_params(labelsize=8)
        axes.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
