"""Length generalization in one file: train a Transformer on short inputs, then test it on longer ones.

One cell of the study in ``experiments/length_generalization`` (Delétang et al. 2022; Ruoss et al. 2023), written
top to bottom with the library alone. A task from ``attnjax.data.TASKS`` gives ``(inputs, targets)``; the model
reads the input symbols followed by one blank token per output position and predicts a symbol at every blank.
We train on input lengths 1..TRAIN_MAX_LENGTH, then score per-token accuracy at the blanks on every length
1..TEST_MAX_LENGTH with fresh examples: the mean over the training lengths is the in-distribution accuracy (did
it fit?), the mean over the longer ones the out-of-distribution accuracy (did it generalize?).

    python examples/length_generalization.py
    python examples/length_generalization.py --randomized   # Ruoss et al. (2023) randomized positions
    python examples/length_generalization.py --task parity_check --positional rope
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from attnjax import data
from attnjax.nn import build_model, count_params
from attnjax.train import create_train_state, evaluate_lengths, fit, make_optimizer

# Data: input lengths 1..TRAIN_MAX_LENGTH in training, every length 1..TEST_MAX_LENGTH at test time.
TASK = "reverse_string"  # any name in attnjax.data.TASKS
TRAIN_MAX_LENGTH = 20
TEST_MAX_LENGTH = 60
# Every example draws its own length (the reference draws one per batch, with which this small Transformer
# does not fit its training lengths in a few thousand steps: the study's lr_pilot preset compares both).
PER_EXAMPLE_LENGTHS = True
BATCH_SIZE = 32
EVAL_EXAMPLES = 128  # fresh examples per test length
EVAL_BUCKET = 20  # test batches are padded up to multiples of this length: a few compiled programs, not 60

# Model: an encoder-only (bidirectional) Transformer; any field of attnjax.nn.TransformerConfig may be added.
NUM_LAYERS = 2
D_MODEL = 64
NUM_HEADS = 4
MLP_DIM = 128
POSITIONAL = "sinusoidal"  # any name in attnjax.ops.positional.POSITIONAL
RANDOMIZED = False  # Ruoss et al. 2023: positions are a sorted random subset of [0, MAX_LEN), in training and test
MAX_LEN = 2048

# Optimization: Adam after global-norm clipping, constant learning rate.
STEPS = 3000
LR = 1e-3
MAX_GRAD_NORM = 1.0
SEED = 0
LOG_EVERY = 500


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default=TASK, choices=sorted(data.TASKS))
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--positional", default=POSITIONAL)
    p.add_argument("--randomized", action=argparse.BooleanOptionalAction, default=RANDOMIZED)
    p.add_argument("--lr", type=float, default=LR)
    p.add_argument("--train-length", type=int, default=TRAIN_MAX_LENGTH)
    p.add_argument("--test-length", type=int, default=TEST_MAX_LENGTH)
    p.add_argument("--eval-examples", type=int, default=EVAL_EXAMPLES)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    n, m = args.train_length, args.test_length
    if not 1 <= n < m:
        raise SystemExit(f"need 1 <= --train-length < --test-length, got {n} and {m}")
    task = data.get_task(args.task)
    # Separate streams: the data never depends on the model, and test examples are never training examples.
    init_key, step_key, eval_key = jax.random.split(jax.random.key(args.seed), 3)
    train_rng, eval_rng = (np.random.default_rng([args.seed, i]) for i in (0, 1))

    model = build_model("transformer", task.output_size, dict(
        num_layers=NUM_LAYERS, d_model=D_MODEL, num_heads=NUM_HEADS, mlp_dim=MLP_DIM,
        positional=args.positional, randomized_positions=args.randomized, max_len=MAX_LEN))
    # Parameter shapes do not depend on the sequence length, so one length-1 example initializes the model.
    example = jnp.zeros((1, 1, data.vocab_size(task)), jnp.float32)
    state = create_train_state(model, init_key, example, make_optimizer(args.lr, MAX_GRAD_NORM))
    print(f"{args.task}: transformer, {args.positional}{' randomized' if args.randomized else ''} positions, "
          f"{count_params(state.params):,} parameters; train lengths 1..{n}, test 1..{m}")

    # Every training batch is padded to the longest training length, so the step compiles once.
    def batches(step):
        return data.training_batch(task, train_rng, BATCH_SIZE, n, per_example_lengths=PER_EXAMPLE_LENGTHS)

    t0 = time.perf_counter()
    state, history = fit(state, batches, args.steps, rng=step_key, log_every=LOG_EVERY, progress=False)
    for record in history:
        print(f"step {record['step']:5d}  loss {record['loss']:.4f}  train accuracy {record['accuracy']:.3f}")
    train_seconds = time.perf_counter() - t0

    def test_batches(length):
        pad = data.padded_length(task, min(-(-length // EVAL_BUCKET) * EVAL_BUCKET, m))
        return [data.length_batch(task, eval_rng, args.eval_examples, length, pad)]

    # The key draws the randomized positions at test time too (Ruoss et al.); other models ignore it.
    per_length = evaluate_lengths(state, test_batches, range(1, m + 1), rng=eval_key)
    accuracy = {k: r["accuracy"] for k, r in per_length.items()}
    in_dist = float(np.mean([accuracy[k] for k in range(1, n + 1)]))
    ood = float(np.mean([accuracy[k] for k in range(n + 1, m + 1)]))

    print(f"\naccuracy (%) per input length; trained on 1..{n}")
    for start in range(1, m + 1, 10):
        row = range(start, min(start + 10, m + 1))
        print(f"{start:3d}-{row[-1]:<3d} " + " ".join(f"{100 * accuracy[k]:5.1f}" for k in row))
    print(f"\nin-distribution (1..{n}): {100 * in_dist:.1f}%   out-of-distribution ({n + 1}..{m}): {100 * ood:.1f}%"
          f"   [{train_seconds:.0f} s training, {time.perf_counter() - t0 - train_seconds:.0f} s evaluation]")
    return {"in_distribution": in_dist, "ood": ood, "accuracy_per_length": accuracy}


if __name__ == "__main__":
    main()
