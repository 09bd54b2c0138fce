"""The decoder-only protocol of a length study: a model that writes its answer token by token
(:mod:`attnjax.data.autoregressive`), validated and scored at every input length, teacher-forced and free-running.

A cell trains teacher-forced with the loss on the answer and END only, then is scored at every input length
``1..m`` four ways (:data:`METRICS`): per-token accuracy under the task's accuracy mask and whole-answer exact
match, each teacher-forced (one forward pass, argmax) and free-running (greedy decoding from the key/value cache,
jitted: :func:`attnjax.train.decode.decoder_eval_rows`). ``ood_<metric>`` is the mean over the test lengths
``n+1..m``, ``in_dist_<metric>`` over the training lengths ``1..n``; ``ood_score`` and ``train_accuracy``, the
numbers every length-study report reads, are the free-running per-token accuracy (:data:`HEADLINE`).

The compiled programs of greedy decoding are fixed by the batch's shortest and longest prompt, so lengths are
scored in buckets (:func:`length_buckets`): one batch holds ``batch_size`` examples at each length of a bucket,
is decoded once, and its rows are grouped by length afterwards. The training lengths are one bucket, the shape of
the validation batch (:func:`validation`): with ``val_batch_size == eval_batch_size`` they share one program. The
examples are drawn length by length in increasing order from the cell's stream, the same draws as the encoder
protocol's (:mod:`attnjax.data.batching`) makes from the same stream, so both protocols score the same examples.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np

from attnjax.data import autoregressive
from attnjax.data.tasks import Task
from attnjax.train import TrainState
from attnjax.train.decode import decoder_eval_rows
from attnjax.train.seq2seq_steps import SUM_KEYS, reduce_seq2seq_metrics

# A result's metric -> the key of attnjax.train.seq2seq_steps.reduce_seq2seq_metrics it reads.
METRICS = {"token": "token_accuracy", "exact": "sequence_accuracy", "greedy_token": "greedy_token_accuracy",
           "greedy_exact": "greedy_sequence_accuracy"}
HEADLINE = "greedy_token"  # ood_score / train_accuracy: what the model does when it writes its own answer


def length_buckets(n: int, m: int, size: int) -> list[list[int]]:
    """The training lengths ``1..n`` as one bucket, then the test lengths ``n+1..m`` in runs of ``size``
    (``size <= 0``: all in one)."""
    test = list(range(n + 1, m + 1))
    size = size if size > 0 else len(test)
    return [list(range(1, n + 1))] + [test[i:i + size] for i in range(0, len(test), size)]


def bucket_batch(task: Task, rng: np.random.Generator, lengths: Sequence[int], batch_size: int
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``batch_size`` examples at each input length of ``lengths`` as one autoregressive batch padded to the
    longest: ``(row_lengths [B], batch)``, ``B = batch_size * len(lengths)``."""
    rows = np.repeat(np.asarray(lengths, np.int64), int(batch_size))
    return rows, autoregressive.make_batch(task, rng, rows, autoregressive.padded_length(task, max(lengths)))


def scores_by_length(model: Any, params: Any, batches: Iterable[tuple[np.ndarray, Mapping[str, Any]]], *,
                     rng: jax.Array | None = None) -> dict[int, dict[str, float]]:
    """Every batch decoded once (batch ``i`` with ``fold_in(rng, i)``), its rows grouped by ``row_lengths``:
    ``{length: reduce_seq2seq_metrics(...)}`` (teacher-forced and free-running per-token accuracy and exact match,
    loss, counts). Every batch is dispatched before the one transfer to the host."""
    lengths, rows = [], []
    for i, (row_lengths, batch) in enumerate(batches):
        lengths.append(np.asarray(row_lengths))
        rows.append(decoder_eval_rows(model, params, batch, None if rng is None else jax.random.fold_in(rng, i)))
    row_lengths, sums = np.concatenate(lengths), jax.device_get(rows)
    sums = {k: np.concatenate([np.asarray(s[k]) for s in sums]) for k in SUM_KEYS}
    return {int(k): reduce_seq2seq_metrics([{key: v[row_lengths == k].sum() for key, v in sums.items()}])
            for k in np.unique(row_lengths)}


def length_scores(model: Any, params: Any, task: Task, data_rng: np.random.Generator, n: int, m: int, *,
                  batch_size: int, bucket: int, rng: jax.Array | None = None, in_full: bool = True
                  ) -> dict[str, Any]:
    """A cell's scores at every input length ``1..m`` (module docstring): ``in_dist_<metric>`` (mean over ``1..n``)
    and ``ood_<metric>`` (mean over ``n+1..m``) for each of :data:`METRICS`, ``train_accuracy`` and ``ood_score``
    (the :data:`HEADLINE` metric); with ``in_full``, ``per_length``: ``{str(length): {metric: value}}``.

    Args:
        model, params: the decoder-only model (a TransformerLM or a recurrent LM) and its parameters.
        task: the task; ``data_rng``: its test stream (drawn from in increasing length order).
        n, m: the longest training and test input length.
        batch_size: examples per length; ``bucket``: test lengths per decoded batch (:func:`length_buckets`).
        rng: the ``'positions'`` key of a model with randomized positions at evaluation; None otherwise.
    """
    batches = (bucket_batch(task, data_rng, lengths, batch_size) for lengths in length_buckets(n, m, bucket))
    per = scores_by_length(model, params, batches, rng=rng)
    out: dict[str, Any] = {}
    for metric, key in METRICS.items():
        out[f"in_dist_{metric}"] = float(np.mean([per[k][key] for k in range(1, n + 1)]))
        out[f"ood_{metric}"] = float(np.mean([per[k][key] for k in range(n + 1, m + 1)]))
    out["train_accuracy"], out["ood_score"] = out[f"in_dist_{HEADLINE}"], out[f"ood_{HEADLINE}"]
    if in_full:
        out["per_length"] = {str(k): {metric: round(per[k][key], 4) for metric, key in METRICS.items()} for k in per}
    return out


def validation(model: Any, task: Task, data_rng: np.random.Generator, n: int, batch_size: int, *,
               rng: jax.Array | None = None) -> Callable[[TrainState], dict[str, float]]:
    """Train-to-fit's validation (``fit(validate=...)``): ``batch_size`` held-out examples at each training length
    ``1..n``, drawn once into one batch (one compiled program). ``accuracy``: the free-running per-token accuracy,
    mean over the lengths (as ``train_accuracy`` is); ``teacher_forced_accuracy`` beside it. Never test lengths."""
    batch = bucket_batch(task, data_rng, range(1, n + 1), batch_size)

    def validate(state: TrainState) -> dict[str, float]:
        per = scores_by_length(model, state.params, [batch], rng=rng)
        return {"accuracy": float(np.mean([v[METRICS[HEADLINE]] for v in per.values()])),
                "teacher_forced_accuracy": float(np.mean([v["token_accuracy"] for v in per.values()]))}
    return validate
