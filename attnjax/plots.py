"""Plots of attention weight maps (matplotlib; kept out of ``attnjax.ops`` on purpose).

Files are written atomically (temporary file in the same folder, then rename), so an interrupted
run never leaves a half-written PNG.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from attnjax.results import save_and_close


def plot_weight_maps(weights, path: str | os.PathLike, *, titles: Sequence[str] | None = None,
                     query_labels: Sequence[str] | None = None, key_labels: Sequence[str] | None = None,
                     suptitle: str | None = None, max_cols: int = 4, dpi: int = 100,
                     panel_size: tuple[float, float] = (3.2, 3.0)) -> str:
    """Writes one heat map per head to a PNG file.

    Args:
        weights: ``[N, T, S]`` (one batch element, all heads) or ``[T, S]``; any real dtype.
        path: output file, must end in ``.png``.
        titles: one title per head (default ``head 0``, ``head 1``, ...).
        query_labels: ``T`` tick labels for rows (e.g. tokens); key_labels: ``S`` for columns.
        suptitle: figure title.
        max_cols: panels per row.
        dpi: resolution.
        panel_size: ``(width, height)`` of one panel in inches (larger for long sequences or a long title).

    Returns:
        The path written, as a string.

    Raises:
        ValueError: wrong rank, non-finite weights, wrong label counts or a non-PNG path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    w = np.asarray(weights, dtype=np.float32)
    if w.ndim == 2:
        w = w[None]
    if w.ndim != 3:
        raise ValueError(f"weights must have shape [N, T, S] or [T, S], got {np.shape(weights)}")
    if not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite to plot")
    path = os.fspath(path)
    if not path.endswith(".png"):
        raise ValueError(f"path must end in .png, got {path!r}")
    N, T, S = w.shape
    if titles is not None and len(titles) != N:
        raise ValueError(f"titles must have N = {N} entries, got {len(titles)}")
    if query_labels is not None and len(query_labels) != T:
        raise ValueError(f"query_labels must have T = {T} entries, got {len(query_labels)}")
    if key_labels is not None and len(key_labels) != S:
        raise ValueError(f"key_labels must have S = {S} entries, got {len(key_labels)}")
    if not isinstance(max_cols, int) or max_cols < 1:
        raise ValueError(f"max_cols must be a positive int, got {max_cols!r}")

    cols = min(N, max_cols)
    rows = -(-N // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(panel_size[0] * cols, panel_size[1] * rows), squeeze=False)
    vmax = max(float(w.max()), 1e-12)
    image = None
    for n, ax in enumerate(axes.flat):
        if n >= N:
            ax.axis("off")
            continue
        image = ax.imshow(w[n], cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
        ax.set_title(titles[n] if titles is not None else f"head {n}", fontsize=9)
        ax.set_xlabel("key", fontsize=8)
        ax.set_ylabel("query", fontsize=8)
        if query_labels is not None:
            ax.set_yticks(range(T), labels=list(query_labels), fontsize=6)
        if key_labels is not None:
            ax.set_xticks(range(S), labels=list(key_labels), fontsize=6, rotation=90)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
    if suptitle:
        fig.suptitle(suptitle)

    save_and_close(path, fig, dpi=dpi)
    return path
