"""`relevance explain` with the committed model: one text in the terminal, and JSON lines in and out."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import orjson
from click.testing import CliRunner

from shared.cli import main
from shared.cli.explain import colour
from tests.e2e.test_service import RECORD_FIELDS  # the documented output format

BACKGROUND = re.compile(r"\x1b\[48;2;(\d+);(\d+);(\d+)m")


def shade(escape: str) -> tuple[str, ...]:
    match = BACKGROUND.match(escape)
    assert match is not None
    return match.groups()


def test_colour_is_red_for_and_blue_against() -> None:
    assert shade(colour(1.0, 1.0, "lrp")) == ("255", "0", "0")
    assert shade(colour(-1.0, 1.0, "gi")) == ("0", "0", "255")
    assert shade(colour(0.0, 1.0, "lrp")) == ("255", "255", "255")


def test_one_text_in_the_terminal() -> None:
    result = CliRunner().invoke(main, ["explain", "This film was a waste of time<br />Awful."], color=True)
    assert result.exit_code == 0, result.output
    assert "predicted: negative" in result.output
    assert "waste" in result.output and "<br />" not in result.output  # the tag became a line break
    shades = [tuple(map(int, m)) for m in BACKGROUND.findall(result.output)]
    assert len(shades) == 8  # one per word read
    assert any(r == 255 and b < 255 for r, _, b in shades)  # some word speaks for "negative"


def test_bad_target_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["explain", "--target", "neutral", "fine"])
    assert result.exit_code == 2 and "--target" in result.output


def test_jsonl_in_and_out_with_bad_lines_named(tmp_path: Path) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [
        orjson.dumps({"id": "a", "text": "A wonderful, moving film. " * 100}),  # longer than 400 tokens
        b"{not json",
        orjson.dumps({"id": 7, "token_ids": [1, 14, 22, 0, 9]}),
        orjson.dumps({"id": "b"}),
        orjson.dumps({"id": "c", "token_ids": [1, 10_000]}),
        orjson.dumps({"id": "d", "text": "<script>alert(1)</script> dull"}),
    ]
    source.write_bytes(b"\n".join(lines) + b"\n")
    result = CliRunner().invoke(main, ["explain", "--input", str(source), "--output", str(output)])
    assert result.exit_code == 1
    for number in (2, 4, 5):
        assert f"in.jsonl:{number}:" in result.output
    records = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    assert [r["id"] for r in records] == ["a", 7, "d"]
    for r in records:
        assert list(r) == RECORD_FIELDS
        n = len(r["token_ids"])
        assert len(r["tokens"]) == n and all(len(r["relevance"][m]) == n for m in ("lrp", "sa", "gi"))
        assert abs(sum(r["probabilities"]) - 1) < 1e-5
    long, ids, hostile = records
    assert long["truncated"] and len(long["token_ids"]) == 400 and long["tokens"][1] == "a"
    text = "A wonderful, moving film. " * 100
    spans, tokens = long["spans"][1:], long["tokens"][1:]
    assert all(text[a:b].lower() == t for (a, b), t in zip(spans, tokens, strict=True))
    assert ids["spans"] is None and ids["tokens"][0] == "<start>" and ids["relevance"]["lrp"][3] == 0.0
    assert hostile["tokens"][1:] == ["script", "alert", "1", "script", "dull"]
    assert np.argmax(hostile["probabilities"]) == hostile["predicted_class"] == hostile["target_class"]
