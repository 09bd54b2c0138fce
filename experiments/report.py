"""Rebuild study reports from ``results.json`` alone: the committed pages, or any run directories.

    python -m experiments.report                  # results/ -> docs/results/ and the README's result tables
    python -m experiments.report RUN_DIR [RUN_DIR ...] [--out results/summary.md]

Without RUN_DIR, every committed ``results/<study>/<preset>/results.json`` is rebuilt into
``docs/results/<study>/<preset>/`` (``summary.md`` and its plots), and each README block between
``<!-- results: <study>/<preset> -->`` and ``<!-- /results -->`` becomes that page's first table and a link
to it; a test checks that this changes no committed file. With RUN_DIRs, each run's own report is rebuilt
in place and joined into one combined summary. Nothing here trains or reads a log.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from typing import Sequence

from attnjax import sweep
from attnjax.results import write_text

STUDIES = ("length_generalization", "mnist1d", "seq2seq_attention", "associative_recall")
COMBINED_TITLE = "# attnjax studies: combined report"
RESULTS_ROOT, PAGES_ROOT, README = "results", os.path.join("docs", "results"), "README.md"
_README_BLOCK = re.compile(r"(<!-- results: ([\w-]+/[\w-]+) -->\n).*?(<!-- /results -->)", re.S)


def experiment_for(name: str) -> sweep.Experiment:
    """The :class:`sweep.Experiment` of study ``name`` (``experiments.<name>.run.EXPERIMENT``).

    Raises:
        ValueError: ``name`` is not one of :data:`STUDIES`.
    """
    if name not in STUDIES:
        raise ValueError(f"results.json names experiment {name!r}, which is not a study; studies: {', '.join(STUDIES)}")
    return importlib.import_module(f"experiments.{name}.run").EXPERIMENT


def rebuild(workdir: str) -> tuple[str, str]:
    """Rewrites ``workdir``'s summary.md and plots from its results.json; returns ``(experiment, summary)``.

    Raises:
        ValueError: no results.json, no finished cell, or an unknown experiment.
    """
    results = sweep.load_results(workdir)
    if results is None:
        raise ValueError(f"no {sweep.RESULTS_FILE} in {workdir!r}")
    experiment = experiment_for(results.get("experiment"))
    if not results.get("num_ok"):
        raise ValueError(f"{workdir!r}: results.json of {experiment.name!r} has no finished cell to report")
    return experiment.name, experiment.report(results, workdir)


def _relink(summary: str, run_dir: str, out_dir: str) -> str:
    """Markdown image/link targets of a per-study summary, made relative to the combined file's folder;
    headings pushed one level down so each study sits under its own ``##``."""
    prefix = os.path.relpath(os.path.abspath(run_dir), out_dir)

    def relink(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"[a-z]+://|/|#", target):
            return match.group(0)
        return f"{match.group(1)}({os.path.normpath(os.path.join(prefix, target))})"

    text = re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", relink, summary)
    return re.sub(r"^(#+) ", r"#\1 ", text, flags=re.MULTILINE)


def combined_summary(parts: Sequence[tuple[str, str, str]], out_dir: str) -> str:
    """One markdown document from ``(experiment, run_dir, summary)`` parts."""
    lines = [COMBINED_TITLE, "", "Rebuilt from results.json alone by `python -m experiments.report`.", "",
             *[f"- [{name}](#{name.replace('_', '-')}) — `{run_dir}`" for name, run_dir, _ in parts]]
    for name, run_dir, summary in parts:
        lines += ["", f"## {name}", "", _relink(summary.strip(), run_dir, out_dir)]
    return "\n".join(lines) + "\n"


def _first_table(summary: str) -> str:
    """The first markdown table of a page, under its section heading in bold."""
    lines = summary.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    heading = next((line.lstrip("# ") for line in reversed(lines[:start]) if line.startswith("#")), "")
    return (f"**{heading}**\n\n" if heading else "") + "\n".join(lines[start:end])


def publish(results_root: str = RESULTS_ROOT, pages_root: str = PAGES_ROOT, readme: str = README) -> list[str]:
    """Rebuilds ``pages_root/<study>/<preset>/`` from every ``results_root/<study>/<preset>/results.json`` and
    rewrites the README's result blocks; returns the pages written.

    Raises:
        ValueError: a README block naming a run that has no committed results.
    """
    pages = {}
    for study in sorted(os.listdir(results_root)) if os.path.isdir(results_root) else []:
        for preset in sorted(os.listdir(os.path.join(results_root, study))):
            run_dir = os.path.join(results_root, study, preset)
            results = sweep.load_results(run_dir)
            if results is None:
                continue
            out_dir = os.path.join(pages_root, study, preset)
            os.makedirs(out_dir, exist_ok=True)
            pages[f"{study}/{preset}"] = (os.path.join(out_dir, "summary.md"),
                                          experiment_for(results["experiment"]).report(results, out_dir))
    with open(readme, encoding="utf-8") as f:
        text = f.read()

    def block(match: re.Match) -> str:
        if match.group(2) not in pages:
            raise ValueError(f"{readme} shows results of {match.group(2)!r}, but {results_root}/{match.group(2)}/ "
                             f"has no {sweep.RESULTS_FILE}")
        link = f"{PAGES_ROOT}/{match.group(2)}/summary.md"  # the README sits at the repository root
        summary = pages[match.group(2)][1]
        table = _first_table(summary)
        return f"{match.group(1)}{table}\n\nFrom `{match.group(2)}`: [the whole page]({link}).\n{match.group(3)}"

    write_text(readme, _README_BLOCK.sub(block, text))
    return [page for page, _ in pages.values()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="workdirs holding a results.json (none: "
                        "rebuild docs/results/ and the README's tables from the committed results/)")
    parser.add_argument("--out", default=os.path.join("results", "summary.md"), help="the combined summary")
    args = parser.parse_args(argv)
    if not args.run_dirs:
        for page in publish():
            print(f"rebuilt {page}")
        return 0
    parts = []
    for run_dir in args.run_dirs:
        try:
            name, summary = rebuild(run_dir)
        except ValueError as err:
            parser.error(str(err))
        print(f"{name}: rebuilt {os.path.join(run_dir, 'summary.md')}")
        parts.append((name, run_dir, summary))
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    write_text(args.out, combined_summary(parts, out_dir))
    print(f"combined summary: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
