"""Results pages: every study report rebuilt from committed ``results.json`` files alone.

A run's report is its experiment's ``report`` hook (tables, verdicts, figures). :func:`publish` rebuilds the
page of every committed ``<results_root>/<study>/<preset>/results.json`` into
``<pages_root>/<study>/<preset>/`` and rewrites each README block between ``<!-- results: <study>/<preset> -->``
and ``<!-- /results -->`` as that page's first table and a link to it, so no number in a README is typed by
hand. ``<!-- results: <study>/<preset> | <heading> | ... -->`` adds the whole sections whose headings start
with those words. :func:`combined_summary` joins several runs' reports into one document
(:func:`write_combined` rebuilds and joins run directories). :func:`main` is the command line; a repository
binds it to its studies (``experiment_for``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
from typing import Callable, Sequence

from attnjax.results import write_text
from attnjax.sweep.runner import Experiment
from attnjax.sweep.store import RESULTS_FILE, load_results

COMBINED_TITLE = "# attnjax studies: combined report"
RESULTS_ROOT, PAGES_ROOT, README = "results", os.path.join("docs", "results"), "README.md"
_README_BLOCK = re.compile(r"(<!-- results: ([\w-]+/[\w-]+)((?: \| [^|>]+?)*) -->\n).*?(<!-- /results -->)", re.S)


def package_studies(package: str, studies: Sequence[str]) -> Callable[[str], Experiment]:
    """``experiment_for`` of a repository that keeps study ``name`` in ``<package>/<name>/``: ``name`` ->
    ``<package>.<name>.run.EXPERIMENT``, one of ``studies`` (another name is refused before anything is imported).

    Raises (the function returned):
        ValueError: ``name`` is not one of ``studies``.
    """
    def experiment_for(name: str) -> Experiment:
        if name not in studies:
            raise ValueError(f"results.json names experiment {name!r}, which is not a study; studies: "
                             f"{', '.join(studies)}")
        return importlib.import_module(f"{package}.{name}.run").EXPERIMENT
    return experiment_for


def rebuild(experiment_for: Callable[[str], Experiment], workdir: str) -> tuple[str, str]:
    """Rewrites ``workdir``'s summary.md and plots from its results.json alone; returns ``(experiment, summary)``.

    ``experiment_for`` maps the experiment name recorded in results.json to its :class:`Experiment`.

    Raises:
        ValueError: no results.json, no finished cell, or an unknown experiment.
    """
    results = load_results(workdir)
    if results is None:
        raise ValueError(f"no {RESULTS_FILE} in {workdir!r}")
    experiment = experiment_for(results.get("experiment"))
    if not results.get("num_ok"):
        raise ValueError(f"{workdir!r}: results.json of {experiment.name!r} has no finished cell to report")
    return experiment.name, experiment.report(results, workdir)


def relink(summary: str, run_dir: str, out_dir: str) -> str:
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
    lines = [COMBINED_TITLE, "", "Rebuilt from results.json alone.", "",
             *[f"- [{name}](#{name.replace('_', '-')}) — `{run_dir}`" for name, run_dir, _ in parts]]
    for name, run_dir, summary in parts:
        lines += ["", f"## {name}", "", relink(summary.strip(), run_dir, out_dir)]
    return "\n".join(lines) + "\n"


def write_combined(experiment_for: Callable[[str], Experiment], run_dirs: Sequence[str], out: str) -> list[str]:
    """Rebuilds every run's report in place (:func:`rebuild`) and joins them into the markdown file ``out``;
    returns the experiment names, one per run directory.

    Raises:
        ValueError: as :func:`rebuild`, before ``out`` is written.
    """
    parts = [rebuild(experiment_for, run_dir) for run_dir in run_dirs]  # (name, summary) each
    out_dir = os.path.dirname(os.path.abspath(out))
    os.makedirs(out_dir, exist_ok=True)
    write_text(out, combined_summary([(name, d, summary) for (name, summary), d in zip(parts, run_dirs)], out_dir))
    return [name for name, _ in parts]


def first_table(summary: str) -> str:
    """The first markdown table of a page, under its section heading in bold."""
    lines = summary.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    heading = next((line.lstrip("# ") for line in reversed(lines[:start]) if line.startswith("#")), "")
    return (f"**{heading}**\n\n" if heading else "") + "\n".join(lines[start:end])


def section(summary: str, heading: str) -> str:
    """The section of a page whose ``##`` heading starts with ``heading``: the heading in bold, then its lines.

    Raises:
        ValueError: no such section.
    """
    lines = summary.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("## ") and line[3:].startswith(heading)), None)
    if start is None:
        raise ValueError(f"no section headed {heading!r} in the page")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")), len(lines))
    return "\n".join([f"**{lines[start][3:]}**", *lines[start + 1:end]]).strip()


def publish(experiment_for: Callable[[str], Experiment], results_root: str = RESULTS_ROOT, pages_root: str = PAGES_ROOT,
            readme: str = README) -> list[str]:
    """Rebuilds ``pages_root/<study>/<preset>/`` from every ``results_root/<study>/<preset>/results.json`` and
    rewrites the README's result blocks; returns the pages written.

    Raises:
        ValueError: a README block naming a run that has no committed results.
    """
    pages = {}
    for study in sorted(os.listdir(results_root)) if os.path.isdir(results_root) else []:
        for preset in sorted(os.listdir(os.path.join(results_root, study))):
            run_dir = os.path.join(results_root, study, preset)
            results = load_results(run_dir)
            if results is None or "experiment" not in results:  # a benchmark's results: not a study page
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
                             f"has no {RESULTS_FILE}")
        link = f"{PAGES_ROOT}/{match.group(2)}/summary.md"  # the README sits at the repository root
        summary = pages[match.group(2)][1]
        parts = [first_table(summary), *(section(summary, h.strip()) for h in match.group(3).split("|")[1:])]
        return (f"{match.group(1)}" + "\n\n".join(parts) +
                f"\n\nFrom `{match.group(2)}`: [the whole page]({link}).\n{match.group(4)}")

    write_text(readme, _README_BLOCK.sub(block, text))
    return [page for page, _ in pages.values()]


def main(experiment_for: Callable[[str], Experiment], argv: Sequence[str] | None = None,
         prog: str = "python -m experiments.report") -> int:
    """The pages' command line: without RUN_DIR, :func:`publish` (every committed page and the README's tables);
    with RUN_DIRs, those runs' reports rebuilt in place and joined into ``--out`` (:func:`write_combined`).
    A RUN_DIR without a report to rebuild is a usage error (exit status 2)."""
    parser = argparse.ArgumentParser(prog=prog, description="Rebuild study reports from results.json alone: the "
                                     "committed pages, or any run directories.")
    parser.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="workdirs holding a results.json (none: "
                        f"rebuild {PAGES_ROOT}/ and the README's tables from the committed {RESULTS_ROOT}/)")
    parser.add_argument("--out", default=os.path.join(RESULTS_ROOT, "summary.md"), help="the combined summary")
    args = parser.parse_args(argv)
    if not args.run_dirs:
        for page in publish(experiment_for):
            print(f"rebuilt {page}")
        return 0
    try:
        names = write_combined(experiment_for, args.run_dirs, args.out)
    except ValueError as err:
        parser.error(str(err))
    for name, run_dir in zip(names, args.run_dirs):
        print(f"{name}: rebuilt {os.path.join(run_dir, 'summary.md')}")
    print(f"combined summary: {args.out}")
    return 0
