"""Deterministic context-free tasks: stack_manipulation, reverse_string, modular_arithmetic_brackets,
solve_equation.

Facts (alphabets, ids, lengths, the termination token) follow google-deepmind/neural_networks_chomsky_hierarchy,
``tasks/dcf``. The two bracket tasks grow a random expression tree per example (the grammar cannot be sampled
column-wise); the other two are vectorized over the batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from attnjax.data.tasks.base import Task, check_tokens, one_output, same_length, uniform_ints

MODULUS = 5

# stack_manipulation: input 0/1 = stack symbols (bottom to top), then actions; output 0/1 = stack symbols
# (top to bottom), then the termination token, then 0-padding.
POP, PUSH_0, PUSH_1 = 2, 3, 4
STACK_END = 2


def stack_manipulation_output_length(n: int) -> int:
    """``n + 1``: the final stack holds at most ``n`` symbols, plus the termination token."""
    return n + 1


def stack_manipulation_targets(inputs: np.ndarray) -> np.ndarray:
    """``[B, n]`` stack-then-actions -> ``[B, n + 1]`` final stack top-to-bottom, termination token 2, zeros.

    Every input token is an operation, left to right: 0/1 (the initial stack, bottom to top) and 3/4 push
    0/1, 2 pops (ignored on an empty stack). Example: ``0 1 1 0 PUSH1 POP POP`` -> ``1 1 0 2 0 0 0 0``.
    """
    x = check_tokens("stack_manipulation", inputs, 5)
    batch, n = x.shape
    rows = np.arange(batch)
    stack = np.zeros((batch, n), dtype=np.int64)
    top = np.zeros(batch, dtype=np.int64)  # number of symbols on the stack
    for j in range(n):  # a scan over positions, vectorized over the batch
        tok = x[:, j]
        push = tok != POP
        # Written unconditionally: on a pop the slot at `top` lies above the new top and is never read.
        stack[rows, top] = np.where(tok >= PUSH_0, tok - PUSH_0, tok)
        top = np.where(push, top + 1, np.maximum(top - 1, 0))
    pos = np.arange(n + 1)[None, :]
    from_top = np.take_along_axis(stack, np.clip(top[:, None] - 1 - pos, 0, n - 1), axis=1)
    y = np.where(pos < top[:, None], from_top, 0)
    y[rows, top] = STACK_END
    return y


def _generate_stack_manipulation(rng, batch_size, length):
    if length == 1:  # the reference: a one-symbol stack and no action
        x = uniform_ints(rng, 0, 2, (batch_size, 1))
    else:
        stack_length = uniform_ints(rng, 1, length, (batch_size, 1))  # 1..n-1 symbols, then >= 1 action
        symbols = uniform_ints(rng, 0, 2, (batch_size, length))
        actions = uniform_ints(rng, POP, PUSH_1 + 1, (batch_size, length))
        x = np.where(np.arange(length)[None, :] < stack_length, symbols, actions)
    return x, stack_manipulation_targets(x)


def reverse_string_targets(inputs: np.ndarray) -> np.ndarray:
    """``[B, n]`` bits -> ``[B, n]`` the same bits in reverse order."""
    return check_tokens("reverse_string", inputs, 2)[:, ::-1].copy()


def _generate_reverse_string(rng, batch_size, length):
    x = uniform_ints(rng, 0, 2, (batch_size, length))
    return x, reverse_string_targets(x)


@dataclasses.dataclass(frozen=True)
class Symbols:
    """Token ids of a bracket-expression alphabet (digits are ``0..MODULUS-1``)."""

    plus: int
    minus: int
    times: int | None  # None: the alphabet has no "*"
    open: int
    close: int
    x: int
    equals: int | None


# modular_arithmetic_brackets: + - * ( ) x = map to 5..11; "x" and "=" never occur, and the reference's
# input_size (modulus + 6 = 11) leaves "=" outside the alphabet.
BRACKET_SYMBOLS = Symbols(plus=5, minus=6, times=7, open=8, close=9, x=10, equals=None)
# solve_equation: no "*" (it could make the solution ambiguous), so + - ( ) x = map to 5..10.
EQUATION_SYMBOLS = Symbols(plus=5, minus=6, times=None, open=7, close=8, x=9, equals=10)

_GROW, _OPERATOR, _CLOSE = 0, 1, 2


def _one_expression(uniforms, length: int, symbols: Symbols, out: list[int]) -> int:
    """Appends one random expression of exactly ``length`` tokens to ``out`` and returns its value mod 5.

    The reference's grammar: lengths 1-4 are ``d``, ``-d``, ``(d)``, ``(-d)``; a longer expression is
    ``(left op right)`` with ``len(left)`` uniform in ``1..length-4`` and ``op`` uniform over the alphabet's
    operators. An explicit work stack replaces the reference's recursion (no recursion limit at long lengths).
    """
    operators = (symbols.plus, symbols.minus) if symbols.times is None else (symbols.plus, symbols.minus,
                                                                              symbols.times)
    work, values = [(_GROW, length)], []
    while work:
        kind, arg = work.pop()
        if kind == _GROW and arg <= 4:
            digit = int(next(uniforms) * MODULUS)
            if arg >= 3:
                out.append(symbols.open)
            if arg % 2 == 0:
                out.append(symbols.minus)
            out.append(digit)
            if arg >= 3:
                out.append(symbols.close)
            values.append(-digit % MODULUS if arg % 2 == 0 else digit)
        elif kind == _GROW:
            left = 1 + int(next(uniforms) * (arg - 4))
            op = operators[int(next(uniforms) * len(operators))]
            out.append(symbols.open)
            work += [(_CLOSE, op), (_GROW, arg - 3 - left), (_OPERATOR, op), (_GROW, left)]  # left pops first
        elif kind == _OPERATOR:
            out.append(arg)
        else:
            out.append(symbols.close)
            right, left_value = values.pop(), values.pop()
            if arg == symbols.plus:
                values.append((left_value + right) % MODULUS)
            elif arg == symbols.minus:
                values.append((left_value - right) % MODULUS)
            else:
                values.append(left_value * right % MODULUS)
    return values[0]


def bracket_expressions(rng: np.random.Generator, batch_size: int, length: int,
                        symbols: Symbols) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``batch_size`` bracket expressions of exactly ``length`` tokens.

    Args:
        rng: NumPy generator (consumed).
        batch_size: ``B``.
        length: tokens per expression, >= 1.
        symbols: the alphabet (with or without ``*``).

    Returns:
        ``(tokens [B, length] int64, values [B] int64)``, values in ``0..4``.
    """
    # Each tree node draws at most two numbers and there are at most `length` nodes.
    uniforms = rng.random((batch_size, 2 * length))
    tokens = np.empty((batch_size, length), dtype=np.int64)
    values = np.empty(batch_size, dtype=np.int64)
    for b in range(batch_size):
        out: list[int] = []
        values[b] = _one_expression(iter(uniforms[b].tolist()), length, symbols, out)
        tokens[b] = out
    return tokens, values


def _generate_modular_arithmetic_brackets(rng, batch_size, length):
    x, values = bracket_expressions(rng, batch_size, length, BRACKET_SYMBOLS)
    return x, values[:, None]


def _generate_solve_equation(rng, batch_size, length):
    if length < 3:  # the reference: all-zero inputs and class 0
        return np.zeros((batch_size, length), np.int64), np.zeros((batch_size, 1), np.int64)
    expr, values = bracket_expressions(rng, batch_size, length - 2, EQUATION_SYMBOLS)
    # The reference picks a uniform position and walks right (cyclically) to the first digit, so digits
    # after long runs of symbols are picked more often; kept as is.
    is_digit = expr < MODULUS
    start = uniform_ints(rng, 0, length - 2, (batch_size, 1))
    at_or_after = is_digit & (np.arange(length - 2)[None, :] >= start)
    index = np.where(at_or_after.any(axis=1), at_or_after.argmax(axis=1), is_digit.argmax(axis=1))
    rows = np.arange(batch_size)
    solution = expr[rows, index].copy()
    expr[rows, index] = EQUATION_SYMBOLS.x
    equals = np.full((batch_size, 1), EQUATION_SYMBOLS.equals)
    return np.concatenate([expr, equals, values[:, None]], axis=1), solution[:, None]


TASKS = (
    Task(name="stack_manipulation", tier="context_free", input_size=5, output_size=3,
         output_length=stack_manipulation_output_length, generate=_generate_stack_manipulation,
         termination_token=STACK_END),
    Task(name="reverse_string", tier="context_free", input_size=2, output_size=2, output_length=same_length,
         generate=_generate_reverse_string),
    # The reference registers this task with multiplication on (mult=True).
    Task(name="modular_arithmetic_brackets", tier="context_free", input_size=MODULUS + 6, output_size=MODULUS,
         output_length=one_output, generate=_generate_modular_arithmetic_brackets),
    Task(name="solve_equation", tier="context_free", input_size=MODULUS + 6, output_size=MODULUS,
         output_length=one_output, generate=_generate_solve_equation),
)
