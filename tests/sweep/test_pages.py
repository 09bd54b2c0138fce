"""attnjax.sweep.pages: README blocks rebuilt from a page's first table and the sections they name."""

import json

import pytest

from attnjax import sweep
from attnjax.sweep import pages

PAGE = """# Study

Intro.

## Table 1: scores

| a | b |
|---|---|
| 1 | 2 |

Note on table 1.

## Fit: steps to fit

- lstm: 0 of 3 below

| task | lstm |
|---|---|
| x | 3/3 fit |

## Plots
"""


def test_section_is_the_heading_in_bold_and_its_lines():
    assert pages.section(PAGE, "Fit") == "**Fit: steps to fit**\n\n- lstm: 0 of 3 below\n\n| task | lstm |\n|---|---|\n| x | 3/3 fit |"
    with pytest.raises(ValueError, match="'Nothing'"):
        pages.section(PAGE, "Nothing")


def test_readme_block_gets_the_first_table_and_the_named_sections(tmp_path):
    run_dir = tmp_path / "results" / "study" / "cpu"
    run_dir.mkdir(parents=True)
    (run_dir / sweep.RESULTS_FILE).write_text(json.dumps({"experiment": "study", "cells": {}, "num_ok": 1}))
    readme = tmp_path / "README.md"
    readme.write_text("Top\n<!-- results: study/cpu | Fit -->\nold\n<!-- /results -->\nEnd\n")
    experiment = sweep.Experiment(name="study", cells=lambda c: [], run_cell=None, validate=lambda c: None,
                                  cell_config=lambda c, cell: {}, report=lambda results, out: PAGE)
    pages.publish(lambda name: experiment, str(tmp_path / "results"), str(tmp_path / "pages"), str(readme))
    text = readme.read_text()
    assert text.startswith("Top\n<!-- results: study/cpu | Fit -->\n**Table 1: scores**\n\n| a | b |")
    assert "**Fit: steps to fit**\n\n- lstm: 0 of 3 below" in text and "Note on table 1" not in text
    assert text.endswith("[the whole page](docs/results/study/cpu/summary.md).\n<!-- /results -->\nEnd\n")
