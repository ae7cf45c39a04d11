"""The one colour scale of every heatmap, in the browser and in the terminal.

A value is shown as one of SHADE_STEPS shades of a colour, by its |value| relative to a scale (the |value|
shown at full colour): red for the explained class, blue against it (signed methods: LRP, GI), purple for a
method without a sign (SA); exactly zero, and NaN, are white. Any non-zero value gets at least the first
shade, so its sign always shows. The web pages use the shades as stylesheet classes (`shade_stylesheet`,
no inline styles under a strict Content-Security-Policy); the terminal as 24-bit background colours.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FOR_RGB = (214, 39, 40)  # red: relevance for the explained class
AGAINST_RGB = (31, 119, 180)  # blue: against it
UNSIGNED_RGB = (106, 61, 154)  # purple: methods without a sign (SA)
WHITE_RGB = (255, 255, 255)
SHADE_STEPS = 10
UNREAD_COLOUR = "#999"  # text the model did not read (after the maximum length)


def _mix(target: tuple[int, int, int], weight: float) -> tuple[int, int, int]:
    """The colour `weight` of the way from white to `target`."""
    r, g, b = (round(255 + (c - 255) * weight) for c in target)
    return r, g, b


def _shade_table() -> tuple[list[str], list[tuple[int, int, int]]]:
    """Class names and colours by shade index: `h0` white, then `hp1`..`hp10` (red), `hn1`.. (blue),
    `hs1`.. (purple)."""
    names, colours = ["h0"], [WHITE_RGB]
    for kind, target in (("p", FOR_RGB), ("n", AGAINST_RGB), ("s", UNSIGNED_RGB)):
        for step in range(1, SHADE_STEPS + 1):
            names.append(f"h{kind}{step}")
            colours.append(_mix(target, step / SHADE_STEPS))
    return names, colours


SHADE_NAMES, SHADE_RGB = _shade_table()


def hex_colour(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def shade_indices(
    values: npt.NDArray[np.floating], scale: float, signed: bool = True
) -> npt.NDArray[np.intp]:
    """Indices into SHADE_NAMES / SHADE_RGB for many values at once; values beyond the scale saturate."""
    if not scale > 0:  # no scale (all zero), or NaN
        return np.zeros(values.shape, dtype=np.intp)  # (L,)
    with np.errstate(invalid="ignore"):
        steps = np.clip(np.ceil(np.abs(values) / scale * SHADE_STEPS), 1, SHADE_STEPS)  # (L,)
    kind = np.full(values.shape, 0 if signed else 2, dtype=np.intp)  # (L,) 0 red, 1 blue, 2 purple
    if signed:
        kind[values < 0] = 1
    index: npt.NDArray[np.intp] = kind * SHADE_STEPS + np.nan_to_num(steps).astype(np.intp)  # (L,)
    index[(values == 0) | np.isnan(values)] = 0
    return index


def shade_stylesheet() -> str:
    """The CSS rules of every shade class, and of text the model did not read."""
    rules = [
        f".{name}{{background:{hex_colour(rgb)}}}" for name, rgb in zip(SHADE_NAMES, SHADE_RGB, strict=True)
    ]
    rules.append(f".unread{{color:{UNREAD_COLOUR}}}")
    return "\n".join(rules) + "\n"


def legend(signed: bool) -> str:
    """What the colours mean, in words (the terminal's legend and the pages' captions)."""
    if signed:
        return "red: for the explained class, blue: against it, white: zero"
    return "purple: how sensitive the explained class is to the word (no sign), white: zero"
