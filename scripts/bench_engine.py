"""`make bench`: the engine benchmark, each figure against a baseline measured in the same run. Not a test.

Runs from a source checkout (`python -m scripts.bench_engine`): its baseline is the tests' plain loop."""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from threadpoolctl import threadpool_limits

from shared.relevance.engine import Engine, truncate
from shared.relevance.methods import METHODS
from shared.relevance.tokenizer import Vocabulary
from shared.relevance.weights import ModelWeights, load_weights
from shared.settings import Settings
from shared.store.imdb import read_split, word_index_path
from tests.helpers.reference_loop import explain_one


@dataclass
class Report:
    """Figures in the order they are printed."""

    lines: list[str] = field(default_factory=list)

    def add(self, label: str, value: str, goal: str = "") -> None:
        self.lines.append(f"{label:<52} {value:<44} {goal}".rstrip())
        print(self.lines[-1], flush=True)


def at_least(value: float, goal: float, unit: str) -> str:
    """The verdict on a figure that should reach `goal`."""
    if value >= goal:
        return f"goal >= {goal:,.0f}{unit}: met"
    return f"goal >= {goal:,.0f}{unit}: MISSED by {1 - value / goal:.0%}"


def at_most(value: float, goal: float, unit: str) -> str:
    """The verdict on a figure that should stay within `goal`."""
    if value <= goal:
        return f"goal <= {goal:g}{unit}: met"
    return f"goal <= {goal:g}{unit}: MISSED by {value / goal - 1:.0%}"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def explain_in_chunks(engine: Engine, sequences: Sequence[list[int]], chunk: int) -> None:
    for start in range(0, len(sequences), chunk):
        engine.explain(sequences[start : start + chunk])


def float_precision(weights: ModelWeights, sequences: Sequence[list[int]]) -> dict[str, float]:
    """Largest float32 - float64 difference per method, relative to each review's largest value."""
    single = Engine(weights, np.float32).explain(sequences)
    double = Engine(weights, np.float64).explain(sequences)
    worst = dict.fromkeys(METHODS, 0.0)
    for a, b in zip(single, double, strict=True):
        for m in METHODS:
            exact = getattr(b, m)
            scale = float(np.max(np.abs(exact))) or 1.0
            worst[m] = max(worst[m], float(np.max(np.abs(getattr(a, m) - exact))) / scale)
    return worst


def end_to_end(model_path: Path, imdb_dir: Path, workdir: Path) -> tuple[float, float, int]:
    """`relevance explain --input test.jsonl --output out.jsonl` as a child: seconds, peak MB, lines."""
    source, output, peak = workdir / "test.jsonl", workdir / "out.jsonl", workdir / "peak.txt"
    with source.open("wb") as out:
        for review in read_split(imdb_dir, "test"):
            out.write(orjson.dumps({"id": review.id, "text": review.text}) + b"\n")
    # The child reports its own high-water mark (VmHWM belongs to the program after exec; the rusage of a
    # child would also count the pages it shared with this large process between fork and exec).
    command = (
        "import atexit, pathlib, re; from threadpoolctl import threadpool_limits; threadpool_limits(1); "
        "status = lambda: pathlib.Path('/proc/self/status').read_text(); "
        f"atexit.register(lambda: pathlib.Path({str(peak)!r}).write_text("
        "re.search(r'VmHWM:\\s+(\\d+)', status()).group(1))); "
        "from shared.cli import main; main()"
    )
    args = [sys.executable, "-c", command, "explain", "--input", str(source), "--output", str(output)]
    args += ["--model", str(model_path)]
    start = time.perf_counter()
    subprocess.run(args, check=True, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    with output.open("rb") as lines:
        count = sum(1 for _ in lines)
    return seconds, int(peak.read_text()) / 1024, count


def run(settings: Settings, reviews_at_200: int = 2000, loop_reviews: int = 20, full: bool = True) -> Report:
    """Measure and print every figure of the engine issue's benchmark section."""
    report = Report()
    weights = load_weights(settings.model_path)
    vocab = Vocabulary.from_file(word_index_path(settings.imdb_dir), weights.vocab_size)
    reviews = list(read_split(settings.imdb_dir, "test"))
    tokenized, tokenize_seconds = timed(lambda: [vocab.tokenize(r.text).token_ids for r in reviews])
    report.add("tokenising 25,000 test reviews", f"{tokenize_seconds:.1f} s")

    with threadpool_limits(1):
        at_200 = [ids[:200] for ids in tokenized if len(ids) >= 200][:reviews_at_200]
        engine = Engine(weights, np.float32)
        engine.explain(at_200[:500])  # a warm engine: its workspace is allocated and paged in
        seconds = min(
            timed(lambda: explain_in_chunks(engine, at_200, settings.engine_chunk_size))[1] for _ in range(3)
        )
        rate = len(at_200) / seconds
        report.add(
            f"engine, {len(at_200)} reviews x 200 tokens, best of 3",
            f"{rate:,.0f} reviews/s, {rate * 200:,.0f} tokens/s",
            at_least(rate, 1500, " reviews/s"),
        )
        sample = at_200[:loop_reviews]
        loop_seconds = min(timed(lambda: [explain_one(weights, ids) for ids in sample])[1] for _ in range(3))
        loop_rate = len(sample) / loop_seconds
        label = f"plain per-review loop, {len(sample)} reviews, best of 3"
        report.add(label, f"{loop_rate:,.1f} reviews/s")
        report.add("engine / plain loop", f"{rate / loop_rate:,.0f} x", at_least(rate / loop_rate, 50, " x"))
        precision = float_precision(weights, at_200[:200])
        report.add(
            "float32 vs float64, worst relative difference",
            ", ".join(f"{m} {v:.1e}" for m, v in precision.items()),
            at_most(max(precision.values()), 1e-4, ""),
        )
        if not full:
            return report
        read = [truncate(ids, weights.max_length, weights.keep)[0] for ids in tokenized]
        engine = Engine(weights, np.float32)
        engine.explain(sorted(read, key=len)[-500:])  # warm at the longest length
        engine.seconds = dict.fromkeys(engine.seconds, 0.0)
        _, seconds = timed(lambda: explain_in_chunks(engine, read, settings.engine_chunk_size))
        tokens = sum(len(ids) for ids in read)
        report.add(
            f"engine, all {len(read):,} test reviews (LRP+SA+GI)",
            f"{seconds:.1f} s ({tokens / seconds:,.0f} tokens/s)",
            at_most(seconds, 20, " s"),
        )
        report.add(
            "  where the time goes",
            ", ".join(f"{k} {v:.1f} s ({v / seconds:.0%})" for k, v in engine.seconds.items()),
        )
    with tempfile.TemporaryDirectory() as workdir:
        e2e_seconds, peak_mb, count = end_to_end(settings.model_path, settings.imdb_dir, Path(workdir))
    report.add(
        f"relevance explain --input/--output, {count:,} lines",
        f"{e2e_seconds:.1f} s",
        at_most(e2e_seconds, 45, " s"),
    )
    report.add("  its peak memory (VmHWM)", f"{peak_mb:.0f} MB", at_most(peak_mb, 350, " MB"))
    own_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report.add("this benchmark process (holds all 25k reviews)", f"{own_mb:.0f} MB")
    if rate < 1500:
        print(
            "Why the rate falls short: per token and step LRP+SA+GI need ~140 kFLOP of matrix products,"
            " which one core does in ~1.4 us; the other ~55 % is ~65 separate NumPy element-wise passes per"
            " step, which NumPy cannot fuse (see README, Benchmarks).",
            flush=True,
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=2000, help="reviews cut to 200 tokens for the rate")
    parser.add_argument("--loop-reviews", type=int, default=20, help="reviews for the plain-loop baseline")
    parser.add_argument("--quick", action="store_true", help="skip the 25,000-review and end-to-end runs")
    args = parser.parse_args()
    run(Settings.from_env(), reviews_at_200=args.reviews, loop_reviews=args.loop_reviews, full=not args.quick)


if __name__ == "__main__":
    main()
