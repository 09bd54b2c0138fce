"""Results as files: one ``results.json`` per run directory, written atomically, keyed by cell fingerprints.

The file holds the config, the environment (versions, devices, git commit) and one entry per cell:
``ok`` with its metrics, or ``failed`` with the error and a traceback summary. A cell's *fingerprint*
hashes what determines its result, so a rerun skips the cells that finished with the same fingerprint
and a changed cell runs again. Parts of one grid run into separate directories are joined with
:func:`merge_results`.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping, Sequence

from attnjax.results import write_text

RESULTS_FILE = "results.json"


def fingerprint(cell_id: str, determined: Mapping[str, Any]) -> str:
    """A 16-hex-digit hash of a cell id and everything that determines its result."""
    text = json.dumps({"cell": cell_id, "config": determined}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_results(workdir: str) -> dict[str, Any] | None:
    """``workdir``'s results.json as a dict, or None when there is none."""
    path = os.path.join(workdir, RESULTS_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def ok_runs(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat dict (cell fields then metrics) per finished cell, in grid order."""
    return [{**e["cell"], **e["metrics"]} for e in results["cells"].values() if e["status"] == "ok"]


def finish(results: dict[str, Any]) -> dict[str, Any]:
    """Sets the counts: ``num_ok``, ``num_failed`` and ``complete`` (every cell of the grid ok)."""
    entries = results["cells"].values()
    results["num_failed"] = sum(e["status"] == "failed" for e in entries)
    results["num_ok"] = sum(e["status"] == "ok" for e in entries)
    results["complete"] = results["num_ok"] == results["num_cells"]
    return results


def dumps(results: Mapping[str, Any]) -> str:
    """results.json's text: the header indented, then one compact line per cell, so the file stays small
    enough to commit and a rerun of one cell changes one line of it."""
    head = {k: v for k, v in results.items() if k != "cells"}
    cells = [f"  {json.dumps(cid)}: {json.dumps(entry, separators=(',', ':'))}"
             for cid, entry in results.get("cells", {}).items()]
    return json.dumps(head, indent=1)[:-2] + ',\n "cells": {\n' + ",\n".join(cells) + "\n }\n}\n"


def save_results(workdir: str, results: dict[str, Any]) -> dict[str, Any]:
    """Sets the counts and writes ``workdir/results.json`` atomically (a reader never sees half a file)."""
    results = finish(results)
    write_text(os.path.join(workdir, RESULTS_FILE), dumps(results))
    return results


def merge_results(workdir: str, parts: Sequence[str]) -> dict[str, Any]:
    """Joins the results.json of workdirs that ran parts of one grid (``--config.only``) into ``workdir``.

    Entries must come from the same experiment; for a cell present in several parts an ``ok`` entry
    wins over a failed one. Raises ValueError on mixed experiments or a missing results file.
    """
    merged: dict[str, Any] | None = None
    for part in parts:
        loaded = load_results(part)
        if loaded is None:
            raise ValueError(f"no {RESULTS_FILE} in {part!r}")
        if merged is None:
            merged = loaded
            continue
        if loaded["experiment"] != merged["experiment"]:
            raise ValueError(f"cannot merge {loaded['experiment']!r} results into {merged['experiment']!r}")
        for cid, entry in loaded["cells"].items():
            if merged["cells"].get(cid, {}).get("status") != "ok":
                merged["cells"][cid] = entry
    if merged is None:
        raise ValueError("merge_results needs at least one part")
    return save_results(workdir, merged)
