"""Ours vs published: a study's published numbers, claims and page prose as data, the verdict of each claim, and
the page sections that show them.

A study keeps ``published.json`` beside its report (:func:`load_published`): each source with its numbers,
and the text the page writes about them, so the report code holds no paper's numbers or prose. A claim is an
entry ``{"claim": template, "published": fraction}`` (or ``"direction": text`` for a published direction with
no number on our scale; optional ``"tolerance"``), checked against our per-seed values by :func:`check`. A
comparison section ``{"heading", "before": [...], "columns": [...], "after": [...]}`` is written around the
verdict table by :func:`comparison_section`. Templates are :meth:`str.format` strings filled from the
study's fields (config values, counts; a literal brace is doubled); a block given as a list of lines is one
paragraph or list.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from attnjax import stats
from attnjax.sweep.report import ci_text, load_json, markdown_table, pct, spec_section

COLUMNS = ("claim", "ours", "published", "verdict")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Ours (per-seed values) against one published number, both as fractions.

    ``verdict``: ``agrees`` (the published value lies in our 95% interval, widened by ``tolerance``),
    ``differs`` (it lies outside), or ``inconclusive`` (one seed: no interval; or ``caveat``, such as a model
    that did not fit its training data, makes our number uninformative). ``difference``: the values are
    differences (written with their sign, their interval clipped to [-100, 100] rather than [0, 100]).
    """

    claim: str
    mean: float
    low: float
    high: float
    published: float
    verdict: str
    caveat: str = ""
    difference: bool = False

    def row(self) -> list[str]:
        sign = self.difference
        ours = ci_text(self.mean, self.low, self.high, sign) if math.isfinite(self.low) else pct(self.mean, sign)
        return [self.claim, ours, pct(self.published, sign),
                self.verdict + (f" ({self.caveat})" if self.caveat else "")]

    @property
    def change(self) -> str:
        """Whether our interval says the values moved: ``significant gain``, ``significant loss``, ``no
        significant change`` (it holds 0) or ``one seed``."""
        return ("one seed" if not math.isfinite(self.low) else "significant gain" if self.low > 0 else
                "significant loss" if self.high < 0 else "no significant change")


def compare(claim: str, values: Sequence[float], published: float, *, tolerance: float = 0.0,
            caveat: str = "", difference: bool = False) -> Comparison:
    """The :class:`Comparison` of per-seed ``values`` with ``published`` (fractions); ``tolerance`` (a fraction)
    widens our interval on both sides, for a protocol that differs from the paper's in known ways."""
    values = list(values)
    mean, low, high = stats.mean_ci(values) if len(values) > 1 else (float(np.mean(values)), -math.inf, math.inf)
    if caveat or not math.isfinite(low):
        verdict = "inconclusive"
    else:
        verdict = "agrees" if low - tolerance <= published <= high + tolerance else "differs"
    return Comparison(claim, mean, low, high, published, verdict, caveat, difference)


@dataclasses.dataclass(frozen=True)
class DirectionComparison(Comparison):
    """A :class:`Comparison` of a published *direction* ("A beats B", "A degrades more than B") that has no
    number on our scale: ours is a paired difference, written with its sign; ``published_text`` says what was
    published. Rows sit in the same :func:`comparison_table` as :func:`compare`'s."""

    published_text: str = ""

    def row(self) -> list[str]:
        claim, ours, _, verdict = super().row()
        return [claim, ours, self.published_text, verdict]


def compare_direction(claim: str, differences: Sequence[float], published: str, *,
                      caveat: str = "") -> DirectionComparison:
    """Per-seed ``differences`` (fractions, signed so that the published direction is > 0) against a published
    direction described by ``published``: ``agrees`` when our 95% interval lies above 0, ``differs`` when it lies
    below 0, ``inconclusive`` when it contains 0, with one seed, or with a ``caveat``."""
    c = compare(claim, differences, 0.0, caveat=caveat)
    verdict = "agrees" if c.verdict != "inconclusive" and c.low > 0 else (
        "differs" if c.verdict != "inconclusive" and c.high < 0 else "inconclusive")
    return DirectionComparison(claim, c.mean, c.low, c.high, math.nan, verdict, caveat, True, published)


def check(spec: Mapping[str, Any], values: Sequence[float], /, *, caveat: str = "", published: float | None = None,
          tolerance: float | None = None, **fields: Any) -> Comparison:
    """One claim of ``published.json`` against our per-seed ``values``: ``spec["claim"]`` filled with
    ``fields``, then :func:`compare_direction` when the spec has a ``"direction"`` (also a template), else
    :func:`compare` with ``published`` (default ``spec["published"]``), ``tolerance`` (default
    ``spec["tolerance"]``, else 0) and ``spec["difference"]`` (the values are differences)."""
    claim = spec["claim"].format(**fields)
    if "direction" in spec:
        return compare_direction(claim, values, spec["direction"].format(**fields), caveat=caveat)
    return compare(claim, values, spec["published"] if published is None else published, caveat=caveat,
                   tolerance=spec.get("tolerance", 0.0) if tolerance is None else tolerance,
                   difference=spec.get("difference", False))


def comparison_table(comparisons: Sequence[Comparison | Sequence[str]], columns: Sequence[str] = COLUMNS) -> str:
    """One row per claim: ours ``mean [95% CI]``, the published number, the verdict (a row given as a list:
    as it is, such as a comparison's row with a note added)."""
    return markdown_table(columns, [c.row() if isinstance(c, Comparison) else c for c in comparisons])


def comparison_section(spec: Mapping[str, Any], comparisons: Sequence[Comparison | Sequence[str]], /,
                       **fields: Any) -> list[str]:
    """The markdown lines of a page's ours-vs-published section (:func:`~attnjax.sweep.report.spec_section`):
    ``## heading`` (default ``Ours vs published``), the ``before`` blocks, the verdict table (with ``columns``,
    default :data:`COLUMNS`), the ``after`` blocks; each block a template filled with ``fields``."""
    table = comparison_table(comparisons, spec.get("columns", COLUMNS))
    return spec_section({"heading": "Ours vs published", **spec}, table, **fields)


def protocol_section(spec: Mapping[str, Any], lines: Sequence[str] = (), /, **fields: Any) -> list[str]:
    """A page's section on how our protocol differs from the published one: ``## heading``, then each of
    ``spec["lines"]`` (templates filled with ``fields``) and ``lines`` as a bullet (``spec["end"]``, such as
    ``.``, closes each; ``None.`` without any), or ``spec["text"]`` as it is (not a template)."""
    if "text" in spec:
        body = [spec["text"] if isinstance(spec["text"], str) else "\n".join(spec["text"])]
    else:
        items = [*(t.format(**fields) for t in spec.get("lines", ())), *lines]
        body = [f"- {item}{spec.get('end', '')}" for item in items] or ["None."]
    return ["", f"## {spec['heading']}", "", *body]


def differences(ours: Mapping[str, Any], paper: Mapping[str, Any]) -> list[str]:
    """``name: ours (paper value)`` for each setting of ``ours`` whose value differs from ``paper[name]``."""
    return [f"{name}: {value} (paper {paper[name]})" for name, value in ours.items() if str(value) != str(paper[name])]


def load_published(study_file: str) -> dict[str, Any]:
    """The published numbers a study compares against: ``published.json`` beside ``study_file`` (pass a module's
    ``__file__``). Kept as data, each entry with its source, so the numbers are read, never re-typed in code."""
    return load_json(study_file, "published.json")
