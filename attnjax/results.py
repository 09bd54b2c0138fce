"""Result files: atomic writers and the environment record. Imports neither Flax nor optax.

Every writer goes to a temporary file in the target directory, then ``os.replace``: atomic on POSIX
within one filesystem, so a reader (or an interrupted run) sees the old file or the complete new one,
never a partial write. On any error the temporary file is removed. An ops benchmark and a Flax
experiment write their files through this one module.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
from typing import IO, Any, Callable, Iterator


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Context manager yielding a temp file that replaces ``path`` only if the block succeeds.

    Args:
        path: destination; its directory is created if missing.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt too: never leave the temp file behind
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically writes ``text`` (UTF-8)."""
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> None:
    """Atomically writes ``obj`` as JSON (serialization errors leave ``path`` untouched)."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=indent, sort_keys=False, allow_nan=True)
        f.write("\n")


def save_figure(path: str | os.PathLike, figure: Any, **savefig_kwargs: Any) -> None:
    """Atomically saves a Matplotlib figure as PNG."""
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format="png", **savefig_kwargs)


def save_and_close(path: str | os.PathLike, figure: Any, **savefig_kwargs: Any) -> None:
    """:func:`save_figure`, then closes the figure (even if saving fails), so report loops do not pile up
    open Matplotlib figures."""
    import matplotlib.pyplot as plt

    try:
        save_figure(path, figure, **savefig_kwargs)
    finally:
        plt.close(figure)


def write_with(path: str | os.PathLike, writer: Callable[[IO], None], binary: bool = False) -> None:
    """Atomically writes whatever ``writer(file)`` writes."""
    with atomic_open(path, "wb" if binary else "w") as f:
        writer(f)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The checkout's ``HEAD`` commit (with ``+dirty`` when tracked files changed), or None outside git."""
    cwd = os.fspath(path) if path is not None else os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def environment_info() -> dict[str, Any]:
    """Versions, devices, processes and the git commit, recorded next to every result.

    Package versions come from installed metadata, so this never imports Flax or optax.
    ``process_count``/``process_index`` describe a multi-host job (1 and 0 for a single process).
    """
    import jax

    devices = jax.devices()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{name: _version(name) for name in ("jax", "jaxlib", "flax", "optax", "numpy")},
        "orbax-checkpoint": _version("orbax-checkpoint"),
        "ml_collections": _version("ml_collections"),
        "git_commit": git_commit(),
        "backend": jax.default_backend(),
        "device_count": len(devices),
        "devices": [str(d) for d in devices],
        "device_kinds": sorted({d.device_kind for d in devices}),
        "cpu_count": os.cpu_count(),
        "process_count": jax.process_count(),
        "process_index": jax.process_index(),
    }


# Wall-clock timings in result metrics live under keys ending in this suffix (``train_seconds``): they are
# the only values that differ between two runs of one config and seed on one machine.
TIMING_SUFFIX = "_seconds"


def without_timings(tree: Any) -> Any:
    """``tree`` (nested dicts/lists) with every dict key ending in :data:`TIMING_SUFFIX` removed.

    What two runs of the same config and seed must agree on byte for byte (see the reproducibility test).
    """
    if isinstance(tree, dict):
        return {k: without_timings(v) for k, v in tree.items() if not str(k).endswith(TIMING_SUFFIX)}
    if isinstance(tree, (list, tuple)):
        return [without_timings(v) for v in tree]
    return tree


def rounded(array: Any, decimals: int = 4) -> Any:
    """``array`` as nested lists of floats rounded to ``decimals`` places, for results files.

    The rounding is done in float64: a float32 array rounded in float32 holds the nearest float32 to each
    decimal (0.0123 becomes 0.012299999594688416), which spends 20 characters per number in JSON.
    """
    import numpy as np

    return np.round(np.asarray(array, np.float64), decimals).tolist()
