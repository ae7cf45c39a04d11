"""The cost of the deletion test (and of the agreement) against the explanation of the same reviews, in the
same run, and what the test finds. Not a test: `python -m scripts.bench_faithfulness [--reviews 2000]`."""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from shared.relevance.agreement import PAIRS, AgreementSums, agreement
from shared.relevance.engine import Engine, truncate
from shared.relevance.faithfulness import DIRECTIONS, RANKINGS, FaithfulnessSums, deletion_curves
from shared.relevance.forward import ForwardModel
from shared.relevance.forward import run as forward
from shared.relevance.tokenizer import Vocabulary
from shared.relevance.weights import load_weights
from shared.settings import Settings
from shared.store.imdb import read_split, word_index_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reviews", type=int, default=2000, help="test reviews, spread over the split")
    parser.add_argument("--max-deleted", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best counts")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1, as the workers)")
    args = parser.parse_args()
    settings = Settings.from_env()
    weights = load_weights(settings.model_path)
    vocabulary = Vocabulary.from_file(word_index_path(settings.imdb_dir), weights.vocab_size)
    reviews = list(read_split(settings.imdb_dir, "test"))
    reviews = reviews[:: max(1, len(reviews) // args.reviews)][: args.reviews]
    sequences = [
        truncate(vocabulary.tokenize(r.text).token_ids, weights.max_length, weights.keep)[0] for r in reviews
    ]
    labels: list[int | None] = [r.label for r in reviews]
    print(f"{len(sequences)} reviews, {sum(map(len, sequences)):,} tokens, K = {args.max_deleted}")
    with threadpool_limits(args.threads):
        engine, model = Engine(weights), ForwardModel.from_weights(weights)
        engine.explain(sequences[:100])  # warm
        best = dict.fromkeys(("explain", "deletion", "agreement", "one forward pass"), np.inf)
        tokens = np.concatenate([np.asarray(s, dtype=np.intp) for s in sequences])  # (sum L,)
        lengths = np.array([len(s) for s in sequences], dtype=np.intp)  # (N,)
        for _ in range(args.repeat):
            started = time.perf_counter()
            forward(model, tokens, lengths, np.zeros((len(sequences), 2, weights.hidden_size), np.float32))
            forwarded = time.perf_counter()
            explanations = engine.explain(sequences)
            explained = time.perf_counter()
            curves = deletion_curves(model, sequences, explanations, max_deleted=args.max_deleted)
            deleted = time.perf_counter()
            agreed = agreement(sequences, explanations)
            finished = time.perf_counter()
            run = {
                "one forward pass": forwarded - started,
                "explain": explained - forwarded,
                "deletion": deleted - explained,
                "agreement": finished - deleted,
            }
            print("  ".join(f"{name} {seconds:.2f} s" for name, seconds in run.items()), flush=True)
            best = {name: min(best[name], run[name]) for name in best}
    ratio, passes = best["deletion"] / best["explain"], best["deletion"] / best["one forward pass"]
    print(
        f"best: explain {best['explain']:.2f} s, deletion {best['deletion']:.2f} s ({ratio:.1f}x explain, "
        f"{passes:.1f} forward passes' worth), agreement {best['agreement']:.2f} s"
    )
    report(FaithfulnessSums.of(curves, labels), AgreementSums.of(agreed))


def report(sums: FaithfulnessSums, agreed: AgreementSums) -> None:
    """What the test finds: accuracy at the last k, AOPC with intervals, agreement quartiles."""
    K = sums.flips.shape[-1] - 1
    low, high = sums.aopc.interval()
    mean = sums.aopc.mean()
    print(f"{sums.correct} correctly classified, {sums.misclassified} misclassified")
    for r, ranking in enumerate(RANKINGS):
        cells = [
            f"{direction}: correct {sums.accuracy_correct()[d, r, K]:.3f}, "
            f"misclassified {sums.accuracy_misclassified()[d, r, K]:.3f}, "
            f"AOPC {mean[d, r]:+.3f} [{low[d, r]:+.3f}, {high[d, r]:+.3f}]"
            for d, direction in enumerate(DIRECTIONS)
        ]
        print(f"{ranking:>7} at k = {K}: " + "; ".join(cells))
    for p, pair in enumerate(PAIRS):
        rho, overlap = np.round(agreed.spearman_quartiles()[p], 2), agreed.overlap_quartiles()[p]
        print(
            f"{'-'.join(pair):>7}: Spearman mean {agreed.spearman.mean()[p]:+.3f}, quartiles {rho}; "
            f"top-5 overlap mean {agreed.overlap.mean()[p]:.2f}, quartiles {overlap}"
        )


if __name__ == "__main__":
    main()
