"""The heatmap HTML: the text with line breaks, one escaped span per token, colours centred on zero."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest

from shared.relevance.tokenizer import word_spans
from shared.render.colours import AGAINST_RGB, FOR_RGB, SHADE_NAMES, SHADE_RGB, hex_colour, shade_stylesheet
from shared.render.heatmap import render_heatmap

HOSTILE = [
    "<script>window.__xss=1</script> good",
    '"><img src=x onerror="window.__xss=1"> bad',
    "' onmouseover='alert(1)' x=' &amp; &lt;",
    '</span><span style="background:red">fake</span>',
]


class Collect(HTMLParser):
    """Tags, attributes and the text as a browser would parse them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "br":
            self.text.append("\n")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Collect:
    collect = Collect()
    collect.feed(html)
    collect.close()
    return collect


def spans_and_values(text: str) -> tuple[list[tuple[int, int]], list[float]]:
    spans = [(0, 0), *word_spans(text)]  # the start token first, as the tokenizer gives it
    return spans, [0.5, *[(-1) ** k * (k + 1) / 10 for k in range(len(spans) - 1)]]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_is_shown_literally_and_creates_no_markup(text: str) -> None:
    spans, values = spans_and_values(text)
    html = render_heatmap(text, spans, values)
    parsed = parse(str(html))
    assert {tag for tag, _ in parsed.tags} == {"span"}
    assert all(set(attrs) == {"class", "data-r", "title"} for _, attrs in parsed.tags)
    assert "".join(parsed.text) == text  # the browser shows exactly the review
    assert len(parsed.tags) == len(spans) - 1  # one span per token with text


@pytest.mark.parametrize("seed", range(20))
def test_any_mix_of_special_characters_round_trips(seed: int) -> None:
    rng = np.random.default_rng(seed)
    alphabet = [*"ab '\"&<>/=\u00e9\u0085", "<br />", "<BR>", "&amp;"]
    text = "".join(rng.choice(alphabet, 60).tolist())
    spans = [(0, 0), *word_spans(text)]
    values = rng.normal(size=len(spans)).tolist()
    cut = max(1, len(spans) // 2)
    for truncated in (False, True):
        html = str(render_heatmap(text, spans[:cut], values[:cut], truncated=truncated))
        shown = "".join(parse(html).text)
        assert shown == re.sub("(?i)<br\\s*/?>", "\n", text)
        assert re.findall('data-r="([^"]+)"', html) == [f"{v:.3g}" for v in values[1:cut]]


def test_line_breaks_values_and_colours() -> None:
    text = "Great film.<br /><br />Bad <i>ending</i>"
    spans = [(0, 0), *word_spans(text)]
    values = [9.0, 0.5, 0.0, -1.0, 0.25, -0.25, 0.25]
    html = str(render_heatmap(text, spans, values))
    parsed = parse(html)
    assert "".join(parsed.text) == "Great film.\n\nBad <i>ending</i>"
    attrs = [a for tag, a in parsed.tags if tag == "span"]
    assert [a["data-r"] for a in attrs] == ["0.5", "0", "-1", "0.25", "-0.25", "0.25"]
    shades = [(a["class"] or "").split()[1] for a in attrs]
    assert shades == ["hp5", "h0", "hn10", "hp3", "hn3", "hp3"]  # zero white, the largest |value| full blue


def colours_in(stylesheet: str) -> dict[str, str]:
    return dict(re.findall(r"\.(h\w+)\{background:(#[0-9a-f]{6})\}", stylesheet))


def test_stylesheet_defines_every_shade_with_the_palette() -> None:
    colours = colours_in(shade_stylesheet())
    assert list(colours) == SHADE_NAMES
    assert colours["h0"] == "#ffffff"
    assert colours["hp10"] == hex_colour(FOR_RGB) and colours["hn10"] == hex_colour(AGAINST_RGB)
    assert [colours[n] for n in SHADE_NAMES] == [hex_colour(rgb) for rgb in SHADE_RGB]


def test_unsigned_methods_use_the_one_sided_shades() -> None:
    html = str(render_heatmap("a b c", [(0, 1), (2, 3), (4, 5)], [0.0, 0.5, 1.0], signed=False))
    assert re.findall(r'class="tok (\w+)"', html) == ["h0", "hs5", "hs10"]


def test_text_the_model_did_not_read_is_greyed() -> None:
    text = "one two three four"
    spans = [(0, 0), *word_spans(text)][:3]  # the model read "one two"
    html = str(render_heatmap(text, spans, [0.0, 1.0, -1.0], truncated=True))
    assert html.endswith('<span class="unread"> three four</span>')
    assert "unread" not in str(render_heatmap(text, spans, [0.0, 1.0, -1.0], truncated=False))


def test_shared_scale_and_degenerate_values() -> None:
    text = "a b"
    spans = [(0, 1), (2, 3)]
    assert 'class="tok hp3" data-r="1"' in render_heatmap(text, spans, [1.0, 0.0], scale=4.0)
    assert 'class="tok hp10" data-r="1"' in render_heatmap(text, spans, [1.0, 0.0])
    assert render_heatmap(text, spans, [0.0, 0.0]).count("h0") == 2  # all zero: no division by zero
    assert render_heatmap(text, spans, [float("nan"), 1.0]).count("h0") == 1
    with pytest.raises(ValueError, match="2 spans but 1 values"):
        render_heatmap(text, spans, [1.0])
