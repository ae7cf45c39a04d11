"""`relevance explain` with the committed model: one text in the terminal, and JSON lines in and out."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import orjson
from click.testing import CliRunner

from shared.cli import main
from shared.render.colours import SHADE_RGB, UNSIGNED_RGB
from tests.helpers.formats import RECORD_FIELDS

BACKGROUND = re.compile(r"\x1b\[48;2;(\d+);(\d+);(\d+)m")


def test_one_text_in_the_terminal() -> None:
    result = CliRunner().invoke(main, ["explain", "This film was a waste of time<br />Awful."], color=True)
    assert result.exit_code == 0, result.output
    assert "predicted: negative" in result.output
    assert "waste" in result.output and "<br />" not in result.output  # the tag became a line break
    shades = [tuple(map(int, m)) for m in BACKGROUND.findall(result.output)]
    assert len(shades) == 8  # one per word read
    assert set(shades) <= set(SHADE_RGB)  # the web's palette
    assert any(r > b for r, _, b in shades)  # some word speaks for "negative" (red)
    assert "red: for the explained class" in result.output


def test_sa_is_purple_with_a_legend_without_sign() -> None:
    result = CliRunner().invoke(main, ["explain", "--method", "sa", "A dull, boring film"], color=True)
    assert result.exit_code == 0, result.output
    shades = {tuple(map(int, m)) for m in BACKGROUND.findall(result.output)}
    assert UNSIGNED_RGB in shades  # the most sensitive word at full purple
    assert all(r >= g and b >= g for r, g, b in shades)  # purple or white, never red-only or blue-only
    assert "no sign" in result.output and "red:" not in result.output


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


def test_workers_write_in_input_order_exactly_what_one_process_writes(tmp_path: Path) -> None:
    """Two worker processes, chunks of 7 lines: the same bytes as one process, bad lines named by number."""
    source = tmp_path / "in.jsonl"
    lines = [orjson.dumps({"id": n, "text": f"review {n}: " + "a dull film, " * (n % 9)}) for n in range(40)]
    lines[17] = b"{broken"
    lines[31] = orjson.dumps({"id": 31, "token_ids": [1, 10_000]})
    source.write_bytes(b"\n".join(lines) + b"\n")
    outputs = {}
    for workers in ("1", "2"):
        output = tmp_path / f"out-{workers}.jsonl"
        args = ["explain", "--input", str(source), "--output", str(output), "--workers", workers]
        result = CliRunner(env={"ENGINE_CHUNK_SIZE": "7"}).invoke(main, args)
        assert result.exit_code == 1, result.output
        assert "in.jsonl:18:" in result.output and "in.jsonl:32:" in result.output
        outputs[workers] = output.read_bytes()
    assert outputs["1"] == outputs["2"]
    ids = [orjson.loads(line)["id"] for line in outputs["2"].splitlines()]
    assert ids == [n for n in range(40) if n not in (17, 31)]
