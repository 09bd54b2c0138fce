"""Every task: reference facts, hand-worked answers, its defining property on samples, shapes and determinism.

Token maps and sizes below are written from the reference code (google-deepmind/neural_networks_chomsky_hierarchy),
independently of attnjax's constants, so a wrong id in the library fails here.
"""

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from attnjax import data
from attnjax.data.tasks import context_free as cf, context_sensitive as cs, regular

# name: (tier, input_size, output_size, {n: output_length(n)}, termination token)
REFERENCE = {
    "even_pairs": ("regular", 2, 2, {1: 1, 7: 1}, None),
    "modular_arithmetic": ("regular", 9, 5, {1: 1, 7: 1}, None),
    "parity_check": ("regular", 2, 2, {1: 1, 7: 1}, None),
    "cycle_navigation": ("regular", 3, 5, {1: 1, 7: 1}, None),
    "stack_manipulation": ("context_free", 5, 3, {1: 2, 7: 8}, 2),
    "reverse_string": ("context_free", 2, 2, {1: 1, 7: 7}, None),
    "modular_arithmetic_brackets": ("context_free", 11, 5, {1: 1, 7: 1}, None),
    "solve_equation": ("context_free", 11, 5, {1: 1, 7: 1}, None),
    "duplicate_string": ("context_sensitive", 2, 2, {1: 2, 7: 14}, None),
    "missing_duplicate_string": ("context_sensitive", 4, 2, {1: 1, 7: 1}, None),
    "odds_first": ("context_sensitive", 2, 2, {1: 1, 7: 7}, None),
    "binary_addition": ("context_sensitive", 3, 3, {1: 2, 7: 8}, 2),
    "binary_multiplication": ("context_sensitive", 3, 3, {1: 1, 7: 7}, 2),
    "compute_sqrt": ("context_sensitive", 2, 2, {1: 1, 6: 3, 7: 4}, None),
    "bucket_sort": ("context_sensitive", 5, 5, {1: 1, 7: 7}, None),
}
MOD_CHARS = {5: "+", 6: "-", 7: "*"}  # modular_arithmetic (8 = "_" is never sampled)
BRACKET_CHARS = {5: "+", 6: "-", 7: "*", 8: "(", 9: ")"}  # modular_arithmetic_brackets
EQUATION_CHARS = {5: "+", 6: "-", 7: "(", 8: ")", 9: "x", 10: "="}  # solve_equation
LENGTHS = (1, 2, 3, 4, 5, 8, 13)


def _decode(row, chars):
    return "".join(chars.get(int(t), str(int(t))) for t in row)


def _sample(name, n, batch=64, seed=0):
    return data.get_task(name).sample(np.random.default_rng(seed), batch, n)


def _little(bits):
    return int("".join(map(str, bits[::-1])) or "0", 2)


def _terminated(value, width):
    """The reference's output: little-endian bits without leading zeros, 2, zeros to ``width``."""
    bits = [int(c) for c in f"{value:b}"[::-1]]
    return bits + [2] + [0] * (width - len(bits) - 1)


# --------------------------------------------------------------------------- registry and reference facts


def test_registry_matches_reference_facts():
    assert data.TIERS == ("regular", "context_free", "context_sensitive")
    assert list(data.TASKS) == list(REFERENCE)  # grouped by tier, in TIERS order
    for name, (tier, n_in, n_out, out_lengths, end) in REFERENCE.items():
        task = data.get_task(name)
        assert (task.name, task.tier, task.input_size, task.output_size, task.termination_token) == \
            (name, tier, n_in, n_out, end), name
        assert {n: task.output_length(n) for n in out_lengths} == out_lengths, name
        assert task.is_classification == (out_lengths[7] == 1), name


def test_sequence_length_and_modular_arithmetic_odd_inputs():
    task = data.get_task("modular_arithmetic")
    assert [task.input_length(n) for n in range(1, 7)] == [1, 1, 3, 3, 5, 5]
    assert [task.sequence_length(n) for n in (1, 2, 5, 6)] == [2, 2, 6, 6]
    for n in (2, 6):
        x, y = _sample("modular_arithmetic", n, batch=4)
        assert x.shape == (4, n - 1) and y.shape == (4, 1)
    assert data.get_task("duplicate_string").sequence_length(5) == 15


@pytest.mark.parametrize("name", list(REFERENCE))
def test_shapes_dtypes_and_token_ranges(name):
    task = data.get_task(name)
    for n in LENGTHS:
        x, y = _sample(name, n, batch=32, seed=n)
        n_in = task.input_length(n)
        assert x.shape == (32, n_in) and y.shape == (32, task.output_length(n_in))
        assert x.dtype == np.int32 and y.dtype == np.int32
        assert x.min() >= 0 and x.max() < task.input_size
        assert y.min() >= 0 and y.max() < task.output_size


@pytest.mark.parametrize("name", list(REFERENCE))
def test_same_seed_same_samples_other_seed_differs(name):
    a, b, c = (_sample(name, 12, batch=16, seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="task must be one of"):
        data.get_task("nope")
    task = data.get_task("reverse_string")
    with pytest.raises(ValueError, match="length must be >= 1, got 0"):
        task.sample(np.random.default_rng(0), 2, 0)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        task.sample(np.random.default_rng(0), 0, 3)
    with pytest.raises(ValueError, match="tier must be one of"):
        data.Task(name="t", tier="recursive", input_size=2, output_size=2, output_length=len, generate=None)
    with pytest.raises(ValueError, match=r"termination_token must be in \[0, output_size=2\), got 2"):
        data.Task(name="t", tier="regular", input_size=2, output_size=2, output_length=len, generate=None,
                  termination_token=2)
    with pytest.raises(ValueError, match=r"inputs of parity_check must be \[B, n\]"):
        regular.parity_check_targets(np.zeros(3, int))
    with pytest.raises(ValueError, match=r"tokens in \[0, 2\), got range \[0, 2\]"):
        regular.parity_check_targets(np.array([[0, 2]]))
    with pytest.raises(ValueError, match="odd length, got 4"):
        regular.modular_arithmetic_targets(np.array([[1, 5, 2, 5]]))
    with pytest.raises(ValueError, match="alternate digits"):
        regular.modular_arithmetic_targets(np.array([[1, 2, 3]]))
    with pytest.raises(ValueError, match="one separator"):
        cs.binary_addition_targets(np.array([[1, 0, 1, 1]]))
    with pytest.raises(ValueError, match="must be bits"):
        cs.binary_addition_targets(np.array([[2, 1]]))
    with pytest.raises(ValueError, match="must hide exactly one symbol"):
        cs.missing_duplicate_string_targets(np.array([[0, 1, 0, 1]]))


# --------------------------------------------------------------------------- accuracy mask


def test_accuracy_mask_stops_at_termination_token():
    task = data.get_task("binary_addition")
    targets = np.array([[0, 1, 2, 0, 0], [1, 1, 1, 1, 2], [2, 0, 0, 0, 0]])
    np.testing.assert_array_equal(task.accuracy_mask(targets), [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    with pytest.raises(ValueError, match=r"rows \[1\] lack it"):
        task.accuracy_mask(np.array([[2, 0], [0, 1]]))
    with pytest.raises(ValueError, match=r"targets must be \[B, m\], got shape \(3,\)"):
        task.accuracy_mask(np.array([0, 2, 0]))
    plain = data.get_task("reverse_string")
    assert plain.accuracy_mask(np.array([[0, 1, 1]])).all()


@pytest.mark.parametrize("name", ["stack_manipulation", "binary_addition", "binary_multiplication"])
def test_sampled_terminating_targets_have_one_end_then_zeros(name):
    for n in LENGTHS:
        _, y = _sample(name, n, seed=n)
        ends = y == 2
        assert (ends.sum(1) == 1).all()
        after = np.arange(y.shape[1])[None] > ends.argmax(1)[:, None]
        assert (y[after] == 0).all()
        np.testing.assert_array_equal(data.get_task(name).accuracy_mask(y), ~after)


# --------------------------------------------------------------------------- regular


def test_regular_hand_worked():
    parity_inputs = np.array([[1, 0, 1, 0, 1, 0, 0], [0, 1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(regular.parity_check_targets(parity_inputs), [[1], [0]])
    # 001110: one "01" and one "10" -> 0; 0101001: five unequal pairs -> 1.
    np.testing.assert_array_equal(regular.even_pairs_targets(np.array([[0, 0, 1, 1, 1, 0]])), [[0]])
    np.testing.assert_array_equal(regular.even_pairs_targets(np.array([[0, 1, 0, 1, 0, 0, 1]])), [[1]])
    # Token t moves by t - 1 (the reference code): +1 -1 0 -1 -1 = -2 -> 3; +1 +1 +1 -1 -> 2.
    np.testing.assert_array_equal(regular.cycle_navigation_targets(np.array([[2, 0, 1, 0, 0], [2, 2, 2, 0, 1]])),
                                  [[3], [2]])
    # 1+2*3 = 7 -> 2; 1-1-1 -> 4; 0*1+4*3-2 = 10 -> 0; 3-4*2*2 = -13 -> 2; 4 -> 4.
    exprs = {"1+2*3": 2, "1-1-1": 4, "0*1+4*3-2": 0, "3-4*2*2": 2, "4": 4}
    for text, want in exprs.items():
        ids = [int(c) if c.isdigit() else {"+": 5, "-": 6, "*": 7}[c] for c in text]
        assert regular.modular_arithmetic_targets(np.array([ids]))[0, 0] == want, text


@pytest.mark.parametrize("n", [1, 2, 3, 9, 40])
def test_regular_properties(n):
    x, y = _sample("parity_check", n)
    np.testing.assert_array_equal(y[:, 0], x.sum(1) % 2)
    x, y = _sample("even_pairs", n)
    np.testing.assert_array_equal(y[:, 0], (x[:, 0] != x[:, -1]).astype(int))
    x, y = _sample("cycle_navigation", n)
    np.testing.assert_array_equal(y[:, 0], ((x == 2).sum(1) - (x == 0).sum(1)) % 5)
    x, y = _sample("modular_arithmetic", n)
    for row, label in zip(x, y[:, 0]):
        text = _decode(row, MOD_CHARS)
        assert re.fullmatch(r"\d([+*-]\d)*", text)
        assert eval(text) % 5 == label, text  # noqa: S307 - digits and operators only


def test_regular_samples_use_whole_alphabet():
    x, y = _sample("modular_arithmetic", 41, batch=128)
    assert set(np.unique(x[:, 1::2])) == {5, 6, 7} and set(np.unique(x[:, ::2])) == set(range(5))
    assert set(np.unique(y)) == set(range(5))
    x, y = _sample("cycle_navigation", 10, batch=128)
    assert set(np.unique(x)) == {0, 1, 2} and set(np.unique(y)) == set(range(5))
    for name in ("parity_check", "even_pairs"):
        assert set(np.unique(_sample(name, 10)[1])) == {0, 1}


# --------------------------------------------------------------------------- deterministic context-free


def _run_stack(tokens):
    stack = []
    for t in tokens:
        if t == 2:
            if stack:
                stack.pop()
        else:
            stack.append(t - 3 if t >= 3 else t)
    return stack[::-1]


def test_stack_manipulation_hand_worked():
    # The reference's examples: 0 1 1 0 PUSH1 POP POP -> 1 1 0 END; 1 1 0 POP POP POP -> END.
    np.testing.assert_array_equal(cf.stack_manipulation_targets(np.array([[0, 1, 1, 0, 4, 2, 2]])),
                                  [[1, 1, 0, 2, 0, 0, 0, 0]])
    np.testing.assert_array_equal(cf.stack_manipulation_targets(np.array([[1, 1, 0, 2, 2, 2]])),
                                  [[2, 0, 0, 0, 0, 0, 0]])
    # A pop on the empty stack is ignored; pushes of 0 and 1.
    np.testing.assert_array_equal(cf.stack_manipulation_targets(np.array([[0, 2, 2, 4, 3]])), [[0, 1, 2, 0, 0, 0]])
    np.testing.assert_array_equal(cf.stack_manipulation_targets(np.array([[1]])), [[1, 2]])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=30))
def test_stack_manipulation_matches_list_simulation(tokens):
    want = _run_stack(tokens)
    want = want + [2] + [0] * (len(tokens) - len(want))
    np.testing.assert_array_equal(cf.stack_manipulation_targets(np.array([tokens]))[0], want)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 30])
def test_stack_manipulation_samples(n):
    x, y = _sample("stack_manipulation", n)
    for row, out in zip(x, y):
        want = _run_stack(row.tolist())
        np.testing.assert_array_equal(out, want + [2] + [0] * (n - len(want)))
        stack_len = np.argmax(row >= 2) if (row >= 2).any() else n
        # Stack symbols first (1..n-1 of them for n >= 2), then actions only.
        assert (row[:stack_len] < 2).all() and (row[stack_len:] >= 2).all()
        assert stack_len == n if n == 1 else 1 <= stack_len <= n - 1


def test_reverse_string():
    np.testing.assert_array_equal(cf.reverse_string_targets(np.array([[0, 1, 1, 0, 1, 0]])), [[0, 1, 0, 1, 1, 0]])
    for n in (1, 2, 7):
        x, y = _sample("reverse_string", n)
        np.testing.assert_array_equal(cf.reverse_string_targets(y), x)  # reversing twice is the identity
        np.testing.assert_array_equal(y[:, 0], x[:, -1])


def test_bracket_expressions_short_lengths_are_the_reference_shapes():
    shapes = {1: r"\d", 2: r"-\d", 3: r"\(\d\)", 4: r"\(-\d\)", 5: r"\(\d[+*-]\d\)"}
    for n, pattern in shapes.items():
        x, y = _sample("modular_arithmetic_brackets", n)
        for row, label in zip(x, y[:, 0]):
            text = _decode(row, BRACKET_CHARS)
            assert re.fullmatch(pattern, text), text
            assert eval(text) % 5 == label  # noqa: S307


@pytest.mark.parametrize("n", [6, 7, 11, 24, 60])
def test_modular_arithmetic_brackets_evaluates_like_python(n):
    x, y = _sample("modular_arithmetic_brackets", n)
    assert not (x == 10).any()  # "x" is in the alphabet but never sampled
    for row, label in zip(x, y[:, 0]):
        text = _decode(row, BRACKET_CHARS)
        assert re.fullmatch(r"[\d+*()-]+", text) and text.count("(") == text.count(")")
        assert eval(text) % 5 == label, text  # noqa: S307


def test_modular_arithmetic_brackets_uses_multiplication_and_all_values():
    x, y = _sample("modular_arithmetic_brackets", 15, batch=128)
    assert {5, 6, 7} <= set(np.unique(x)) and set(np.unique(y)) == set(range(5))


def _check_equation(text, solution):
    lhs, rhs = text.split("=")
    assert text.count("x") == 1 and "*" not in lhs and re.fullmatch(r"\d", rhs), text
    values = [eval(lhs.replace("x", f"({v})")) % 5 for v in range(5)]  # noqa: S307
    assert values[solution] == int(rhs), text
    assert values.count(int(rhs)) == 1, text  # no "*", so the solution is unique


def test_solve_equation_hand_worked_short_lengths():
    x, y = _sample("solve_equation", 3)
    for row, sol in zip(x, y[:, 0]):  # "d" with d replaced: x=d
        assert _decode(row, EQUATION_CHARS) == f"x={sol}"
    x, y = _sample("solve_equation", 4)
    for row, sol in zip(x, y[:, 0]):  # "-d": -x=(-d mod 5)
        assert _decode(row, EQUATION_CHARS) == f"-x={-sol % 5}"
    for n in (1, 2):  # the reference's degenerate case: all-zero input, class 0
        x, y = _sample("solve_equation", n)
        assert (x == 0).all() and (y == 0).all()


@pytest.mark.parametrize("n", [5, 7, 12, 30, 61])
def test_solve_equation_substitution(n):
    x, y = _sample("solve_equation", n)
    assert (x[:, -2] == 10).all()
    for row, sol in zip(x, y[:, 0]):
        _check_equation(_decode(row, EQUATION_CHARS), sol)


# --------------------------------------------------------------------------- context-sensitive


def test_copy_like_tasks_hand_worked():
    np.testing.assert_array_equal(cs.duplicate_string_targets(np.array([[1, 0, 1]])), [[1, 0, 1, 1, 0, 1]])
    # The reference code's order (0-based odd indices first), not its docstring's 0100 0111.
    np.testing.assert_array_equal(cs.odds_first_targets(np.array([[0, 0, 1, 1, 0, 1, 0, 1]])),
                                  [[0, 1, 1, 1, 0, 1, 0, 0]])
    np.testing.assert_array_equal(cs.odds_first_targets(np.array([[1, 1, 0]])), [[1, 1, 0]])
    np.testing.assert_array_equal(cs.bucket_sort_targets(np.array([[1, 0, 2, 0, 4, 1, 1, 2]])),
                                  [[0, 0, 1, 1, 1, 2, 2, 4]])
    # 0110 0?10 -> 1; 101 1?1 + filler -> 0; n == 1 -> 1.
    np.testing.assert_array_equal(cs.missing_duplicate_string_targets(np.array([[0, 1, 1, 0, 0, 2, 1, 0]])), [[1]])
    np.testing.assert_array_equal(cs.missing_duplicate_string_targets(np.array([[1, 0, 1, 1, 2, 1, 3]])), [[0]])
    np.testing.assert_array_equal(cs.missing_duplicate_string_targets(np.array([[1]])), [[1]])


@pytest.mark.parametrize("n", [1, 2, 5, 8, 33])
def test_copy_like_task_properties(n):
    x, y = _sample("duplicate_string", n)
    np.testing.assert_array_equal(y[:, :n], x)
    np.testing.assert_array_equal(y[:, n:], x)
    x, y = _sample("odds_first", n)
    back = np.empty_like(x)
    back[:, 1::2], back[:, ::2] = y[:, :n // 2], y[:, n // 2:]
    np.testing.assert_array_equal(back, x)
    x, y = _sample("bucket_sort", n)
    assert (np.diff(y, axis=1) >= 0).all()
    for row, out in zip(x, y):
        np.testing.assert_array_equal(np.bincount(row, minlength=5), np.bincount(out, minlength=5))


@pytest.mark.parametrize("n", [1, 2, 3, 6, 9, 30])
def test_missing_duplicate_string_property(n):
    x, y = _sample("missing_duplicate_string", n)
    if n == 1:
        assert (x == 1).all() and (y == 1).all()
        return
    half = n // 2
    assert ((x == 2).sum(1) == 1).all() and ((x == 3).sum(1) == n % 2).all()
    assert (x[:, :2 * half] != 3).all()
    filled = np.where(x == 2, y, x)  # put the answer back: the two halves agree
    np.testing.assert_array_equal(filled[:, :half], filled[:, half:2 * half])


def _operands(row):
    text = "".join(map(str, row))
    a, b = text.split("2")
    return a, b


def test_binary_arithmetic_hand_worked():
    # The reference's examples: 001 + 01101 (4 + 22 = 26), 1001 + 000001 (9 + 32 = 41); same operands for *.
    four_22 = np.array([[0, 0, 1, 2, 0, 1, 1, 0, 1]])
    nine_32 = np.array([[1, 0, 0, 1, 2, 0, 0, 0, 0, 0, 1]])
    np.testing.assert_array_equal(cs.binary_addition_targets(four_22), [[0, 1, 0, 1, 1, 2, 0, 0, 0, 0]])
    np.testing.assert_array_equal(cs.binary_addition_targets(nine_32), [[1, 0, 0, 1, 0, 1, 2, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(cs.binary_multiplication_targets(four_22), [[0, 0, 0, 1, 1, 0, 1, 2, 0]])
    np.testing.assert_array_equal(cs.binary_multiplication_targets(nine_32), [[0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 0]])
    # n <= 2: addition echoes the number; multiplication's answer is fixed by the reference.
    np.testing.assert_array_equal(cs.binary_addition_targets(np.array([[0, 1], [0, 0]])), [[0, 1, 2], [0, 2, 0]])
    np.testing.assert_array_equal(cs.binary_multiplication_targets(np.array([[0, 1]])), [[0, 2]])
    np.testing.assert_array_equal(cs.binary_multiplication_targets(np.array([[0]])), [[2]])
    # 37 -> 6 and 7 -> 2 (big-endian, ceil(n/2) bits).
    np.testing.assert_array_equal(cs.compute_sqrt_targets(np.array([[1, 0, 0, 1, 0, 1]])), [[1, 1, 0]])
    np.testing.assert_array_equal(cs.compute_sqrt_targets(np.array([[1, 1, 1]])), [[1, 0]])


@settings(max_examples=60, deadline=None)
@given(a=st.integers(1, 2**70), b=st.integers(1, 2**70), pad_a=st.integers(0, 3), pad_b=st.integers(0, 3))
def test_binary_arithmetic_matches_python_ints(a, b, pad_a, pad_b):
    bits_a = [int(c) for c in f"{a:b}"[::-1]] + [0] * pad_a
    bits_b = [int(c) for c in f"{b:b}"[::-1]] + [0] * pad_b
    x = np.array([bits_a + [2] + bits_b])
    n = x.shape[1]
    np.testing.assert_array_equal(cs.binary_addition_targets(x)[0], _terminated(a + b, n + 1))
    np.testing.assert_array_equal(cs.binary_multiplication_targets(x)[0], _terminated(a * b, n))


@pytest.mark.parametrize("n", [3, 4, 7, 20, 90])
def test_binary_arithmetic_samples(n):
    x_add, y_add = _sample("binary_addition", n)
    x_mul, y_mul = _sample("binary_multiplication", n, seed=1)
    for x, y, op, width in ((x_add, y_add, int.__add__, n + 1), (x_mul, y_mul, int.__mul__, n)):
        assert ((x == 2).sum(1) == 1).all()
        for row, out in zip(x, y):
            a, b = _operands(row)
            assert a and b and "1" in a and "1" in b  # operands are 1..2**len - 1
            value = op(int(a[::-1], 2), int(b[::-1], 2))
            np.testing.assert_array_equal(out, _terminated(value, width))


def test_binary_operands_lengths_cover_reference_range():
    x, _ = _sample("binary_addition", 6, batch=256)
    assert set((x == 2).argmax(1).tolist()) == {1, 2, 3, 4}  # len(a) uniform in 1..n-2


def test_binary_arithmetic_short_lengths_follow_reference():
    for name in ("binary_addition", "binary_multiplication"):
        x, _ = _sample(name, 1)
        assert (x == 0).all()  # the reference's randint(0, 2**1 - 1) is always 0
        x, _ = _sample(name, 2, batch=128)
        assert {tuple(r) for r in x.tolist()} == {(0, 0), (1, 0), (0, 1)}
    _, y = _sample("binary_addition", 1)
    assert (y == [0, 2]).all()


@pytest.mark.parametrize("n", [1, 2, 5, 6, 64, 201])
def test_compute_sqrt_property(n):
    x, y = _sample("compute_sqrt", n)
    assert y.shape[1] == math.ceil(n / 2)
    for row, out in zip(x, y):
        v, r = int("".join(map(str, row)), 2), int("".join(map(str, out)), 2)
        assert v >= 1 and r * r <= v < (r + 1) ** 2


# --------------------------------------------------------------------------- speed


def test_length_500_batches_are_fast():
    import time

    rng = np.random.default_rng(0)
    for name, task in data.TASKS.items():
        start = time.perf_counter()
        task.sample(rng, 128, 500)
        assert time.perf_counter() - start < 1.0, name  # measured 1-20 ms each on a 2-core CPU
